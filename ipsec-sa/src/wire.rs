//! Wire formats: ESP-like data packets and the handshake messages.
//!
//! Following smoltcp's `wire` contract, [`Packet`] is a zero-copy view over
//! a data packet (use [`Packet::new_checked`] on untrusted bytes; after that
//! no accessor panics), and the `*Repr` types are owned, parsed forms with
//! `parse`, `buffer_len` and `emit`.
//!
//! Both kinds of message share one datagram stream. As in ESP-in-UDP
//! (RFC 3948 §2.2), a handshake message starts with a four-byte zero
//! "non-ESP marker"; ESP never uses SPI 0 (RFC 4303 §2.1).
//!
//! ```text
//! data packet (RFC 4303 §2, with the full 64-bit sequence number of §2.2.1)
//!  0               4                              12
//! +---------------+-------------------------------+--------------....--+----------+
//! | SPI (u32, BE) | sequence number (u64, BE)     | ciphertext         | tag (16) |
//! +---------------+-------------------------------+--------------....--+----------+
//!
//! handshake message
//! +---------------+------+---------+-----------------------------------------------+
//! | 0x00000000    | kind | version | kind-specific fields, then the Noise message |
//! +---------------+------+---------+-----------------------------------------------+
//!   init     (1): initiator index (u32) | offered suites (u8 bit set) | Noise msg 1 | mac1 (16) | mac2 (16)
//!   response (2): initiator index (u32) | responder index (u32)         | Noise msg 2
//!   finish   (3): initiator index (u32) | responder index (u32)         | Noise msg 3
//!   cookie   (4): initiator index (u32) | nonce (24) | encrypted cookie (16) and tag (16)
//! ```
//!
//! An init's `mac1` and `mac2`, and the cookie reply (66 bytes in all),
//! are described in [`crate::cookie`]. Version 1 had no macs and no cookie
//! reply.
//!
//! The ciphertext carries the inner IP packet unchanged: no ESP padding or
//! next-header trailer, since the payload is always an IP packet and the
//! AEAD needs no block alignment. An empty payload is a keepalive
//! (RFC 4303 §2.6 "dummy packet").

use crate::cookie::{COOKIE_NONCE_LEN, ENCRYPTED_COOKIE_LEN, MAC_LEN};
use crate::error::WireError;

/// Length of the cleartext header of a data packet: SPI and sequence number.
pub const HEADER_LEN: usize = 12;
/// Length of the AEAD authentication tag.
pub const TAG_LEN: usize = 16;
/// Smallest valid data packet: header and tag around an empty payload.
pub const MIN_PACKET_LEN: usize = HEADER_LEN + TAG_LEN;
/// Largest plaintext a data packet may carry (an IPv4/IPv6 packet).
pub const MAX_PLAINTEXT_LEN: usize = 65_535;
/// The protocol version carried in every handshake message.
pub const VERSION: u8 = 2;
/// Largest certificate a handshake payload may carry.
pub const MAX_CERT_LEN: usize = 8_192;
/// Largest signature a handshake payload may carry (DER ECDSA P-256 ≤ 72).
pub const MAX_SIGNATURE_LEN: usize = 128;
/// Length of the `mac1` and `mac2` fields that end every init.
pub const INIT_MACS_LEN: usize = 2 * MAC_LEN;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = field::COOKIE.end;

mod field {
    use core::ops::{Range, RangeFrom};

    pub const SPI: Range<usize> = 0..4;
    pub const SEQUENCE: Range<usize> = 4..12;
    pub const PAYLOAD: RangeFrom<usize> = 12..;

    pub const KIND: usize = 4;
    pub const VERSION: usize = 5;
    pub const INITIATOR_INDEX: Range<usize> = 6..10;
    pub const OFFERED: usize = 10;
    pub const INIT_NOISE: RangeFrom<usize> = 11..;
    pub const RESPONDER_INDEX: Range<usize> = 10..14;
    pub const REPLY_NOISE: RangeFrom<usize> = 14..;
    pub const NONCE: Range<usize> = 10..34;
    pub const COOKIE: Range<usize> = 34..66;
}

/// An AEAD suite for the SAs (ESP transforms of RFC 4106 and RFC 7634).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Suite {
    /// ChaCha20-Poly1305 (RFC 7634).
    ChaCha20Poly1305 = 1,
    /// AES-256-GCM with a 16-byte tag (RFC 4106).
    Aes256Gcm = 2,
}

impl Suite {
    /// Every suite this implementation supports.
    pub const ALL: [Suite; 2] = [Suite::Aes256Gcm, Suite::ChaCha20Poly1305];

    /// The suite's bit in a [`SuiteSet`].
    pub const fn bit(self) -> u8 {
        self as u8
    }

    /// Parses a suite identifier.
    pub fn from_u8(value: u8) -> Result<Suite, WireError> {
        match value {
            1 => Ok(Suite::ChaCha20Poly1305),
            2 => Ok(Suite::Aes256Gcm),
            other => Err(WireError::UnknownSuite(other)),
        }
    }
}

/// A set of [`Suite`]s, as offered in an init message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SuiteSet(u8);

impl SuiteSet {
    /// The empty set.
    pub const EMPTY: SuiteSet = SuiteSet(0);

    /// Builds a set from suites.
    pub fn from_suites(suites: &[Suite]) -> SuiteSet {
        SuiteSet(suites.iter().fold(0, |acc, s| acc | s.bit()))
    }

    /// Parses a bit set; unknown bits are an error so that a newer peer's
    /// offer is not silently misread.
    pub fn from_bits(bits: u8) -> Result<SuiteSet, WireError> {
        let known = Suite::ALL.iter().fold(0, |acc, s| acc | s.bit());
        if bits & !known != 0 {
            return Err(WireError::UnknownSuite(bits & !known));
        }
        if bits == 0 {
            return Err(WireError::NoSuiteOffered);
        }
        Ok(SuiteSet(bits))
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether `suite` is in the set.
    pub const fn contains(self, suite: Suite) -> bool {
        self.0 & suite.bit() != 0
    }
}

/// Whether a datagram is a handshake message (starts with the non-ESP
/// marker) or a data packet.
pub fn is_handshake(bytes: &[u8]) -> bool {
    bytes.get(field::SPI) == Some(&[0, 0, 0, 0][..])
}

fn read_u32(bytes: &[u8], range: core::ops::Range<usize>) -> Result<u32, WireError> {
    let raw: [u8; 4] = bytes
        .get(range)
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::Truncated)?;
    Ok(u32::from_be_bytes(raw))
}

/// A zero-copy view of an ESP-like data packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks that every accessor is in bounds.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a header, a tag and a non-reserved SPI.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if len > MIN_PACKET_LEN + MAX_PLAINTEXT_LEN {
            return Err(WireError::Oversize);
        }
        let spi = self.spi();
        if spi < 256 {
            return Err(WireError::ReservedSpi(spi));
        }
        Ok(())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The Security Parameters Index.
    pub fn spi(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The 64-bit sequence number.
    pub fn sequence_number(&self) -> u64 {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&self.buffer.as_ref()[field::SEQUENCE]);
        u64::from_be_bytes(raw)
    }

    /// The header bytes, which are the AEAD's associated data.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// Ciphertext followed by the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the SPI.
    pub fn set_spi(&mut self, spi: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&spi.to_be_bytes());
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, seq: u64) {
        self.buffer.as_mut()[field::SEQUENCE].copy_from_slice(&seq.to_be_bytes());
    }

    /// Mutable ciphertext and tag.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The cleartext fields of a data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRepr {
    /// Security Parameters Index of the receiver's inbound SA.
    pub spi: u32,
    /// Sequence number, starting at 1 for each SA (RFC 4303 §3.3.3).
    pub sequence_number: u64,
    /// Length of ciphertext plus tag.
    pub payload_len: usize,
}

impl PacketRepr {
    /// Parses the cleartext header of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<PacketRepr, WireError> {
        packet.check_len()?;
        Ok(PacketRepr {
            spi: packet.spi(),
            sequence_number: packet.sequence_number(),
            payload_len: packet.payload().len(),
        })
    }

    /// Length of the whole packet.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header; the payload is left for the AEAD.
    ///
    /// # Panics
    /// If the packet's buffer is shorter than [`buffer_len`](Self::buffer_len).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_spi(self.spi);
        packet.set_sequence_number(self.sequence_number);
    }
}

/// A parsed handshake message. `noise` borrows the Noise handshake bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRepr<'a> {
    /// Noise XX message 1 (`-> e`), from the initiator.
    Init {
        /// Index the initiator chose; it becomes the initiator's inbound SPI.
        initiator_index: u32,
        /// AEAD suites the initiator accepts for the SAs.
        offered: SuiteSet,
        /// The Noise message.
        noise: &'a [u8],
        /// MAC of everything before it, keyed by the responder's IP.
        mac1: [u8; MAC_LEN],
        /// MAC of everything before it, keyed by a cookie; zeros if none.
        mac2: [u8; MAC_LEN],
    },
    /// Noise XX message 2 (`<- e, ee, s, es`), from the responder.
    Response {
        /// Echo of the initiator's index.
        initiator_index: u32,
        /// Index the responder chose; it becomes the responder's inbound SPI.
        responder_index: u32,
        /// The Noise message.
        noise: &'a [u8],
    },
    /// Noise XX message 3 (`-> s, se`), from the initiator.
    Finish {
        /// The initiator's index.
        initiator_index: u32,
        /// The responder's index.
        responder_index: u32,
        /// The Noise message.
        noise: &'a [u8],
    },
    /// A responder under load, or one asking an unknown initiator to prove
    /// that it receives traffic for its address, answers an init with a
    /// cookie instead of Noise message 2 ([`crate::cookie`]).
    CookieReply {
        /// Echo of the initiator's index.
        initiator_index: u32,
        /// Random nonce for XChaCha20-Poly1305.
        nonce: [u8; COOKIE_NONCE_LEN],
        /// The cookie, encrypted, followed by the tag.
        cookie: [u8; ENCRYPTED_COOKIE_LEN],
    },
}

const KIND_INIT: u8 = 1;
const KIND_RESPONSE: u8 = 2;
const KIND_FINISH: u8 = 3;
const KIND_COOKIE: u8 = 4;

fn read_array<const N: usize>(
    bytes: &[u8],
    range: core::ops::Range<usize>,
) -> Result<[u8; N], WireError> {
    bytes
        .get(range)
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::Truncated)
}

fn check_index(index: u32) -> Result<u32, WireError> {
    if index < 256 {
        Err(WireError::ReservedSpi(index))
    } else {
        Ok(index)
    }
}

impl<'a> HandshakeRepr<'a> {
    /// Parses a handshake message (including the non-ESP marker).
    pub fn parse(bytes: &'a [u8]) -> Result<HandshakeRepr<'a>, WireError> {
        if bytes.len() < field::VERSION + 1 {
            return Err(WireError::Truncated);
        }
        if !is_handshake(bytes) {
            return Err(WireError::UnknownKind(0));
        }
        let kind = bytes[field::KIND];
        let version = bytes[field::VERSION];
        if !(KIND_INIT..=KIND_COOKIE).contains(&kind) {
            return Err(WireError::UnknownKind(kind));
        }
        if version != VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let initiator_index = check_index(read_u32(bytes, field::INITIATOR_INDEX)?)?;
        if kind == KIND_INIT {
            let offered =
                SuiteSet::from_bits(*bytes.get(field::OFFERED).ok_or(WireError::Truncated)?)?;
            let macs_at = bytes
                .len()
                .checked_sub(INIT_MACS_LEN)
                .filter(|at| *at > field::INIT_NOISE.start)
                .ok_or(WireError::Truncated)?;
            return Ok(HandshakeRepr::Init {
                initiator_index,
                offered,
                noise: &bytes[field::INIT_NOISE.start..macs_at],
                mac1: read_array(bytes, macs_at..macs_at + MAC_LEN)?,
                mac2: read_array(bytes, macs_at + MAC_LEN..bytes.len())?,
            });
        }
        if kind == KIND_COOKIE {
            if bytes.len() > COOKIE_REPLY_LEN {
                return Err(WireError::TrailingBytes);
            }
            return Ok(HandshakeRepr::CookieReply {
                initiator_index,
                nonce: read_array(bytes, field::NONCE)?,
                cookie: read_array(bytes, field::COOKIE)?,
            });
        }
        let responder_index = check_index(read_u32(bytes, field::RESPONDER_INDEX)?)?;
        let noise = bytes.get(field::REPLY_NOISE).ok_or(WireError::Truncated)?;
        if noise.is_empty() {
            return Err(WireError::Truncated);
        }
        Ok(if kind == KIND_RESPONSE {
            HandshakeRepr::Response {
                initiator_index,
                responder_index,
                noise,
            }
        } else {
            HandshakeRepr::Finish {
                initiator_index,
                responder_index,
                noise,
            }
        })
    }

    /// The Noise bytes (none in a cookie reply).
    pub fn noise(&self) -> &'a [u8] {
        match *self {
            HandshakeRepr::Init { noise, .. }
            | HandshakeRepr::Response { noise, .. }
            | HandshakeRepr::Finish { noise, .. } => noise,
            HandshakeRepr::CookieReply { .. } => &[],
        }
    }

    /// Length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        match self {
            HandshakeRepr::Init { noise, .. } => {
                field::INIT_NOISE.start + noise.len() + INIT_MACS_LEN
            }
            HandshakeRepr::CookieReply { .. } => COOKIE_REPLY_LEN,
            HandshakeRepr::Response { noise, .. } | HandshakeRepr::Finish { noise, .. } => {
                field::REPLY_NOISE.start + noise.len()
            }
        }
    }

    /// Appends the message to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.buffer_len());
        out.extend_from_slice(&[0, 0, 0, 0]);
        match *self {
            HandshakeRepr::Init {
                initiator_index,
                offered,
                noise,
                mac1,
                mac2,
            } => {
                out.extend_from_slice(&[KIND_INIT, VERSION]);
                out.extend_from_slice(&initiator_index.to_be_bytes());
                out.push(offered.bits());
                out.extend_from_slice(noise);
                out.extend_from_slice(&mac1);
                out.extend_from_slice(&mac2);
            }
            HandshakeRepr::CookieReply {
                initiator_index,
                nonce,
                cookie,
            } => {
                out.extend_from_slice(&[KIND_COOKIE, VERSION]);
                out.extend_from_slice(&initiator_index.to_be_bytes());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&cookie);
            }
            HandshakeRepr::Response {
                initiator_index,
                responder_index,
                noise,
            }
            | HandshakeRepr::Finish {
                initiator_index,
                responder_index,
                noise,
            } => {
                let kind = if matches!(self, HandshakeRepr::Response { .. }) {
                    KIND_RESPONSE
                } else {
                    KIND_FINISH
                };
                out.extend_from_slice(&[kind, VERSION]);
                out.extend_from_slice(&initiator_index.to_be_bytes());
                out.extend_from_slice(&responder_index.to_be_bytes());
                out.extend_from_slice(noise);
            }
        }
    }
}

/// The authentication payload that Noise messages 2 and 3 carry encrypted:
/// the sender's certificate and its signature over the handshake.
///
/// ```text
/// suite (u8) | sender index (u32) | cert len (u16) | cert DER | sig len (u16) | signature
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPayloadRepr<'a> {
    /// The suite the responder chose (the initiator echoes it).
    pub suite: Suite,
    /// The sender's own index, repeated under encryption so the cleartext
    /// one cannot be changed unnoticed.
    pub index: u32,
    /// The sender's certificate (DER).
    pub certificate: &'a [u8],
    /// The sender's signature (see [`crate::handshake`] for what it covers).
    pub signature: &'a [u8],
}

impl<'a> AuthPayloadRepr<'a> {
    /// Parses a payload.
    pub fn parse(bytes: &'a [u8]) -> Result<AuthPayloadRepr<'a>, WireError> {
        let suite = Suite::from_u8(*bytes.first().ok_or(WireError::Truncated)?)?;
        let index = check_index(read_u32(bytes, 1..5)?)?;
        let (certificate, rest) = read_vec16(bytes.get(5..).ok_or(WireError::Truncated)?)?;
        let (signature, rest) = read_vec16(rest)?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes);
        }
        if certificate.is_empty() || signature.is_empty() {
            return Err(WireError::Truncated);
        }
        if certificate.len() > MAX_CERT_LEN || signature.len() > MAX_SIGNATURE_LEN {
            return Err(WireError::Oversize);
        }
        Ok(AuthPayloadRepr {
            suite,
            index,
            certificate,
            signature,
        })
    }

    /// Length of the emitted payload.
    pub fn buffer_len(&self) -> usize {
        1 + 4 + 2 + self.certificate.len() + 2 + self.signature.len()
    }

    /// Appends the payload to `out`.
    ///
    /// # Panics
    /// If the certificate or signature is longer than 65,535 bytes (local
    /// identities are checked against [`MAX_CERT_LEN`] when loaded).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.buffer_len());
        out.push(self.suite as u8);
        out.extend_from_slice(&self.index.to_be_bytes());
        for field in [self.certificate, self.signature] {
            let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
            debug_assert_eq!(usize::from(len), field.len());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field);
        }
    }
}

fn read_vec16(bytes: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let len_raw: [u8; 2] = bytes
        .get(..2)
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::Truncated)?;
    let len = usize::from(u16::from_be_bytes(len_raw));
    let value = bytes.get(2..2 + len).ok_or(WireError::Truncated)?;
    Ok((value, &bytes[2 + len..]))
}

#[cfg(test)]
mod test {
    use super::*;

    static PACKET_BYTES: [u8; 30] = [
        0x00, 0x00, 0x12, 0x34, // SPI
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, // sequence number
        0xaa, 0xbb, // ciphertext
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e,
        0x1f, // tag
    ];

    #[test]
    fn deconstruct_packet() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.spi(), 0x1234);
        assert_eq!(packet.sequence_number(), (1 << 32) | 2);
        assert_eq!(packet.payload().len(), 18);
        assert_eq!(packet.header(), &PACKET_BYTES[..12]);
    }

    #[test]
    fn construct_packet() {
        let mut bytes = [0xa5u8; 30];
        let repr = PacketRepr {
            spi: 0x1234,
            sequence_number: (1 << 32) | 2,
            payload_len: 18,
        };
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(&PACKET_BYTES[12..]);
        assert_eq!(bytes, PACKET_BYTES);
        assert_eq!(repr.buffer_len(), 30);
    }

    #[test]
    fn packet_rejects_short_and_reserved() {
        assert_eq!(
            Packet::new_checked(&PACKET_BYTES[..27]).unwrap_err(),
            WireError::Truncated
        );
        let mut bytes = PACKET_BYTES;
        bytes[2] = 0;
        bytes[3] = 255;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            WireError::ReservedSpi(255)
        );
    }

    #[test]
    fn handshake_rejects_other_version_and_kind() {
        let mut out = Vec::new();
        HandshakeRepr::Init {
            initiator_index: 0x1000,
            offered: SuiteSet(3),
            noise: &[1; 32],
            mac1: [2; 16],
            mac2: [3; 16],
        }
        .emit(&mut out);
        assert!(is_handshake(&out));
        let mut old = out.clone();
        old[5] = 0;
        assert_eq!(
            HandshakeRepr::parse(&old),
            Err(WireError::UnsupportedVersion(0))
        );
        let mut unknown = out.clone();
        unknown[4] = 9;
        assert_eq!(
            HandshakeRepr::parse(&unknown),
            Err(WireError::UnknownKind(9))
        );
        let mut no_suite = out.clone();
        no_suite[10] = 0;
        assert_eq!(
            HandshakeRepr::parse(&no_suite),
            Err(WireError::NoSuiteOffered)
        );
        for len in 0..44 {
            assert_eq!(
                HandshakeRepr::parse(&out[..len]),
                Err(WireError::Truncated),
                "{len}"
            );
        }
    }

    #[test]
    fn cookie_reply_is_fixed_length() {
        let repr = HandshakeRepr::CookieReply {
            initiator_index: 0x1234_5678,
            nonce: [5; 24],
            cookie: [6; 32],
        };
        let mut out = Vec::new();
        repr.emit(&mut out);
        assert_eq!(out.len(), COOKIE_REPLY_LEN);
        assert_eq!(out.len(), 66);
        assert_eq!(HandshakeRepr::parse(&out), Ok(repr));
        for len in 0..out.len() {
            assert_eq!(HandshakeRepr::parse(&out[..len]), Err(WireError::Truncated));
        }
        out.push(0);
        assert_eq!(HandshakeRepr::parse(&out), Err(WireError::TrailingBytes));
    }

    #[test]
    fn auth_payload_rejects_trailing_and_truncated() {
        let repr = AuthPayloadRepr {
            suite: Suite::Aes256Gcm,
            index: 0x5555,
            certificate: &[1, 2, 3],
            signature: &[4; 64],
        };
        let mut out = Vec::new();
        repr.emit(&mut out);
        assert_eq!(AuthPayloadRepr::parse(&out), Ok(repr));
        let mut long = out.clone();
        long.push(0);
        assert_eq!(AuthPayloadRepr::parse(&long), Err(WireError::TrailingBytes));
        for len in 0..out.len() {
            assert!(AuthPayloadRepr::parse(&out[..len]).is_err(), "{len}");
        }
    }
}
