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
//! decoded messages) and the current `Instant` (always the first
//! argument), and hands back messages to send, events and its next
//! deadline. [`sim`] runs thousands of nodes deterministically in one
//! process with the same state machine.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use overlay_core::sim::{Outcome, Sim, SimConfig};
//!
//! let mut sim = Sim::new(Instant::now(), SimConfig { seed: 7, ..SimConfig::default() });
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
//! # Driving a real node
//!
//! 1. Build it with [`Node::new`] and a key-bound identity
//!    ([`KeyIdentity`]), and set [`Config::endpoints`] to the address(es)
//!    peers reach it at (for a UDP socket: its bound address, not
//!    `0.0.0.0`); [`Node::join`] refuses to start without one
//!    ([`NodeError::NoEndpoints`]).
//! 2. [`Node::join`] through bootstrap endpoints (none: start a new ring).
//! 3. Loop: feed [`Node::handle_input`] with each datagram, call
//!    [`Node::handle_timeout`] when [`Node::poll_timeout`] passes, and after
//!    each call send every [`Node::poll_transmit`] (encoded with
//!    [`Message::emit`]) and act on every [`Node::poll_event`].
//! 4. The DHT is ready once [`Event::Joined`] has come out
//!    ([`Node::is_joined`]); [`Node::dht_put`], [`Node::dht_get`] and
//!    [`Node::dht_create`] answer with [`Event::Dht`].
//! 5. On [`Event::ObservedEndpoint`] (how peers see this node; behind a
//!    NAT its public mapping) add the endpoint with [`Node::set_endpoints`]
//!    if peers outside the NAT must reach this node.
//!
//! `examples/ring.rs` does all of this over a real UDP socket in about 150
//! lines.
//!
//! The data path has pooled variants that do not allocate once the node's
//! [`BufferPool`] is warm: [`Node::send_slice`] copies the payload into a
//! pooled buffer, [`Node::handle_input`] decodes data payloads into pooled
//! buffers, [`Node::poll_transmit_into`] encodes into the caller's buffer
//! and takes the data buffer back, and [`Node::recycle`] returns an
//! [`Event::Delivered`] payload. A driver that uses them for every packet
//! sends, forwards and receives data without a heap allocation per packet.
//!
//! ```
//! use std::time::Instant;
//! use overlay_core::wire::MAX_MESSAGE_LEN;
//! use overlay_core::{Config, Event, KeyIdentity, Node};
//!
//! let now = Instant::now();
//! let config = Config {
//!     // Where peers reach this node: its socket's address.
//!     endpoints: vec!["192.0.2.1:4000".parse().unwrap()],
//!     ..Config::default()
//! };
//! let mut node = Node::new(now, config, KeyIdentity::generate_ed25519());
//! node.join(now, &[])?; // a new ring; pass bootstrap endpoints to join one
//! // One datagram buffer for the life of the node.
//! let mut datagram = vec![0u8; MAX_MESSAGE_LEN];
//!
//! // Data for ourselves is delivered at once; data for others leaves
//! // through `poll_transmit_into`.
//! let me = node.address();
//! node.send_slice(now, me, b"hello")?;
//! while let Some((to, len)) = node.poll_transmit_into(&mut datagram) {
//!     // socket.send_to(&datagram[..len], to)
//!     # let _ = (to, len);
//! }
//! while let Some(event) = node.poll_event() {
//!     if let Event::Delivered { payload, .. } = event {
//!         assert_eq!(payload, b"hello");
//!         node.recycle(payload); // the next packet reuses it
//!     }
//! }
//! assert_eq!(node.buffer_pool().len(), 1);
//! # Ok::<(), overlay_core::NodeError>(())
//! ```
//!
//!
//! # Optional modules
//!
//! With the cargo feature `lan`, the `lan` module finds other nodes of the
//! same network on the local network by multicast, with announcements
//! authenticated by a key derived from the network's CA certificate or a
//! shared secret.
//!
//! With the cargo feature `chunked`, the `chunked` module stores values
//! larger than one DHT value as a manifest plus chunks under derived keys,
//! and assembles them, taking only chunks that match the manifest (whose
//! authentication is the caller's).
//!
//! # Root re-exports
//!
//! The root holds what driving a node takes: the node and its
//! configuration, events and errors, and the types those name (from
//! [`wire`], [`record`], [`identity`], [`dht`]). The modules keep the full
//! vocabulary (message formats, limits, record signing, identity proofs).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod address;
#[cfg(feature = "chunked")]
pub mod chunked;
pub mod dht;
mod error;
pub mod identity;
#[cfg(feature = "lan")]
pub mod lan;
mod node;
mod pool;
pub mod record;
pub mod routing;
pub mod sim;
pub mod table;
pub mod wire;

pub use address::{ADDRESS_LEN, Address, Distance};
pub use dht::{DhtStore, Quotas};
pub use error::{AddressParseError, NodeError, WireError};
pub use identity::{DynIdentity, Identity, IdentityError, KeyAlgorithm, KeyIdentity, OpenIdentity};
pub use node::{Config, DhtOutcome, DisconnectReason, DropReason, Event, Node, Stats, Transmit};
pub use pool::BufferPool;
pub use record::{
    KeySigner, KeyType, PolicyStage, RecordPolicy, RecordRejection, RecordRejections, RecordSigner,
    WriterKey,
};
pub use table::ConnectionTable;
pub use wire::{CloseReason, DhtOp, LinkStatus, Message, Mode, Record, Roles};
