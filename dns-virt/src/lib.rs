//! Virtual DNS for a self-configuring virtual network: millions of names,
//! answered in microseconds, locally or through the overlay.
//!
//! This crate does no networking and reads no clock. It is an authoritative
//! DNS server (RFC 1034, RFC 1035) for one virtual zone (default
//! `wow.internal.`) and the `in-addr.arpa` zone of the virtual network:
//!
//! - every address of the network has a name by rule, needing no storage
//!   ([`rule`]: `10.128.0.5` ⇄ `c010128000005.wow.internal.`);
//! - hosts register names (from DHCP host name / FQDN options, or the API)
//!   in a compact [`NameTable`] that loads a million names in a fraction of
//!   a second and looks names up without allocating;
//! - in [`Mode::Decentralised`], registered names are published into the
//!   overlay's DHT and unknown names looked up there, through a sans-IO
//!   [`store`] contract;
//! - hosts register services ([`service`]): SRV and TXT at
//!   `_service._proto.<host>.<zone>` and, one SRV per registrant, at
//!   `_service._proto.<zone>`, with the targets' A records as additional
//!   data; in decentralised mode published and looked up in the store too;
//! - answers: A, PTR, SOA, NS, SRV, TXT; NXDOMAIN and NODATA with the SOA
//!   (RFC 2308); REFUSED outside the zones, or split DNS: forwarded upstream
//!   under a fresh message ID, replies checked and cached ([`Config::forward`]);
//!   FORMERR, NOTIMP;
//!   EDNS0 (RFC 6891) and truncation with TC over UDP, a length-prefixed TCP
//!   path ([`TcpFramer`], and with feature `smoltcp` a whole TCP endpoint
//!   on an in-process smoltcp stack, module `tcp`); names compared
//!   case-insensitively with the case of the question preserved; never a
//!   UDP response larger than the query allows.
//!
//! Messages are decoded and encoded by `hickory-proto`.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use dns_virt::{Config, Server, Transport};
//! use hickory_proto::op::{Message, Query};
//! use hickory_proto::rr::{Name, RData, RecordType};
//!
//! let now = Instant::now();
//! let mut server = Server::new(Config::default());
//! server
//!     .register(now, "web", "10.128.0.9".parse().unwrap(), None)
//!     .unwrap();
//!
//! // A stub resolver asks for Web.wow.internal A over UDP.
//! let mut query = Message::query();
//! query.add_query(Query::query(
//!     Name::from_ascii("Web.wow.internal.").unwrap(),
//!     RecordType::A,
//! ));
//! let client = "10.128.0.2:5353".parse().unwrap();
//! server.handle_input(now, client, Transport::Udp, &query.to_vec().unwrap());
//!
//! // The reply echoes the ID and question, case preserved.
//! let transmit = server.poll_transmit().unwrap();
//! assert_eq!(transmit.destination, client);
//! let reply = Message::from_vec(&transmit.payload).unwrap();
//! assert_eq!(reply.metadata.id, query.metadata.id);
//! assert!(reply.metadata.authoritative);
//! assert_eq!(reply.answers[0].name.to_ascii(), "Web.wow.internal.");
//! assert_eq!(reply.answers[0].data, RData::A("10.128.0.9".parse().unwrap()));
//! ```
//!
//! # Driving loop
//!
//! Feed each datagram (or TCP message) to [`Server::handle_input`], then
//! drain [`Server::poll_transmit`]; in decentralised mode also drain
//! [`Server::poll_store_request`], perform the requests and feed results to
//! [`Server::handle_store_response`]; call [`Server::handle_timeout`] when
//! [`Server::poll_timeout`] passes. A purely local, multi-threaded server can
//! share one [`Zone`] and call [`Zone::respond`] (`&self`) directly, as the
//! `dns-serve` example does.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod error;
mod fast;
mod forward;
pub mod rule;
pub mod server;
pub mod service;
pub mod store;
pub mod table;
#[cfg(feature = "smoltcp")]
pub mod tcp;
pub mod wire;
pub mod zone;

pub use error::{
    ForwardError, FrameError, LoadError, QueryError, RegisterError, ServiceError, TableError,
};
pub use rule::{AddressRule, RuleName};
pub use server::{Config, Event, Forward, Mode, Server, Stats, Transmit};
pub use service::{Service, ServiceTable};
pub use store::{MemoryStore, MemoryStoreConfig, RequestId, StoreRequest, StoreResult};
pub use table::{NameTable, TableBuilder};
pub use wire::{Request, TcpFramer, Transport};
pub use zone::{Answer, Outcome, Response, ServiceQuery, Zone, ZoneConfig};

#[cfg(feature = "smoltcp")]
pub use tcp::{MemDevice, TcpEndpoint};

/// Foreign types in this crate's public signatures, so that a user needs
/// no version-matched dependency of its own: hickory-proto's (names,
/// records, codes) and ipnet's network.
pub use hickory_proto::op::{OpCode, ResponseCode};
pub use hickory_proto::rr::{Name, Record};
pub use ipnet::Ipv4Net;
