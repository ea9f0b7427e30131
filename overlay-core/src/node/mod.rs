//! The sans-IO overlay node.
//!
//! A [`Node`] owns its connection table, DHT store, pending link attempts
//! and pending requests. It does no I/O and reads no clock: the caller
//! feeds it
//!
//! - [`Node::handle_input`] (bytes from a transport endpoint) or
//!   [`Node::handle_message`] (an already-decoded [`Message`], as the
//!   simulator does),
//! - [`Node::handle_timeout`] once [`Node::poll_timeout`] has passed,
//! - commands: [`Node::join`], [`Node::send`], [`Node::echo`],
//!   [`Node::dht_put`], [`Node::dht_get`], [`Node::dht_create`],
//!   [`Node::leave`],
//!
//! and after each call drains [`Node::poll_transmit`] and
//! [`Node::poll_event`]. The crate docs show the loop.
//!
//! Links are set up with the challenge-response handshake of
//! [`crate::identity`]: a link exists, and a link's endpoint moves, only
//! once the peer's proof for the [`Identity`] checks. Request ids and
//! nonces are drawn from the node's random source (seeded by the
//! operating system unless a `*_with_insecure_seed` constructor is used).
//!
//! Maintenance runs on a periodic tick ([`Config::tick_duration`]):
//! keep-alives and failure detection, retries, near-link repair, shortcut
//! upkeep, neighbour-list updates for lookahead routing, demand shortcuts
//! and DHT republishing.
//!
//! The implementation is split by the state each part owns: `link`
//! (pending links and ConnectToMe, probes, challenges, observed
//! endpoints; links made and dropped), `dht` (record signing and checks,
//! requests waiting to be decided, replication and republishing),
//! `maintenance` (neighbour lists, near discovery, shortcuts, demand,
//! trimming, liveness), `route` (forwarding, delivery, the node's own
//! pending requests); this file holds the node's state, its public entry
//! points and the tick that drives the others.

use core::net::SocketAddr;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use ring::hmac;

use crate::address::Address;
use crate::dht::{DhtStore, Quotas};
use crate::error::NodeError;
use crate::identity::IdentityError;
use crate::identity::{Identity, OpenIdentity};
use crate::pool::BufferPool;
use crate::record::{AcceptSigned, RecordPolicy, RecordRejections, RecordSigner};
use crate::table::{Connection, ConnectionTable};
use crate::wire::{
    CloseReason, DhtOp, LinkStatus, MAX_CREDENTIAL_LEN, MAX_DATA_LEN, Message, Mode, Payload,
    Record, Roles, Routed,
};

mod dht;
mod link;
mod maintenance;
mod route;

use dht::{PendingDht, Policy, Signer};
use link::{LinkHint, Observed, PendingCtm, PendingLink, Probe, challenge_key};
use maintenance::{Demand, Lost};
use route::{PendingRequest, RequestKind};

/// Node configuration. `Default` gives the values the simulator uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Transport endpoints this node advertises: the addresses at which
    /// peers can reach it (for example the bound address of its UDP
    /// socket, not `0.0.0.0`). **Needed** for peers to link to this node:
    /// [`Node::join`] raises [`Event::NoEndpoints`] while it is empty. Can
    /// be changed later with [`Node::set_endpoints`].
    pub endpoints: Vec<SocketAddr>,
    /// Near links kept on each side of the ring (at least 2).
    pub near_per_side: usize,
    /// Shortcuts this node initiates; `None` derives it from the connection
    /// limit: half the links left after the near ones.
    pub shortcuts: Option<usize>,
    /// Most links held; `None` is `floor(log2(n) + 3.5)` for the estimated
    /// size `n` (the margin absorbs estimation error so that the true
    /// `log2 N + 4` bound holds), at least 8.
    pub max_connections: Option<usize>,
    /// Score links by their peers' connection lists too.
    pub lookahead: bool,
    /// Hop limit of routed messages this node originates.
    pub hop_limit: u8,
    /// Maintenance period.
    pub tick_duration: Duration,
    /// Idle time after which a link is pinged.
    pub keepalive_duration: Duration,
    /// Silence after which a link is declared dead.
    pub idle_timeout: Duration,
    /// Silence after a send that expects an answer (a forwarded message or
    /// a ping) after which a link is declared dead.
    pub suspect_timeout: Duration,
    /// Silence after a send that expects an answer after which every link
    /// is pinged once (a "rebind probe", at most once per this period): a
    /// peer that no longer knows our endpoint, because our NAT rebound or
    /// our underlay address changed, answers `Close(Unneeded)` and the link
    /// is made again from where our datagrams now come from, long before
    /// [`suspect_timeout`](Self::suspect_timeout). Zero (the default, which
    /// the simulator uses): never.
    pub rebind_probe_duration: Duration,
    /// Time between link-request retransmissions.
    pub link_retry_duration: Duration,
    /// Link-request attempts before giving up.
    pub link_attempts: u8,
    /// Time before an echo or DHT request is first retried while no
    /// answer has been measured, and the longest first wait ever. Once
    /// answers come back the wait follows their round trips as TCP's
    /// retransmission timer does (RFC 6298: smoothed RTT + 4 × its
    /// variation, from answers to requests sent once), between
    /// [`min_request_timeout`](Self::min_request_timeout) and this: a
    /// request lost on the way (a relay killed that instant) costs a
    /// few round trips, not seconds. Later retries double the wait, up
    /// to this plus half of it per attempt.
    pub request_timeout: Duration,
    /// The shortest wait before an echo or DHT request is retried,
    /// however short the measured round trips (see
    /// [`request_timeout`](Self::request_timeout)).
    pub min_request_timeout: Duration,
    /// Sends per echo or DHT request. A request fails when no answer has
    /// come as long after it was first sent as these attempts take with
    /// [`request_timeout`](Self::request_timeout) and its back-off (14 s
    /// with the defaults), however short the measured round trips.
    pub request_attempts: u8,
    /// ConnectToMe messages a joining node sends (one per
    /// `request_timeout`) before it counts itself joined through the links
    /// it holds: its ring neighbour answered none with a working link (a
    /// NAT neither side can punch), so traffic to and from it goes through
    /// the common neighbours it links to, and near-neighbour upkeep keeps
    /// trying the direct link.
    pub join_attempts: u8,
    /// Period of the "connect to my own address" near check.
    pub near_check_duration: Duration,
    /// Period between shortcut checks.
    pub shortcut_check_duration: Duration,
    /// Time an unneeded link is kept before it is closed.
    pub unneeded_grace_duration: Duration,
    /// Period of re-link attempts to lost near neighbours.
    pub lost_retry_duration: Duration,
    /// How long lost near neighbours are remembered (so that rings split
    /// by a partition merge again when it heals).
    pub lost_memory_duration: Duration,
    /// Routed data packets to or from one address within
    /// `demand_window_duration` that trigger a demand shortcut (0: never).
    pub demand_threshold: u32,
    /// Window for `demand_threshold`.
    pub demand_window_duration: Duration,
    /// Copies of each DHT record (the responsible node and its nearest).
    pub dht_replicas: usize,
    /// Longest accepted DHT TTL.
    pub dht_max_ttl: Duration,
    /// Period of DHT republishing to the replica set.
    pub dht_republish_duration: Duration,
    /// A node decides a create-if-absent (or answers a get it has no value
    /// for) only after its near links have been stable this long, so that
    /// records handed off by the previous responsible node have arrived;
    /// creates also wait a quarter of it after arriving.
    pub dht_settle_duration: Duration,
    /// Limits of this node's DHT store: keys and bytes per writer, slots
    /// and bytes in all. A write over them gets
    /// [`DhtStatus::QuotaExceeded`](crate::wire::DhtStatus::QuotaExceeded) and changes nothing.
    pub dht_quotas: Quotas,
    /// Most DHT requests from one source address waiting to be decided
    /// (creates, and gets for a key we lack while the near set settles or
    /// the replicas are asked); more creates and settling gets are
    /// answered with
    /// [`DhtStatus::QuotaExceeded`](crate::wire::DhtStatus::QuotaExceeded),
    /// more checked gets from the store as it is.
    pub dht_max_pending_per_peer: usize,
    /// Most DHT requests waiting to be decided, from all sources.
    pub dht_max_pending: usize,
    /// Emit [`Event::Forwarded`] for each forwarded message.
    pub forward_events: bool,
    /// Hold the first link request to a known peer until the NAT-traversal
    /// hook answers the [`Event::LinkAttempt`] with
    /// [`Node::handle_link_candidates`] (or until `link_retry_duration`
    /// passes), instead of sending it at once. A request that reaches a
    /// Linux masquerading NAT before that NAT's host has sent anything to us
    /// leaves a conntrack entry that makes the NAT remap the host's port for
    /// us, so the hole punched afterwards does not match; deferring lets the
    /// hook open both NATs first. Off by default.
    pub defer_links_to_punch: bool,
    /// Most link attempts made for other nodes' ConnectToMe requests that
    /// are pending at once; further requests are ignored.
    pub max_pending_links: usize,
    /// Most links kept only because the peer asked for them as near, leaf
    /// or demand links (such links are exempt from trimming); further such
    /// requests are answered [`LinkStatus::Full`].
    pub max_exempt_links: usize,
    /// Distinct authenticated peers that must report the same endpoint for
    /// us before [`Event::ObservedEndpoint`] is raised (one suffices when
    /// it is the node we joined through).
    pub observed_confirmations: usize,
    /// Period after which the secret behind link challenges is replaced
    /// (challenges made with the previous secret stay valid one period).
    pub challenge_rotation_duration: Duration,
    /// Most free data buffers the node keeps for reuse (each holds
    /// [`MAX_DATA_LEN`] bytes). It should cover the data messages in flight
    /// inside the node between two drains of
    /// [`poll_transmit_into`](Node::poll_transmit_into).
    pub pool_buffers: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            endpoints: Vec::new(),
            near_per_side: 2,
            shortcuts: None,
            max_connections: None,
            lookahead: true,
            hop_limit: 64,
            tick_duration: Duration::from_secs(1),
            keepalive_duration: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            suspect_timeout: Duration::from_secs(2),
            rebind_probe_duration: Duration::ZERO,
            link_retry_duration: Duration::from_secs(1),
            link_attempts: 3,
            request_timeout: Duration::from_secs(2),
            min_request_timeout: Duration::from_millis(200),
            request_attempts: 4,
            join_attempts: 4,
            near_check_duration: Duration::from_secs(30),
            shortcut_check_duration: Duration::from_secs(2),
            unneeded_grace_duration: Duration::from_secs(10),
            lost_retry_duration: Duration::from_secs(10),
            lost_memory_duration: Duration::from_secs(300),
            demand_threshold: 16,
            demand_window_duration: Duration::from_secs(10),
            dht_replicas: 3,
            dht_max_ttl: Duration::from_secs(24 * 3600),
            dht_republish_duration: Duration::from_secs(30),
            dht_settle_duration: Duration::from_secs(2),
            dht_quotas: Quotas::default(),
            dht_max_pending_per_peer: 32,
            dht_max_pending: 1024,
            forward_events: false,
            defer_links_to_punch: false,
            pool_buffers: 32,
            max_pending_links: 32,
            max_exempt_links: 64,
            observed_confirmations: 2,
            challenge_rotation_duration: Duration::from_secs(120),
        }
    }
}

/// A message to send to a transport endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// What to send (encode with [`Message::emit`]).
    pub message: Message,
}

/// Why a link went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer stopped answering.
    Timeout,
    /// The peer closed it.
    Closed(CloseReason),
    /// This node closed it (unneeded or over the limit).
    Trimmed,
    /// Another node authenticated from the link's endpoint.
    Replaced,
}

/// Why a routed message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// It would exceed its hop limit.
    HopLimit,
    /// Exact mode and no node has the destination address.
    NotFound,
    /// This node has no links.
    NoRoute,
}

/// Outcome of a DHT request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhtOutcome {
    /// Done; values under the key (for get).
    Ok(Vec<Vec<u8>>),
    /// Create lost; the values already stored.
    Exists(Vec<Vec<u8>>),
    /// The key is full.
    Full,
    /// Rejected by the responsible node (bad signature, or refused by its
    /// record policy).
    Rejected,
    /// This node already holds a newer record under the key at the
    /// responsible node (see [`crate::record`]).
    Stale,
    /// The responsible node is at a quota for this writer or in all.
    QuotaExceeded,
    /// No answer after all attempts.
    Failed,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The node found its place on the ring: it holds a link toward its
    /// ring neighbourhood (or started a new ring). From now on DHT
    /// requests reach the node responsible for their key; see
    /// [`Node::dht_put`] for what "ready" means.
    Joined,
    /// A link came up.
    Connected {
        /// Peer address.
        peer: Address,
    },
    /// A link went away.
    Disconnected {
        /// Peer address.
        peer: Address,
        /// Why.
        reason: DisconnectReason,
    },
    /// A link attempt started: the NAT-traversal hook. A traversal module
    /// may punch toward `endpoints` and report more candidates with
    /// [`Node::handle_link_candidates`]. For a link another node asked
    /// for, `endpoints` are the ones it named: unconfirmed. The node itself
    /// sends each at most one small probe (no retries) until one answers;
    /// a hook that sends to them must bound that itself (the traversal
    /// needs to open its NAT toward them before the peer answers).
    LinkAttempt {
        /// Expected peer (zero if unknown).
        peer: Address,
        /// Candidate endpoints being tried.
        endpoints: Vec<SocketAddr>,
    },
    /// This node advertises no transport endpoint (it joined with
    /// [`Config::endpoints`] empty): peers answer the links it asks for,
    /// but none can link to it (no ConnectToMe, no near links from
    /// others), so a ring of such nodes never closes. Set the address
    /// peers reach it at (for a UDP socket its bound address, not
    /// `0.0.0.0`, or an [`Event::ObservedEndpoint`]) with
    /// [`Node::set_endpoints`].
    NoEndpoints,
    /// Authenticated peers told us how they see our endpoint: raised once
    /// [`Config::observed_confirmations`] distinct peers (or the node we
    /// joined through) reported it in signed link replies.
    ///
    /// If it is not among [`Node::endpoints`], this node is probably
    /// behind a NAT and `endpoint` is its public mapping: add it with
    /// [`Node::set_endpoints`] (keeping the local endpoints for peers on
    /// the same network) so that peers elsewhere can link back. The node
    /// never advertises it by itself.
    ObservedEndpoint {
        /// Our endpoint as seen by the peer.
        endpoint: SocketAddr,
    },
    /// Our mapping changed: a peer reported, in a signed link reply, an
    /// endpoint for us other than the one it reported before (our NAT
    /// rebound, or our underlay address changed). Links that got no
    /// answer since are made again (through [`Event::LinkAttempt`]); the
    /// application should find its reflexive endpoint again (STUN) and
    /// advertise it, and rescan its interface addresses.
    MappingChanged {
        /// Our endpoint as the peer now sees it.
        endpoint: SocketAddr,
    },
    /// Data addressed to this node arrived.
    Delivered {
        /// Original sender.
        source: Address,
        /// Hops it took.
        hops: u8,
        /// The data.
        payload: Vec<u8>,
    },
    /// A message was forwarded (only with [`Config::forward_events`]).
    Forwarded {
        /// Its destination.
        destination: Address,
        /// The next hop.
        next_hop: Address,
    },
    /// A routed message was dropped here.
    Dropped {
        /// Its source.
        source: Address,
        /// Its destination.
        destination: Address,
        /// Why.
        reason: DropReason,
    },
    /// An echo request was answered.
    EchoReply {
        /// The id [`Node::echo`] returned.
        id: u64,
        /// Hops the request took.
        hops: u8,
    },
    /// An echo request got no answer.
    EchoFailed {
        /// The id [`Node::echo`] returned.
        id: u64,
    },
    /// A DHT request finished.
    Dht {
        /// The id the request returned.
        id: u64,
        /// The operation.
        op: DhtOp,
        /// Its outcome; the values are those of `records`.
        outcome: DhtOutcome,
        /// The records behind the outcome's values, with their writers and
        /// credentials, each verified and accepted by the record policy.
        records: Vec<Record>,
    },
    /// A peer's identity proof failed; no link was made and nothing moved.
    PeerRejected {
        /// The address it claimed.
        peer: Address,
        /// Where it spoke from.
        endpoint: SocketAddr,
        /// Why it was refused.
        error: IdentityError,
    },
    /// A peer refused our link request (e.g. [`LinkStatus::IdentityRejected`]:
    /// this node is not admitted to a closed network).
    LinkRefused {
        /// The peer's address.
        peer: Address,
        /// Its endpoint.
        endpoint: SocketAddr,
        /// Its answer.
        status: LinkStatus,
    },
    /// A demand shortcut was requested toward a busy peer.
    DemandShortcut {
        /// The peer.
        peer: Address,
    },
}

/// Counters, for the simulator's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Maintenance messages sent (everything except routed data, echo and
    /// DHT payloads and DHT replication).
    pub maintenance_sent: u64,
    /// Neighbour lists sent (the maintenance cost of lookahead routing;
    /// included in `maintenance_sent`).
    pub neighbor_lists_sent: u64,
    /// Routed messages forwarded for others.
    pub forwarded: u64,
    /// Routed messages dropped.
    pub dropped: u64,
    /// Messages [`Node::poll_transmit_into`] skipped because they did not
    /// fit the caller's buffer.
    pub transmits_skipped: u64,
    /// Link requests and replies that
    /// [`Node::poll_transmit_into_holding`] withheld from an endpoint its
    /// caller keeps quiet toward.
    pub link_handshakes_withheld: u64,
    /// DHT records dropped (not stored, not returned), by reason.
    pub records_rejected: RecordRejections,
    /// DHT and echo replies whose id matched no pending request of ours
    /// (forged, or late), or that came from another node than the one
    /// asked; dropped.
    pub unmatched_replies: u64,
    /// DHT requests refused because too many were waiting to be decided.
    pub dht_requests_refused: u64,
    /// DHT gets and creates for a key we do not hold that waited for our
    /// near set to settle ([`Config::dht_settle_duration`]) before we
    /// answered.
    pub dht_requests_held: u64,
    /// Gets for a key we lacked, with our near set stable, that waited
    /// (briefly) while we asked the near neighbours holding its replicas:
    /// we are responsible for the key, so an empty store here means we
    /// restarted or its last holder just went away, not that it is absent.
    pub dht_misses_checked: u64,
    /// Waiting gets (held or checked) answered with records before their
    /// time: a replica we asked had the record, or it reached us (a
    /// handoff, a republish or a put) while they waited.
    pub dht_held_gets_answered_early: u64,
    /// Gets we sent to near neighbours for waiting gets (one per key,
    /// however many neighbours were asked).
    pub dht_fetches_sent: u64,
    /// Echo and DHT requests of ours sent again after
    /// [`Config::request_timeout`] passed without an answer.
    pub requests_retried: u64,
}

/// A node of the overlay (see the [crate docs](crate) for how to drive it).
#[derive(Debug)]
pub struct Node<I: Identity = OpenIdentity> {
    config: Config,
    address: Address,
    identity: I,
    rng: ChaCha8Rng,
    table: ConnectionTable,
    dht: DhtStore,
    pending_links: Vec<PendingLink>,
    /// The NAT-traversal hook's candidates per peer, for later links.
    link_hints: HashMap<Address, LinkHint>,
    pending_ctms: Vec<PendingCtm>,
    requests: Vec<PendingRequest>,
    pending_dht: Vec<PendingDht>,
    /// Round trips of our echo and DHT requests (none measured yet: `None`).
    rtt: Option<route::RttEstimate>,
    /// Gets of ours to near neighbours for keys whose gets we hold
    /// (`dht::Fetch`).
    fetches: Vec<dht::Fetch>,
    near_changed_at: Instant,
    lost: Vec<Lost>,
    /// Copies of routed messages sent on links that had been quiet, kept
    /// until the peer is heard from again: if it answers `Close` (it
    /// restarted and no longer knows the link), they are routed again
    /// another way instead of being lost ([`route::Unanswered`]).
    unanswered: Vec<route::Unanswered>,
    demand: Vec<Demand>,
    bootstrap: Vec<SocketAddr>,
    bootstrap_next: usize,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pool: BufferPool,
    next_tick_at: Instant,
    near_check_at: Instant,
    shortcut_check_at: Instant,
    republish_at: Instant,
    join_nonce: Option<u64>,
    join_sent_at: Option<Instant>,
    /// Join ConnectToMe messages sent since the last join.
    join_ctms_sent: u8,
    joined: bool,
    left: bool,
    neighbors_dirty: bool,
    size_estimate: f64,
    /// Request ids and the default record key; seeded like `rng`.
    id_rng: ChaCha8Rng,
    signer: Option<Signer>,
    policy: Policy,
    credential: Vec<u8>,
    stats: Stats,
    /// Secrets behind link challenges: current and previous.
    challenge_keys: [hmac::Key; 2],
    challenge_rotate_at: Instant,
    probes: Vec<Probe>,
    observed: Vec<Observed>,
    /// The endpoint each authenticated peer last reported for us (bounded).
    reported: Vec<(Address, SocketAddr)>,
    /// When every link was last pinged by a rebind probe.
    rebind_probed_at: Option<Instant>,
    /// Links dropped when our mapping changed, made again once the peer
    /// that reported the change has sent its neighbour list (so that the
    /// traversal hook's signalling to them can be routed), or at the next
    /// tick; and that peer.
    mapping_relinks: Vec<(Address, SocketAddr, Roles)>,
    mapping_reporter: Option<Address>,
}

impl Node<OpenIdentity> {
    /// **Insecure**: a node with the [`OpenIdentity`], whose address is
    /// whatever it claims and which accepts every peer. For tests only;
    /// real nodes use [`Node::new`] with a key-bound identity. Randomness
    /// comes from the operating system.
    ///
    /// # Panics
    /// If the operating system's random source fails.
    pub fn new_open(now: Instant, config: Config, address: Address) -> Node<OpenIdentity> {
        Node::new(now, config, OpenIdentity::new(address))
    }

    /// **Insecure** both ways: the [`OpenIdentity`] and randomness from
    /// `seed`. For the deterministic simulator and tests only.
    pub fn new_with_insecure_seed(
        now: Instant,
        config: Config,
        address: Address,
        seed: u64,
    ) -> Node<OpenIdentity> {
        Node::with_identity_and_insecure_seed(now, config, OpenIdentity::new(address), seed)
    }
}

impl<I: Identity> Node<I> {
    /// A node with `identity` (its address is [`Identity::address`]). Its
    /// randomness (link nonces, challenge secrets, request ids, timer
    /// phases) is seeded from the operating system.
    ///
    /// # Panics
    /// If the operating system's random source fails, as `std`'s
    /// `HashMap::new` does.
    pub fn new(now: Instant, config: Config, identity: I) -> Node<I> {
        let mut seed = [0u8; 32];
        let mut id_seed = [0u8; 32];
        for s in [&mut seed, &mut id_seed] {
            if let Err(e) = getrandom::fill(s) {
                panic!("the operating system's random source failed: {e}");
            }
        }
        Node::build(
            config,
            identity,
            now,
            ChaCha8Rng::from_seed(seed),
            Some(ChaCha8Rng::from_seed(id_seed)),
        )
    }

    /// [`Node::new`] with **predictable** randomness from `seed`, for the
    /// deterministic simulator and tests only.
    pub fn with_identity_and_insecure_seed(
        now: Instant,
        config: Config,
        identity: I,
        seed: u64,
    ) -> Node<I> {
        Node::build(config, identity, now, ChaCha8Rng::seed_from_u64(seed), None)
    }

    fn build(
        config: Config,
        identity: I,
        now: Instant,
        mut rng: ChaCha8Rng,
        id_rng: Option<ChaCha8Rng>,
    ) -> Node<I> {
        let tick = config.tick_duration.max(Duration::from_millis(1));
        // Spread the ticks of many nodes over the period.
        let phase = tick.mul_f64((rng.next_u32() as f64) / (u32::MAX as f64 + 1.0));
        let near_phase = config
            .near_check_duration
            .mul_f64((rng.next_u32() as f64) / (u32::MAX as f64 + 1.0));
        let challenge_keys = [challenge_key(&mut rng), challenge_key(&mut rng)];
        Node {
            address: identity.address(),
            identity,
            table: ConnectionTable::default(),
            dht: DhtStore::with_quotas(config.dht_quotas),
            pending_links: Vec::new(),
            link_hints: HashMap::new(),
            pending_ctms: Vec::new(),
            requests: Vec::new(),
            pending_dht: Vec::new(),
            rtt: None,
            fetches: Vec::new(),
            near_changed_at: now,
            lost: Vec::new(),
            unanswered: Vec::new(),
            demand: Vec::new(),
            bootstrap: Vec::new(),
            bootstrap_next: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            pool: BufferPool::new(config.pool_buffers),
            next_tick_at: now + phase,
            near_check_at: now + near_phase,
            shortcut_check_at: now,
            republish_at: now + config.dht_republish_duration,
            join_nonce: None,
            join_sent_at: None,
            join_ctms_sent: 0,
            joined: false,
            left: false,
            neighbors_dirty: false,
            size_estimate: 1.0,
            // Seeded ones draw once, as the sequential ids' start once did,
            // so that the simulator's random sequence is unchanged.
            id_rng: {
                let derived = ChaCha8Rng::seed_from_u64(rng.next_u64());
                id_rng.unwrap_or(derived)
            },
            signer: None,
            policy: Policy(Box::new(AcceptSigned)),
            credential: Vec::new(),
            stats: Stats::default(),
            challenge_keys,
            challenge_rotate_at: now + config.challenge_rotation_duration,
            probes: Vec::new(),
            observed: Vec::new(),
            reported: Vec::new(),
            rebind_probed_at: None,
            mapping_relinks: Vec::new(),
            mapping_reporter: None,
            config,
            rng,
        }
    }

    /// This node's ring address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Whether the node has found its ring neighbours.
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// The connection table.
    pub fn connections(&self) -> &ConnectionTable {
        &self.table
    }

    /// The local DHT store.
    pub fn dht_store(&self) -> &DhtStore {
        &self.dht
    }

    /// DHT requests from others waiting here to be decided (bounded by
    /// [`Config::dht_max_pending`]).
    pub fn dht_pending(&self) -> usize {
        self.pending_dht.len()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The current network-size estimate.
    pub fn size_estimate(&self) -> f64 {
        self.size_estimate
    }

    /// The current connection limit.
    pub fn max_connections(&self) -> usize {
        self.config.max_connections.unwrap_or_else(|| {
            let n = self.size_estimate.max(1.0);
            ((n.log2() + 3.5).floor() as usize).max(8)
        })
    }

    /// Shortcuts this node tries to initiate.
    pub fn target_shortcuts(&self) -> usize {
        self.config.shortcuts.unwrap_or_else(|| {
            let rest = self
                .max_connections()
                .saturating_sub(2 * self.config.near_per_side);
            rest.div_ceil(2).max(1)
        })
    }

    /// Approximate bytes of memory this node holds.
    pub fn memory_estimate(&self) -> usize {
        let conns =
            self.table.len() * core::mem::size_of::<Connection>() + self.table.lookahead_bytes();
        core::mem::size_of::<Self>()
            + conns
            + self.dht.heap_bytes()
            + self.pending_links.capacity() * core::mem::size_of::<PendingLink>()
            + self
                .pending_links
                .iter()
                .map(|p| (p.endpoints.capacity() + p.unconfirmed.capacity()) * 32)
                .sum::<usize>()
            + self.pending_ctms.capacity() * core::mem::size_of::<PendingCtm>()
            + self.link_hints.capacity()
                * (core::mem::size_of::<(Address, LinkHint)>() + link::LINK_HINT_ENDPOINTS * 32)
            + self.probes.capacity() * core::mem::size_of::<Probe>()
            + self.requests.capacity() * core::mem::size_of::<PendingRequest>()
            + self.lost.capacity() * core::mem::size_of::<Lost>()
            + self.pool.heap_bytes()
    }

    /// Link attempts under way (bounded by [`Config::max_pending_links`]
    /// for those other nodes asked for).
    pub fn pending_links(&self) -> usize {
        self.pending_links.len()
    }

    /// The pool of free data buffers.
    pub fn buffer_pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Signs every DHT record this node writes from now on with `signer`
    /// (which wraps the node's key; see [`KeySigner`](crate::KeySigner)). Without one the
    /// node signs with an ephemeral Ed25519 key drawn from its random
    /// source when it first writes, so it cannot update its records after
    /// a restart.
    pub fn set_record_signer(&mut self, signer: Box<dyn RecordSigner>) {
        self.signer = Some(Signer(signer));
    }

    /// Judges every record this node is asked to store and every record
    /// it reads (see [`RecordPolicy`]); the default accepts every
    /// correctly signed record.
    pub fn set_record_policy(&mut self, policy: Box<dyn RecordPolicy>) {
        self.policy = Policy(policy);
    }

    /// Attaches `credential` (for example the node's DER certificate) to
    /// every record this node writes from now on, for the readers' and
    /// storers' [`RecordPolicy`]; empty for none.
    pub fn set_record_credential(&mut self, credential: Vec<u8>) -> Result<(), NodeError> {
        if credential.len() > MAX_CREDENTIAL_LEN {
            return Err(NodeError::CredentialTooLong {
                len: credential.len(),
                max: MAX_CREDENTIAL_LEN,
            });
        }
        self.credential = credential;
        Ok(())
    }

    /// The key this node's records are signed with.
    pub fn record_writer(&mut self) -> crate::record::WriterKey {
        self.signer().writer()
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Encodes the next message to send into `buf` and returns its
    /// destination and length; the message's data buffer goes back to the
    /// node's pool. With a warm pool this allocates nothing.
    ///
    /// A `buf` of [`wire::MAX_DATA_MESSAGE_LEN`](crate::wire::MAX_DATA_MESSAGE_LEN)
    /// bytes holds every data message, and one of
    /// [`wire::MAX_MESSAGE_LEN`](crate::wire::MAX_MESSAGE_LEN) bytes every
    /// message. A message longer than `buf` is skipped (dropped and counted
    /// in [`Stats::transmits_skipped`]), never truncated.
    pub fn poll_transmit_into(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        self.poll_transmit_into_holding(buf, |_| false)
    }

    /// [`poll_transmit_into`](Self::poll_transmit_into) that withholds
    /// link handshakes from endpoints the caller must keep quiet toward,
    /// such as those a NAT traversal module's patient punch attempt waits
    /// on (a neighbour NAT's conntrack entry must expire before the
    /// attempt can work, and any datagram there keeps it alive).
    ///
    /// `hold` is asked only about link requests and replies to an endpoint
    /// that no established link uses; where it answers `true` the message
    /// is dropped and counted in [`Stats::link_handshakes_withheld`]. The
    /// link attempt itself goes on (its retries are asked again), and the
    /// traffic of established links is never held, whatever `hold` says.
    pub fn poll_transmit_into_holding(
        &mut self,
        buf: &mut [u8],
        mut hold: impl FnMut(SocketAddr) -> bool,
    ) -> Option<(SocketAddr, usize)> {
        while let Some(t) = self.transmits.pop_front() {
            if matches!(t.message, Message::LinkRequest(_) | Message::LinkReply(_))
                && self.table.position_by_endpoint(t.destination).is_none()
                && hold(t.destination)
            {
                t.message.recycle_into(&mut self.pool);
                self.stats.link_handshakes_withheld += 1;
                continue;
            }
            let written = (t.message.buffer_len() <= buf.len()).then(|| t.message.emit(buf));
            t.message.recycle_into(&mut self.pool);
            match written {
                Some(n) => return Some((t.destination, n)),
                None => self.stats.transmits_skipped += 1,
            }
        }
        None
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called;
    /// `None` after [`leave`](Self::leave).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.left).then(|| {
            let t = self
                .rebind_probe_due()
                .map_or(self.next_tick_at, |t| t.min(self.next_tick_at));
            // A request due again between ticks goes at once: its wait
            // follows measured round trips, far shorter than a tick.
            self.requests
                .iter()
                .map(|r| r.retry_at)
                .fold(t, Instant::min)
        })
    }

    /// Starts joining through any of `bootstrap` (a leaf link). With no
    /// bootstrap endpoints the node starts a new ring on its own.
    ///
    /// [`Event::Joined`] follows once the node has found its place on the
    /// ring (at once for a new ring); wait for it before the first DHT
    /// request (see [`dht_put`](Self::dht_put)).
    ///
    /// A node that advertises no endpoint ([`Config::endpoints`] empty
    /// and no [`set_endpoints`](Self::set_endpoints) yet) still joins, but
    /// says so with [`Event::NoEndpoints`] first: peers answer the links it
    /// asks for, yet none can link to it, so a ring of such nodes never
    /// closes.
    ///
    /// # Errors
    /// [`NodeError::Left`] after [`leave`](Self::leave).
    pub fn join(&mut self, now: Instant, bootstrap: &[SocketAddr]) -> Result<(), NodeError> {
        if self.left {
            return Err(NodeError::Left);
        }
        if self.config.endpoints.is_empty() {
            self.events.push_back(Event::NoEndpoints);
        }
        self.bootstrap = bootstrap.to_vec();
        self.bootstrap_next = 0;
        self.join_ctms_sent = 0;
        if self.bootstrap.is_empty() {
            self.set_joined();
        } else {
            self.try_bootstrap(now);
        }
        Ok(())
    }

    /// Replaces the transport endpoints this node advertises (initially
    /// [`Config::endpoints`]): the addresses at which peers can reach it,
    /// sent in its link handshakes and ConnectToMe requests. Links made
    /// from now on use them; existing links keep the endpoint they were
    /// made on. Typical use: add the endpoint of an
    /// [`Event::ObservedEndpoint`] (this node's address as seen from
    /// outside a NAT) to the local ones.
    pub fn set_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.config.endpoints = endpoints;
    }

    /// The transport endpoints this node advertises (see
    /// [`set_endpoints`](Self::set_endpoints)).
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.config.endpoints
    }

    /// Sends `payload` to the node with address `destination` (exact mode).
    /// [`send_slice`](Self::send_slice) does the same without taking an
    /// owned buffer.
    pub fn send(
        &mut self,
        now: Instant,
        destination: Address,
        payload: Vec<u8>,
    ) -> Result<(), NodeError> {
        self.check_send(payload.len())?;
        self.send_data(now, destination, payload);
        Ok(())
    }

    /// An empty buffer from the node's pool, with room for
    /// [`MAX_DATA_LEN`] bytes: fill it and pass it to [`send`](Self::send),
    /// and the payload is written once, where it is sent from (what
    /// [`send_slice`](Self::send_slice) copies, a caller can build here).
    pub fn data_buffer(&mut self) -> Vec<u8> {
        self.pool.take()
    }

    /// Sends a copy of `payload` to the node with address `destination`
    /// (exact mode). The copy goes into a buffer from the node's pool, which
    /// [`poll_transmit_into`](Self::poll_transmit_into) takes back once the
    /// message is encoded: in the steady state sending allocates nothing.
    pub fn send_slice(
        &mut self,
        now: Instant,
        destination: Address,
        payload: &[u8],
    ) -> Result<(), NodeError> {
        self.check_send(payload.len())?;
        let buf = self.pool.copy_of(payload);
        self.send_data(now, destination, buf);
        Ok(())
    }

    /// Gives a buffer back to the node's pool for reuse: pass each
    /// [`Event::Delivered`] payload here once done with it, so that
    /// receiving data allocates nothing in the steady state. The pool keeps
    /// at most [`Config::pool_buffers`] buffers and drops the rest, and
    /// drops buffers too small to hold [`MAX_DATA_LEN`] bytes.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.give(buf);
    }

    fn check_send(&self, len: usize) -> Result<(), NodeError> {
        if self.left {
            return Err(NodeError::Left);
        }
        if len > MAX_DATA_LEN {
            return Err(NodeError::PayloadTooLong {
                len,
                max: MAX_DATA_LEN,
            });
        }
        Ok(())
    }

    fn send_data(&mut self, now: Instant, destination: Address, payload: Vec<u8>) {
        self.count_demand(now, destination);
        let msg = self.routed(destination, Mode::Exact, Payload::Data(payload));
        self.route(now, None, msg);
    }

    /// Probes the route to `destination` (exact mode); answered with
    /// [`Event::EchoReply`] or [`Event::EchoFailed`].
    pub fn echo(&mut self, now: Instant, destination: Address) -> Result<u64, NodeError> {
        let id = self.fresh_id();
        self.request(
            now,
            id,
            RequestKind::Echo,
            destination,
            Mode::Exact,
            Payload::EchoRequest { id },
        )?;
        Ok(id)
    }

    /// Adds `value` under `key` for `ttl`; answered with [`Event::Dht`].
    ///
    /// **When the DHT is ready**: after [`Event::Joined`] (or once
    /// [`is_joined`](Self::is_joined) is true). Before that a node without
    /// links serves requests from its own store, so a put lands only
    /// locally and a get sees only local values. Right after joining, a
    /// get may still wait up to [`Config::dht_settle_duration`] at the
    /// responsible node (while records handed off to it arrive), and
    /// requests are retried ([`Config::request_attempts`]) until the ring
    /// around the key has formed; [`DhtOutcome::Failed`] means no answer
    /// came.
    pub fn dht_put(
        &mut self,
        now: Instant,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<u64, NodeError> {
        self.dht_request(now, DhtOp::Put, key, value, ttl)
    }

    /// Reads the values under `key`; answered with [`Event::Dht`]. Ready
    /// after [`Event::Joined`], as [`dht_put`](Self::dht_put).
    pub fn dht_get(&mut self, now: Instant, key: &[u8]) -> Result<u64, NodeError> {
        self.dht_request(now, DhtOp::Get, key, &[], Duration::ZERO)
    }

    /// Stores `value` under `key` only if the key has no value; the node
    /// responsible for the key decides, so of concurrent creators exactly
    /// one gets [`DhtOutcome::Ok`] and the others [`DhtOutcome::Exists`]
    /// with the winning value. The responsible node queues creates until
    /// its near links have been stable for [`Config::dht_settle_duration`]
    /// and re-routes them if a nearer node appeared meanwhile. A create
    /// whose value is already stored under the key succeeds (a retried
    /// winner), so creators should use distinct values (e.g. include their
    /// address).
    pub fn dht_create(
        &mut self,
        now: Instant,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<u64, NodeError> {
        self.dht_request(now, DhtOp::Create, key, value, ttl)
    }

    /// Leaves gracefully: hands DHT records to the nearest neighbours and
    /// closes every link. The node is inert afterwards.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        let heirs: Vec<usize> = {
            let mut v = self.table.nearest_side(self.address, true, 1);
            v.extend(self.table.nearest_side(self.address, false, 1));
            v.iter().filter_map(|a| self.table.position(*a)).collect()
        };
        let keys: Vec<Vec<u8>> = self.dht.keys().cloned().collect();
        let mut records = Vec::new();
        for k in &keys {
            records.extend(self.dht.replicas(now, k));
        }
        for i in heirs {
            if let Some(c) = self.table.get(i) {
                let ep = c.endpoint;
                self.push_replicas(ep, &records);
            }
        }
        let eps: Vec<SocketAddr> = self.table.iter().map(|c| c.endpoint).collect();
        for ep in eps {
            self.send_maintenance(
                ep,
                Message::Close {
                    reason: CloseReason::Leaving,
                },
            );
        }
        self.table = ConnectionTable::default();
        self.pending_links.clear();
        self.link_hints.clear();
        self.pending_ctms.clear();
        self.requests.clear();
        self.probes.clear();
        self.left = true;
    }

    /// Adds candidate endpoints for a peer being linked (from a NAT
    /// traversal module, which vouches for them: they are probed and
    /// retried like configured ones). A link held by
    /// [`Config::defer_links_to_punch`] starts now, to all its endpoints.
    ///
    /// The candidates are also remembered for two minutes (at most four
    /// per peer, for a bounded number of peers) and added to the next link
    /// attempts to `peer`: a candidate that arrives when no attempt is
    /// pending, such as a TURN relayed address offered once punching has
    /// failed, is not lost.
    pub fn handle_link_candidates(
        &mut self,
        now: Instant,
        peer: Address,
        endpoints: &[SocketAddr],
    ) {
        self.remember_link_hint(now, peer, endpoints);
        let mut starts = Vec::new();
        let mut sends = Vec::new();
        for (i, p) in self.pending_links.iter_mut().enumerate() {
            if p.target != peer || p.answered.is_some() {
                continue;
            }
            let start = p.deferred;
            p.deferred = false;
            for e in endpoints {
                if !p.endpoints.contains(e) {
                    p.endpoints.push(*e);
                    p.unconfirmed.retain(|u| u != e);
                    if !start {
                        sends.push((*e, p.nonce, p.target, p.roles));
                    }
                }
            }
            if start {
                starts.push(i);
            }
        }
        for i in starts {
            // The hook answered: its endpoints, not the ones another node
            // named, are the ones to use.
            self.send_trusted_probes(i);
        }
        for (e, nonce, target, roles) in sends {
            let msg = self.probe(nonce, target, roles);
            self.send_maintenance(e, msg);
        }
        // A peer whose link waits for an answer offers endpoints (its
        // mapping changed, and it punches toward us): link to them now. The
        // link moves only if the peer's handshake proves its key there.
        let suspect = self
            .table
            .position(peer)
            .and_then(|i| self.table.get(i))
            .filter(|c| c.unanswered_since.is_some())
            .map(|c| {
                if c.mine.is_empty() {
                    Roles::DEMAND
                } else {
                    c.mine
                }
            });
        if let Some(roles) = suspect
            && !self.pending_links.iter().any(|p| p.target == peer)
        {
            let nonce = self.rng.next_u64();
            self.start_link(
                now,
                endpoints.to_vec(),
                Vec::new(),
                peer,
                roles,
                nonce,
                false,
            );
        }
    }

    /// Decodes and handles a datagram from `from`. Malformed input is
    /// dropped and changes no state.
    ///
    /// A data payload is decoded into a buffer from the node's pool
    /// ([`Message::parse_with`]); forwarding it for others, or delivering it
    /// and getting it back through [`recycle`](Self::recycle), allocates
    /// nothing in the steady state.
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), crate::error::WireError> {
        let msg = Message::parse_with(bytes, &mut self.pool)?;
        self.handle_message(now, from, msg);
        Ok(())
    }

    /// Handles a decoded message from `from`.
    pub fn handle_message(&mut self, now: Instant, from: SocketAddr, message: Message) {
        if self.left {
            message.recycle_into(&mut self.pool);
            return;
        }
        let idx = self.table.position_by_endpoint(from);
        if let Some(i) = idx
            && let Some(c) = self.table.get_mut(i)
        {
            c.last_heard_at = now;
            c.unanswered_since = None;
            // The peer is alive and knows the link: what we sent it a
            // while ago (a tick: far longer than a datagram takes) is its
            // to handle. Not what we sent just now: the peer may have
            // sent this before our message arrived, and closed the link
            // since (a restarted node trims the links it was given at
            // once). A handshake proves nothing (a peer that restarted
            // asks for links at once, and its Close for what it dropped
            // may follow), nor does a Close.
            if !self.unanswered.is_empty()
                && !matches!(
                    message,
                    Message::Close { .. } | Message::LinkRequest(_) | Message::LinkReply(_)
                )
            {
                let tick = self.config.tick_duration;
                self.unanswered.retain(|u| {
                    u.endpoint != from || now.saturating_duration_since(u.sent_at) < tick
                });
            }
        }
        match message {
            Message::LinkRequest(req) => self.on_link_request(now, from, req),
            Message::LinkReply(rep) => self.on_link_reply(now, from, rep),
            Message::Ping { sender, nonce } => match idx {
                Some(i) => {
                    if self.table.get(i).is_some_and(|c| c.address == sender) {
                        self.send_maintenance(from, Message::Pong { nonce });
                    }
                }
                // No link at this endpoint: the sender's NAT may have
                // given it a new one. Say so (a datagram smaller than the
                // ping), so that it makes the link again with a handshake;
                // the ping itself moves nothing.
                None => self.send_maintenance(
                    from,
                    Message::Close {
                        reason: CloseReason::Unneeded,
                    },
                ),
            },
            Message::Pong { .. } => {}
            Message::Close { reason } => {
                if let Some(i) = idx {
                    // A peer that tells us a link we need is unneeded does
                    // not know us where our datagrams now come from (our
                    // NAT rebound): make the link again from there.
                    let relink = self
                        .table
                        .get(i)
                        .filter(|c| reason == CloseReason::Unneeded && !c.mine.is_empty())
                        .map(|c| (c.address, c.endpoint, c.mine));
                    self.drop_connection(now, i, DisconnectReason::Closed(reason));
                    if let Some((peer, endpoint, roles)) = relink {
                        self.relink(now, peer, endpoint, roles, 1);
                    }
                }
                if reason == CloseReason::Unneeded {
                    // The peer does not know the link (it restarted, or it
                    // closed the link and we have since dropped it too):
                    // what we routed through it that it has not handled
                    // was dropped there; route it another way.
                    self.reroute_unanswered(now, from);
                }
            }
            Message::Neighbors {
                size_estimate,
                neighbors,
            } => {
                if let Some(i) = idx {
                    self.on_neighbors(now, i, size_estimate, &neighbors);
                }
            }
            Message::DhtStore(replicas) => {
                if idx.is_some() {
                    self.on_dht_store(now, replicas);
                }
            }
            Message::Routed(msg) => {
                if let Some(i) = idx {
                    self.route(now, Some(i), msg);
                } else {
                    Message::Routed(msg).recycle_into(&mut self.pool);
                    // The sender thinks we are linked; tell it we are not, so
                    // it stops routing through us at once.
                    self.send_maintenance(
                        from,
                        Message::Close {
                            reason: CloseReason::Unneeded,
                        },
                    );
                }
            }
        }
    }

    /// Runs maintenance once `now` has reached [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.rebind_probe(now);
        if now < self.next_tick_at {
            if self.requests.iter().any(|r| r.retry_at <= now) {
                self.retry_requests(now);
            }
            return;
        }
        while self.next_tick_at <= now {
            self.next_tick_at += self.config.tick_duration.max(Duration::from_millis(1));
        }
        let keep = self.config.suspect_timeout;
        self.unanswered
            .retain(|u| now.saturating_duration_since(u.sent_at) < keep);
        self.tick(now);
    }

    /// A random request id (from the OS-seeded generator, or the insecure
    /// seed), distinct from every pending one: a reply must name it to be
    /// accepted.
    fn fresh_id(&mut self) -> u64 {
        loop {
            let id = self.id_rng.next_u64();
            if !self.requests.iter().any(|r| r.id == id) {
                return id;
            }
        }
    }

    fn routed(&self, destination: Address, mode: Mode, payload: Payload) -> Routed {
        Routed {
            source: self.address,
            destination,
            mode,
            hops: 0,
            hop_limit: self.config.hop_limit,
            payload,
        }
    }

    fn my_endpoints(&self) -> Vec<SocketAddr> {
        self.config.endpoints.clone()
    }

    fn send_maintenance(&mut self, destination: SocketAddr, message: Message) {
        self.stats.maintenance_sent += 1;
        self.transmits.push_back(Transmit {
            destination,
            message,
        });
    }

    fn tick(&mut self, now: Instant) {
        self.update_size_estimate();
        self.check_links(now);
        self.flush_mapping_relinks(now);
        self.retry_links(now);
        self.retry_requests(now);
        self.decide_pending_dht(now);
        self.pending_ctms.retain(|p| p.expires_at > now);
        if now >= self.challenge_rotate_at {
            self.challenge_rotate_at = now + self.config.challenge_rotation_duration;
            self.challenge_keys[1] = self.challenge_keys[0].clone();
            self.challenge_keys[0] = challenge_key(&mut self.rng);
        }

        // Every link lost (our NAT rebound, or the network went away for
        // longer than the links' timeouts): join again through the
        // bootstrap nodes.
        if self.joined
            && self.table.is_empty()
            && !self.bootstrap.is_empty()
            && !self
                .pending_links
                .iter()
                .any(|p| p.roles.contains(Roles::LEAF))
        {
            self.try_bootstrap(now);
        }

        // Joining: resend the ConnectToMe, or fall back to the next bootstrap.
        if !self.joined && !self.bootstrap.is_empty() {
            let has_leaf = self.table.iter().any(|c| c.mine.contains(Roles::LEAF));
            let stale = self
                .join_sent_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.request_timeout);
            if has_leaf && stale && self.join_ctms_sent >= self.config.join_attempts.max(1) {
                // No working link to our neighbour: joined through the
                // links we hold.
                self.set_joined();
            } else if has_leaf && stale {
                self.send_join_ctm(now);
            } else if !has_leaf
                && self
                    .pending_links
                    .iter()
                    .all(|p| !p.roles.contains(Roles::LEAF))
            {
                self.try_bootstrap(now);
            }
        }

        if self.joined {
            self.upkeep(now);
        }

        if self.neighbors_dirty {
            self.neighbors_dirty = false;
            let list = self.neighbor_list();
            let eps: Vec<SocketAddr> = self.table.iter().map(|c| c.endpoint).collect();
            for ep in eps {
                self.stats.neighbor_lists_sent += 1;
                self.send_maintenance(ep, list.clone());
            }
        }
        self.release_idle_buffers();
    }

    /// Frees the buffers of link-setup and request state that is empty:
    /// most nodes of a settled ring have nothing pending for long spells,
    /// and each of these grew to hold a few entries while it joined.
    fn release_idle_buffers(&mut self) {
        fn release<T>(v: &mut Vec<T>) {
            if v.is_empty() && v.capacity() > 0 {
                *v = Vec::new();
            }
        }
        release(&mut self.pending_links);
        release(&mut self.pending_ctms);
        release(&mut self.probes);
        release(&mut self.requests);
        release(&mut self.pending_dht);
        release(&mut self.fetches);
        release(&mut self.lost);
        release(&mut self.demand);
    }
}
