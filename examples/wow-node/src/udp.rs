//! Batched underlay I/O on Linux: UDP generic segmentation offload (GSO,
//! `UDP_SEGMENT`) sends a run of equal-sized datagrams to one peer in one
//! system call, and UDP generic receive offload (GRO, `UDP_GRO`) receives a
//! run of them in one. Both fall back to one datagram per call where the
//! kernel refuses.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 128).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send (a UDP datagram's payload limit, with room).
pub const MAX_BATCH_BYTES: usize = 65000;

/// Turns on GRO for `socket`; returns whether the kernel accepted it.
pub fn enable_gro(socket: &UdpSocket) -> bool {
    setsockopt(socket, sockopt::UdpGroSegment, &true).is_ok()
}

/// Sends `buf`, datagrams of `segment` bytes (the last one possibly
/// shorter), to `to` in one system call with `UDP_SEGMENT`.
pub async fn send_segments(
    socket: &UdpSocket,
    buf: &[u8],
    segment: u16,
    to: SocketAddr,
) -> std::io::Result<()> {
    let addr = SockaddrStorage::from(to);
    socket
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(buf)];
            let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
            sendmsg(
                socket.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::empty(),
                Some(&addr),
            )
            .map(|_| ())
            .map_err(std::io::Error::from)
        })
        .await
}

/// Receives one datagram, or a GRO run of them, without waiting: returns
/// the length, the source and the segment size (`len` when not coalesced).
pub fn try_recv(
    socket: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, usize)> {
    socket.try_io(Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut *cmsg),
            MsgFlags::empty(),
        )
        .map_err(std::io::Error::from)?;
        let len = msg.bytes;
        let mut segment = len;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::UdpGroSegments(s) = c
                    && s > 0
                {
                    segment = s as usize;
                }
            }
        }
        let from = msg
            .address
            .as_ref()
            .and_then(|a| {
                a.as_sockaddr_in()
                    .map(|s| SocketAddr::V4(SocketAddrV4::from(*s)))
                    .or_else(|| {
                        a.as_sockaddr_in6()
                            .map(|s| SocketAddr::V6(SocketAddrV6::from(*s)))
                    })
            })
            .ok_or_else(|| std::io::Error::other("datagram without a source address"))?;
        Ok((len, from, segment))
    })
}

/// Space for the GRO control message.
pub fn cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(i32)
}
