//! How many NATs stand between us and the Internet, from a traceroute's
//! answers, and the opening-probe TTLs that follow from it.
//!
//! The punch sessions' opening probes ([`PunchConfig::opening_ttls`]) must
//! leave every NAT of ours, to open it toward the peer, and die before the
//! peer's outermost NAT, which a probe reaching it first would make remap
//! (see [`crate::punch`]). The default, TTL 2 then 3, fits a host behind a
//! home NAT or behind a home NAT and a carrier-grade NAT *when the peer is
//! far away*. It fails when the peer's NAT is close: behind one NAT, a
//! TTL-3 probe travels two hops past it, and where the peer's carrier NAT
//! is that close (a small network, a testbed, one ISP's customers meeting
//! at its aggregation router) it arrives there first. Knowing our depth,
//! a host sends exactly the steps it needs: TTL 2 behind one NAT, 2 and 3
//! behind two.
//!
//! The caller measures, as `traceroute` does: one datagram with each TTL
//! from 1 up toward a public host (a bootstrap node), the source of each
//! ICMP Time Exceeded that comes back (on Linux, `IP_RECVERR` and the
//! socket's error queue), and hands the answers to [`nat_depth`]. A NAT
//! answers from its inside address, which is private (RFC 1918) or shared
//! (RFC 6598, `100.64.0.0/10`, the carrier-grade NATs' range); the first
//! public router comes after the last NAT. This is a heuristic: an ISP
//! that numbers routers behind the customer's NAT privately makes the
//! depth look larger (one TTL step more: harmless unless the peer is that
//! close too), and a hop that does not answer leaves the depth unknown
//! (keep the default).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use nat_traversal::depth::{nat_depth, opening_ttls};
//!
//! // Home router, carrier-grade NAT, then the ISP's public router.
//! let hops = [
//!     Some(Ipv4Addr::new(192, 168, 1, 1)),
//!     Some(Ipv4Addr::new(100, 64, 1, 1)),
//!     Some(Ipv4Addr::new(203, 0, 113, 1)),
//! ];
//! assert_eq!(nat_depth(&hops), Some(2));
//! assert_eq!(opening_ttls(2), vec![2, 3]);
//! // Behind one NAT only TTL 2: a TTL-3 probe could reach a close peer's
//! // carrier NAT.
//! assert_eq!(opening_ttls(1), vec![2]);
//! ```
//!
//! [`PunchConfig::opening_ttls`]: crate::punch::PunchConfig::opening_ttls

use std::net::Ipv4Addr;

/// Deepest NAT nesting [`nat_depth`] reports (a traceroute needs this many
/// hops plus one).
pub const MAX_DEPTH: u8 = 4;

/// Whether a router answering from `addr` is inside a NAT: private
/// (RFC 1918), shared address space (RFC 6598), link-local or loopback.
pub fn is_inside(addr: Ipv4Addr) -> bool {
    let [a, b, ..] = addr.octets();
    addr.is_private()
        || addr.is_link_local()
        || addr.is_loopback()
        || (a == 100 && (64..128).contains(&b))
}

/// Our NAT depth from a traceroute: `hops[i]` is the source of the ICMP
/// Time Exceeded answering the datagram sent with TTL `i + 1` (`None`: no
/// answer). The depth is the number of leading inside hops
/// ([`is_inside`]) before the first public one; `None` when a hop before
/// the first public one did not answer, or none of the first
/// [`MAX_DEPTH`] + 1 hops is public.
pub fn nat_depth(hops: &[Option<Ipv4Addr>]) -> Option<u8> {
    for (depth, hop) in hops.iter().take(usize::from(MAX_DEPTH) + 1).enumerate() {
        match hop {
            Some(addr) if is_inside(*addr) => continue,
            Some(_) => return u8::try_from(depth).ok(),
            None => return None,
        }
    }
    None
}

/// The opening-probe TTLs for a host behind `depth` NATs: one step per
/// NAT, TTL 2 for the first (it leaves the NAT and dies at the next
/// router), up to `depth + 1`. None without a NAT (nothing to open).
pub fn opening_ttls(depth: u8) -> Vec<u8> {
    (2..=depth.min(MAX_DEPTH).saturating_add(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<Ipv4Addr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn depth_counts_the_inside_hops_before_the_first_public_one() {
        assert_eq!(nat_depth(&[ip("198.51.100.1")]), Some(0));
        assert_eq!(nat_depth(&[ip("192.168.2.1"), ip("198.19.0.1")]), Some(1));
        assert_eq!(
            nat_depth(&[
                ip("10.0.0.1"),
                ip("172.16.0.1"),
                ip("100.127.0.1"),
                ip("8.8.8.8")
            ]),
            Some(3)
        );
        // 100.128.0.0 is public (outside 100.64.0.0/10).
        assert_eq!(nat_depth(&[ip("192.168.1.1"), ip("100.128.0.1")]), Some(1));
    }

    #[test]
    fn silent_or_endless_inside_hops_leave_the_depth_unknown() {
        assert_eq!(nat_depth(&[]), None);
        assert_eq!(nat_depth(&[None, ip("198.51.100.1")]), None);
        assert_eq!(
            nat_depth(&[ip("192.168.1.1"), None, ip("198.51.100.1")]),
            None
        );
        assert_eq!(nat_depth(&[ip("192.168.1.1"); 5]), None);
        // A public hop after a silent one past the first public: known.
        assert_eq!(
            nat_depth(&[ip("192.168.1.1"), ip("198.51.100.1"), None]),
            Some(1)
        );
    }

    #[test]
    fn one_opening_step_per_nat() {
        assert_eq!(opening_ttls(0), Vec::<u8>::new());
        assert_eq!(opening_ttls(1), vec![2]);
        assert_eq!(opening_ttls(3), vec![2, 3, 4]);
        assert_eq!(opening_ttls(200), vec![2, 3, 4, 5]);
    }
}
