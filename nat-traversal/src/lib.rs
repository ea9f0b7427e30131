//! NAT traversal for overlay nodes, sans-IO: learn reflexive addresses,
//! classify NATs, punch holes, keep bindings alive and fall back to relays.
//!
//! This crate does no networking and reads no clock: every machine takes
//! bytes and an [`Instant`](std::time::Instant) in (`handle_*`) and gives
//! datagrams, deadlines and events out (`poll_*`). Randomness (transaction
//! ids) comes from a caller-provided seed. The tokio-free examples
//! `examples/punch.rs` and `examples/punch_agent.rs` are I/O shells.
//!
//! - [`wire`]: STUN messages (RFC 8489), TURN ChannelData (RFC 8656
//!   §12.4) and our signalling format (registration,
//!   [`Offer`]s, relay, data frames).
//! - [`server`]: a STUN Binding server, so every node is an observer.
//! - [`discovery`]: reflexive address from several observers, and NAT
//!   mapping/filtering classification (RFC 4787, RFC 5780).
//! - [`punch`]: ICE-like authenticated connectivity checks (RFC 8445),
//!   with optional birthday probing between a symmetric NAT and a cone
//!   ([`Socket::Extra`] sockets on the symmetric side).
//! - [`keepalive`]: binding keep-alives whose interval adapts to the
//!   binding lifetime.
//! - [`link`]: authenticated data frames over a direct path or a relay,
//!   with a lossless relay → direct upgrade.
//! - [`agent`]: hole punching with many peers at once, the "open our own
//!   NAT first" policy (a [`Transmit`] can ask for a low IP TTL) and the
//!   TURN relay of last resort, behind one interface.
//! - [`turn`]: a TURN client (RFC 8656), for relaying through a TURN
//!   server when no common neighbour relays; with channels, its data path
//!   costs 4 bytes a packet and allocates nothing.
//!
//! Two peers punch to each other (the network is a pair of queues here):
//!
//! ```
//! use std::time::Instant;
//! use nat_traversal::punch::{PunchConfig, PunchEvent, PunchSession};
//! use nat_traversal::wire::{Candidate, CandidateKind, Offer};
//!
//! let a_addr = "192.0.2.1:4000".parse().unwrap();
//! let b_addr = "192.0.2.2:4000".parse().unwrap();
//! let offer = |from: &str, to: &str, addr| Offer {
//!     from: from.into(),
//!     to: to.into(),
//!     ufrag: format!("{from}frag"),
//!     password: format!("{from} secret").into_bytes(),
//!     candidates: vec![Candidate::new(CandidateKind::Host, addr, 65535)],
//! };
//! let (oa, ob) = (offer("a", "b", a_addr), offer("b", "a", b_addr));
//! let now = Instant::now();
//! let mut a = PunchSession::new(now, PunchConfig::default(), &oa, &ob).unwrap();
//! let mut b = PunchSession::new(now, PunchConfig::default(), &ob, &oa).unwrap();
//! let mut connected = 0;
//! for _ in 0..10 {
//!     while let Some(t) = a.poll_transmit() {
//!         b.handle_input(now, a_addr, &t.payload);
//!     }
//!     while let Some(t) = b.poll_transmit() {
//!         a.handle_input(now, b_addr, &t.payload);
//!     }
//!     for s in [&mut a, &mut b] {
//!         while let Some(PunchEvent::Connected(outcome)) = s.poll_event() {
//!             assert!(outcome.remote == a_addr || outcome.remote == b_addr);
//!             connected += 1;
//!         }
//!     }
//! }
//! assert_eq!(connected, 2);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::SocketAddr;

pub mod agent;
pub mod depth;
pub mod discovery;
pub mod error;
pub mod keepalive;
pub mod link;
pub mod portmap;
pub mod punch;
pub mod server;
pub mod turn;
pub mod wire;

pub use agent::{Agent, AgentConfig, AgentEvent, AgentStats, Signal};
pub use discovery::{
    Discovery, DiscoveryConfig, DiscoveryEvent, FilteringBehavior, MappingBehavior, NatReport,
};
pub use error::{Error, WireError};
pub use keepalive::{KeepAlive, KeepAliveConfig, KeepAliveEvent};
pub use link::{Link, LinkEvent, PathKind};
pub use portmap::{PortMapConfig, PortMapError, PortMapEvent, PortMapProtocol, PortMapper};
pub use punch::{
    BirthdayConfig, BirthdayRole, PunchConfig, PunchEvent, PunchFailure, PunchOutcome, PunchSession,
};
pub use server::{Server, ServerConfig};
pub use turn::{TurnClient, TurnConfig, TurnCredentials, TurnEvent, TurnFailure};
pub use wire::{Candidate, CandidateKind, Offer};

/// Which of the caller's sockets a datagram uses. Everything but a STUN
/// server with an alternate port uses [`Socket::Primary`] only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Socket {
    /// The main socket.
    Primary,
    /// The server's second socket (RFC 5780 alternate port).
    Alternate,
    /// One of the extra sockets a punch session asks for to probe a
    /// symmetric NAT (see [`punch::PunchSession::extra_sockets`]), by index.
    Extra(u16),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send from.
    pub source: Socket,
    /// The destination.
    pub destination: SocketAddr,
    /// The bytes.
    pub payload: Vec<u8>,
    /// The IP TTL (hop limit) to send with; `None`: the socket's default.
    /// Only [`agent::Agent`]'s NAT-opening datagrams set it.
    pub ttl: Option<u8>,
}

/// Compare two MACs without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A generator seeded with 256 bits from the operating system's random
/// source: the production source of transaction ids.
pub(crate) fn os_rng() -> rand_chacha::ChaCha8Rng {
    use rand_chacha::rand_core::SeedableRng;
    let mut seed = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut seed) {
        panic!("the operating system's random source failed: {e}");
    }
    rand_chacha::ChaCha8Rng::from_seed(seed)
}
