//! A virtual DHCPv4 server for a self-configuring virtual network.
//!
//! A WOW node captures the DHCP requests of its guest on a TAP device and
//! answers them itself, so an unmodified guest OS configures its interface
//! with its own DHCP client. This crate is that server's logic, following
//! RFC 2131 and RFC 2132. It does no networking and reads no clock: bytes
//! and `Instant`s go in, replies, events and deadlines come out.
//!
//! * Two faces: DHCP payloads ([`Server::handle_message`] /
//!   [`Server::poll_transmit`]) or whole Ethernet frames from a TAP
//!   ([`Server::handle_frame`] / [`Server::poll_frame`]).
//! * Addresses come from a [`Pool`] (ranges, exclusions, reservations) with a
//!   stable per-client preference, and are kept in a [`LeaseStore`]:
//!   [`MemoryStore`] or the [`FileStore`] (atomic snapshot plus an
//!   append-only journal, one `fdatasync` per change).
//! * Decentralised: with [`Allocation::Directory`] every new binding is
//!   first claimed (create-if-absent `ip → owner`) in a shared directory
//!   such as an overlay DHT, and every renewal re-claims it: a duplicate
//!   left by a healed partition is given up ([`Event::ClaimLost`]) and the
//!   loser's next REQUEST is NAKed; see [`directory`].
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
//! let mut server = Server::new(config, MemoryStore::new(), now, 1_700_000_000).unwrap();
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
//! # The driving loop
//!
//! ```no_run
//! # use std::time::Instant;
//! # use dhcp_virt::{Config, MemoryStore, Server};
//! # fn read_tap() -> Vec<u8> { Vec::new() }
//! # fn write_tap(_: &[u8]) {}
//! let mut server = Server::new(Config::default(), MemoryStore::new(), Instant::now(), 0).unwrap();
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
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod directory;
pub mod error;
pub mod file_store;
pub mod lease;
pub mod pool;
pub mod server;
pub mod wire;

pub use directory::{
    AddressDirectory, ClaimKind, ClaimResult, CreateAnswer, DirectoryCompletion, DirectoryOp,
    DirectoryRequest, FakeConfig, FakeDirectory, RequestId,
};
pub use error::{ConfigError, FrameError, MessageError, Refusal, StartError, StoreError};
pub use file_store::FileStore;
pub use lease::{ClientKey, Lease, LeaseState, LeaseStore, MemoryStore};
pub use pool::{Pool, Reservation, ReservationKey};
pub use server::{Allocation, Config, Destination, Event, Server, Transmit};
