//! The established SAs of an [`Endpoint`](crate::Endpoint) carried to the
//! next process of a self-update, so that an update costs no new key
//! exchange: [`Endpoint::export_state`](crate::Endpoint::export_state)
//! writes them, [`Endpoint::import_state`](crate::Endpoint::import_state)
//! takes them back.
//!
//! The blob holds keys: the caller hands it over through an anonymous
//! descriptor (never a file, the environment or the command line) and
//! drops it once read. It is signed with the endpoint's own certificate key
//! and dated; the importing side refuses a blob that is truncated, signed
//! by another key, altered, older than [`MAX_STATE_AGE`], or names a peer
//! whose certificate no longer verifies, and then imports nothing: the
//! peers get fresh key exchanges.
//!
//! Outbound sequence numbers resume [`SEQUENCE_MARGIN`] above the exported
//! ones, so that a packet the old process sealed after the export cannot
//! share a nonce with one of the new process.
//!
//! Layout (big-endian): `magic[4] exported_at_ms:u64 peers:u16`, then per
//! peer `family:u8 ip[4|16] cert_len:u16 cert[cert_len] has_outbound:u8
//! [outbound] inbound:u8 inbound*`, then `sig_len:u16 sig[sig_len]` over
//! everything before it. An outbound SA is `spi:u32 suite:u8 key[32]
//! salt[4] seq:u64 used:u8 rekey_in_ms:u64 expires_in_ms:u64`; an inbound
//! one `spi:u32 suite:u8 key[32] salt[4] role:u8 expires_in_ms:u64
//! superseded:u8 top:u64 bitmap[32 x u64]`.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::handshake::Role;
use crate::replay::WORDS;
use crate::sa::SaKeys;
use crate::wire::Suite;

/// The first bytes of a state blob (format version 1).
pub const MAGIC: [u8; 4] = *b"WSA\x01";
/// A blob older than this is refused: its SAs may have moved on.
pub const MAX_STATE_AGE: Duration = Duration::from_secs(10);
/// How far outbound sequence numbers jump on import.
pub const SEQUENCE_MARGIN: u64 = 1 << 16;
/// Peers in one blob at most.
pub const MAX_PEERS: usize = 4096;
/// Inbound SAs per peer at most (current and draining).
pub const MAX_INBOUND_PER_PEER: usize = 8;

/// Why a state blob was refused (nothing of it imported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The bytes end before a field.
    #[error("state truncated")]
    Truncated,
    /// Not a state blob of this version.
    #[error("not a state blob of this version")]
    BadMagic,
    /// Bytes after the signature.
    #[error("trailing bytes after the state")]
    TrailingBytes,
    /// A field holds a value the format does not allow.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    /// More peers or SAs than the format allows.
    #[error("too many entries")]
    TooMany,
    /// The signature does not verify with this endpoint's key.
    #[error("state not signed by this endpoint's key")]
    BadSignature,
    /// Exported longer ago than [`MAX_STATE_AGE`], or in the future.
    #[error("state exported {0} ms away from now")]
    Stale(i64),
    /// A peer's certificate does not verify now.
    #[error("peer {0}: certificate refused")]
    PeerRefused(IpAddr),
    /// An SPI appears twice, or is already in use here.
    #[error("SPI {0} already in use")]
    DuplicateSpi(u32),
}

/// One outbound SA.
#[derive(Debug, Clone)]
pub struct OutboundState {
    /// The peer's SPI.
    pub spi: u32,
    /// The AEAD suite.
    pub suite: Suite,
    /// Key and salt.
    pub keys: SaKeys,
    /// Last sequence number used.
    pub sequence_number: u64,
    /// Whether it carried data.
    pub used: bool,
    /// Time left until its rekey.
    pub rekey_in: Duration,
    /// Time left until it expires.
    pub expires_in: Duration,
}

/// One inbound SA.
#[derive(Debug, Clone)]
pub struct InboundState {
    /// Our SPI.
    pub spi: u32,
    /// The AEAD suite.
    pub suite: Suite,
    /// Key and salt.
    pub keys: SaKeys,
    /// Which side initiated the exchange that made it.
    pub role: Role,
    /// Time left until it expires.
    pub expires_in: Duration,
    /// Whether a newer SA replaced it (it drains).
    pub superseded: bool,
    /// Highest sequence number accepted.
    pub top: u64,
    /// The replay bitmap (see [`crate::replay`]).
    pub bitmap: [u64; WORDS],
}

/// One peer's SAs and the certificate it authenticated with.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// The peer's virtual IP.
    pub ip: IpAddr,
    /// Its DER certificate.
    pub certificate: Vec<u8>,
    /// The SA we send with.
    pub outbound: Option<OutboundState>,
    /// The SAs we receive with.
    pub inbound: Vec<InboundState>,
}

/// A parsed state blob (signature checked separately: [`State::parse`]
/// returns the signed bytes and the signature beside it).
#[derive(Debug, Clone)]
pub struct State {
    /// Wall-clock time of the export, in milliseconds since the Unix epoch.
    pub exported_at_ms: u64,
    /// The peers.
    pub peers: Vec<PeerState>,
}

/// A reader that checks every length (never panics).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ResumeError> {
        if self.0.len() < n {
            return Err(ResumeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ResumeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ResumeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ResumeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ResumeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ResumeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, ResumeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ResumeError::Invalid("flag")),
        }
    }

    fn suite(&mut self) -> Result<Suite, ResumeError> {
        Suite::from_u8(self.u8()?).map_err(|_| ResumeError::Invalid("suite"))
    }

    fn keys(&mut self) -> Result<SaKeys, ResumeError> {
        Ok(SaKeys {
            key: self.array()?,
            salt: self.array()?,
        })
    }

    fn spi(&mut self) -> Result<u32, ResumeError> {
        let spi = self.u32()?;
        // RFC 4303 §2.1: 1..=255 reserved, 0 never on the wire.
        if spi < 256 {
            return Err(ResumeError::Invalid("spi"));
        }
        Ok(spi)
    }

    fn millis(&mut self) -> Result<Duration, ResumeError> {
        Ok(Duration::from_millis(self.u64()?))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl State {
    /// Parses a blob into the state, the signed bytes and the signature.
    /// Checks the layout only; the signature, age and certificates are
    /// checked by [`Endpoint::import_state`](crate::Endpoint::import_state).
    pub fn parse(bytes: &[u8]) -> Result<(State, &[u8], &[u8]), ResumeError> {
        let mut r = Reader(bytes);
        if r.array::<4>()? != MAGIC {
            return Err(ResumeError::BadMagic);
        }
        let exported_at_ms = r.u64()?;
        let count = usize::from(r.u16()?);
        if count > MAX_PEERS {
            return Err(ResumeError::TooMany);
        }
        let mut peers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            peers.push(parse_peer(&mut r)?);
        }
        let signed_len = bytes.len() - r.0.len();
        let signed = bytes.get(..signed_len).ok_or(ResumeError::Truncated)?;
        let sig_len = usize::from(r.u16()?);
        let signature = r.take(sig_len)?;
        if !r.0.is_empty() {
            return Err(ResumeError::TrailingBytes);
        }
        Ok((
            State {
                exported_at_ms,
                peers,
            },
            signed,
            signature,
        ))
    }

    /// The bytes [`State::parse`] reads, without the signature trailer.
    pub fn emit_unsigned(&self) -> Result<Vec<u8>, ResumeError> {
        if self.peers.len() > MAX_PEERS {
            return Err(ResumeError::TooMany);
        }
        let mut out = Vec::with_capacity(16 + self.peers.len() * 512);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.exported_at_ms.to_be_bytes());
        out.extend_from_slice(&(self.peers.len() as u16).to_be_bytes());
        for peer in &self.peers {
            emit_peer(peer, &mut out)?;
        }
        Ok(out)
    }

    /// The whole blob: [`State::emit_unsigned`] and the trailer holding
    /// `signature` over it (`sign` gets the unsigned bytes).
    pub fn emit(
        &self,
        sign: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ResumeError> {
        let mut out = self.emit_unsigned()?;
        let signature = sign(&out).ok_or(ResumeError::BadSignature)?;
        let len = u16::try_from(signature.len()).map_err(|_| ResumeError::TooMany)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&signature);
        Ok(out)
    }
}

fn parse_peer(r: &mut Reader<'_>) -> Result<PeerState, ResumeError> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        _ => return Err(ResumeError::Invalid("address family")),
    };
    let cert_len = usize::from(r.u16()?);
    let certificate = r.take(cert_len)?.to_vec();
    let outbound = if r.flag()? {
        Some(OutboundState {
            spi: r.spi()?,
            suite: r.suite()?,
            keys: r.keys()?,
            sequence_number: r.u64()?,
            used: r.flag()?,
            rekey_in: r.millis()?,
            expires_in: r.millis()?,
        })
    } else {
        None
    };
    let count = usize::from(r.u8()?);
    if count > MAX_INBOUND_PER_PEER {
        return Err(ResumeError::TooMany);
    }
    let mut inbound = Vec::with_capacity(count);
    for _ in 0..count {
        let spi = r.spi()?;
        let suite = r.suite()?;
        let keys = r.keys()?;
        let role = match r.u8()? {
            0 => Role::Initiator,
            1 => Role::Responder,
            _ => return Err(ResumeError::Invalid("role")),
        };
        let expires_in = r.millis()?;
        let superseded = r.flag()?;
        let top = r.u64()?;
        let mut bitmap = [0u64; WORDS];
        for word in &mut bitmap {
            *word = r.u64()?;
        }
        inbound.push(InboundState {
            spi,
            suite,
            keys,
            role,
            expires_in,
            superseded,
            top,
            bitmap,
        });
    }
    Ok(PeerState {
        ip,
        certificate,
        outbound,
        inbound,
    })
}

fn emit_peer(peer: &PeerState, out: &mut Vec<u8>) -> Result<(), ResumeError> {
    match peer.ip {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    let cert_len = u16::try_from(peer.certificate.len()).map_err(|_| ResumeError::TooMany)?;
    out.extend_from_slice(&cert_len.to_be_bytes());
    out.extend_from_slice(&peer.certificate);
    match &peer.outbound {
        Some(o) => {
            if o.spi < 256 {
                return Err(ResumeError::Invalid("spi"));
            }
            out.push(1);
            out.extend_from_slice(&o.spi.to_be_bytes());
            out.push(o.suite as u8);
            out.extend_from_slice(&o.keys.key);
            out.extend_from_slice(&o.keys.salt);
            out.extend_from_slice(&o.sequence_number.to_be_bytes());
            out.push(u8::from(o.used));
            out.extend_from_slice(&millis(o.rekey_in).to_be_bytes());
            out.extend_from_slice(&millis(o.expires_in).to_be_bytes());
        }
        None => out.push(0),
    }
    if peer.inbound.len() > MAX_INBOUND_PER_PEER {
        return Err(ResumeError::TooMany);
    }
    out.push(peer.inbound.len() as u8);
    for i in &peer.inbound {
        if i.spi < 256 {
            return Err(ResumeError::Invalid("spi"));
        }
        out.extend_from_slice(&i.spi.to_be_bytes());
        out.push(i.suite as u8);
        out.extend_from_slice(&i.keys.key);
        out.extend_from_slice(&i.keys.salt);
        out.push(match i.role {
            Role::Initiator => 0,
            Role::Responder => 1,
        });
        out.extend_from_slice(&millis(i.expires_in).to_be_bytes());
        out.push(u8::from(i.superseded));
        out.extend_from_slice(&i.top.to_be_bytes());
        for word in &i.bitmap {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }
    Ok(())
}
