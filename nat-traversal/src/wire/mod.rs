//! Wire formats: views over bytes ([`StunPacket`], [`SignalPacket`],
//! [`ChannelDataPacket`]) and their representations ([`StunRepr`],
//! [`SignalRepr`], [`ChannelDataRepr`]).
//!
//! As in smoltcp, a `Packet<T>` wraps a buffer and gives one accessor per
//! field; use `new_checked` on untrusted bytes, after which no accessor
//! panics. A `Repr` is parsed from a checked packet with `parse`, sized with
//! `buffer_len` and written with `emit`.
//!
//! The formats share a socket and are told apart by their first byte
//! (RFC 7983 §7): STUN starts with 0..=3, TURN ChannelData with 64..=79,
//! signalling with [`signal::VERSION`].

pub mod channel_data;
pub mod signal;
pub mod stun;

pub use channel_data::{Packet as ChannelDataPacket, Repr as ChannelDataRepr};
pub use signal::{Candidate, CandidateKind, Offer, Packet as SignalPacket, Repr as SignalRepr};
pub use stun::{
    Attribute as StunAttribute, Class as StunClass, Method as StunMethod, Packet as StunPacket,
    Repr as StunRepr, TransactionId,
};
