//! The configuration file of `wow-node up` (TOML). Every field has a
//! default; an empty file is a valid configuration that starts a new ring.
//!
//! ```toml
//! [node]
//! state_dir = "/var/lib/wow-node"   # leases, node key, certificates, control socket
//! listen = "0.0.0.0:4000"           # underlay UDP socket
//! bootstrap = ["192.0.2.1:4000"]    # overlay nodes to join through; none: new ring
//! advertise = []                    # extra endpoints peers may reach us at
//! port_mapping = true               # ask the default gateway to map our port (PCP, NAT-PMP)
//! lan_discovery = true              # join nodes of this network found on the LAN
//! # lan_secret = "…"                # authenticates LAN announcements (else a key
//!                                   # from ca_cert; neither: discovery off)
//!
//! [network]
//! cidr = "10.128.0.0/16"            # the virtual network
//! gateway = "10.128.0.1"            # virtual gateway, DHCP and DNS server (default: first host)
//! domain = "wow.internal"           # DNS zone
//! lease_secs = 3600                 # DHCP lease time
//! allocation = "dht"                # "dht" (decentralised), "local" or "central"
//! # pool = ["10.128.4.1", "10.128.7.254"]  # lease only from here (default: the
//!                                   # whole cidr); disjoint per node with "local"
//! # allocator = "self"              # "central": "self" on the one node that grants
//!                                   # every address, its overlay address elsewhere
//! ipv6 = false                      # IPv6 too: each guest gets the /64 of its IPv4
//!                                   # address by router advertisement (SLAAC)
//! # ula = "fd12:3456:789a::/48"     # the network's IPv6 prefix (default: a ULA /48
//!                                   # derived from cidr and domain)
//!
//! [tap]
//! name = "wow0"                     # TAP device
//! underlay_mtu = 1500               # the guest MTU is this minus every header (1384)
//! offload = true                    # TAP offloads (TCP super-frames)
//! # mtu = 8192                      # override the guest MTU (at most 9176); datagrams
//!                                   # above the underlay MTU are IP-fragmented
//!
//! [security]
//! ca_cert = "ca.pem"                # CA certificate; with cert and key: protected mode
//! cert = "node.pem"                 # this node's certificate (its IP is the only one offered)
//! key = "node.key"                  # this node's PKCS#8 key
//! crl = "ca.crl"                    # optional CRL envelope file (with ca.crl.manifest), published
//! crl_refresh_secs = 60             # re-read the file and fetch the newest CRL this often
//! crl_grace_secs = 3600             # CRL past nextUpdate by this (or none this long
//!                                   # after start): new security associations refused
//! public_hosts = []                 # virtual hosts reachable without an SA
//! enrol = false                     # no cert yet: ask the CA node for one over the
//!                                   # overlay, for the leased address (kept as `cert`)
//! # join_token = "wowjoin1.…"       # from `wow-node ca token`: signed at once, else
//!                                   # the request waits for `wow-node ca approve`
//! # ca_node = "…"                   # the CA node's overlay address (its `status`):
//!                                   # used instead of its DHT announcement
//!
//! [ca]
//! # dir = "/var/lib/wow-ca"         # this node is the CA's (`wow-node ca init`)
//! insecure_auto_approve = false     # INSECURE: sign requests without a join token
//! [ca.groups]                       # groups a certificate for each address carries
//! "10.128.0.10" = ["admin"]        # (enrolment, renewal; `ca issue --groups` sets its own)
//!
//! [dns]
//! forward = true                    # names outside the zone go upstream (split DNS);
//!                                   # never while the host is confined
//! upstream = []                     # resolvers, "192.0.2.53:53"; none: the host's
//!                                   # /etc/resolv.conf (virtual addresses skipped)
//!
//! [metrics]
//! # listen = "127.0.0.1:9770"       # serve GET /metrics (Prometheus / OpenMetrics text)
//!
//! [confine]
//! enabled = false                   # same as --confine
//! allow_tcp_ports = [22]            # host ports that still answer (replies only)
//!
//! [firewall]                        # no rules: everything passes (as without it)
//! max_flows = 65536                 # flows tracked so replies pass (oldest evicted)
//! [[firewall.inbound]]              # once one inbound rule is set, the rest is denied
//! proto = "icmp"                    # any, tcp, udp, icmp
//! [[firewall.inbound]]
//! proto = "tcp"
//! port = 22                         # a port, "8000-8100" or "any" (tcp/udp only)
//! groups = ["admin"]                # the peer's certificate carries every one
//! # host = "db"                     # the peer: a virtual IP (v4, or v6 in its /64)
//!                                   # or a certified name
//! # cidr = "10.128.0.0/24"          # the peer's address is in it; an IPv6 CIDR
//!                                   # also covers IPv4 from a /64 inside it
//! # [[firewall.outbound]]           # the same keys; none: the guest sends anything
//!
//! [turn]
//! # server = "192.0.2.1:3478"       # a TURN server: relayed endpoint of last resort
//! # username = "wow"                # its long-term credentials, if it asks
//! # password = "secret"
//!
//! [update]
//! keys = []                         # release public keys (hex Ed25519, `wow-node
//!                                   # release keygen`); none: no self-update
//! channel = "stable"                # the release channel followed
//! check_secs = 300                  # look for a newer release in the DHT this often
//! health_secs = 30                  # a new binary not healthy (joined) by then
//!                                   # is rolled back
//! [[service]]                       # SRV (and TXT) under the guest's name and, with
//! name = "_slurmctld._tcp"          # the others', at _slurmctld._tcp.<domain>
//! port = 6817
//! priority = 0                      # lower first (default 0)
//! weight = 0                        # share among equal priorities (default 0)
//! txt = []                          # TXT strings, "key=value"
//! ```
//!
//! Relative paths are relative to `state_dir`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[node]`.
    pub node: NodeSection,
    /// `[network]`.
    pub network: NetworkSection,
    /// `[tap]`.
    pub tap: TapSection,
    /// `[security]`.
    pub security: SecuritySection,
    /// `[confine]`.
    pub confine: ConfineSection,
    /// `[ca]`.
    pub ca: CaSection,
    /// `[turn]`.
    pub turn: TurnSection,
    /// `[dns]`.
    pub dns: DnsSection,
    /// `[metrics]`.
    pub metrics: MetricsSection,
    /// `[firewall]`.
    pub firewall: FirewallSection,
    /// `[update]`.
    pub update: UpdateSection,
    /// `[[service]]`: services the guest offers.
    pub service: Vec<ServiceEntry>,
}

/// `[update]`: signed self-update (see [`crate::update`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateSection {
    /// Release public keys, hex Ed25519 (`wow-node release keygen`
    /// prints one); none: the node takes no update.
    pub keys: Vec<String>,
    /// The channel followed.
    pub channel: String,
    /// Seconds between looks for a newer release.
    pub check_secs: u64,
    /// Seconds a new binary has to report healthy (joined the ring)
    /// before it is rolled back.
    pub health_secs: u64,
}

impl Default for UpdateSection {
    fn default() -> Self {
        UpdateSection {
            keys: Vec::new(),
            channel: "stable".into(),
            check_secs: 300,
            health_secs: 30,
        }
    }
}

/// One `[[service]]` table (also the `wow-node service add` request): a
/// service the guest offers, published as SRV (and TXT) records under the
/// guest's name, with the guest's name as target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceEntry {
    /// `_service._proto`, as `_slurmctld._tcp`.
    pub name: String,
    /// The port it listens on.
    pub port: u16,
    /// SRV priority (lower is tried first).
    pub priority: u16,
    /// SRV weight among equal priorities.
    pub weight: u16,
    /// TXT strings.
    pub txt: Vec<String>,
}

impl ServiceEntry {
    /// The checked name and registration (the target is filled in by the
    /// core).
    pub fn registration(&self) -> Result<(String, dns_virt::Service), String> {
        let name = dns_virt::service::service_name(&self.name)
            .map_err(|e| format!("service {:?}: {e}", self.name))?;
        let service = dns_virt::Service {
            priority: self.priority,
            weight: self.weight,
            port: self.port,
            target: "guest".into(),
            txt: self.txt.iter().map(|t| t.as_bytes().to_vec()).collect(),
        };
        service
            .validate()
            .map_err(|e| format!("service {name}: {e}"))?;
        Ok((name, service))
    }

    /// The entry of a registration.
    pub fn of(name: &str, service: &dns_virt::Service) -> ServiceEntry {
        ServiceEntry {
            name: name.to_owned(),
            port: service.port,
            priority: service.priority,
            weight: service.weight,
            txt: service
                .txt
                .iter()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .collect(),
        }
    }
}

/// `[metrics]`: the node's figures for Prometheus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Where to serve `GET /metrics` over HTTP (none: not served). The
    /// figures are not secret but say much about the network: keep it on
    /// loopback or a management interface.
    pub listen: Option<SocketAddr>,
}

/// `[dns]`: the virtual DNS server's answers outside its zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSection {
    /// Forward queries outside the zone to `upstream` (split DNS); off,
    /// they are answered REFUSED. Never while the host is confined
    /// (`[confine]`): DNS would be a way out of the virtual network.
    pub forward: bool,
    /// The upstream resolvers; none: the `nameserver`s of the host's
    /// `/etc/resolv.conf`, less any in the virtual network.
    pub upstream: Vec<SocketAddr>,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            forward: true,
            upstream: Vec::new(),
        }
    }
}

/// `[firewall]`: rules between the guest and its peers (see
/// [`wow_core::firewall`]). No rules: everything passes; a direction
/// with a rule denies what none of its rules allows, except replies of
/// tracked flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirewallSection {
    /// Most flows tracked (the oldest is evicted beyond).
    pub max_flows: usize,
    /// `[[firewall.inbound]]`: what may reach the guest.
    pub inbound: Vec<FirewallRule>,
    /// `[[firewall.outbound]]`: what the guest may send.
    pub outbound: Vec<FirewallRule>,
}

impl Default for FirewallSection {
    fn default() -> Self {
        FirewallSection {
            max_flows: wow_core::firewall::Limits::default().max_flows,
            inbound: Vec::new(),
            outbound: Vec::new(),
        }
    }
}

/// A port as written: `22`, `"22"`, `"8000-8100"` or `"any"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// One port.
    Number(u16),
    /// A port, a range or `any`.
    Text(String),
}

/// One `[[firewall.inbound]]` / `[[firewall.outbound]]` table: every key
/// given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirewallRule {
    /// `any` (default), `tcp`, `udp` or `icmp`.
    pub proto: Option<String>,
    /// The destination port or range (TCP/UDP); none: any.
    pub port: Option<PortSpec>,
    /// Groups the peer's certificate must all carry.
    pub groups: Vec<String>,
    /// The peer: a virtual IP or a host name of its certificate.
    pub host: Option<String>,
    /// The network the peer's address is in (IPv4 or IPv6).
    pub cidr: Option<ipnet::IpNet>,
}

impl FirewallSection {
    /// The rules, checked.
    pub fn rules(&self) -> Result<wow_core::firewall::Rules, String> {
        let convert = |which: &str, rules: &[FirewallRule]| {
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let port = match &r.port {
                        None => "any".to_owned(),
                        Some(PortSpec::Number(n)) => n.to_string(),
                        Some(PortSpec::Text(t)) => t.clone(),
                    };
                    wow_core::firewall::Rule::parse(
                        r.proto.as_deref().unwrap_or("any"),
                        &port,
                        &r.groups,
                        r.host.as_deref(),
                        r.cidr,
                    )
                    .map_err(|e| format!("[[firewall.{which}]] #{}: {e}", i + 1))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(wow_core::firewall::Rules {
            inbound: convert("inbound", &self.inbound)?,
            outbound: convert("outbound", &self.outbound)?,
        })
    }

    /// The flow table's bounds.
    pub fn limits(&self) -> wow_core::firewall::Limits {
        wow_core::firewall::Limits {
            max_flows: self.max_flows,
            ..wow_core::firewall::Limits::default()
        }
    }
}

/// `[turn]`: a TURN server (RFC 8656) as the relay of last resort, for
/// peers that reach neither us nor a common overlay node directly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnSection {
    /// The server's UDP endpoint.
    pub server: Option<SocketAddr>,
    /// Long-term credential user name.
    pub username: Option<String>,
    /// Long-term credential password.
    pub password: Option<String>,
}

/// `[ca]`: this node answers enrolment requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaSection {
    /// The CA directory.
    pub dir: Option<PathBuf>,
    /// Sign requests without a join token at once (insecure: anyone who
    /// reaches the CA gets any free address).
    pub insecure_auto_approve: bool,
    /// The groups the CA grants each address (`[ca.groups]`,
    /// `"10.128.0.10" = ["admin"]`): a certificate it signs for the address
    /// carries these (only those of them the request asks for, if it asks);
    /// an address not listed gets none. See [`ipsec_ca::Policy::groups`].
    pub groups: BTreeMap<Ipv4Addr, Vec<String>>,
}

impl CaSection {
    /// [`CaSection::groups`] checked, for [`ipsec_ca::Policy::groups`].
    pub fn policy_groups(&self) -> Result<BTreeMap<Ipv4Addr, ipsec_ca::Groups>, String> {
        self.groups
            .iter()
            .map(|(ip, names)| {
                ipsec_ca::Groups::new(names)
                    .map(|g| (*ip, g))
                    .map_err(|e| format!("[ca.groups] {ip}: {e}"))
            })
            .collect()
    }
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// State directory.
    pub state_dir: PathBuf,
    /// Underlay UDP socket.
    pub listen: SocketAddr,
    /// Bootstrap endpoints.
    pub bootstrap: Vec<SocketAddr>,
    /// Extra advertised endpoints.
    pub advertise: Vec<SocketAddr>,
    /// Ask the default gateway for a mapping of our port with PCP or
    /// NAT-PMP at start-up (see [`crate::portmap`]) and advertise it.
    pub port_mapping: bool,
    /// Find nodes of the same network on the local network by multicast
    /// (see [`overlay_core::lan`]); a node that is alone joins through
    /// them. Needs a key: [`NodeSection::lan_secret`] or `[security]
    /// ca_cert`.
    pub lan_discovery: bool,
    /// A secret shared by the network's nodes that authenticates LAN
    /// announcements; without it the key comes from the CA certificate,
    /// and without either discovery is off.
    pub lan_secret: Option<String>,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            state_dir: PathBuf::from("/var/lib/wow-node"),
            listen: SocketAddr::from(([0, 0, 0, 0], 4000)),
            bootstrap: Vec::new(),
            advertise: Vec::new(),
            port_mapping: true,
            lan_discovery: true,
            lan_secret: None,
        }
    }
}

/// How DHCP allocates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocationMode {
    /// Claim each address in the overlay DHT (decentralised, the default).
    #[default]
    Dht,
    /// A local pool (one node per network, or disjoint pools).
    Local,
    /// One designated node grants every address (`allocator`), through
    /// the overlay: no duplicates, whatever the pools.
    Central,
}

/// `[network]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// The virtual network.
    pub cidr: Ipv4Net,
    /// Virtual gateway (default: the first host address).
    pub gateway: Option<Ipv4Addr>,
    /// DNS zone.
    pub domain: String,
    /// Lease time, seconds.
    pub lease_secs: u64,
    /// Allocation mode.
    pub allocation: AllocationMode,
    /// The addresses this node's guest may lease, `[first, last]`
    /// (inclusive, inside `cidr`); none: the whole network. Give nodes
    /// that allocate `"local"`ly disjoint pools.
    pub pool: Option<[Ipv4Addr; 2]>,
    /// With `allocation = "central"`: `"self"` on the designated node,
    /// its overlay address (from its `status`) on every other.
    pub allocator: Option<String>,
    /// IPv6 in the virtual network (router advertisements, proxy NDP,
    /// AAAA records; see `wow_core::ipv6`).
    pub ipv6: bool,
    /// The network's IPv6 prefix; none: a ULA /48 derived from `cidr` and
    /// `domain`. Every node of the network must agree on it.
    pub ula: Option<ipnet::Ipv6Net>,
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            cidr: Ipv4Net::new(Ipv4Addr::new(10, 128, 0, 0), 16).unwrap_or_default(),
            gateway: None,
            domain: "wow.internal".into(),
            lease_secs: 3600,
            allocation: AllocationMode::Dht,
            pool: None,
            allocator: None,
            ipv6: false,
            ula: None,
        }
    }
}

impl NetworkSection {
    /// The network's IPv6 prefix, if IPv6 is on.
    pub fn ipv6_prefix(&self) -> Option<ipnet::Ipv6Net> {
        self.ipv6.then(|| {
            self.ula
                .unwrap_or_else(|| wow_core::ipv6::Plan::ula(self.cidr, &self.domain))
        })
    }

    /// The gateway address.
    pub fn gateway_addr(&self) -> Ipv4Addr {
        self.gateway
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(self.cidr.network()).saturating_add(1)))
    }
}

/// `[tap]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TapSection {
    /// Device name.
    pub name: String,
    /// Underlay MTU.
    pub underlay_mtu: u16,
    /// Guest MTU override.
    pub mtu: Option<u16>,
    /// TAP offloads (virtio-net header: the guest hands over TCP
    /// super-frames, the node hands back merged ones).
    pub offload: bool,
}

impl Default for TapSection {
    fn default() -> Self {
        TapSection {
            name: "wow0".into(),
            underlay_mtu: 1500,
            mtu: None,
            offload: true,
        }
    }
}

/// `[security]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    /// CA certificate (PEM).
    pub ca_cert: Option<PathBuf>,
    /// Node certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Node key (PKCS#8 PEM).
    pub key: Option<PathBuf>,
    /// CRL envelope file.
    pub crl: Option<PathBuf>,
    /// CRL refresh period, seconds.
    pub crl_refresh_secs: u64,
    /// Seconds a CRL may be past its nextUpdate (and a certified node may
    /// go without any CRL) before new security associations are refused.
    pub crl_grace_secs: u64,
    /// Public virtual hosts.
    pub public_hosts: Vec<Ipv4Addr>,
    /// Enrol with the CA node when no certificate is present.
    pub enrol: bool,
    /// A join token (`wow-node ca token`) authorising the enrolment.
    pub join_token: Option<String>,
    /// The CA node's overlay address, instead of its DHT announcement.
    pub ca_node: Option<String>,
    /// Admit to the overlay only nodes whose certificate chains to the CA,
    /// is not revoked and whose overlay address is their ring address
    /// (needs `ca_cert`; an uncertified node cannot join, so enrolment
    /// must happen out of band, e.g. `wow-node ca issue`).
    pub closed: bool,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            ca_cert: None,
            cert: None,
            key: None,
            crl: None,
            crl_refresh_secs: 60,
            crl_grace_secs: 3600,
            public_hosts: Vec::new(),
            enrol: false,
            join_token: None,
            ca_node: None,
            closed: false,
        }
    }
}

/// `[confine]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfineSection {
    /// Install the nftables rules.
    pub enabled: bool,
    /// Host TCP ports whose replies still pass (connections others open
    /// to them); see [`crate::confine`].
    pub allow_tcp_ports: Vec<u16>,
}

impl Default for ConfineSection {
    fn default() -> Self {
        ConfineSection {
            enabled: false,
            allow_tcp_ports: vec![22],
        }
    }
}

/// Why a configuration did not load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is invalid.
    #[error("invalid configuration {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// The file is writable by everyone, or readable by everyone while it
    /// holds secrets.
    #[error(
        "{path} has mode {mode:04o}: other users may read or change it (secrets: {secrets}); \
         make it `chmod 0640` (owner root, group of the node's user)"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The secrets it holds (empty: none, but it is world-writable).
        secrets: String,
    },
}

impl Config {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The secrets this configuration holds, by name (today the TURN
    /// password): a file holding any must not be readable by everyone.
    pub fn secrets(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.node.lan_secret.is_some() {
            names.push("node.lan_secret");
        }
        if self.turn.password.is_some() {
            names.push("turn.password");
        }
        if self.security.join_token.is_some() {
            names.push("security.join_token");
        }
        names
    }

    /// Loads `path` as [`Config::load`] does, then refuses a file that
    /// anyone may write, or that anyone may read while it holds
    /// [`Config::secrets`]. The packaged file is `root:wow-node 0640`.
    pub fn load_private(path: &Path) -> Result<Config, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let config = Config::load(path)?;
        let mode = std::fs::metadata(path)
            .map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .permissions()
            .mode();
        let secrets = config.secrets();
        if mode & 0o002 != 0 || (mode & 0o004 != 0 && !secrets.is_empty()) {
            return Err(ConfigError::Exposed {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
                secrets: secrets.join(", "),
            });
        }
        Ok(config)
    }

    /// `path` relative to the state directory unless absolute.
    pub fn state_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.node.state_dir.join(path)
        }
    }
}
