//! The WOW node's protocol logic, sans-IO.
//!
//! [`core::Core`] composes the sans-IO machines of this workspace
//! (overlay-core, arp-virt, dhcp-virt, dns-virt, ipsec-sa, ipsec-ca,
//! nat-traversal) into one node: guest Ethernet frames go in and out
//! through [`core::Core::handle_tap_frame`] and
//! [`core::Core::poll_tap_frame`], overlay datagrams through
//! [`core::Core::handle_udp`] and [`core::Core::poll_udp`], timers through
//! [`core::Core::poll_timeout`] and [`core::Core::handle_timeout`]. It owns
//! no socket, no thread and no clock: the caller passes `Instant` and wall
//! time in and moves the bytes (the `wow-node` binary does so over a TAP
//! device and a UDP socket with tokio).
//!
//! The other modules are the pieces of node policy the core uses:
//! [`ca_command`] (the CA administration commands of the control socket),
//! [`records`] (which DHT records a node believes), [`overlay_identity`]
//! (CA-backed overlay identities), [`wire`] (the node's data header in
//! overlay payloads), [`crl_dht`] (the CA's revocation list carried over the
//! DHT), [`enrol`] (the CA's announcement, rate limits and certificate
//! lifetimes), [`membership`] (the node's certificate from enrolment to
//! renewal and the CRL it keeps, driven beside the core) and [`demo`]
//! (settings for a small, fast ring on loopback), [`update`] (signed
//! releases of the node's binary, carried in DHT chunks).
//! With the `test-util` feature, `guest` is a smoltcp guest (DHCP, DNS,
//! ping, TCP) to drive a core's guest side in tests and demos.
//!
//! # Example
//!
//! Two cores joining a ring, their datagrams carried in memory:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant, SystemTime};
//!
//! use dhcp_virt::MemoryStore;
//! use overlay_core::Address;
//! use wow_core::core::Core;
//! use wow_core::demo;
//!
//! let mut now = Instant::now();
//! let endpoints: Vec<SocketAddr> = vec![
//!     "127.0.0.1:10001".parse().unwrap(),
//!     "127.0.0.1:10002".parse().unwrap(),
//! ];
//! let mut cores: Vec<Core<MemoryStore>> = (0..2)
//!     .map(|i| {
//!         Core::new_with_insecure_seed(
//!             now,
//!             std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
//!             demo::settings(),
//!             demo::overlay_config(endpoints[i]),
//!             Address::from_key(format!("example-{i}").as_bytes()),
//!             MemoryStore::new(),
//!             i as u64,
//!         )
//!         .unwrap()
//!     })
//!     .collect();
//! cores[0].join(now, &[]);
//! cores[1].join(now, &endpoints[..1]);
//!
//! let mut buf = vec![0u8; 65536];
//! for _ in 0..100 {
//!     // Carry every datagram to the core it is addressed to.
//!     let mut moved = true;
//!     while moved {
//!         moved = false;
//!         for i in 0..cores.len() {
//!             while let Some((to, len)) = cores[i].poll_udp(&mut buf) {
//!                 moved = true;
//!                 if let Some(j) = endpoints.iter().position(|e| *e == to) {
//!                     cores[j].handle_udp(now, endpoints[i], &buf[..len]);
//!                 }
//!             }
//!         }
//!     }
//!     if cores.iter().all(|c| c.overlay().is_joined()) {
//!         break;
//!     }
//!     // Simulated time: run the timers that are due.
//!     now += Duration::from_millis(100);
//!     for core in &mut cores {
//!         if core.poll_timeout().is_some_and(|t| t <= now) {
//!             core.handle_timeout(now, SystemTime::now());
//!         }
//!     }
//! }
//! assert!(cores.iter().all(|c| c.overlay().is_joined()));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alloc;
pub mod ca_command;
mod ca_hold;
pub mod core;
pub mod crl_dht;
pub mod demo;
pub mod enrol;
pub mod firewall;
#[cfg(feature = "test-util")]
pub mod guest;
pub mod ipv6;
pub mod membership;
pub mod metrics;
pub mod overlay_identity;
pub mod records;
pub mod status;
pub mod update;
pub mod walk;
pub mod wire;

pub use crate::core::{
    Core, CoreError, CoreEvent, Counters, Credentials, CrlStatus, CryptoDone, CryptoJob, Settings,
};
pub use demo::DemoCa;
#[cfg(feature = "test-util")]
pub use demo::DemoNode;
pub use membership::{EnrolVia, Membership, MembershipConfig, MembershipError};
pub use status::Status;
