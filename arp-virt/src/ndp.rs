//! IPv6 neighbour discovery for the virtual gateway: router advertisements
//! for the guest's stateless autoconfiguration and proxy neighbour
//! advertisements, the IPv6 counterpart of the proxy-ARP [`Responder`].
//!
//! The virtual network holds one prefix (`network`, a ULA /48 for
//! instance) and the guest one /64 of it (`guest_prefix`). The
//! [`NdpResponder`]
//!
//! - answers a Router Solicitation (RFC 4861 section 6.2.6) with a Router
//!   Advertisement carrying two Prefix Information options: the guest's
//!   /64 with the autonomous flag (the guest's kernel forms its own address
//!   there, RFC 4862 section 5.5.3) and the whole network on-link without
//!   it (so the guest resolves every address of the network on the TAP, as
//!   with proxy ARP). The router lifetime is zero by default: the gateway
//!   does not become the guest's default router;
//! - answers a Neighbor Solicitation for the gateway's link-local address
//!   or for any network address outside the guest's /64 with a Neighbor
//!   Advertisement naming the gateway's MAC (proxy NDP);
//! - leaves solicitations for the guest's own /64 unanswered (they are the
//!   guest's), and answers duplicate address detection (an unspecified
//!   source, RFC 4862 section 5.4.3) only for addresses the gateway holds
//!   or proxies, to all nodes: the guest may not take them;
//! - reports addresses the guest is about to use in its /64 (the targets of
//!   its duplicate address detection) as [`NdpEvent::GuestAddress`].
//!
//! Messages are checked as RFC 4861 section 6.1 and 7.1.1 ask: hop limit
//! 255, a valid ICMPv6 checksum, code 0. Frames are parsed and emitted with
//! [`smoltcp::wire`].
//!
//! [`Responder`]: crate::Responder
//!
//! ```
//! use arp_virt::ndp::{NdpConfig, NdpOutcome, NdpResponder};
//! use arp_virt::EthernetAddress;
//!
//! let gateway_mac = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
//! let config = NdpConfig::new(
//!     "fd00:1:2::/48".parse().unwrap(),
//!     "fd00:1:2:5::/64".parse().unwrap(),
//!     gateway_mac,
//! );
//! let mut ndp = NdpResponder::new(config).unwrap();
//! // A Router Advertisement to all nodes, to write to the TAP at start.
//! let ra = ndp.advertisement();
//! assert_eq!(&ra[6..12], &gateway_mac.0);
//! // Frames from the guest: not NDP, so ignored.
//! assert!(matches!(ndp.handle_frame(&[0u8; 60]), Ok(NdpOutcome::Ignored)));
//! ```

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::time::Duration;

use ipnet::Ipv6Net;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Duration as SmolDuration;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr,
    IpProtocol, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscOption, NdiscOptionRepr,
    NdiscPrefixInfoFlags, NdiscPrefixInformation, NdiscRepr, NdiscRouterFlags, RawHardwareAddress,
};

/// Hop limit of every neighbour discovery message (RFC 4861 section 6.1.1).
const NDP_HOP_LIMIT: u8 = 255;
const ETH_LEN: usize = 14;
const IPV6_LEN: usize = 40;

/// What the gateway advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpConfig {
    /// The virtual network's prefix, advertised on-link.
    pub network: Ipv6Net,
    /// The guest's /64 inside it, advertised for autoconfiguration.
    pub guest_prefix: Ipv6Net,
    /// The gateway's MAC address.
    pub gateway_mac: EthernetAddress,
    /// Router lifetime (zero: not a default router).
    pub router_lifetime: Duration,
    /// Valid lifetime of both prefixes.
    pub valid_lifetime: Duration,
    /// Preferred lifetime of the guest's prefix.
    pub preferred_lifetime: Duration,
    /// Link MTU advertised, if any.
    pub mtu: Option<u32>,
}

impl NdpConfig {
    /// Defaults for `network` and the guest's `guest_prefix` inside it: no
    /// default route, prefixes valid for a day and preferred for 4 hours,
    /// no MTU option.
    pub fn new(network: Ipv6Net, guest_prefix: Ipv6Net, gateway_mac: EthernetAddress) -> Self {
        NdpConfig {
            network,
            guest_prefix,
            gateway_mac,
            router_lifetime: Duration::ZERO,
            valid_lifetime: Duration::from_secs(86_400),
            preferred_lifetime: Duration::from_secs(14_400),
            mtu: None,
        }
    }
}

/// An [`NdpConfig`] the responder cannot work with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NdpConfigError {
    /// The guest's prefix is not a /64 (stateless autoconfiguration on
    /// Ethernet needs one, RFC 4862 section 5.5.3).
    #[error("guest prefix {0} is not a /64")]
    GuestPrefixLength(Ipv6Net),
    /// The guest's prefix lies outside the network.
    #[error("guest prefix {guest} is outside the network {network}")]
    GuestOutsideNetwork {
        /// The guest's prefix.
        guest: Ipv6Net,
        /// The network.
        network: Ipv6Net,
    },
    /// The gateway's hardware address is a group address or all zeros.
    #[error("gateway hardware address {0} is a group or all-zero address")]
    GatewayNotUnicast(EthernetAddress),
}

/// Why a frame is not a neighbour discovery message the gateway takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NdpError {
    /// Cut short or inconsistent IPv6/ICMPv6 bytes.
    #[error("malformed IPv6 or ICMPv6 packet")]
    Malformed,
    /// A bad ICMPv6 checksum.
    #[error("bad ICMPv6 checksum")]
    Checksum,
    /// A hop limit other than 255: the message crossed a router (RFC 4861
    /// section 6.1.1, 7.1.1).
    #[error("hop limit {0} is not 255")]
    HopLimit(u8),
    /// An option or field RFC 4861 forbids (a link-layer option with an
    /// unspecified source, a multicast target).
    #[error("invalid neighbour discovery message")]
    Invalid,
}

/// What a frame from the guest gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NdpOutcome {
    /// A frame to write to the TAP.
    Reply(Vec<u8>),
    /// Nothing to answer (not neighbour discovery, or not ours to answer).
    Ignored,
}

/// Things the responder learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpEvent {
    /// The guest checks (duplicate address detection) an address of its
    /// /64 before using it.
    GuestAddress(Ipv6Addr),
    /// The guest probed an address the gateway holds or proxies; it was
    /// answered, so the guest's kernel does not take it.
    Defended(Ipv6Addr),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NdpStats {
    /// Router advertisements sent (solicited or not).
    pub advertisements: u64,
    /// Neighbour advertisements sent.
    pub neighbour_replies: u64,
    /// Frames refused as malformed or invalid.
    pub malformed: u64,
}

/// The gateway's neighbour discovery (see the module docs).
#[derive(Debug)]
pub struct NdpResponder {
    config: NdpConfig,
    router_addr: Ipv6Addr,
    events: VecDeque<NdpEvent>,
    stats: NdpStats,
}

/// At most this many events wait for [`NdpResponder::poll_event`].
const EVENT_LIMIT: usize = 64;

impl NdpResponder {
    /// A responder for `config`.
    pub fn new(config: NdpConfig) -> Result<Self, NdpConfigError> {
        if config.guest_prefix.prefix_len() != 64 {
            return Err(NdpConfigError::GuestPrefixLength(config.guest_prefix));
        }
        if !config.network.contains(&config.guest_prefix) {
            return Err(NdpConfigError::GuestOutsideNetwork {
                guest: config.guest_prefix,
                network: config.network,
            });
        }
        if !config.gateway_mac.is_unicast() {
            return Err(NdpConfigError::GatewayNotUnicast(config.gateway_mac));
        }
        Ok(NdpResponder {
            router_addr: link_local(config.gateway_mac),
            config,
            events: VecDeque::new(),
            stats: NdpStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NdpConfig {
        &self.config
    }

    /// The gateway's link-local address (modified EUI-64 of its MAC), the
    /// source of its advertisements.
    pub fn router_addr(&self) -> Ipv6Addr {
        self.router_addr
    }

    /// Counters.
    pub fn stats(&self) -> NdpStats {
        self.stats
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NdpEvent> {
        self.events.pop_front()
    }

    /// Whether the gateway answers for `addr`: its own link-local address,
    /// or a network address outside the guest's /64.
    pub fn proxies(&self, addr: Ipv6Addr) -> bool {
        addr == self.router_addr
            || (self.config.network.contains(&addr) && !self.config.guest_prefix.contains(&addr))
    }

    /// An unsolicited Router Advertisement to all nodes (RFC 4861 section
    /// 6.2.4), as a frame for the TAP.
    pub fn advertisement(&mut self) -> Vec<u8> {
        self.stats.advertisements += 1;
        self.router_advert(
            EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
            Ipv6Addr::from(0xff02_0000_0000_0000_0000_0000_0000_0001u128),
        )
    }

    /// Takes one frame from the guest. Frames other than IPv6 neighbour
    /// discovery are [`NdpOutcome::Ignored`]; malformed ones are an error
    /// and change nothing.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Result<NdpOutcome, NdpError> {
        let result = self.handle(frame);
        if result.is_err() {
            self.stats.malformed += 1;
        }
        result
    }

    fn handle(&mut self, frame: &[u8]) -> Result<NdpOutcome, NdpError> {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Ok(NdpOutcome::Ignored);
        };
        if eth.ethertype() != EthernetProtocol::Ipv6 {
            return Ok(NdpOutcome::Ignored);
        }
        let source_mac = eth.src_addr();
        let ip = Ipv6Packet::new_checked(eth.payload()).map_err(|_| NdpError::Malformed)?;
        // Extension headers before ICMPv6 (MLD's hop-by-hop) are not NDP.
        if ip.next_header() != IpProtocol::Icmpv6 {
            return Ok(NdpOutcome::Ignored);
        }
        let payload = ip.payload();
        let icmp = Icmpv6Packet::new_checked(payload).map_err(|_| NdpError::Malformed)?;
        let kind = u8::from(icmp.msg_type());
        // Router Solicitation, Neighbor Solicitation: the rest is not ours.
        if kind != 133 && kind != 135 {
            return Ok(NdpOutcome::Ignored);
        }
        if ip.hop_limit() != NDP_HOP_LIMIT {
            return Err(NdpError::HopLimit(ip.hop_limit()));
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if !icmp.verify_checksum(&src, &dst) {
            return Err(NdpError::Checksum);
        }
        if icmp.msg_code() != 0 {
            return Err(NdpError::Invalid);
        }
        let repr = Icmpv6Repr::parse(&src, &dst, &icmp, &ChecksumCapabilities::ignored())
            .map_err(|_| NdpError::Malformed)?;
        match repr {
            Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { lladdr }) => {
                if src.is_unspecified() && lladdr.is_some() {
                    return Err(NdpError::Invalid);
                }
                self.stats.advertisements += 1;
                // Unicast to a solicitor with an address, else to all nodes.
                let frame = if src.is_unspecified() || !source_mac.is_unicast() {
                    self.router_advert(
                        EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
                        Ipv6Addr::from(0xff02_0000_0000_0000_0000_0000_0000_0001u128),
                    )
                } else {
                    self.router_advert(source_mac, src)
                };
                Ok(NdpOutcome::Reply(frame))
            }
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr,
            }) => {
                if target_addr.is_multicast() || (src.is_unspecified() && lladdr.is_some()) {
                    return Err(NdpError::Invalid);
                }
                let dad = src.is_unspecified();
                if !self.proxies(target_addr) {
                    if dad
                        && self.config.guest_prefix.contains(&target_addr)
                        && self.events.len() < EVENT_LIMIT
                    {
                        self.events.push_back(NdpEvent::GuestAddress(target_addr));
                    }
                    return Ok(NdpOutcome::Ignored);
                }
                if !dad && !source_mac.is_unicast() {
                    return Err(NdpError::Invalid);
                }
                self.stats.neighbour_replies += 1;
                if dad {
                    // RFC 4861 section 7.2.4: to all nodes, not solicited.
                    if self.events.len() < EVENT_LIMIT {
                        self.events.push_back(NdpEvent::Defended(target_addr));
                    }
                    return Ok(NdpOutcome::Reply(self.neighbour_advert(
                        EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
                        Ipv6Addr::from(0xff02_0000_0000_0000_0000_0000_0000_0001u128),
                        target_addr,
                        false,
                    )));
                }
                Ok(NdpOutcome::Reply(self.neighbour_advert(
                    source_mac,
                    src,
                    target_addr,
                    true,
                )))
            }
            _ => Ok(NdpOutcome::Ignored),
        }
    }

    fn router_advert(&self, dst_mac: EthernetAddress, dst: Ipv6Addr) -> Vec<u8> {
        let c = &self.config;
        let secs = |d: Duration| SmolDuration::from_secs(d.as_secs());
        let ra = NdiscRepr::RouterAdvert {
            hop_limit: 64,
            flags: NdiscRouterFlags::empty(),
            router_lifetime: secs(c.router_lifetime.min(Duration::from_secs(9000))),
            reachable_time: SmolDuration::ZERO,
            retrans_time: SmolDuration::ZERO,
            lladdr: Some(RawHardwareAddress::from(c.gateway_mac)),
            mtu: c.mtu,
            prefix_info: Some(NdiscPrefixInformation {
                prefix_len: 64,
                flags: NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF,
                valid_lifetime: secs(c.valid_lifetime),
                preferred_lifetime: secs(c.preferred_lifetime.min(c.valid_lifetime)),
                prefix: c.guest_prefix.network(),
            }),
        };
        // smoltcp's repr carries one prefix; the network's follows it.
        let network = NdiscOptionRepr::PrefixInformation(NdiscPrefixInformation {
            prefix_len: c.network.prefix_len(),
            flags: NdiscPrefixInfoFlags::ON_LINK,
            valid_lifetime: secs(c.valid_lifetime),
            preferred_lifetime: SmolDuration::ZERO,
            prefix: c.network.network(),
        });
        let icmp = Icmpv6Repr::Ndisc(ra);
        let icmp_len = icmp.buffer_len() + network.buffer_len();
        let mut frame = self.frame(dst_mac, dst, icmp_len);
        let body = &mut frame[ETH_LEN + IPV6_LEN..];
        let first = icmp.buffer_len();
        {
            let mut packet = Icmpv6Packet::new_unchecked(&mut body[..first]);
            icmp.emit(
                &self.router_addr,
                &dst,
                &mut packet,
                &ChecksumCapabilities::ignored(),
            );
        }
        network.emit(&mut NdiscOption::new_unchecked(&mut body[first..]));
        Icmpv6Packet::new_unchecked(&mut body[..]).fill_checksum(&self.router_addr, &dst);
        frame
    }

    fn neighbour_advert(
        &self,
        dst_mac: EthernetAddress,
        dst: Ipv6Addr,
        target: Ipv6Addr,
        solicited: bool,
    ) -> Vec<u8> {
        let mut flags = NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE;
        if solicited {
            flags |= NdiscNeighborFlags::SOLICITED;
        }
        let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr: target,
            lladdr: Some(RawHardwareAddress::from(self.config.gateway_mac)),
        });
        let mut frame = self.frame(dst_mac, dst, icmp.buffer_len());
        let mut packet = Icmpv6Packet::new_unchecked(&mut frame[ETH_LEN + IPV6_LEN..]);
        icmp.emit(
            &self.router_addr,
            &dst,
            &mut packet,
            &ChecksumCapabilities::default(),
        );
        frame
    }

    /// An Ethernet frame with an IPv6 header from the gateway to `dst`,
    /// with room for `payload_len` bytes of ICMPv6.
    fn frame(&self, dst_mac: EthernetAddress, dst: Ipv6Addr, payload_len: usize) -> Vec<u8> {
        let mut frame = vec![0u8; ETH_LEN + IPV6_LEN + payload_len];
        let eth = EthernetRepr {
            src_addr: self.config.gateway_mac,
            dst_addr: dst_mac,
            ethertype: EthernetProtocol::Ipv6,
        };
        eth.emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
        let ip = Ipv6Repr {
            src_addr: self.router_addr,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len,
            hop_limit: NDP_HOP_LIMIT,
        };
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut frame[ETH_LEN..]));
        frame
    }
}

/// The link-local address of `mac` (modified EUI-64, RFC 4291 appendix A).
pub fn link_local(mac: EthernetAddress) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

#[cfg(test)]
mod test {
    use super::*;

    const GATEWAY: EthernetAddress = EthernetAddress([0x02, 0x57, 0, 0, 0, 1]);
    const GUEST: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    fn responder() -> NdpResponder {
        NdpResponder::new(NdpConfig::new(
            "fd12:3456:789a::/48".parse().unwrap(),
            "fd12:3456:789a:a::/64".parse().unwrap(),
            GATEWAY,
        ))
        .unwrap()
    }

    /// A frame from the guest carrying `icmp`, from `src` to `dst`.
    fn from_guest(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        dst_mac: EthernetAddress,
        icmp: NdiscRepr,
    ) -> Vec<u8> {
        let icmp = Icmpv6Repr::Ndisc(icmp);
        let len = icmp.buffer_len();
        let mut frame = vec![0xa5u8; ETH_LEN + IPV6_LEN + len];
        EthernetRepr {
            src_addr: GUEST,
            dst_addr: dst_mac,
            ethertype: EthernetProtocol::Ipv6,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
        Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: len,
            hop_limit: 255,
        }
        .emit(&mut Ipv6Packet::new_unchecked(&mut frame[ETH_LEN..]));
        icmp.emit(
            &src,
            &dst,
            &mut Icmpv6Packet::new_unchecked(&mut frame[ETH_LEN + IPV6_LEN..]),
            &ChecksumCapabilities::default(),
        );
        frame
    }

    /// The ICMPv6 body of a reply, its checksum checked, and the prefix
    /// options it holds (smoltcp's repr keeps only the last one).
    fn parse_reply(frame: &[u8]) -> (Ipv6Repr, Vec<u8>) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.src_addr(), GATEWAY);
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        let repr = Ipv6Repr::parse(&ip).unwrap();
        assert_eq!(repr.hop_limit, 255);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&repr.src_addr, &repr.dst_addr));
        (repr, ip.payload().to_vec())
    }

    fn prefixes(icmp: &[u8]) -> Vec<NdiscPrefixInformation> {
        let mut out = Vec::new();
        let mut offset = 16; // RA header
        while offset < icmp.len() {
            let opt = NdiscOption::new_checked(&icmp[offset..]).unwrap();
            if let Ok(NdiscOptionRepr::PrefixInformation(p)) = NdiscOptionRepr::parse(&opt) {
                out.push(p);
            }
            offset += usize::from(opt.data_len()) * 8;
        }
        out
    }

    fn all_routers() -> Ipv6Addr {
        "ff02::2".parse().unwrap()
    }

    #[test]
    fn router_solicitation_gets_both_prefixes_and_no_default_route() {
        let mut ndp = responder();
        let guest_ll = link_local(GUEST);
        let rs = from_guest(
            guest_ll,
            all_routers(),
            EthernetAddress([0x33, 0x33, 0, 0, 0, 2]),
            NdiscRepr::RouterSolicit {
                lladdr: Some(GUEST.into()),
            },
        );
        let NdpOutcome::Reply(ra) = ndp.handle_frame(&rs).unwrap() else {
            panic!("no RA");
        };
        let (ip, icmp) = parse_reply(&ra);
        assert_eq!(ip.src_addr, ndp.router_addr());
        assert_eq!(ip.dst_addr, guest_ll);
        assert_eq!(
            EthernetFrame::new_checked(&ra[..]).unwrap().dst_addr(),
            GUEST
        );
        let packet = Icmpv6Packet::new_checked(&icmp[..]).unwrap();
        let Ok(Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
            router_lifetime,
            lladdr,
            ..
        })) = Icmpv6Repr::parse(
            &ip.src_addr,
            &ip.dst_addr,
            &packet,
            &ChecksumCapabilities::default(),
        )
        else {
            panic!("not an RA");
        };
        assert_eq!(router_lifetime, SmolDuration::ZERO);
        assert_eq!(lladdr, Some(GATEWAY.into()));
        let p = prefixes(&icmp);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].prefix,
            "fd12:3456:789a:a::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(p[0].prefix_len, 64);
        assert!(
            p[0].flags
                .contains(NdiscPrefixInfoFlags::ADDRCONF | NdiscPrefixInfoFlags::ON_LINK)
        );
        assert_eq!(p[1].prefix, "fd12:3456:789a::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p[1].prefix_len, 48);
        assert_eq!(p[1].flags, NdiscPrefixInfoFlags::ON_LINK);
        assert_eq!(ndp.stats().advertisements, 1);
    }

    #[test]
    fn unsolicited_advertisement_goes_to_all_nodes() {
        let mut ndp = responder();
        let ra = ndp.advertisement();
        let (ip, icmp) = parse_reply(&ra);
        assert_eq!(ip.dst_addr, "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(prefixes(&icmp).len(), 2);
    }

    fn solicit(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let dst = if src.is_unspecified() {
            // Solicited-node multicast of the target.
            let t = target.octets();
            Ipv6Addr::from([
                0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
            ])
        } else {
            target
        };
        from_guest(
            src,
            dst,
            EthernetAddress([0x33, 0x33, 0xff, 0, 0, 1]),
            NdiscRepr::NeighborSolicit {
                target_addr: target,
                lladdr: (!src.is_unspecified()).then(|| GUEST.into()),
            },
        )
    }

    fn advert_target(frame: &[u8]) -> (Ipv6Repr, Ipv6Addr, NdiscNeighborFlags) {
        let (ip, icmp) = parse_reply(frame);
        let packet = Icmpv6Packet::new_checked(&icmp[..]).unwrap();
        let Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr,
        })) = Icmpv6Repr::parse(
            &ip.src_addr,
            &ip.dst_addr,
            &packet,
            &ChecksumCapabilities::default(),
        )
        else {
            panic!("not an NA");
        };
        assert_eq!(lladdr, Some(GATEWAY.into()));
        (ip, target_addr, flags)
    }

    #[test]
    fn solicitation_for_another_guest_or_the_router_is_answered_with_the_gateway_mac() {
        let mut ndp = responder();
        let me: Ipv6Addr = "fd12:3456:789a:a:5054:ff:fe12:3456".parse().unwrap();
        for target in [
            "fd12:3456:789a:14::1234".parse::<Ipv6Addr>().unwrap(),
            ndp.router_addr(),
        ] {
            let NdpOutcome::Reply(na) = ndp.handle_frame(&solicit(me, target)).unwrap() else {
                panic!("{target} not answered");
            };
            let (ip, t, flags) = advert_target(&na);
            assert_eq!(t, target);
            assert_eq!(ip.dst_addr, me);
            assert!(flags.contains(NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::ROUTER));
        }
        assert_eq!(ndp.stats().neighbour_replies, 2);
    }

    #[test]
    fn solicitations_for_the_guests_own_prefix_or_outside_the_network_are_not_answered() {
        let mut ndp = responder();
        let me: Ipv6Addr = "fd12:3456:789a:a::1".parse().unwrap();
        for target in [
            "fd12:3456:789a:a::2",
            "fd99::1",
            "fe80::1234",
            "2001:db8::1",
        ] {
            let target: Ipv6Addr = target.parse().unwrap();
            assert_eq!(
                ndp.handle_frame(&solicit(me, target)).unwrap(),
                NdpOutcome::Ignored,
                "{target}"
            );
        }
    }

    #[test]
    fn duplicate_address_detection_of_the_guests_own_address_is_not_answered_but_reported() {
        let mut ndp = responder();
        let tentative: Ipv6Addr = "fd12:3456:789a:a:5054:ff:fe12:3456".parse().unwrap();
        let dad = solicit(Ipv6Addr::UNSPECIFIED, tentative);
        assert_eq!(ndp.handle_frame(&dad).unwrap(), NdpOutcome::Ignored);
        assert_eq!(ndp.poll_event(), Some(NdpEvent::GuestAddress(tentative)));
        // Its link-local address: not answered, not reported.
        let dad = solicit(Ipv6Addr::UNSPECIFIED, link_local(GUEST));
        assert_eq!(ndp.handle_frame(&dad).unwrap(), NdpOutcome::Ignored);
        assert_eq!(ndp.poll_event(), None);
    }

    #[test]
    fn attack_duplicate_address_detection_of_another_guests_address_is_defended() {
        let mut ndp = responder();
        let other: Ipv6Addr = "fd12:3456:789a:14::7".parse().unwrap();
        let NdpOutcome::Reply(na) = ndp
            .handle_frame(&solicit(Ipv6Addr::UNSPECIFIED, other))
            .unwrap()
        else {
            panic!("not defended");
        };
        let (ip, target, flags) = advert_target(&na);
        assert_eq!(target, other);
        assert_eq!(ip.dst_addr, "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert!(!flags.contains(NdiscNeighborFlags::SOLICITED));
        assert_eq!(ndp.poll_event(), Some(NdpEvent::Defended(other)));
    }

    #[test]
    fn messages_that_crossed_a_router_or_carry_a_bad_checksum_are_refused() {
        let mut ndp = responder();
        let me: Ipv6Addr = "fd12:3456:789a:a::1".parse().unwrap();
        let target: Ipv6Addr = "fd12:3456:789a:14::1".parse().unwrap();
        let mut hop = solicit(me, target);
        hop[ETH_LEN + 7] = 64;
        assert_eq!(ndp.handle_frame(&hop), Err(NdpError::HopLimit(64)));
        let mut sum = solicit(me, target);
        let last = sum.len() - 1;
        sum[last] ^= 0xff;
        assert_eq!(ndp.handle_frame(&sum), Err(NdpError::Checksum));
        // Cut short anywhere: an error or ignored, never a reply or a panic.
        let whole = solicit(me, target);
        for len in 0..whole.len() {
            assert!(!matches!(
                ndp.handle_frame(&whole[..len]),
                Ok(NdpOutcome::Reply(_))
            ));
        }
        assert_eq!(ndp.stats().neighbour_replies, 0);
    }

    #[test]
    fn a_solicitation_from_a_group_mac_is_refused_and_counts_nothing() {
        // Found by fuzzing: the reply counter moved on a refused frame.
        let mut ndp = responder();
        let me: Ipv6Addr = "fd12:3456:789a:a::1".parse().unwrap();
        let mut frame = solicit(me, "fd12:3456:789a:14::1".parse().unwrap());
        frame[6] |= 1; // source MAC: a group address
        assert_eq!(ndp.handle_frame(&frame), Err(NdpError::Invalid));
        let stats = ndp.stats();
        assert_eq!((stats.neighbour_replies, stats.malformed), (0, 1));
    }

    #[test]
    fn configs_are_checked() {
        let net: Ipv6Net = "fd00::/48".parse().unwrap();
        let new =
            |guest: &str, mac| NdpResponder::new(NdpConfig::new(net, guest.parse().unwrap(), mac));
        assert!(matches!(
            new("fd00:0:0:1::/80", GATEWAY),
            Err(NdpConfigError::GuestPrefixLength(_))
        ));
        assert!(matches!(
            new("fd01::/64", GATEWAY),
            Err(NdpConfigError::GuestOutsideNetwork { .. })
        ));
        assert!(matches!(
            new("fd00::/64", EthernetAddress::BROADCAST),
            Err(NdpConfigError::GatewayNotUnicast(_))
        ));
    }

    #[test]
    fn link_local_is_modified_eui64() {
        assert_eq!(
            link_local(GUEST),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    proptest::proptest! {
        /// Emitted solicitations parse back; each is answered exactly when
        /// the gateway proxies its target, with an advertisement for it.
        #[test]
        fn solicitations_round_trip(target: u128, dad: bool, in_network: bool, interface: u64) {
            let mut ndp = responder();
            let target = if in_network {
                // Somewhere in the /48: often another guest's /64, or ours.
                Ipv6Addr::from((0xfd12_3456_789au128 << 80) | (target & ((1 << 80) - 1)))
            } else {
                Ipv6Addr::from(target)
            };
            if target.is_multicast() {
                return Ok(());
            }
            let src = if dad {
                Ipv6Addr::UNSPECIFIED
            } else {
                Ipv6Addr::from((0xfd12_3456_789a_000au128 << 64) | u128::from(interface))
            };
            let frame = solicit(src, target);
            let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
            let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
            let parsed = Icmpv6Repr::parse(&src, &ip.dst_addr(), &icmp, &ChecksumCapabilities::default());
            let is_ns = matches!(parsed, Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. })) if target_addr == target);
            proptest::prop_assert!(is_ns);
            match ndp.handle_frame(&frame).unwrap() {
                NdpOutcome::Reply(na) => {
                    proptest::prop_assert!(ndp.proxies(target));
                    let (_, t, _) = advert_target(&na);
                    proptest::prop_assert_eq!(t, target);
                }
                NdpOutcome::Ignored => proptest::prop_assert!(!ndp.proxies(target)),
            }
        }
    }
}
