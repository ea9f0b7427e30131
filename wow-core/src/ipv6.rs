//! IPv6 in the virtual network: each guest's /64 derived from its
//! (certified) IPv4 address.
//!
//! The network holds one IPv6 prefix, a ULA /48 by default (RFC 4193,
//! its global id taken from the network's CIDR and zone, so every node
//! computes the same one) or a configured prefix. Guest `n` of the IPv4
//! network (its host bits) gets the /64 whose subnet id is `n`: with
//! `10.128.0.0/16` and `fd12:3456:789a::/48`, guest `10.128.0.10` gets
//! `fd12:3456:789a:a::/64`. The node advertises that /64 to its guest for
//! stateless autoconfiguration (the guest's kernel picks the interface
//! id), and the whole prefix on-link, answering neighbour solicitations
//! for it like proxy ARP ([`arp_virt::ndp`]).
//!
//! The mapping needs no new record and no new certificate field: an IPv6
//! destination's /64 names the IPv4 guest and thus the node that serves it
//! (its `ip/<addr>` record) and the security association (keyed by the
//! certified IPv4 address); a peer may send only from the /64 of the IPv4
//! address its certificate binds. What the interface id is does not
//! matter to routing.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// A prefix that cannot hold one /64 per address of the IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The prefix is longer than 64 minus the IPv4 network's host bits.
    #[error("IPv6 prefix {prefix} has no room for a /64 per address of {network}")]
    TooLong {
        /// The IPv6 prefix.
        prefix: Ipv6Net,
        /// The IPv4 network.
        network: Ipv4Net,
    },
}

/// The network's IPv6 prefix and its mapping to IPv4 guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    network: Ipv4Net,
    prefix: Ipv6Net,
}

impl Plan {
    /// The plan for IPv4 `network` under `prefix` (truncated to its
    /// length); the prefix must leave at least the network's host bits
    /// before bit 64.
    pub fn new(network: Ipv4Net, prefix: Ipv6Net) -> Result<Plan, PlanError> {
        let host_bits = 32 - u32::from(network.prefix_len());
        if u32::from(prefix.prefix_len()) + host_bits > 64 {
            return Err(PlanError::TooLong { prefix, network });
        }
        Ok(Plan {
            network: network.trunc(),
            prefix: prefix.trunc(),
        })
    }

    /// The default ULA /48 of the network with CIDR `network` and DNS zone
    /// `domain`: `fd` and 40 bits of SHA-256 over both (RFC 4193 section
    /// 3.2 asks for a pseudo-random global id; this one every node of the
    /// network computes alike).
    pub fn ula(network: Ipv4Net, domain: &str) -> Ipv6Net {
        let text = format!(
            "wow-ula|{}|{}",
            network.trunc(),
            domain.trim_end_matches('.')
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let d = digest.as_ref();
        let mut octets = [0u8; 16];
        octets[0] = 0xfd;
        for (o, b) in octets[1..6].iter_mut().zip(d) {
            *o = *b;
        }
        Ipv6Net::new(Ipv6Addr::from(octets), 48).unwrap_or_default()
    }

    /// The network's IPv6 prefix.
    pub fn prefix(&self) -> Ipv6Net {
        self.prefix
    }

    /// The /64 of IPv4 guest `addr`, if `addr` is in the network.
    pub fn subnet_of(&self, addr: Ipv4Addr) -> Option<Ipv6Net> {
        if !self.network.contains(&addr) {
            return None;
        }
        let host = u32::from(addr) - u32::from(self.network.network());
        let high = u128::from(self.prefix.network()) | (u128::from(host) << 64);
        Ipv6Net::new(Ipv6Addr::from(high), 64).ok()
    }

    /// Whether IPv6 `packet`, received from the peer certified for
    /// `peer`, may go to the guest at `guest`: from `peer`'s /64 to
    /// `guest`'s. A peer speaks only from the /64 of its own address.
    pub fn admits(&self, peer: Ipv4Addr, guest: Ipv4Addr, packet: &[u8]) -> bool {
        let Ok(ip) = smoltcp::wire::Ipv6Packet::new_checked(packet) else {
            return false;
        };
        self.owner_of(ip.src_addr()) == Some(peer) && self.owner_of(ip.dst_addr()) == Some(guest)
    }

    /// The IPv4 guest whose /64 holds `addr`, if any.
    pub fn owner_of(&self, addr: Ipv6Addr) -> Option<Ipv4Addr> {
        if !self.prefix.contains(&addr) {
            return None;
        }
        let subnet = (u128::from(addr) >> 64) as u64;
        let room = 64 - u32::from(self.prefix.prefix_len());
        let host = subnet & ((1u64 << room) - 1);
        let host = u32::try_from(host).ok()?;
        let host_bits = 32 - u32::from(self.network.prefix_len());
        if host_bits < 32 && host >> host_bits != 0 {
            return None;
        }
        u32::from(self.network.network())
            .checked_add(host)
            .map(Ipv4Addr::from)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn plan() -> Plan {
        Plan::new(
            "10.128.0.0/16".parse().unwrap(),
            "fd12:3456:789a::/48".parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn guests_get_the_subnet_of_their_host_bits() {
        let p = plan();
        let v4 = Ipv4Addr::new(10, 128, 0, 10);
        assert_eq!(
            p.subnet_of(v4),
            Some("fd12:3456:789a:a::/64".parse().unwrap())
        );
        assert_eq!(p.subnet_of(Ipv4Addr::new(10, 129, 0, 1)), None);
        assert_eq!(
            p.owner_of("fd12:3456:789a:a:5054:ff:fe12:3456".parse().unwrap()),
            Some(v4)
        );
        assert_eq!(
            p.owner_of("fd12:3456:789a:ffff::1".parse().unwrap()),
            Some(Ipv4Addr::new(10, 128, 255, 255))
        );
        assert_eq!(p.owner_of("fd12:3456:789b::1".parse().unwrap()), None);
        assert_eq!(p.owner_of("2001:db8::1".parse().unwrap()), None);
    }

    #[test]
    fn subnet_ids_past_the_network_belong_to_nobody() {
        // A /24 network under a /48: subnet ids past 255 name no guest.
        let p = Plan::new(
            "10.1.2.0/24".parse().unwrap(),
            "fd00:1:2::/48".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            p.owner_of("fd00:1:2:ff::1".parse().unwrap()),
            Some(Ipv4Addr::new(10, 1, 2, 255))
        );
        assert_eq!(p.owner_of("fd00:1:2:100::1".parse().unwrap()), None);
    }

    #[test]
    fn prefixes_without_room_are_refused() {
        let too_long = Plan::new(
            "10.0.0.0/8".parse().unwrap(),
            "fd00:1:2::/48".parse().unwrap(),
        );
        assert!(matches!(too_long, Err(PlanError::TooLong { .. })));
        let p = Plan::new(
            "10.0.0.0/8".parse().unwrap(),
            "fd00:1::/40".parse().unwrap(),
        )
        .unwrap();
        let v4 = Ipv4Addr::new(10, 1, 2, 3);
        let subnet = p.subnet_of(v4).unwrap();
        assert_eq!(subnet, "fd00:1:1:203::/64".parse().unwrap());
        assert_eq!(p.owner_of(subnet.network()), Some(v4));
    }

    #[test]
    fn the_default_ula_is_stable_and_per_network() {
        let net: Ipv4Net = "10.128.0.0/16".parse().unwrap();
        let a = Plan::ula(net, "wow.internal");
        assert_eq!(a, Plan::ula(net, "wow.internal."));
        assert_eq!(a.prefix_len(), 48);
        assert_eq!(a.network().octets()[0], 0xfd);
        assert_ne!(a, Plan::ula(net, "other.internal"));
    }

    fn packet(src: &str, dst: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap().octets();
        etherparse::PacketBuilder::ipv6(a(src), a(dst), 64)
            .udp(1, 2)
            .write(&mut out, b"x")
            .unwrap();
        out
    }

    #[test]
    fn attack_a_peer_sending_from_another_guests_64_is_refused() {
        let p = plan();
        let (peer, guest) = (Ipv4Addr::new(10, 128, 0, 20), Ipv4Addr::new(10, 128, 0, 10));
        // From the peer's /64 (any interface id) to the guest's: admitted.
        assert!(p.admits(
            peer,
            guest,
            &packet("fd12:3456:789a:14::99", "fd12:3456:789a:a::1")
        ));
        // From another guest's /64, outside the prefix, or to another
        // guest: refused.
        for (src, dst) in [
            ("fd12:3456:789a:63::1", "fd12:3456:789a:a::1"),
            ("2001:db8::1", "fd12:3456:789a:a::1"),
            ("fd12:3456:789a:14::99", "fd12:3456:789a:b::1"),
        ] {
            assert!(!p.admits(peer, guest, &packet(src, dst)), "{src} -> {dst}");
        }
        // Not IPv6 at all.
        assert!(!p.admits(peer, guest, &[0x45, 0, 0, 20]));
    }

    proptest::proptest! {
        #[test]
        fn owner_of_inverts_subnet_of(host: u16, iid: u64) {
            let p = plan();
            let v4 = Ipv4Addr::from(0x0a80_0000 | u32::from(host));
            let subnet = p.subnet_of(v4).unwrap();
            let addr = Ipv6Addr::from(u128::from(subnet.network()) | u128::from(iid));
            proptest::prop_assert_eq!(p.owner_of(addr), Some(v4));
        }
    }
}
