//! A sans-IO firewall for the virtual network: rules by certificate group,
//! host, CIDR, protocol and port, with connection tracking.
//!
//! The node asks it about every IPv4 packet between the overlay and the
//! guest: [`Firewall::inbound`] after a security association decrypted a
//! packet (before the guest sees it), [`Firewall::outbound`] for a packet
//! from the guest (before it is sealed). The peer is the other end: the
//! source of an inbound packet, the destination of an outbound one; its
//! groups and names come from its verified certificate ([`PeerInfo`]).
//!
//! # Semantics
//!
//! - No rules at all: every packet passes, nothing is parsed or tracked
//!   (the behaviour of a node without a `[firewall]`).
//! - A direction with at least one rule denies what no rule of it allows
//!   (default deny); a direction without rules allows everything.
//! - Every allowed packet creates or refreshes a flow; a packet of a
//!   tracked flow passes in either direction, so replies to an allowed
//!   outbound connection pass an inbound rule set that does not name them.
//!   Flows are keyed by protocol, local and remote address and port (the
//!   echo identifier for ICMP echo), expire after an idle time per protocol
//!   ([`Limits`]) and are bounded in number: when the table is full the
//!   oldest flow is evicted.
//! - A rule matches when all its given parts match (unset parts match
//!   anything): the protocol; the port range, against the packet's
//!   destination port (the local port inbound, the remote port outbound;
//!   a rule with ports matches only TCP and UDP); the peer holds **every**
//!   group the rule lists; the peer is the host named (virtual IP, or a
//!   name of its certificate, or the first label of one); the peer's
//!   address is in the CIDR.
//! - IPv6 ([`Firewall::set_ipv6`]): a peer is the guest whose /64 holds
//!   its IPv6 address, so IPv4 hosts and CIDRs also cover the peer's IPv6
//!   packets. An IPv6 CIDR matches an IPv6 packet by the peer's address,
//!   and an IPv4 packet when the peer's whole /64 lies inside it; an IPv6
//!   host address names the peer whose /64 holds it.
//! - Outbound, a peer whose certificate is not known yet (no security
//!   association so far) holds no groups and names: a rule that needs them
//!   does not match it.
//! - Non-first IPv4 fragments carry no ports and pass: the first fragment
//!   decides, and without it the guest's kernel cannot reassemble the
//!   datagram. A first fragment too short for its transport header, and
//!   any packet that does not parse, is dropped as malformed.
//!
//! It has no dependency on the rest of wow-core besides
//! [`ipsec_ca::Groups`], so it can move into a crate of its own when
//! another overlay wants it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use ipsec_ca::{GroupError, Groups};

/// IP protocol numbers the firewall tells apart.
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
/// ICMP echo request and reply types.
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMPv6 (RFC 4443) and its echo request and reply types.
const ICMPV6: u8 = 58;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// The protocol part of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Any IP protocol.
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (and ICMPv6).
    Icmp,
}

impl Protocol {
    fn matches(self, proto: u8) -> bool {
        match self {
            Protocol::Any => true,
            Protocol::Tcp => proto == TCP,
            Protocol::Udp => proto == UDP,
            Protocol::Icmp => proto == ICMP || proto == ICMPV6,
        }
    }
}

impl FromStr for Protocol {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        match s.to_ascii_lowercase().as_str() {
            "any" => Ok(Protocol::Any),
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            _ => Err(RuleError::BadProtocol(s.to_owned())),
        }
    }
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (at least `first`).
    pub last: u16,
}

impl PortRange {
    /// Parses `22`, `8000-8100` or `any` (`None`).
    pub fn parse(text: &str) -> Result<Option<PortRange>, RuleError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("any") {
            return Ok(None);
        }
        let bad = || RuleError::BadPort(text.to_owned());
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (text, text),
        };
        let first: u16 = first.parse().map_err(|_| bad())?;
        let last: u16 = last.parse().map_err(|_| bad())?;
        if first > last {
            return Err(bad());
        }
        Ok(Some(PortRange { first, last }))
    }

    fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// The host part of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// The peer with this virtual IPv4 address.
    Ip(Ipv4Addr),
    /// The peer whose /64 holds this virtual IPv6 address.
    Ip6(Ipv6Addr),
    /// The peer whose certificate names this host (`db` or
    /// `db.wow.internal`, lowercase).
    Name(String),
}

impl FromStr for Host {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        match s.parse() {
            Ok(IpAddr::V4(ip)) => return Ok(Host::Ip(ip)),
            Ok(IpAddr::V6(ip)) => return Ok(Host::Ip6(ip)),
            Err(_) => {}
        }
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        if ipsec_ca::csr::is_dns_name(&name) {
            Ok(Host::Name(name))
        } else {
            Err(RuleError::BadHost(s.to_owned()))
        }
    }
}

/// Why a rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// Not `any`, `tcp`, `udp` or `icmp`.
    #[error("protocol {0:?} is not any, tcp, udp or icmp")]
    BadProtocol(String),
    /// Not a port, a range `A-B` with A ≤ B, or `any`.
    #[error("port {0:?} is not a port, a range A-B or any")]
    BadPort(String),
    /// Ports given with protocol `icmp`.
    #[error("an icmp rule cannot name ports")]
    PortWithIcmp,
    /// A malformed group.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// Neither an IP address nor a host name.
    #[error("host {0:?} is neither an IP address nor a host name")]
    BadHost(String),
}

/// One rule: every part that is set must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The protocol.
    pub protocol: Protocol,
    /// The destination port range (TCP and UDP only); `None`: any.
    pub ports: Option<PortRange>,
    /// Groups the peer must all hold; empty: any peer.
    pub groups: Groups,
    /// The peer; `None`: any.
    pub host: Option<Host>,
    /// The network the peer's address is in (IPv4 or IPv6); `None`: any.
    pub cidr: Option<IpNet>,
}

impl Rule {
    /// A rule allowing everything (refine it with the fields).
    pub fn any() -> Self {
        Rule {
            protocol: Protocol::Any,
            ports: None,
            groups: Groups::empty(),
            host: None,
            cidr: None,
        }
    }

    /// A rule from its text parts (as in the node's configuration):
    /// `proto` any/tcp/udp/icmp, `port` like [`PortRange::parse`], groups,
    /// an optional host (`any` is none) and CIDR.
    pub fn parse(
        proto: &str,
        port: &str,
        groups: &[String],
        host: Option<&str>,
        cidr: Option<IpNet>,
    ) -> Result<Self, RuleError> {
        let protocol: Protocol = proto.parse()?;
        let ports = PortRange::parse(port)?;
        if protocol == Protocol::Icmp && ports.is_some() {
            return Err(RuleError::PortWithIcmp);
        }
        let host = match host {
            None => None,
            Some(h) if h.eq_ignore_ascii_case("any") => None,
            Some(h) => Some(h.parse()?),
        };
        Ok(Rule {
            protocol,
            ports,
            groups: Groups::new(groups)?,
            host,
            cidr: cidr.map(|c| c.trunc()),
        })
    }

    /// Whether the rule matches `packet`, whose peer-side address is
    /// `peer_addr`, held by the guest at `peer_ip`.
    fn matches(
        &self,
        packet: &Summary,
        peer_addr: IpAddr,
        peer_ip: Ipv4Addr,
        plan: Option<&crate::ipv6::Plan>,
        peer: Option<&PeerInfo<'_>>,
    ) -> bool {
        if !self.protocol.matches(packet.proto) {
            return false;
        }
        if let Some(ports) = self.ports
            && !((packet.proto == TCP || packet.proto == UDP) && ports.contains(packet.dst_port))
        {
            return false;
        }
        let in_cidr = match (self.cidr, peer_addr) {
            (None, _) => true,
            (Some(IpNet::V4(net)), _) => net.contains(&peer_ip),
            (Some(IpNet::V6(net)), IpAddr::V6(addr)) => net.contains(&addr),
            (Some(IpNet::V6(net)), IpAddr::V4(_)) => plan
                .and_then(|p| p.subnet_of(peer_ip))
                .is_some_and(|subnet| net.contains(&subnet)),
        };
        if !in_cidr {
            return false;
        }
        match &self.host {
            None => {}
            Some(Host::Ip(ip)) if *ip == peer_ip => {}
            Some(Host::Ip6(ip)) if plan.and_then(|p| p.owner_of(*ip)) == Some(peer_ip) => {}
            Some(Host::Name(name)) if peer.is_some_and(|p| p.has_name(name)) => {}
            Some(_) => return false,
        }
        self.groups.is_empty()
            || peer.is_some_and(|p| self.groups.iter().all(|g| p.groups.contains(g)))
    }
}

/// The rule sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// What may reach the guest; empty: everything.
    pub inbound: Vec<Rule>,
    /// What the guest may send; empty: everything.
    pub outbound: Vec<Rule>,
}

/// Bounds of the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most flows held; the oldest is evicted for a new one beyond.
    pub max_flows: usize,
    /// Idle time after which a TCP flow is forgotten.
    pub tcp_idle: Duration,
    /// Idle time after which a UDP flow is forgotten.
    pub udp_idle: Duration,
    /// Idle time after which any other flow (ICMP echo, other protocols)
    /// is forgotten.
    pub other_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: 65_536,
            tcp_idle: Duration::from_secs(12 * 60),
            udp_idle: Duration::from_secs(3 * 60),
            other_idle: Duration::from_secs(60),
        }
    }
}

/// What the firewall knows of a peer, from its verified certificate.
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo<'a> {
    /// Its groups.
    pub groups: &'a Groups,
    /// Its certified host names (`db.wow.internal`).
    pub names: &'a [String],
}

impl PeerInfo<'_> {
    fn has_name(&self, wanted: &str) -> bool {
        self.names.iter().any(|n| {
            n.eq_ignore_ascii_case(wanted)
                || n.split('.')
                    .next()
                    .is_some_and(|label| label.eq_ignore_ascii_case(wanted))
        })
    }
}

/// Most peers [`PeerTable`] holds (one per security association; the SA
/// endpoint bounds those already).
const MAX_PEERS: usize = 65_536;

/// The groups and names of the peers with a security association, read
/// from the certificates their SAs verified: [`PeerInfo`] for the
/// firewall.
#[derive(Debug, Default)]
pub struct PeerTable {
    peers: HashMap<Ipv4Addr, (Groups, Vec<String>)>,
}

impl PeerTable {
    /// Records the certificate `cert_der` that `ip` authenticated with (a
    /// certificate that does not parse records no groups or names).
    pub fn learn(&mut self, ip: Ipv4Addr, cert_der: &[u8]) {
        let groups = ipsec_ca::verify::certificate_groups(cert_der).unwrap_or_default();
        let names = ipsec_ca::verify::certificate_dns_names(cert_der).unwrap_or_default();
        if self.peers.len() < MAX_PEERS || self.peers.contains_key(&ip) {
            self.peers.insert(ip, (groups, names));
        }
    }

    /// Forgets `ip` (its SAs are gone).
    pub fn forget(&mut self, ip: Ipv4Addr) {
        self.peers.remove(&ip);
    }

    /// What is known of `ip`.
    pub fn get(&self, ip: Ipv4Addr) -> Option<PeerInfo<'_>> {
        self.peers
            .get(&ip)
            .map(|(groups, names)| PeerInfo { groups, names })
    }
}

/// Why a packet passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// The direction has no rules.
    NoRules,
    /// A rule allowed it.
    Rule,
    /// It belongs to a tracked flow.
    Tracked,
    /// A non-first fragment (see the [module docs](self)).
    Fragment,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// No rule allows it and it belongs to no flow.
    NoRule,
    /// It does not parse as IPv4 with its transport header.
    Malformed,
}

/// The firewall's decision on one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver it.
    Allow(Allow),
    /// Drop it.
    Drop(Drop),
}

impl Decision {
    /// Whether the packet may pass.
    pub fn is_allowed(self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Decision counters by direction and reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FirewallCounters {
    /// Inbound packets a rule allowed.
    pub in_rule: u64,
    /// Inbound packets of a tracked flow.
    pub in_tracked: u64,
    /// Inbound packets dropped: no rule, no flow.
    pub in_dropped: u64,
    /// Outbound packets a rule allowed.
    pub out_rule: u64,
    /// Outbound packets of a tracked flow.
    pub out_tracked: u64,
    /// Outbound packets dropped: no rule, no flow.
    pub out_dropped: u64,
    /// Packets (either direction) of a direction without rules.
    pub no_rules: u64,
    /// Non-first fragments passed.
    pub fragments: u64,
    /// Packets dropped as malformed.
    pub malformed: u64,
    /// Flows evicted because the table was full.
    pub evicted: u64,
}

/// What the firewall reads of a packet.
#[derive(Debug, Clone, Copy)]
struct Summary {
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    /// A fragment after the first.
    later_fragment: bool,
}

/// Parses an IPv4 or IPv6 packet; `None` if malformed.
fn summarize(packet: &[u8]) -> Option<Summary> {
    let (mut s, payload) = if packet.first().map(|b| b >> 4) == Some(6) {
        let ip = etherparse::Ipv6Slice::from_slice(packet).ok()?;
        let header = ip.header();
        let payload = ip.payload();
        let s = Summary {
            proto: payload.ip_number.0,
            src: IpAddr::V6(header.source_addr()),
            dst: IpAddr::V6(header.destination_addr()),
            src_port: 0,
            dst_port: 0,
            later_fragment: payload.fragmented
                && ip.extensions().first_header().is_some()
                && {
                    // A fragment header: only the first fragment has ports.
                    ip.extensions().clone()
                    .into_iter()
                    .any(|h| matches!(h, etherparse::Ipv6ExtensionSlice::Fragment(f) if f.to_header().fragment_offset.value() != 0))
                },
        };
        (s, payload.payload)
    } else {
        let ip = etherparse::Ipv4Slice::from_slice(packet).ok()?;
        let header = ip.header();
        let payload = ip.payload();
        let s = Summary {
            proto: payload.ip_number.0,
            src: IpAddr::V4(header.source_addr()),
            dst: IpAddr::V4(header.destination_addr()),
            src_port: 0,
            dst_port: 0,
            later_fragment: header.fragments_offset().value() != 0,
        };
        (s, payload.payload)
    };
    let proto = s.proto;
    if s.later_fragment {
        return Some(s);
    }
    let bytes = payload;
    match proto {
        TCP => {
            let tcp = etherparse::TcpHeaderSlice::from_slice(bytes).ok()?;
            (s.src_port, s.dst_port) = (tcp.source_port(), tcp.destination_port());
        }
        UDP => {
            let udp = etherparse::UdpHeaderSlice::from_slice(bytes).ok()?;
            (s.src_port, s.dst_port) = (udp.source_port(), udp.destination_port());
        }
        ICMP => {
            let icmp = etherparse::Icmpv4Slice::from_slice(bytes).ok()?;
            if matches!(icmp.type_u8(), ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) {
                // An echo and its reply share the identifier.
                let [a, b, _, _] = icmp.bytes5to8();
                let id = u16::from_be_bytes([a, b]);
                (s.src_port, s.dst_port) = (id, id);
            }
        }
        ICMPV6 => {
            let icmp = etherparse::Icmpv6Slice::from_slice(bytes).ok()?;
            if matches!(icmp.type_u8(), ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY) {
                let [a, b, _, _] = icmp.bytes5to8();
                let id = u16::from_be_bytes([a, b]);
                (s.src_port, s.dst_port) = (id, id);
            }
        }
        _ => {}
    }
    Some(s)
}

/// A flow, from the guest's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    proto: u8,
    local: IpAddr,
    remote: IpAddr,
    local_port: u16,
    remote_port: u16,
}

impl std::hash::Hash for FlowKey {
    /// One write of the key's bytes (per field, the hashing was most of a
    /// tracked packet's time). IPv4 addresses are hashed as their IPv4-mapped IPv6 form;
    /// equality still tells the families apart.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let v6 = |a: IpAddr| match a {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let mut bytes = [0u8; 37];
        bytes[0] = self.proto;
        bytes[1..17].copy_from_slice(&v6(self.local));
        bytes[17..33].copy_from_slice(&v6(self.remote));
        bytes[33..35].copy_from_slice(&self.local_port.to_be_bytes());
        bytes[35..37].copy_from_slice(&self.remote_port.to_be_bytes());
        state.write(&bytes);
    }
}

/// How stale a flow's recorded last use may be while packets of it keep
/// coming through [`ConnTrack::last`] without a table look-up (at most this
/// early, an idle flow expires).
const TOUCH_GRANULE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Flow {
    last_seen: Instant,
    /// Insertion number: matches the flow's entry in the eviction queue.
    generation: u64,
}

/// The bounded flow table.
#[derive(Debug)]
struct ConnTrack {
    /// Keyed by what peers send (addresses, ports): aHash with keys from
    /// the OS, so nobody can aim packets at one bucket, at a fraction of
    /// SipHash's cost per packet.
    flows: HashMap<FlowKey, Flow, ahash::RandomState>,
    /// Flows in insertion order, for eviction; entries whose generation no
    /// longer matches are stale and skipped (and compacted away).
    order: VecDeque<(FlowKey, u64)>,
    next_generation: u64,
    limits: Limits,
    /// The flow used last and when its `last_seen` was written: a bulk
    /// transfer's packets (and its replies: one key from the guest's side)
    /// skip the hash look-up until [`TOUCH_GRANULE`] has passed. Always a
    /// flow present in `flows`.
    last: Option<(FlowKey, Instant)>,
}

impl ConnTrack {
    fn new(limits: Limits) -> Self {
        ConnTrack {
            flows: HashMap::with_hasher(ahash::RandomState::new()),
            order: VecDeque::new(),
            next_generation: 0,
            limits,
            last: None,
        }
    }

    fn idle(&self, proto: u8) -> Duration {
        match proto {
            TCP => self.limits.tcp_idle,
            UDP => self.limits.udp_idle,
            _ => self.limits.other_idle,
        }
    }

    /// Whether `key` is a live flow; refreshes it if so, forgets it if idle.
    fn touch(&mut self, key: &FlowKey, now: Instant) -> bool {
        let idle = self.idle(key.proto);
        if let Some((last, written)) = &self.last
            && last == key
            && now.saturating_duration_since(*written) < TOUCH_GRANULE.min(idle)
        {
            return true;
        }
        let Some(flow) = self.flows.get_mut(key) else {
            return false;
        };
        if now.saturating_duration_since(flow.last_seen) > idle {
            self.flows.remove(key);
            if self.last.is_some_and(|(k, _)| k == *key) {
                self.last = None;
            }
            return false;
        }
        flow.last_seen = now;
        self.last = Some((*key, now));
        true
    }

    /// Tracks `key` (already checked absent); returns how many flows were
    /// evicted for it.
    fn insert(&mut self, key: FlowKey, now: Instant) -> u64 {
        let max = self.limits.max_flows.max(1);
        let mut evicted = 0;
        while self.flows.len() >= max {
            let Some((old, generation)) = self.order.pop_front() else {
                break;
            };
            if self
                .flows
                .get(&old)
                .is_some_and(|f| f.generation == generation)
            {
                self.flows.remove(&old);
                if self.last.is_some_and(|(k, _)| k == old) {
                    self.last = None;
                }
                evicted += 1;
            }
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.flows.insert(
            key,
            Flow {
                last_seen: now,
                generation,
            },
        );
        self.order.push_back((key, generation));
        self.last = Some((key, now));
        if self.order.len() > 2 * max {
            let flows = &self.flows;
            self.order
                .retain(|(k, g)| flows.get(k).is_some_and(|f| f.generation == *g));
        }
        evicted
    }
}

/// The firewall: rules, the flow table, counters.
#[derive(Debug)]
pub struct Firewall {
    rules: Rules,
    /// Maps IPv6 peers to the IPv4 address rules name them by.
    ipv6: Option<crate::ipv6::Plan>,
    conntrack: ConnTrack,
    counters: FirewallCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Inbound,
    Outbound,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall::new(Rules::default(), Limits::default())
    }
}

impl Firewall {
    /// A firewall enforcing `rules` within `limits`.
    pub fn new(rules: Rules, limits: Limits) -> Self {
        Firewall {
            rules,
            ipv6: None,
            conntrack: ConnTrack::new(limits),
            counters: FirewallCounters::default(),
        }
    }

    /// Lets IPv6 packets through the rules: a peer's IPv6 address counts
    /// as the IPv4 address whose /64 holds it (see [`crate::ipv6`]).
    pub fn set_ipv6(&mut self, plan: Option<crate::ipv6::Plan>) {
        self.ipv6 = plan;
    }

    /// Whether any rule is set (otherwise every packet passes untouched).
    pub fn is_active(&self) -> bool {
        !self.rules.inbound.is_empty() || !self.rules.outbound.is_empty()
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The counters.
    pub fn counters(&self) -> FirewallCounters {
        self.counters
    }

    /// Flows held (idle ones included until they are looked up or evicted).
    pub fn flow_count(&self) -> usize {
        self.conntrack.flows.len()
    }

    /// Decides on a decrypted IPv4 `packet` from `peer` (the holder of the
    /// packet's source address) to the guest.
    pub fn inbound(
        &mut self,
        now: Instant,
        packet: &[u8],
        peer: Option<&PeerInfo<'_>>,
    ) -> Decision {
        self.decide(now, Direction::Inbound, packet, || peer.copied())
    }

    /// [`Firewall::inbound`], asking `peer` for the peer's groups and
    /// names only when a rule must be walked (not for a tracked flow's
    /// packets, most of them).
    pub fn inbound_with<'a>(
        &mut self,
        now: Instant,
        packet: &[u8],
        peer: impl FnOnce() -> Option<PeerInfo<'a>>,
    ) -> Decision {
        self.decide(now, Direction::Inbound, packet, peer)
    }

    /// Decides on an IPv4 `packet` from the guest to `peer` (the holder of
    /// the destination address, if its certificate is known).
    pub fn outbound(
        &mut self,
        now: Instant,
        packet: &[u8],
        peer: Option<&PeerInfo<'_>>,
    ) -> Decision {
        self.decide(now, Direction::Outbound, packet, || peer.copied())
    }

    /// [`Firewall::outbound`] with the peer looked up only when needed
    /// (see [`Firewall::inbound_with`]).
    pub fn outbound_with<'a>(
        &mut self,
        now: Instant,
        packet: &[u8],
        peer: impl FnOnce() -> Option<PeerInfo<'a>>,
    ) -> Decision {
        self.decide(now, Direction::Outbound, packet, peer)
    }

    fn decide<'a>(
        &mut self,
        now: Instant,
        direction: Direction,
        packet: &[u8],
        peer: impl FnOnce() -> Option<PeerInfo<'a>>,
    ) -> Decision {
        if !self.is_active() {
            return Decision::Allow(Allow::NoRules);
        }
        let Some(s) = summarize(packet) else {
            self.counters.malformed += 1;
            return Decision::Drop(Drop::Malformed);
        };
        if s.later_fragment {
            self.counters.fragments += 1;
            return Decision::Allow(Allow::Fragment);
        }
        let (key, peer_ip) = match direction {
            Direction::Inbound => (
                FlowKey {
                    proto: s.proto,
                    local: s.dst,
                    remote: s.src,
                    local_port: s.dst_port,
                    remote_port: s.src_port,
                },
                s.src,
            ),
            Direction::Outbound => (
                FlowKey {
                    proto: s.proto,
                    local: s.src,
                    remote: s.dst,
                    local_port: s.src_port,
                    remote_port: s.dst_port,
                },
                s.dst,
            ),
        };
        let peer_addr = peer_ip;
        let peer_ip = match peer_ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => self.ipv6.and_then(|p| p.owner_of(a)),
        };
        let Some(peer_ip) = peer_ip else {
            self.counters.malformed += 1;
            return Decision::Drop(Drop::Malformed);
        };
        let inbound = direction == Direction::Inbound;
        if self.conntrack.touch(&key, now) {
            if inbound {
                self.counters.in_tracked += 1;
            } else {
                self.counters.out_tracked += 1;
            }
            return Decision::Allow(Allow::Tracked);
        }
        let rules = if inbound {
            &self.rules.inbound
        } else {
            &self.rules.outbound
        };
        let allow = if rules.is_empty() {
            self.counters.no_rules += 1;
            Allow::NoRules
        } else {
            // The peer's groups and names: looked up only now.
            let peer = peer();
            let plan = self.ipv6.as_ref();
            let matched = rules
                .iter()
                .any(|r| r.matches(&s, peer_addr, peer_ip, plan, peer.as_ref()));
            match (matched, inbound) {
                (true, true) => self.counters.in_rule += 1,
                (true, false) => self.counters.out_rule += 1,
                (false, true) => self.counters.in_dropped += 1,
                (false, false) => self.counters.out_dropped += 1,
            }
            if !matched {
                return Decision::Drop(Drop::NoRule);
            }
            Allow::Rule
        };
        self.counters.evicted += self.conntrack.insert(key, now);
        Decision::Allow(allow)
    }
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 3);

    fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
            .tcp(sport, dport, 1, 1000)
            .syn()
            .write(&mut out, b"")
            .unwrap();
        out
    }

    fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
            .udp(sport, dport)
            .write(&mut out, b"x")
            .unwrap();
        out
    }

    fn echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, request: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let b = etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
        let b = if request {
            b.icmpv4_echo_request(id, 1)
        } else {
            b.icmpv4_echo_reply(id, 1)
        };
        b.write(&mut out, b"ping").unwrap();
        out
    }

    fn rule(proto: &str, port: &str) -> Rule {
        Rule::parse(proto, port, &[], None, None).unwrap()
    }

    fn inbound_only(rules: Vec<Rule>) -> Firewall {
        Firewall::new(
            Rules {
                inbound: rules,
                outbound: vec![],
            },
            Limits::default(),
        )
    }

    fn peer<'a>(groups: &'a Groups, names: &'a [String]) -> PeerInfo<'a> {
        PeerInfo { groups, names }
    }

    #[test]
    fn no_rules_allow_everything_without_parsing() {
        let mut fw = Firewall::default();
        let now = Instant::now();
        assert_eq!(
            fw.inbound(now, b"garbage", None),
            Decision::Allow(Allow::NoRules)
        );
        assert_eq!(fw.counters(), FirewallCounters::default());
        assert_eq!(fw.flow_count(), 0);
    }

    /// The IPv6 address with interface id `iid` in the /64 of `v4`.
    fn v6(v4: Ipv4Addr, iid: u64) -> [u8; 16] {
        let plan = crate::ipv6::Plan::new(
            "10.128.0.0/16".parse().unwrap(),
            "fd12:3456:789a::/48".parse().unwrap(),
        )
        .unwrap();
        let net = plan.subnet_of(v4).unwrap();
        (u128::from(net.network()) | u128::from(iid)).to_be_bytes()
    }

    fn tcp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, syn: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let b = etherparse::PacketBuilder::ipv6(src, dst, 64).tcp(sport, dport, 1, 1000);
        let b = if syn { b.syn() } else { b.ack(1) };
        b.write(&mut out, b"").unwrap();
        out
    }

    fn echo6(src: [u8; 16], dst: [u8; 16], id: u16, request: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let b = etherparse::PacketBuilder::ipv6(src, dst, 64);
        let b = if request {
            b.icmpv6_echo_request(id, 1)
        } else {
            b.icmpv6_echo_reply(id, 1)
        };
        b.write(&mut out, b"ping").unwrap();
        out
    }

    #[test]
    fn ipv6_packets_meet_the_rules_of_their_ipv4_owner_and_replies_are_tracked() {
        let mut fw = inbound_only(vec![
            rule("icmp", "any"),
            Rule {
                host: Some(Host::Ip(PEER)),
                ..rule("tcp", "22")
            },
        ]);
        fw.set_ipv6(Some(
            crate::ipv6::Plan::new(
                "10.128.0.0/16".parse().unwrap(),
                "fd12:3456:789a::/48".parse().unwrap(),
            )
            .unwrap(),
        ));
        let now = Instant::now();
        let (guest, peer) = (v6(GUEST, 0x10), v6(PEER, 0x20));
        let other = v6(Ipv4Addr::new(10, 128, 0, 4), 0x20);
        assert!(
            fw.inbound(now, &tcp6(peer, 999, guest, 22, true), None)
                .is_allowed()
        );
        // The rule names PEER: another guest's /64 does not match it.
        assert!(
            !fw.inbound(now, &tcp6(other, 999, guest, 22, true), None)
                .is_allowed()
        );
        assert!(
            !fw.inbound(now, &tcp6(peer, 999, guest, 23, true), None)
                .is_allowed()
        );
        assert!(
            fw.inbound(now, &echo6(other, guest, 7, true), None)
                .is_allowed()
        );
        // The guest's own connection out: the reply is tracked.
        let out = Firewall::new(
            Rules {
                inbound: vec![rule("tcp", "22")],
                outbound: vec![],
            },
            Limits::default(),
        );
        let mut out = out;
        out.set_ipv6(fw.ipv6);
        assert!(
            out.outbound(now, &tcp6(guest, 40000, other, 80, true), None)
                .is_allowed()
        );
        assert_eq!(
            out.inbound(now, &tcp6(other, 80, guest, 40000, false), None),
            Decision::Allow(Allow::Tracked)
        );
        // Outside the network's prefix: no owner, dropped.
        let far = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        assert!(
            !fw.inbound(now, &echo6(far, guest, 7, true), None)
                .is_allowed()
        );
    }

    #[test]
    fn protocol_and_port_rules() {
        let mut fw = inbound_only(vec![rule("tcp", "22"), rule("udp", "5000-5010")]);
        let now = Instant::now();
        assert!(
            fw.inbound(now, &tcp(PEER, 999, GUEST, 22), None)
                .is_allowed()
        );
        assert!(
            !fw.inbound(now, &tcp(PEER, 999, GUEST, 23), None)
                .is_allowed()
        );
        assert!(
            !fw.inbound(now, &udp(PEER, 999, GUEST, 22), None)
                .is_allowed()
        );
        assert!(
            fw.inbound(now, &udp(PEER, 1, GUEST, 5010), None)
                .is_allowed()
        );
        assert!(
            !fw.inbound(now, &udp(PEER, 1, GUEST, 5011), None)
                .is_allowed()
        );
        assert!(
            !fw.inbound(now, &echo(PEER, GUEST, 1, true), None)
                .is_allowed()
        );
        let c = fw.counters();
        assert_eq!((c.in_rule, c.in_dropped), (2, 4));
    }

    #[test]
    fn icmp_and_any_rules() {
        let mut fw = inbound_only(vec![rule("icmp", "any")]);
        let now = Instant::now();
        assert!(
            fw.inbound(now, &echo(PEER, GUEST, 7, true), None)
                .is_allowed()
        );
        assert!(!fw.inbound(now, &tcp(PEER, 1, GUEST, 80), None).is_allowed());
        let mut fw = inbound_only(vec![rule("any", "80")]);
        assert!(fw.inbound(now, &tcp(PEER, 1, GUEST, 80), None).is_allowed());
        assert!(fw.inbound(now, &udp(PEER, 1, GUEST, 80), None).is_allowed());
        // A rule with ports matches only TCP and UDP.
        assert!(
            !fw.inbound(now, &echo(PEER, GUEST, 80, true), None)
                .is_allowed()
        );
        assert_eq!(
            Rule::parse("icmp", "1", &[], None, None),
            Err(RuleError::PortWithIcmp)
        );
    }

    #[test]
    fn group_rules_need_every_group() {
        let admins = vec!["admin".to_owned(), "ops".to_owned()];
        let r = Rule::parse("tcp", "22", &admins, None, None).unwrap();
        let mut fw = inbound_only(vec![r]);
        let now = Instant::now();
        let both = Groups::parse_list("admin,ops,web").unwrap();
        let one = Groups::parse_list("admin").unwrap();
        let p = tcp(PEER, 1, GUEST, 22);
        assert!(fw.inbound(now, &p, Some(&peer(&both, &[]))).is_allowed());
        let p = tcp(PEER, 2, GUEST, 22);
        assert!(!fw.inbound(now, &p, Some(&peer(&one, &[]))).is_allowed());
        assert!(!fw.inbound(now, &p, None).is_allowed());
        assert!(Rule::parse("tcp", "22", &["Bad Group".into()], None, None).is_err());
    }

    #[test]
    fn host_rules_by_ip_and_name() {
        let now = Instant::now();
        let none = Groups::empty();
        let names = vec!["db.wow.internal".to_owned()];
        let mut fw = inbound_only(vec![
            Rule::parse("any", "any", &[], Some("10.128.0.3"), None).unwrap(),
        ]);
        assert!(fw.inbound(now, &tcp(PEER, 1, GUEST, 5), None).is_allowed());
        let other = Ipv4Addr::new(10, 128, 0, 4);
        assert!(!fw.inbound(now, &tcp(other, 1, GUEST, 5), None).is_allowed());
        for host in ["db", "db.wow.internal", "DB.wow.internal."] {
            let mut fw = inbound_only(vec![
                Rule::parse("any", "any", &[], Some(host), None).unwrap(),
            ]);
            let p = tcp(other, 1, GUEST, 5);
            assert!(
                fw.inbound(now, &p, Some(&peer(&none, &names))).is_allowed(),
                "{host}"
            );
            assert!(!fw.inbound(now, &tcp(other, 2, GUEST, 5), None).is_allowed());
        }
        assert!(Rule::parse("any", "any", &[], Some("a b"), None).is_err());
    }

    #[test]
    fn cidr_rules() {
        let now = Instant::now();
        let net: ipnet::Ipv4Net = "10.128.0.0/30".parse().unwrap();
        let mut fw = inbound_only(vec![
            Rule::parse("any", "any", &[], None, Some(net.into())).unwrap(),
        ]);
        assert!(fw.inbound(now, &tcp(PEER, 1, GUEST, 5), None).is_allowed());
        let far = Ipv4Addr::new(10, 128, 0, 9);
        assert!(!fw.inbound(now, &tcp(far, 1, GUEST, 5), None).is_allowed());
    }

    fn plan() -> crate::ipv6::Plan {
        crate::ipv6::Plan::new(
            "10.128.0.0/16".parse().unwrap(),
            "fd12:3456:789a::/48".parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn ipv6_cidr_rules_match_by_address_and_by_whole_subnet() {
        let now = Instant::now();
        // PEER (10.128.0.3) holds fd12:3456:789a:3::/64; a /62 from :0 holds
        // the /64s of .0 to .3, so PEER but not 10.128.0.4.
        let cidr = "fd12:3456:789a::/62".parse().unwrap();
        let mut fw = inbound_only(vec![
            Rule::parse("tcp", "any", &[], None, Some(cidr)).unwrap(),
        ]);
        fw.set_ipv6(Some(plan()));
        let far = Ipv4Addr::new(10, 128, 0, 4);
        let guest = v6(GUEST, 0x10);
        assert!(
            fw.inbound(now, &tcp6(v6(PEER, 1), 9, guest, 22, true), None)
                .is_allowed()
        );
        assert!(
            !fw.inbound(now, &tcp6(v6(far, 1), 9, guest, 22, true), None)
                .is_allowed()
        );
        // The same rule covers the peer's IPv4 packets: its /64 is inside.
        assert!(fw.inbound(now, &tcp(PEER, 9, GUEST, 22), None).is_allowed());
        assert!(!fw.inbound(now, &tcp(far, 9, GUEST, 22), None).is_allowed());

        // A /128: exactly one address; IPv4 packets cannot be in it.
        let one = std::net::Ipv6Addr::from(v6(PEER, 1));
        let mut fw = inbound_only(vec![
            Rule::parse("tcp", "any", &[], None, Some(IpNet::from(IpAddr::V6(one)))).unwrap(),
        ]);
        fw.set_ipv6(Some(plan()));
        assert!(
            fw.inbound(now, &tcp6(v6(PEER, 1), 9, guest, 22, true), None)
                .is_allowed()
        );
        assert!(
            !fw.inbound(now, &tcp6(v6(PEER, 2), 9, guest, 22, true), None)
                .is_allowed()
        );
        assert!(!fw.inbound(now, &tcp(PEER, 9, GUEST, 22), None).is_allowed());

        // Without an IPv6 plan an IPv6 CIDR matches no IPv4 packet.
        let mut fw = inbound_only(vec![
            Rule::parse("tcp", "any", &[], None, Some(cidr)).unwrap(),
        ]);
        assert!(!fw.inbound(now, &tcp(PEER, 9, GUEST, 22), None).is_allowed());
    }

    #[test]
    fn ipv6_host_names_the_peer_whose_subnet_holds_it() {
        let now = Instant::now();
        let host = std::net::Ipv6Addr::from(v6(PEER, 0x77)).to_string();
        let mut fw = inbound_only(vec![
            Rule::parse("tcp", "22", &[], Some(&host), None).unwrap(),
        ]);
        fw.set_ipv6(Some(plan()));
        let far = Ipv4Addr::new(10, 128, 0, 4);
        assert!(fw.inbound(now, &tcp(PEER, 9, GUEST, 22), None).is_allowed());
        assert!(
            fw.inbound(now, &tcp6(v6(PEER, 5), 9, v6(GUEST, 1), 22, true), None)
                .is_allowed()
        );
        assert!(!fw.inbound(now, &tcp(far, 9, GUEST, 22), None).is_allowed());
        // Without a plan the address names nobody.
        let mut fw = inbound_only(vec![
            Rule::parse("tcp", "22", &[], Some(&host), None).unwrap(),
        ]);
        assert!(!fw.inbound(now, &tcp(PEER, 9, GUEST, 22), None).is_allowed());
    }

    #[test]
    fn a_busy_flow_stays_tracked_and_expires_once_idle_despite_the_last_flow_shortcut() {
        let mut fw = inbound_only(vec![rule("tcp", "22")]);
        let idle = Limits::default().udp_idle;
        let t0 = Instant::now();
        assert!(fw.outbound(t0, &udp(GUEST, 5, PEER, 6), None).is_allowed());
        // Packets every 300 ms for twice the idle time: never forgotten.
        let mut t = t0;
        while t < t0 + 2 * idle {
            t += Duration::from_millis(300);
            assert_eq!(
                fw.inbound(t, &udp(PEER, 6, GUEST, 5), None),
                Decision::Allow(Allow::Tracked)
            );
        }
        // Then silence past the idle time: dropped, shortcut or not.
        let late = t + idle + TOUCH_GRANULE;
        assert!(!fw.inbound(late, &udp(PEER, 6, GUEST, 5), None).is_allowed());
        // Another flow in between takes the shortcut's place; each keeps
        // its own time.
        assert!(
            fw.outbound(late, &udp(GUEST, 7, PEER, 8), None)
                .is_allowed()
        );
        assert!(
            fw.outbound(late, &udp(GUEST, 9, PEER, 10), None)
                .is_allowed()
        );
        let later = late + idle - Duration::from_secs(2);
        assert!(
            fw.inbound(later, &udp(PEER, 8, GUEST, 7), None)
                .is_allowed()
        );
        assert!(
            fw.inbound(later, &udp(PEER, 10, GUEST, 9), None)
                .is_allowed()
        );
    }

    #[test]
    fn attack_an_evicted_flow_does_not_pass_through_the_last_flow_shortcut() {
        let mut fw = Firewall::new(
            Rules {
                inbound: vec![rule("tcp", "22")],
                outbound: vec![],
            },
            Limits {
                max_flows: 1,
                ..Limits::default()
            },
        );
        let now = Instant::now();
        assert!(fw.outbound(now, &udp(GUEST, 5, PEER, 6), None).is_allowed());
        assert!(fw.inbound(now, &udp(PEER, 6, GUEST, 5), None).is_allowed());
        // A second flow evicts the first (table of one).
        assert!(fw.outbound(now, &udp(GUEST, 7, PEER, 8), None).is_allowed());
        assert!(!fw.inbound(now, &udp(PEER, 6, GUEST, 5), None).is_allowed());
        assert!(fw.inbound(now, &udp(PEER, 8, GUEST, 7), None).is_allowed());
    }

    #[test]
    fn ports_parse() {
        assert_eq!(PortRange::parse("any"), Ok(None));
        assert_eq!(
            PortRange::parse("80-90"),
            Ok(Some(PortRange {
                first: 80,
                last: 90
            }))
        );
        assert!(PortRange::parse("90-80").is_err());
        assert!(PortRange::parse("65536").is_err());
        assert!(PortRange::parse("x").is_err());
        assert!("gre".parse::<Protocol>().is_err());
    }

    #[test]
    fn outbound_rules_deny_by_default_once_set() {
        let mut fw = Firewall::new(
            Rules {
                inbound: vec![],
                outbound: vec![rule("tcp", "443")],
            },
            Limits::default(),
        );
        let now = Instant::now();
        assert!(
            fw.outbound(now, &tcp(GUEST, 1, PEER, 443), None)
                .is_allowed()
        );
        assert!(
            !fw.outbound(now, &tcp(GUEST, 1, PEER, 80), None)
                .is_allowed()
        );
        // Inbound has no rules: allowed, and tracked so the reply passes.
        assert!(
            fw.inbound(now, &udp(PEER, 53, GUEST, 999), None)
                .is_allowed()
        );
        assert!(
            fw.outbound(now, &udp(GUEST, 999, PEER, 53), None)
                .is_allowed()
        );
        assert_eq!(fw.counters().out_tracked, 1);
    }

    #[test]
    fn replies_to_outbound_flows_pass_and_idle_flows_expire() {
        let mut fw = inbound_only(vec![rule("tcp", "22")]);
        let t0 = Instant::now();
        assert!(
            fw.outbound(t0, &tcp(GUEST, 40000, PEER, 80), None)
                .is_allowed()
        );
        assert_eq!(
            fw.inbound(t0, &tcp(PEER, 80, GUEST, 40000), None),
            Decision::Allow(Allow::Tracked)
        );
        // Another port of the same peer is not part of the flow.
        assert!(
            !fw.inbound(t0, &tcp(PEER, 80, GUEST, 40001), None)
                .is_allowed()
        );
        // ICMP echo: the reply to our ping passes, not another identifier.
        assert!(
            fw.outbound(t0, &echo(GUEST, PEER, 9, true), None)
                .is_allowed()
        );
        assert!(
            fw.inbound(t0, &echo(PEER, GUEST, 9, false), None)
                .is_allowed()
        );
        assert!(
            !fw.inbound(t0, &echo(PEER, GUEST, 10, false), None)
                .is_allowed()
        );
        // Idle beyond the TCP timeout: forgotten.
        let late = t0 + Limits::default().tcp_idle + Duration::from_secs(1);
        assert!(
            !fw.inbound(late, &tcp(PEER, 80, GUEST, 40000), None)
                .is_allowed()
        );
        // Traffic keeps a flow alive.
        let mut fw = inbound_only(vec![rule("tcp", "22")]);
        let udp_idle = Limits::default().udp_idle;
        assert!(fw.outbound(t0, &udp(GUEST, 5, PEER, 6), None).is_allowed());
        let mut t = t0;
        for _ in 0..5 {
            t += udp_idle - Duration::from_secs(1);
            assert!(fw.inbound(t, &udp(PEER, 6, GUEST, 5), None).is_allowed());
        }
    }

    #[test]
    fn malformed_and_fragments() {
        let mut fw = inbound_only(vec![rule("tcp", "22")]);
        let now = Instant::now();
        for bad in [&b""[..], &[0x45, 0, 0], &[0x60; 40]] {
            assert_eq!(fw.inbound(now, bad, None), Decision::Drop(Drop::Malformed));
        }
        // A TCP packet cut inside its header (IPv4 length adjusted).
        let mut p = tcp(PEER, 1, GUEST, 22);
        p.truncate(20 + 10);
        p[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(fw.inbound(now, &p, None), Decision::Drop(Drop::Malformed));
        // A later fragment passes; the first fragment is judged by its ports.
        let mut frag = tcp(PEER, 1, GUEST, 23);
        frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        assert_eq!(
            fw.inbound(now, &frag, None),
            Decision::Allow(Allow::Fragment)
        );
        let mut first = tcp(PEER, 1, GUEST, 23);
        first[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        assert!(!fw.inbound(now, &first, None).is_allowed());
        assert_eq!(fw.counters().malformed, 4);
    }

    #[test]
    fn attack_inbound_connection_to_a_port_not_allowed_is_dropped() {
        let mut fw = inbound_only(vec![rule("tcp", "22")]);
        let now = Instant::now();
        assert_eq!(
            fw.inbound(now, &tcp(PEER, 5555, GUEST, 3306), None),
            Decision::Drop(Drop::NoRule)
        );
        assert_eq!(fw.counters().in_dropped, 1);
    }

    #[test]
    fn attack_forged_reply_without_an_outbound_flow_is_dropped() {
        let mut fw = inbound_only(vec![rule("tcp", "22")]);
        let now = Instant::now();
        // The guest talks to PEER:80 from port 40000.
        assert!(
            fw.outbound(now, &tcp(GUEST, 40000, PEER, 80), None)
                .is_allowed()
        );
        // A "reply" from a port, or a host, the guest never talked to.
        assert!(
            !fw.inbound(now, &tcp(PEER, 81, GUEST, 40000), None)
                .is_allowed()
        );
        let other = Ipv4Addr::new(10, 128, 0, 66);
        assert!(
            !fw.inbound(now, &tcp(other, 80, GUEST, 40000), None)
                .is_allowed()
        );
        // Same ports over UDP: another flow.
        assert!(
            !fw.inbound(now, &udp(PEER, 80, GUEST, 40000), None)
                .is_allowed()
        );
    }

    #[test]
    fn attack_flow_flood_keeps_the_table_bounded() {
        let limits = Limits {
            max_flows: 1000,
            ..Limits::default()
        };
        let mut fw = Firewall::new(
            Rules {
                inbound: vec![rule("udp", "any")],
                outbound: vec![],
            },
            limits,
        );
        let now = Instant::now();
        for i in 0..50_000u32 {
            let [_, _, a, b] = i.to_be_bytes();
            let src = Ipv4Addr::new(10, 129, a, b);
            assert!(fw.inbound(now, &udp(src, 1, GUEST, 2), None).is_allowed());
            assert!(fw.flow_count() <= 1000);
            assert!(fw.conntrack.order.len() <= 2001);
        }
        assert_eq!(fw.counters().evicted, 49_000);
        // The newest flows are the ones kept.
        let newest = Ipv4Addr::new(10, 129, 0xc3, 0x4f);
        assert!(fw.conntrack.touch(
            &FlowKey {
                proto: UDP,
                local: IpAddr::V4(GUEST),
                remote: IpAddr::V4(newest),
                local_port: 2,
                remote_port: 1
            },
            now
        ));
    }

    #[test]
    fn refreshed_flows_do_not_grow_the_eviction_queue() {
        let limits = Limits {
            max_flows: 10,
            other_idle: Duration::from_secs(1),
            ..Limits::default()
        };
        let mut fw = Firewall::new(
            Rules {
                inbound: vec![rule("icmp", "any")],
                outbound: vec![],
            },
            limits,
        );
        let mut now = Instant::now();
        // The same flow expiring and coming back again and again.
        for _ in 0..1000 {
            now += Duration::from_secs(2);
            assert!(
                fw.inbound(now, &echo(PEER, GUEST, 1, true), None)
                    .is_allowed()
            );
            assert!(fw.conntrack.order.len() <= 21);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let mut fw = inbound_only(vec![rule("tcp", "22")]);
            let now = Instant::now();
            let _ = fw.inbound(now, &bytes, None);
            let _ = fw.outbound(now, &bytes, None);
        }
    }
}
