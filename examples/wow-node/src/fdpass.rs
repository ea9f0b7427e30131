//! The TAP device and UDP socket kept open across the self-update's exec:
//! the old process clears `FD_CLOEXEC` on both and names their numbers in
//! [`ENV_FDS`]; the new process adopts them here.
//!
//! Adopting a descriptor by number is the one `unsafe` operation of the
//! node (the crate denies `unsafe_code`; this module alone allows it).
//! No maintained crate hands back an owned TAP descriptor safely: the
//! systemd `LISTEN_FDS` crates (`listenfd`, `sd-listen-fds`) cover sockets
//! only and still leave the TAP's `RawFd` to the caller, and tun-rs's
//! `AsyncDevice::from_fd` is itself `unsafe` (it also refuses a descriptor
//! opened with `IFF_VNET_HDR`, so the TAP descriptor is handed over only
//! with `[tap] offload = false`; with offloads the device is made
//! persistent instead, [`set_persist`], and attached again by name).
//! Before it takes ownership, [`adopt`] checks
//! that the number is open (`fstat`), that it is the kind expected (a UDP
//! socket: `S_IFSOCK` and `SO_TYPE` datagram; the TAP: the character
//! device 10:200, `/dev/net/tun`), and that nothing else in this process
//! owns it: the numbers are read once, at start, before the node opens
//! anything, and the variable is ignored afterwards.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::stat::{SFlag, fstat};

/// The environment variable naming the inherited descriptors:
/// `udp=N,tap=M` (either may be missing).
pub const ENV_FDS: &str = "WOW_NODE_FDS";

/// What a descriptor must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A datagram socket.
    Udp,
    /// An open `/dev/net/tun` (major 10, minor 200).
    Tap,
    /// The security associations' state ([`write_state`]): an anonymous
    /// memory file named [`STATE_NAME`].
    State,
}

/// The name of the memory file holding the SA state across the exec.
pub const STATE_NAME: &str = "wow-sa-state";

/// The SA-state descriptor named in `text` (`sa=N`), if any.
pub fn parse_state(text: &str) -> Option<RawFd> {
    text.split(',')
        .find_map(|part| part.strip_prefix("sa="))
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 2)
}

/// Writes `bytes` (keys: the SA state) into an anonymous memory file —
/// never a file on disk — sealed against any change, positioned at its
/// start, closed on exec until [`keep_across_exec`].
pub fn write_state(bytes: &[u8]) -> Result<OwnedFd, FdError> {
    use nix::fcntl::SealFlag;
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(
        STATE_NAME,
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| FdError::Os(-1, e))?;
    let raw = fd.as_raw_fd();
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes)
        .map_err(|e| FdError::Os(raw, nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
    std::io::Seek::rewind(&mut file)
        .map_err(|e| FdError::Os(raw, nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
    let fd = OwnedFd::from(file);
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(|e| FdError::Os(raw, e))?;
    Ok(fd)
}

/// Reads the SA state from an adopted [`Kind::State`] descriptor once and
/// closes it (the memory file goes with its last descriptor).
pub fn read_state(fd: OwnedFd) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut file = std::fs::File::from(fd);
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// Why an inherited descriptor was not adopted.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// Not open.
    #[error("descriptor {0} is not open")]
    Closed(RawFd),
    /// Open but of another kind.
    #[error("descriptor {fd} is not a {kind:?} descriptor")]
    WrongKind {
        /// The number.
        fd: RawFd,
        /// What was expected.
        kind: Kind,
    },
    /// `fcntl` failed.
    #[error("descriptor {0}: {1}")]
    Os(RawFd, nix::Error),
}

/// The descriptors named in `text` (`udp=N,tap=M`).
pub fn parse(text: &str) -> (Option<RawFd>, Option<RawFd>) {
    let (mut udp, mut tap) = (None, None);
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("udp", n)) => udp = n.parse().ok().filter(|n| *n > 2),
            Some(("tap", n)) => tap = n.parse().ok().filter(|n| *n > 2),
            _ => {}
        }
    }
    (udp, tap)
}

/// The value of [`ENV_FDS`] for these descriptors.
pub fn format(udp: Option<RawFd>, tap: Option<RawFd>) -> String {
    let mut parts = Vec::new();
    if let Some(n) = udp {
        parts.push(format!("udp={n}"));
    }
    if let Some(n) = tap {
        parts.push(format!("tap={n}"));
    }
    parts.join(",")
}

/// Lets the descriptor of `owner` survive the next exec (clears
/// `FD_CLOEXEC`).
#[allow(unsafe_code)]
pub fn keep_across_exec(owner: &impl AsRawFd) -> Result<(), FdError> {
    let fd = owner.as_raw_fd();
    // SAFETY: `owner` holds the descriptor open for the whole borrow,
    // which ends with this fcntl.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty()))
        .map(|_| ())
        .map_err(|e| FdError::Os(fd, e))
}

/// Takes ownership of the inherited descriptor `fd` after checking that
/// it is open and of `kind`; sets `FD_CLOEXEC` on it again.
#[allow(unsafe_code)]
pub fn adopt(fd: RawFd, kind: Kind) -> Result<OwnedFd, FdError> {
    if fd <= 2 {
        return Err(FdError::WrongKind { fd, kind });
    }
    // fstat on a number never touches memory we own; EBADF if closed.
    let st = {
        // SAFETY: the borrow lives only for this fstat; fstat fails with
        // EBADF (and nothing else happens) if `fd` is not open.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        fstat(borrowed).map_err(|_| FdError::Closed(fd))?
    };
    let file_type = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let ok = match kind {
        Kind::Udp => file_type == SFlag::S_IFSOCK,
        Kind::Tap => {
            file_type == SFlag::S_IFCHR
                && nix::sys::stat::major(st.st_rdev) == 10
                && nix::sys::stat::minor(st.st_rdev) == 200
        }
        Kind::State => {
            file_type == SFlag::S_IFREG
                && std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|p| {
                    p.to_string_lossy()
                        .starts_with(&format!("/memfd:{STATE_NAME}"))
                })
        }
    };
    if !ok {
        return Err(FdError::WrongKind { fd, kind });
    }
    // SAFETY: `fd` is open (fstat succeeded) and of the expected kind; it
    // was inherited across exec under the number named in ENV_FDS, which
    // is read once at start, before this process opens any descriptor
    // that could have taken the number, so no other owner exists.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if kind == Kind::Udp {
        let socket_type = nix::sys::socket::getsockopt(&owned, nix::sys::socket::sockopt::SockType)
            .map_err(|e| FdError::Os(fd, e))?;
        if socket_type != nix::sys::socket::SockType::Datagram {
            // Not ours to close: hand the number back untouched.
            let _ = std::os::fd::IntoRawFd::into_raw_fd(owned);
            return Err(FdError::WrongKind { fd, kind });
        }
    }
    fcntl(owned.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| FdError::Os(fd, e))?;
    Ok(owned)
}

/// Builds the async TAP device from an adopted descriptor (tun-rs's
/// `from_fd` is `unsafe`; [`adopt`] checked the descriptor).
#[allow(unsafe_code)]
pub fn tap_from_fd(fd: OwnedFd) -> std::io::Result<tun_rs::AsyncDevice> {
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: `raw` is an open /dev/net/tun descriptor this process owns
    // (checked and adopted by `adopt`, ownership moved in here); tun-rs
    // takes ownership and refuses one opened with IFF_VNET_HDR.
    unsafe { tun_rs::AsyncDevice::from_fd(raw) }
}

/// Sets (`true`) or clears (`false`) `TUNSETPERSIST` on the TAP device
/// `tap` is attached to. A persistent device outlives its last
/// descriptor: the self-update sets it before an exec with offloads (the
/// descriptor cannot be handed over, see the module docs) so that the
/// guest's addresses and routes stay while the new binary attaches again
/// by name, and clears it once attached.
#[allow(unsafe_code)]
pub fn set_persist(tap: &impl AsRawFd, persist: bool) -> Result<(), FdError> {
    let fd = tap.as_raw_fd();
    // SAFETY: `tap` holds the descriptor open for the whole call;
    // TUNSETPERSIST takes its argument by value (an integer, not a
    // pointer), so no memory is read or written through it.
    let rc = unsafe {
        nix::libc::ioctl(
            fd,
            nix::libc::TUNSETPERSIST,
            nix::libc::c_ulong::from(persist),
        )
    };
    if rc < 0 {
        return Err(FdError::Os(fd, nix::Error::last()));
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn env_value_round_trip() {
        assert_eq!(parse(&format(Some(7), Some(9))), (Some(7), Some(9)));
        assert_eq!(parse(&format(None, Some(9))), (None, Some(9)));
        assert_eq!(parse("udp=1,tap=x"), (None, None));
        assert_eq!(parse(""), (None, None));
    }

    #[test]
    fn state_goes_through_a_sealed_memory_file() {
        assert_eq!(parse_state("udp=9,sa=12"), Some(12));
        assert_eq!(parse_state("udp=9"), None);
        let fd = write_state(b"state bytes").unwrap();
        let n = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // Not a socket or TAP; a plain file is not a state descriptor.
        assert!(matches!(
            adopt(n, Kind::Udp),
            Err(FdError::WrongKind { .. })
        ));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(
            adopt(file.as_raw_fd(), Kind::State),
            Err(FdError::WrongKind { .. })
        ));
        let owned = adopt(n, Kind::State).unwrap();
        // Sealed: no writes.
        let mut writer = std::fs::File::from(owned.try_clone().unwrap());
        assert!(std::io::Write::write_all(&mut writer, b"x").is_err());
        assert_eq!(&read_state(owned).unwrap()[..], b"state bytes");
    }

    #[test]
    fn adopt_checks_the_kind() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(
            adopt(file.as_raw_fd(), Kind::Udp),
            Err(FdError::WrongKind { .. })
        ));
        assert!(matches!(
            adopt(file.as_raw_fd(), Kind::Tap),
            Err(FdError::WrongKind { .. })
        ));
        // A TCP listener is a socket but not a datagram one.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(matches!(
            adopt(tcp.as_raw_fd(), Kind::Udp),
            Err(FdError::WrongKind { .. })
        ));
        drop(tcp);
        let n = std::os::fd::IntoRawFd::into_raw_fd(socket);
        let owned = adopt(n, Kind::Udp).unwrap();
        let again = std::net::UdpSocket::from(owned);
        assert!(again.local_addr().is_ok());
        assert!(matches!(adopt(1 << 20, Kind::Udp), Err(FdError::Closed(_))));
        drop(file);
    }
}
