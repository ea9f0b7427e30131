//! The node's NAT depth, measured once at start the way `traceroute`
//! does: one UDP datagram toward a public host (the first bootstrap node)
//! with each IP TTL from 1 up, each from its own socket with `IP_RECVERR`
//! set, then the source of the ICMP error each socket's error queue holds
//! (Time Exceeded from a router on the way, Port Unreachable from the
//! host itself). `nat_traversal::depth` reads the answers.
//!
//! The datagrams are one zero byte each to traceroute's ports (33434 and
//! up) of the bootstrap node's address, not to its overlay port: where one
//! reaches the host itself, the host answers Port Unreachable (a public
//! address: the end of the NATs), where the overlay port would have taken
//! it in silence.
//!
//! Blocking-free and runtime-free ([`Probes::send`], wait, then
//! [`Probes::hops`]): nat-traversal's `punch` and `punch_agent` examples
//! include this same file for their `--opening-ttls auto`.

use std::io::IoSliceMut;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt};

/// Traceroute's first port, less one: unlikely to be open.
const TRACEROUTE_PORT: u16 = 33433;
/// ICMP Time Exceeded (RFC 792).
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP Destination Unreachable.
const ICMP_UNREACHABLE: u8 = 3;
/// `SO_EE_ORIGIN_ICMP`: the error came from an ICMP message.
const ORIGIN_ICMP: u8 = 2;

/// How long to wait between [`Probes::send`] and [`Probes::hops`]: the
/// routers of the first hops answer within a few milliseconds.
pub const WAIT: Duration = Duration::from_millis(200);

/// One probe datagram per TTL, sent; their sockets hold the answers.
#[derive(Debug)]
pub struct Probes(Vec<Option<UdpSocket>>);

impl Probes {
    /// Sends one datagram with each TTL from 1 to `max_ttl` toward
    /// `target`'s address (a TTL whose socket fails is skipped).
    pub fn send(target: SocketAddrV4, max_ttl: u8) -> Probes {
        Probes(
            (1..=max_ttl)
                .map(|ttl| {
                    let port = TRACEROUTE_PORT.saturating_add(u16::from(ttl));
                    probe(SocketAddrV4::new(*target.ip(), port), ttl).ok()
                })
                .collect(),
        )
    }

    /// The router (or host) that answered each TTL so far; `None` where
    /// none did. Stops at the hop where the target itself answered. Call
    /// it [`WAIT`] after [`Probes::send`].
    pub fn hops(&self) -> Vec<Option<Ipv4Addr>> {
        let mut hops = Vec::new();
        for socket in &self.0 {
            let answer = socket.as_ref().and_then(answer);
            hops.push(answer.map(|(addr, _)| addr));
            if answer.is_some_and(|(_, reached)| reached) {
                break;
            }
        }
        hops
    }
}

/// The NAT depth toward `target` (a public host), blocking for [`WAIT`]:
/// the depth ([`nat_traversal::depth::nat_depth`]) and the hops it was read
/// from (for the log).
pub fn nat_depth_blocking(target: SocketAddrV4) -> (Option<u8>, Vec<Option<Ipv4Addr>>) {
    let probes = Probes::send(target, nat_traversal::depth::MAX_DEPTH + 1);
    std::thread::sleep(WAIT);
    let hops = probes.hops();
    (nat_traversal::depth::nat_depth(&hops), hops)
}

fn probe(target: SocketAddrV4, ttl: u8) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.set_ttl(u32::from(ttl))?;
    socket.set_nonblocking(true)?;
    setsockopt(&socket, sockopt::Ipv4RecvErr, &true).map_err(std::io::Error::from)?;
    socket.send_to(&[0], target)?;
    Ok(socket)
}

/// The ICMP error queued on `socket`: who sent it, and whether it came
/// from the target itself (Port Unreachable) rather than a router.
fn answer(socket: &UdpSocket) -> Option<(Ipv4Addr, bool)> {
    let mut data = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut cmsg = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in);
    let msg = recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_ERRQUEUE,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::Ipv4RecvErr(err, Some(from)) = c
            && err.ee_origin == ORIGIN_ICMP
        {
            let addr = Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr));
            match err.ee_type {
                ICMP_TIME_EXCEEDED => return Some((addr, false)),
                ICMP_UNREACHABLE => return Some((addr, true)),
                _ => {}
            }
        }
    }
    None
}
