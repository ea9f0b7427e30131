//! 160-bit ring addresses and ring arithmetic.
//!
//! The ring is the integers modulo 2^160, as in Brunet and Chord. An
//! [`Address`] is derived from a node's public key ([`Address::from_spki`],
//! the first 160 bits of the SHA-256 of its SubjectPublicKeyInfo, lowest
//! bit cleared: the certificate's overlay address) or drawn at random
//! ([`Address::random`]). DHT keys map onto the ring with
//! [`Address::from_key`].
//!
//! Distances are 160-bit unsigned values ([`Distance`]): `a.right_distance_to(b)`
//! is how far `b` lies clockwise (increasing addresses) from `a`,
//! `a.left_distance_to(b)` counter-clockwise, and `a.distance_to(b)` the
//! shorter of the two.
//!
//! The text form is 40 lower-case hex digits (`Display` / `FromStr`).

use core::fmt;
use core::str::FromStr;

use rand_chacha::rand_core::Rng;
use sha2::{Digest, Sha256};

use crate::error::AddressParseError;

/// Length of an address on the wire, in bytes.
pub const ADDRESS_LEN: usize = 20;

/// A 160-bit position on the ring.
///
/// Stored as the top 128 bits and the low 32 bits so that ring arithmetic is
/// two machine operations.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address {
    hi: u128,
    lo: u32,
}

/// A clockwise or counter-clockwise distance on the ring (a 160-bit unsigned
/// value; ordered numerically).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Distance {
    hi: u128,
    lo: u32,
}

impl Distance {
    /// The zero distance.
    pub const ZERO: Distance = Distance { hi: 0, lo: 0 };
    /// Half the ring (2^159), the largest value [`Address::distance_to`] returns.
    pub const HALF: Distance = Distance {
        hi: 1 << 127,
        lo: 0,
    };

    /// The distance as a fraction of the whole ring, in `[0, 1)`.
    pub fn fraction(self) -> f64 {
        // 2^-128 scaling of the top 128 bits is precise enough for f64.
        self.hi as f64 / 2f64.powi(128)
    }

    /// The distance covering `fraction` of the ring (clamped to `[0, 1)`).
    pub fn from_fraction(fraction: f64) -> Distance {
        let f = fraction.clamp(0.0, 1.0);
        let hi = f * 2f64.powi(128);
        let hi = if hi >= 2f64.powi(128) {
            u128::MAX
        } else {
            hi as u128
        };
        Distance { hi, lo: 0 }
    }
}

impl Address {
    /// The all-zero address.
    pub const ZERO: Address = Address { hi: 0, lo: 0 };

    /// Builds an address from its 20 big-endian bytes.
    pub fn from_bytes(bytes: [u8; ADDRESS_LEN]) -> Address {
        let mut hi = [0u8; 16];
        hi.copy_from_slice(&bytes[..16]);
        let mut lo = [0u8; 4];
        lo.copy_from_slice(&bytes[16..]);
        Address {
            hi: u128::from_be_bytes(hi),
            lo: u32::from_be_bytes(lo),
        }
    }

    /// The 20 big-endian bytes of the address.
    pub fn to_bytes(self) -> [u8; ADDRESS_LEN] {
        let mut out = [0u8; ADDRESS_LEN];
        out[..16].copy_from_slice(&self.hi.to_be_bytes());
        out[16..].copy_from_slice(&self.lo.to_be_bytes());
        out
    }

    /// Derives a node address from a public key's DER
    /// SubjectPublicKeyInfo: the first 160 bits of SHA-256(SPKI) with the
    /// lowest bit cleared, so a node cannot choose its position freely.
    /// This is exactly `ipsec_ca::OverlayAddress::from_public_key`, the
    /// overlay address a host certificate carries.
    pub fn from_spki(spki_der: &[u8]) -> Address {
        let digest = Sha256::digest(spki_der);
        let mut bytes = [0u8; ADDRESS_LEN];
        bytes.copy_from_slice(&digest[..ADDRESS_LEN]);
        bytes[ADDRESS_LEN - 1] &= 0xfe;
        Address::from_bytes(bytes)
    }

    /// [`Address::from_spki`] of a raw public key of `algorithm` (32 bytes
    /// for Ed25519, a 65-byte uncompressed point for P-256); `None` if the
    /// key has the wrong length.
    pub fn from_public_key(
        algorithm: crate::identity::KeyAlgorithm,
        public_key: &[u8],
    ) -> Option<Address> {
        algorithm
            .spki_der(public_key)
            .map(|spki| Address::from_spki(&spki))
    }

    /// Maps a DHT key onto the ring (domain-separated from node addresses).
    pub fn from_key(key: &[u8]) -> Address {
        Self::hash_with(b"wow-overlay dht\0", key)
    }

    fn hash_with(domain: &[u8], data: &[u8]) -> Address {
        let mut h = Sha256::new();
        h.update(domain);
        h.update(data);
        let digest = h.finalize();
        let mut bytes = [0u8; ADDRESS_LEN];
        bytes.copy_from_slice(&digest[..ADDRESS_LEN]);
        Address::from_bytes(bytes)
    }

    /// Draws a uniformly random address (for nodes without a key).
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Address {
        let hi = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        Address {
            hi,
            lo: rng.next_u32(),
        }
    }

    /// The top 64 bits, used as a compact approximate position (lookahead
    /// tables store these).
    pub fn prefix(self) -> u64 {
        (self.hi >> 64) as u64
    }

    /// The address whose top 64 bits are `prefix` and the rest zero.
    pub fn from_prefix(prefix: u64) -> Address {
        Address {
            hi: u128::from(prefix) << 64,
            lo: 0,
        }
    }

    /// Clockwise distance from `self` to `other` (`other - self` mod 2^160).
    pub fn right_distance_to(self, other: Address) -> Distance {
        let (lo, borrow) = other.lo.overflowing_sub(self.lo);
        let hi = other
            .hi
            .wrapping_sub(self.hi)
            .wrapping_sub(u128::from(borrow));
        Distance { hi, lo }
    }

    /// Counter-clockwise distance from `self` to `other` (`self - other` mod 2^160).
    pub fn left_distance_to(self, other: Address) -> Distance {
        other.right_distance_to(self)
    }

    /// The shorter of the two ring distances.
    pub fn distance_to(self, other: Address) -> Distance {
        let r = self.right_distance_to(other);
        let l = self.left_distance_to(other);
        r.min(l)
    }

    /// `self + distance` mod 2^160 (also `address + distance`).
    pub fn plus(self, distance: Distance) -> Address {
        let (lo, carry) = self.lo.overflowing_add(distance.lo);
        let hi = self
            .hi
            .wrapping_add(distance.hi)
            .wrapping_add(u128::from(carry));
        Address { hi, lo }
    }

    /// `self - distance` mod 2^160 (also `address - distance`).
    pub fn minus(self, distance: Distance) -> Address {
        let (lo, borrow) = self.lo.overflowing_sub(distance.lo);
        let hi = self
            .hi
            .wrapping_sub(distance.hi)
            .wrapping_sub(u128::from(borrow));
        Address { hi, lo }
    }

    /// Whether `self` lies strictly inside the clockwise arc from `start` to
    /// `end` (exclusive at both ends). An arc with `start == end` is the whole
    /// ring except that point.
    pub fn is_between(self, start: Address, end: Address) -> bool {
        if self == start || self == end {
            return false;
        }
        if start == end {
            return true;
        }
        start.right_distance_to(self) < start.right_distance_to(end)
    }
}

impl core::ops::Add<Distance> for Address {
    type Output = Address;
    fn add(self, distance: Distance) -> Address {
        self.plus(distance)
    }
}

impl core::ops::Sub<Distance> for Address {
    type Output = Address;
    fn sub(self, distance: Distance) -> Address {
        self.minus(distance)
    }
}

/// Approximate clockwise distance between two 64-bit prefixes.
pub(crate) fn prefix_distance(a: u64, b: u64) -> u64 {
    a.wrapping_sub(b).min(b.wrapping_sub(a))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}{:08x}", self.hi, self.lo)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Address, AddressParseError> {
        if s.len() != 2 * ADDRESS_LEN {
            return Err(AddressParseError::Length { len: s.len() });
        }
        let mut bytes = [0u8; ADDRESS_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            let pair = s
                .get(2 * i..2 * i + 2)
                .ok_or(AddressParseError::InvalidDigit { position: 2 * i })?;
            *b = u8::from_str_radix(pair, 16)
                .map_err(|_| AddressParseError::InvalidDigit { position: 2 * i })?;
        }
        Ok(Address::from_bytes(bytes))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    fn addr() -> impl Strategy<Value = Address> {
        any::<[u8; 20]>().prop_map(Address::from_bytes)
    }

    #[test]
    fn text_form() {
        let a = Address::from_bytes([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad,
            0xbe, 0xef,
        ]);
        assert_eq!(a.to_string(), "0123456789abcdef0000000000000000deadbeef");
        assert_eq!(
            "xyz".parse::<Address>(),
            Err(AddressParseError::Length { len: 3 })
        );
        assert_eq!(
            "g123456789abcdef0000000000000000deadbeef".parse::<Address>(),
            Err(AddressParseError::InvalidDigit { position: 0 })
        );
    }

    #[test]
    fn wraps_around() {
        let max = Address::from_bytes([0xff; 20]);
        let one = Address::from_bytes({
            let mut b = [0; 20];
            b[19] = 1;
            b
        });
        let d = max.right_distance_to(one);
        assert_eq!(d, Distance { hi: 0, lo: 2 });
        assert_eq!(max.distance_to(one), d);
        assert!(Address::ZERO.is_between(max, one));
        assert!(!Address::ZERO.is_between(one, max));
    }

    #[test]
    fn key_derivation_is_domain_separated() {
        assert_ne!(Address::from_key(b"k"), Address::from_spki(b"k"));
        assert_eq!(Address::from_key(b"k"), Address::from_key(b"k"));
    }

    proptest! {
        #[test]
        fn text_round_trip(a in addr()) {
            prop_assert_eq!(a.to_string().parse::<Address>(), Ok(a));
            prop_assert_eq!(Address::from_bytes(a.to_bytes()), a);
        }

        #[test]
        fn distances_sum_to_ring(a in addr(), b in addr()) {
            let r = a.right_distance_to(b);
            let l = a.left_distance_to(b);
            // r + l == 0 mod 2^160
            prop_assert_eq!(Address::ZERO + r + l, Address::ZERO);
            prop_assert_eq!(a + r, b);
            prop_assert_eq!(b - r, a);
            prop_assert_eq!(a.distance_to(b), b.distance_to(a));
            prop_assert!(a.distance_to(b) <= Distance::HALF);
        }

        #[test]
        fn between_matches_distances(a in addr(), s in addr(), e in addr()) {
            let between = a.is_between(s, e);
            if a != s && a != e && s != e {
                prop_assert_eq!(between, s.right_distance_to(a) < s.right_distance_to(e));
                // Exactly one of the two arcs holds a.
                prop_assert_ne!(between, a.is_between(e, s));
            }
        }

        #[test]
        fn prefix_order_agrees(a in addr(), b in addr()) {
            if a.prefix() != b.prefix() {
                prop_assert_eq!(a.prefix() < b.prefix(), a < b);
            }
            prop_assert_eq!(Address::from_prefix(a.prefix()).prefix(), a.prefix());
        }
    }
}
