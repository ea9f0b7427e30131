//! The overlay's binary wire format, version 2.
//!
//! Every message is one datagram. As in `smoltcp::wire`, [`Packet`] is a
//! zero-copy view over the fixed header (with one accessor per field, and
//! setters that let a router bump the hop count in place), and [`Message`] is
//! the owned representation with [`Message::parse`], [`Message::buffer_len`]
//! and [`Message::emit`]. [`Message::parse_with`] decodes the same way but
//! copies a data payload into a buffer from a [`BufferPool`], so that the
//! data path does not allocate. Use [`Packet::new_checked`] on untrusted bytes;
//! after it succeeds no accessor panics. [`Message::parse`] never panics: it
//! rejects truncated, oversize or inconsistent input (including trailing
//! bytes) with a [`WireError`].
//!
//! All integers are big-endian. An *address* is 20 bytes
//! ([`Address`]). An *endpoint* is `family:u8` (4 or 6), then 4 or 16 address
//! bytes, then `port:u16`. A *list of endpoints* is `count:u8`
//! (≤ [`MAX_ENDPOINTS`]) followed by the endpoints. *bytes8* / *bytes16* are a
//! `u8` / `u16` length then that many bytes.
//!
//! ```text
//!  0        1        2
//! +--------+--------+---------------- ...
//! |version | kind   | body (per kind)
//! +--------+--------+---------------- ...
//! ```
//!
//! | kind | message | body |
//! |------|---------|------|
//! | 0x01 | [`LinkRequest`] | nonce:u64, challenge:u64, sender:address, target:address (zero if unknown), roles:u8, endpoints, identity:bytes16 |
//! | 0x02 | [`LinkReply`] | nonce:u64, challenge:u64, sender:address, status:u8, roles:u8, observed:endpoint, endpoints, identity:bytes16 |
//! | 0x03 | Ping | sender:address, nonce:u64 |
//! | 0x04 | Pong | nonce:u64 |
//! | 0x05 | Close | reason:u8 |
//! | 0x06 | Neighbors | size_estimate:u32, count:u8 (≤ [`MAX_NEIGHBORS`]), then count × (address, roles:u8) |
//! | 0x07 | (retired: the unsigned DhtStore of the first DHT) | rejected as an unknown kind |
//! | 0x08 | DhtStore | count:u8 (≤ [`MAX_RECORDS`]), then count × (record, remaining_secs:u32) |
//! | 0x10 | [`Routed`] | source:address, destination:address, mode:u8, hops:u8, hop_limit:u8, payload_kind:u8, payload |
//!
//! Link messages (0x01–0x07) travel over one hop between transport
//! endpoints. Routed messages are forwarded greedily toward `destination`;
//! each router increments `hops` and drops the message when it would exceed
//! `hop_limit`. Routed payloads:
//!
//! | payload_kind | payload | body |
//! |------|---------|------|
//! | 0x01 | Data | data:bytes16 (≤ [`MAX_DATA_LEN`]) |
//! | 0x02 | ConnectToMe | roles:u8, nonce:u64, endpoints |
//! | 0x03 | EchoRequest | id:u64 |
//! | 0x04 | EchoReply | id:u64, request_hops:u8 |
//! | 0x05, 0x06 | (retired: the unsigned DhtRequest/DhtReply) | rejected as unknown payloads |
//! | 0x07 | DhtRequest | id:u64, op:u8, then for get key:bytes8, for put and create a record |
//! | 0x08 | DhtReply | id:u64, status:u8, count:u8 (≤ [`MAX_VALUES_PER_KEY`]), count × record |
//!
//! A *record* is one writer's signed value (see [`crate::record`]):
//!
//! ```text
//! key:bytes8 (≤ MAX_KEY_LEN)  value:bytes16 (≤ MAX_VALUE_LEN)  lifetime_secs:u32
//! version:u64  key_type:u8 (1 Ed25519, 2 ECDSA P-256)  public_key:bytes8 (32 or 65 bytes)
//! credential:bytes16 (≤ MAX_CREDENTIAL_LEN)  signature:bytes8 (≤ MAX_SIGNATURE_LEN)
//! ```
//!
//! The signature covers [`RECORD_SIGNATURE_CONTEXT`] followed by every
//! field before it, encoded as above ([`Record::signed_bytes`]).
//! `remaining_secs` in a DhtStore is the unsigned rest of the lifetime a
//! replica should keep (capped by `lifetime_secs`). DhtStore messages are
//! cut to [`MAX_DHT_STORE_LEN`] bytes by the node.
//!
//! Roles are a bit set: 0x01 leaf, 0x02 near, 0x04 shortcut, 0x08 demand.
//! Modes: 0 exact (only the node with that address), 1 closest (the node
//! nearest the address), 2 closest-other (nearest, not counting the source;
//! used by a node to find its own ring neighbours).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::address::{ADDRESS_LEN, Address};
use crate::error::WireError;
use crate::pool::BufferPool;
use crate::record::{KeyType, WriterKey};

/// The only version this crate emits and accepts. Version 2 has the
/// challenge-response link handshake and signed DHT records; a message of
/// any other version (1 was the unauthenticated overlay) is refused with
/// [`WireError::UnsupportedVersion`].
pub const VERSION: u8 = 2;
/// Most endpoints in one list.
pub const MAX_ENDPOINTS: usize = 8;
/// Longest identity proof.
pub const MAX_IDENTITY_LEN: usize = 1024;
/// Most entries in a neighbour list.
pub const MAX_NEIGHBORS: usize = 64;
/// Most records in one DhtStore.
pub const MAX_RECORDS: usize = 32;
/// Longest DHT key.
pub const MAX_KEY_LEN: usize = 255;
/// Longest DHT value.
pub const MAX_VALUE_LEN: usize = 1024;
/// Most values stored under one key.
pub const MAX_VALUES_PER_KEY: usize = 16;
/// Longest credential attached to a record (e.g. a DER certificate).
pub const MAX_CREDENTIAL_LEN: usize = 2048;
/// Longest record signature (ECDSA P-256 ASN.1 DER is at most 72 bytes).
pub const MAX_SIGNATURE_LEN: usize = 96;
/// Longest public key in a record.
pub const MAX_PUBLIC_KEY_LEN: usize = crate::record::P256_PUBLIC_KEY_LEN;
/// Longest encoded record.
pub const MAX_RECORD_LEN: usize = 1
    + MAX_KEY_LEN
    + 2
    + MAX_VALUE_LEN
    + 4
    + 8
    + 1
    + 1
    + MAX_PUBLIC_KEY_LEN
    + 2
    + MAX_CREDENTIAL_LEN
    + 1
    + MAX_SIGNATURE_LEN;
/// Domain separation prefix of the bytes a record signature covers.
pub const RECORD_SIGNATURE_CONTEXT: &[u8] = b"wow-overlay dht record v1\0";
/// Longest DhtStore message the node sends (it cuts replication into
/// messages no longer than this, so that each fits a UDP datagram).
pub const MAX_DHT_STORE_LEN: usize = 60_000;
/// Longest encoded DhtReply: [`MAX_VALUES_PER_KEY`] records.
pub const MAX_DHT_REPLY_LEN: usize =
    field::ROUTED_HEADER_LEN + 8 + 1 + 1 + MAX_VALUES_PER_KEY * MAX_RECORD_LEN;
/// Longest data payload.
pub const MAX_DATA_LEN: usize = 9216;
/// Longest encoded routed data message (a [`Payload::Data`] of
/// [`MAX_DATA_LEN`] bytes): a buffer this long holds every data message.
pub const MAX_DATA_MESSAGE_LEN: usize = field::ROUTED_HEADER_LEN + 2 + MAX_DATA_LEN;
/// Longest encoded message a node sends (a DhtReply of
/// [`MAX_VALUES_PER_KEY`] longest records, or a DhtStore of
/// [`MAX_DHT_STORE_LEN`] bytes): a buffer this long holds every message a
/// node emits. A hand-built [`Message::DhtStore`] can be longer.
pub const MAX_MESSAGE_LEN: usize = max(
    MAX_DATA_MESSAGE_LEN,
    max(MAX_DHT_REPLY_LEN, MAX_DHT_STORE_LEN),
);

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

mod field {
    pub const VERSION: usize = 0;
    pub const KIND: usize = 1;
    pub const HEADER_LEN: usize = 2;
    // Routed header, after the common header.
    pub const SOURCE: core::ops::Range<usize> = 2..22;
    pub const DESTINATION: core::ops::Range<usize> = 22..42;
    pub const MODE: usize = 42;
    pub const HOPS: usize = 43;
    pub const HOP_LIMIT: usize = 44;
    pub const PAYLOAD_KIND: usize = 45;
    pub const ROUTED_HEADER_LEN: usize = 46;
}

/// Message kind codes.
pub mod kind {
    /// [`super::LinkRequest`].
    pub const LINK_REQUEST: u8 = 0x01;
    /// [`super::LinkReply`].
    pub const LINK_REPLY: u8 = 0x02;
    /// Keep-alive probe.
    pub const PING: u8 = 0x03;
    /// Keep-alive answer.
    pub const PONG: u8 = 0x04;
    /// Graceful close.
    pub const CLOSE: u8 = 0x05;
    /// Connection list for lookahead routing.
    pub const NEIGHBORS: u8 = 0x06;
    /// DHT replication / handoff (signed records).
    pub const DHT_STORE: u8 = 0x08;
    /// [`super::Routed`].
    pub const ROUTED: u8 = 0x10;
}

/// A zero-copy view of a message's fixed header.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks that the header accessors cannot panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the buffer holds the common header and, for routed messages,
    /// the routed header.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        let needed = if len >= field::HEADER_LEN && self.kind() == kind::ROUTED {
            field::ROUTED_HEADER_LEN
        } else {
            field::HEADER_LEN
        };
        if len < needed {
            return Err(WireError::Truncated {
                offset: 0,
                needed,
                available: len,
            });
        }
        Ok(())
    }

    /// Version byte.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// Message kind byte.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    /// Routed: original sender.
    pub fn source(&self) -> Address {
        addr_at(&self.buffer.as_ref()[field::SOURCE])
    }
    /// Routed: destination address.
    pub fn destination(&self) -> Address {
        addr_at(&self.buffer.as_ref()[field::DESTINATION])
    }
    /// Routed: delivery mode byte.
    pub fn mode(&self) -> u8 {
        self.buffer.as_ref()[field::MODE]
    }
    /// Routed: hops taken so far.
    pub fn hops(&self) -> u8 {
        self.buffer.as_ref()[field::HOPS]
    }
    /// Routed: hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    /// Routed: payload kind byte.
    pub fn payload_kind(&self) -> u8 {
        self.buffer.as_ref()[field::PAYLOAD_KIND]
    }
    /// Bytes after the common header.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version byte.
    ///
    /// # Panics
    /// If the buffer is shorter than the common header.
    pub fn set_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::VERSION] = value;
    }
    /// Sets the kind byte.
    ///
    /// # Panics
    /// If the buffer is shorter than the common header.
    pub fn set_kind(&mut self, value: u8) {
        self.buffer.as_mut()[field::KIND] = value;
    }
    /// Sets the routed hop count (a router increments it in place).
    ///
    /// # Panics
    /// If the buffer is shorter than the routed header.
    pub fn set_hops(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOPS] = value;
    }
}

fn addr_at(b: &[u8]) -> Address {
    let mut a = [0u8; ADDRESS_LEN];
    a.copy_from_slice(b);
    Address::from_bytes(a)
}

/// Connection roles, as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Roles(pub u8);

impl Roles {
    /// No role.
    pub const NONE: Roles = Roles(0);
    /// Bootstrap link used while joining.
    pub const LEAF: Roles = Roles(0x01);
    /// Structured near link (ring neighbour).
    pub const NEAR: Roles = Roles(0x02);
    /// Structured shortcut (harmonic far link).
    pub const SHORTCUT: Roles = Roles(0x04);
    /// Demand shortcut for heavy traffic.
    pub const DEMAND: Roles = Roles(0x08);
    const ALL: u8 = 0x0f;

    /// Whether all bits of `other` are set.
    pub fn contains(self, other: Roles) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Union.
    pub fn with(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }
    /// Difference.
    pub fn without(self, other: Roles) -> Roles {
        Roles(self.0 & !other.0)
    }
}

/// How a routed message is delivered.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Mode {
    /// Only the node whose address equals the destination.
    Exact,
    /// The node nearest the destination.
    Closest,
    /// The node nearest the destination other than the source.
    ClosestOther,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Exact => 0,
            Mode::Closest => 1,
            Mode::ClosestOther => 2,
        }
    }
    fn from_code(v: u8) -> Result<Mode, WireError> {
        Ok(match v {
            0 => Mode::Exact,
            1 => Mode::Closest,
            2 => Mode::ClosestOther,
            _ => {
                return Err(WireError::InvalidValue {
                    field: "mode",
                    value: v.into(),
                });
            }
        })
    }
}

/// Outcome of a link request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LinkStatus {
    /// The link is up.
    Accepted,
    /// The responder has no room for another link of this role.
    Full,
    /// The responder could not verify the requester's identity.
    IdentityRejected,
    /// The responder is not the node the requester wanted.
    WrongTarget,
    /// Step 2 of the handshake: answer again with `challenge` and a proof
    /// (see [`crate::identity`]).
    Challenge,
}

impl LinkStatus {
    fn code(self) -> u8 {
        match self {
            LinkStatus::Accepted => 0,
            LinkStatus::Full => 1,
            LinkStatus::IdentityRejected => 2,
            LinkStatus::WrongTarget => 3,
            LinkStatus::Challenge => 4,
        }
    }
    fn from_code(v: u8) -> Result<LinkStatus, WireError> {
        Ok(match v {
            0 => LinkStatus::Accepted,
            1 => LinkStatus::Full,
            2 => LinkStatus::IdentityRejected,
            3 => LinkStatus::WrongTarget,
            4 => LinkStatus::Challenge,
            _ => {
                return Err(WireError::InvalidValue {
                    field: "status",
                    value: v.into(),
                });
            }
        })
    }
}

/// Why a link was closed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CloseReason {
    /// The node leaves the overlay.
    Leaving,
    /// Neither side needs the link any more.
    Unneeded,
    /// The closer is over its connection limit.
    Full,
}

impl CloseReason {
    fn code(self) -> u8 {
        match self {
            CloseReason::Leaving => 0,
            CloseReason::Unneeded => 1,
            CloseReason::Full => 2,
        }
    }
    fn from_code(v: u8) -> Result<CloseReason, WireError> {
        Ok(match v {
            0 => CloseReason::Leaving,
            1 => CloseReason::Unneeded,
            2 => CloseReason::Full,
            _ => {
                return Err(WireError::InvalidValue {
                    field: "reason",
                    value: v.into(),
                });
            }
        })
    }
}

/// DHT operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DhtOp {
    /// Add a value under a key.
    Put,
    /// Read the values under a key.
    Get,
    /// Store the value only if the key has none; the responsible node decides.
    Create,
}

impl DhtOp {
    fn code(self) -> u8 {
        match self {
            DhtOp::Put => 0,
            DhtOp::Get => 1,
            DhtOp::Create => 2,
        }
    }
    fn from_code(v: u8) -> Result<DhtOp, WireError> {
        Ok(match v {
            0 => DhtOp::Put,
            1 => DhtOp::Get,
            2 => DhtOp::Create,
            _ => {
                return Err(WireError::InvalidValue {
                    field: "op",
                    value: v.into(),
                });
            }
        })
    }
}

/// Outcome of a DHT request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DhtStatus {
    /// Done; for get, the values follow.
    Ok,
    /// Create lost: the key already has values (they follow).
    Exists,
    /// The key already holds the maximum number of values.
    Full,
    /// Key or value too long, a bad signature, or refused by the storing
    /// node's record policy.
    Rejected,
    /// The writer already holds a newer record under this key (an old
    /// value replayed, or a version that did not increase).
    Stale,
    /// The writer (or the storing node's whole store, or its queue of
    /// requests waiting to be decided) is at its quota; nothing changed.
    QuotaExceeded,
}

impl DhtStatus {
    fn code(self) -> u8 {
        match self {
            DhtStatus::Ok => 0,
            DhtStatus::Exists => 1,
            DhtStatus::Full => 2,
            DhtStatus::Rejected => 3,
            DhtStatus::Stale => 4,
            DhtStatus::QuotaExceeded => 5,
        }
    }
    fn from_code(v: u8) -> Result<DhtStatus, WireError> {
        Ok(match v {
            0 => DhtStatus::Ok,
            1 => DhtStatus::Exists,
            2 => DhtStatus::Full,
            3 => DhtStatus::Rejected,
            4 => DhtStatus::Stale,
            5 => DhtStatus::QuotaExceeded,
            _ => {
                return Err(WireError::InvalidValue {
                    field: "dht status",
                    value: v.into(),
                });
            }
        })
    }
}

/// Request to open a link (one hop, to a transport endpoint).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LinkRequest {
    /// Matches the reply (and a ConnectToMe it answers); fresh from the
    /// requester's random source.
    pub nonce: u64,
    /// The responder's challenge being answered, or 0 in the first
    /// request (a probe, without proof).
    pub challenge: u64,
    /// The requester's address.
    pub sender: Address,
    /// The address the requester expects to reach, or zero if unknown.
    pub target: Address,
    /// Why the requester wants the link.
    pub roles: Roles,
    /// The requester's candidate transport endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Identity proof over the handshake transcript (empty in a probe or
    /// a challenge).
    pub identity: Vec<u8>,
}

/// Answer to a [`LinkRequest`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LinkReply {
    /// The request's nonce.
    pub nonce: u64,
    /// The responder's challenge (see [`crate::identity`]).
    pub challenge: u64,
    /// The responder's address.
    pub sender: Address,
    /// Outcome.
    pub status: LinkStatus,
    /// Roles the responder grants.
    pub roles: Roles,
    /// The endpoint the request came from, as seen by the responder.
    pub observed: SocketAddr,
    /// The responder's candidate transport endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Identity proof over the handshake transcript (empty in a probe or
    /// a challenge).
    pub identity: Vec<u8>,
}

/// One entry of a neighbour list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Neighbor {
    /// The neighbour's address.
    pub address: Address,
    /// Roles the sender needs this link for.
    pub roles: Roles,
}

/// One writer's signed value under a key (see [`crate::record`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Lifetime the writer granted, in seconds.
    pub lifetime_secs: u32,
    /// Must increase with each new record of this writer under this key.
    pub version: u64,
    /// The writer (owner of the slot).
    pub writer: WriterKey,
    /// Optional credential for the reader's policy (e.g. a DER
    /// certificate); empty if none.
    pub credential: Vec<u8>,
    /// The writer's signature over [`Record::signed_bytes`].
    pub signature: Vec<u8>,
}

impl Record {
    /// The bytes the signature covers: [`RECORD_SIGNATURE_CONTEXT`], then
    /// every field but the signature in wire order.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let len = RECORD_SIGNATURE_CONTEXT.len() + self.unsigned_len();
        let mut v = vec![0u8; len];
        let mut w = Writer {
            buf: &mut v,
            pos: 0,
        };
        w.put(RECORD_SIGNATURE_CONTEXT);
        self.emit_unsigned(&mut w);
        v
    }

    fn unsigned_len(&self) -> usize {
        bytes8_len(&self.key)
            + bytes16_len(&self.value)
            + 4
            + 8
            + 1
            + bytes8_len(&self.writer.public_key)
            + bytes16_len(&self.credential)
    }

    /// Length of the encoded record.
    pub fn buffer_len(&self) -> usize {
        self.unsigned_len() + bytes8_len(&self.signature)
    }

    fn emit_unsigned(&self, w: &mut Writer<'_>) {
        w.bytes8(&self.key);
        w.bytes16(&self.value);
        w.u32(self.lifetime_secs);
        w.u64(self.version);
        w.u8(self.writer.key_type.code());
        w.bytes8(&self.writer.public_key);
        w.bytes16(&self.credential);
    }

    fn emit(&self, w: &mut Writer<'_>) {
        self.emit_unsigned(w);
        w.bytes8(&self.signature);
    }

    fn parse(r: &mut Reader<'_>) -> Result<Record, WireError> {
        let key = r.bytes8("key", MAX_KEY_LEN)?;
        let value = r.bytes16("value", MAX_VALUE_LEN)?;
        let lifetime_secs = r.u32()?;
        let version = r.u64()?;
        let code = r.u8()?;
        let key_type = KeyType::from_code(code).ok_or(WireError::InvalidValue {
            field: "key type",
            value: code.into(),
        })?;
        let public_key = r.bytes8("public key", MAX_PUBLIC_KEY_LEN)?;
        if public_key.len() != key_type.public_key_len() {
            return Err(WireError::InvalidValue {
                field: "public key length",
                value: public_key.len() as u32,
            });
        }
        Ok(Record {
            key,
            value,
            lifetime_secs,
            version,
            writer: WriterKey {
                key_type,
                public_key,
            },
            credential: r.bytes16("credential", MAX_CREDENTIAL_LEN)?,
            signature: r.bytes8("signature", MAX_SIGNATURE_LEN)?,
        })
    }
}

/// A record pushed to a replica, with the rest of its lifetime.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Replica {
    /// The signed record.
    pub record: Record,
    /// Seconds the replica should keep it (capped by the record's
    /// lifetime; not signed).
    pub remaining_secs: u32,
}

/// What a DHT request asks.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DhtRequest {
    /// Read every writer's record under the key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Store (or update) the writer's record.
    Put(Record),
    /// Store the writer's record only if no other writer holds the key.
    Create(Record),
}

impl DhtRequest {
    /// The operation.
    pub fn op(&self) -> DhtOp {
        match self {
            DhtRequest::Get { .. } => DhtOp::Get,
            DhtRequest::Put(_) => DhtOp::Put,
            DhtRequest::Create(_) => DhtOp::Create,
        }
    }
    /// The key.
    pub fn key(&self) -> &[u8] {
        match self {
            DhtRequest::Get { key } => key,
            DhtRequest::Put(r) | DhtRequest::Create(r) => &r.key,
        }
    }
    fn buffer_len(&self) -> usize {
        1 + match self {
            DhtRequest::Get { key } => bytes8_len(key),
            DhtRequest::Put(r) | DhtRequest::Create(r) => r.buffer_len(),
        }
    }
    fn emit(&self, w: &mut Writer<'_>) {
        w.u8(self.op().code());
        match self {
            DhtRequest::Get { key } => w.bytes8(key),
            DhtRequest::Put(r) | DhtRequest::Create(r) => r.emit(w),
        }
    }
    fn parse(r: &mut Reader<'_>) -> Result<DhtRequest, WireError> {
        Ok(match DhtOp::from_code(r.u8()?)? {
            DhtOp::Get => DhtRequest::Get {
                key: r.bytes8("key", MAX_KEY_LEN)?,
            },
            DhtOp::Put => DhtRequest::Put(Record::parse(r)?),
            DhtOp::Create => DhtRequest::Create(Record::parse(r)?),
        })
    }
}

/// A message forwarded across the overlay.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Routed {
    /// Original sender.
    pub source: Address,
    /// Destination address.
    pub destination: Address,
    /// Delivery mode.
    pub mode: Mode,
    /// Hops taken so far.
    pub hops: u8,
    /// Drop instead of exceeding this many hops.
    pub hop_limit: u8,
    /// What is carried.
    pub payload: Payload,
}

/// Routed payloads.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Payload {
    /// Application data (e.g. a virtual IP packet).
    Data(Vec<u8>),
    /// Ask the receiving node to link back to the source.
    ConnectToMe {
        /// Role wanted.
        roles: Roles,
        /// Echoed in the [`LinkRequest`] the receiver sends.
        nonce: u64,
        /// The source's candidate endpoints.
        endpoints: Vec<SocketAddr>,
    },
    /// Route probe; answered with [`Payload::EchoReply`].
    EchoRequest {
        /// Request id.
        id: u64,
    },
    /// Answer to an echo request.
    EchoReply {
        /// Request id.
        id: u64,
        /// Hops the request took.
        request_hops: u8,
    },
    /// DHT request, routed in closest mode to the key's address.
    DhtRequest {
        /// Request id (random).
        id: u64,
        /// What is asked (boxed: it is far larger than the other payloads,
        /// and messages are moved often).
        request: Box<DhtRequest>,
    },
    /// DHT reply, routed exactly back to the requester.
    DhtReply {
        /// Request id.
        id: u64,
        /// Outcome.
        status: DhtStatus,
        /// The writers' records under the key (for a get, or the other
        /// writers' after a lost create).
        records: Vec<Record>,
    },
}

/// An overlay message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// Open a link.
    LinkRequest(LinkRequest),
    /// Answer to a link request.
    LinkReply(LinkReply),
    /// Keep-alive probe.
    Ping {
        /// Sender's address.
        sender: Address,
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Keep-alive answer.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Graceful close of the link.
    Close {
        /// Why.
        reason: CloseReason,
    },
    /// The sender's connections, for lookahead routing and near repair.
    Neighbors {
        /// The sender's estimate of the network size (gossiped so that
        /// estimates converge).
        size_estimate: u32,
        /// The sender's links.
        neighbors: Vec<Neighbor>,
    },
    /// DHT records pushed for replication or handoff.
    DhtStore(Vec<Replica>),
    /// A routed message.
    Routed(Routed),
}

/// The shared bounds-checked reader, with this format's fields on top.
struct Reader<'a>(wow_bytes::Reader<'a>);

impl<'a> std::ops::Deref for Reader<'a> {
    type Target = wow_bytes::Reader<'a>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<wow_bytes::Truncated> for WireError {
    fn from(t: wow_bytes::Truncated) -> WireError {
        WireError::Truncated {
            offset: t.offset,
            needed: t.needed,
            available: t.available,
        }
    }
}

impl<'a> Reader<'a> {
    fn address(&mut self) -> Result<Address, WireError> {
        Ok(addr_at(self.take(ADDRESS_LEN)?))
    }
    fn roles(&mut self) -> Result<Roles, WireError> {
        let v = self.u8()?;
        if v & !Roles::ALL != 0 {
            return Err(WireError::InvalidValue {
                field: "roles",
                value: v.into(),
            });
        }
        Ok(Roles(v))
    }
    fn endpoint(&mut self) -> Result<SocketAddr, WireError> {
        let family = self.u8()?;
        let ip = match family {
            4 => {
                let b = self.take(4)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => {
                return Err(WireError::InvalidValue {
                    field: "endpoint family",
                    value: family.into(),
                });
            }
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    fn endpoints(&mut self) -> Result<Vec<SocketAddr>, WireError> {
        let n = self.count("endpoints", MAX_ENDPOINTS)?;
        (0..n).map(|_| self.endpoint()).collect()
    }
    fn count(&mut self, field: &'static str, max: usize) -> Result<usize, WireError> {
        let n = usize::from(self.u8()?);
        if n > max {
            return Err(WireError::TooLong { field, len: n, max });
        }
        Ok(n)
    }
    fn bytes8(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, WireError> {
        let n = usize::from(self.u8()?);
        if n > max {
            return Err(WireError::TooLong { field, len: n, max });
        }
        Ok(self.take(n)?.to_vec())
    }
    fn bytes16(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, WireError> {
        Ok(self.slice16(field, max)?.to_vec())
    }
    fn slice16(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(WireError::TooLong { field, len: n, max });
        }
        Ok(self.take(n)?)
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
    fn address(&mut self, a: Address) {
        self.put(&a.to_bytes());
    }
    fn endpoint(&mut self, e: &SocketAddr) {
        match e.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.put(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.put(&ip.octets());
            }
        }
        self.u16(e.port());
    }
    fn endpoints(&mut self, es: &[SocketAddr]) {
        let es = &es[..es.len().min(MAX_ENDPOINTS)];
        self.u8(es.len() as u8);
        for e in es {
            self.endpoint(e);
        }
    }
    fn bytes8(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(u8::MAX.into())];
        self.u8(b.len() as u8);
        self.put(b);
    }
    fn bytes16(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(u16::MAX.into())];
        self.u16(b.len() as u16);
        self.put(b);
    }
}

fn endpoint_len(e: &SocketAddr) -> usize {
    match e {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

fn endpoints_len(es: &[SocketAddr]) -> usize {
    1 + es
        .iter()
        .take(MAX_ENDPOINTS)
        .map(endpoint_len)
        .sum::<usize>()
}

fn bytes8_len(b: &[u8]) -> usize {
    1 + b.len().min(u8::MAX.into())
}

fn bytes16_len(b: &[u8]) -> usize {
    2 + b.len().min(u16::MAX.into())
}

impl Payload {
    fn kind(&self) -> u8 {
        match self {
            Payload::Data(_) => 0x01,
            Payload::ConnectToMe { .. } => 0x02,
            Payload::EchoRequest { .. } => 0x03,
            Payload::EchoReply { .. } => 0x04,
            Payload::DhtRequest { .. } => 0x07,
            Payload::DhtReply { .. } => 0x08,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            Payload::Data(d) => bytes16_len(d),
            Payload::ConnectToMe { endpoints, .. } => 1 + 8 + endpoints_len(endpoints),
            Payload::EchoRequest { .. } => 8,
            Payload::EchoReply { .. } => 9,
            Payload::DhtRequest { request, .. } => 8 + request.buffer_len(),
            Payload::DhtReply { records, .. } => {
                8 + 1
                    + 1
                    + records
                        .iter()
                        .take(MAX_VALUES_PER_KEY)
                        .map(Record::buffer_len)
                        .sum::<usize>()
            }
        }
    }

    /// Decodes a payload; `data` turns a data payload's bytes into its
    /// buffer.
    fn parse(
        kind: u8,
        r: &mut Reader<'_>,
        data: &mut impl FnMut(&[u8]) -> Vec<u8>,
    ) -> Result<Payload, WireError> {
        Ok(match kind {
            0x01 => Payload::Data(data(r.slice16("data", MAX_DATA_LEN)?)),
            0x02 => Payload::ConnectToMe {
                roles: r.roles()?,
                nonce: r.u64()?,
                endpoints: r.endpoints()?,
            },
            0x03 => Payload::EchoRequest { id: r.u64()? },
            0x04 => Payload::EchoReply {
                id: r.u64()?,
                request_hops: r.u8()?,
            },
            0x07 => Payload::DhtRequest {
                id: r.u64()?,
                request: Box::new(DhtRequest::parse(r)?),
            },
            0x08 => {
                let id = r.u64()?;
                let status = DhtStatus::from_code(r.u8()?)?;
                let n = r.count("records", MAX_VALUES_PER_KEY)?;
                let records = (0..n).map(|_| Record::parse(r)).collect::<Result<_, _>>()?;
                Payload::DhtReply {
                    id,
                    status,
                    records,
                }
            }
            other => return Err(WireError::UnknownPayload(other)),
        })
    }

    fn emit(&self, w: &mut Writer<'_>) {
        match self {
            Payload::Data(d) => w.bytes16(d),
            Payload::ConnectToMe {
                roles,
                nonce,
                endpoints,
            } => {
                w.u8(roles.0);
                w.u64(*nonce);
                w.endpoints(endpoints);
            }
            Payload::EchoRequest { id } => w.u64(*id),
            Payload::EchoReply { id, request_hops } => {
                w.u64(*id);
                w.u8(*request_hops);
            }
            Payload::DhtRequest { id, request } => {
                w.u64(*id);
                request.emit(w);
            }
            Payload::DhtReply {
                id,
                status,
                records,
            } => {
                w.u64(*id);
                w.u8(status.code());
                let records = &records[..records.len().min(MAX_VALUES_PER_KEY)];
                w.u8(records.len() as u8);
                for r in records {
                    r.emit(w);
                }
            }
        }
    }
}

impl Message {
    /// The kind byte of this message.
    pub fn kind(&self) -> u8 {
        match self {
            Message::LinkRequest(_) => kind::LINK_REQUEST,
            Message::LinkReply(_) => kind::LINK_REPLY,
            Message::Ping { .. } => kind::PING,
            Message::Pong { .. } => kind::PONG,
            Message::Close { .. } => kind::CLOSE,
            Message::Neighbors { .. } => kind::NEIGHBORS,
            Message::DhtStore(_) => kind::DHT_STORE,
            Message::Routed(_) => kind::ROUTED,
        }
    }

    /// Parses a message from untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<Message, WireError> {
        let (message, end) = Message::parse_prefix(bytes, &mut |d: &[u8]| d.to_vec())?;
        if end != bytes.len() {
            return Err(WireError::TrailingBytes(bytes.len() - end));
        }
        Ok(message)
    }

    /// Parses a message like [`parse`](Self::parse) (same result for every
    /// input), but copies a [`Payload::Data`] into a buffer taken from
    /// `pool` instead of a new vector. Once the pool holds a free buffer
    /// (give the payload back with [`BufferPool::give`] when done), parsing
    /// a data message does not allocate. Input that fails to parse returns
    /// any buffer it took to the pool.
    pub fn parse_with(bytes: &[u8], pool: &mut BufferPool) -> Result<Message, WireError> {
        let (message, end) = Message::parse_prefix(bytes, &mut |d: &[u8]| pool.copy_of(d))?;
        if end != bytes.len() {
            message.recycle_into(pool);
            return Err(WireError::TrailingBytes(bytes.len() - end));
        }
        Ok(message)
    }

    /// Gives the buffer of a data message to `pool`; other messages are
    /// dropped.
    pub fn recycle_into(self, pool: &mut BufferPool) {
        if let Message::Routed(Routed {
            payload: Payload::Data(data),
            ..
        }) = self
        {
            pool.give(data);
        }
    }

    /// Decodes a message from the start of `bytes`; returns it and where it
    /// ended.
    fn parse_prefix(
        bytes: &[u8],
        data: &mut impl FnMut(&[u8]) -> Vec<u8>,
    ) -> Result<(Message, usize), WireError> {
        let packet = Packet::new_checked(bytes)?;
        if packet.version() != VERSION {
            return Err(WireError::UnsupportedVersion(packet.version()));
        }
        let mut r = Reader(wow_bytes::Reader::new(bytes));
        r.take(field::HEADER_LEN)?;
        let message = match packet.kind() {
            kind::LINK_REQUEST => Message::LinkRequest(LinkRequest {
                nonce: r.u64()?,
                challenge: r.u64()?,
                sender: r.address()?,
                target: r.address()?,
                roles: r.roles()?,
                endpoints: r.endpoints()?,
                identity: r.bytes16("identity", MAX_IDENTITY_LEN)?,
            }),
            kind::LINK_REPLY => Message::LinkReply(LinkReply {
                nonce: r.u64()?,
                challenge: r.u64()?,
                sender: r.address()?,
                status: LinkStatus::from_code(r.u8()?)?,
                roles: r.roles()?,
                observed: r.endpoint()?,
                endpoints: r.endpoints()?,
                identity: r.bytes16("identity", MAX_IDENTITY_LEN)?,
            }),
            kind::PING => Message::Ping {
                sender: r.address()?,
                nonce: r.u64()?,
            },
            kind::PONG => Message::Pong { nonce: r.u64()? },
            kind::CLOSE => Message::Close {
                reason: CloseReason::from_code(r.u8()?)?,
            },
            kind::NEIGHBORS => {
                let size_estimate = r.u32()?;
                let n = r.count("neighbors", MAX_NEIGHBORS)?;
                let list = (0..n)
                    .map(|_| {
                        Ok(Neighbor {
                            address: r.address()?,
                            roles: r.roles()?,
                        })
                    })
                    .collect::<Result<_, WireError>>()?;
                Message::Neighbors {
                    size_estimate,
                    neighbors: list,
                }
            }
            kind::DHT_STORE => {
                let n = r.count("records", MAX_RECORDS)?;
                let list = (0..n)
                    .map(|_| {
                        Ok(Replica {
                            record: Record::parse(&mut r)?,
                            remaining_secs: r.u32()?,
                        })
                    })
                    .collect::<Result<_, WireError>>()?;
                Message::DhtStore(list)
            }
            kind::ROUTED => {
                r.take(field::ROUTED_HEADER_LEN - field::HEADER_LEN)?;
                let hops = packet.hops();
                let hop_limit = packet.hop_limit();
                if hops > hop_limit {
                    return Err(WireError::InvalidValue {
                        field: "hops",
                        value: hops.into(),
                    });
                }
                Message::Routed(Routed {
                    source: packet.source(),
                    destination: packet.destination(),
                    mode: Mode::from_code(packet.mode())?,
                    hops,
                    hop_limit,
                    payload: Payload::parse(packet.payload_kind(), &mut r, data)?,
                })
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        Ok((message, r.position()))
    }

    /// Length of the emitted message. Lists and byte strings longer than
    /// their limits are truncated to the limit on emit.
    pub fn buffer_len(&self) -> usize {
        field::HEADER_LEN
            + match self {
                Message::LinkRequest(m) => {
                    16 + 2 * ADDRESS_LEN
                        + 1
                        + endpoints_len(&m.endpoints)
                        + bytes16_len(&m.identity)
                }
                Message::LinkReply(m) => {
                    16 + ADDRESS_LEN
                        + 2
                        + endpoint_len(&m.observed)
                        + endpoints_len(&m.endpoints)
                        + bytes16_len(&m.identity)
                }
                Message::Ping { .. } => ADDRESS_LEN + 8,
                Message::Pong { .. } => 8,
                Message::Close { .. } => 1,
                Message::Neighbors { neighbors, .. } => {
                    4 + 1 + neighbors.len().min(MAX_NEIGHBORS) * (ADDRESS_LEN + 1)
                }
                Message::DhtStore(list) => {
                    1 + list
                        .iter()
                        .take(MAX_RECORDS)
                        .map(|r| r.record.buffer_len() + 4)
                        .sum::<usize>()
                }
                Message::Routed(m) => {
                    field::ROUTED_HEADER_LEN - field::HEADER_LEN + m.payload.buffer_len()
                }
            }
    }

    /// Emits the message into `buffer`, which must be at least
    /// [`buffer_len`](Self::buffer_len) bytes; returns the bytes written.
    ///
    /// # Panics
    /// If `buffer` is too short.
    pub fn emit(&self, buffer: &mut [u8]) -> usize {
        let mut w = Writer {
            buf: buffer,
            pos: 0,
        };
        w.u8(VERSION);
        w.u8(self.kind());
        match self {
            Message::LinkRequest(m) => {
                w.u64(m.nonce);
                w.u64(m.challenge);
                w.address(m.sender);
                w.address(m.target);
                w.u8(m.roles.0);
                w.endpoints(&m.endpoints);
                w.bytes16(&m.identity);
            }
            Message::LinkReply(m) => {
                w.u64(m.nonce);
                w.u64(m.challenge);
                w.address(m.sender);
                w.u8(m.status.code());
                w.u8(m.roles.0);
                w.endpoint(&m.observed);
                w.endpoints(&m.endpoints);
                w.bytes16(&m.identity);
            }
            Message::Ping { sender, nonce } => {
                w.address(*sender);
                w.u64(*nonce);
            }
            Message::Pong { nonce } => w.u64(*nonce),
            Message::Close { reason } => w.u8(reason.code()),
            Message::Neighbors {
                size_estimate,
                neighbors,
            } => {
                w.u32(*size_estimate);
                let list = &neighbors[..neighbors.len().min(MAX_NEIGHBORS)];
                w.u8(list.len() as u8);
                for n in list {
                    w.address(n.address);
                    w.u8(n.roles.0);
                }
            }
            Message::DhtStore(list) => {
                let list = &list[..list.len().min(MAX_RECORDS)];
                w.u8(list.len() as u8);
                for r in list {
                    r.record.emit(&mut w);
                    w.u32(r.remaining_secs);
                }
            }
            Message::Routed(m) => {
                w.address(m.source);
                w.address(m.destination);
                w.u8(m.mode.code());
                w.u8(m.hops);
                w.u8(m.hop_limit);
                w.u8(m.payload.kind());
                m.payload.emit(&mut w);
            }
        }
        w.pos
    }

    /// Emits the message into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.buffer_len()];
        let n = self.emit(&mut v);
        v.truncate(n);
        v
    }
}
