//! The node's sans-IO core: every protocol machine, composed.
//!
//! [`Core`] owns the overlay node, the proxy-ARP responder, the DHCP and DNS
//! servers and (once the node holds a certificate) the security-association
//! endpoint. It does no I/O and reads no clock, like the crates it composes:
//! the driver (the `up` runtime over a TAP device, or the demo over an
//! in-process guest) feeds it
//!
//! - [`Core::handle_tap_frame`]: an Ethernet frame from the guest,
//! - [`Core::handle_udp`]: a datagram from the underlay socket,
//! - [`Core::handle_timeout`]: once [`Core::poll_timeout`] has passed,
//!
//! and after each call drains [`Core::poll_tap_frame`] (frames for the
//! guest), [`Core::poll_udp`] (datagrams for the underlay) and
//! [`Core::poll_event`]. Events of one machine become calls on another
//! here: a DHCP lease becomes a DNS record and a DHT mapping, a DHT answer
//! releases queued packets, a DNS miss becomes a DHT lookup.
//!
//! # Encryption off the driver's thread
//!
//! By default the core seals and opens every data packet itself, inside
//! the calls above. A driver with cores to spare turns on
//! [`Core::set_deferred_crypto`]: the core then does everything but the
//! AEAD (routing, firewall, sequence numbers and replay checks stay here,
//! in order) and leaves [`CryptoJob`]s, which the driver takes with
//! [`Core::take_crypto_jobs`], runs on any thread ([`CryptoJob::run`]) and
//! hands back to [`Core::complete_crypto`] before draining the outputs. A
//! received packet is delivered, and moves a route or a replay window, only
//! in `complete_crypto`, once it authenticated. The core itself starts no
//! thread.

mod resume;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use arp_virt::{EthernetAddress, Outcome};
use dhcp_virt::directory::claim_result;
use dhcp_virt::{
    ClaimKind, ClaimResult, CreateAnswer, DirectoryCompletion, DirectoryOp, LeaseStore,
};
use ipnet::Ipv4Net;
use ipsec_ca::Verifier;
use ipsec_sa::{OpenOutput, PreparedOpen, PreparedSeal, SealOutput};
use overlay_core::wire::DhtOp;
use overlay_core::{Address, DhtOutcome};
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket};

use crate::wire::{self, Kind};

/// The maps a data packet touches (routes, peers): aHash keyed from the OS
/// (`ahash`'s runtime RNG), a fraction of SipHash's cost per packet and
/// still unpredictable to whoever picks the keys.
type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// Bytes the underlay adds: IPv4 (20) + UDP (8).
pub const UNDERLAY_OVERHEAD: usize = 28;
/// Bytes the overlay adds to a data payload: routed header (46) + length (2).
pub const OVERLAY_OVERHEAD: usize = 48;
/// Bytes ipsec-sa adds to a sealed packet: SPI + sequence (12) + tag (16).
pub const SA_OVERHEAD: usize = ipsec_sa::wire::HEADER_LEN + ipsec_sa::wire::TAG_LEN;
/// Everything between the guest's IP packet and the underlay's MTU.
pub const TOTAL_OVERHEAD: usize =
    UNDERLAY_OVERHEAD + OVERLAY_OVERHEAD + wire::HEADER_LEN + SA_OVERHEAD;

/// The largest guest MTU: an overlay data payload holds at most
/// `MAX_DATA_LEN` bytes.
pub const MAX_GUEST_MTU: u16 = {
    let m = overlay_core::wire::MAX_DATA_LEN - wire::HEADER_LEN - SA_OVERHEAD;
    (m / 8 * 8) as u16
};

/// The guest's IP MTU for an underlay MTU.
pub fn guest_mtu(underlay_mtu: u16) -> u16 {
    let m = usize::from(underlay_mtu).saturating_sub(TOTAL_OVERHEAD);
    // Keep it a multiple of 8 (IP fragments) and at least the IPv4 minimum.
    u16::try_from(m / 8 * 8).unwrap_or(576).max(576)
}

/// How long a learned `virtual IP → overlay address` mapping is trusted.
const ROUTE_TTL: Duration = Duration::from_secs(120);
/// How long packets wait for a DHT lookup of their destination.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(6);
/// How long a failed lookup is remembered (packets are dropped meanwhile).
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Packets queued per unresolved destination.
const QUEUE_LIMIT: usize = 32;
/// After our underlay mapping changed, how long the links made again send
/// their own punch request (see `REPUNCH_PEERS`).
const REPUNCH_WINDOW: Duration = Duration::from_secs(2);
/// Most peers sent such a punch request per mapping change.
const REPUNCH_PEERS: usize = 64;
/// Frames queued for the guest before new ones are dropped.
const TAP_QUEUE_LIMIT: usize = 4096;
/// Spare frame buffers kept for reuse (a guest-MTU frame each): more than
/// a runtime's batch (see [`Core::tap_backlog`]) needs.
const TAP_FREE_LIMIT: usize = 1024;
/// Crypto job buffers kept for reuse ([`Core::set_deferred_crypto`]).
const JOB_FREE_LIMIT: usize = 1024;

/// The AEAD half of one data packet, left by the core under
/// [`Core::set_deferred_crypto`]: `Send`, holds its packet and a shared
/// handle on its SA's key. Run it on any thread, then give the result to
/// [`Core::complete_crypto`].
#[derive(Debug)]
pub struct CryptoJob(Job);

#[derive(Debug)]
enum Job {
    Seal {
        dst: Ipv4Addr,
        job: ipsec_sa::SealJob,
    },
    Open {
        peer_ip: Ipv4Addr,
        source: Address,
        hops: u8,
        job: ipsec_sa::OpenJob,
    },
}

/// A [`CryptoJob`] that ran, for [`Core::complete_crypto`].
#[derive(Debug)]
pub struct CryptoDone(Done);

#[derive(Debug)]
enum Done {
    Sealed {
        dst: Ipv4Addr,
        packet: Result<Vec<u8>, ipsec_sa::SealError>,
    },
    Opened {
        peer_ip: Ipv4Addr,
        source: Address,
        hops: u8,
        opened: ipsec_sa::Opened,
    },
}

impl CryptoJob {
    /// Seals or authenticates and decrypts the packet.
    pub fn run(self) -> CryptoDone {
        CryptoDone(match self.0 {
            Job::Seal { dst, job } => Done::Sealed {
                dst,
                packet: job.seal(),
            },
            Job::Open {
                peer_ip,
                source,
                hops,
                job,
            } => Done::Opened {
                peer_ip,
                source,
                hops,
                opened: job.open(),
            },
        })
    }

    /// Whether it seals an outgoing packet (else it opens a received one).
    pub fn is_seal(&self) -> bool {
        matches!(self.0, Job::Seal { .. })
    }
}
/// Lifetime of the DHT records this node publishes (re-published on lease
/// renewal, which the guest does at half the lease).
const PUBLISH_TTL: Duration = Duration::from_secs(3600);
/// How long a punch session holds its full probes to a peer's reflexive
/// endpoints after its own opening steps, unless the peer's first check
/// arrives sooner ([`nat_traversal::punch::PunchConfig::opening_hold`]).
/// The session that starts first (it received the other's offer first)
/// must not reach the other's outermost NAT before that NAT's host has
/// opened it; the other starts one signalling trip later, through the
/// overlay. Behind a home NAT and a carrier-grade NAT the second opening
/// step (TTL 3) goes 20 ms after the first, so without the hold a peer
/// behind one NAT, whose single step ends 20 ms after its start, raced it
/// (the node matrix: 3 of 8 direct). The peer's first check, which comes
/// only after its openings, ends the hold at once.
pub const OPENING_HOLD: Duration = Duration::from_millis(200);
/// At most this many IPv6 addresses of the guest are remembered.
const GUEST_V6_LIMIT: usize = 8;
/// How long a service registration lives in the DHT: it is refreshed every
/// [`SERVICE_REFRESH`] while registered, so it outlives a departed node by
/// at most this.
pub const SERVICE_TTL: Duration = Duration::from_secs(180);
/// How often registered services are published again.
pub const SERVICE_REFRESH: Duration = Duration::from_secs(60);
/// Lifetime of a CRL published in the DHT (re-published on every refresh).
const CRL_TTL: Duration = Duration::from_secs(24 * 3600);

/// The virtual network as the guest sees it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The virtual network.
    pub network: Ipv4Net,
    /// The virtual gateway, DHCP server and DNS server address.
    pub gateway_addr: Ipv4Addr,
    /// The gateway's MAC.
    pub gateway_mac: [u8; 6],
    /// The DNS zone, such as `wow.internal.`.
    pub domain: String,
    /// The guest's IP MTU (DHCP option 26).
    pub guest_mtu: u16,
    /// DHCP lease time.
    pub lease_duration: Duration,
    /// Allocate through the DHT (decentralised) rather than from a local pool.
    pub dht_allocation: bool,
    /// Central allocation: every new address is granted by one designated
    /// node (see [`crate::alloc`]); takes precedence over `dht_allocation`.
    pub allocator: Option<Allocator>,
    /// Only this address is offered (the address in the node's certificate).
    pub fixed_addr: Option<Ipv4Addr>,
    /// Hosts of the network reachable without a security association.
    pub public_hosts: Vec<Ipv4Addr>,
    /// The addresses this node's DHCP server may lease, first and last
    /// (inclusive, inside `network`); `None`: the whole network. Disjoint
    /// ranges per node keep nodes that allocate locally from handing out
    /// the same address, and narrow what a node claims in the DHT.
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Names outside the zone are forwarded upstream (split DNS, see
    /// [`Core::poll_dns_forward`]) instead of answered REFUSED.
    pub dns_forward: bool,
    /// The network's IPv6 prefix (see [`crate::ipv6`]): each guest gets
    /// the /64 derived from its IPv4 address, by router advertisement;
    /// `None`: IPv4 only.
    pub ipv6: Option<ipnet::Ipv6Net>,
}

/// Who grants addresses in central allocation ([`Settings::allocator`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// This node: it keeps the network's lease table and answers every
    /// node's claims.
    This,
    /// The node at this overlay address.
    Node(Address),
}

/// A node's certificate, key and CA certificate (DER).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The node's certificate.
    pub certificate: Vec<u8>,
    /// The node's PKCS#8 key.
    pub key: Vec<u8>,
    /// The CA's certificate.
    pub ca_certificate: Vec<u8>,
    /// The virtual IP the certificate binds.
    pub virtual_ip: Ipv4Addr,
}

/// Something a driver may log or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
    /// The overlay node found its place on the ring.
    Joined,
    /// The guest got (or renewed) an address.
    Leased {
        /// The address.
        addr: Ipv4Addr,
        /// The host name it sent, if any.
        hostname: Option<String>,
        /// Whether it renewed.
        renewed: bool,
    },
    /// A security association with a peer is up.
    SaEstablished {
        /// The peer's virtual IP.
        peer: IpAddr,
    },
    /// A key exchange failed or a peer was removed.
    SaFailed {
        /// The peer's virtual IP.
        peer: IpAddr,
        /// Why, for the log.
        reason: String,
    },
    /// A CRL envelope fetched (from the DHT or the CA node) under a manifest
    /// signed by the CA, newer than the one loaded: hand it to
    /// [`Core::handle_crl`] with the wall clock.
    CrlFetched(Vec<Vec<u8>>),
    /// The CA issued this node's certificate (DER); it verified for the
    /// guest's address and the node key. Install it with
    /// [`Core::install_identity`] (and keep it).
    Enrolled(Vec<u8>),
    /// Enrolment failed or is waiting for the administrator.
    EnrolmentStatus(String),
    /// An overlay link came up or went down.
    Link {
        /// The peer's ring address.
        peer: Address,
        /// Up or down.
        up: bool,
    },
    /// The values found by a [`Core::dht_get_values`] (empty when none
    /// was found or the get failed); each record passed the node's
    /// policy.
    DhtValues {
        /// The get's id.
        id: u64,
        /// The values.
        values: Vec<Vec<u8>>,
    },
    /// Our underlay mapping changed: a peer's signed report names another
    /// endpoint for us than before (our NAT rebound, or the host's address
    /// changed). The overlay is making its stale links again; the driver
    /// should read its interface addresses again (host candidates).
    MappingChanged {
        /// Our endpoint as that peer now sees it.
        endpoint: SocketAddr,
    },
}

/// The loaded CRL, for `status` (see [`Core::crl_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlStatus {
    /// Its CRL number (0: none loaded).
    pub number: u64,
    /// Its nextUpdate.
    pub next_update: Option<SystemTime>,
    /// New security associations are refused for want of a current CRL.
    pub stale: bool,
}

/// Traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Frames read from the TAP.
    pub tap_frames_in: u64,
    /// Frames written to the TAP.
    pub tap_frames_out: u64,
    /// Datagrams received on the underlay.
    pub udp_in: u64,
    /// Datagrams sent on the underlay.
    pub udp_out: u64,
    /// Bytes received on the underlay.
    pub udp_bytes_in: u64,
    /// Bytes sent on the underlay.
    pub udp_bytes_out: u64,
    /// Guest packets sent into the overlay.
    pub packets_routed: u64,
    /// Packets delivered to the guest from the overlay.
    pub packets_delivered: u64,
    /// Packets sealed by a security association.
    pub sealed: u64,
    /// Packets opened by a security association.
    pub opened: u64,
    /// Guest packets dropped: no route, queue full, lookup failed.
    pub dropped_no_route: u64,
    /// Packets dropped by security policy (unprotected or bad).
    pub dropped_policy: u64,
    /// Overlay link handshakes held back from an endpoint a patient punch
    /// attempt waits on ([`nat_traversal::agent::Agent::is_quiet`]); an
    /// established link's traffic is never held.
    pub dropped_quiet: u64,
    /// Frames or datagrams that did not parse.
    pub malformed: u64,
    /// Direct paths found by authenticated punch sessions.
    pub punched: u64,
}

#[derive(Debug, Clone, Copy)]
struct Route {
    address: Address,
    expires_at: Instant,
}

#[derive(Debug)]
struct Lookup {
    started_at: Instant,
    queue: VecDeque<(Kind, Vec<u8>)>,
}

/// Per-peer facts for `status`.
#[derive(Debug, Clone, Copy, Default)]
struct PeerInfo {
    hops: u8,
    packets_in: u64,
    packets_out: u64,
}

#[derive(Debug, Clone)]
enum DhtJob {
    DhcpClaim {
        id: dhcp_virt::RequestId,
        addr: Ipv4Addr,
        claim: Claim,
        /// A renewal's re-claim: only another owner takes the address away.
        kind: ClaimKind,
    },
    IpLookup(Ipv4Addr),
    CrlFetch,
    CrlChunk {
        number: u64,
        index: u16,
    },
    CaLookup,
    DnsLookup(dns_virt::RequestId),
    DnsPublish(dns_virt::RequestId),
    DnsServiceLookup(dns_virt::RequestId),
    Publish,
    /// A get for the driver ([`Core::dht_get_values`]).
    Values,
}

/// The composed node. See the [module docs](self).
pub struct Core<S: LeaseStore> {
    settings: Settings,
    overlay: overlay_core::Node<overlay_core::DynIdentity>,
    arp: arp_virt::Responder,
    /// The IPv6 plan, if the network has IPv6.
    v6: Option<crate::ipv6::Plan>,
    /// Neighbour discovery for the guest's /64, once it has an address.
    ndp: Option<arp_virt::ndp::NdpResponder>,
    /// Addresses the guest took in its /64 (its duplicate address
    /// detection), newest last.
    guest_v6: Vec<std::net::Ipv6Addr>,
    dhcp: dhcp_virt::Server<S>,
    dns: dns_virt::Server,
    /// DNS over TCP at the gateway.
    tcp_dns: dns_virt::TcpEndpoint,
    sa: Option<ipsec_sa::Endpoint<Verifier>>,
    guest_mac: Option<[u8; 6]>,
    guest_addr: Option<Ipv4Addr>,
    guest_name: Option<String>,
    /// Services the guest offers, by name (`_service._proto`); their
    /// targets are the guest's name.
    services: std::collections::BTreeMap<String, dns_virt::Service>,
    /// When the services are published again.
    services_refresh_at: Option<Instant>,
    routes: FastMap<Ipv4Addr, Route>,
    negative: FastMap<Ipv4Addr, Instant>,
    lookups: FastMap<Ipv4Addr, Lookup>,
    jobs: HashMap<u64, DhtJob>,
    /// The guest's address was lost to another claimant (not published
    /// until the guest leases again).
    guest_addr_lost: bool,
    /// The CRL being fetched: best signed manifest and its chunks.
    crl: crate::crl_dht::Fetcher,
    /// The CRL envelope loaded last (re-applied to a new identity).
    crl_loaded: Option<Vec<u8>>,
    /// Tolerance after nextUpdate (and for the first CRL); `None`: a stale
    /// CRL stops nothing.
    crl_grace: Option<Duration>,
    /// The CA node's current CRL, signed manifest and envelope.
    crl_published: Option<crate::crl_dht::Published>,
    /// When the CA node re-issues its CRL (half its validity).
    crl_reissue_at: Option<SystemTime>,
    peers: FastMap<Ipv4Addr, PeerInfo>,
    sa_peers: HashSet<IpAddr, ahash::RandomState>,
    /// Rules between the guest and its peers ([`Core::set_firewall`]).
    firewall: crate::firewall::Firewall,
    /// The groups and names of the peers with an SA, for the firewall.
    firewall_peers: crate::firewall::PeerTable,
    /// STUN Binding server (nat-traversal): every node is an observer for
    /// its peers' reflexive endpoint discovery.
    stun: nat_traversal::server::Server,
    /// Punch sessions with the peers the overlay links to, NAT opening and
    /// the TURN relay of last resort (our endpoints live there).
    agent: nat_traversal::agent::Agent<Address>,
    /// Whether underlay datagrams may go to loopback: only when our own
    /// endpoints or bootstrap are there (a ring on one host).
    loopback_underlay: bool,
    randomness: Randomness,
    republish_at: Option<Instant>,
    /// When our underlay mapping last changed, and the peers sent a punch
    /// request since (bounded): their links are being made again.
    mapping_changed_at: Option<Instant>,
    repunched: Vec<Address>,
    ca: Option<ipsec_ca::Ca<ipsec_ca::BoxedStore>>,
    /// CA node with a write-behind store: replies and CRLs waiting for
    /// durable writes (see [`Core::set_ca_queue`]).
    ca_hold: Option<crate::ca_hold::Hold>,
    /// The ring walk under way (`status --network`), and its result.
    walk: Option<crate::walk::Walk>,
    walk_replies: crate::walk::ReplyLimit,
    /// How many NATs stand between us and the Internet, when measured.
    nat_depth: Option<u8>,
    /// Central allocation, allocator: the network's lease table.
    registry: Option<dhcp_virt::central::Registry<Address>>,
    /// Central allocation, any other node: claims awaiting the allocator.
    alloc_pending: Option<crate::alloc::Pending>,
    enrolment: Option<ipsec_ca::Enrolment>,
    enrol_out: Vec<Vec<u8>>,
    ca_address: Option<Address>,
    /// When `ca_address` was found (looked up again after a minute).
    ca_found_at: Option<Instant>,
    /// Checks the CA's signed announcement (from `start_enrolment`).
    ca_verifier: Option<Verifier>,
    ca_lookup: bool,
    /// CA node: its signed announcement and when it was signed (Unix s).
    ca_announcement: Option<(u64, Vec<u8>)>,
    /// CA node: rate limits on enrolment requests.
    ca_limiter: Option<crate::enrol::RateLimiter>,
    /// CA node: the overlay node each enrolling address last asked from
    /// (where an approval is pushed).
    enrolling: HashMap<Ipv4Addr, Address>,
    /// No certificate yet but a CA configured: the private prefix is closed
    /// both ways until enrolment installs one.
    closed: bool,
    wall: SystemTime,
    /// This node's host certificate (DER), attached to its DHT records.
    host_certificate: Option<Vec<u8>>,
    /// The record policy's rules, for ranking lease claims.
    record_judge: crate::records::NodePolicy,
    /// `[update] keys`, for the record policy.
    release_keys: Vec<[u8; crate::update::PUBLIC_KEY_LEN]>,
    /// Frames for the guest, oldest first.
    tap_out: VecDeque<Vec<u8>>,
    /// The frame [`Core::poll_tap_frame`] handed out last.
    tap_current: Vec<u8>,
    /// Frame buffers to reuse: the data path allocates none in steady state.
    tap_free: Vec<Vec<u8>>,
    events: VecDeque<CoreEvent>,
    counters: Counters,
    seal_buf: Vec<u8>,
    payload_buf: Vec<u8>,
    /// [`Core::set_deferred_crypto`].
    defer_crypto: bool,
    crypto_jobs: Vec<CryptoJob>,
    /// Job buffers to reuse.
    job_free: Vec<Vec<u8>>,
}

/// Why the core could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// ARP configuration refused.
    #[error("arp: {0}")]
    Arp(#[from] arp_virt::ConfigError),
    /// DHCP configuration or lease store refused.
    #[error("dhcp: {0}")]
    Dhcp(#[from] dhcp_virt::StartError),
    /// The node's certificate or key did not load.
    #[error("identity: {0}")]
    Identity(#[from] ipsec_sa::IdentityError),
    /// The CA certificate did not load.
    #[error("ca certificate: {0}")]
    Ca(#[from] ipsec_ca::VerifyError),
    /// The IPv6 prefix has no room for the network.
    #[error("ipv6: {0}")]
    Ipv6(#[from] crate::ipv6::PlanError),
}

/// A signed claim on an address, as the DHCP conflict rule compares them
/// (smallest wins): first a claim by the writer certified for the address
/// (rank 0) over any other (rank 1), then the writer's key, then the DHCP
/// client it holds the address for. An intruder's claim neither forges a
/// writer nor outranks a certified guest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    rank: u8,
    writer: Vec<u8>,
    owner: Vec<u8>,
}

/// A DHT create-if-absent outcome as dhcp-virt's directory sees it, each
/// existing record a [`Claim`] judged by `judge`; the claim conflict rule
/// is `dhcp_virt::directory::claim_result`.
fn create_answer(
    outcome: DhtOutcome,
    records: &[overlay_core::wire::Record],
    addr: Ipv4Addr,
    judge: &mut crate::records::NodePolicy,
    now: Instant,
) -> CreateAnswer<Claim> {
    match outcome {
        DhtOutcome::Ok(_) => CreateAnswer::Created,
        DhtOutcome::Exists(_) => CreateAnswer::Exists(
            records
                .iter()
                .map(|r| Claim {
                    rank: 1 - crate::records::claim_rank(&judge.standing(now, r), addr),
                    writer: r.writer.public_key.clone(),
                    owner: r.value.clone(),
                })
                .collect(),
        ),
        DhtOutcome::Full | DhtOutcome::Rejected => CreateAnswer::Refused,
        // `Failed`, and any outcome added later: the claim is retried.
        _ => CreateAnswer::Failed,
    }
}

/// Where a core's randomness comes from.
#[derive(Debug, Clone, Copy)]
enum Randomness {
    /// The operating system, for every key, SPI, credential and id.
    Os,
    /// A caller's seed: predictable, for tests and fuzzing only.
    InsecureSeed(u64),
}

/// 64 bits from the operating system's random source.
///
/// # Panics
/// If the operating system's random source fails.
pub fn os_random_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Err(e) = getrandom::fill(&mut b) {
        panic!("the operating system's random source failed: {e}");
    }
    u64::from_le_bytes(b)
}

/// The DHT keys of `host`'s registration of service `name`: under the
/// host (`wow/srv/<name>/<host>`) and among every registrant
/// (`wow/srv/<name>`).
fn service_keys(name: &str, host: &str) -> [Vec<u8>; 2] {
    [
        dht_key("srv", format!("{name}/{host}").as_bytes()),
        dht_key("srv", name.as_bytes()),
    ]
}

fn dht_key(kind: &str, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.len() + 5 + suffix.len());
    k.extend_from_slice(b"wow/");
    k.extend_from_slice(kind.as_bytes());
    k.push(b'/');
    k.extend_from_slice(suffix);
    k
}

impl<S: LeaseStore> Core<S> {
    /// A core whose overlay node has ring address `address` under the
    /// **insecure** [`overlay_core::OpenIdentity`] (self-chosen address,
    /// every peer accepted: for tests and closed labs; `wow-node up` uses
    /// [`Core::with_overlay_identity`]), with lease store `leases`, started
    /// at `now` (`wall` is the wall time then). Every key, SPI,
    /// credential and id it makes comes from the operating system's random
    /// source.
    pub fn new(
        now: Instant,
        wall: SystemTime,
        settings: Settings,
        overlay_config: overlay_core::Config,
        address: Address,
        leases: S,
    ) -> Result<Self, CoreError> {
        let identity = Box::new(overlay_core::OpenIdentity::new(address));
        Core::with_overlay_identity(now, wall, settings, overlay_config, identity, leases)
    }

    /// [`Core::new`] with the overlay identity `identity` (e.g. a
    /// [`crate::overlay_identity::CaIdentity`]): the ring address is
    /// `identity.address()`, and link set-up proves and checks keys.
    pub fn with_overlay_identity(
        now: Instant,
        wall: SystemTime,
        settings: Settings,
        overlay_config: overlay_core::Config,
        identity: overlay_core::DynIdentity,
        leases: S,
    ) -> Result<Self, CoreError> {
        let randomness = Randomness::Os;
        Core::build(
            settings,
            overlay_config,
            identity,
            leases,
            now,
            wall,
            randomness,
        )
    }

    /// [`Core::new`] with randomness from `seed`: **predictable keys**, for
    /// tests and fuzzing only.
    pub fn new_with_insecure_seed(
        now: Instant,
        wall: SystemTime,
        settings: Settings,
        overlay_config: overlay_core::Config,
        address: Address,
        leases: S,
        seed: u64,
    ) -> Result<Self, CoreError> {
        let randomness = Randomness::InsecureSeed(seed);
        Core::build(
            settings,
            overlay_config,
            Box::new(overlay_core::OpenIdentity::new(address)),
            leases,
            now,
            wall,
            randomness,
        )
    }

    fn build(
        settings: Settings,
        overlay_config: overlay_core::Config,
        identity: overlay_core::DynIdentity,
        leases: S,
        now: Instant,
        wall: SystemTime,
        randomness: Randomness,
    ) -> Result<Self, CoreError> {
        let gateway_mac = EthernetAddress(settings.gateway_mac);
        let mut arp_config = arp_virt::Config::new(settings.network, gateway_mac);
        arp_config.gateway_addr = settings.gateway_addr;
        let arp = arp_virt::Responder::new(arp_config)?;
        let v6 = settings
            .ipv6
            .map(|prefix| crate::ipv6::Plan::new(settings.network, prefix))
            .transpose()?;

        let mut dhcp_config = dhcp_virt::Config::new(settings.network, settings.gateway_addr);
        dhcp_config.server_mac = settings.gateway_mac;
        dhcp_config.interface_mtu = Some(settings.guest_mtu);
        dhcp_config.lease_duration = settings.lease_duration;
        let domain = settings.domain.trim_end_matches('.').to_string();
        dhcp_config.domain_name = Some(domain.clone());
        dhcp_config.domain_search = vec![domain.clone()];
        if let Some(addr) = settings.fixed_addr {
            dhcp_config.pool = dhcp_virt::Pool::range(addr, addr);
        } else if let Some((first, last)) = settings.pool {
            dhcp_config.pool = dhcp_virt::Pool::range(first, last);
        }
        if settings.dht_allocation || settings.allocator.is_some() {
            dhcp_config.allocation = dhcp_virt::Allocation::Directory {
                claim_timeout: Duration::from_secs(8),
                max_attempts: 8,
            };
        }
        let dhcp = dhcp_virt::Server::new(now, wall, dhcp_config, leases)?;
        let (registry, alloc_pending) = match settings.allocator {
            Some(Allocator::This) => {
                let mut config = dhcp_virt::central::RegistryConfig::new(settings.network);
                config.excluded = vec![settings.gateway_addr];
                (Some(dhcp_virt::central::Registry::new(config)), None)
            }
            Some(Allocator::Node(at)) => (None, Some(crate::alloc::Pending::new(at))),
            None => (None, None),
        };

        let mut dns_config = dns_virt::Config {
            mode: dns_virt::Mode::Decentralised,
            forward: settings.dns_forward,
            seed: match randomness {
                Randomness::Os => os_random_u64(),
                Randomness::InsecureSeed(seed) => seed,
            },
            ..dns_virt::Config::default()
        };
        dns_config.zone.network = settings.network;
        dns_config.zone.ns_addr = Some(settings.gateway_addr);
        dns_config.zone.ipv6_prefix = v6.map(|p| p.prefix());
        if let Ok(name) = hickory_name(&domain) {
            dns_config.zone.zone = name;
        }
        let dns = dns_virt::Server::new(dns_config);

        let endpoints = overlay_config.endpoints.clone();
        let loopback_underlay = endpoints.iter().any(|e| e.ip().is_loopback());
        let stun = nat_traversal::server::Server::new(nat_traversal::server::ServerConfig {
            primary: endpoints
                .first()
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            alternate: None,
            software: None,
        });
        let address = identity.address();
        let agent_config = nat_traversal::agent::AgentConfig {
            punch: nat_traversal::punch::PunchConfig {
                opening_hold: OPENING_HOLD,
                // After a failed punch, the patient attempt connects two
                // NATs one hop apart that accept packets to themselves
                // (nat_traversal::punch::Patience); meanwhile the
                // overlay's link handshakes toward the peer wait
                // (`poll_udp`), its established links do not.
                patience: Some(nat_traversal::punch::DEFAULT_PATIENCE),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut agent = match randomness {
            Randomness::Os => nat_traversal::agent::Agent::new(address.to_string(), agent_config),
            Randomness::InsecureSeed(seed) => {
                let mut own = [0u8; 8];
                own.copy_from_slice(&address.to_bytes()[..8]);
                let seed = seed ^ u64::from_le_bytes(own);
                nat_traversal::agent::Agent::new_with_insecure_seed(
                    address.to_string(),
                    agent_config,
                    seed,
                )
            }
        };
        agent.set_local_endpoints(endpoints);
        let mut overlay = match randomness {
            Randomness::Os => overlay_core::Node::new(now, overlay_config, identity),
            Randomness::InsecureSeed(seed) => overlay_core::Node::with_identity_and_insecure_seed(
                now,
                overlay_config,
                identity,
                seed,
            ),
        };
        let record_judge = crate::records::NodePolicy::new(
            now,
            wall,
            settings.network,
            settings.gateway_addr,
            &domain,
            None,
        );
        overlay.set_record_policy(Box::new(crate::records::NodePolicy::new(
            now,
            wall,
            settings.network,
            settings.gateway_addr,
            &domain,
            None,
        )));
        let tcp_dns = dns_virt::TcpEndpoint::new(
            now,
            settings.gateway_addr,
            settings.network.prefix_len(),
            settings.guest_mtu,
        );
        let mut core = Core {
            settings,
            overlay,
            arp,
            v6,
            ndp: None,
            guest_v6: Vec::new(),
            dhcp,
            dns,
            tcp_dns,
            sa: None,
            guest_mac: None,
            guest_addr: None,
            guest_name: None,
            services: std::collections::BTreeMap::new(),
            services_refresh_at: None,
            routes: FastMap::default(),
            negative: FastMap::default(),
            lookups: FastMap::default(),
            jobs: HashMap::new(),
            guest_addr_lost: false,
            crl: crate::crl_dht::Fetcher::default(),
            crl_loaded: None,
            crl_grace: None,
            crl_published: None,
            crl_reissue_at: None,
            peers: FastMap::default(),
            sa_peers: HashSet::default(),
            firewall: crate::firewall::Firewall::default(),
            firewall_peers: crate::firewall::PeerTable::default(),
            stun,
            agent,
            loopback_underlay,
            randomness,
            republish_at: None,
            mapping_changed_at: None,
            repunched: Vec::new(),
            ca: None,
            ca_hold: None,
            walk: None,
            walk_replies: crate::walk::ReplyLimit::default(),
            nat_depth: None,
            registry,
            alloc_pending,
            enrolment: None,
            enrol_out: Vec::new(),
            ca_found_at: None,
            ca_verifier: None,
            ca_announcement: None,
            ca_limiter: None,
            enrolling: HashMap::new(),
            closed: false,
            ca_address: None,
            ca_lookup: false,
            wall,
            host_certificate: None,
            record_judge,
            release_keys: Vec::new(),
            tap_out: VecDeque::new(),
            tap_current: Vec::new(),
            tap_free: Vec::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            seal_buf: Vec::with_capacity(2048),
            payload_buf: Vec::with_capacity(2048),
            defer_crypto: false,
            crypto_jobs: Vec::new(),
            job_free: Vec::new(),
        };
        core.restore_guest();
        Ok(core)
    }

    /// A lease the store kept from before a restart (or a self-update's
    /// exec): the node's one guest keeps its address at once instead of
    /// being cut off until its next DHCP renewal.
    fn restore_guest(&mut self) {
        let mut bound = self.dhcp.leases();
        let (Some((addr, client, _)), None) = (bound.next(), bound.next()) else {
            return;
        };
        let mac = match client {
            dhcp_virt::ClientKey::Hardware(h) => h.mac(),
            dhcp_virt::ClientKey::Id(_) => None,
        };
        self.guest_addr = Some(addr);
        self.guest_mac = mac;
        let _ = self.arp.set_guest_addr(Some(addr));
        tracing::info!(%addr, "guest lease restored from the lease store");
    }

    // ----- getters -----

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    /// The overlay node.
    pub fn overlay(&self) -> &overlay_core::Node<overlay_core::DynIdentity> {
        &self.overlay
    }
    /// The guest's address, once leased.
    pub fn guest_addr(&self) -> Option<Ipv4Addr> {
        self.guest_addr
    }
    /// The guest's registered name, once leased.
    pub fn guest_name(&self) -> Option<&str> {
        self.guest_name.as_deref()
    }
    /// The guest's MAC, once seen.
    pub fn guest_mac(&self) -> Option<[u8; 6]> {
        self.guest_mac
    }
    /// Traffic counters.
    pub fn counters(&self) -> Counters {
        Counters {
            // The overlay counts what it withheld for us.
            dropped_quiet: self.overlay.stats().link_handshakes_withheld,
            ..self.counters
        }
    }
    /// Whether private-prefix traffic is protected (a certificate is loaded).
    pub fn is_secure(&self) -> bool {
        self.sa.is_some()
    }

    /// The virtual IP of the installed certificate.
    pub fn identity_ip(&self) -> Option<Ipv4Addr> {
        match self.sa.as_ref()?.config().local_ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        }
    }

    /// Whether the private prefix is closed until enrolment (no
    /// certificate yet, a CA configured).
    pub fn is_closed(&self) -> bool {
        self.closed && self.sa.is_none()
    }
    /// Enforces `rules` on the guest's traffic from now on (flows tracked
    /// so far are forgotten).
    pub fn set_firewall(&mut self, rules: crate::firewall::Rules, limits: crate::firewall::Limits) {
        self.firewall = crate::firewall::Firewall::new(rules, limits);
        self.firewall.set_ipv6(self.v6);
    }
    /// The firewall (its counters and flows).
    pub fn firewall(&self) -> &crate::firewall::Firewall {
        &self.firewall
    }
    /// The firewall's decision on `packet` to (`inbound == false`) or from
    /// the peer `peer`, whose groups count only if `authenticated`.
    fn firewall_allows(
        &mut self,
        now: Instant,
        inbound: bool,
        peer: Ipv4Addr,
        authenticated: bool,
        packet: &[u8],
    ) -> bool {
        if !self.firewall.is_active() {
            return true;
        }
        let peers = &self.firewall_peers;
        let info = || peers.get(peer).filter(|_| authenticated);
        let decision = if inbound {
            self.firewall.inbound_with(now, packet, info)
        } else {
            self.firewall.outbound_with(now, packet, info)
        };
        decision.is_allowed()
    }
    /// Peers with a security association.
    pub fn sa_count(&self) -> usize {
        self.sa_peers.len()
    }
    /// ipsec-sa counters.
    pub fn sa_stats(&self) -> Option<ipsec_sa::Stats> {
        self.sa.as_ref().map(|s| s.stats())
    }
    /// DHCP leases held (this node's guest side).
    pub fn lease_count(&self) -> usize {
        self.dhcp.leases().count()
    }

    /// The DNS server's counters.
    pub fn dns_stats(&self) -> dns_virt::Stats {
        self.dns.stats()
    }
    /// Virtual peers this node exchanged packets with: address, overlay
    /// address, hops of the last packet received, packets in and out.
    pub fn peers(&self) -> Vec<(Ipv4Addr, Option<Address>, u8, u64, u64)> {
        let mut v: Vec<_> = self
            .peers
            .iter()
            .map(|(ip, p)| {
                (
                    *ip,
                    self.routes.get(ip).map(|r| r.address),
                    p.hops,
                    p.packets_in,
                    p.packets_out,
                )
            })
            .collect();
        v.sort();
        v
    }
    /// Hops of the last packet received from `peer`.
    pub fn hops_from(&self, peer: Ipv4Addr) -> Option<u8> {
        self.peers.get(&peer).map(|p| p.hops)
    }

    // ----- commands -----

    /// Joins the overlay through `bootstrap` (none: start a new ring). A
    /// node that cannot join (no endpoint to advertise) says so in the log.
    pub fn join(&mut self, now: Instant, bootstrap: &[SocketAddr]) {
        self.loopback_underlay |= bootstrap.iter().any(|e| e.ip().is_loopback());
        if let Err(e) = self.overlay.join(now, bootstrap) {
            tracing::error!(error = %e, "cannot join the overlay");
        }
        self.pump(now);
    }

    /// Leaves the overlay gracefully (on shutdown).
    pub fn leave(&mut self, now: Instant) {
        self.overlay.leave(now);
    }

    /// Loads the node's certificate and key and the CA certificate: from now
    /// on traffic to and from the private prefix needs a security
    /// association (RFC 4301 §4.4.1 policy: protect the prefix, bypass the
    /// configured public hosts).
    pub fn install_identity(
        &mut self,
        now: Instant,
        wall: SystemTime,
        credentials: &Credentials,
    ) -> Result<(), CoreError> {
        let identity =
            ipsec_sa::LocalIdentity::from_pkcs8(&credentials.certificate, &credentials.key)?;
        let mut verifier = Verifier::new(&credentials.ca_certificate)?;
        // The same CA signs its overlay announcement (`wow/ca`), which a
        // certified node needs to fetch CRLs from the CA node.
        if self.ca_verifier.is_none() {
            self.ca_verifier = Some(verifier.clone());
        }
        self.crl_policy(&mut verifier, wall);
        let virtual_ip = credentials.virtual_ip;
        let mut policy = ipsec_sa::Policy::protect(ipnet::IpNet::V4(self.settings.network));
        for host in &self.settings.public_hosts {
            policy = policy.with_public_host(IpAddr::V4(*host));
        }
        // The gateway is the node itself and never sends over the overlay.
        policy = policy.with_public_host(IpAddr::V4(self.settings.gateway_addr));
        let config = ipsec_sa::Config {
            local_ip: IpAddr::V4(virtual_ip),
            policy,
            // Both guests often speak first at once; a lost or collided key
            // exchange then costs half a second, not the default second.
            handshake_retransmit_timeout: Duration::from_millis(500),
            ..ipsec_sa::Config::default()
        };
        self.sa = Some(match self.randomness {
            Randomness::Os => ipsec_sa::Endpoint::new(now, wall, config, identity, verifier),
            Randomness::InsecureSeed(seed) => {
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&seed.to_le_bytes());
                s[8..12].copy_from_slice(&virtual_ip.octets());
                ipsec_sa::Endpoint::new_with_insecure_seed(now, wall, config, identity, verifier, s)
            }
        });
        // DHT records are signed with the certified key, so that readers
        // can match the certificate attached to them with their writer.
        let key_type =
            match ipsec_ca::NodeKey::from_pkcs8_der(&credentials.key).map(|k| k.key_type()) {
                Ok(ipsec_ca::KeyType::EcdsaP256) => overlay_core::KeyType::EcdsaP256,
                _ => overlay_core::KeyType::Ed25519,
            };
        let micros = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        match overlay_core::KeySigner::from_pkcs8(key_type, &credentials.key, micros) {
            Ok(signer) => self.overlay.set_record_signer(Box::new(signer)),
            Err(e) => tracing::warn!(error = ?e, "the certified key cannot sign DHT records"),
        }
        self.host_certificate = Some(credentials.certificate.clone());
        self.wall = wall;
        self.refresh_record_policy(now);
        // What the guest published before is not certified: again, signed
        // with the certified key and carrying the certificate.
        self.publish_guest(now);
        Ok(())
    }

    /// Re-judges DHT records with what the node now knows of the CA (its
    /// certificate, the CRL) and attaches this node's credential to the
    /// records it writes: its host certificate, or on a CA node without
    /// one, the CA's announcement naming it.
    fn refresh_record_policy(&mut self, now: Instant) {
        let verifier = match (&self.sa, &self.ca_verifier, &self.ca) {
            (Some(sa), _, _) => Some(sa.authenticator().clone()),
            (None, Some(v), _) => Some(v.clone()),
            (None, None, Some(ca)) => Verifier::new(ca.identity().cert_der()).ok(),
            (None, None, None) => None,
        };
        let domain = self.settings.domain.trim_end_matches('.').to_string();
        let policy = |verifier| {
            crate::records::NodePolicy::new(
                now,
                self.wall,
                self.settings.network,
                self.settings.gateway_addr,
                &domain,
                verifier,
            )
            .with_release_keys(self.release_keys.clone())
        };
        self.record_judge = policy(verifier.clone());
        self.overlay.set_record_policy(Box::new(policy(verifier)));
        let credential = match (&self.host_certificate, &self.ca_announcement) {
            (Some(cert), _) => cert.clone(),
            (None, Some((_, announcement))) => announcement.clone(),
            (None, None) => Vec::new(),
        };
        if let Err(e) = self.overlay.set_record_credential(credential) {
            tracing::warn!(error = %e, "credential not attached to DHT records");
        }
    }

    /// Loads a newer CRL envelope into the verifier; peers it revokes are
    /// torn down at once.
    pub fn handle_crl(&mut self, now: Instant, wall: SystemTime, envelope: &[u8]) -> bool {
        let Some(sa) = self.sa.as_mut() else {
            return false;
        };
        let ok = sa.update_authenticator(now, |v| v.handle_crl_envelope(wall, envelope).is_ok());
        if ok {
            self.crl_loaded = Some(envelope.to_vec());
            self.refresh_record_policy(now);
        }
        self.pump(now);
        ok
    }

    /// Signs the DHT records this node publishes (names, leases, routes,
    /// the CA location, the CRL) with `signer`, which wraps the node key;
    /// without it the overlay signs with an ephemeral key.
    pub fn set_record_signer(&mut self, signer: Box<dyn overlay_core::RecordSigner>) {
        self.overlay.set_record_signer(signer);
    }

    /// The CRL envelope loaded last (from a file, a peer or the DHT).
    pub fn crl_envelope(&self) -> Option<&[u8]> {
        self.crl_loaded.as_deref()
    }

    /// Fails closed on revocation from the next [`Core::install_identity`]
    /// on: new security associations are refused once the CRL is `grace`
    /// past its nextUpdate, or when none came within `grace` of installing.
    pub fn set_crl_grace(&mut self, grace: Duration) {
        self.crl_grace = Some(grace);
    }

    /// Applies the CRL policy to a new verifier, with the CRL loaded last
    /// (a new identity never falls back to an older CRL).
    fn crl_policy(&self, verifier: &mut Verifier, wall: SystemTime) {
        if let Some(grace) = self.crl_grace {
            // Past the clock's range: the last second a certificate can
            // carry (9999-12-31).
            let never = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(253_402_300_799));
            if let Some(by) = wall.checked_add(grace).or(never) {
                verifier.require_fresh_crl(grace, by);
            }
        }
        if let Some(envelope) = &self.crl_loaded {
            let _ = verifier.handle_crl_envelope(wall, envelope);
        }
    }

    /// The loaded CRL at `wall`: number, nextUpdate and whether it is stale
    /// (new security associations refused); `None` without a certificate.
    pub fn crl_status(&self, wall: SystemTime) -> Option<CrlStatus> {
        let v = self.sa.as_ref()?.authenticator();
        Some(CrlStatus {
            number: v.crl_number(),
            next_update: v.crl_next_update(),
            stale: v.crl_is_stale(wall),
        })
    }

    /// Makes this node the CA's: enrolment requests from guests' nodes are
    /// answered by `ca` (signed at once with an auto-approving policy, else
    /// queued for `wow-node ca`), and this node announces itself in the DHT.
    /// The caller picks the store (a `FileStore` fsyncs inside CA calls; a
    /// `QueueStore` does not, with [`Core::set_ca_queue`]).
    pub fn set_ca<C: ipsec_ca::Store + Send + 'static>(
        &mut self,
        now: Instant,
        ca: ipsec_ca::Ca<C>,
    ) {
        self.ca = Some(ca.boxed());
        self.ca_limiter = Some(crate::enrol::RateLimiter::new(now));
        self.publish_ca(now);
        self.refresh_record_policy(now);
    }

    /// Gives the CA (see [`Core::set_ca`]) a write-behind store's queue
    /// ([`ipsec_ca::QueueStore::queue`]): from now on the CA's replies and
    /// new CRLs leave this core only once the writes before them are
    /// durable, so that no certificate is handed out, nor a join token
    /// spent, that a crash could make the CA forget. The caller makes the
    /// writes durable ([`ipsec_ca::WriteQueue::take`], e.g. with an
    /// [`ipsec_ca::StoreWriter`] on a thread), calls
    /// [`ipsec_ca::WriteQueue::mark_durable`], then
    /// [`Core::handle_ca_durable`]. Without a queue (a store that writes
    /// before it returns) nothing waits.
    pub fn set_ca_queue(&mut self, queue: ipsec_ca::WriteQueue) {
        self.ca_hold = Some(crate::ca_hold::Hold::new(queue));
    }

    /// The CA's writes are durable further (see [`Core::set_ca_queue`]):
    /// sends the replies and publishes the CRL that waited for them.
    pub fn handle_ca_durable(&mut self, now: Instant) {
        let Some(hold) = self.ca_hold.as_mut() else {
            return;
        };
        let replies = hold.released_replies();
        let crl = hold.released_crl();
        self.deliver_ca_replies(now, replies);
        if let Some(p) = crl {
            self.crl_published = Some(p);
            self.publish_crl(now);
        }
        self.pump(now);
    }

    /// Runs `f` on this node's CA (`None` if it is not the CA's), then
    /// sends the replies it queued (an approval's certificate, a
    /// rejection) to the nodes that asked.
    pub fn with_ca<R>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut ipsec_ca::Ca<ipsec_ca::BoxedStore>) -> R,
    ) -> Option<R> {
        let result = f(self.ca.as_mut()?);
        self.send_ca_replies(now);
        self.pump(now);
        Some(result)
    }

    /// Sends the CA's queued replies to the overlay node each address last
    /// asked from (replies to unknown addresses wait for the node's poll).
    fn send_ca_replies(&mut self, now: Instant) {
        let mut replies = Vec::new();
        if let Some(ca) = self.ca.as_mut() {
            while let Some(t) = ca.poll_transmit() {
                replies.push(t);
            }
        }
        if let Some(hold) = self.ca_hold.as_mut() {
            replies = replies.into_iter().filter_map(|t| hold.reply(t)).collect();
        }
        self.deliver_ca_replies(now, replies);
    }

    fn deliver_ca_replies(&mut self, now: Instant, replies: Vec<ipsec_ca::Transmit>) {
        for t in replies {
            if let Some(to) = self.enrolling.get(&t.destination).copied() {
                self.send_enrolment(now, to, &t.payload);
            }
        }
    }

    /// Sends enrolment requests to the CA node at `address` instead of
    /// looking its announcement up in the DHT (replies must still be
    /// signed by the CA).
    pub fn set_ca_node(&mut self, address: Address) {
        self.ca_address = Some(address);
        self.ca_found_at = None;
    }

    /// Closes (or opens) the private prefix while the node has no
    /// certificate: with a CA configured, no plaintext guest traffic may
    /// leave or enter before enrolment (public hosts excepted).
    pub fn set_closed_until_enrolled(&mut self, closed: bool) {
        self.closed = closed;
    }

    /// Puts the CA node's signed announcement in the DHT again (the
    /// runtime calls this periodically, well within its TTL; a no-op on
    /// other nodes).
    pub fn announce_ca(&mut self, now: Instant) {
        self.publish_ca(now);
        self.pump(now);
    }

    fn publish_ca(&mut self, now: Instant) {
        let unix = self
            .wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Signed again hourly, not on every republish: each signature is a
        // new DHT value.
        if let Some(ca) = self.ca.as_ref()
            && self
                .ca_announcement
                .as_ref()
                .is_none_or(|(at, _)| unix >= at + crate::enrol::ANNOUNCE_RESIGN_SECS)
        {
            let writer = self.overlay.record_writer().public_key;
            match crate::enrol::announcement(ca.identity(), self.overlay.address(), unix, &writer) {
                Ok(value) => {
                    self.ca_announcement = Some((unix, value));
                    if self.host_certificate.is_none() {
                        self.refresh_record_policy(now);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot sign the CA announcement"),
            }
        }
        if let Some((_, value)) = self.ca.as_ref().and(self.ca_announcement.as_ref()) {
            let value = value.clone();
            if let Ok(id) = self
                .overlay
                .dht_put(now, &dht_key("ca", b""), &value, PUBLISH_TTL)
            {
                self.jobs.insert(id, DhtJob::Publish);
            }
        }
    }

    /// Starts enrolling (or renewing): `csr` (from the node key) for the
    /// guest's leased address goes to the CA node found in the DHT (its
    /// signed announcement), with retries and backoff, carrying the join
    /// `token` if the node has one. Only replies signed by the CA count.
    #[allow(clippy::too_many_arguments)]
    pub fn start_enrolment(
        &mut self,
        now: Instant,
        csr: &[u8],
        spki: Vec<u8>,
        ca_certificate: &[u8],
        virtual_ip: Ipv4Addr,
        request_id: u64,
        token: Option<&ipsec_ca::JoinToken>,
    ) -> Result<(), CoreError> {
        let verifier = Verifier::new(ca_certificate)?;
        self.ca_verifier = Some(verifier.clone());
        self.refresh_record_policy(now);
        self.enrolment = Some(ipsec_ca::Enrolment::new(
            now,
            crate::enrol::enrolment_config(),
            csr,
            virtual_ip,
            spki,
            verifier,
            request_id,
            token,
        ));
        self.pump(now);
        Ok(())
    }

    /// On the CA node: issues a CRL when none is current or half its
    /// validity has passed at `wall` (so nodes have the next one well
    /// before nextUpdate) and loads it. On every node serving a CRL (the CA
    /// node, or one given a signed one by [`Core::serve_crl`]): publishes
    /// it again ([`Core::publish_crl`]). Returns the number of a CRL issued
    /// now.
    pub fn refresh_crl(&mut self, now: Instant, wall: SystemTime) -> Option<u64> {
        let issued = self.reissue_crl(now, wall);
        self.publish_crl(now);
        issued
    }

    fn reissue_crl(&mut self, now: Instant, wall: SystemTime) -> Option<u64> {
        let ca = self.ca.as_mut()?;
        if self.crl_reissue_at.is_some_and(|at| wall < at) {
            return None;
        }
        let crl = ca
            .issue_crl(wall)
            .map_err(|e| tracing::warn!(error = %e, "cannot issue a CRL"))
            .ok()?;
        let half = crl
            .next_update
            .duration_since(crl.this_update)
            .unwrap_or_default()
            / 2;
        self.crl_reissue_at = crl.this_update.checked_add(half);
        match crate::crl_dht::Published::new(ca.identity(), crl.number, crl.envelope()) {
            Ok(p) => {
                // Loaded here at once; with a write-behind store, served
                // and published once its number is durable.
                let envelope = p.envelope.clone();
                let ready = match self.ca_hold.as_mut() {
                    Some(hold) => hold.crl(p),
                    None => Some(p),
                };
                if let Some(p) = ready {
                    self.crl_published = Some(p);
                }
                self.handle_crl(now, wall, &envelope);
                Some(crl.number)
            }
            Err(e) => {
                tracing::warn!(error = %e, "CRL not published");
                None
            }
        }
    }

    /// On the CA node, after a revocation: the next [`Core::refresh_crl`]
    /// issues a new CRL at once.
    pub fn reissue_crl_soon(&mut self) {
        self.crl_reissue_at = None;
    }

    /// Serves and publishes a CRL the CA signed elsewhere (`wow-node ca`
    /// writes the signed manifest next to the envelope), unless this node is
    /// the CA's or serves a newer one.
    pub fn serve_crl(&mut self, now: Instant, published: crate::crl_dht::Published) {
        if self.ca.is_some()
            || self
                .crl_published
                .as_ref()
                .is_some_and(|p| p.manifest.number >= published.manifest.number)
        {
            return;
        }
        self.crl_published = Some(published);
        self.publish_crl(now);
    }

    /// The release keys (`[update] keys`): manifests under
    /// `wow/release/<channel>` are stored and believed only when one of
    /// them signed it (see [`crate::records`]).
    pub fn set_release_keys(
        &mut self,
        now: Instant,
        keys: Vec<[u8; crate::update::PUBLIC_KEY_LEN]>,
    ) {
        self.release_keys = keys;
        self.refresh_record_policy(now);
    }

    /// Gets the values under `wow/<kind>/<suffix>` for the driver (the
    /// self-update's manifests and chunks, see [`crate::update`]):
    /// answered by [`CoreEvent::DhtValues`] with the returned id; `None`
    /// if the overlay refused the request.
    pub fn dht_get_values(&mut self, now: Instant, kind: &str, suffix: &[u8]) -> Option<u64> {
        let id = self.overlay.dht_get(now, &dht_key(kind, suffix)).ok()?;
        self.jobs.insert(id, DhtJob::Values);
        self.pump(now);
        Some(id)
    }

    /// Puts `value` under `wow/<kind>/<suffix>` for `ttl` (the driver's
    /// releases); `false` if the overlay refused it.
    pub fn dht_put_value(
        &mut self,
        now: Instant,
        kind: &str,
        suffix: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> bool {
        let ok = match self
            .overlay
            .dht_put(now, &dht_key(kind, suffix), value, ttl)
        {
            Ok(id) => {
                self.jobs.insert(id, DhtJob::Publish);
                true
            }
            Err(_) => false,
        };
        self.pump(now);
        ok
    }

    /// Publishes the CA node's CRL in the DHT, where every node looks for
    /// the newest one ([`Core::fetch_crl`]): the signed manifest under
    /// `wow/crl`, the envelope in 1 KiB chunks (see [`crate::crl_dht`]).
    /// `false` if there is none or the overlay refused the puts.
    pub fn publish_crl(&mut self, now: Instant) -> bool {
        let Some(p) = &self.crl_published else {
            return false;
        };
        let mut puts = Vec::new();
        for i in 0..p.manifest.chunks() {
            if let Some(chunk) = p.chunk(i) {
                puts.push((
                    dht_key("crl-chunk", &p.manifest.chunk_suffix(i)),
                    chunk.to_vec(),
                ));
            }
        }
        puts.push((dht_key("crl", b""), p.signed.clone()));
        let mut ok = true;
        for (key, value) in puts {
            match self.overlay.dht_put(now, &key, &value, CRL_TTL) {
                Ok(id) => {
                    self.jobs.insert(id, DhtJob::Publish);
                }
                Err(_) => ok = false,
            }
        }
        self.pump(now);
        ok
    }

    /// Looks for a newer CRL: every manifest under `wow/crl` in the DHT,
    /// the CA node's own (asked over the overlay), and the chunks still
    /// missing of one under way. Answered with [`CoreEvent::CrlFetched`].
    pub fn fetch_crl(&mut self, now: Instant) {
        if let Ok(id) = self.overlay.dht_get(now, &dht_key("crl", b"")) {
            self.jobs.insert(id, DhtJob::CrlFetch);
        }
        match self.ca_address {
            Some(ca) => {
                let request = crate::crl_dht::Message::ManifestRequest.to_bytes();
                self.send_crl(now, ca, &request);
            }
            None if !self.ca_lookup && self.ca.is_none() => {
                if let Ok(id) = self.overlay.dht_get(now, &dht_key("ca", b"")) {
                    self.ca_lookup = true;
                    self.jobs.insert(id, DhtJob::CaLookup);
                }
            }
            None => {}
        }
        for index in self.crl.missing() {
            self.request_crl_chunk(now, index);
        }
        self.pump(now);
    }

    fn send_crl(&mut self, now: Instant, to: Address, message: &[u8]) {
        self.send_to_node(now, to, Kind::Crl, message);
    }

    /// Sends `body` of `kind` (not a guest packet) to the node at `to`.
    /// Sends `peer` a punch request naming `endpoints` (ours).
    fn send_punch_request(&mut self, now: Instant, peer: Address, endpoints: &[SocketAddr]) {
        tracing::debug!(%peer, ?endpoints, "punch request sent");
        let mut body = Vec::with_capacity(6 * endpoints.len());
        wire::emit_endpoints(endpoints, &mut body);
        self.send_to_node(now, peer, Kind::Punch, &body);
    }

    fn send_to_node(&mut self, now: Instant, to: Address, kind: Kind, body: &[u8]) {
        let repr = wire::Repr {
            kind,
            source: self.guest_addr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            destination: Ipv4Addr::UNSPECIFIED,
        };
        let mut payload = Vec::new();
        repr.emit_with_body(body, &mut payload);
        let _ = self.overlay.send(now, to, payload);
    }

    // ----- the ring walk (`status --network`) -----

    /// Starts a walk round the ring, listing at most `limit` nodes from
    /// this one rightwards; its result comes from [`Core::poll_walk`]. One
    /// walk at a time.
    pub fn start_walk(&mut self, now: Instant, limit: usize) -> Result<(), crate::walk::WalkError> {
        if self.walk.as_ref().is_some_and(|w| w.asked.is_some()) {
            return Err(crate::walk::WalkError::Busy);
        }
        let nonce = match self.randomness {
            Randomness::Os => os_random_u64(),
            Randomness::InsecureSeed(_) => self.overlay.address().prefix() ^ limit as u64,
        };
        let me = crate::walk::NodeInfo {
            overlay_address: self.overlay.address().to_string(),
            name: self.walk_name(),
            address: self.guest_addr,
            version: env!("CARGO_PKG_VERSION").to_string(),
            hops: 0,
        };
        let right = self.right_neighbour();
        let (walk, next) =
            crate::walk::Walk::new(nonce, limit, me, self.overlay.address(), right, now);
        self.walk = Some(walk);
        self.walk_ask(now, next);
        self.pump(now);
        Ok(())
    }

    /// The finished walk, once (see [`Core::start_walk`]).
    pub fn poll_walk(&mut self) -> Option<crate::walk::WalkResult> {
        let result = self.walk.as_mut()?.take_result();
        if result.is_some() {
            self.walk = None;
        }
        result
    }

    fn walk_name(&self) -> Option<String> {
        self.guest_name()
            .map(|n| format!("{n}.{}", self.settings.domain.trim_end_matches('.')))
    }

    /// The nearest node clockwise among our links.
    fn right_neighbour(&self) -> Option<Address> {
        let me = self.overlay.address();
        self.overlay
            .connections()
            .iter()
            .map(|c| c.address)
            .filter(|a| *a != me)
            .min_by_key(|a| me.right_distance_to(*a))
    }

    fn walk_ask(&mut self, now: Instant, next: crate::walk::Next) {
        if let (crate::walk::Next::Ask(to), Some(w)) = (next, self.walk.as_ref()) {
            let request = crate::walk::Message::Request { nonce: w.nonce }.to_bytes();
            self.send_to_node(now, to, Kind::Walk, &request);
        }
    }

    fn on_walk_message(&mut self, now: Instant, source: Address, hops: u8, body: &[u8]) {
        let message = match crate::walk::Message::parse(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%source, error = %e, "walk message dropped");
                self.counters.malformed += 1;
                return;
            }
        };
        match message {
            crate::walk::Message::Request { nonce } => {
                if !self.walk_replies.allow(now) {
                    return;
                }
                let reply = crate::walk::Message::Reply {
                    nonce,
                    right: self.right_neighbour(),
                    ip: self.guest_addr,
                    name: self.walk_name().unwrap_or_default(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                };
                self.send_to_node(now, source, Kind::Walk, &reply.to_bytes());
            }
            reply @ crate::walk::Message::Reply { .. } => {
                if let Some(w) = self.walk.as_mut() {
                    let next = w.handle_reply(now, source, hops, &reply);
                    self.walk_ask(now, next);
                }
            }
        }
    }

    // ----- central allocation -----

    /// A claim or release of our DHCP server, for the allocator.
    fn on_central_request(&mut self, now: Instant, request: dhcp_virt::DirectoryRequest) {
        let owner = request.owner.to_bytes();
        let me = self.overlay.address();
        if let Some(registry) = self.registry.as_mut() {
            let result = match request.op {
                DirectoryOp::Claim => {
                    registry.claim(now, me, request.addr, &owner, request.lease_duration)
                }
                DirectoryOp::Release => registry.release(now, &me, request.addr, &owner),
            };
            self.dhcp.handle_directory_completion(
                now,
                DirectoryCompletion {
                    id: request.id,
                    result,
                },
            );
            return;
        }
        let id = match self.randomness {
            Randomness::Os => os_random_u64(),
            Randomness::InsecureSeed(_) => me.prefix() ^ request.id.0,
        };
        let Some(pending) = self.alloc_pending.as_mut() else {
            return;
        };
        let allocator = pending.allocator();
        if !pending.insert(now, id, request.id) {
            self.dhcp.handle_directory_completion(
                now,
                DirectoryCompletion {
                    id: request.id,
                    result: ClaimResult::Failed,
                },
            );
            return;
        }
        let message = crate::alloc::Message::Claim {
            id,
            op: match request.op {
                DirectoryOp::Claim => crate::alloc::Op::Claim,
                DirectoryOp::Release => crate::alloc::Op::Release,
            },
            addr: request.addr,
            lease_secs: u32::try_from(request.lease_duration.as_secs()).unwrap_or(u32::MAX),
            owner,
        };
        tracing::debug!(addr = %request.addr, %allocator, "address claim sent to the allocator");
        self.send_to_node(now, allocator, Kind::Alloc, &message.to_bytes());
    }

    fn on_alloc_message(&mut self, now: Instant, source: Address, body: &[u8]) {
        let message = match crate::alloc::Message::parse(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%source, error = %e, "allocation message dropped");
                self.counters.malformed += 1;
                return;
            }
        };
        match message {
            crate::alloc::Message::Claim {
                id,
                op,
                addr,
                lease_secs,
                owner,
            } => {
                // Only the allocator answers; others drop claims silently.
                let Some(registry) = self.registry.as_mut() else {
                    return;
                };
                let lease = Duration::from_secs(u64::from(lease_secs));
                let result = match op {
                    crate::alloc::Op::Claim => registry.claim(now, source, addr, &owner, lease),
                    crate::alloc::Op::Release => registry.release(now, &source, addr, &owner),
                };
                tracing::debug!(%source, %addr, ?op, ?result, "address claim answered");
                let answer = crate::alloc::Message::Answer { id, result };
                self.send_to_node(now, source, Kind::Alloc, &answer.to_bytes());
            }
            crate::alloc::Message::Answer { id, result } => {
                let Some(pending) = self.alloc_pending.as_mut() else {
                    return;
                };
                match pending.answer(source, id, result) {
                    Some((request, result)) => self.dhcp.handle_directory_completion(
                        now,
                        DirectoryCompletion {
                            id: request,
                            result,
                        },
                    ),
                    None => {
                        tracing::debug!(%source, "allocation answer ignored (not the allocator's, or not pending)")
                    }
                }
            }
        }
    }

    /// The allocator keeps its lease table in `store` from now on, taking
    /// over what the store holds (see [`dhcp_virt::central`]'s
    /// persistence: every grant is written before it is answered). Does
    /// nothing unless this node is the allocator.
    pub fn set_allocator_store(
        &mut self,
        now: Instant,
        wall: SystemTime,
        store: Box<dyn LeaseStore + Send>,
    ) -> Result<(), dhcp_virt::StoreError> {
        let Some(registry) = self.registry.as_ref() else {
            return Ok(());
        };
        let registry = dhcp_virt::central::Registry::open(
            registry.config().clone(),
            store,
            now,
            wall,
            |a: &Address| a.to_bytes().to_vec(),
            |b| Some(Address::from_bytes(b.try_into().ok()?)),
        )?;
        self.registry = Some(registry);
        Ok(())
    }

    /// Our NAT depth as the driver measured it (see
    /// [`nat_traversal::depth`]): punch sessions started from now on send
    /// one opening step per NAT (TTL 2, then 3 behind a carrier-grade NAT
    /// too) instead of the default two, so that a TTL-3 probe from behind
    /// one NAT does not reach a close peer's carrier NAT first.
    pub fn set_nat_depth(&mut self, depth: u8) {
        self.nat_depth = Some(depth);
        self.agent
            .set_opening_ttls(nat_traversal::depth::opening_ttls(depth));
    }

    /// Our NAT depth, if the driver measured it.
    pub fn nat_depth(&self) -> Option<u8> {
        self.nat_depth
    }

    /// Who grants addresses, in central allocation.
    pub fn allocator(&self) -> Option<Allocator> {
        self.settings.allocator
    }

    /// The allocator's lease table: how many addresses it has granted
    /// (`None` unless this node is the allocator).
    pub fn central_leases(&self) -> Option<usize> {
        self.registry.as_ref().map(|r| r.len())
    }

    /// Asks the DHT and the CA node for chunk `index` of the CRL under way.
    fn request_crl_chunk(&mut self, now: Instant, index: u16) {
        let Some(m) = self.crl.current() else {
            return;
        };
        let (number, key) = (m.number, dht_key("crl-chunk", &m.chunk_suffix(index)));
        if let Ok(id) = self.overlay.dht_get(now, &key) {
            self.jobs.insert(id, DhtJob::CrlChunk { number, index });
        }
        if let Some(ca) = self.ca_address {
            let request = crate::crl_dht::Message::ChunkRequest { number, index }.to_bytes();
            self.send_crl(now, ca, &request);
        }
    }

    /// Signed manifests from the DHT or the CA node: the highest valid CRL
    /// number above the loaded one is fetched.
    fn on_crl_manifests<'a>(&mut self, now: Instant, values: impl IntoIterator<Item = &'a [u8]>) {
        let Some(verifier) = self.sa.as_ref().map(|sa| sa.authenticator()) else {
            return;
        };
        if let Some(m) = self
            .crl
            .offer_manifests(verifier, verifier.crl_number(), values)
        {
            tracing::debug!(
                number = m.number,
                chunks = m.chunks(),
                "fetching a newer CRL"
            );
            for index in 0..m.chunks() {
                self.request_crl_chunk(now, index);
            }
        }
    }

    /// Values found for a CRL chunk: a wrong one is asked again.
    fn on_crl_chunk<'a>(
        &mut self,
        now: Instant,
        number: u64,
        index: u16,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) {
        use crate::crl_dht::ChunkOutcome;
        match self.crl.offer_chunk(number, index, values) {
            ChunkOutcome::Complete(envelope) => {
                self.events.push_back(CoreEvent::CrlFetched(vec![envelope]));
            }
            ChunkOutcome::Bad(true) => self.request_crl_chunk(now, index),
            ChunkOutcome::Bad(false) | ChunkOutcome::Stored | ChunkOutcome::Ignored => {}
        }
    }

    /// A CRL message over the overlay: the CA node answers requests; a
    /// node takes answers from the CA node's address (and checks them all
    /// the same: signed manifests, digest-checked chunks).
    fn on_crl_message(&mut self, now: Instant, source: Address, body: &[u8]) {
        use crate::crl_dht::Message;
        let Some(message) = Message::parse(body) else {
            self.counters.malformed += 1;
            return;
        };
        match message {
            Message::ManifestRequest | Message::ChunkRequest { .. } => {
                if let Some(answer) = self.crl_published.as_ref().and_then(|p| p.answer(&message)) {
                    self.send_crl(now, source, &answer);
                }
            }
            // Answers only from the CA node we asked: no signature checks
            // for whoever sends.
            _ if Some(source) != self.ca_address => {}
            Message::Manifest(signed) => self.on_crl_manifests(now, [signed]),
            Message::Chunk {
                number,
                index,
                bytes,
            } => self.on_crl_chunk(now, number, index, [bytes]),
        }
    }

    // ----- inputs -----

    /// An Ethernet frame from the guest.
    pub fn handle_tap_frame(&mut self, now: Instant, frame: &[u8]) {
        self.counters.tap_frames_in += 1;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.malformed += 1;
            return;
        };
        let src = eth.src_addr();
        if src.is_unicast() && self.guest_mac.is_none() {
            self.guest_mac = Some(src.0);
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let routes = &self.routes;
                let others = |a: Ipv4Addr| routes.contains_key(&a);
                if let Ok(Outcome::Reply(t)) = self.arp.handle_frame(frame, &others) {
                    let mut frame = self.tap_buffer();
                    frame.extend_from_slice(t.as_bytes());
                    self.push_tap(frame);
                }
                while self.arp.poll_event().is_some() {}
            }
            EthernetProtocol::Ipv4 => self.on_guest_ipv4(now, frame, eth.payload()),
            EthernetProtocol::Ipv6 => self.on_guest_ipv6(now, frame, eth.payload()),
            _ => {}
        }
        self.pump(now);
    }

    /// Starts neighbour discovery for the guest's /64 (the one derived
    /// from `addr`) and advertises it at once.
    fn start_ndp(&mut self, addr: Ipv4Addr) {
        let Some(plan) = self.v6 else {
            return;
        };
        let Some(subnet) = plan.subnet_of(addr) else {
            return;
        };
        if self
            .ndp
            .as_ref()
            .is_some_and(|n| n.config().guest_prefix == subnet)
        {
            return;
        }
        let mut config = arp_virt::ndp::NdpConfig::new(
            plan.prefix(),
            subnet,
            EthernetAddress(self.settings.gateway_mac),
        );
        config.mtu = Some(u32::from(self.settings.guest_mtu));
        match arp_virt::ndp::NdpResponder::new(config) {
            Ok(mut ndp) => {
                self.guest_v6.clear();
                let mut frame = self.tap_buffer();
                frame.extend_from_slice(&ndp.advertisement());
                self.push_tap(frame);
                self.ndp = Some(ndp);
            }
            Err(e) => tracing::warn!(error = %e, "no IPv6 for the guest"),
        }
    }

    /// The guest's IPv6 addresses in its /64 (from its duplicate address
    /// detection), newest last.
    pub fn guest_ipv6(&self) -> &[std::net::Ipv6Addr] {
        &self.guest_v6
    }

    /// The guest's IPv6 /64, once it has an IPv4 address and the network
    /// has IPv6.
    pub fn guest_ipv6_subnet(&self) -> Option<ipnet::Ipv6Net> {
        self.ndp.as_ref().map(|n| n.config().guest_prefix)
    }

    fn on_guest_ipv6(&mut self, now: Instant, frame: &[u8], packet: &[u8]) {
        let (Some(plan), Some(ndp)) = (self.v6, self.ndp.as_mut()) else {
            return;
        };
        let outcome = ndp.handle_frame(frame);
        let subnet = ndp.config().guest_prefix;
        let mut learned = None;
        while let Some(event) = ndp.poll_event() {
            if let arp_virt::ndp::NdpEvent::GuestAddress(a) = event {
                learned = Some(a);
            }
        }
        if let Some(a) = learned
            && !self.guest_v6.contains(&a)
        {
            if self.guest_v6.len() >= GUEST_V6_LIMIT {
                self.guest_v6.remove(0);
            }
            self.guest_v6.push(a);
            // AAAA here, and the interface ids in the published name.
            if let Some(guest) = self.guest_addr {
                self.dns.set_ipv6_addrs(guest, &self.guest_v6);
                if let Some(name) = self.guest_name.clone()
                    && let Err(e) = self.dns.register(now, &name, guest, None)
                {
                    tracing::warn!(%name, error = %e, "name not republished");
                }
            }
        }
        match outcome {
            Ok(arp_virt::ndp::NdpOutcome::Reply(reply)) => {
                let mut out = self.tap_buffer();
                out.extend_from_slice(&reply);
                self.push_tap(out);
                return;
            }
            Ok(arp_virt::ndp::NdpOutcome::Ignored) => {}
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        }
        let Ok(ip) = smoltcp::wire::Ipv6Packet::new_checked(packet) else {
            self.counters.malformed += 1;
            return;
        };
        if ip.next_header() == IpProtocol::Icmpv6
            && ip
                .payload()
                .first()
                .is_some_and(|t| (133..=137).contains(t))
        {
            // Neighbour discovery stays on the link.
            return;
        }
        let dst = ip.dst_addr();
        // Multicast, link-local and other networks are not the overlay's.
        let Some(owner) = plan.owner_of(dst) else {
            return;
        };
        if Some(owner) == self.guest_addr {
            return;
        }
        if !subnet.contains(&ip.src_addr()) {
            // Only the guest's own /64 may speak on the overlay.
            self.counters.dropped_policy += 1;
            return;
        }
        let len = (40 + usize::from(ip.payload_len())).min(packet.len());
        let packet = &packet[..len];
        if !self.firewall_allows(now, false, owner, true, packet) {
            return;
        }
        self.counters.packets_routed += 1;
        self.peers.entry(owner).or_default().packets_out += 1;
        self.route_ip(now, owner, packet);
    }

    fn on_guest_ipv4(&mut self, now: Instant, frame: &[u8], packet: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            self.counters.malformed += 1;
            return;
        };
        let dst = ip.dst_addr();
        if ip.next_header() == IpProtocol::Udp
            && let Ok(udp) = UdpPacket::new_checked(ip.payload())
        {
            if udp.dst_port() == dhcp_virt::wire::SERVER_PORT {
                let _ = self.dhcp.handle_frame(now, frame);
                return;
            }
            if dst == self.settings.gateway_addr && udp.dst_port() == 53 {
                let from = SocketAddr::new(IpAddr::V4(ip.src_addr()), udp.src_port());
                self.dns
                    .handle_input(now, from, dns_virt::Transport::Udp, udp.payload());
                return;
            }
        }
        if dst == self.settings.gateway_addr && ip.next_header() == IpProtocol::Tcp {
            // DNS over TCP; anything else is refused with a reset.
            let len = usize::from(ip.total_len()).min(packet.len());
            self.tcp_dns.handle_packet(now, &packet[..len]);
            self.drain_tcp_dns(now);
            return;
        }
        if dst == self.settings.gateway_addr || !self.settings.network.contains(&dst) {
            // Not for the overlay (`--confine` keeps it off the host too).
            return;
        }
        if Some(ip.src_addr()) != self.guest_addr {
            // Only the leased address may speak on the overlay.
            self.counters.dropped_policy += 1;
            return;
        }
        // Trim link-layer padding.
        let len = usize::from(ip.total_len()).min(packet.len());
        let packet = &packet[..len];
        // Groups of `dst` count only once an SA verified its certificate.
        if !self.firewall_allows(now, false, dst, true, packet) {
            return;
        }
        self.counters.packets_routed += 1;
        self.peers.entry(dst).or_default().packets_out += 1;
        self.route_ip(now, dst, packet);
    }

    /// Leaves the AEAD of data packets to the driver (off by default): see
    /// [encryption off the driver's thread](self#encryption-off-the-drivers-thread).
    /// While it is on, every call that takes input may leave jobs; take
    /// them with [`Core::take_crypto_jobs`] and complete them before
    /// draining the outputs. Turning it off leaves the jobs already made
    /// valid.
    pub fn set_deferred_crypto(&mut self, on: bool) {
        self.defer_crypto = on;
    }

    /// Crypto jobs waiting for [`Core::take_crypto_jobs`]: a runtime stops
    /// reading input for a while when this grows, as for
    /// [`Core::tap_backlog`].
    pub fn crypto_backlog(&self) -> usize {
        self.crypto_jobs.len()
    }

    /// Moves the crypto jobs the core left into `jobs` (appended), oldest
    /// first.
    pub fn take_crypto_jobs(&mut self, jobs: &mut Vec<CryptoJob>) {
        jobs.append(&mut self.crypto_jobs);
    }

    /// Takes jobs that ran, in any order: sealed packets go to their peers;
    /// received ones are accepted by their SA (which refuses any that did
    /// not authenticate, came under an SA since replaced or expired, or
    /// repeat one accepted meanwhile) and only then delivered and let move
    /// their peer's route.
    pub fn complete_crypto(&mut self, now: Instant, done: impl IntoIterator<Item = CryptoDone>) {
        for CryptoDone(done) in done {
            match done {
                Done::Sealed { dst, packet } => match packet {
                    Ok(packet) => {
                        self.counters.sealed += 1;
                        self.send_overlay(now, dst, Kind::Sa, &packet);
                        self.recycle_job(packet);
                    }
                    Err(e) => {
                        tracing::debug!(%dst, error = %e, "seal refused");
                        self.counters.dropped_policy += 1;
                    }
                },
                Done::Opened {
                    peer_ip,
                    source,
                    hops,
                    opened,
                } => {
                    self.on_opened(now, peer_ip, source, hops, &opened);
                    self.recycle_job(opened.into_buffer());
                }
            }
        }
        self.pump(now);
    }

    fn on_opened(
        &mut self,
        now: Instant,
        peer_ip: Ipv4Addr,
        source: Address,
        hops: u8,
        opened: &ipsec_sa::Opened,
    ) {
        let Some(sa) = self.sa.as_mut() else {
            self.counters.dropped_policy += 1;
            return;
        };
        match sa.complete_open(now, IpAddr::V4(peer_ip), opened) {
            Ok(OpenOutput::Plaintext(p)) => {
                self.counters.opened += 1;
                self.on_peer_packet(now, peer_ip, source, hops, true, p);
            }
            // Decrypted under an SA: authenticated.
            Ok(OpenOutput::Keepalive) => self.learn(now, peer_ip, source, hops),
            Ok(OpenOutput::Handshake) => {}
            Err(e) => {
                tracing::debug!(peer = %peer_ip, error = %e, "open refused");
                self.counters.dropped_policy += 1;
            }
        }
    }

    fn recycle_job(&mut self, buffer: Vec<u8>) {
        if self.job_free.len() < JOB_FREE_LIMIT && buffer.capacity() > 0 {
            self.job_free.push(buffer);
        }
    }

    /// A datagram from the underlay socket.
    pub fn handle_udp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.counters.udp_in += 1;
            self.counters.udp_bytes_in += bytes.len() as u64;
        }
        // Punch checks, TURN and peers' NAT-opening datagrams are the
        // agent's; a peer's datagram relayed on a channel comes back
        // unwrapped.
        if let nat_traversal::agent::Input::Data { from, payload } =
            self.agent.handle_input(now, from, bytes)
        {
            self.handle_underlay(now, from, payload);
        }
        self.pump(now);
    }

    fn handle_underlay(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if nat_traversal::wire::stun::is_stun(bytes) {
            // A STUN Binding request; late retransmissions for finished
            // punch sessions are dropped here.
            self.stun
                .handle_input(nat_traversal::Socket::Primary, from, bytes);
        } else if self.overlay.handle_input(now, from, bytes).is_err() {
            self.counters.malformed += 1;
        }
    }

    /// Uses the TURN server in `config` as a relay of last resort: the
    /// allocation's relayed address joins our advertised endpoints (last),
    /// peers that cannot reach us otherwise link through it, and they are
    /// answered through it on a channel (ChannelData, no allocation per
    /// datagram).
    pub fn set_turn(
        &mut self,
        now: Instant,
        config: nat_traversal::turn::TurnConfig,
    ) -> Result<(), nat_traversal::Error> {
        self.agent.set_turn(now, config)
    }

    /// Our underlay endpoints as we advertise them to peers: reflexive and
    /// configured ones, then host candidates.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.agent.advertised()
    }

    /// Sets our host candidates (RFC 8445 §5.1.1.1): the addresses of the
    /// host's interfaces with our socket's port, for a socket bound to all
    /// addresses. Peers behind the same NAT reach us there when the NAT
    /// does not hairpin; they are offered in punch exchanges above the
    /// reflexive endpoints. Addresses inside the virtual network (the
    /// guest's side: the overlay would run over itself) and those
    /// [`nat_traversal::agent::is_host_candidate`] refuses (loopback,
    /// link-local, ...) are left out. Returns whether the set changed.
    pub fn set_host_candidates(&mut self, candidates: Vec<SocketAddr>) -> bool {
        let network = self.settings.network;
        self.agent.set_host_candidates(
            candidates
                .into_iter()
                .filter(|e| !in_network(network, *e))
                .collect(),
        )
    }

    /// Our host candidates.
    pub fn host_candidates(&self) -> &[SocketAddr] {
        self.agent.host_candidates()
    }

    /// Whether `endpoint`, named by a peer (punch request, offer, link
    /// request) or a peer's report of our own, is a place for underlay
    /// datagrams: not in the virtual network, and one the agent may probe
    /// ([`nat_traversal::agent::Agent::is_usable_remote`]: no loopback off
    /// loopback, no unspecified, multicast or broadcast address).
    fn usable_peer_endpoint(&self, endpoint: SocketAddr) -> bool {
        !in_network(self.settings.network, endpoint) && self.agent.is_usable_remote(endpoint)
    }

    /// The last guard before the socket: no underlay datagram goes into the
    /// virtual network (it would carry the overlay over itself), nor to
    /// loopback unless we or our bootstrap are there, whoever named the
    /// destination.
    fn underlay_allowed(&self, to: SocketAddr) -> bool {
        !in_network(self.settings.network, to) && (self.loopback_underlay || !to.ip().is_loopback())
    }

    /// Underlay endpoints we answer through our TURN relay.
    pub fn turn_peers(&self) -> Vec<SocketAddr> {
        self.agent.relay_peers()
    }

    /// The relayed address of our TURN allocation, once it exists.
    pub fn turn_relayed(&self) -> Option<SocketAddr> {
        self.agent.relayed()
    }

    /// Advances every machine's timers to `now`; `wall` is the wall clock
    /// (certificate validity).
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        self.wall = wall;
        if let Some(e) = self.enrolment.as_mut() {
            e.handle_timeout(now);
        }
        self.overlay.handle_timeout(now);
        self.agent.handle_timeout(now);
        self.dhcp.handle_timeout(now);
        self.dns.handle_timeout(now);
        self.tcp_dns.handle_timeout(now);
        self.drain_tcp_dns(now);
        if let Some(w) = self.walk.as_mut() {
            w.handle_timeout(now);
        }
        if let Some(sa) = self.sa.as_mut() {
            sa.handle_timeout(now);
            sa.handle_wall_clock(now, wall);
        }
        let expired: Vec<Ipv4Addr> = self
            .lookups
            .iter()
            .filter(|(_, l)| now >= l.started_at + LOOKUP_TIMEOUT)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in expired {
            if let Some(l) = self.lookups.remove(&ip) {
                self.counters.dropped_no_route += l.queue.len() as u64;
            }
        }
        self.routes.retain(|_, r| r.expires_at > now);
        self.negative.retain(|_, t| *t > now);
        if self.republish_at.is_some_and(|t| t <= now) {
            self.republish_at = None;
            self.publish_guest(now);
            self.publish_ca(now);
        }
        if self.services_refresh_at.is_some_and(|t| t <= now) {
            self.publish_services(now);
        }
        self.pump(now);
    }

    /// Registers service `name` (`_service._proto`) of the guest: SRV (and
    /// TXT) records under the guest's name with the guest's name as target,
    /// published in the DHT for [`SERVICE_TTL`] and refreshed while
    /// registered (from the guest's first lease with a name on). The
    /// target in `service` is ignored. Replaces an earlier registration of
    /// the same name.
    pub fn add_service(
        &mut self,
        now: Instant,
        name: &str,
        service: dns_virt::Service,
    ) -> Result<(), dns_virt::ServiceError> {
        let name = dns_virt::service::service_name(name)?;
        let mut check = service.clone();
        check.target = "guest".into();
        check.validate()?;
        self.services.insert(name, service);
        self.publish_services(now);
        self.pump(now);
        Ok(())
    }

    /// Withdraws service `name`; returns whether it was registered. Other
    /// nodes stop finding it once the one-second overwrite has reached the
    /// DHT and run out; a replica it missed goes within [`SERVICE_TTL`].
    pub fn remove_service(&mut self, now: Instant, name: &str) -> bool {
        let Ok(name) = dns_virt::service::service_name(name) else {
            return false;
        };
        let Some(mut service) = self.services.remove(&name) else {
            return false;
        };
        if let Some(host) = self.guest_name.clone() {
            self.dns.unregister_service(&name, &host);
            // The DHT has no delete: our slot is overwritten with a record
            // that lives one second.
            service.target = host.clone();
            if let Ok(value) = service.to_bytes() {
                for key in service_keys(&name, &host) {
                    if let Ok(id) = self
                        .overlay
                        .dht_put(now, &key, &value, Duration::from_secs(1))
                    {
                        self.jobs.insert(id, DhtJob::Publish);
                    }
                }
            }
        }
        if self.services.is_empty() {
            self.services_refresh_at = None;
        }
        self.pump(now);
        true
    }

    /// The guest's registered services, by name (targets not filled in).
    pub fn services(&self) -> impl Iterator<Item = (&str, &dns_virt::Service)> {
        self.services.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Registers every service under the guest's name with the DNS server
    /// (which publishes them) and schedules the next refresh.
    fn publish_services(&mut self, now: Instant) {
        self.services_refresh_at = None;
        let Some(host) = self.guest_name.clone().filter(|_| !self.guest_addr_lost) else {
            return;
        };
        for (name, service) in &self.services {
            let mut service = service.clone();
            service.target = host.clone();
            if let Err(e) = self
                .dns
                .register_service(name, &host, service, Some(SERVICE_TTL))
            {
                tracing::warn!(%name, error = %e, "service not registered");
            }
        }
        if !self.services.is_empty() {
            self.services_refresh_at = Some(now + SERVICE_REFRESH);
        }
    }

    /// Publishes `guest IP → this node` and `name → guest IP` in the DHT.
    /// Done on every lease, and again when the ring around this node
    /// changes (a record put before the node had found its place may sit on
    /// the wrong node).
    fn publish_guest(&mut self, now: Instant) {
        let Some(addr) = self.guest_addr.filter(|_| !self.guest_addr_lost) else {
            return;
        };
        let value = self.overlay.address().to_bytes();
        if let Ok(id) =
            self.overlay
                .dht_put(now, &dht_key("ip", &addr.octets()), &value, PUBLISH_TTL)
        {
            self.jobs.insert(id, DhtJob::Publish);
        }
        if let Some(name) = self.guest_name.clone()
            && let Ok(id) = self.overlay.dht_put(
                now,
                &dht_key("name", name.as_bytes()),
                &addr.octets(),
                PUBLISH_TTL,
            )
        {
            self.jobs.insert(id, DhtJob::Publish);
        }
    }

    // ----- outputs -----

    /// The next frame for the guest. Its buffer is reused once the next
    /// frame is polled.
    pub fn poll_tap_frame(&mut self) -> Option<&[u8]> {
        let f = self.tap_out.pop_front()?;
        let done = std::mem::replace(&mut self.tap_current, f);
        self.recycle_tap(done);
        self.counters.tap_frames_out += 1;
        Some(&self.tap_current)
    }

    /// Frames waiting for [`Core::poll_tap_frame`]: a runtime stops reading
    /// datagrams for a while when this grows.
    pub fn tap_backlog(&self) -> usize {
        self.tap_out.len()
    }

    fn recycle_tap(&mut self, mut buf: Vec<u8>) {
        if self.tap_free.len() < TAP_FREE_LIMIT && buf.capacity() > 0 {
            buf.clear();
            self.tap_free.push(buf);
        }
    }

    /// An empty frame buffer, reused if one is free.
    fn tap_buffer(&mut self) -> Vec<u8> {
        self.tap_free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(usize::from(self.settings.guest_mtu) + 14))
    }

    /// Writes the next datagram for the underlay into `buf` and returns its
    /// destination and length. A `buf` of
    /// [`overlay_core::wire::MAX_MESSAGE_LEN`] bytes holds every datagram;
    /// one of [`overlay_core::wire::MAX_DATA_MESSAGE_LEN`] every data
    /// datagram (longer overlay messages are dropped and counted by the
    /// overlay).
    pub fn poll_udp(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        self.poll_udp_with_ttl(buf).map(|(to, n, _)| (to, n))
    }

    /// [`Core::poll_udp`], with the IP TTL to send the datagram with
    /// (`None`: the socket's). Only the datagrams that open our NAT toward
    /// a peer (empty ones and punch sessions' opening probes) ask for one,
    /// so low that they die before the peer's NAT ([`nat_traversal::agent`]); [`Core::poll_udp`] drops it, which
    /// is fine where there is no NAT (loopback, in memory).
    pub fn poll_udp_with_ttl(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize, Option<u8>)> {
        while let Some(t) = self
            .agent
            .poll_transmit()
            .or_else(|| self.stun.poll_transmit())
        {
            let n = t.payload.len();
            if n <= buf.len() && self.underlay_allowed(t.destination) {
                buf[..n].copy_from_slice(&t.payload);
                self.counters.udp_out += 1;
                self.counters.udp_bytes_out += n as u64;
                return Some((t.destination, n, t.ttl));
            }
        }
        let (mut to, mut n) = loop {
            // A patient punch attempt waits on some endpoints (a neighbour
            // NAT's entry must expire): the overlay's link handshakes there
            // wait; established links' traffic never does.
            let agent = &self.agent;
            let (to, n) = self
                .overlay
                .poll_transmit_into_holding(buf, |to| agent.is_quiet(to))?;
            if !self.underlay_allowed(to) {
                tracing::debug!(%to, "underlay datagram to a virtual or loopback address dropped");
                continue;
            }
            break (to, n);
        };
        if let Some(relayed) = self.agent.relay_in_place(to, buf, n) {
            // Answered through the TURN relay the peer came through.
            (to, n) = relayed;
        }
        self.counters.udp_out += 1;
        self.counters.udp_bytes_out += n as u64;
        Some((to, n, None))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// When [`Core::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let lookup = self
            .lookups
            .values()
            .map(|l| l.started_at + LOOKUP_TIMEOUT)
            .min()
            .into_iter()
            .chain(self.republish_at)
            .chain(self.services_refresh_at)
            .chain(self.enrolment.as_ref().and_then(|e| e.poll_timeout()))
            .min();
        [
            self.overlay.poll_timeout(),
            self.agent.poll_timeout(),
            self.dhcp.poll_timeout(),
            self.dns.poll_timeout(),
            self.tcp_dns.poll_timeout(),
            self.sa.as_ref().and_then(|s| s.poll_timeout()),
            lookup,
            self.walk
                .as_ref()
                .and_then(|w| w.asked.map(|(_, deadline)| deadline)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- the data path -----

    fn route_ip(&mut self, now: Instant, dst: Ipv4Addr, packet: &[u8]) {
        let Some(sa) = self.sa.as_mut() else {
            if self.closed && !self.settings.public_hosts.contains(&dst) {
                // Not enrolled yet: nothing leaves in plaintext.
                self.counters.dropped_policy += 1;
                return;
            }
            self.send_overlay(now, dst, Kind::Plain, packet);
            return;
        };
        if self.defer_crypto {
            let mut buffer = self.job_free.pop().unwrap_or_default();
            buffer.clear();
            buffer.resize(ipsec_sa::wire::HEADER_LEN, 0);
            buffer.extend_from_slice(packet);
            match sa.prepare_seal(now, IpAddr::V4(dst), &mut buffer) {
                Ok(PreparedSeal::Job(job)) => {
                    self.crypto_jobs.push(CryptoJob(Job::Seal { dst, job }));
                }
                Ok(PreparedSeal::Bypass) => self.send_overlay(now, dst, Kind::Plain, packet),
                Ok(PreparedSeal::HandshakeNeeded) => tracing::debug!(%dst, "key exchange started"),
                Err(e) => {
                    tracing::debug!(%dst, error = %e, "seal refused");
                    self.counters.dropped_policy += 1;
                }
            }
            self.recycle_job(buffer);
            return;
        }
        if let (Some(source), Some(route)) = (self.guest_addr, self.routes.get(&dst).copied()) {
            // The usual case, a known route: the packet is sealed straight
            // into the buffer it leaves in, after the wow header (one copy
            // of the plaintext instead of three).
            let mut out = self.overlay.data_buffer();
            let repr = wire::Repr {
                kind: Kind::Sa,
                source,
                destination: dst,
            };
            repr.emit_with_body(&[], &mut out);
            let header = out.len();
            match sa.seal_after(now, IpAddr::V4(dst), packet, &mut out, header) {
                Ok(SealOutput::Sealed) => {
                    self.counters.sealed += 1;
                    if self.overlay.send(now, route.address, out).is_err() {
                        self.counters.dropped_no_route += 1;
                    }
                    return;
                }
                Ok(SealOutput::Bypass) => self.send_overlay(now, dst, Kind::Plain, packet),
                Ok(SealOutput::HandshakeNeeded) => tracing::debug!(%dst, "key exchange started"),
                Err(e) => {
                    tracing::debug!(%dst, error = %e, "seal refused");
                    self.counters.dropped_policy += 1;
                }
            }
            self.overlay.recycle(out);
            return;
        }
        let mut out = std::mem::take(&mut self.seal_buf);
        match sa.seal(now, IpAddr::V4(dst), packet, &mut out) {
            Ok(SealOutput::Sealed) => {
                self.counters.sealed += 1;
                self.send_overlay(now, dst, Kind::Sa, &out);
            }
            Ok(SealOutput::Bypass) => self.send_overlay(now, dst, Kind::Plain, packet),
            Ok(SealOutput::HandshakeNeeded) => tracing::debug!(%dst, "key exchange started"),
            Err(e) => {
                tracing::debug!(%dst, error = %e, "seal refused");
                self.counters.dropped_policy += 1;
            }
        }
        self.seal_buf = out;
    }

    /// Sends `body` to the node serving `dst`, looking the mapping up in the
    /// DHT first if needed.
    fn send_overlay(&mut self, now: Instant, dst: Ipv4Addr, kind: Kind, body: &[u8]) {
        let Some(source) = self.guest_addr else {
            self.counters.dropped_no_route += 1;
            return;
        };
        if let Some(route) = self.routes.get(&dst).copied() {
            let repr = wire::Repr {
                kind,
                source,
                destination: dst,
            };
            let mut payload = std::mem::take(&mut self.payload_buf);
            repr.emit_with_body(body, &mut payload);
            // Copied into a buffer from the overlay's pool; ours is kept.
            if self
                .overlay
                .send_slice(now, route.address, &payload)
                .is_err()
            {
                self.counters.dropped_no_route += 1;
            }
            self.payload_buf = payload;
            return;
        }
        if self.negative.contains_key(&dst) {
            self.counters.dropped_no_route += 1;
            return;
        }
        let start = !self.lookups.contains_key(&dst);
        let lookup = self.lookups.entry(dst).or_insert_with(|| Lookup {
            started_at: now,
            queue: VecDeque::new(),
        });
        if lookup.queue.len() >= QUEUE_LIMIT {
            self.counters.dropped_no_route += 1;
        } else {
            lookup.queue.push_back((kind, body.to_vec()));
        }
        if start {
            match self.overlay.dht_get(now, &dht_key("ip", &dst.octets())) {
                Ok(id) => {
                    self.jobs.insert(id, DhtJob::IpLookup(dst));
                }
                Err(_) => {
                    if let Some(l) = self.lookups.remove(&dst) {
                        self.counters.dropped_no_route += l.queue.len() as u64;
                    }
                }
            }
        }
    }

    fn on_delivered(&mut self, now: Instant, source: Address, hops: u8, payload: &mut [u8]) {
        let Ok(packet) = wire::Packet::new_checked(&payload[..]) else {
            self.counters.malformed += 1;
            return;
        };
        let Ok(repr) = wire::Repr::parse(&packet) else {
            self.counters.malformed += 1;
            return;
        };
        if repr.kind == Kind::Enrol {
            self.on_enrolment_message(now, source, repr.source, packet.body());
            return;
        }
        if repr.kind == Kind::Crl {
            self.on_crl_message(now, source, packet.body());
            return;
        }
        if repr.kind == Kind::Walk {
            self.on_walk_message(now, source, hops, packet.body());
            return;
        }
        if repr.kind == Kind::Alloc {
            self.on_alloc_message(now, source, packet.body());
            return;
        }
        if repr.kind == Kind::Offer {
            match nat_traversal::wire::SignalRepr::parse_bytes(packet.body()) {
                Ok(nat_traversal::wire::SignalRepr::Offer(mut offer)) => {
                    let network = self.settings.network;
                    offer.candidates.retain(|c| !in_network(network, c.address));
                    self.agent.handle_offer(now, source, &offer);
                }
                _ => self.counters.malformed += 1,
            }
            return;
        }
        if repr.kind == Kind::Punch {
            // The peer is linking to us: the agent lets its addresses in on
            // our TURN allocation, opens our NAT toward them and answers
            // with our own endpoints (rate-limited per peer, so the
            // exchange ends). The overlay's ConnectToMe carries only
            // configured endpoints, so a peer linking to us learns our
            // reflexive one here, and sends its link requests through the
            // hole our empty datagrams just opened in our NAT.
            let mut endpoints = wire::parse_endpoints(packet.body());
            endpoints.retain(|e| self.usable_peer_endpoint(*e));
            tracing::debug!(peer = %source, ?endpoints, "punch request");
            self.agent.handle_endpoints(now, source, &endpoints);
            // While we punch to this peer, a link of ours to it stays held
            // until the session reports the path open (`Punched`), not
            // released here: the request came as the peer *started* opening
            // its NATs, and with two NATs in a row (home and carrier-grade)
            // its carrier NAT opens only at the second opening step. A
            // full-TTL link request arriving there first leaves a conntrack
            // entry that makes that NAT remap the peer's port, and the hole
            // never matches. Endpoints heard when no punch is under way
            // (such as a TURN relayed address offered after punching
            // failed) are tried at once.
            // Nor while the patient attempt after a failed punch waits on
            // the peer's reflexive endpoints: a link request there would
            // reach a neighbour NAT first and spoil it.
            if !self.agent.is_punching(&source) {
                endpoints.retain(|e| !self.agent.is_quiet_toward(&source, *e));
                self.overlay.handle_link_candidates(now, source, &endpoints);
            }
            return;
        }
        if Some(repr.destination) != self.guest_addr
            || !self.settings.network.contains(&repr.source)
        {
            self.counters.dropped_no_route += 1;
            return;
        }
        // The gateway is this node itself, and the network and broadcast
        // addresses are nobody's: whoever claims them over the overlay is
        // forging DHCP/DNS answers or worse.
        if repr.source == self.settings.gateway_addr
            || repr.source == self.settings.network.network()
            || repr.source == self.settings.network.broadcast()
        {
            self.counters.dropped_policy += 1;
            return;
        }
        let peer_ip = repr.source;
        // Routes move only on authenticated input (WireGuard's roaming
        // rule): a decrypted packet, or a handshake message that completed
        // a security association. Without an SA endpoint nothing is
        // authenticated and the node learns from plaintext, as before.
        let mut authenticated = self.sa.is_none();
        let body = &mut payload[wire::HEADER_LEN..];
        // The packet is decrypted in place and delivered from there.
        let packet: &[u8] = match (repr.kind, self.sa.as_mut()) {
            (Kind::Sa, Some(sa)) if self.defer_crypto => {
                let completed = sa.stats().handshakes_completed;
                let mut buffer = self.job_free.pop().unwrap_or_default();
                buffer.clear();
                buffer.extend_from_slice(body);
                match sa.prepare_open(now, IpAddr::V4(peer_ip), &mut buffer) {
                    Ok(PreparedOpen::Job(job)) => self.crypto_jobs.push(CryptoJob(Job::Open {
                        peer_ip,
                        source,
                        hops,
                        job,
                    })),
                    Ok(PreparedOpen::Handshake) => {
                        // As below: only a completed exchange proves who
                        // the peer is.
                        if sa.stats().handshakes_completed > completed {
                            self.learn(now, peer_ip, source, hops);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = %peer_ip, error = %e, "open refused");
                        self.counters.dropped_policy += 1;
                    }
                }
                self.recycle_job(buffer);
                return;
            }
            (Kind::Sa, Some(sa)) => {
                let completed = sa.stats().handshakes_completed;
                match sa.open(now, IpAddr::V4(peer_ip), body) {
                    Ok(OpenOutput::Plaintext(p)) => {
                        self.counters.opened += 1;
                        authenticated = true;
                        p
                    }
                    Ok(OpenOutput::Keepalive) => {
                        // Decrypted under an SA: authenticated.
                        self.learn(now, peer_ip, source, hops);
                        return;
                    }
                    Ok(OpenOutput::Handshake) => {
                        // An Init proves nothing (anyone can send one in
                        // anyone's name); the messages that complete an SA
                        // carry the peer's certificate and signature.
                        let done = sa.stats().handshakes_completed > completed;
                        if done {
                            self.learn(now, peer_ip, source, hops);
                        }
                        return;
                    }
                    Err(e) => {
                        // The peer seals with SAs we lost (a restart):
                        // a fresh exchange now, not at its rekey.
                        if matches!(e, ipsec_sa::Rejection::UnknownSpi(_))
                            && sa.handle_unknown_spi(now, IpAddr::V4(peer_ip))
                        {
                            tracing::debug!(peer = %peer_ip, "unknown SPI: key exchange started");
                        }
                        tracing::debug!(peer = %peer_ip, error = %e, "open refused");
                        self.counters.dropped_policy += 1;
                        return;
                    }
                }
            }
            (Kind::Sa, None) => {
                // We hold no certificate: we cannot take part.
                self.counters.dropped_policy += 1;
                return;
            }
            (Kind::Plain, Some(sa)) => {
                if sa.handle_unprotected(now, IpAddr::V4(peer_ip)) == ipsec_sa::Verdict::Drop {
                    self.counters.dropped_policy += 1;
                    return;
                }
                body
            }
            (Kind::Plain, None) => {
                if self.closed && !self.settings.public_hosts.contains(&peer_ip) {
                    // Not enrolled yet: nothing enters in plaintext.
                    self.counters.dropped_policy += 1;
                    return;
                }
                body
            }
            (Kind::Punch | Kind::Enrol | Kind::Offer | Kind::Crl | Kind::Walk | Kind::Alloc, _) => {
                return;
            }
        };
        self.on_peer_packet(now, peer_ip, source, hops, authenticated, packet);
    }

    /// A packet from `peer_ip` (authenticated, or plaintext the policy let
    /// in), through `source`: checked, firewalled and delivered.
    fn on_peer_packet(
        &mut self,
        now: Instant,
        peer_ip: Ipv4Addr,
        source: Address,
        hops: u8,
        authenticated: bool,
        plaintext: &[u8],
    ) {
        // The inner source must be the peer's (authenticated) address, or
        // in IPv6 lie in the /64 derived from it.
        let valid = match plaintext.first().map(|b| b >> 4) {
            Some(6) => self.v6_from_peer(peer_ip, plaintext),
            _ => matches!(
                Ipv4Packet::new_checked(plaintext),
                Ok(ip) if ip.src_addr() == peer_ip && Some(ip.dst_addr()) == self.guest_addr
            ),
        };
        let valid = valid && self.firewall_allows(now, true, peer_ip, authenticated, plaintext);
        if valid {
            // Plaintext from a public host is delivered (the policy lets it
            // through) but never moves its route: that comes from the
            // directory, not from whoever sends in the host's name.
            if authenticated {
                self.learn(now, peer_ip, source, hops);
            }
            self.peers.entry(peer_ip).or_default().packets_in += 1;
            self.deliver_ip(plaintext);
        } else {
            self.counters.dropped_policy += 1;
        }
    }

    /// Whether IPv6 `packet` comes from the /64 of `peer_ip` and goes to
    /// the guest's.
    fn v6_from_peer(&self, peer_ip: Ipv4Addr, packet: &[u8]) -> bool {
        let (Some(plan), Some(guest)) = (self.v6, self.guest_addr) else {
            return false;
        };
        plan.admits(peer_ip, guest, packet)
    }

    fn on_enrolment_message(
        &mut self,
        now: Instant,
        source: Address,
        source_ip: Ipv4Addr,
        body: &[u8],
    ) {
        let wall = self.wall;
        if let Some(ca) = self.ca.as_mut() {
            // The CA's side: sign, renew or queue, and answer the requesting
            // node. The source address is the sender's claim: it grants
            // nothing (a token, a live certificate of the same key or the
            // administrator does).
            // Requests a join token authorises pass even when a flood has
            // spent the buckets.
            if !self
                .ca_limiter
                .as_mut()
                .is_some_and(|l| l.allow(now, source))
                && !ca.has_valid_token(wall, body)
            {
                tracing::debug!(%source, "enrolment request over the rate limit");
                return;
            }
            if let Err(e) = ca.handle_enrolment(wall, source_ip, body) {
                tracing::debug!(%source_ip, error = %e, "enrolment request refused");
                return;
            }
            if self.enrolling.len() >= 4096 && !self.enrolling.contains_key(&source_ip) {
                self.enrolling.clear();
            }
            self.enrolling.insert(source_ip, source);
            self.send_ca_replies(now);
            return;
        }
        if let Some(e) = self.enrolment.as_mut()
            && let Err(error) = e.handle_input(now, wall, body)
        {
            tracing::debug!(%error, "enrolment answer ignored");
        }
    }

    fn send_enrolment(&mut self, now: Instant, to: Address, message: &[u8]) {
        self.send_to_node(now, to, Kind::Enrol, message);
    }

    fn schedule_republish(&mut self, now: Instant) {
        if (self.guest_addr.is_some() || self.ca.is_some()) && self.republish_at.is_none() {
            self.republish_at = Some(now + Duration::from_millis(500));
        }
    }

    /// Acts on the punch agent's events: signals go to the peer through
    /// the overlay, punched paths to the overlay as candidates for its
    /// pending links. Returns whether there was any.
    fn drain_agent(&mut self, now: Instant) -> bool {
        use nat_traversal::agent::{AgentEvent as E, Signal};
        let mut busy = false;
        while let Some(event) = self.agent.poll_event() {
            busy = true;
            match event {
                E::Signal { peer, .. } if peer == Address::ZERO => {}
                E::Signal {
                    peer,
                    signal: Signal::Endpoints(endpoints),
                } => {
                    self.send_punch_request(now, peer, &endpoints);
                }
                E::Signal {
                    peer,
                    signal: Signal::Offer(offer),
                } => {
                    if let Ok(body) = nat_traversal::wire::SignalRepr::Offer(offer).to_bytes() {
                        self.send_to_node(now, peer, Kind::Offer, &body);
                    }
                }
                E::Punched { peer, remote } => {
                    tracing::debug!(%peer, %remote, "punched a direct path");
                    self.counters.punched += 1;
                    self.overlay.handle_link_candidates(now, peer, &[remote]);
                }
                E::PunchFailed { peer } => {
                    tracing::debug!(%peer, relayed = ?self.agent.relayed(), "punching failed");
                }
                E::Data { from, data } => self.handle_underlay(now, from, &data),
                E::RelayAllocated { relayed } => {
                    tracing::info!(%relayed, "TURN allocation: relayed endpoint offered where punching fails");
                }
                E::RelayFailed(failure) => {
                    tracing::warn!(?failure, "TURN allocation failed: no relay fallback");
                }
                _ => {}
            }
        }
        busy
    }

    fn learn(&mut self, now: Instant, ip: Ipv4Addr, address: Address, hops: u8) {
        self.routes.insert(
            ip,
            Route {
                address,
                expires_at: now + ROUTE_TTL,
            },
        );
        self.negative.remove(&ip);
        self.peers.entry(ip).or_default().hops = hops;
        self.flush_lookup(now, ip);
    }

    fn flush_lookup(&mut self, now: Instant, ip: Ipv4Addr) {
        if let Some(l) = self.lookups.remove(&ip) {
            for (kind, body) in l.queue {
                self.send_overlay(now, ip, kind, &body);
            }
        }
    }

    fn deliver_ip(&mut self, packet: &[u8]) {
        let Some(guest_mac) = self.guest_mac else {
            return;
        };
        self.counters.packets_delivered += 1;
        let mut frame = self.tap_buffer();
        // The header's room, then the packet: written once (no zeroing).
        frame.clear();
        frame.extend_from_slice(&[0; 14]);
        frame.extend_from_slice(packet);
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(EthernetAddress(guest_mac));
        eth.set_src_addr(EthernetAddress(self.settings.gateway_mac));
        eth.set_ethertype(if packet.first().map(|b| b >> 4) == Some(6) {
            EthernetProtocol::Ipv6
        } else {
            EthernetProtocol::Ipv4
        });
        self.push_tap(frame);
    }

    fn push_tap(&mut self, frame: Vec<u8>) {
        if self.tap_out.len() < TAP_QUEUE_LIMIT {
            self.tap_out.push_back(frame);
        } else {
            self.recycle_tap(frame);
        }
    }

    // ----- glue between machines -----

    /// Drains every machine's outputs into the others until all are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut busy = self.drain_agent(now);
            while let Some(event) = self.overlay.poll_event() {
                busy = true;
                self.on_overlay_event(now, event);
            }
            busy |= self.drain_agent(now);
            while let Some(frame) = self.dhcp.poll_frame() {
                busy = true;
                self.push_tap(frame);
            }
            while let Some(event) = self.dhcp.poll_event() {
                busy = true;
                self.on_dhcp_event(now, event);
            }
            while let Some(request) = self.dhcp.poll_directory_request() {
                busy = true;
                self.on_directory_request(now, request);
            }
            while let Some(request) = self.dns.poll_store_request() {
                busy = true;
                self.on_store_request(now, request);
            }
            while let Some(t) = self.dns.poll_transmit() {
                busy = true;
                self.on_dns_transmit(now, t);
            }
            while let Some(event) = self.dns.poll_event() {
                if let dns_virt::Event::ForwardRejected { id, error } = event {
                    tracing::debug!(?id, %error, "upstream DNS reply dropped");
                }
            }
            if let Some(e) = self.enrolment.as_mut() {
                while let Some(t) = e.poll_transmit() {
                    busy = true;
                    self.enrol_out.push(t);
                }
                while let Some(ev) = e.poll_event() {
                    busy = true;
                    match ev {
                        ipsec_ca::EnrolmentEvent::Issued { certificate, .. } => {
                            self.events.push_back(CoreEvent::Enrolled(certificate));
                        }
                        other => self
                            .events
                            .push_back(CoreEvent::EnrolmentStatus(format!("{other:?}"))),
                    }
                }
            }
            if !self.enrol_out.is_empty() {
                // Look again now and then: the CA node may have moved.
                if self
                    .ca_found_at
                    .is_some_and(|t| now >= t + crate::enrol::CA_LOOKUP_PERIOD)
                    && !self.ca_lookup
                    && let Ok(id) = self.overlay.dht_get(now, &dht_key("ca", b""))
                {
                    self.ca_lookup = true;
                    self.ca_found_at = Some(now);
                    self.jobs.insert(id, DhtJob::CaLookup);
                }
                match self.ca_address {
                    Some(ca) => {
                        for m in std::mem::take(&mut self.enrol_out) {
                            self.send_enrolment(now, ca, &m);
                        }
                    }
                    None if !self.ca_lookup => {
                        if let Ok(id) = self.overlay.dht_get(now, &dht_key("ca", b"")) {
                            self.ca_lookup = true;
                            self.jobs.insert(id, DhtJob::CaLookup);
                        }
                    }
                    None => {}
                }
            }
            if let Some(sa) = self.sa.as_mut() {
                let mut out = Vec::new();
                while let Some(t) = sa.poll_transmit() {
                    out.push(t);
                }
                let mut events = Vec::new();
                while let Some(e) = sa.poll_event() {
                    events.push(e);
                }
                for t in out {
                    busy = true;
                    if let IpAddr::V4(dst) = t.destination {
                        self.send_overlay(now, dst, Kind::Sa, &t.payload);
                    }
                }
                for e in events {
                    busy = true;
                    self.on_sa_event(e);
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn on_overlay_event(&mut self, now: Instant, event: overlay_core::Event) {
        use overlay_core::Event as E;
        match event {
            E::Joined => {
                self.schedule_republish(now);
                self.events.push_back(CoreEvent::Joined)
            }
            E::Connected { peer } => {
                self.schedule_republish(now);
                self.events.push_back(CoreEvent::Link { peer, up: true })
            }
            E::Disconnected { peer, reason } => {
                tracing::debug!(%peer, ?reason, "overlay link down");
                self.events.push_back(CoreEvent::Link { peer, up: false })
            }
            E::Delivered {
                source,
                hops,
                payload,
            } => {
                let mut payload = payload;
                self.on_delivered(now, source, hops, &mut payload);
                // Back to the overlay's pool: receiving allocates nothing.
                self.overlay.recycle(payload);
            }
            E::Dht {
                id,
                op,
                outcome,
                records,
            } => self.on_dht(now, id, op, outcome, &records),
            E::NoEndpoints => {
                tracing::warn!(
                    "no underlay endpoint to advertise yet: peers cannot link to this node until one is observed"
                );
            }
            E::ObservedEndpoint { endpoint }
                if !self.agent.local_endpoints().contains(&endpoint)
                    && self.usable_peer_endpoint(endpoint) =>
            {
                tracing::debug!(%endpoint, "observed underlay endpoint");
                let mut endpoints = vec![endpoint];
                endpoints.extend_from_slice(self.agent.local_endpoints());
                endpoints.truncate(wire::MAX_PUNCH_ENDPOINTS);
                self.agent.set_local_endpoints(endpoints);
                // The overlay advertises it too (first: the newest mapping,
                // as after a NAT rebinding), in its ConnectToMe and link
                // requests.
                let mut advertised = vec![endpoint];
                advertised.extend(self.overlay.endpoints().iter().filter(|&&e| e != endpoint));
                advertised.truncate(wire::MAX_PUNCH_ENDPOINTS);
                self.overlay.set_endpoints(advertised);
            }
            E::MappingChanged { endpoint } => {
                tracing::info!(%endpoint, "underlay mapping changed (NAT rebinding or a new address): stale overlay links made again");
                self.events
                    .push_back(CoreEvent::MappingChanged { endpoint });
                self.mapping_changed_at = Some(now);
                self.repunched.clear();
            }
            E::PeerRejected {
                peer,
                endpoint,
                error,
            } => tracing::warn!(%peer, %endpoint, %error, "overlay link refused: identity"),
            E::LinkRefused {
                peer,
                endpoint,
                status,
            } => tracing::warn!(%peer, %endpoint, ?status, "our overlay link was refused"),
            E::LinkAttempt {
                peer,
                mut endpoints,
            } => {
                endpoints.retain(|e| self.usable_peer_endpoint(*e));
                tracing::debug!(%peer, ?endpoints, "overlay link attempt");
                // Open our NAT toward the peer before it hears of us (the
                // overlay holds its link request until the peer answers our
                // punch request, when the runtime defers links).
                self.agent.connect(now, peer, &endpoints);
                // Right after our mapping changed, the peer hears our new
                // endpoints at once, even if the agent asked it for a
                // punch moments before (its requests are rate-limited):
                // it opens its NAT toward them and links to them.
                if self
                    .mapping_changed_at
                    .is_some_and(|t| now.saturating_duration_since(t) < REPUNCH_WINDOW)
                    && self.repunched.len() < REPUNCH_PEERS
                    && !self.repunched.contains(&peer)
                {
                    self.repunched.push(peer);
                    let endpoints = self.agent.advertised();
                    self.send_punch_request(now, peer, &endpoints);
                }
            }
            E::Dropped {
                source,
                destination,
                reason,
            } => {
                tracing::debug!(%source, %destination, ?reason, "overlay dropped a routed message")
            }
            _ => {}
        }
    }

    fn on_dht(
        &mut self,
        now: Instant,
        id: u64,
        _op: DhtOp,
        outcome: DhtOutcome,
        records: &[overlay_core::wire::Record],
    ) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        match job {
            DhtJob::DhcpClaim {
                id,
                addr,
                claim,
                kind,
            } => {
                let answer = create_answer(outcome, records, addr, &mut self.record_judge, now);
                let result = claim_result(&answer, &claim, kind);
                self.dhcp
                    .handle_directory_completion(now, DirectoryCompletion { id, result });
            }
            DhtJob::IpLookup(ip) => {
                let found = match &outcome {
                    DhtOutcome::Ok(values) => values.iter().rev().find_map(|v| {
                        <[u8; overlay_core::address::ADDRESS_LEN]>::try_from(v.as_slice())
                            .ok()
                            .map(Address::from_bytes)
                    }),
                    _ => None,
                };
                match found {
                    Some(address) => {
                        let took_ms = self
                            .lookups
                            .get(&ip)
                            .map(|l| now.saturating_duration_since(l.started_at).as_millis());
                        tracing::debug!(%ip, %address, ?took_ms, "route found in the DHT");
                        self.routes.insert(
                            ip,
                            Route {
                                address,
                                expires_at: now + ROUTE_TTL,
                            },
                        );
                        self.flush_lookup(now, ip);
                    }
                    None => {
                        tracing::debug!(%ip, ?outcome, "no node serves this address");
                        if let Some(l) = self.lookups.remove(&ip) {
                            self.counters.dropped_no_route += l.queue.len() as u64;
                        }
                        self.negative.insert(ip, now + NEGATIVE_TTL);
                    }
                }
            }
            DhtJob::DnsLookup(rid) => {
                let result = match &outcome {
                    // The newest value inside the network: one outside it
                    // must not hide it (dns-virt never answers those).
                    DhtOutcome::Ok(values) => {
                        let found = values
                            .iter()
                            .rev()
                            .filter_map(|v| crate::records::name_value(v))
                            .find(|(a, _)| self.settings.network.contains(a));
                        match found {
                            Some((addr, iids)) => {
                                // The /64 is the address's: only the
                                // interface ids come from the record.
                                if let Some(subnet) = self.v6.and_then(|p| p.subnet_of(addr)) {
                                    let v6: Vec<std::net::Ipv6Addr> = iids
                                        .map(|iid| {
                                            std::net::Ipv6Addr::from(
                                                u128::from(subnet.network()) | u128::from(iid),
                                            )
                                        })
                                        .collect();
                                    self.dns.set_ipv6_addrs(addr, &v6);
                                }
                                dns_virt::StoreResult::Found {
                                    addr,
                                    ttl: Duration::from_secs(60),
                                }
                            }
                            None => dns_virt::StoreResult::NotFound,
                        }
                    }
                    _ => dns_virt::StoreResult::Failed,
                };
                self.dns.handle_store_response(now, rid, result);
            }
            DhtJob::DnsServiceLookup(rid) => {
                let result = match &outcome {
                    // The policy admitted only well-formed registrations;
                    // one per target, the newest.
                    DhtOutcome::Ok(values) => {
                        let mut found: Vec<dns_virt::Service> = Vec::new();
                        for s in values
                            .iter()
                            .rev()
                            .filter_map(|v| dns_virt::Service::decode(v).ok())
                        {
                            if !found.iter().any(|f| f.target == s.target) {
                                found.push(s);
                            }
                        }
                        dns_virt::StoreResult::FoundServices(found)
                    }
                    _ => dns_virt::StoreResult::Failed,
                };
                self.dns.handle_store_response(now, rid, result);
            }
            DhtJob::DnsPublish(rid) => {
                let result = match outcome {
                    DhtOutcome::Ok(_) => dns_virt::StoreResult::Done,
                    _ => dns_virt::StoreResult::Failed,
                };
                self.dns.handle_store_response(now, rid, result);
            }
            DhtJob::Publish => {}
            DhtJob::CaLookup => {
                self.ca_lookup = false;
                if let (DhtOutcome::Ok(values), Some(verifier)) = (&outcome, &self.ca_verifier) {
                    // Only the CA's signed announcements count, the newest first.
                    if let Some(ca) = crate::enrol::newest_announcement(verifier, values) {
                        self.ca_address = Some(ca);
                        self.ca_found_at = Some(now);
                    }
                }
                if self.ca_address.is_none() {
                    // Not announced yet: the enrolment's retries ask again.
                    self.enrol_out.clear();
                }
            }
            DhtJob::CrlFetch => {
                if let DhtOutcome::Ok(values) = &outcome {
                    self.on_crl_manifests(now, values.iter().map(Vec::as_slice));
                }
            }
            DhtJob::CrlChunk { number, index } => {
                let values = match &outcome {
                    DhtOutcome::Ok(values) => values.as_slice(),
                    _ => &[],
                };
                self.on_crl_chunk(now, number, index, values.iter().map(Vec::as_slice));
            }
            DhtJob::Values => {
                let values = match outcome {
                    DhtOutcome::Ok(values) => values,
                    _ => Vec::new(),
                };
                self.events.push_back(CoreEvent::DhtValues { id, values });
            }
        }
    }

    fn on_dhcp_event(&mut self, now: Instant, event: dhcp_virt::Event) {
        if let dhcp_virt::Event::Leased {
            hardware_addr,
            addr,
            hostname,
            renewed,
            ..
        } = event
        {
            self.guest_addr = Some(addr);
            self.guest_addr_lost = false;
            if let Some(mac) = hardware_addr.mac() {
                self.guest_mac = Some(mac);
            }
            let _ = self.arp.set_guest_addr(Some(addr));
            self.start_ndp(addr);
            // Publish `ip → this node` so peers can route to the guest.
            let value = self.overlay.address().to_bytes();
            if let Ok(id) =
                self.overlay
                    .dht_put(now, &dht_key("ip", &addr.octets()), &value, PUBLISH_TTL)
            {
                self.jobs.insert(id, DhtJob::Publish);
            }
            if let Some(name) = hostname.as_deref().map(sanitize_hostname)
                && !name.is_empty()
            {
                if self.guest_name.as_deref() != Some(name.as_str()) || !renewed {
                    if let Some(old) = self.guest_name.take()
                        && old != name
                    {
                        self.dns.unregister(&old);
                        for service in self.services.keys() {
                            self.dns.unregister_service(service, &old);
                        }
                    }
                    if let Err(e) = self.dns.register(now, &name, addr, None) {
                        tracing::warn!(%name, error = %e, "name not registered");
                    }
                }
                let changed = self.guest_name.as_deref() != Some(name.as_str());
                self.guest_name = Some(name);
                if changed {
                    self.publish_services(now);
                }
            }
            self.events.push_back(CoreEvent::Leased {
                addr,
                hostname,
                renewed,
            });
            return;
        }
        if let dhcp_virt::Event::ClaimLost { addr, .. } = event
            && self.guest_addr == Some(addr)
        {
            // A healed partition gave the address to another node's guest:
            // stop advertising it; the guest is refused at its next renewal
            // and takes a new address.
            tracing::warn!(%addr, "address claimed by another node: given up");
            if let Some(name) = self.guest_name.take() {
                self.dns.unregister(&name);
                for service in self.services.keys() {
                    self.dns.unregister_service(service, &name);
                }
            }
            self.guest_addr_lost = true;
            self.services_refresh_at = None;
        }
    }

    fn on_directory_request(&mut self, now: Instant, request: dhcp_virt::DirectoryRequest) {
        if self.settings.allocator.is_some() {
            self.on_central_request(now, request);
            return;
        }
        match request.op {
            DirectoryOp::Claim => {
                let owner = request.owner.to_bytes();
                let certified = self
                    .host_certificate
                    .as_deref()
                    .and_then(crate::records::certified_ip)
                    == Some(request.addr);
                let claim = Claim {
                    rank: u8::from(!certified),
                    writer: self.overlay.record_writer().public_key,
                    owner: owner.clone(),
                };
                let ttl = request.lease_duration.max(Duration::from_secs(60));
                match self.overlay.dht_create(
                    now,
                    &dht_key("lease", &request.addr.octets()),
                    &owner,
                    ttl,
                ) {
                    Ok(id) => {
                        let kind = self.dhcp.claim_kind(request.id);
                        self.jobs.insert(
                            id,
                            DhtJob::DhcpClaim {
                                id: request.id,
                                addr: request.addr,
                                claim,
                                kind,
                            },
                        );
                    }
                    Err(_) => self.dhcp.handle_directory_completion(
                        now,
                        DirectoryCompletion {
                            id: request.id,
                            result: ClaimResult::Failed,
                        },
                    ),
                }
            }
            // The DHT has no delete: the claim expires with its TTL.
            _ => self.dhcp.handle_directory_completion(
                now,
                DirectoryCompletion {
                    id: request.id,
                    result: ClaimResult::Granted,
                },
            ),
        }
    }

    /// The value of a `name/<host>` record for `addr`: the address, and
    /// for the guest the interface ids of its IPv6 addresses.
    fn name_value(&self, addr: Ipv4Addr) -> Vec<u8> {
        let mut value = addr.octets().to_vec();
        if Some(addr) == self.guest_addr {
            for a in self.guest_v6.iter().rev().take(8) {
                value.extend_from_slice(&(u128::from(*a) as u64).to_be_bytes());
            }
        }
        value
    }

    fn on_store_request(&mut self, now: Instant, request: dns_virt::StoreRequest) {
        use dns_virt::StoreRequest as R;
        let (rid, started) = match request {
            R::Lookup { id, name } => (
                id,
                self.overlay
                    .dht_get(now, &dht_key("name", name.as_bytes()))
                    .map(|j| (j, DhtJob::DnsLookup(id))),
            ),
            R::Publish {
                id,
                name,
                addr,
                ttl,
            } => (
                id,
                self.overlay
                    .dht_put(
                        now,
                        &dht_key("name", name.as_bytes()),
                        &self.name_value(addr),
                        ttl,
                    )
                    .map(|j| (j, DhtJob::DnsPublish(id))),
            ),
            R::LookupService { id, name, host } => {
                let key = match &host {
                    Some(h) => service_keys(&name, h)[0].clone(),
                    None => dht_key("srv", name.as_bytes()),
                };
                (
                    id,
                    self.overlay
                        .dht_get(now, &key)
                        .map(|j| (j, DhtJob::DnsServiceLookup(id))),
                )
            }
            R::PublishService {
                id,
                name,
                host,
                service,
                ttl,
            } => {
                let [by_host, all] = service_keys(&name, &host);
                let value = service.to_bytes().unwrap_or_default();
                if let Ok(job) = self.overlay.dht_put(now, &all, &value, ttl) {
                    self.jobs.insert(job, DhtJob::Publish);
                }
                (
                    id,
                    self.overlay
                        .dht_put(now, &by_host, &value, ttl)
                        .map(|j| (j, DhtJob::DnsPublish(id))),
                )
            }
            // The DHT has no delete: the record expires with its TTL
            // (a withdrawn service is overwritten by `remove_service`).
            R::Unpublish { id, .. } | R::UnpublishService { id, .. } => {
                self.dns
                    .handle_store_response(now, id, dns_virt::StoreResult::Done);
                return;
            }
            // Reverse lookups of remote guests are not published in the DHT
            // yet: the zone's rule names answer them.
            #[allow(unreachable_patterns)]
            other => {
                self.dns
                    .handle_store_response(now, other.id(), dns_virt::StoreResult::NotFound);
                return;
            }
        };
        match started {
            Ok((job, kind)) => {
                self.jobs.insert(job, kind);
            }
            Err(_) => self
                .dns
                .handle_store_response(now, rid, dns_virt::StoreResult::Failed),
        }
    }

    /// The next query outside the zone for the caller's upstream resolver
    /// (with [`Settings::dns_forward`]): send it from a fresh socket and
    /// hand the reply to [`Core::handle_dns_forward_response`]. Poll after
    /// every input.
    pub fn poll_dns_forward(&mut self) -> Option<dns_virt::Forward> {
        self.dns.poll_forward()
    }

    /// The upstream's reply to forward `id` (see [`Core::poll_dns_forward`]):
    /// checked by the DNS server, relayed to the guest and cached.
    pub fn handle_dns_forward_response(
        &mut self,
        now: Instant,
        id: dns_virt::RequestId,
        reply: &[u8],
    ) {
        self.dns.handle_forward_response(now, id, reply);
        self.pump(now);
    }

    /// Hands the queries that arrived over TCP to the DNS server and the
    /// TCP stack's packets to the guest.
    fn drain_tcp_dns(&mut self, now: Instant) {
        while let Some((from, query)) = self.tcp_dns.poll_query() {
            self.dns
                .handle_input(now, from, dns_virt::Transport::Tcp, &query);
        }
        while let Some(packet) = self.tcp_dns.poll_packet() {
            self.deliver_ip(&packet);
        }
    }

    fn on_dns_transmit(&mut self, now: Instant, t: dns_virt::Transmit) {
        if t.transport == dns_virt::Transport::Tcp {
            if !self.tcp_dns.send(now, t.destination, &t.payload) {
                tracing::debug!(to = %t.destination, "DNS answer for a closed TCP connection");
            }
            while let Some(packet) = self.tcp_dns.poll_packet() {
                self.deliver_ip(&packet);
            }
            return;
        }
        let (Some(mac), SocketAddr::V4(to)) = (self.guest_mac, t.destination) else {
            return;
        };
        let builder = etherparse::PacketBuilder::ethernet2(self.settings.gateway_mac, mac)
            .ipv4(self.settings.gateway_addr.octets(), to.ip().octets(), 64)
            .udp(53, to.port());
        let mut frame = Vec::with_capacity(builder.size(t.payload.len()));
        if builder.write(&mut frame, &t.payload).is_ok() {
            self.push_tap(frame);
        }
    }

    fn on_sa_event(&mut self, event: ipsec_sa::Event) {
        use ipsec_sa::Event as E;
        match event {
            E::SaEstablished { peer, .. } => {
                self.sa_peers.insert(peer);
                if let (IpAddr::V4(ip), Some(cert)) = (
                    peer,
                    self.sa.as_ref().and_then(|sa| sa.peer_certificate(peer)),
                ) {
                    self.firewall_peers.learn(ip, cert);
                }
                self.events.push_back(CoreEvent::SaEstablished { peer });
            }
            E::PeerRemoved { peer, reason } => {
                self.sa_peers.remove(&peer);
                if let IpAddr::V4(ip) = peer {
                    self.firewall_peers.forget(ip);
                }
                self.events.push_back(CoreEvent::SaFailed {
                    peer,
                    reason: reason.to_string(),
                });
            }
            E::HandshakeFailed { peer, error } => self.events.push_back(CoreEvent::SaFailed {
                peer,
                reason: error.to_string(),
            }),
            _ => {}
        }
    }
}

/// Whether `endpoint` lies inside the virtual network `network`.
fn in_network(network: Ipv4Net, endpoint: SocketAddr) -> bool {
    matches!(endpoint.ip(), IpAddr::V4(ip) if network.contains(&ip))
}

/// A DHCP host name as a DNS label: lowercase letters, digits and hyphens.
pub fn sanitize_hostname(name: &str) -> String {
    let first = name.split('.').next().unwrap_or_default();
    first
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .take(63)
        .collect()
}

fn hickory_name(domain: &str) -> Result<dns_virt_name::Name, ()> {
    dns_virt_name::Name::from_ascii(format!("{domain}.")).map_err(|_| ())
}

/// hickory's `Name`, through dns-virt's public `ZoneConfig`.
mod dns_virt_name {
    pub use hickory_proto::rr::Name;
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn mtu_leaves_room_for_every_header() {
        let m = guest_mtu(1500);
        assert!(usize::from(m) + TOTAL_OVERHEAD <= 1500);
        assert_eq!(m % 8, 0);
        assert_eq!(guest_mtu(100), 576);
        assert!(
            usize::from(MAX_GUEST_MTU) + wire::HEADER_LEN + SA_OVERHEAD
                <= overlay_core::wire::MAX_DATA_LEN
        );
    }

    #[test]
    fn dht_outcomes_feed_the_claim_rule() {
        let settings = crate::demo::settings();
        let now = Instant::now();
        let mut judge = crate::records::NodePolicy::new(
            now,
            SystemTime::now(),
            settings.network,
            settings.gateway_addr,
            &settings.domain,
            None,
        );
        let addr = Ipv4Addr::new(10, 128, 3, 3);
        let mut signer_a = overlay_core::KeySigner::ed25519_from_seed(&[1; 32], 1);
        let mut signer_b = overlay_core::KeySigner::ed25519_from_seed(&[2; 32], 1);
        let key = dht_key("lease", &addr.octets());
        let ra = overlay_core::record::sign(&mut signer_a, &key, b"owner-a", 60, &[]).unwrap();
        let rb = overlay_core::record::sign(&mut signer_b, &key, b"owner-b", 60, &[]).unwrap();
        let a = Claim {
            rank: 1,
            writer: ra.writer.public_key.clone(),
            owner: ra.value.clone(),
        };
        let b_claim = Claim {
            rank: 1,
            writer: rb.writer.public_key.clone(),
            owner: rb.value.clone(),
        };
        let records = vec![rb, ra];
        let mut claim = |o: DhtOutcome, who: &Claim, kind| {
            claim_result(
                &create_answer(o, &records, addr, &mut judge, now),
                who,
                kind,
            )
        };
        let both = || DhtOutcome::Exists(Vec::new());
        // Of two uncertified claims, the smaller writer key wins, for both.
        let (small, large) = if a < b_claim {
            (&a, &b_claim)
        } else {
            (&b_claim, &a)
        };
        assert_eq!(
            claim(both(), small, ClaimKind::Renewal),
            ClaimResult::Granted
        );
        assert_eq!(claim(both(), large, ClaimKind::Renewal), ClaimResult::Taken);
        let a = small.clone();
        assert_eq!(
            claim(DhtOutcome::Ok(vec![]), &a, ClaimKind::New),
            ClaimResult::Granted
        );
        assert_eq!(
            claim(DhtOutcome::Full, &a, ClaimKind::New),
            ClaimResult::Taken
        );
        assert_eq!(
            claim(DhtOutcome::Rejected, &a, ClaimKind::Renewal),
            ClaimResult::Failed
        );
        assert_eq!(
            claim(DhtOutcome::Failed, &a, ClaimKind::New),
            ClaimResult::Failed
        );
    }

    /// A ring of cores on an in-memory underlay: node `i` is at
    /// `192.0.2.(i+1):4000`; `sent` records every (sender, destination).
    struct Underlay {
        nodes: Vec<Core<dhcp_virt::MemoryStore>>,
        sent: Vec<(usize, SocketAddr)>,
        now: Instant,
    }

    impl Underlay {
        fn at(i: usize) -> SocketAddr {
            SocketAddr::from(([192, 0, 2, i as u8 + 1], 4000))
        }

        /// Node `i`, advertising `endpoints` (its own by default).
        fn add(&mut self, endpoints: Option<Vec<SocketAddr>>) -> usize {
            let i = self.nodes.len();
            let mut config = crate::demo::overlay_config(Self::at(i));
            if let Some(e) = endpoints {
                config.endpoints = e;
            }
            let mut core = Core::new_with_insecure_seed(
                self.now,
                std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                crate::demo::settings(),
                config,
                Address::from_key(format!("node {i}").as_bytes()),
                dhcp_virt::MemoryStore::new(),
                i as u64 + 1,
            )
            .unwrap();
            let bootstrap: Vec<SocketAddr> = (i > 0).then(|| Self::at(0)).into_iter().collect();
            core.join(self.now, &bootstrap);
            self.nodes.push(core);
            i
        }

        fn run(&mut self, for_: Duration) {
            let end = self.now + for_;
            let mut buf = vec![0u8; 65536];
            while self.now < end {
                let mut queue = Vec::new();
                for (i, core) in self.nodes.iter_mut().enumerate() {
                    if core.poll_timeout().is_some_and(|t| t <= self.now) {
                        core.handle_timeout(self.now, SystemTime::UNIX_EPOCH);
                    }
                    while let Some((to, n, _)) = core.poll_udp_with_ttl(&mut buf) {
                        self.sent.push((i, to));
                        queue.push((i, to, buf[..n].to_vec()));
                    }
                    while core.poll_event().is_some() {}
                }
                for (from, to, bytes) in queue {
                    let now = self.now;
                    if let Some(core) = (0..self.nodes.len())
                        .find(|j| Self::at(*j) == to)
                        .and_then(|j| self.nodes.get_mut(j))
                    {
                        core.handle_udp(now, Self::at(from), &bytes);
                    }
                }
                self.now += Duration::from_millis(10);
            }
        }
    }

    /// A peer naming addresses inside the virtual network (the overlay
    /// would run over itself) or on loopback (our host's own services) as
    /// its endpoints, in its link requests, punch requests or offers,
    /// makes no node send there; its real endpoint in the same messages is
    /// tried. The hook drops them from punch requests and offers, and the
    /// last guard before the socket drops what the overlay itself would
    /// probe (a ConnectToMe's named endpoints).
    #[test]
    fn attack_virtual_and_loopback_endpoints_named_by_a_peer_get_nothing() {
        let virtual_ep = SocketAddr::from(([10, 128, 0, 9], 4000));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 53));
        let control = SocketAddr::from(([192, 0, 2, 77], 4000));
        let mut net = Underlay {
            nodes: Vec::new(),
            sent: Vec::new(),
            now: Instant::now(),
        };
        let a = net.add(None);
        net.run(Duration::from_millis(200));
        let b = net.add(None);
        net.run(Duration::from_secs(2));
        // The attacker advertises only the forbidden endpoints: every other
        // node learns them from its link requests and ConnectToMe.
        let m = net.add(Some(vec![virtual_ep, loopback]));
        net.run(Duration::from_secs(3));
        let named = [virtual_ep, loopback, control];
        let mut body = Vec::new();
        wire::emit_endpoints(&named, &mut body);
        for victim in [a, b] {
            let to = net.nodes[victim].overlay().address();
            let from = net.nodes[m].overlay().address();
            let now = net.now;
            net.nodes[m].send_to_node(now, to, Kind::Punch, &body);
            let mut offer = nat_traversal::wire::Offer::with_fresh_credentials(
                from.to_string(),
                to.to_string(),
                named
                    .iter()
                    .map(|e| {
                        nat_traversal::wire::Candidate::new(
                            nat_traversal::wire::CandidateKind::Host,
                            *e,
                            65535,
                        )
                    })
                    .collect(),
            );
            offer.from = from.to_string();
            let offer = nat_traversal::wire::SignalRepr::Offer(offer)
                .to_bytes()
                .unwrap();
            net.nodes[m].send_to_node(now, to, Kind::Offer, &offer);
        }
        net.run(Duration::from_secs(8));
        let honest: Vec<&(usize, SocketAddr)> = net.sent.iter().filter(|(i, _)| *i != m).collect();
        for victim in [a, b] {
            assert!(
                honest.contains(&&(victim, control)),
                "node {victim} never tried the peer's real endpoint"
            );
        }
        for bad in [virtual_ep, loopback] {
            assert!(
                !honest.iter().any(|(_, to)| *to == bad),
                "sent to {bad}: {honest:?}"
            );
        }
        // Host candidates are never virtual addresses either.
        let core = &mut net.nodes[a];
        core.set_host_candidates(vec![virtual_ep, SocketAddr::from(([192, 168, 1, 2], 4000))]);
        assert_eq!(
            core.host_candidates(),
            [SocketAddr::from(([192, 168, 1, 2], 4000))]
        );
    }

    #[test]
    fn hostnames_become_labels() {
        assert_eq!(sanitize_hostname("Guest_1.lan"), "guest1");
        assert_eq!(sanitize_hostname("web-2"), "web-2");
    }
}
