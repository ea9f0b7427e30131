//! A Brunet-style structured ring overlay, as a sans-IO library.
//!
//! Every node has a 160-bit [`Address`] on a ring. It holds a few typed
//! links ([`table`]): two *near* links on each side of the ring, a few
//! *shortcuts* drawn from Symphony's harmonic distribution, a temporary
//! *leaf* link while joining, and *demand* shortcuts toward peers it
//! exchanges much traffic with. Messages are routed greedily with one-step
//! lookahead over the peers' own connection lists ([`routing`]), in *exact*
//! mode (to one address) or *closest* mode (to the node nearest an address,
//! which is how the [`dht`] finds the node responsible for a key; its
//! values are signed [`record`]s that only their writer can change). The
//! binary format is documented in [`wire`].
//!
//! Nodes are bound to keys ([`identity`]): a ring address is the hash of
//! the node's public key (the overlay address its certificate carries, if
//! it has one), links are set up with a signed challenge-response
//! handshake, and a link's endpoint moves only after the peer's proof
//! checks. [`KeyIdentity`] does this for open networks; [`OpenIdentity`]
//! proves nothing and is for the simulator and tests only.
//!
//! The crate does no I/O and reads no clock: [`Node`] takes bytes (or
//! decoded messages) and the current `Instant`, and hands back messages to
//! send, events and its next deadline. [`sim`] runs thousands of nodes
//! deterministically in one process with the same state machine.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use overlay_core::sim::{Outcome, Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig { seed: 7, ..SimConfig::default() }, Instant::now());
//! for _ in 0..20 {
//!     sim.spawn(2); // join through up to two random live nodes
//!     sim.run_for(Duration::from_millis(200));
//! }
//! sim.run_for(Duration::from_secs(30));
//! assert_eq!(sim.ring_consistency(), 1.0);
//!
//! let key = sim.echo(0, 19).unwrap();
//! sim.run_for(Duration::from_secs(2));
//! assert!(matches!(sim.take_outcome(key), Some(Outcome::Echo(_))));
//! ```
//!
//! Driving a real node follows the usual loop: feed
//! [`Node::handle_input`] with each datagram, call [`Node::handle_timeout`]
//! when [`Node::poll_timeout`] passes, and after each call send every
//! [`Node::poll_transmit`] (encoded with [`wire::Message::emit`]) and act on
//! every [`Node::poll_event`].
//!
//! A forwarding loop that must not allocate per packet uses the pooled
//! variants instead: [`Node::send_slice`] to send, [`Node::poll_transmit_into`]
//! to encode straight into the caller's datagram buffer, and
//! [`Node::recycle`] to give each [`Event::Delivered`] payload back. In the
//! steady state the data path (including forwarding for others) then
//! reuses the node's [`BufferPool`] and allocates nothing.
//!
//! With the cargo feature `lan`, the `lan` module finds other nodes of the
//! same network on the local network by multicast, with announcements
//! authenticated by a key derived from the network's CA certificate or a
//! shared secret.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod address;
pub mod dht;
pub mod error;
pub mod identity;
#[cfg(feature = "lan")]
pub mod lan;
pub mod node;
pub mod pool;
pub mod record;
pub mod routing;
pub mod sim;
pub mod table;
pub mod wire;

pub use address::{Address, Distance};
pub use error::{AddressParseError, NodeError, WireError};
pub use identity::{DynIdentity, Identity, IdentityError, KeyAlgorithm, KeyIdentity, OpenIdentity};
pub use node::{Config, DhtOutcome, DisconnectReason, DropReason, Event, Node, Stats, Transmit};
pub use pool::BufferPool;
pub use record::{KeySigner, KeyType, RecordPolicy, RecordSigner, WriterKey};
pub use wire::{Message, Mode, Roles};
