//! A sans-IO proxy-ARP responder for the virtual gateway of a WOW virtual
//! network.
//!
//! A guest sees the virtual network through a TAP device. Whatever address of
//! the network it asks for (RFC 826 who-has), the [`Responder`] answers with
//! the virtual gateway's MAC (proxy ARP), so the guest's kernel hands all
//! virtual-network traffic to the TAP, where the overlay picks it up. Only the
//! guest's own address goes unanswered. The responder also
//!
//! - ignores requests for addresses outside the network, ARP for other
//!   hardware or protocols, and ARP replies;
//! - reports (and refuses, by answering) RFC 5227 probes and announcements
//!   of addresses the gateway or another virtual host holds; the caller says
//!   which through [`OtherHosts`];
//! - emits a gratuitous ARP for the gateway on start and on demand.
//!
//! This crate does no I/O and reads no clock: bytes in, bytes and events out.
//! A frame in gives zero or one frame out, written into a fixed array
//! ([`Transmit`]); the hot path does not allocate. Frames are parsed and
//! emitted with [`smoltcp::wire`] ([`wire`]).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use arp_virt::{Config, EthernetAddress, Outcome, Responder, wire};
//!
//! let gateway_mac = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
//! let mut config = Config::new("10.10.0.0/16".parse().unwrap(), gateway_mac);
//! config.guest_addr = Some(Ipv4Addr::new(10, 10, 0, 2));
//! let mut responder = Responder::new(config).unwrap();
//!
//! // Write the gateway's gratuitous ARP to the TAP device first.
//! let announcement = responder.poll_transmit().unwrap();
//! assert_eq!(announcement.repr().sender_protocol_addr, Ipv4Addr::new(10, 10, 0, 1));
//!
//! // The guest asks for another virtual host: who-has 10.10.7.9 tell 10.10.0.2.
//! let guest_mac = EthernetAddress([0x52, 0x54, 0, 0, 0, 2]);
//! let request = wire::Repr {
//!     destination: EthernetAddress::BROADCAST,
//!     source: guest_mac,
//!     operation: wire::Operation::Request,
//!     sender_hardware_addr: guest_mac,
//!     sender_protocol_addr: Ipv4Addr::new(10, 10, 0, 2),
//!     target_hardware_addr: EthernetAddress([0; 6]),
//!     target_protocol_addr: Ipv4Addr::new(10, 10, 7, 9),
//! }
//! .to_bytes();
//!
//! // `others` tells which addresses other virtual hosts hold (for conflicts).
//! let others = |addr: Ipv4Addr| addr == Ipv4Addr::new(10, 10, 7, 9);
//! match responder.handle_frame(&request, &others).unwrap() {
//!     Outcome::Reply(reply) => {
//!         // 10.10.7.9 is-at the gateway: write `reply.as_bytes()` to the TAP.
//!         assert_eq!(reply.repr().sender_hardware_addr, gateway_mac);
//!         assert_eq!(reply.repr().destination, guest_mac);
//!     }
//!     Outcome::Ignored(reason) => panic!("ignored: {reason:?}"),
//! }
//! while let Some(event) = responder.poll_event() {
//!     println!("{event:?}");
//! }
//! ```
//!
//! [`ndp`] does for IPv6 what the responder does for IPv4: router
//! advertisements for the guest's autoconfiguration and proxy neighbour
//! advertisements.
//!
//! `examples/arp-tap.rs` serves ARP on a TAP device with this crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod error;
pub mod ndp;
mod responder;
pub mod wire;

pub use error::{ConfigError, FrameError};
pub use ipnet::{Ipv4Net, Ipv6Net};
pub use responder::{
    Config, Conflict, ConflictKind, Event, Ignored, NoOtherHosts, OtherHosts, Outcome, Responder,
    Stats, Transmit,
};
pub use smoltcp::wire::EthernetAddress;
