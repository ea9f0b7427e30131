//! The node's data header, carried in overlay `Data` payloads.
//!
//! ```text
//!  0        1                 5                 9
//! +--------+-----------------+-----------------+------------------+
//! |  kind  | source virt. IP | dest. virt. IP  | body ...         |
//! +--------+-----------------+-----------------+------------------+
//! ```
//!
//! `kind` 1 is a plaintext IPv4 packet (a public host, or no security),
//! `kind` 2 an ipsec-sa datagram (handshake message or sealed packet),
//! `kind` 3 a punch request: the body lists the sender's underlay endpoints
//! (IPv4 address and port, 6 bytes each) for the receiver to send an empty
//! datagram to, opening its NAT for the sender's link requests,
//! `kind` 4 an ipsec-ca enrolment message (a CSR for the CA, or its answer),
//! `kind` 5 a punch offer: nat-traversal's signalling `Offer` (credentials
//! and candidates) for an authenticated punch session,
//! `kind` 6 a CRL request or answer between a node and the CA node,
//! `kind` 7 a ring-walk request or answer ([`crate::walk`]).
//! The source address is what ipsec-sa authenticates the peer as; the
//! destination lets a node drop traffic not meant for its guest.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use wow_core::wire::{Kind, Packet, Repr};
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

use std::net::Ipv4Addr;

/// Header length.
pub const HEADER_LEN: usize = 9;

mod field {
    pub const KIND: usize = 0;
    pub const SOURCE: core::ops::Range<usize> = 1..5;
    pub const DESTINATION: core::ops::Range<usize> = 5..9;
}

/// What the body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A plaintext IPv4 packet.
    Plain,
    /// An ipsec-sa datagram.
    Sa,
    /// A punch request.
    Punch,
    /// An enrolment message.
    Enrol,
    /// A punch offer (nat-traversal's signalling `Offer`).
    Offer,
    /// A CRL request or answer (see [`crate::crl_dht::Message`]).
    Crl,
    /// A ring-walk request or answer (see [`crate::walk::Message`]).
    Walk,
    /// A central-allocation claim or answer (see [`crate::alloc::Message`]).
    Alloc,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Plain => 1,
            Kind::Sa => 2,
            Kind::Punch => 3,
            Kind::Enrol => 4,
            Kind::Offer => 5,
            Kind::Crl => 6,
            Kind::Walk => 7,
            Kind::Alloc => 8,
        }
    }
    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Plain),
            2 => Some(Kind::Sa),
            3 => Some(Kind::Punch),
            4 => Some(Kind::Enrol),
            5 => Some(Kind::Offer),
            6 => Some(Kind::Crl),
            7 => Some(Kind::Walk),
            8 => Some(Kind::Alloc),
            _ => None,
        }
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than the header.
    #[error("payload of {0} bytes is shorter than the header")]
    Truncated(usize),
    /// Unknown kind.
    #[error("unknown payload kind {0}")]
    UnknownKind(u8),
}

/// A zero-copy view of a payload.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps without checking.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the header fits.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated(len));
        }
        Ok(())
    }

    /// The raw kind byte.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }

    /// Source virtual IP.
    pub fn source(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::SOURCE])
    }

    /// Destination virtual IP.
    pub fn destination(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// The body after the header.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

fn ip(b: &[u8]) -> Ipv4Addr {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    Ipv4Addr::from(a)
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Body kind.
    pub kind: Kind,
    /// Source virtual IP.
    pub source: Ipv4Addr,
    /// Destination virtual IP.
    pub destination: Ipv4Addr,
}

impl Repr {
    /// Parses the header of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        let kind = Kind::from_code(packet.kind()).ok_or(Error::UnknownKind(packet.kind()))?;
        Ok(Repr {
            kind,
            source: packet.source(),
            destination: packet.destination(),
        })
    }

    /// Header length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Appends header and `body` to `out` (cleared first).
    pub fn emit_with_body(&self, body: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.buffer_len() + body.len());
        out.push(self.kind.code());
        out.extend_from_slice(&self.source.octets());
        out.extend_from_slice(&self.destination.octets());
        out.extend_from_slice(body);
    }
}

/// Most endpoints a punch request carries.
pub const MAX_PUNCH_ENDPOINTS: usize = 8;

/// Appends `endpoints` (IPv4 only, at most [`MAX_PUNCH_ENDPOINTS`]) as a
/// punch body.
pub fn emit_endpoints(endpoints: &[std::net::SocketAddr], out: &mut Vec<u8>) {
    for e in endpoints.iter().take(MAX_PUNCH_ENDPOINTS) {
        if let std::net::SocketAddr::V4(v4) = e {
            out.extend_from_slice(&v4.ip().octets());
            out.extend_from_slice(&v4.port().to_be_bytes());
        }
    }
}

/// Reads a punch body; trailing bytes that do not form an endpoint are
/// ignored.
pub fn parse_endpoints(body: &[u8]) -> Vec<std::net::SocketAddr> {
    body.chunks_exact(6)
        .take(MAX_PUNCH_ENDPOINTS)
        .map(|c| {
            let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
            std::net::SocketAddr::from((ip, u16::from_be_bytes([c[4], c[5]])))
        })
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip() {
        let repr = Repr {
            kind: Kind::Sa,
            source: Ipv4Addr::new(10, 128, 0, 2),
            destination: Ipv4Addr::new(10, 128, 0, 3),
        };
        let mut out = vec![0xa5; 3];
        repr.emit_with_body(b"xyz", &mut out);
        assert_eq!(out.len(), HEADER_LEN + 3);
        let p = Packet::new_checked(&out[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), repr);
        assert_eq!(p.body(), b"xyz");
    }

    #[test]
    fn punch_endpoints_round_trip() {
        let eps: Vec<std::net::SocketAddr> = vec![
            "198.51.1.2:4000".parse().unwrap(),
            "10.0.0.1:1".parse().unwrap(),
        ];
        let mut body = Vec::new();
        emit_endpoints(&eps, &mut body);
        body.push(7); // a partial endpoint is ignored
        assert_eq!(parse_endpoints(&body), eps);
        let many = vec![eps[0]; 20];
        body.clear();
        emit_endpoints(&many, &mut body);
        assert_eq!(parse_endpoints(&body).len(), MAX_PUNCH_ENDPOINTS);
    }

    proptest::proptest! {
        #[test]
        fn parse_emit_round_trip(
            kind in proptest::prop_oneof![
                proptest::strategy::Just(Kind::Plain),
                proptest::strategy::Just(Kind::Sa),
                proptest::strategy::Just(Kind::Punch),
                proptest::strategy::Just(Kind::Enrol),
                proptest::strategy::Just(Kind::Offer),
            ],
            source: u32,
            destination: u32,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let repr = Repr { kind, source: source.into(), destination: destination.into() };
            let mut out = Vec::new();
            repr.emit_with_body(&body, &mut out);
            let p = Packet::new_checked(&out[..]).unwrap();
            proptest::prop_assert_eq!(Repr::parse(&p).unwrap(), repr);
            proptest::prop_assert_eq!(p.body(), &body[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..32)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = Repr::parse(&p);
                let _ = parse_endpoints(p.body());
            }
        }
    }

    #[test]
    fn refuses_short_and_unknown() {
        assert_eq!(
            Packet::new_checked(&[1u8, 2, 3][..]).unwrap_err(),
            Error::Truncated(3)
        );
        let p = Packet::new_checked(&[9u8, 0, 0, 0, 0, 0, 0, 0, 0][..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::UnknownKind(9)));
    }
}
