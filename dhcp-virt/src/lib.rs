//! A virtual DHCPv4 server for a self-configuring virtual network.
//!
//! A WOW node captures the DHCP requests of its guest on a TAP device and
//! answers them itself, so an unmodified guest OS configures its interface
//! with its own DHCP client. This crate is that server's logic, following
//! RFC 2131 and RFC 2132. It does no networking and reads no clock: bytes
//! and `Instant`s go in, replies, events and deadlines come out.
//!
//! * Two faces: DHCP payloads ([`Server::handle_message`] /
//!   [`Server::poll_transmit`]), for a host on an ordinary UDP socket, or
//!   whole Ethernet frames from a TAP ([`Server::handle_frame`] /
//!   [`Server::poll_frame`], feature `frames`). See [Hosting
//!   it](#hosting-it).
//! * Addresses come from a [`Pool`] (ranges, exclusions, reservations) with a
//!   stable per-client preference, and are kept in a [`LeaseStore`]:
//!   [`MemoryStore`] or the [`FileStore`] (atomic snapshot plus an
//!   append-only journal, one `fdatasync` per change).
//! * Decentralised: with [`Allocation::Directory`] every new binding is
//!   first claimed (create-if-absent `ip → owner`) in a shared directory
//!   such as an overlay DHT, and every renewal re-claims it: a duplicate
//!   left by a healed partition is given up ([`Event::ClaimLost`]) and the
//!   loser's next REQUEST is NAKed; see [`directory`].
//! * Central: a designated node's [`central::Registry`] can be the
//!   directory instead, one authority for the whole network.
//! * Every refusal is a typed [`Refusal`] the caller can log.
//!
//! # Example
//!
//! A client's DISCOVER gets an OFFER; its REQUEST gets an ACK:
//!
//! ```
//! use std::time::Instant;
//! use dhcp_virt::wire::{ClientMessage, ClientMessageKind, HardwareAddr, Reply, ReplyKind};
//! use dhcp_virt::{Config, MemoryStore, Server};
//!
//! let now = Instant::now();
//! let config = Config::new("10.8.0.0/24".parse().unwrap(), "10.8.0.1".parse().unwrap());
//! let mut server = Server::new(now, std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000), config, MemoryStore::new()).unwrap();
//!
//! let mac = HardwareAddr::ethernet([0x02, 0, 0, 0, 0, 0x42]);
//! let discover = ClientMessage::new(ClientMessageKind::Discover, 7, mac);
//! server.handle_message(now, &discover.emit()).unwrap();
//! let offer = Reply::parse(&server.poll_transmit().unwrap().payload).unwrap();
//! assert_eq!(offer.kind, ReplyKind::Offer);
//!
//! let mut request = ClientMessage::new(ClientMessageKind::Request, 7, mac);
//! request.server_id = Some(offer.server_id);
//! request.requested_addr = Some(offer.your_addr);
//! server.handle_message(now, &request.emit()).unwrap();
//! let ack = Reply::parse(&server.poll_transmit().unwrap().payload).unwrap();
//! assert_eq!((ack.kind, ack.your_addr), (ReplyKind::Ack, offer.your_addr));
//! ```
//!
//! # Hosting it
//!
//! ## On an ordinary UDP socket
//!
//! Bind a UDP socket to port 67 on the clients' link only
//! (`SO_BINDTODEVICE`) and allow it to broadcast (`SO_BROADCAST`); feed
//! each datagram to [`Server::handle_message`] and send each
//! [`Transmit`] to [`Destination::socket_addr`]. A socket cannot reach a
//! client at the address it is being offered (the client does not hold it
//! yet, so nobody answers the kernel's ARP): `socket_addr` broadcasts those
//! replies ([`Destination::Hardware`]), as RFC 2131 §4.1 allows. This
//! needs none of the crate's features. `examples/dhcp-socket.rs` is a
//! whole server, checked against busybox udhcpc by `tests/socket.rs`.
//!
//! ```no_run
//! # use std::time::Instant;
//! # use dhcp_virt::{Config, MemoryStore, Server};
//! # fn main() -> std::io::Result<()> {
//! let socket = std::net::UdpSocket::bind("0.0.0.0:67")?; // and SO_BINDTODEVICE
//! socket.set_broadcast(true)?;
//! let mut server = Server::new(Instant::now(), std::time::SystemTime::now(), Config::default(), MemoryStore::new()).unwrap();
//! let mut buf = [0u8; 1500];
//! loop {
//!     let (n, _from) = socket.recv_from(&mut buf)?; // or wake at server.poll_timeout()
//!     let now = Instant::now();
//!     if let Err(reason) = server.handle_message(now, &buf[..n]) {
//!         eprintln!("not served: {reason}");
//!     }
//!     server.handle_timeout(now);
//!     while let Some(t) = server.poll_transmit() {
//!         socket.send_to(&t.payload, t.destination.socket_addr())?;
//!     }
//!     while let Some(event) = server.poll_event() {
//!         eprintln!("{event:?}");
//!     }
//! }
//! # }
//! ```
//!
//! ## On a TAP device (feature `frames`)
//!
//! A TAP host sees whole Ethernet frames and writes replies exactly where
//! RFC 2131 says, unicast to a client's hardware address included.
//! `examples/dhcp-tap.rs` is a whole server (with `arp-virt` for ARP),
//! checked against ISC dhclient and busybox udhcpc by `tests/netns.rs`.
//!
//! ```no_run
//! # #[cfg(feature = "frames")]
//! # fn main() {
//! # use std::time::Instant;
//! # use dhcp_virt::{Config, MemoryStore, Server};
//! # fn read_tap() -> Vec<u8> { Vec::new() }
//! # fn write_tap(_: &[u8]) {}
//! let mut server = Server::new(Instant::now(), std::time::SystemTime::now(), Config::default(), MemoryStore::new()).unwrap();
//! loop {
//!     let frame = read_tap(); // or wake at server.poll_timeout()
//!     let now = Instant::now();
//!     if let Err(reason) = server.handle_frame(now, &frame) {
//!         eprintln!("not served: {reason}");
//!     }
//!     server.handle_timeout(now);
//!     while let Some(reply) = server.poll_frame() {
//!         write_tap(&reply);
//!     }
//!     while let Some(event) = server.poll_event() {
//!         eprintln!("{event:?}");
//!     }
//! }
//! # }
//! # #[cfg(not(feature = "frames"))]
//! # fn main() {}
//! ```
//!
//! # Cargo features
//!
//! All on by default; message-only use (a socket host with
//! [`MemoryStore`] or its own [`LeaseStore`]) needs none of them and pulls
//! in no frame parser, no serde and no file store:
//!
//! * `frames`: [`Server::handle_frame`], [`Server::poll_frame`] and the
//!   frame half of [`wire`] (etherparse).
//! * `serde`: `Serialize`/`Deserialize` for [`Lease`], [`LeaseState`] and
//!   [`ClientKey`].
//! * `file-store`: [`FileStore`] (implies `serde`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// The docs link the frame API and the file store, which a build without
// their features leaves out.
#![cfg_attr(
    not(all(feature = "frames", feature = "file-store")),
    allow(rustdoc::broken_intra_doc_links)
)]

pub mod central;
pub mod directory;
pub mod error;
#[cfg(feature = "file-store")]
pub mod file_store;
pub mod lease;
pub mod pool;
pub mod server;
pub mod wire;

pub use directory::{
    AddressDirectory, ClaimKind, ClaimResult, CreateAnswer, DirectoryCompletion, DirectoryOp,
    DirectoryRequest, RequestId,
};
#[cfg(any(test, feature = "test-util"))]
pub use directory::{FakeConfig, FakeDirectory};
pub use error::{ConfigError, FrameError, MessageError, Refusal, StartError, StoreError};
#[cfg(feature = "file-store")]
pub use file_store::FileStore;
pub use lease::{ClientKey, Lease, LeaseState, LeaseStore, MemoryStore};
pub use pool::{Pool, Reservation, ReservationKey};
pub use server::{Allocation, Config, Destination, Event, Server, Transmit};

/// Foreign types in this crate's public signatures, so that a user needs
/// no version-matched dependency of its own: the network of [`Config`]
/// and the domain names of [`wire::Reply`] and [`wire::ClientFqdn`].
pub use dhcproto::Name;
pub use ipnet::Ipv4Net;
