//! The WOW node as a library: the modules behind the `wow-node` binary,
//! so that fuzz targets and other programs can drive the node's core and
//! parse its data header.
//!
//! [`core::Core`] composes the sans-IO machines (overlay-core, arp-virt,
//! dhcp-virt, dns-virt, ipsec-sa, ipsec-ca, nat-traversal); [`runtime`] is
//! its tokio shell over a TAP device and a UDP socket; [`demo`] drives the
//! same core with in-process smoltcp guests. [`wire`] is the node's own
//! data header, carried in overlay payloads:
//!
//! ```
//! use std::net::Ipv4Addr;
//! use wow_node::wire::{Kind, Packet, Repr};
//!
//! let repr = Repr {
//!     kind: Kind::Punch,
//!     source: Ipv4Addr::new(10, 128, 0, 5),
//!     destination: Ipv4Addr::new(10, 128, 0, 9),
//! };
//! let mut bytes = Vec::new();
//! repr.emit_with_body(b"body", &mut bytes);
//! let packet = Packet::new_checked(&bytes[..]).unwrap();
//! assert_eq!(Repr::parse(&packet).unwrap(), repr);
//! assert_eq!(packet.body(), b"body");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod ca_cmd;
pub mod config;
pub mod confine;
pub mod control;
pub mod core;
pub mod crl_dht;
pub mod demo;
pub mod enrol;
pub mod guest;
pub mod overlay_identity;
pub mod records;
pub mod runtime;
pub mod udp;
pub mod wire;
