//! Our signalling format: registration with a rendezvous, candidate offers
//! (carried by the rendezvous or the overlay), relayed payloads and
//! authenticated data frames.
//!
//! ```text
//!  0        1        2                 4
//! +--------+--------+-----------------+------------------
//! |version | kind   | body length     | body ...
//! +--------+--------+-----------------+------------------
//! ```
//!
//! Strings are a one-byte length and UTF-8 bytes; payloads a two-byte
//! length and bytes; addresses a family byte (4 or 6), a port and the IP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::WireError;
use wow_bytes::Reader;

/// First byte of every signalling message; never a STUN first byte (RFC 7983 §7).
pub const VERSION: u8 = 0xe7;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 4;
/// Length of a data frame's authentication tag.
pub const TAG_LEN: usize = 16;
/// Most candidates one offer may carry.
pub const MAX_CANDIDATES: usize = 32;

mod field {
    use core::ops::Range;
    pub const VERSION: usize = 0;
    pub const KIND: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
}

mod kind {
    pub const REGISTER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const RELAY: u8 = 3;
    pub const DATA: u8 = 4;
    pub const UNKNOWN_PEER: u8 = 5;
    pub const ENDPOINTS: u8 = 6;
}

/// A view of a signalling message in a buffer.
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
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Check the version byte and that the body fits the buffer.
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if data[field::VERSION] != VERSION {
            return Err(WireError::Malformed);
        }
        if data.len() < HEADER_LEN + usize::from(self.length()) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The kind byte.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }

    /// Length of the body.
    pub fn length(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([d[0], d[1]])
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.length())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Write the version byte, kind and body length.
    pub fn set_header(&mut self, kind: u8, length: u16) {
        let d = self.buffer.as_mut();
        d[field::VERSION] = VERSION;
        d[field::KIND] = kind;
        d[field::LENGTH].copy_from_slice(&length.to_be_bytes());
    }

    /// The body bytes, mutable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.length());
        &mut self.buffer.as_mut()[HEADER_LEN..HEADER_LEN + len]
    }
}

/// How a candidate endpoint was learned (RFC 8445 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    /// An address of a local interface.
    Host,
    /// Learned from an authenticated probe's source (RFC 8445 §7.2.5.3.1).
    PeerReflexive,
    /// Learned from a STUN observer.
    ServerReflexive,
    /// An address on a relay.
    Relayed,
}

impl CandidateKind {
    /// Type preference (RFC 8445 §5.1.2.2 recommended values).
    pub fn type_preference(self) -> u32 {
        match self {
            CandidateKind::Host => 126,
            CandidateKind::PeerReflexive => 110,
            CandidateKind::ServerReflexive => 100,
            CandidateKind::Relayed => 0,
        }
    }

    fn code(self) -> u8 {
        match self {
            CandidateKind::Host => 0,
            CandidateKind::PeerReflexive => 1,
            CandidateKind::ServerReflexive => 2,
            CandidateKind::Relayed => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => CandidateKind::Host,
            1 => CandidateKind::PeerReflexive,
            2 => CandidateKind::ServerReflexive,
            3 => CandidateKind::Relayed,
            _ => return None,
        })
    }
}

/// A candidate endpoint with its priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// How it was learned.
    pub kind: CandidateKind,
    /// The endpoint.
    pub address: SocketAddr,
    /// Priority (RFC 8445 §5.1.2.1); higher is tried first.
    pub priority: u32,
}

impl Candidate {
    /// A candidate with the RFC 8445 §5.1.2.1 priority for one component:
    /// `2^24 * type preference + 2^8 * local_preference + 255`.
    pub fn new(kind: CandidateKind, address: SocketAddr, local_preference: u16) -> Candidate {
        Candidate {
            kind,
            address,
            priority: (kind.type_preference() << 24) | (u32::from(local_preference) << 8) | 255,
        }
    }
}

/// Everything a peer needs to punch towards us: who we are, the
/// short-term credentials for our probes and our candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Sender's name.
    pub from: String,
    /// Receiver's name.
    pub to: String,
    /// Sender's username fragment (RFC 8445 §5.3).
    pub ufrag: String,
    /// Sender's password: the key of probes sent *to* the sender.
    pub password: Vec<u8>,
    /// Sender's candidates.
    pub candidates: Vec<Candidate>,
}

impl Offer {
    /// An offer with fresh credentials from the operating system's random
    /// source: a 64-bit username fragment (16 hex digits) and a 256-bit
    /// password. Offers travel through the overlay in clear, so these must
    /// not be guessable from anything else the sender has sent.
    ///
    /// # Panics
    /// If the operating system's random source fails.
    pub fn with_fresh_credentials(from: String, to: String, candidates: Vec<Candidate>) -> Offer {
        let mut bytes = [0u8; 40];
        if let Err(e) = getrandom::fill(&mut bytes) {
            panic!("the operating system's random source failed: {e}");
        }
        Offer::with_credentials_from(&bytes, from, to, candidates)
    }

    /// An offer whose username fragment and password are made of `bytes`
    /// (8 and 32 of them).
    pub(crate) fn with_credentials_from(
        bytes: &[u8; 40],
        from: String,
        to: String,
        candidates: Vec<Candidate>,
    ) -> Offer {
        let (ufrag, password) = bytes.split_at(8);
        Offer {
            from,
            to,
            ufrag: ufrag.iter().map(|b| format!("{b:02x}")).collect(),
            password: password.to_vec(),
            candidates,
        }
    }
}

/// A signalling message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Repr {
    /// Client → rendezvous: "I am `name`, reachable where this came from."
    Register {
        /// The client's name.
        name: String,
    },
    /// Candidates for a punch, forwarded by the rendezvous to `to`.
    Offer(Offer),
    /// A payload relayed by the rendezvous. From a client, `peer` is the
    /// destination; from the rendezvous, it is the source.
    Relay {
        /// The other end's name.
        peer: String,
        /// The relayed bytes (usually a [`Repr::Data`] frame).
        payload: Vec<u8>,
    },
    /// An authenticated data frame between peers (direct or relayed).
    Data {
        /// Sequence number, unique per sender and session.
        sequence: u64,
        /// Application bytes.
        payload: Vec<u8>,
        /// HMAC-SHA256 over sequence and payload, truncated.
        tag: [u8; TAG_LEN],
    },
    /// Rendezvous → client: the named peer is not registered.
    UnknownPeer {
        /// The name that was asked for.
        peer: String,
    },
    /// A punch request, forwarded by the rendezvous to `to`: "open your
    /// NAT toward these endpoints of mine and link to them" (the wire form
    /// of [`Signal::Endpoints`](crate::agent::Signal::Endpoints)).
    Endpoints {
        /// The sender's name.
        from: String,
        /// The receiver's name.
        to: String,
        /// The sender's endpoints, at most [`MAX_CANDIDATES`].
        endpoints: Vec<SocketAddr>,
    },
}

/// This format's fields, on the workspace's bounds-checked reader.
trait Fields {
    fn string(&mut self) -> Result<String, WireError>;
    fn short_bytes(&mut self) -> Result<Vec<u8>, WireError>;
    fn long_bytes(&mut self) -> Result<Vec<u8>, WireError>;
    fn address(&mut self) -> Result<SocketAddr, WireError>;
    fn finish(&self) -> Result<(), WireError>;
}

impl Fields for Reader<'_> {
    fn string(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u8()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| WireError::Malformed)
    }

    fn short_bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = usize::from(self.u8()?);
        Ok(self.take(n)?.to_vec())
    }

    fn long_bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = usize::from(self.u16()?);
        Ok(self.take(n)?.to_vec())
    }

    fn address(&mut self) -> Result<SocketAddr, WireError> {
        let family = self.u8()?;
        let port = self.u16()?;
        let ip = match family {
            4 => {
                let mut b = [0; 4];
                b.copy_from_slice(self.take(4)?);
                IpAddr::V4(Ipv4Addr::from(b))
            }
            6 => {
                let mut b = [0; 16];
                b.copy_from_slice(self.take(16)?);
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return Err(WireError::Malformed),
        };
        Ok(SocketAddr::new(ip, port))
    }

    fn finish(&self) -> Result<(), WireError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed)
        }
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    fn string(&mut self, s: &[u8]) {
        // Lengths are bounded by `Repr::validate`.
        self.put(&[u8::try_from(s.len()).unwrap_or(u8::MAX)]);
        self.put(s);
    }

    fn long_bytes(&mut self, b: &[u8]) {
        self.put(&u16::try_from(b.len()).unwrap_or(u16::MAX).to_be_bytes());
        self.put(b);
    }

    fn address(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.put(&[4]);
                self.put(&a.port().to_be_bytes());
                self.put(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.put(&[6]);
                self.put(&a.port().to_be_bytes());
                self.put(&ip.octets());
            }
        }
    }
}

fn address_len(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 7,
        SocketAddr::V6(_) => 19,
    }
}

impl Repr {
    /// Parse a checked packet. Trailing bytes in the body are an error.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        packet.check_len()?;
        let mut r = Reader::new(packet.body());
        let repr = match packet.kind() {
            kind::REGISTER => Repr::Register { name: r.string()? },
            kind::OFFER => {
                let from = r.string()?;
                let to = r.string()?;
                let ufrag = r.string()?;
                let password = r.short_bytes()?;
                let count = usize::from(r.u8()?);
                if count > MAX_CANDIDATES {
                    return Err(WireError::Malformed);
                }
                let mut candidates = Vec::with_capacity(count);
                for _ in 0..count {
                    let kind = CandidateKind::from_code(r.u8()?).ok_or(WireError::Malformed)?;
                    let priority = r.u32()?;
                    let address = r.address()?;
                    candidates.push(Candidate {
                        kind,
                        address,
                        priority,
                    });
                }
                Repr::Offer(Offer {
                    from,
                    to,
                    ufrag,
                    password,
                    candidates,
                })
            }
            kind::RELAY => Repr::Relay {
                peer: r.string()?,
                payload: r.long_bytes()?,
            },
            kind::DATA => {
                let sequence = r.u64()?;
                let payload = r.long_bytes()?;
                let mut tag = [0; TAG_LEN];
                tag.copy_from_slice(r.take(TAG_LEN)?);
                Repr::Data {
                    sequence,
                    payload,
                    tag,
                }
            }
            kind::UNKNOWN_PEER => Repr::UnknownPeer { peer: r.string()? },
            kind::ENDPOINTS => {
                let from = r.string()?;
                let to = r.string()?;
                let count = usize::from(r.u8()?);
                if count > MAX_CANDIDATES {
                    return Err(WireError::Malformed);
                }
                let endpoints = (0..count)
                    .map(|_| r.address())
                    .collect::<Result<Vec<_>, _>>()?;
                Repr::Endpoints {
                    from,
                    to,
                    endpoints,
                }
            }
            other => return Err(WireError::UnknownKind { kind: other }),
        };
        r.finish()?;
        Ok(repr)
    }

    /// Parse bytes from the network.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Repr, WireError> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    fn kind(&self) -> u8 {
        match self {
            Repr::Register { .. } => kind::REGISTER,
            Repr::Offer(_) => kind::OFFER,
            Repr::Relay { .. } => kind::RELAY,
            Repr::Data { .. } => kind::DATA,
            Repr::UnknownPeer { .. } => kind::UNKNOWN_PEER,
            Repr::Endpoints { .. } => kind::ENDPOINTS,
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Repr::Register { name } | Repr::UnknownPeer { peer: name } => 1 + name.len(),
            Repr::Offer(o) => {
                4 + o.from.len()
                    + o.to.len()
                    + o.ufrag.len()
                    + o.password.len()
                    + 1
                    + o.candidates
                        .iter()
                        .map(|c| 5 + address_len(&c.address))
                        .sum::<usize>()
            }
            Repr::Relay { peer, payload } => 1 + peer.len() + 2 + payload.len(),
            Repr::Data { payload, .. } => 8 + 2 + payload.len() + TAG_LEN,
            Repr::Endpoints {
                from,
                to,
                endpoints,
            } => 3 + from.len() + to.len() + endpoints.iter().map(address_len).sum::<usize>(),
        }
    }

    /// Length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    fn validate(&self) -> Result<(), WireError> {
        let short = |s: usize| {
            if s > 255 {
                Err(WireError::TooLong)
            } else {
                Ok(())
            }
        };
        let long = |s: usize| {
            if s > usize::from(u16::MAX) {
                Err(WireError::TooLong)
            } else {
                Ok(())
            }
        };
        match self {
            Repr::Register { name } | Repr::UnknownPeer { peer: name } => short(name.len())?,
            Repr::Offer(o) => {
                short(o.from.len())?;
                short(o.to.len())?;
                short(o.ufrag.len())?;
                short(o.password.len())?;
                if o.candidates.len() > MAX_CANDIDATES {
                    return Err(WireError::TooLong);
                }
            }
            Repr::Relay { peer, payload } => {
                short(peer.len())?;
                long(payload.len())?;
            }
            Repr::Data { payload, .. } => long(payload.len())?,
            Repr::Endpoints {
                from,
                to,
                endpoints,
            } => {
                short(from.len())?;
                short(to.len())?;
                if endpoints.len() > MAX_CANDIDATES {
                    return Err(WireError::TooLong);
                }
            }
        }
        long(self.body_len())
    }

    /// Emit into `packet`, whose buffer must hold [`Repr::buffer_len`] bytes.
    /// Returns the emitted length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
    ) -> Result<usize, WireError> {
        self.validate()?;
        let total = self.buffer_len();
        if packet.buffer.as_ref().len() < total {
            return Err(WireError::BufferTooSmall);
        }
        let body = u16::try_from(self.body_len()).map_err(|_| WireError::TooLong)?;
        packet.set_header(self.kind(), body);
        let mut w = Writer {
            buf: packet.body_mut(),
            at: 0,
        };
        match self {
            Repr::Register { name } | Repr::UnknownPeer { peer: name } => {
                w.string(name.as_bytes());
            }
            Repr::Offer(o) => {
                w.string(o.from.as_bytes());
                w.string(o.to.as_bytes());
                w.string(o.ufrag.as_bytes());
                w.string(&o.password);
                w.put(&[u8::try_from(o.candidates.len()).unwrap_or(0)]);
                for c in &o.candidates {
                    w.put(&[c.kind.code()]);
                    w.put(&c.priority.to_be_bytes());
                    w.address(&c.address);
                }
            }
            Repr::Relay { peer, payload } => {
                w.string(peer.as_bytes());
                w.long_bytes(payload);
            }
            Repr::Data {
                sequence,
                payload,
                tag,
            } => {
                w.put(&sequence.to_be_bytes());
                w.long_bytes(payload);
                w.put(tag);
            }
            Repr::Endpoints {
                from,
                to,
                endpoints,
            } => {
                w.string(from.as_bytes());
                w.string(to.as_bytes());
                w.put(&[u8::try_from(endpoints.len()).unwrap_or(0)]);
                for e in endpoints {
                    w.address(e);
                }
            }
        }
        debug_assert_eq!(w.at, usize::from(body));
        Ok(total)
    }

    /// Emit into a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]))?;
        Ok(buf)
    }
}

/// Whether `bytes` start like a signalling message.
pub fn is_signal(bytes: &[u8]) -> bool {
    bytes.first() == Some(&VERSION)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn register_bytes() {
        let repr = Repr::Register { name: "ab".into() };
        let mut buf = [0xa5u8; 7];
        let n = repr.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(n, 7);
        assert_eq!(buf, [VERSION, 1, 0, 3, 2, b'a', b'b']);
        assert_eq!(Repr::parse_bytes(&buf).unwrap(), repr);
    }

    #[test]
    fn endpoints_round_trip_and_bounds() {
        let repr = Repr::Endpoints {
            from: "a".into(),
            to: "b".into(),
            endpoints: vec![
                "192.0.2.1:4000".parse().unwrap(),
                "[::1]:7".parse().unwrap(),
            ],
        };
        let bytes = repr.to_bytes().unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 3 + 2 + 7 + 19);
        assert_eq!(Repr::parse_bytes(&bytes).unwrap(), repr);
        for n in 0..bytes.len() {
            assert!(Repr::parse_bytes(&bytes[..n]).is_err());
        }
        let too_many = Repr::Endpoints {
            from: "a".into(),
            to: "b".into(),
            endpoints: vec!["192.0.2.1:1".parse().unwrap(); MAX_CANDIDATES + 1],
        };
        assert_eq!(too_many.to_bytes(), Err(WireError::TooLong));
    }

    #[test]
    fn offer_round_trip_and_truncation() {
        let repr = Repr::Offer(Offer {
            from: "a".into(),
            to: "b".into(),
            ufrag: "uf".into(),
            password: vec![1, 2, 3],
            candidates: vec![
                Candidate::new(CandidateKind::Host, "10.0.0.1:5".parse().unwrap(), 65535),
                Candidate::new(
                    CandidateKind::ServerReflexive,
                    "[::1]:7".parse().unwrap(),
                    1,
                ),
            ],
        });
        let bytes = repr.to_bytes().unwrap();
        assert_eq!(Repr::parse_bytes(&bytes).unwrap(), repr);
        for cut in 0..bytes.len() {
            assert!(Repr::parse_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A body longer than its content is rejected, not silently accepted.
        let mut longer = bytes.clone();
        longer.push(0);
        longer[3] += 1;
        assert_eq!(Repr::parse_bytes(&longer), Err(WireError::Malformed));
    }

    #[test]
    fn rejects_bad_version_kind_and_long_fields() {
        assert_eq!(Repr::parse_bytes(&[1, 1, 0, 0]), Err(WireError::Malformed));
        assert_eq!(
            Repr::parse_bytes(&[VERSION, 99, 0, 0]),
            Err(WireError::UnknownKind { kind: 99 })
        );
        let long = Repr::Register {
            name: "x".repeat(256),
        };
        assert_eq!(long.to_bytes(), Err(WireError::TooLong));
    }

    #[test]
    fn candidate_priority_follows_rfc8445() {
        let c = Candidate::new(CandidateKind::Host, "1.2.3.4:5".parse().unwrap(), 65535);
        assert_eq!(c.priority, (126 << 24) | (65535 << 8) | 255);
        let s = Candidate::new(CandidateKind::ServerReflexive, c.address, 65535);
        let r = Candidate::new(CandidateKind::Relayed, c.address, 65535);
        assert!(c.priority > s.priority && s.priority > r.priority);
    }
}
