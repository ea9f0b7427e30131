//! A NAT testbed: hosts behind Linux NATs of chosen kinds, built from
//! nftables in network namespaces.
//!
//! A [`Testbed`] is a public "internet" namespace holding the public
//! servers' addresses ([`SERVER_A`], [`SERVER_B`]; start whatever server you
//! need there with `testbed.internet.spawn(...)`) and any number of
//! [`Site`]s: one or more hosts on a LAN behind a home router whose NAT is
//! described by a [`NatSpec`], optionally behind a carrier-grade NAT on
//! `100.64.0.0/10` ([`SiteSpec::carrier`]).
//!
//! ```text
//!                         internet (SERVER_A, SERVER_B, router)
//!     Layout::Routed:     s1 /            \ s2           each site on its own link:
//!                         wan              wan           a datagram crosses the
//!            [carrier NAT 1]              [home NAT 2]   internet router between sites
//!                 lan 100.64.1.1/24       lan 192.168.2.1/24
//!                 wan 100.64.1.2             host 192.168.2.10
//!            [home NAT 1]
//!                 lan 192.168.1.1/24
//!                 host 192.168.1.10, 192.168.1.11 ...
//!
//!     Layout::Shared:     the outermost routers share one bridge in the
//!                         internet namespace: they are one hop apart.
//! ```
//!
//! # How each kind is realised
//!
//! Every router has a `wan` interface (towards the internet or the carrier)
//! and a `lan` bridge (towards its hosts). [`NatSpec::ruleset`] writes:
//!
//! - **Mapping.** [`Mapping::EndpointIndependent`]: `masquerade persistent`.
//!   Linux keeps a flow's source port whenever the translated tuple is free,
//!   so a host port maps to the same public port towards every destination.
//!   It remaps (a different port) when the tuple is taken, for example by a
//!   conntrack entry that an unsolicited packet to the router left (see
//!   input drop). [`Mapping::EndpointDependent`]: `masquerade fully-random`:
//!   every new flow (destination) gets a random public port — a "symmetric"
//!   NAT.
//! - **Filtering.** Linux conntrack alone is
//!   [`Filtering::AddressPortDependent`]: only the exact reply tuple of an
//!   outbound flow gets in. The other two kinds are built from two dynamic
//!   nftables sets that a `postrouting` chain (after source NAT) fills from
//!   every outbound UDP datagram: the map `mapped` (public port → the
//!   host's address and port, from `ct original`) and, for address-dependent
//!   filtering, the set `seen` (remote address . public port). A `prerouting`
//!   NAT chain then forwards a new inbound datagram to the host that owns
//!   its destination port: any sender for
//!   [`Filtering::EndpointIndependent`] (`dnat ip to udp dport map
//!   @mapped`), senders whose address is in `seen` for
//!   [`Filtering::AddressDependent`]. Entries expire after the UDP timeout.
//!   A `forward` chain drops any other new flow from `wan` to `lan`.
//! - **Input drop** ([`NatSpec::input_drop`]): `iifname "wan" ct state new
//!   drop` in the `input` hook. The datagram is dropped before conntrack
//!   confirms it, so it leaves no entry; without it an unsolicited datagram
//!   to the router itself (a peer's early probe) leaves one that makes the
//!   NAT remap the host's next flow towards that peer.
//! - **Hairpin** ([`NatSpec::hairpin`]): a datagram from the LAN to the
//!   router's own public address is forwarded to the host owning the
//!   destination port (`iifname "lan" ip daddr WAN dnat ip to udp dport map
//!   @mapped`, marking the flow) and source-NATed to the public address
//!   (`ct mark M ct status dnat snat ip to WAN` in `postrouting`,
//!   which keeps the sender's port when free, as its outbound mapping
//!   usually does). Without it the datagram ends at the router.
//! - **UDP timeout** ([`NatSpec::udp_timeout`]): the router namespace's
//!   `net.netfilter.nf_conntrack_udp_timeout` and `..._udp_timeout_stream`,
//!   and the dynamic sets' timeout.
//!
//! Routers do not send ICMP redirects (a hairpinned datagram leaves by the
//! interface it came in on; a redirect would let hosts bypass the NAT).

use std::fmt;
use std::io;
use std::net::Ipv4Addr;

use crate::Netns;

pub mod matrix;
pub mod node;

/// The first public server address, on the internet namespace.
pub const SERVER_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The second public server address (a second observer, for mapping
/// tests), on the internet namespace.
pub const SERVER_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Timeout of the filtering sets and of conntrack's UDP entries when a
/// [`NatSpec`] sets none (seconds; conntrack's own default for a UDP flow
/// seen both ways).
pub const DEFAULT_UDP_TIMEOUT: u32 = 120;
/// The conntrack mark of hairpinned flows.
const HAIRPIN_MARK: u32 = 0x4e41;

/// How a NAT chooses the public port of an outbound flow (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// The same public address and port for a host port, whatever the
    /// destination (`masquerade persistent`).
    EndpointIndependent,
    /// A new random public port for every destination (`masquerade
    /// fully-random`): a "symmetric" NAT.
    EndpointDependent,
}

/// Which inbound datagrams a NAT lets through to a mapped port (RFC 4787
/// §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// From anyone ("full cone").
    EndpointIndependent,
    /// From any port of an address the host has sent to ("restricted
    /// cone").
    AddressDependent,
    /// Only from the exact address and port the host has sent to ("port
    /// restricted"; Linux conntrack's own behaviour).
    AddressPortDependent,
}

/// One NAT's behaviour. See the [module docs](self) for how each field is
/// realised in nftables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatSpec {
    /// Port mapping.
    pub mapping: Mapping,
    /// Inbound filtering.
    pub filtering: Filtering,
    /// Drop unsolicited datagrams to the router itself (before conntrack
    /// confirms them).
    pub input_drop: bool,
    /// Forward datagrams from the LAN to the router's own public address to
    /// the host that owns the port.
    pub hairpin: bool,
    /// Conntrack UDP timeout in seconds (`None`: the kernel's default for
    /// conntrack, [`DEFAULT_UDP_TIMEOUT`] for the filtering sets).
    pub udp_timeout: Option<u32>,
}

impl NatSpec {
    /// A NAT with `mapping` and `filtering`, no input drop, no hairpin,
    /// default timeouts.
    pub const fn new(mapping: Mapping, filtering: Filtering) -> Self {
        NatSpec {
            mapping,
            filtering,
            input_drop: false,
            hairpin: false,
            udp_timeout: None,
        }
    }

    /// Endpoint-independent mapping, address-and-port-dependent filtering:
    /// a plain Linux `masquerade` home router.
    pub const fn cone() -> Self {
        Self::new(
            Mapping::EndpointIndependent,
            Filtering::AddressPortDependent,
        )
    }

    /// Endpoint-dependent mapping, address-and-port-dependent filtering.
    pub const fn symmetric() -> Self {
        Self::new(Mapping::EndpointDependent, Filtering::AddressPortDependent)
    }

    /// This spec with [`NatSpec::input_drop`] set to `on`.
    pub const fn with_input_drop(mut self, on: bool) -> Self {
        self.input_drop = on;
        self
    }

    /// This spec with [`NatSpec::hairpin`] set to `on`.
    pub const fn with_hairpin(mut self, on: bool) -> Self {
        self.hairpin = on;
        self
    }

    /// This spec with a UDP timeout of `secs` seconds.
    pub const fn with_udp_timeout(mut self, secs: u32) -> Self {
        self.udp_timeout = Some(secs);
        self
    }

    /// A short label such as `eim-apdf+drop`: mapping (`eim`/`edm`),
    /// filtering (`eif`/`adf`/`apdf`), then `+drop`, `+hairpin`,
    /// `+udpNs` for the options set.
    pub fn label(&self) -> String {
        self.to_string()
    }

    fn needs_mapped_set(&self) -> bool {
        self.hairpin || self.filtering != Filtering::AddressPortDependent
    }

    /// The nftables ruleset (text for `nft -f`) of a router whose outside
    /// interface is `wan` with address `wan_addr` and whose inside interface
    /// is `lan`.
    pub fn ruleset(&self, wan_addr: Ipv4Addr) -> String {
        let timeout = self.udp_timeout.unwrap_or(DEFAULT_UDP_TIMEOUT);
        let mut sets = String::new();
        let mut prerouting = String::new();
        let mut postrouting = String::new();
        let mut record = String::new();
        if self.needs_mapped_set() {
            // Public port -> the host's address and port, learnt from every
            // outbound datagram once its source is translated.
            sets.push_str(&format!(
                "  map mapped {{\n    type inet_service : ipv4_addr . inet_service\n    flags dynamic, timeout\n    timeout {timeout}s\n  }}\n"
            ));
            record.push_str(
                "    oifname \"wan\" update @mapped { udp sport : ct original ip saddr . ct original proto-src }\n",
            );
        }
        match self.filtering {
            Filtering::EndpointIndependent => prerouting.push_str(
                "    # endpoint-independent filtering: anyone may reach a mapped port\n    iifname \"wan\" dnat ip to udp dport map @mapped\n",
            ),
            Filtering::AddressDependent => {
                sets.push_str(&format!(
                    "  set seen {{\n    type ipv4_addr . inet_service\n    flags dynamic, timeout\n    timeout {timeout}s\n  }}\n"
                ));
                record.push_str("    oifname \"wan\" update @seen { ip daddr . udp sport }\n");
                prerouting.push_str(
                    "    # address-dependent filtering: any port of an address the host sent to\n    iifname \"wan\" ip saddr . udp dport @seen dnat ip to udp dport map @mapped\n",
                );
            }
            // Conntrack's own behaviour: only replies get in.
            Filtering::AddressPortDependent => {}
        }
        if self.hairpin {
            prerouting.push_str(&format!(
                "    # hairpin: the LAN reaching our public address reaches the host behind the port\n    iifname \"lan\" ip daddr {wan_addr} ct mark set {HAIRPIN_MARK:#x} dnat ip to udp dport map @mapped\n"
            ));
            postrouting.push_str(&format!(
                "    # (postrouting knows no input interface: the prerouting rule marked the flow)\n    ct mark {HAIRPIN_MARK:#x} ct status dnat snat ip to {wan_addr}\n"
            ));
        }
        let masquerade = match self.mapping {
            Mapping::EndpointIndependent => "masquerade persistent",
            Mapping::EndpointDependent => "masquerade fully-random",
        };
        let mut out = format!(
            "# {self}\ntable ip wow_nat {{\n{sets}  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{prerouting}  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"wan\" {masquerade}\n{postrouting}  }}\n"
        );
        if !record.is_empty() {
            out.push_str(&format!(
                "  chain record {{\n    type filter hook postrouting priority srcnat + 10; policy accept;\n{record}  }}\n"
            ));
        }
        out.push_str(
            "  chain forward {\n    type filter hook forward priority filter; policy accept;\n    iifname \"wan\" ct state new ct status dnat accept\n    iifname \"wan\" ct state new drop\n  }\n}\n",
        );
        if self.input_drop {
            out.push_str(
                "# input drop: dropped before conntrack confirms it, so no entry steals a port\ntable inet wow_filter {\n  chain input {\n    type filter hook input priority filter; policy accept;\n    iifname \"wan\" ct state new drop\n  }\n}\n",
            );
        }
        out
    }
}

impl fmt::Display for NatSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mapping = match self.mapping {
            Mapping::EndpointIndependent => "eim",
            Mapping::EndpointDependent => "edm",
        };
        let filtering = match self.filtering {
            Filtering::EndpointIndependent => "eif",
            Filtering::AddressDependent => "adf",
            Filtering::AddressPortDependent => "apdf",
        };
        write!(f, "{mapping}-{filtering}")?;
        if self.input_drop {
            f.write_str("+drop")?;
        }
        if self.hairpin {
            f.write_str("+hairpin")?;
        }
        if let Some(t) = self.udp_timeout {
            write!(f, "+udp{t}s")?;
        }
        Ok(())
    }
}

/// How the sites' outermost routers reach the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Each on its own link to the internet router: between two sites a
    /// datagram crosses that router (one more hop).
    #[default]
    Routed,
    /// All on one bridge in the internet namespace: neighbours, one hop
    /// apart.
    Shared,
}

/// One site: hosts on a LAN behind a home NAT, optionally behind a carrier
/// NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteSpec {
    /// The home router's NAT.
    pub nat: NatSpec,
    /// A carrier-grade NAT between the home router and the internet (its
    /// LAN on `100.64.0.0/10`).
    pub carrier: Option<NatSpec>,
    /// Hosts on the home LAN (at least one).
    pub hosts: u8,
}

impl SiteSpec {
    /// One host behind `nat`.
    pub const fn behind(nat: NatSpec) -> Self {
        SiteSpec {
            nat,
            carrier: None,
            hosts: 1,
        }
    }

    /// This site with its home router behind a carrier NAT `carrier`.
    pub const fn carrier(mut self, carrier: NatSpec) -> Self {
        self.carrier = Some(carrier);
        self
    }

    /// This site with `n` hosts on the home LAN.
    pub const fn hosts(mut self, n: u8) -> Self {
        self.hosts = n;
        self
    }
}

impl fmt::Display for SiteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.nat)?;
        if let Some(c) = self.carrier {
            write!(f, "/cgn:{c}")?;
        }
        if self.hosts > 1 {
            write!(f, "x{}", self.hosts)?;
        }
        Ok(())
    }
}

/// A host on a site's LAN.
#[derive(Debug)]
pub struct Host {
    /// Its namespace (interface `eth0`, default route via the home router).
    pub ns: Netns,
    /// Its LAN address.
    pub addr: Ipv4Addr,
}

/// A NAT router.
#[derive(Debug)]
pub struct Router {
    /// Its namespace (interfaces `wan` and the bridge `lan`).
    pub ns: Netns,
    /// Its NAT.
    pub spec: NatSpec,
    /// Its outside (public, or carrier-side) address.
    pub wan_addr: Ipv4Addr,
    /// Its LAN address (the hosts' gateway).
    pub lan_addr: Ipv4Addr,
}

/// A site of a [`Testbed`].
#[derive(Debug)]
pub struct Site {
    /// The hosts, in order (addresses `192.168.I.10`, `.11`, ...).
    pub hosts: Vec<Host>,
    /// The home router.
    pub router: Router,
    /// The carrier-grade NAT, if any.
    pub carrier: Option<Router>,
}

impl Site {
    /// The first host.
    pub fn host(&self) -> &Host {
        &self.hosts[0]
    }

    /// The site's public address: the outermost router's `wan` address.
    pub fn public_addr(&self) -> Ipv4Addr {
        self.carrier.as_ref().unwrap_or(&self.router).wan_addr
    }
}

/// A public internet namespace and sites behind NATs, removed on drop.
/// Build one with [`Testbed::builder`].
#[derive(Debug)]
pub struct Testbed {
    /// The sites, in the order they were added (site `i` uses
    /// `192.168.{i+1}.0/24`).
    pub sites: Vec<Site>,
    /// The internet: a router holding [`SERVER_A`] and [`SERVER_B`] (on its
    /// loopback).
    pub internet: Netns,
    /// How the sites are attached.
    pub layout: Layout,
}

/// Builds a [`Testbed`].
#[derive(Debug, Clone, Default)]
pub struct TestbedBuilder {
    layout: Layout,
    sites: Vec<SiteSpec>,
}

impl TestbedBuilder {
    /// Attach the sites' outermost routers as `layout` says.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Add a site.
    pub fn site(mut self, site: SiteSpec) -> Self {
        self.sites.push(site);
        self
    }

    /// Create the namespaces, links, addresses, routes and rulesets.
    pub fn build(self) -> io::Result<Testbed> {
        if self.sites.len() > 200 {
            return Err(io::Error::other("at most 200 sites"));
        }
        let internet = Netns::new("int")?;
        internet.enable_forwarding()?;
        for server in [SERVER_A, SERVER_B] {
            internet.addr_add("lo", &format!("{server}/32"))?;
        }
        if self.layout == Layout::Shared {
            internet.ip(&["link", "add", "br0", "type", "bridge"])?;
            internet.link_up("br0")?;
            internet.addr_add("br0", "198.19.0.1/24")?;
        }
        let mut sites = Vec::with_capacity(self.sites.len());
        for (i, spec) in self.sites.iter().enumerate() {
            let i = u8::try_from(i + 1).map_err(io::Error::other)?;
            sites.push(build_site(&internet, self.layout, i, spec)?);
        }
        Ok(Testbed {
            sites,
            internet,
            layout: self.layout,
        })
    }
}

impl Testbed {
    /// A builder with no sites, [`Layout::Routed`].
    pub fn builder() -> TestbedBuilder {
        TestbedBuilder::default()
    }

    /// Site `i` (0-based).
    pub fn site(&self, i: usize) -> &Site {
        &self.sites[i]
    }
}

/// The outside address a site's outermost router gets, and its gateway.
fn outer_addrs(layout: Layout, i: u8) -> (Ipv4Addr, Ipv4Addr) {
    match layout {
        Layout::Routed => (Ipv4Addr::new(198, 19, i, 2), Ipv4Addr::new(198, 19, i, 1)),
        Layout::Shared => (
            Ipv4Addr::new(198, 19, 0, 10 + i % 240),
            Ipv4Addr::new(198, 19, 0, 1),
        ),
    }
}

/// A router namespace with `lan` (a bridge, `lan_addr/24`) and forwarding
/// on; `wan` is added by the caller.
fn new_router(tag: &str, lan_addr: Ipv4Addr) -> io::Result<Netns> {
    let ns = Netns::new(tag)?;
    ns.enable_forwarding()?;
    ns.ip(&["link", "add", "lan", "type", "bridge"])?;
    ns.link_up("lan")?;
    ns.addr_add("lan", &format!("{lan_addr}/24"))?;
    ns.run_ok(
        "sysctl",
        &[
            "-qw",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.lan.send_redirects=0",
        ],
    )?;
    Ok(ns)
}

/// Give `router` its `wan` address and default route, load `spec`'s
/// ruleset and timeouts.
fn finish_router(
    ns: Netns,
    spec: NatSpec,
    wan_addr: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    lan_addr: Ipv4Addr,
) -> io::Result<Router> {
    ns.addr_add("wan", &format!("{wan_addr}/{prefix}"))?;
    ns.default_route(&gateway.to_string())?;
    ns.nft(&spec.ruleset(wan_addr))?;
    if let Some(t) = spec.udp_timeout {
        ns.run_ok(
            "sysctl",
            &[
                "-qw",
                &format!("net.netfilter.nf_conntrack_udp_timeout={t}"),
                &format!("net.netfilter.nf_conntrack_udp_timeout_stream={t}"),
            ],
        )?;
    }
    Ok(Router {
        ns,
        spec,
        wan_addr,
        lan_addr,
    })
}

/// Attach a new port of `router`'s `lan` bridge to `other` (whose end is
/// named `remote`).
fn lan_port(router: &Netns, port: &str, other: &Netns, remote: &str) -> io::Result<()> {
    router.veth_to(other, port, remote)?;
    router.ip(&["link", "set", port, "master", "lan"]).map(drop)
}

fn build_site(internet: &Netns, layout: Layout, i: u8, spec: &SiteSpec) -> io::Result<Site> {
    let home_lan = Ipv4Addr::new(192, 168, i, 1);
    let home_ns = new_router("hm", home_lan)?;
    let mut hosts = Vec::new();
    for k in 0..spec.hosts.max(1) {
        let ns = Netns::new("h")?;
        let addr = Ipv4Addr::new(192, 168, i, 10 + k);
        lan_port(&home_ns, &format!("h{k}"), &ns, "eth0")?;
        ns.addr_add("eth0", &format!("{addr}/24"))?;
        ns.default_route(&home_lan.to_string())?;
        hosts.push(Host { ns, addr });
    }
    let (outer_wan, outer_gw) = outer_addrs(layout, i);
    let attach_outer = |ns: &Netns| -> io::Result<()> {
        let port = format!("s{i}");
        internet.veth_to(ns, &port, "wan")?;
        match layout {
            Layout::Routed => internet.addr_add(&port, &format!("{outer_gw}/24")),
            Layout::Shared => internet
                .ip(&["link", "set", &port, "master", "br0"])
                .map(drop),
        }
    };
    let (router, carrier) = match spec.carrier {
        None => {
            attach_outer(&home_ns)?;
            let r = finish_router(home_ns, spec.nat, outer_wan, 24, outer_gw, home_lan)?;
            (r, None)
        }
        Some(cgn) => {
            let cgn_lan = Ipv4Addr::new(100, 64, i, 1);
            let cgn_ns = new_router("cg", cgn_lan)?;
            lan_port(&cgn_ns, "h0", &home_ns, "wan")?;
            let home = finish_router(
                home_ns,
                spec.nat,
                Ipv4Addr::new(100, 64, i, 2),
                24,
                cgn_lan,
                home_lan,
            )?;
            attach_outer(&cgn_ns)?;
            let carrier = finish_router(cgn_ns, cgn, outer_wan, 24, outer_gw, cgn_lan)?;
            (home, Some(carrier))
        }
    };
    Ok(Site {
        hosts,
        router,
        carrier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAN: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);

    #[test]
    fn labels_name_every_option() {
        assert_eq!(NatSpec::cone().label(), "eim-apdf");
        assert_eq!(
            NatSpec::symmetric()
                .with_input_drop(true)
                .with_hairpin(true)
                .with_udp_timeout(5)
                .label(),
            "edm-apdf+drop+hairpin+udp5s"
        );
        let site = SiteSpec::behind(NatSpec::cone())
            .carrier(NatSpec::cone().with_input_drop(true))
            .hosts(2);
        assert_eq!(site.to_string(), "eim-apdf/cgn:eim-apdf+dropx2");
    }

    #[test]
    fn mapping_picks_the_masquerade_flavour() {
        let eim = NatSpec::cone().ruleset(WAN);
        assert!(eim.contains("oifname \"wan\" masquerade persistent\n"));
        assert!(!eim.contains("random"));
        let edm = NatSpec::symmetric().ruleset(WAN);
        assert!(edm.contains("oifname \"wan\" masquerade fully-random\n"));
    }

    #[test]
    fn port_dependent_filtering_is_conntrack_alone() {
        let r = NatSpec::cone().ruleset(WAN);
        assert!(!r.contains("dnat ip to"), "{r}");
        assert!(!r.contains("@mapped"), "{r}");
        assert!(!r.contains("@seen"), "{r}");
        // No new flow from outside reaches the LAN.
        assert!(r.contains("iifname \"wan\" ct state new drop"), "{r}");
        assert!(!r.contains("hook input"), "{r}");
    }

    #[test]
    fn independent_filtering_forwards_any_sender_to_a_mapped_port() {
        let r =
            NatSpec::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent).ruleset(WAN);
        assert!(r.contains("iifname \"wan\" dnat ip to udp dport map @mapped"));
        assert!(r.contains(
            "update @mapped { udp sport : ct original ip saddr . ct original proto-src }"
        ));
        assert!(!r.contains("@seen"));
        assert!(r.contains("timeout 120s"));
    }

    #[test]
    fn address_filtering_checks_the_sender_address() {
        let r = NatSpec::new(Mapping::EndpointIndependent, Filtering::AddressDependent)
            .with_udp_timeout(7)
            .ruleset(WAN);
        assert!(r.contains("update @seen { ip daddr . udp sport }"));
        assert!(r.contains(
            "iifname \"wan\" ip saddr . udp dport @seen dnat ip to udp dport map @mapped"
        ));
        assert!(!r.contains("iifname \"wan\" dnat"));
        assert_eq!(r.matches("timeout 7s").count(), 2);
    }

    #[test]
    fn input_drop_and_hairpin_add_their_rules() {
        let r = NatSpec::cone()
            .with_input_drop(true)
            .with_hairpin(true)
            .ruleset(WAN);
        assert!(r.contains("hook input"));
        assert!(r.contains(
            "iifname \"lan\" ip daddr 198.19.1.2 ct mark set 0x4e41 dnat ip to udp dport map @mapped"
        ));
        assert!(r.contains("ct mark 0x4e41 ct status dnat snat ip to 198.19.1.2"));
        // Hairpin needs the port map even with conntrack's own filtering,
        // but opens nothing from outside.
        assert!(r.contains("update @mapped"));
        assert!(!r.contains("iifname \"wan\" dnat"));
    }
}
