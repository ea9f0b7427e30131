//! Address pools: ranges, exclusions, static reservations, and the
//! deterministic order in which a client's candidate addresses are tried.

use std::net::Ipv4Addr;

use crate::lease::ClientKey;
use crate::wire::HardwareAddr;

/// Who a static reservation is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReservationKey {
    /// An Ethernet hardware address (`chaddr`).
    Mac([u8; 6]),
    /// A client identifier (option 61), byte for byte.
    ClientId(Vec<u8>),
}

/// A static address for one client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// The client.
    pub key: ReservationKey,
    /// Its address.
    pub addr: Ipv4Addr,
}

/// The dynamic address pool: inclusive ranges minus exclusions, plus
/// reservations. Reserved addresses are never handed to anyone else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// Inclusive ranges `(first, last)`.
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Inclusive ranges never leased dynamically.
    pub exclusions: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Static reservations.
    pub reservations: Vec<Reservation>,
}

impl Pool {
    /// A pool of one inclusive range.
    pub fn range(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        Pool {
            ranges: vec![(first, last)],
            ..Pool::default()
        }
    }

    /// Number of addresses spanned by the ranges (exclusions included).
    pub fn span(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(a, b)| u64::from(u32::from(b)).saturating_sub(u64::from(u32::from(a))) + 1)
            .sum()
    }

    /// Whether `addr` is excluded.
    pub fn is_excluded(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        self.exclusions
            .iter()
            .any(|&(x, y)| u32::from(x) <= a && a <= u32::from(y))
    }

    /// Whether `addr` is in a range and not excluded.
    pub fn is_dynamic(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        self.ranges
            .iter()
            .any(|&(x, y)| u32::from(x) <= a && a <= u32::from(y))
            && !self.is_excluded(addr)
    }

    /// The reservation of this client, by client id first, then by MAC.
    pub fn reservation_for(&self, client: &ClientKey, hardware: &HardwareAddr) -> Option<Ipv4Addr> {
        let id = client.client_id();
        let mac = hardware.mac();
        self.reservations
            .iter()
            .find(|r| matches!(&r.key, ReservationKey::ClientId(k) if Some(k.as_slice()) == id))
            .or_else(|| {
                self.reservations
                    .iter()
                    .find(|r| matches!(&r.key, ReservationKey::Mac(m) if Some(*m) == mac))
            })
            .map(|r| r.addr)
    }

    /// Whether `addr` is reserved for anyone.
    pub fn is_reserved(&self, addr: Ipv4Addr) -> bool {
        self.reservations.iter().any(|r| r.addr == addr)
    }

    /// The `i`-th address of the ranges (modulo the span), exclusions
    /// included.
    fn nth(&self, mut i: u64) -> Option<Ipv4Addr> {
        let span = self.span();
        if span == 0 {
            return None;
        }
        i %= span;
        for &(a, b) in &self.ranges {
            let len = u64::from(u32::from(b)).saturating_sub(u64::from(u32::from(a))) + 1;
            if i < len {
                let v = u64::from(u32::from(a)) + i;
                return u32::try_from(v).ok().map(Ipv4Addr::from);
            }
            i -= len;
        }
        None
    }

    /// Every dynamic address once, starting at a position derived from
    /// `client` alone, so a client is offered the same address by every
    /// server that shares the pool (RFC 2131 §4.3.1 asks for a stable
    /// choice).
    pub fn candidates(&self, client: &ClientKey) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let span = self.span();
        let start = if span == 0 {
            0
        } else {
            client.stable_hash() % span
        };
        (0..span)
            .filter_map(move |k| self.nth(start + k))
            .filter(|a| !self.is_excluded(*a) && !self.is_reserved(*a))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn candidates_cover_pool_minus_exclusions_once() {
        let mut pool = Pool::range(a("10.0.0.10"), a("10.0.0.19"));
        pool.ranges.push((a("10.0.0.30"), a("10.0.0.31")));
        pool.exclusions.push((a("10.0.0.12"), a("10.0.0.13")));
        pool.reservations.push(Reservation {
            key: ReservationKey::Mac([2; 6]),
            addr: a("10.0.0.15"),
        });
        let key = ClientKey::Hardware(HardwareAddr::ethernet([2, 0, 0, 0, 0, 7]));
        let mut got: Vec<_> = pool.candidates(&key).collect();
        got.sort();
        let want: Vec<_> = [10, 11, 14, 16, 17, 18, 19, 30, 31]
            .iter()
            .map(|n| Ipv4Addr::new(10, 0, 0, *n))
            .collect();
        assert_eq!(got, want);
        // Deterministic: same client, same order.
        assert_eq!(
            pool.candidates(&key).next(),
            pool.candidates(&key.clone()).next()
        );
    }

    #[test]
    fn reservations_by_id_then_mac() {
        let mut pool = Pool::range(a("10.0.0.10"), a("10.0.0.19"));
        pool.reservations.push(Reservation {
            key: ReservationKey::Mac([2, 0, 0, 0, 0, 1]),
            addr: a("10.0.0.5"),
        });
        pool.reservations.push(Reservation {
            key: ReservationKey::ClientId(vec![9, 9]),
            addr: a("10.0.0.6"),
        });
        let hw = HardwareAddr::ethernet([2, 0, 0, 0, 0, 1]);
        assert_eq!(
            pool.reservation_for(&ClientKey::Hardware(hw), &hw),
            Some(a("10.0.0.5"))
        );
        assert_eq!(
            pool.reservation_for(&ClientKey::Id(vec![9, 9]), &hw),
            Some(a("10.0.0.6"))
        );
        let other = HardwareAddr::ethernet([2, 0, 0, 0, 0, 2]);
        assert_eq!(
            pool.reservation_for(&ClientKey::Hardware(other), &other),
            None
        );
    }
}
