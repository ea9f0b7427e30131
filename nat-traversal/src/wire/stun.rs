//! STUN messages (RFC 8489), with the RFC 3489 "classic" header accepted.
//!
//! [`Packet`] is a zero-copy view over the bytes of one message; [`Repr`] is
//! its owned, parsed form. `MESSAGE-INTEGRITY` (§14.5, HMAC-SHA1 with a
//! short-term key, §9.1) and `FINGERPRINT` (§14.7, CRC-32 XOR `0x5354554e`) are
//! flags on the [`Repr`]: [`Repr::emit`] computes them, [`Repr::parse`]
//! verifies the fingerprint and [`Packet::verify_integrity`] checks the HMAC
//! once the caller knows which key applies (from `USERNAME`).

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ring::hmac;

use crate::error::WireError;

/// The magic cookie of RFC 5389/8489 messages (§6).
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// Length of the fixed message header (§5).
pub const HEADER_LEN: usize = 20;
/// Value XORed into the CRC-32 of `FINGERPRINT` (§14.7).
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Length of an HMAC-SHA1 `MESSAGE-INTEGRITY` value.
const INTEGRITY_LEN: usize = 20;

mod field {
    use core::ops::Range;
    pub const TYPE: Range<usize> = 0..2;
    pub const LENGTH: Range<usize> = 2..4;
    pub const COOKIE: Range<usize> = 4..8;
    pub const TRANSACTION: Range<usize> = 8..20;
}

/// Attribute type codes (RFC 8489 §18.3, RFC 8656 §18, RFC 5780 §7,
/// RFC 8445 §16.1, RFC 3489 §11.2).
pub mod kind {
    /// MAPPED-ADDRESS (§14.1).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// CHANGE-REQUEST (RFC 5780 §7.2).
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// SOURCE-ADDRESS (RFC 3489 §11.2.5, deprecated).
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    /// CHANGED-ADDRESS (RFC 3489 §11.2.3, deprecated).
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    /// USERNAME (§14.3).
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (§14.5).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE (§14.8).
    pub const ERROR_CODE: u16 = 0x0009;
    /// LIFETIME (RFC 8656 §18.2).
    pub const LIFETIME: u16 = 0x000d;
    /// CHANNEL-NUMBER (RFC 8656 §18.1).
    pub const CHANNEL_NUMBER: u16 = 0x000c;
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA (RFC 8656 §18.4).
    pub const DATA: u16 = 0x0013;
    /// REALM (RFC 8489 §14.9).
    pub const REALM: u16 = 0x0014;
    /// NONCE (RFC 8489 §14.10).
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-TRANSPORT (RFC 8656 §18.8).
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// UNKNOWN-ATTRIBUTES (§14.13).
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000a;
    /// XOR-MAPPED-ADDRESS (§14.2).
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// PRIORITY (RFC 8445 §7.1.1).
    pub const PRIORITY: u16 = 0x0024;
    /// USE-CANDIDATE (RFC 8445 §7.1.2).
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// SOFTWARE (§14.14).
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT (§14.7).
    pub const FINGERPRINT: u16 = 0x8028;
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    pub const RESPONSE_ORIGIN: u16 = 0x802b;
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    pub const OTHER_ADDRESS: u16 = 0x802c;
}

/// The 96-bit transaction id (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Message class (§5): the C1/C0 bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a response with the same transaction id.
    Request,
    /// An indication, never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// Message method (§5), 12 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// The Binding method (§18.2).
    pub const BINDING: Method = Method(0x001);
    /// TURN Allocate (RFC 8656 §17).
    pub const ALLOCATE: Method = Method(0x003);
    /// TURN Refresh (RFC 8656 §17).
    pub const REFRESH: Method = Method(0x004);
    /// TURN Send, an indication (RFC 8656 §17).
    pub const SEND: Method = Method(0x006);
    /// TURN Data, an indication (RFC 8656 §17).
    pub const DATA: Method = Method(0x007);
    /// TURN CreatePermission (RFC 8656 §17).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// TURN ChannelBind (RFC 8656 §17).
    pub const CHANNEL_BIND: Method = Method(0x009);
}

/// Split a 14-bit message type into class and method (§5, figure 3).
fn split_type(message_type: u16) -> (Class, Method) {
    let class = ((message_type >> 4) & 0b01) | ((message_type >> 7) & 0b10);
    let method =
        (message_type & 0x000f) | ((message_type >> 1) & 0x0070) | ((message_type >> 2) & 0x0f80);
    (Class::from_bits(class), Method(method))
}

/// Join class and method into a message type (§5, figure 3).
fn join_type(class: Class, method: Method) -> u16 {
    let m = method.0 & 0x0fff;
    let c = class.bits();
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// A read/write view of a STUN message in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer and check it with [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check that the buffer holds a whole STUN message: a header whose top
    /// two bits are zero (§5) and a body of the declared length, a multiple
    /// of four. After this, no accessor panics.
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if data[0] & 0xc0 != 0 {
            return Err(WireError::NotStun);
        }
        let length = usize::from(self.length());
        if !length.is_multiple_of(4) {
            return Err(WireError::Malformed);
        }
        if data.len() < HEADER_LEN + length {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Consume the view and return the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 14-bit message type.
    pub fn message_type(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::TYPE];
        u16::from_be_bytes([d[0], d[1]])
    }

    /// Message class.
    pub fn class(&self) -> Class {
        split_type(self.message_type()).0
    }

    /// Message method.
    pub fn method(&self) -> Method {
        split_type(self.message_type()).1
    }

    /// Length of the attributes, in bytes (§5).
    pub fn length(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([d[0], d[1]])
    }

    /// The magic cookie field (the first 32 bits of an RFC 3489 transaction id).
    pub fn magic_cookie(&self) -> u32 {
        let d = &self.buffer.as_ref()[field::COOKIE];
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0; 12];
        id.copy_from_slice(&self.buffer.as_ref()[field::TRANSACTION]);
        TransactionId(id)
    }

    /// The attribute bytes (header excluded).
    pub fn attributes_bytes(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.length());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }

    /// Iterate over `(type, value, offset)` of each attribute; `offset` is
    /// where the attribute starts in the message.
    pub fn attributes(&self) -> RawAttributes<'_> {
        RawAttributes {
            data: self.attributes_bytes(),
            offset: 0,
        }
    }

    /// Check `MESSAGE-INTEGRITY` against the short-term credential `key`
    /// (§9.1.3). Returns [`WireError::MissingIntegrity`] when the message
    /// has none and [`WireError::BadIntegrity`] when the HMAC does not match.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        for attr in self.attributes() {
            let (kind, value, offset) = attr?;
            if kind == kind::MESSAGE_INTEGRITY {
                if value.len() != INTEGRITY_LEN {
                    return Err(WireError::Malformed);
                }
                let start = HEADER_LEN + offset;
                let mac = integrity_hmac(key, &data[..start], start + 4 + INTEGRITY_LEN);
                return if crate::constant_time_eq(mac.as_ref(), value) {
                    Ok(())
                } else {
                    Err(WireError::BadIntegrity)
                };
            }
        }
        Err(WireError::MissingIntegrity)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the message type from class and method.
    pub fn set_message_type(&mut self, class: Class, method: Method) {
        let v = join_type(class, method).to_be_bytes();
        self.buffer.as_mut()[field::TYPE].copy_from_slice(&v);
    }

    /// Set the length field.
    pub fn set_length(&mut self, length: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&length.to_be_bytes());
    }

    /// Set the magic cookie field.
    pub fn set_magic_cookie(&mut self, cookie: u32) {
        self.buffer.as_mut()[field::COOKIE].copy_from_slice(&cookie.to_be_bytes());
    }

    /// Set the transaction id.
    pub fn set_transaction_id(&mut self, id: TransactionId) {
        self.buffer.as_mut()[field::TRANSACTION].copy_from_slice(&id.0);
    }
}

/// HMAC-SHA1 over `prefix` with the header length field set to cover up to
/// `length_through` bytes of the whole message (§14.5).
fn integrity_hmac(key: &[u8], prefix: &[u8], length_through: usize) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    let adjusted = u16::try_from(length_through.saturating_sub(HEADER_LEN)).unwrap_or(u16::MAX);
    ctx.update(&prefix[..2]);
    ctx.update(&adjusted.to_be_bytes());
    ctx.update(&prefix[4..]);
    ctx.sign()
}

/// Iterator over raw attributes, see [`Packet::attributes`].
#[derive(Debug, Clone)]
pub struct RawAttributes<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = Result<(u16, &'a [u8], usize), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.data.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let Some(header) = rest.get(..4) else {
            self.offset = self.data.len();
            return Some(Err(WireError::Truncated));
        };
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let Some(value) = rest.get(4..4 + len) else {
            self.offset = self.data.len();
            return Some(Err(WireError::Truncated));
        };
        let start = self.offset;
        self.offset += 4 + padded(len);
        Some(Ok((kind, value, start)))
    }
}

const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// One parsed attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute {
    /// MAPPED-ADDRESS (§14.1): the reflexive address, plain (RFC 3489 clients).
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS (§14.2): the reflexive address, obfuscated.
    XorMappedAddress(SocketAddr),
    /// USERNAME (§14.3).
    Username(String),
    /// ERROR-CODE (§14.8): a code in 300..=699 and a reason phrase.
    ErrorCode {
        /// The error code, such as 420.
        code: u16,
        /// Human-readable reason.
        reason: String,
    },
    /// UNKNOWN-ATTRIBUTES (§14.13).
    UnknownAttributes(Vec<u16>),
    /// SOFTWARE (§14.14).
    Software(String),
    /// CHANGE-REQUEST (RFC 5780 §7.2).
    ChangeRequest {
        /// Answer from the other IP address.
        change_ip: bool,
        /// Answer from the other port.
        change_port: bool,
    },
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    ResponseOrigin(SocketAddr),
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    OtherAddress(SocketAddr),
    /// SOURCE-ADDRESS (RFC 3489 §11.2.5).
    SourceAddress(SocketAddr),
    /// CHANGED-ADDRESS (RFC 3489 §11.2.3).
    ChangedAddress(SocketAddr),
    /// PRIORITY (RFC 8445 §7.1.1).
    Priority(u32),
    /// USE-CANDIDATE (RFC 8445 §7.1.2).
    UseCandidate,
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    XorPeerAddress(SocketAddr),
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    XorRelayedAddress(SocketAddr),
    /// DATA (RFC 8656 §18.4).
    Data(Vec<u8>),
    /// LIFETIME in seconds (RFC 8656 §18.2).
    Lifetime(u32),
    /// CHANNEL-NUMBER (RFC 8656 §18.1): the number; the RFFU half is
    /// written as zero and ignored on receipt.
    ChannelNumber(u16),
    /// REQUESTED-TRANSPORT: an IP protocol number, 17 for UDP (RFC 8656 §18.8).
    RequestedTransport(u8),
    /// REALM (§14.9): names the long-term credential domain.
    Realm(String),
    /// NONCE (§14.10): server-chosen, echoed in authenticated requests.
    Nonce(String),
    /// Any other attribute, kept verbatim.
    Unknown {
        /// Attribute type.
        kind: u16,
        /// Attribute value, unpadded.
        value: Vec<u8>,
    },
}

impl Attribute {
    /// Attribute type code.
    pub fn kind(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => kind::MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => kind::XOR_MAPPED_ADDRESS,
            Attribute::Username(_) => kind::USERNAME,
            Attribute::ErrorCode { .. } => kind::ERROR_CODE,
            Attribute::UnknownAttributes(_) => kind::UNKNOWN_ATTRIBUTES,
            Attribute::Software(_) => kind::SOFTWARE,
            Attribute::ChangeRequest { .. } => kind::CHANGE_REQUEST,
            Attribute::ResponseOrigin(_) => kind::RESPONSE_ORIGIN,
            Attribute::OtherAddress(_) => kind::OTHER_ADDRESS,
            Attribute::SourceAddress(_) => kind::SOURCE_ADDRESS,
            Attribute::ChangedAddress(_) => kind::CHANGED_ADDRESS,
            Attribute::Priority(_) => kind::PRIORITY,
            Attribute::UseCandidate => kind::USE_CANDIDATE,
            Attribute::XorPeerAddress(_) => kind::XOR_PEER_ADDRESS,
            Attribute::XorRelayedAddress(_) => kind::XOR_RELAYED_ADDRESS,
            Attribute::Data(_) => kind::DATA,
            Attribute::Lifetime(_) => kind::LIFETIME,
            Attribute::ChannelNumber(_) => kind::CHANNEL_NUMBER,
            Attribute::RequestedTransport(_) => kind::REQUESTED_TRANSPORT,
            Attribute::Realm(_) => kind::REALM,
            Attribute::Nonce(_) => kind::NONCE,
            Attribute::Unknown { kind, .. } => *kind,
        }
    }

    /// Whether a receiver that does not understand the type must reject the
    /// message (types below 0x8000, §14).
    pub fn is_comprehension_required(kind: u16) -> bool {
        kind < 0x8000
    }

    fn value_len(&self) -> usize {
        match self {
            Attribute::MappedAddress(a)
            | Attribute::XorMappedAddress(a)
            | Attribute::ResponseOrigin(a)
            | Attribute::OtherAddress(a)
            | Attribute::SourceAddress(a)
            | Attribute::ChangedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => address_len(a),
            Attribute::Username(s)
            | Attribute::Software(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s) => s.len(),
            Attribute::Data(d) => d.len(),
            Attribute::Lifetime(_)
            | Attribute::RequestedTransport(_)
            | Attribute::ChannelNumber(_) => 4,
            Attribute::ErrorCode { reason, .. } => 4 + reason.len(),
            Attribute::UnknownAttributes(v) => 2 * v.len(),
            Attribute::ChangeRequest { .. } | Attribute::Priority(_) => 4,
            Attribute::UseCandidate => 0,
            Attribute::Unknown { value, .. } => value.len(),
        }
    }

    fn parse(kind: u16, value: &[u8], id: &[u8; 16]) -> Result<Attribute, WireError> {
        let bad = WireError::BadAttribute { kind };
        Ok(match kind {
            kind::MAPPED_ADDRESS => Attribute::MappedAddress(parse_address(value, None, kind)?),
            kind::XOR_MAPPED_ADDRESS => {
                Attribute::XorMappedAddress(parse_address(value, Some(id), kind)?)
            }
            kind::RESPONSE_ORIGIN => Attribute::ResponseOrigin(parse_address(value, None, kind)?),
            kind::OTHER_ADDRESS => Attribute::OtherAddress(parse_address(value, None, kind)?),
            kind::SOURCE_ADDRESS => Attribute::SourceAddress(parse_address(value, None, kind)?),
            kind::CHANGED_ADDRESS => Attribute::ChangedAddress(parse_address(value, None, kind)?),
            kind::XOR_PEER_ADDRESS => {
                Attribute::XorPeerAddress(parse_address(value, Some(id), kind)?)
            }
            kind::XOR_RELAYED_ADDRESS => {
                Attribute::XorRelayedAddress(parse_address(value, Some(id), kind)?)
            }
            kind::DATA => Attribute::Data(value.to_vec()),
            kind::LIFETIME => Attribute::Lifetime(parse_u32(value, kind)?),
            kind::CHANNEL_NUMBER => {
                let [high, low, _, _] = value else {
                    return Err(bad);
                };
                Attribute::ChannelNumber(u16::from_be_bytes([*high, *low]))
            }
            kind::REQUESTED_TRANSPORT => {
                let [protocol, 0, 0, 0] = value else {
                    return Err(bad);
                };
                Attribute::RequestedTransport(*protocol)
            }
            kind::USERNAME => Attribute::Username(parse_text(value, 513, kind)?),
            kind::SOFTWARE => Attribute::Software(parse_text(value, 763, kind)?),
            kind::REALM => Attribute::Realm(parse_text(value, 763, kind)?),
            kind::NONCE => Attribute::Nonce(parse_text(value, 763, kind)?),
            kind::ERROR_CODE => {
                let [_, _, class, number, reason @ ..] = value else {
                    return Err(bad);
                };
                let class = u16::from(class & 0x07);
                if !(3..=6).contains(&class) || *number > 99 {
                    return Err(bad);
                }
                Attribute::ErrorCode {
                    code: class * 100 + u16::from(*number),
                    reason: parse_text(reason, 763, kind)?,
                }
            }
            kind::UNKNOWN_ATTRIBUTES => {
                if !value.len().is_multiple_of(2) {
                    return Err(bad);
                }
                Attribute::UnknownAttributes(
                    value
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            kind::CHANGE_REQUEST => {
                let v = parse_u32(value, kind)?;
                Attribute::ChangeRequest {
                    change_ip: v & 0x4 != 0,
                    change_port: v & 0x2 != 0,
                }
            }
            kind::PRIORITY => Attribute::Priority(parse_u32(value, kind)?),
            kind::USE_CANDIDATE => {
                if !value.is_empty() {
                    return Err(bad);
                }
                Attribute::UseCandidate
            }
            _ => Attribute::Unknown {
                kind,
                value: value.to_vec(),
            },
        })
    }

    fn emit_value(&self, out: &mut [u8], id: &[u8; 16]) {
        match self {
            Attribute::MappedAddress(a)
            | Attribute::ResponseOrigin(a)
            | Attribute::OtherAddress(a)
            | Attribute::SourceAddress(a)
            | Attribute::ChangedAddress(a) => emit_address(a, None, out),
            Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => emit_address(a, Some(id), out),
            Attribute::Data(d) => out.copy_from_slice(d),
            Attribute::Lifetime(v) => out.copy_from_slice(&v.to_be_bytes()),
            Attribute::ChannelNumber(n) => {
                out[..2].copy_from_slice(&n.to_be_bytes());
                out[2..].fill(0);
            }
            Attribute::RequestedTransport(p) => out.copy_from_slice(&[*p, 0, 0, 0]),
            Attribute::Username(s)
            | Attribute::Software(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s) => out.copy_from_slice(s.as_bytes()),
            Attribute::ErrorCode { code, reason } => {
                out[..2].fill(0);
                // Codes outside 300..=699 are refused by `Repr::emit`.
                out[2] = u8::try_from(code / 100).unwrap_or(0);
                out[3] = u8::try_from(code % 100).unwrap_or(0);
                out[4..].copy_from_slice(reason.as_bytes());
            }
            Attribute::UnknownAttributes(v) => {
                for (chunk, k) in out.chunks_exact_mut(2).zip(v) {
                    chunk.copy_from_slice(&k.to_be_bytes());
                }
            }
            Attribute::ChangeRequest {
                change_ip,
                change_port,
            } => {
                let v = (u32::from(*change_ip) << 2) | (u32::from(*change_port) << 1);
                out.copy_from_slice(&v.to_be_bytes());
            }
            Attribute::Priority(p) => out.copy_from_slice(&p.to_be_bytes()),
            Attribute::UseCandidate => {}
            Attribute::Unknown { value, .. } => out.copy_from_slice(value),
        }
    }
}

fn parse_u32(value: &[u8], kind: u16) -> Result<u32, WireError> {
    let v: [u8; 4] = value
        .try_into()
        .map_err(|_| WireError::BadAttribute { kind })?;
    Ok(u32::from_be_bytes(v))
}

fn parse_text(value: &[u8], max: usize, kind: u16) -> Result<String, WireError> {
    if value.len() > max {
        return Err(WireError::BadAttribute { kind });
    }
    String::from_utf8(value.to_vec()).map_err(|_| WireError::BadAttribute { kind })
}

fn address_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Parse a (XOR-)MAPPED-ADDRESS value (§14.1, §14.2). `xor` is the cookie
/// followed by the transaction id.
fn parse_address(value: &[u8], xor: Option<&[u8; 16]>, kind: u16) -> Result<SocketAddr, WireError> {
    let bad = WireError::BadAttribute { kind };
    let [_, family, p0, p1, addr @ ..] = value else {
        return Err(bad);
    };
    let mask = xor.copied().unwrap_or([0; 16]);
    let port = u16::from_be_bytes([p0 ^ mask[0], p1 ^ mask[1]]);
    let ip = match (family, addr.len()) {
        (0x01, 4) => {
            let mut b = [0u8; 4];
            for (i, o) in b.iter_mut().enumerate() {
                *o = addr[i] ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        (0x02, 16) => {
            let mut b = [0u8; 16];
            for (i, o) in b.iter_mut().enumerate() {
                *o = addr[i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(bad),
    };
    Ok(SocketAddr::new(ip, port))
}

fn emit_address(addr: &SocketAddr, xor: Option<&[u8; 16]>, out: &mut [u8]) {
    let mask = xor.copied().unwrap_or([0; 16]);
    out[0] = 0;
    let port = addr.port().to_be_bytes();
    out[2] = port[0] ^ mask[0];
    out[3] = port[1] ^ mask[1];
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ mask[i];
            }
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ mask[i];
            }
        }
    }
}

/// An owned, parsed STUN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// Message class.
    pub class: Class,
    /// Message method.
    pub method: Method,
    /// The transaction id.
    pub transaction_id: TransactionId,
    /// The header's cookie field: [`MAGIC_COOKIE`] for RFC 5389/8489
    /// messages, anything else for RFC 3489 ones (where it is the first
    /// 32 bits of a 128-bit transaction id, §12).
    pub magic_cookie: u32,
    /// The attributes in order, `MESSAGE-INTEGRITY` and `FINGERPRINT`
    /// excluded.
    pub attributes: Vec<Attribute>,
    /// Whether the message carries (or, when emitted, gets) `MESSAGE-INTEGRITY`.
    pub message_integrity: bool,
    /// Whether the message carries (or, when emitted, gets) `FINGERPRINT`.
    pub fingerprint: bool,
}

impl Repr {
    /// A Binding request (§3) with no attributes.
    pub fn binding_request(transaction_id: TransactionId) -> Repr {
        Repr {
            class: Class::Request,
            method: Method::BINDING,
            transaction_id,
            magic_cookie: MAGIC_COOKIE,
            attributes: Vec::new(),
            message_integrity: false,
            fingerprint: false,
        }
    }

    /// Whether the header carries the RFC 5389/8489 magic cookie.
    pub fn is_modern(&self) -> bool {
        self.magic_cookie == MAGIC_COOKIE
    }

    /// The first attribute of type `kind`.
    pub fn attribute(&self, kind: u16) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.kind() == kind)
    }

    /// The reflexive address: `XOR-MAPPED-ADDRESS`, else `MAPPED-ADDRESS`.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        let xor = self.attributes.iter().find_map(|a| match a {
            Attribute::XorMappedAddress(a) => Some(*a),
            _ => None,
        });
        xor.or_else(|| {
            self.attributes.iter().find_map(|a| match a {
                Attribute::MappedAddress(a) => Some(*a),
                _ => None,
            })
        })
    }

    /// The `USERNAME` attribute, if any.
    pub fn username(&self) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Username(u) => Some(u.as_str()),
            _ => None,
        })
    }

    /// Parse a checked packet. Attributes after `MESSAGE-INTEGRITY` other
    /// than `FINGERPRINT` are ignored, as is anything after `FINGERPRINT`
    /// (§14.5, §14.7). A present `FINGERPRINT` must match.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        packet.check_len()?;
        let (class, method) = split_type(packet.message_type());
        let id = cookie_and_id(packet.magic_cookie(), packet.transaction_id());
        let mut attributes = Vec::new();
        let mut message_integrity = false;
        let mut fingerprint = false;
        for attr in packet.attributes() {
            let (kind, value, offset) = attr?;
            match kind {
                kind::FINGERPRINT => {
                    let expected = parse_u32(value, kind)?;
                    let data = packet.buffer.as_ref();
                    let start = HEADER_LEN + offset;
                    if fingerprint_of(&data[..start], start + 8) != expected {
                        return Err(WireError::BadFingerprint);
                    }
                    fingerprint = true;
                    break;
                }
                kind::MESSAGE_INTEGRITY => {
                    if value.len() != INTEGRITY_LEN {
                        return Err(WireError::BadAttribute { kind });
                    }
                    message_integrity = true;
                }
                _ if message_integrity => {}
                _ => attributes.push(Attribute::parse(kind, value, &id)?),
            }
        }
        Ok(Repr {
            class,
            method,
            transaction_id: packet.transaction_id(),
            magic_cookie: packet.magic_cookie(),
            attributes,
            message_integrity,
            fingerprint,
        })
    }

    /// Parse bytes from the network.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Repr, WireError> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    /// Length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        let mut len = HEADER_LEN;
        for a in &self.attributes {
            len += 4 + padded(a.value_len());
        }
        if self.message_integrity {
            len += 4 + INTEGRITY_LEN;
        }
        if self.fingerprint {
            len += 8;
        }
        len
    }

    /// Emit into `packet`, whose buffer must hold [`Repr::buffer_len`] bytes.
    /// `integrity_key` is the short-term key used when
    /// [`Repr::message_integrity`] is set (ignored otherwise). Returns the
    /// emitted length. Padding bytes are written as zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        integrity_key: &[u8],
    ) -> Result<usize, WireError> {
        let total = self.buffer_len();
        let body = u16::try_from(total - HEADER_LEN).map_err(|_| WireError::TooLong)?;
        if packet.buffer.as_ref().len() < total {
            return Err(WireError::BufferTooSmall);
        }
        for a in &self.attributes {
            match a {
                Attribute::ErrorCode { code, .. } if !(300..=699).contains(code) => {
                    return Err(WireError::BadAttribute {
                        kind: kind::ERROR_CODE,
                    });
                }
                _ if a.value_len() > usize::from(u16::MAX) => return Err(WireError::TooLong),
                _ => {}
            }
        }
        packet.set_message_type(self.class, self.method);
        packet.set_length(body);
        packet.set_magic_cookie(self.magic_cookie);
        packet.set_transaction_id(self.transaction_id);
        let id = cookie_and_id(self.magic_cookie, self.transaction_id);
        let buf = packet.buffer.as_mut();
        let mut at = HEADER_LEN;
        for a in &self.attributes {
            let len = a.value_len();
            write_attr_header(buf, at, a.kind(), len);
            a.emit_value(&mut buf[at + 4..at + 4 + len], &id);
            buf[at + 4 + len..at + 4 + padded(len)].fill(0);
            at += 4 + padded(len);
        }
        if self.message_integrity {
            let mac = integrity_hmac(integrity_key, &buf[..at], at + 4 + INTEGRITY_LEN);
            write_attr_header(buf, at, kind::MESSAGE_INTEGRITY, INTEGRITY_LEN);
            buf[at + 4..at + 4 + INTEGRITY_LEN].copy_from_slice(mac.as_ref());
            at += 4 + INTEGRITY_LEN;
        }
        if self.fingerprint {
            let crc = fingerprint_of(&buf[..at], at + 8);
            write_attr_header(buf, at, kind::FINGERPRINT, 4);
            buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
            at += 8;
        }
        Ok(at)
    }

    /// Emit into a new vector.
    pub fn to_bytes(&self, integrity_key: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut buf = vec![0; self.buffer_len()];
        let n = self.emit(&mut Packet::new_unchecked(&mut buf[..]), integrity_key)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// Emit a TURN Send indication (RFC 8656 §11.1) relaying `data` to `peer`
/// straight into `packet`'s buffer: XOR-PEER-ADDRESS then DATA, nothing
/// else. It parses to the [`Repr`] with those two attributes, but unlike
/// that `Repr` needs no copy of `data`. Returns the emitted length.
pub fn emit_send_indication<T: AsRef<[u8]> + AsMut<[u8]>>(
    packet: &mut Packet<T>,
    transaction_id: TransactionId,
    peer: SocketAddr,
    data: &[u8],
) -> Result<usize, WireError> {
    let peer_len = address_len(&peer);
    let total = HEADER_LEN + 4 + peer_len + 4 + padded(data.len());
    if data.len() > usize::from(u16::MAX) {
        return Err(WireError::TooLong);
    }
    let body = u16::try_from(total - HEADER_LEN).map_err(|_| WireError::TooLong)?;
    if packet.buffer.as_ref().len() < total {
        return Err(WireError::BufferTooSmall);
    }
    packet.set_message_type(Class::Indication, Method::SEND);
    packet.set_length(body);
    packet.set_magic_cookie(MAGIC_COOKIE);
    packet.set_transaction_id(transaction_id);
    let id = cookie_and_id(MAGIC_COOKIE, transaction_id);
    let buf = packet.buffer.as_mut();
    let mut at = HEADER_LEN;
    write_attr_header(buf, at, kind::XOR_PEER_ADDRESS, peer_len);
    emit_address(&peer, Some(&id), &mut buf[at + 4..at + 4 + peer_len]);
    at += 4 + peer_len;
    write_attr_header(buf, at, kind::DATA, data.len());
    buf[at + 4..at + 4 + data.len()].copy_from_slice(data);
    buf[at + 4 + data.len()..total].fill(0);
    Ok(total)
}

fn write_attr_header(buf: &mut [u8], at: usize, kind: u16, len: usize) {
    buf[at..at + 2].copy_from_slice(&kind.to_be_bytes());
    // Callers bound `len` to u16 before emitting.
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// CRC-32 of `prefix` with the length field covering `length_through`
/// bytes, XOR `0x5354554e` (§14.7).
fn fingerprint_of(prefix: &[u8], length_through: usize) -> u32 {
    let adjusted = u16::try_from(length_through.saturating_sub(HEADER_LEN)).unwrap_or(u16::MAX);
    let mut h = crc32fast::Hasher::new();
    h.update(&prefix[..2]);
    h.update(&adjusted.to_be_bytes());
    h.update(&prefix[4..]);
    h.finalize() ^ FINGERPRINT_XOR
}

fn cookie_and_id(cookie: u32, id: TransactionId) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&cookie.to_be_bytes());
    out[4..].copy_from_slice(&id.0);
    out
}

/// Whether `bytes` look like a STUN message (RFC 7983 §7 demultiplexing:
/// first byte 0..=3, with the magic cookie). Cheap; does not parse.
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] < 4 && bytes[field::COOKIE] == MAGIC_COOKIE.to_be_bytes()
}

#[cfg(test)]
mod test {
    use super::*;

    // RFC 5769 §2.1: sample request with USERNAME, MESSAGE-INTEGRITY, FINGERPRINT.
    const SAMPLE_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];
    const SAMPLE_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    // RFC 5769 §2.2: sample IPv4 response.
    const SAMPLE_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    const SAMPLE_ID: TransactionId = TransactionId([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);

    #[test]
    fn type_bits_round_trip() {
        assert_eq!(join_type(Class::Request, Method::BINDING), 0x0001);
        assert_eq!(join_type(Class::Success, Method::BINDING), 0x0101);
        assert_eq!(join_type(Class::Error, Method::BINDING), 0x0111);
        assert_eq!(join_type(Class::Indication, Method::BINDING), 0x0011);
        for m in [0u16, 1, 0x0fff, 0x0abc] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_type(join_type(c, Method(m))), (c, Method(m)));
            }
        }
    }

    #[test]
    fn parse_rfc5769_request() {
        let packet = Packet::new_checked(&SAMPLE_REQUEST[..]).unwrap();
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(repr.class, Class::Request);
        assert_eq!(repr.transaction_id, SAMPLE_ID);
        assert_eq!(repr.username(), Some("evtj:h6vY"));
        assert!(repr.message_integrity && repr.fingerprint);
        assert_eq!(
            repr.attribute(kind::SOFTWARE),
            Some(&Attribute::Software("STUN test client".into()))
        );
        assert_eq!(
            repr.attribute(kind::PRIORITY),
            Some(&Attribute::Priority(0x6e0001ff))
        );
        packet.verify_integrity(SAMPLE_PASSWORD).unwrap();
        assert_eq!(
            packet.verify_integrity(b"wrong"),
            Err(WireError::BadIntegrity)
        );
    }

    #[test]
    fn parse_and_emit_rfc5769_response() {
        let packet = Packet::new_checked(&SAMPLE_RESPONSE[..]).unwrap();
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(repr.class, Class::Success);
        assert_eq!(
            repr.mapped_address(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        packet.verify_integrity(SAMPLE_PASSWORD).unwrap();
        // The sample pads SOFTWARE with a space where we pad with zero; the
        // padding is not covered by equality, so re-emit and compare the rest.
        let mut buf = [0xa5u8; 80];
        let n = repr
            .emit(&mut Packet::new_unchecked(&mut buf[..]), SAMPLE_PASSWORD)
            .unwrap();
        assert_eq!(n, 80);
        assert_eq!(buf[..35], SAMPLE_RESPONSE[..35]);
        assert_eq!(buf[35], 0);
        // MAC and CRC differ only through the padding byte; both verify.
        let packet = Packet::new_checked(&buf[..]).unwrap();
        packet.verify_integrity(SAMPLE_PASSWORD).unwrap();
        assert_eq!(Repr::parse(&packet).unwrap(), repr);
    }

    #[test]
    fn emit_rfc5769_request_bytes() {
        let repr = Repr::parse_bytes(&SAMPLE_REQUEST).unwrap();
        let mut buf = [0xa5u8; 108];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]), SAMPLE_PASSWORD)
            .unwrap();
        // The sample pads USERNAME with spaces ("evtj:h6vY   "), we with zeros.
        let mut expected = SAMPLE_REQUEST;
        expected[73..76].fill(0);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(buf[..76], expected[..76]);
        packet.verify_integrity(SAMPLE_PASSWORD).unwrap();
    }

    #[test]
    fn corrupted_fingerprint_is_rejected() {
        let mut bytes = SAMPLE_REQUEST;
        bytes[107] ^= 1;
        assert_eq!(Repr::parse_bytes(&bytes), Err(WireError::BadFingerprint));
        let mut bytes = SAMPLE_REQUEST;
        bytes[30] ^= 1; // inside SOFTWARE
        assert_eq!(Repr::parse_bytes(&bytes), Err(WireError::BadFingerprint));
    }

    #[test]
    fn header_checks() {
        assert_eq!(
            Repr::parse_bytes(&SAMPLE_REQUEST[..19]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Repr::parse_bytes(&SAMPLE_REQUEST[..100]),
            Err(WireError::Truncated)
        );
        let mut bytes = SAMPLE_REQUEST;
        bytes[0] = 0x40;
        assert_eq!(Repr::parse_bytes(&bytes), Err(WireError::NotStun));
        let mut bytes = SAMPLE_REQUEST;
        bytes[3] = 0x57;
        assert_eq!(Repr::parse_bytes(&bytes), Err(WireError::Malformed));
        assert!(is_stun(&SAMPLE_REQUEST));
        assert!(!is_stun(&[0u8; 20]));
    }

    #[test]
    fn xor_mapped_ipv6_uses_transaction_id() {
        let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let mut repr = Repr::binding_request(SAMPLE_ID);
        repr.class = Class::Success;
        repr.attributes.push(Attribute::XorMappedAddress(addr));
        let bytes = repr.to_bytes(&[]).unwrap();
        // RFC 5769 §2.3 sample: the obfuscated address bytes.
        assert_eq!(
            bytes[24..44],
            [
                0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25,
                0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
            ]
        );
        assert_eq!(
            Repr::parse_bytes(&bytes).unwrap().mapped_address(),
            Some(addr)
        );
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut repr = Repr::binding_request(SAMPLE_ID);
        repr.message_integrity = true;
        let mut bytes = repr.to_bytes(b"k").unwrap();
        // Append a SOFTWARE attribute after MESSAGE-INTEGRITY.
        bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b'a', b'b', b'c', b'd']);
        bytes[3] += 8;
        let parsed = Repr::parse_bytes(&bytes).unwrap();
        assert!(parsed.attributes.is_empty());
        assert!(parsed.message_integrity);
    }

    #[test]
    fn send_indication_matches_repr() {
        let id = TransactionId([3; 12]);
        for (peer, data) in [
            ("203.0.113.5:7000", &b"hello"[..]),
            ("[2001:db8::1]:9", &b"four"[..]),
            ("203.0.113.5:7000", &b""[..]),
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut repr = Repr::binding_request(id);
            repr.class = Class::Indication;
            repr.method = Method::SEND;
            repr.attributes = vec![
                Attribute::XorPeerAddress(peer),
                Attribute::Data(data.to_vec()),
            ];
            let expected = repr.to_bytes(&[]).unwrap();
            let mut buf = [0xa5u8; 64];
            let n = emit_send_indication(&mut Packet::new_unchecked(&mut buf[..]), id, peer, data)
                .unwrap();
            assert_eq!(&buf[..n], &expected[..]);
            assert_eq!(
                emit_send_indication(
                    &mut Packet::new_unchecked(&mut buf[..n - 1]),
                    id,
                    peer,
                    data
                ),
                Err(WireError::BufferTooSmall)
            );
        }
    }

    #[test]
    fn emit_refuses_small_buffer_and_bad_error_code() {
        let mut repr = Repr::binding_request(SAMPLE_ID);
        let mut small = [0u8; 10];
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut small[..]), &[]),
            Err(WireError::BufferTooSmall)
        );
        repr.attributes.push(Attribute::ErrorCode {
            code: 1000,
            reason: String::new(),
        });
        assert!(repr.to_bytes(&[]).is_err());
    }
}
