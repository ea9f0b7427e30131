//! Batched underlay I/O: `recvmmsg`/`sendmmsg` (Linux), one system call for
//! up to [`BATCH`] datagrams, into buffers allocated once.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Size of each buffer: the largest overlay message and then some.
pub const BUFFER_LEN: usize = overlay_core::wire::MAX_DATA_LEN + 1024;

/// Reusable buffers for both directions.
pub struct Batch {
    /// Receive buffers.
    pub rx: Vec<Vec<u8>>,
    /// Source and length of each received datagram.
    pub received: Vec<(SocketAddr, usize)>,
    /// Send buffers.
    pub tx: Vec<Vec<u8>>,
    /// Destination and length of each datagram to send.
    pub queued: Vec<(SocketAddrV4, usize)>,
}

impl Batch {
    /// Buffers for [`BATCH`] datagrams each way.
    pub fn new() -> Batch {
        Batch {
            rx: (0..BATCH).map(|_| vec![0; BUFFER_LEN]).collect(),
            received: Vec::with_capacity(BATCH),
            tx: (0..BATCH).map(|_| vec![0; BUFFER_LEN]).collect(),
            queued: Vec::with_capacity(BATCH),
        }
    }

    /// Reads what is queued on `socket` without blocking: `received` lists
    /// each datagram (its bytes are in `rx[i]`). `WouldBlock` when empty.
    pub fn try_recv(&mut self, socket: &UdpSocket) -> io::Result<()> {
        self.received.clear();
        let fd = socket.as_raw_fd();
        let Batch { rx, received, .. } = self;
        socket.try_io(Interest::READABLE, || {
            let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = rx
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            let results = recvmmsg(
                fd,
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)?;
            for m in results {
                if let Some(addr) = m.address {
                    received.push((SocketAddr::V4(SocketAddrV4::from(addr)), m.bytes));
                }
            }
            Ok(())
        })
    }

    /// Sends the first `queued.len()` buffers of `tx`, waiting for room
    /// when the socket is full. Errors other than a full socket drop the
    /// rest of the batch (the overlay and TCP retransmit).
    pub async fn send(&mut self, socket: &UdpSocket) {
        let fd = socket.as_raw_fd();
        let mut start = 0;
        while start < self.queued.len() {
            let Batch { tx, queued, .. } = &mut *self;
            let pending = &queued[start..];
            let result = socket.try_io(Interest::WRITABLE, || {
                let iovs: Vec<[IoSlice<'_>; 1]> = pending
                    .iter()
                    .zip(tx[start..].iter())
                    .map(|((_, len), b)| [IoSlice::new(&b[..*len])])
                    .collect();
                let addrs: Vec<Option<SockaddrIn>> = pending
                    .iter()
                    .map(|(to, _)| Some(SockaddrIn::from(*to)))
                    .collect();
                let mut headers = MultiHeaders::<SockaddrIn>::preallocate(pending.len(), None);
                let sent = sendmmsg(fd, &mut headers, &iovs, addrs, [], MsgFlags::MSG_DONTWAIT)
                    .map_err(io::Error::from)?
                    .count();
                Ok(sent)
            });
            match result {
                Ok(0) => break,
                Ok(sent) => start += sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "sendmmsg failed; batch dropped");
                    break;
                }
            }
        }
        self.queued.clear();
    }
}
