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
//! [`Node::poll_event`].
//!
//! The data path has pooled variants that do not allocate once the node's
//! [`BufferPool`] is warm: [`Node::send_slice`] copies the payload into a
//! pooled buffer, [`Node::handle_input`] decodes data payloads into pooled
//! buffers, [`Node::poll_transmit_into`] encodes into the caller's buffer
//! and takes the data buffer back, and [`Node::recycle`] returns an
//! [`Event::Delivered`] payload. A driver that uses them for every packet
//! sends, forwards and receives data without a heap allocation per packet.
//!
//! ```
//! use std::time::Instant;
//! use overlay_core::wire::MAX_MESSAGE_LEN;
//! use overlay_core::{Config, Event, KeyIdentity, Node};
//!
//! let now = Instant::now();
//! let mut node = Node::new(Config::default(), KeyIdentity::generate_ed25519(), now);
//! node.join(now, &[]);
//! // One datagram buffer for the life of the node.
//! let mut datagram = vec![0u8; MAX_MESSAGE_LEN];
//!
//! // Data for ourselves is delivered at once; data for others leaves
//! // through `poll_transmit_into`.
//! let me = node.address();
//! node.send_slice(now, me, b"hello")?;
//! while let Some((to, len)) = node.poll_transmit_into(&mut datagram) {
//!     // socket.send_to(&datagram[..len], to)
//!     # let _ = (to, len);
//! }
//! while let Some(event) = node.poll_event() {
//!     if let Event::Delivered { payload, .. } = event {
//!         assert_eq!(payload, b"hello");
//!         node.recycle(payload); // the next packet reuses it
//!     }
//! }
//! assert_eq!(node.buffer_pool().len(), 1);
//! # Ok::<(), overlay_core::NodeError>(())
//! ```
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

use core::net::SocketAddr;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use ring::hmac;

use crate::address::{Address, Distance};
use crate::dht::{DhtStore, Quotas};
use crate::error::NodeError;
pub use crate::identity::{Identity, OpenIdentity};
use crate::identity::{IdentityError, Role, Transcript};
use crate::pool::BufferPool;
use crate::record::{
    AcceptSigned, KeySigner, PolicyStage, RecordPolicy, RecordRejection, RecordRejections,
    RecordSigner,
};
use crate::routing::{NextHop, next_hop};
use crate::table::{Connection, ConnectionTable};
use crate::wire::{
    CloseReason, DhtOp, DhtRequest, DhtStatus, LinkReply, LinkRequest, LinkStatus,
    MAX_CREDENTIAL_LEN, MAX_DATA_LEN, MAX_DHT_STORE_LEN, MAX_KEY_LEN, MAX_RECORDS, MAX_VALUE_LEN,
    Message, Mode, Neighbor, Payload, Record, Replica, Roles, Routed,
};

/// Peers whose data traffic is counted for demand shortcuts.
const DEMAND_ENTRIES: usize = 32;
/// Endpoints named by other nodes that this node remembers probing.
const PROBE_ENTRIES: usize = 32;
/// Endpoints named by another node's ConnectToMe that are probed.
const PROBES_PER_CONNECT: usize = 4;
/// Observed-endpoint reports remembered.
const OBSERVED_ENTRIES: usize = 8;

/// Node configuration. `Default` gives the values the simulator uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Candidate transport endpoints this node advertises.
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
    /// Time between link-request retransmissions.
    pub link_retry_duration: Duration,
    /// Link-request attempts before giving up.
    pub link_attempts: u8,
    /// Time before an echo or DHT request is first retried (later retries
    /// back off by half this each).
    pub request_timeout: Duration,
    /// Attempts per echo or DHT request.
    pub request_attempts: u8,
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
    /// [`DhtStatus::QuotaExceeded`] and changes nothing.
    pub dht_quotas: Quotas,
    /// Most DHT requests from one source address waiting to be decided
    /// (creates, and gets while the near set settles); more are answered
    /// with [`DhtStatus::QuotaExceeded`].
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
            link_retry_duration: Duration::from_secs(1),
            link_attempts: 3,
            request_timeout: Duration::from_secs(2),
            request_attempts: 4,
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
    /// The node found its place on the ring.
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
    /// Authenticated peers told us how they see our endpoint: raised once
    /// [`Config::observed_confirmations`] distinct peers (or the node we
    /// joined through) reported it in signed link replies.
    ObservedEndpoint {
        /// Our endpoint as seen by the peer.
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
    /// DHT records dropped (not stored, not returned), by reason.
    pub records_rejected: RecordRejections,
    /// DHT and echo replies whose id matched no pending request of ours
    /// (forged, or late), or that came from another node than the one
    /// asked; dropped.
    pub unmatched_replies: u64,
    /// DHT requests refused because too many were waiting to be decided.
    pub dht_requests_refused: u64,
}

/// A responder's challenge, answered with a proof.
#[derive(Debug, Clone, Copy)]
struct Answered {
    endpoint: SocketAddr,
    responder: Address,
    challenge: u64,
    observed: SocketAddr,
}

#[derive(Debug, Clone)]
struct PendingLink {
    nonce: u64,
    target: Address,
    roles: Roles,
    /// Endpoints trusted enough to retry (configured, formerly linked, or
    /// reported by the NAT-traversal hook).
    endpoints: Vec<SocketAddr>,
    /// Endpoints another node named, not yet seen to answer: each gets one
    /// small probe and no retries (return-routability check).
    unconfirmed: Vec<SocketAddr>,
    /// The challenge being answered (step 3 of the handshake).
    answered: Option<Answered>,
    /// The link serves the peer's request (a ConnectToMe), not ours.
    for_peer: bool,
    attempts: u8,
    retry_at: Instant,
    /// No request sent yet: waiting for the NAT-traversal hook
    /// ([`Config::defer_links_to_punch`]).
    deferred: bool,
}

#[derive(Debug, Clone)]
struct PendingCtm {
    nonce: u64,
    roles: Roles,
    target: u64,
    expires_at: Instant,
}

#[derive(Debug, Clone)]
enum RequestKind {
    Echo,
    Dht(DhtOp),
}

#[derive(Debug, Clone)]
struct PendingRequest {
    id: u64,
    kind: RequestKind,
    destination: Address,
    mode: Mode,
    payload: Payload,
    attempts: u8,
    retry_at: Instant,
}

#[derive(Debug, Clone)]
struct PendingDht {
    source: Address,
    id: u64,
    request: Box<DhtRequest>,
    hops: u8,
    decide_at: Instant,
}

/// The node's record signer (boxed; `Debug` shows only the writer).
struct Signer(Box<dyn RecordSigner>);

impl core::fmt::Debug for Signer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Signer").field(&self.0.writer()).finish()
    }
}

/// The node's record policy (boxed).
struct Policy(Box<dyn RecordPolicy>);

impl core::fmt::Debug for Policy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Policy")
    }
}

#[derive(Debug, Clone)]
struct Lost {
    address: Address,
    endpoint: SocketAddr,
    lost_at: Instant,
    retry_at: Instant,
}

/// An endpoint named by another node that was probed.
#[derive(Debug, Clone, Copy)]
struct Probe {
    endpoint: SocketAddr,
    at: Instant,
    answered: bool,
}

/// Reports of our own endpoint by authenticated peers.
#[derive(Debug, Clone)]
struct Observed {
    endpoint: SocketAddr,
    reporters: Vec<Address>,
    raised: bool,
}

#[derive(Debug, Clone)]
struct Demand {
    peer: Address,
    count: u32,
    window_start: Instant,
    requested: bool,
}

/// A fresh secret for link challenges.
fn challenge_key(rng: &mut ChaCha8Rng) -> hmac::Key {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    hmac::Key::new(hmac::HMAC_SHA256, &secret)
}

/// The challenge for a probe with `nonce` from `sender` at `endpoint`.
fn challenge_for(key: &hmac::Key, nonce: u64, sender: Address, endpoint: SocketAddr) -> u64 {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&nonce.to_be_bytes());
    ctx.update(&sender.to_bytes());
    match endpoint {
        SocketAddr::V4(a) => ctx.update(&a.ip().to_ipv6_mapped().octets()),
        SocketAddr::V6(a) => ctx.update(&a.ip().octets()),
    }
    ctx.update(&endpoint.port().to_be_bytes());
    let tag = ctx.sign();
    let mut b = [0u8; 8];
    b.copy_from_slice(&tag.as_ref()[..8]);
    u64::from_be_bytes(b).max(1)
}

/// A node of the overlay (see the [module docs](self)).
#[derive(Debug)]
pub struct Node<I: Identity = OpenIdentity> {
    config: Config,
    address: Address,
    identity: I,
    rng: ChaCha8Rng,
    table: ConnectionTable,
    dht: DhtStore,
    pending_links: Vec<PendingLink>,
    pending_ctms: Vec<PendingCtm>,
    requests: Vec<PendingRequest>,
    pending_dht: Vec<PendingDht>,
    near_changed_at: Instant,
    lost: Vec<Lost>,
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
}

impl Node<OpenIdentity> {
    /// **Insecure**: a node with the [`OpenIdentity`], whose address is
    /// whatever it claims and which accepts every peer. For tests only;
    /// real nodes use [`Node::new`] with a key-bound identity. Randomness
    /// comes from the operating system.
    ///
    /// # Panics
    /// If the operating system's random source fails.
    pub fn new_open(config: Config, address: Address, now: Instant) -> Node<OpenIdentity> {
        Node::new(config, OpenIdentity::new(address), now)
    }

    /// **Insecure** both ways: the [`OpenIdentity`] and randomness from
    /// `seed`. For the deterministic simulator and tests only.
    pub fn new_with_insecure_seed(
        config: Config,
        address: Address,
        now: Instant,
        seed: u64,
    ) -> Node<OpenIdentity> {
        Node::with_identity_and_insecure_seed(config, OpenIdentity::new(address), now, seed)
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
    pub fn new(config: Config, identity: I, now: Instant) -> Node<I> {
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
        config: Config,
        identity: I,
        now: Instant,
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
            pending_ctms: Vec::new(),
            requests: Vec::new(),
            pending_dht: Vec::new(),
            near_changed_at: now,
            lost: Vec::new(),
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
            config,
            rng,
        }
    }

    // ----- getters -----

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
        let conns: usize = self
            .table
            .iter()
            .map(|c| core::mem::size_of::<Connection>() + c.lookahead.len() * 8)
            .sum();
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

    // ----- DHT records -----

    /// Signs every DHT record this node writes from now on with `signer`
    /// (which wraps the node's key; see [`KeySigner`]). Without one the
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

    fn signer(&mut self) -> &mut dyn RecordSigner {
        let signer = match self.signer.take() {
            Some(s) => s,
            None => {
                let mut seed = [0u8; 32];
                self.id_rng.fill_bytes(&mut seed);
                Signer(Box::new(KeySigner::ed25519_from_seed(&seed, 0)))
            }
        };
        &mut *self.signer.insert(signer).0
    }

    /// Checks a record arriving to be stored or read: its signature, then
    /// the policy. Counts a rejection.
    fn admit(&mut self, now: Instant, stage: PolicyStage, record: &Record) -> bool {
        let verdict = crate::record::verify(record).and_then(|()| {
            if self.policy.0.accept(now, stage, record) {
                Ok(())
            } else {
                Err(RecordRejection::Policy)
            }
        });
        match verdict {
            Ok(()) => true,
            Err(e) => {
                self.stats.records_rejected.count(e);
                false
            }
        }
    }

    /// Stores replicas pushed by a linked peer: each verified, judged and
    /// inserted under the quotas; bad ones are dropped and counted.
    fn on_dht_store(&mut self, now: Instant, replicas: Vec<Replica>) {
        for r in replicas {
            let ttl = Duration::from_secs(r.remaining_secs.min(r.record.lifetime_secs).into())
                .min(self.config.dht_max_ttl);
            // The same record again (a periodic republish) is only a
            // refresh: no need to check its signature once more.
            let known = self
                .dht
                .slots(&r.record.key)
                .iter()
                .any(|s| s.record == r.record);
            if !known && !self.admit(now, PolicyStage::Store, &r.record) {
                continue;
            }
            if let Err(e) = self.dht.insert(now, &r.record, ttl) {
                self.stats.records_rejected.count(e);
            }
        }
    }

    /// Queues DhtStore messages carrying `replicas` to `destination`, cut
    /// to at most [`MAX_RECORDS`] records and [`MAX_DHT_STORE_LEN`] bytes
    /// each.
    fn push_replicas(&mut self, destination: SocketAddr, replicas: &[Replica]) {
        let mut start = 0;
        while start < replicas.len() {
            let mut len = 3;
            let mut end = start;
            while end < replicas.len() && end - start < MAX_RECORDS {
                let l = replicas[end].record.buffer_len() + 4;
                if end > start && len + l > MAX_DHT_STORE_LEN {
                    break;
                }
                len += l;
                end += 1;
            }
            self.transmits.push_back(Transmit {
                destination,
                message: Message::DhtStore(replicas[start..end].to_vec()),
            });
            start = end;
        }
    }

    // ----- outputs -----

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
        while let Some(t) = self.transmits.pop_front() {
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
        (!self.left).then_some(self.next_tick_at)
    }

    // ----- commands -----

    /// Starts joining through any of `bootstrap` (a leaf link). With no
    /// bootstrap endpoints the node starts a new ring on its own.
    pub fn join(&mut self, now: Instant, bootstrap: &[SocketAddr]) {
        self.bootstrap = bootstrap.to_vec();
        self.bootstrap_next = 0;
        if self.bootstrap.is_empty() {
            self.set_joined();
        } else {
            self.try_bootstrap(now);
        }
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
    pub fn dht_put(
        &mut self,
        now: Instant,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<u64, NodeError> {
        self.dht_request(now, DhtOp::Put, key, value, ttl)
    }

    /// Reads the values under `key`; answered with [`Event::Dht`].
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
        self.pending_ctms.clear();
        self.requests.clear();
        self.probes.clear();
        self.left = true;
    }

    /// Adds candidate endpoints for a peer being linked (from a NAT
    /// traversal module, which vouches for them: they are probed and
    /// retried like configured ones). A link held by
    /// [`Config::defer_links_to_punch`] starts now, to all its endpoints.
    pub fn handle_link_candidates(&mut self, peer: Address, endpoints: &[SocketAddr]) {
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
    }

    // ----- inputs -----

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
        }
        match message {
            Message::LinkRequest(req) => self.on_link_request(now, from, req),
            Message::LinkReply(rep) => self.on_link_reply(now, from, rep),
            Message::Ping { sender, nonce } => {
                if idx.is_some_and(|i| self.table.get(i).is_some_and(|c| c.address == sender)) {
                    self.send_maintenance(from, Message::Pong { nonce });
                }
            }
            Message::Pong { .. } => {}
            Message::Close { reason } => {
                if let Some(i) = idx {
                    self.drop_connection(now, i, DisconnectReason::Closed(reason));
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
        if self.left || now < self.next_tick_at {
            return;
        }
        while self.next_tick_at <= now {
            self.next_tick_at += self.config.tick_duration.max(Duration::from_millis(1));
        }
        self.tick(now);
    }

    // ----- internals -----

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

    /// Step 1 of the handshake: a probe without proof or endpoints.
    fn probe(&self, nonce: u64, target: Address, roles: Roles) -> Message {
        Message::LinkRequest(LinkRequest {
            nonce,
            challenge: 0,
            sender: self.address,
            target,
            roles,
            endpoints: Vec::new(),
            identity: Vec::new(),
        })
    }

    /// Step 3: the answer to a challenge, with our proof.
    fn answer(&mut self, nonce: u64, roles: Roles, a: Answered) -> Message {
        let transcript = Transcript {
            role: Role::Request,
            requester: self.address,
            responder: a.responder,
            nonce,
            challenge: a.challenge,
            roles: roles.0,
            requester_endpoint: a.observed,
        };
        Message::LinkRequest(LinkRequest {
            nonce,
            challenge: a.challenge,
            sender: self.address,
            target: a.responder,
            roles,
            endpoints: self.my_endpoints(),
            identity: self.identity.prove(&transcript),
        })
    }

    /// Sends the probes of pending link `i`: to its trusted endpoints, and
    /// (when `first`) one to each unconfirmed endpoint not probed lately.
    fn send_probes(&mut self, now: Instant, i: usize, first: bool) {
        self.send_trusted_probes(i);
        let Some(p) = self.pending_links.get(i) else {
            return;
        };
        if !first || p.unconfirmed.is_empty() {
            return;
        }
        let msg = self.probe(p.nonce, p.target, p.roles);
        let unconfirmed = p.unconfirmed.clone();
        let hold = self.config.link_retry_duration * u32::from(self.config.link_attempts.max(1));
        for e in unconfirmed {
            if self
                .probes
                .iter()
                .any(|r| r.endpoint == e && now < r.at + hold)
            {
                continue;
            }
            if self.probes.len() >= PROBE_ENTRIES
                && let Some((j, _)) = self.probes.iter().enumerate().min_by_key(|(_, r)| r.at)
            {
                self.probes.swap_remove(j);
            }
            self.probes.push(Probe {
                endpoint: e,
                at: now,
                answered: false,
            });
            self.send_maintenance(e, msg.clone());
        }
    }

    /// Sends the probe of pending link `i` to its trusted endpoints.
    fn send_trusted_probes(&mut self, i: usize) {
        let Some(p) = self.pending_links.get(i) else {
            return;
        };
        let msg = self.probe(p.nonce, p.target, p.roles);
        for e in p.endpoints.clone() {
            self.send_maintenance(e, msg.clone());
        }
    }

    /// Whether `e` is known to answer: a linked peer's endpoint or one
    /// that answered a probe.
    fn is_confirmed(&self, e: SocketAddr) -> bool {
        self.table.position_by_endpoint(e).is_some()
            || self.probes.iter().any(|r| r.endpoint == e && r.answered)
    }

    /// Links kept only because the peer asked for an untrimmable role.
    fn exempt_links(&self) -> usize {
        self.table
            .iter()
            .filter(|c| {
                c.mine.is_empty()
                    && (c.theirs.contains(Roles::NEAR)
                        || c.theirs.contains(Roles::LEAF)
                        || c.theirs.contains(Roles::DEMAND))
            })
            .count()
    }

    /// An authenticated peer reports our endpoint; raise it once confirmed.
    fn observe(&mut self, reporter: Address, endpoint: SocketAddr, trusted: bool) {
        let i = match self.observed.iter().position(|o| o.endpoint == endpoint) {
            Some(i) => i,
            None => {
                if self.observed.len() >= OBSERVED_ENTRIES {
                    self.observed.remove(0);
                }
                self.observed.push(Observed {
                    endpoint,
                    reporters: Vec::new(),
                    raised: false,
                });
                self.observed.len() - 1
            }
        };
        let need = self.config.observed_confirmations.max(1);
        let o = &mut self.observed[i];
        if !o.reporters.contains(&reporter) && o.reporters.len() < need {
            o.reporters.push(reporter);
        }
        if !o.raised && (trusted || o.reporters.len() >= need) {
            o.raised = true;
            self.events.push_back(Event::ObservedEndpoint { endpoint });
        }
    }

    fn set_joined(&mut self) {
        if !self.joined {
            self.joined = true;
            self.events.push_back(Event::Joined);
        }
    }

    fn try_bootstrap(&mut self, now: Instant) {
        if self.bootstrap.is_empty() {
            return;
        }
        let ep = self.bootstrap[self.bootstrap_next % self.bootstrap.len()];
        self.bootstrap_next = self.bootstrap_next.wrapping_add(1);
        let nonce = self.rng.next_u64();
        self.start_link(
            now,
            vec![ep],
            Vec::new(),
            Address::ZERO,
            Roles::LEAF,
            nonce,
            false,
        );
    }

    /// Starts a link attempt: `endpoints` are trusted (retried),
    /// `unconfirmed` were named by another node (probed once).
    #[allow(clippy::too_many_arguments)]
    fn start_link(
        &mut self,
        now: Instant,
        endpoints: Vec<SocketAddr>,
        unconfirmed: Vec<SocketAddr>,
        target: Address,
        roles: Roles,
        nonce: u64,
        for_peer: bool,
    ) {
        if target == self.address || (endpoints.is_empty() && unconfirmed.is_empty()) {
            return;
        }
        if target != Address::ZERO
            && self
                .pending_links
                .iter()
                .any(|p| p.target == target && p.nonce == nonce)
        {
            return;
        }
        if for_peer
            && self.pending_links.iter().filter(|p| p.for_peer).count()
                >= self.config.max_pending_links
        {
            return;
        }
        let (mut endpoints, mut unconfirmed) = (endpoints, unconfirmed);
        let (known, rest): (Vec<SocketAddr>, Vec<SocketAddr>) =
            unconfirmed.drain(..).partition(|e| self.is_confirmed(*e));
        for e in known {
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
        unconfirmed = rest;
        unconfirmed.dedup();
        unconfirmed.truncate(PROBES_PER_CONNECT);
        let deferred = self.config.defer_links_to_punch && target != Address::ZERO;
        if target != Address::ZERO {
            self.events.push_back(Event::LinkAttempt {
                peer: target,
                endpoints: endpoints.iter().chain(&unconfirmed).copied().collect(),
            });
        }
        self.pending_links.push(PendingLink {
            nonce,
            target,
            roles,
            endpoints,
            unconfirmed,
            answered: None,
            for_peer,
            attempts: if deferred { 0 } else { 1 },
            retry_at: now + self.config.link_retry_duration,
            deferred,
        });
        if !deferred {
            self.send_probes(now, self.pending_links.len() - 1, true);
        }
    }

    /// Refuses a link request (no proof, no endpoints: never larger than
    /// the request).
    fn refuse(&mut self, from: SocketAddr, req: &LinkRequest, status: LinkStatus, challenge: u64) {
        let msg = Message::LinkReply(LinkReply {
            nonce: req.nonce,
            challenge,
            sender: self.address,
            status,
            roles: req.roles,
            observed: from,
            endpoints: Vec::new(),
            identity: Vec::new(),
        });
        self.send_maintenance(from, msg);
    }

    fn on_link_request(&mut self, now: Instant, from: SocketAddr, req: LinkRequest) {
        if req.sender == self.address {
            return;
        }
        if req.target != Address::ZERO && req.target != self.address {
            self.refuse(from, &req, LinkStatus::WrongTarget, req.challenge);
            return;
        }
        let fresh = challenge_for(&self.challenge_keys[0], req.nonce, req.sender, from);
        let valid = req.challenge != 0
            && (req.challenge == fresh
                || req.challenge
                    == challenge_for(&self.challenge_keys[1], req.nonce, req.sender, from));
        if !valid {
            // A probe, or an answer to a challenge made for another
            // endpoint (a replay) or long ago: challenge it. Nothing is
            // stored and nothing moves.
            self.refuse(from, &req, LinkStatus::Challenge, fresh);
            return;
        }
        let transcript = Transcript {
            role: Role::Request,
            requester: req.sender,
            responder: self.address,
            nonce: req.nonce,
            challenge: req.challenge,
            roles: req.roles.0,
            requester_endpoint: from,
        };
        if let Err(error) = self.identity.verify(req.sender, &transcript, &req.identity) {
            self.events.push_back(Event::PeerRejected {
                peer: req.sender,
                endpoint: from,
                error,
            });
            self.refuse(from, &req, LinkStatus::IdentityRejected, req.challenge);
            return;
        }
        // Authenticated from here on.
        // A request answering our own ConnectToMe: we need this link.
        let ctm = self
            .pending_ctms
            .iter()
            .position(|p| p.nonce == req.nonce && p.roles == req.roles);
        if self.table.position(req.sender).is_none() && ctm.is_none() {
            let room = self.table.len() < self.max_connections();
            let must = req.roles.contains(Roles::NEAR)
                || req.roles.contains(Roles::LEAF)
                || req.roles.contains(Roles::DEMAND);
            if (!room && !must) || (must && self.exempt_links() >= self.config.max_exempt_links) {
                self.refuse(from, &req, LinkStatus::Full, req.challenge);
                return;
            }
        }
        self.replace_at_endpoint(now, from, req.sender);
        let existing = self.table.position(req.sender);
        let i = match existing {
            Some(i) => {
                if let Some(c) = self.table.get_mut(i) {
                    c.endpoint = from;
                    c.last_heard_at = now;
                }
                i
            }
            None => self.add_connection(now, req.sender, from),
        };
        if let Some(c) = self.table.get_mut(i) {
            if ctm.is_some() {
                c.mine = c.mine.with(req.roles);
                if req.roles.contains(Roles::SHORTCUT) {
                    c.shortcut_size = self.size_estimate as u32;
                }
            } else {
                c.theirs = c.theirs.with(req.roles);
            }
        }
        if let Some(p) = ctm {
            let pc = self.pending_ctms.swap_remove(p);
            if Some(pc.nonce) == self.join_nonce {
                self.set_joined();
            }
        }
        let proof = self.identity.prove(&Transcript {
            role: Role::Reply,
            ..transcript
        });
        let msg = Message::LinkReply(LinkReply {
            nonce: req.nonce,
            challenge: req.challenge,
            sender: self.address,
            status: LinkStatus::Accepted,
            roles: req.roles,
            observed: from,
            endpoints: self.my_endpoints(),
            identity: proof,
        });
        self.send_maintenance(from, msg);
        if existing.is_none() {
            self.after_new_connection(now, i);
        }
    }

    /// One link per endpoint: a node other than `peer` that held
    /// `endpoint` is gone (`peer` just authenticated from there).
    fn replace_at_endpoint(&mut self, now: Instant, endpoint: SocketAddr, peer: Address) {
        if let Some(j) = self.table.position_by_endpoint(endpoint)
            && self.table.get(j).is_some_and(|c| c.address != peer)
        {
            self.drop_connection(now, j, DisconnectReason::Replaced);
        }
    }

    fn on_link_reply(&mut self, now: Instant, from: SocketAddr, rep: LinkReply) {
        if rep.sender == self.address {
            return;
        }
        let Some(p) = self.pending_links.iter().position(|p| {
            p.nonce == rep.nonce && (p.target == Address::ZERO || p.target == rep.sender)
        }) else {
            return;
        };
        match rep.status {
            LinkStatus::Challenge => {
                let pl = &mut self.pending_links[p];
                // Only the first endpoint that answers, and each challenge
                // once (a duplicate is not answered again: the retry timer
                // resends).
                if rep.challenge == 0
                    || pl
                        .answered
                        .is_some_and(|a| a.endpoint != from || a.challenge == rep.challenge)
                {
                    return;
                }
                let a = Answered {
                    endpoint: from,
                    responder: rep.sender,
                    challenge: rep.challenge,
                    observed: rep.observed,
                };
                pl.answered = Some(a);
                let (nonce, roles) = (pl.nonce, pl.roles);
                // The endpoint answered our probe: it is reachable.
                if let Some(r) = self.probes.iter_mut().find(|r| r.endpoint == from) {
                    r.answered = true;
                }
                let msg = self.answer(nonce, roles, a);
                self.send_maintenance(from, msg);
            }
            LinkStatus::Accepted => self.on_link_accepted(now, from, p, rep),
            status => {
                // Not authenticated, but bound to our fresh nonce.
                self.pending_links.swap_remove(p);
                if status == LinkStatus::IdentityRejected {
                    self.events.push_back(Event::LinkRefused {
                        peer: rep.sender,
                        endpoint: from,
                        status,
                    });
                }
                // A refused leaf link: the next tick tries the next
                // bootstrap (no tight retry loop against a full or closed
                // node).
            }
        }
    }

    fn on_link_accepted(&mut self, now: Instant, from: SocketAddr, p: usize, rep: LinkReply) {
        let Some(a) = self.pending_links[p].answered else {
            return;
        };
        if a.endpoint != from || a.responder != rep.sender || a.challenge != rep.challenge {
            return;
        }
        let transcript = Transcript {
            role: Role::Reply,
            requester: self.address,
            responder: rep.sender,
            nonce: rep.nonce,
            challenge: rep.challenge,
            roles: self.pending_links[p].roles.0,
            requester_endpoint: a.observed,
        };
        if let Err(error) = self.identity.verify(rep.sender, &transcript, &rep.identity) {
            self.events.push_back(Event::PeerRejected {
                peer: rep.sender,
                endpoint: from,
                error,
            });
            return;
        }
        let pl = self.pending_links.swap_remove(p);
        // The link's endpoint is known to answer from now on.
        self.probes.retain(|r| r.endpoint != from);
        let joined_through = pl.roles.contains(Roles::LEAF) && pl.target == Address::ZERO;
        self.observe(rep.sender, a.observed, joined_through);
        if self.table.position(rep.sender).is_none()
            && self.table.len() >= self.max_connections()
            && !(pl.roles.contains(Roles::NEAR) || pl.roles.contains(Roles::LEAF))
            && !pl.for_peer
        {
            self.send_maintenance(
                from,
                Message::Close {
                    reason: CloseReason::Full,
                },
            );
            return;
        }
        self.replace_at_endpoint(now, from, rep.sender);
        let existing = self.table.position(rep.sender);
        let i = match existing {
            Some(i) => {
                if let Some(c) = self.table.get_mut(i) {
                    c.endpoint = from;
                }
                i
            }
            None => self.add_connection(now, rep.sender, from),
        };
        let size = self.size_estimate as u32;
        if let Some(c) = self.table.get_mut(i) {
            if pl.for_peer {
                c.theirs = c.theirs.with(pl.roles);
            } else {
                c.mine = c.mine.with(pl.roles);
                if pl.roles.contains(Roles::SHORTCUT) {
                    c.shortcut_size = size;
                }
            }
        }
        if pl.roles.contains(Roles::LEAF) && !self.joined {
            self.send_join_ctm(now);
        }
        if existing.is_none() {
            self.after_new_connection(now, i);
        }
    }

    fn send_join_ctm(&mut self, now: Instant) {
        let nonce = self.rng.next_u64();
        self.join_nonce = Some(nonce);
        self.join_sent_at = Some(now);
        self.send_ctm(now, self.address, Mode::ClosestOther, Roles::NEAR, nonce);
    }

    fn send_ctm(
        &mut self,
        now: Instant,
        destination: Address,
        mode: Mode,
        roles: Roles,
        nonce: u64,
    ) {
        self.send_ctm_via(now, destination, mode, roles, nonce, None);
    }

    fn send_ctm_via(
        &mut self,
        now: Instant,
        destination: Address,
        mode: Mode,
        roles: Roles,
        nonce: u64,
        via: Option<usize>,
    ) {
        self.pending_ctms.push(PendingCtm {
            nonce,
            roles,
            target: destination.prefix(),
            expires_at: now + self.config.link_retry_duration * 5,
        });
        let payload = Payload::ConnectToMe {
            roles,
            nonce,
            endpoints: self.my_endpoints(),
        };
        let msg = self.routed(destination, mode, payload);
        self.stats.maintenance_sent += 1;
        match via {
            Some(i) if i < self.table.len() => self.forward(now, i, None, msg),
            _ => self.route(now, None, msg),
        }
    }

    fn add_connection(&mut self, now: Instant, address: Address, endpoint: SocketAddr) -> usize {
        self.lost.retain(|l| l.address != address);
        let i = self.table.push(Connection::new(address, endpoint, now));
        self.events.push_back(Event::Connected { peer: address });
        i
    }

    fn after_new_connection(&mut self, now: Instant, i: usize) {
        if self
            .table
            .update_near(self.address, self.config.near_per_side)
        {
            self.near_changed_at = now;
        }
        self.neighbors_dirty = true;
        // Give the new peer our list right away: it needs it to find its
        // other neighbours.
        if let Some(c) = self.table.get(i) {
            let ep = c.endpoint;
            let addr = c.address;
            let near = c.mine.contains(Roles::NEAR);
            let list = self.neighbor_list();
            self.stats.neighbor_lists_sent += 1;
            self.send_maintenance(ep, list);
            if near {
                self.handoff_to(now, addr, ep);
            }
        }
        self.enforce_limit(now);
    }

    fn neighbor_list(&self) -> Message {
        Message::Neighbors {
            size_estimate: self.size_estimate.min(f64::from(u32::MAX)) as u32,
            neighbors: self
                .table
                .iter()
                .map(|c| Neighbor {
                    address: c.address,
                    roles: c.mine,
                })
                .collect(),
        }
    }

    fn on_neighbors(&mut self, now: Instant, i: usize, size_estimate: u32, list: &[Neighbor]) {
        let me = self.address;
        if let Some(c) = self.table.get_mut(i) {
            c.size_estimate = size_estimate;
            c.theirs = list
                .iter()
                .find(|n| n.address == me)
                .map_or(Roles::NONE, |n| n.roles);
            c.lookahead = list.iter().map(|n| n.address.prefix()).collect();
        }
        self.discover_near(now, &[]);
    }

    /// Looks for nodes nearer than the current near links among everything
    /// known (lookahead lists and `extra`), and asks them to connect.
    fn discover_near(&mut self, now: Instant, extra: &[u64]) {
        let per_side = self.config.near_per_side;
        let me = self.address.prefix();
        // The per_side-th nearest connected distance on each side.
        let mut right: Vec<u64> = self
            .table
            .iter()
            .map(|c| c.address.prefix().wrapping_sub(me))
            .collect();
        let mut left: Vec<u64> = self
            .table
            .iter()
            .map(|c| me.wrapping_sub(c.address.prefix()))
            .collect();
        right.sort_unstable();
        left.sort_unstable();
        let rbound = right.get(per_side - 1).copied().unwrap_or(u64::MAX);
        let lbound = left.get(per_side - 1).copied().unwrap_or(u64::MAX);
        // (candidate, index of the link whose list named it)
        let mut want: Vec<(u64, Option<usize>)> = Vec::new();
        let known = self
            .table
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.lookahead.iter().map(move |&q| (q, Some(i))))
            .chain(extra.iter().map(|&q| (q, None)));
        for (q, via) in known {
            if q == me {
                continue;
            }
            let r = q.wrapping_sub(me);
            let l = me.wrapping_sub(q);
            if (r < rbound || l < lbound)
                && !want.iter().any(|w| w.0 == q)
                && !self.table.iter().any(|c| c.address.prefix() == q)
            {
                want.push((q, via));
            }
        }
        // Only the nearest candidates.
        want.sort_unstable_by_key(|&(q, _)| q.wrapping_sub(me).min(me.wrapping_sub(q)));
        want.truncate(2 * per_side);
        for (q, via) in want {
            if self
                .pending_ctms
                .iter()
                .any(|p| p.target == q && p.roles == Roles::NEAR)
            {
                continue;
            }
            let nonce = self.rng.next_u64();
            // Send it through the peer that listed the candidate: that peer
            // holds a link to it, so the request arrives even where greedy
            // routing would stall in a ring still being built.
            self.send_ctm_via(
                now,
                Address::from_prefix(q),
                Mode::Closest,
                Roles::NEAR,
                nonce,
                via,
            );
        }
    }

    fn drop_connection(&mut self, now: Instant, i: usize, reason: DisconnectReason) {
        if i >= self.table.len() {
            return;
        }
        let c = self.table.remove(i);
        let was_near = c.mine.contains(Roles::NEAR);
        if was_near && reason == DisconnectReason::Timeout {
            self.lost.retain(|l| l.address != c.address);
            self.lost.push(Lost {
                address: c.address,
                endpoint: c.endpoint,
                lost_at: now,
                retry_at: now + self.config.lost_retry_duration,
            });
        }
        self.events.push_back(Event::Disconnected {
            peer: c.address,
            reason,
        });
        if self
            .table
            .update_near(self.address, self.config.near_per_side)
            || was_near
        {
            self.near_changed_at = now;
        }
        self.neighbors_dirty = true;
        if was_near {
            let extra: Vec<u64> = c
                .lookahead
                .iter()
                .copied()
                .filter(|&q| q != c.address.prefix())
                .collect();
            self.discover_near(now, &extra);
            // Records this node held as a replica may now be ours to serve.
            self.republish(now, false);
        }
    }

    fn enforce_limit(&mut self, now: Instant) {
        let limit = self.max_connections();
        while self.table.len() > limit {
            // Prefer closing a link only the peer needs as a shortcut,
            // then one of our own shortcuts; never a near or leaf link.
            let victim = self
                .table
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    c.mine.is_empty()
                        && !c.theirs.contains(Roles::NEAR)
                        && !c.theirs.contains(Roles::LEAF)
                        && !c.theirs.contains(Roles::DEMAND)
                })
                .max_by_key(|(_, c)| c.established_at)
                .or_else(|| {
                    self.table
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| {
                            c.mine == Roles::SHORTCUT
                                && !c.theirs.contains(Roles::NEAR)
                                && !c.theirs.contains(Roles::LEAF)
                        })
                        .max_by_key(|(_, c)| c.established_at)
                })
                .map(|(i, _)| i);
            let Some(v) = victim else { break };
            let ep = self.table.get(v).map(|c| c.endpoint);
            if let Some(ep) = ep {
                self.send_maintenance(
                    ep,
                    Message::Close {
                        reason: CloseReason::Full,
                    },
                );
            }
            self.drop_connection(now, v, DisconnectReason::Trimmed);
        }
    }

    fn request(
        &mut self,
        now: Instant,
        id: u64,
        kind: RequestKind,
        destination: Address,
        mode: Mode,
        payload: Payload,
    ) -> Result<(), NodeError> {
        if self.left {
            return Err(NodeError::Left);
        }
        self.requests.push(PendingRequest {
            id,
            kind,
            destination,
            mode,
            payload: payload.clone(),
            attempts: 1,
            retry_at: now + self.config.request_timeout,
        });
        let msg = self.routed(destination, mode, payload);
        self.route(now, None, msg);
        Ok(())
    }

    fn dht_request(
        &mut self,
        now: Instant,
        op: DhtOp,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<u64, NodeError> {
        if key.len() > MAX_KEY_LEN {
            return Err(NodeError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(NodeError::ValueTooLong {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        if self.left {
            return Err(NodeError::Left);
        }
        let request = if op == DhtOp::Get {
            DhtRequest::Get { key: key.to_vec() }
        } else {
            let lifetime_secs =
                u32::try_from(ttl.min(self.config.dht_max_ttl).as_secs()).unwrap_or(u32::MAX);
            let credential = core::mem::take(&mut self.credential);
            let record = crate::record::sign(self.signer(), key, value, lifetime_secs, &credential);
            self.credential = credential;
            let record = record.ok_or(NodeError::SignerFailed)?;
            if op == DhtOp::Put {
                DhtRequest::Put(record)
            } else {
                DhtRequest::Create(record)
            }
        };
        let id = self.fresh_id();
        self.request(
            now,
            id,
            RequestKind::Dht(op),
            Address::from_key(key),
            Mode::Closest,
            Payload::DhtRequest {
                id,
                request: Box::new(request),
            },
        )?;
        Ok(id)
    }

    /// Forwards or delivers a routed message. `previous` is the link it
    /// arrived on.
    fn route(&mut self, now: Instant, previous: Option<usize>, msg: Routed) {
        let hop = next_hop(
            self.address,
            &self.table,
            msg.source,
            msg.destination,
            msg.mode,
            previous,
            self.config.lookahead,
        );
        match hop {
            NextHop::Local => self.deliver(now, msg),
            NextHop::NotFound => self.drop_routed(msg, DropReason::NotFound),
            NextHop::Forward(i) => self.forward(now, i, previous, msg),
        }
    }

    /// Sends a routed message on link `i`.
    fn forward(&mut self, now: Instant, i: usize, previous: Option<usize>, mut msg: Routed) {
        if msg.hops >= msg.hop_limit {
            self.drop_routed(msg, DropReason::HopLimit);
            return;
        }
        msg.hops += 1;
        if previous.is_some() {
            self.stats.forwarded += 1;
        }
        let Some(c) = self.table.get_mut(i) else {
            Message::Routed(msg).recycle_into(&mut self.pool);
            return;
        };
        if c.unanswered_since.is_none() {
            c.unanswered_since = Some(now);
        }
        let ep = c.endpoint;
        let next = c.address;
        if self.config.forward_events && previous.is_some() {
            self.events.push_back(Event::Forwarded {
                destination: msg.destination,
                next_hop: next,
            });
        }
        self.transmits.push_back(Transmit {
            destination: ep,
            message: Message::Routed(msg),
        });
    }

    fn drop_routed(&mut self, msg: Routed, reason: DropReason) {
        let reason = if self.table.is_empty() && reason == DropReason::NotFound {
            DropReason::NoRoute
        } else {
            reason
        };
        self.stats.dropped += 1;
        self.events.push_back(Event::Dropped {
            source: msg.source,
            destination: msg.destination,
            reason,
        });
        Message::Routed(msg).recycle_into(&mut self.pool);
    }

    fn deliver(&mut self, now: Instant, msg: Routed) {
        match msg.payload {
            Payload::Data(payload) => {
                self.count_demand(now, msg.source);
                self.events.push_back(Event::Delivered {
                    source: msg.source,
                    hops: msg.hops,
                    payload,
                });
            }
            Payload::ConnectToMe {
                roles,
                nonce,
                endpoints,
            } => self.on_connect_to_me(now, msg.source, roles, nonce, endpoints),
            Payload::EchoRequest { id } => {
                if msg.source == self.address {
                    self.finish_echo(id, self.address, 0);
                    return;
                }
                let reply = self.routed(
                    msg.source,
                    Mode::Exact,
                    Payload::EchoReply {
                        id,
                        request_hops: msg.hops,
                    },
                );
                self.route(now, None, reply);
            }
            Payload::EchoReply { id, request_hops } => {
                self.finish_echo(id, msg.source, request_hops)
            }
            Payload::DhtRequest { id, request } => {
                self.on_dht_request(now, msg.source, msg.hops, id, request)
            }
            Payload::DhtReply {
                id,
                status,
                records,
            } => self.finish_dht(now, id, msg.source, status, records),
        }
    }

    fn on_dht_request(
        &mut self,
        now: Instant,
        source: Address,
        hops: u8,
        id: u64,
        request: Box<DhtRequest>,
    ) {
        if let DhtRequest::Put(r) | DhtRequest::Create(r) = &*request
            && !self.admit(now, PolicyStage::Store, r)
        {
            self.reply_dht(now, source, id, DhtStatus::Rejected, Vec::new());
            return;
        }
        let op = request.op();
        let wait = op != DhtOp::Put
            && !self.dht.contains(now, request.key())
            && (op == DhtOp::Create
                || now < self.near_changed_at + self.config.dht_settle_duration);
        if !wait {
            let (status, records) = self.serve_dht(now, &request);
            self.reply_dht(now, source, id, status, records);
            return;
        }
        // Decide later: once the near set has been stable for a while (so
        // handoffs from the previous responsible node have arrived) and,
        // for creates, after concurrent creates have queued up.
        if self
            .pending_dht
            .iter()
            .any(|p| p.source == source && p.id == id)
        {
            return;
        }
        let from_source = self
            .pending_dht
            .iter()
            .filter(|p| p.source == source)
            .count();
        if from_source >= self.config.dht_max_pending_per_peer
            || self.pending_dht.len() >= self.config.dht_max_pending
        {
            self.stats.dht_requests_refused += 1;
            self.reply_dht(now, source, id, DhtStatus::QuotaExceeded, Vec::new());
            return;
        }
        let settle = self.config.dht_settle_duration;
        let hold = if op == DhtOp::Create {
            settle / 4
        } else {
            Duration::ZERO
        };
        self.pending_dht.push(PendingDht {
            source,
            id,
            request,
            hops,
            decide_at: (now + hold).max(self.near_changed_at + settle),
        });
    }

    /// An echo reply counts only from the node the echo went to.
    fn finish_echo(&mut self, id: u64, from: Address, hops: u8) {
        match self.requests.iter().position(|r| {
            r.id == id && matches!(r.kind, RequestKind::Echo) && r.destination == from
        }) {
            Some(p) => {
                self.requests.swap_remove(p);
                self.events.push_back(Event::EchoReply { id, hops });
            }
            None => self.stats.unmatched_replies += 1,
        }
    }

    /// A DHT reply counts only if it names one of our pending DHT
    /// requests (ids are random). The responder of a closest-mode request
    /// is not known in advance, so any node may answer; its records are
    /// believed only if they are for the key asked, correctly signed and
    /// accepted by the record policy.
    fn finish_dht(
        &mut self,
        now: Instant,
        id: u64,
        from: Address,
        status: DhtStatus,
        records: Vec<Record>,
    ) {
        let Some(p) = self
            .requests
            .iter()
            .position(|r| r.id == id && matches!(r.kind, RequestKind::Dht(_)))
        else {
            self.stats.unmatched_replies += 1;
            return;
        };
        let pending = self.requests.swap_remove(p);
        let RequestKind::Dht(op) = pending.kind else {
            return;
        };
        let key = match &pending.payload {
            Payload::DhtRequest { request, .. } => request.key(),
            _ => &[][..],
        };
        let mut kept = Vec::with_capacity(records.len());
        for r in records {
            if r.key != key {
                self.stats.records_rejected.count(RecordRejection::WrongKey);
            } else if from == self.address {
                // From our own store: verified when stored.
                if self.policy.0.accept(now, PolicyStage::Read, &r) {
                    kept.push(r);
                } else {
                    self.stats.records_rejected.count(RecordRejection::Policy);
                }
            } else if self.admit(now, PolicyStage::Read, &r) {
                kept.push(r);
            }
        }
        let values = || kept.iter().map(|r| r.value.clone()).collect();
        let outcome = match status {
            DhtStatus::Ok => DhtOutcome::Ok(values()),
            DhtStatus::Exists => DhtOutcome::Exists(values()),
            DhtStatus::Full => DhtOutcome::Full,
            DhtStatus::Rejected => DhtOutcome::Rejected,
            DhtStatus::Stale => DhtOutcome::Stale,
            DhtStatus::QuotaExceeded => DhtOutcome::QuotaExceeded,
        };
        self.events.push_back(Event::Dht {
            id,
            op,
            outcome,
            records: kept,
        });
    }

    fn reply_dht(
        &mut self,
        now: Instant,
        source: Address,
        id: u64,
        status: DhtStatus,
        records: Vec<Record>,
    ) {
        if source == self.address {
            self.finish_dht(now, id, source, status, records);
        } else {
            let reply = Payload::DhtReply {
                id,
                status,
                records,
            };
            let r = self.routed(source, Mode::Exact, reply);
            self.route(now, None, r);
        }
    }

    /// Decides queued create-if-absent requests (and gets that found
    /// nothing while the near set was changing) that are due, in arrival
    /// order: re-routes them if a nearer node has appeared, else the first
    /// create wins and the rest learn the winning value.
    fn decide_pending_dht(&mut self, now: Instant) {
        if self.pending_dht.iter().all(|p| p.decide_at > now) {
            return;
        }
        let (due, rest): (Vec<PendingDht>, Vec<PendingDht>) =
            self.pending_dht.drain(..).partition(|p| p.decide_at <= now);
        self.pending_dht = rest;
        for p in due {
            let ka = Address::from_key(p.request.key());
            let mine = self.address.distance_to(ka);
            let nearer = self.table.iter().any(|c| c.address.distance_to(ka) < mine);
            if nearer && !self.dht.contains(now, p.request.key()) {
                // No longer responsible: pass it on toward the key.
                let msg = Routed {
                    source: p.source,
                    destination: ka,
                    mode: Mode::Closest,
                    hops: p.hops,
                    hop_limit: self.config.hop_limit,
                    payload: Payload::DhtRequest {
                        id: p.id,
                        request: p.request,
                    },
                };
                self.route(now, None, msg);
                continue;
            }
            let (status, records) = self.serve_dht(now, &p.request);
            self.reply_dht(now, p.source, p.id, status, records);
        }
    }

    /// Serves a request whose record (if any) has been verified and
    /// accepted by the policy.
    fn serve_dht(&mut self, now: Instant, request: &DhtRequest) -> (DhtStatus, Vec<Record>) {
        let record = match request {
            DhtRequest::Get { key } => return (DhtStatus::Ok, self.dht.get(now, key)),
            DhtRequest::Put(r) => r,
            DhtRequest::Create(r) => {
                // A create loses to a live slot of another writer, unless
                // the creator already holds a slot (a retried winner, or an
                // update of its own claim).
                let own = self
                    .dht
                    .slots(&r.key)
                    .iter()
                    .any(|s| s.expires_at > now && s.record.writer == r.writer);
                if !own && self.dht.held_by_other(now, &r.key, &r.writer) {
                    return (DhtStatus::Exists, self.dht.get(now, &r.key));
                }
                r
            }
        };
        let ttl = Duration::from_secs(record.lifetime_secs.into()).min(self.config.dht_max_ttl);
        match self.dht.insert(now, record, ttl) {
            Ok(_) => {
                self.replicate(now, &record.key);
                (DhtStatus::Ok, Vec::new())
            }
            Err(e) => {
                self.stats.records_rejected.count(e);
                let status = match e {
                    RecordRejection::Stale => DhtStatus::Stale,
                    RecordRejection::Full => DhtStatus::Full,
                    RecordRejection::Quota => DhtStatus::QuotaExceeded,
                    _ => DhtStatus::Rejected,
                };
                (status, Vec::new())
            }
        }
    }

    /// Links nearest to `key` that should hold replicas.
    fn replica_links(&self, key: &[u8]) -> Vec<usize> {
        let ka = Address::from_key(key);
        let mut v: Vec<(Distance, usize)> = self
            .table
            .iter()
            .enumerate()
            .filter(|(_, c)| c.mine.contains(Roles::NEAR))
            .map(|(i, c)| (c.address.distance_to(ka), i))
            .collect();
        v.sort_unstable();
        v.into_iter()
            .take(self.config.dht_replicas.saturating_sub(1))
            .map(|(_, i)| i)
            .collect()
    }

    fn replicate(&mut self, now: Instant, key: &[u8]) {
        let records = self.dht.replicas(now, key);
        if records.is_empty() {
            return;
        }
        for i in self.replica_links(key) {
            if let Some(c) = self.table.get(i) {
                let ep = c.endpoint;
                self.push_replicas(ep, &records);
            }
        }
    }

    /// Pushes to a new near neighbour the records it should now hold.
    fn handoff_to(&mut self, now: Instant, peer: Address, endpoint: SocketAddr) {
        if self.dht.is_empty() {
            return;
        }
        let keys: Vec<Vec<u8>> = self.dht.keys().cloned().collect();
        let mut out = Vec::new();
        for k in keys {
            let targets = self.replica_links(&k);
            let ka = Address::from_key(&k);
            let peer_is_replica = targets
                .iter()
                .any(|&i| self.table.get(i).is_some_and(|c| c.address == peer))
                || peer.distance_to(ka) < self.address.distance_to(ka);
            if peer_is_replica {
                out.extend(self.dht.replicas(now, &k));
            }
        }
        self.push_replicas(endpoint, &out);
    }

    /// Re-sends the records this node is responsible for to their replica
    /// set (all of them when `all`, else only keys nearest this node).
    fn republish(&mut self, now: Instant, all: bool) {
        self.dht.expire(now);
        if self.dht.is_empty() {
            return;
        }
        let keys: Vec<Vec<u8>> = self.dht.keys().cloned().collect();
        let mut per_peer: Vec<(SocketAddr, Vec<Replica>)> = Vec::new();
        for k in keys {
            let ka = Address::from_key(&k);
            let mine = self.address.distance_to(ka);
            let responsible = self.table.iter().all(|c| c.address.distance_to(ka) >= mine);
            if !responsible && !all {
                continue;
            }
            if !responsible {
                continue;
            }
            let records = self.dht.replicas(now, &k);
            for i in self.replica_links(&k) {
                let Some(c) = self.table.get(i) else { continue };
                match per_peer.iter_mut().find(|(e, _)| *e == c.endpoint) {
                    Some((_, v)) => v.extend(records.iter().cloned()),
                    None => per_peer.push((c.endpoint, records.clone())),
                }
            }
        }
        for (ep, records) in per_peer {
            self.push_replicas(ep, &records);
        }
    }

    fn on_connect_to_me(
        &mut self,
        now: Instant,
        source: Address,
        roles: Roles,
        nonce: u64,
        endpoints: Vec<SocketAddr>,
    ) {
        if source == self.address {
            return;
        }
        let connected = self.table.position(source);
        if roles.contains(Roles::SHORTCUT)
            && connected.is_none()
            && self.table.len() >= self.max_connections()
        {
            return;
        }
        // Endpoints the (unauthenticated) requester named are probed once
        // before anything else is sent there.
        let (trusted, named) = match connected.and_then(|i| self.table.get(i)) {
            Some(c) => (vec![c.endpoint], Vec::new()),
            None => (Vec::new(), endpoints),
        };
        self.start_link(now, trusted, named, source, roles, nonce, true);
    }

    fn count_demand(&mut self, now: Instant, peer: Address) {
        if self.config.demand_threshold == 0 || peer == self.address {
            return;
        }
        if self
            .table
            .position(peer)
            .is_some_and(|i| self.table.get(i).is_some_and(|c| !c.mine.is_empty()))
        {
            return;
        }
        let window = self.config.demand_window_duration;
        let entry = match self.demand.iter().position(|d| d.peer == peer) {
            Some(i) => i,
            None => {
                if self.demand.capacity() == 0 {
                    // One allocation for the whole table, on first use.
                    self.demand.reserve_exact(DEMAND_ENTRIES);
                }
                if self.demand.len() >= DEMAND_ENTRIES {
                    // Forget the stalest entry.
                    if let Some((i, _)) = self
                        .demand
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, d)| d.window_start)
                    {
                        self.demand.swap_remove(i);
                    }
                }
                self.demand.push(Demand {
                    peer,
                    count: 0,
                    window_start: now,
                    requested: false,
                });
                self.demand.len() - 1
            }
        };
        let d = &mut self.demand[entry];
        if now.saturating_duration_since(d.window_start) > window {
            d.window_start = now;
            d.count = 0;
            d.requested = false;
        }
        d.count += 1;
        if d.count >= self.config.demand_threshold && !d.requested {
            d.requested = true;
            self.events.push_back(Event::DemandShortcut { peer });
            let nonce = self.rng.next_u64();
            self.send_ctm(now, peer, Mode::Exact, Roles::DEMAND, nonce);
        }
    }

    fn tick(&mut self, now: Instant) {
        self.update_size_estimate();
        self.check_links(now);
        self.retry_links(now);
        self.retry_requests(now);
        self.decide_pending_dht(now);
        self.pending_ctms.retain(|p| p.expires_at > now);
        if now >= self.challenge_rotate_at {
            self.challenge_rotate_at = now + self.config.challenge_rotation_duration;
            self.challenge_keys[1] = self.challenge_keys[0].clone();
            self.challenge_keys[0] = challenge_key(&mut self.rng);
        }

        // Joining: resend the ConnectToMe, or fall back to the next bootstrap.
        if !self.joined && !self.bootstrap.is_empty() {
            let has_leaf = self.table.iter().any(|c| c.mine.contains(Roles::LEAF));
            let stale = self
                .join_sent_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.request_timeout);
            if has_leaf && stale {
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
    }

    /// Local estimate averaged with the peers' gossiped estimates, so that
    /// all nodes converge on nearly the same figure.
    fn update_size_estimate(&mut self) {
        let local = self.table.estimate_size(self.address);
        let peers: Vec<f64> = self
            .table
            .iter()
            .filter(|c| c.size_estimate > 0)
            .map(|c| f64::from(c.size_estimate))
            .collect();
        self.size_estimate = if peers.is_empty() {
            local
        } else {
            let mean = peers.iter().sum::<f64>() / peers.len() as f64;
            0.25 * local + 0.75 * mean
        };
    }

    fn upkeep(&mut self, now: Instant) {
        // Near check: find our ring neighbours by routing to our own address.
        let per_side = self.config.near_per_side;
        let right = self.table.nearest_side(self.address, true, per_side).len();
        let left = self.table.nearest_side(self.address, false, per_side).len();
        if now >= self.near_check_at || (right.min(left) < per_side && self.table.len() > 1) {
            let period = if right.min(left) < per_side {
                self.config.near_check_duration / 6
            } else {
                self.config.near_check_duration
            };
            self.near_check_at = now + period;
            let nonce = self.rng.next_u64();
            if !self
                .pending_ctms
                .iter()
                .any(|p| p.target == self.address.prefix())
            {
                self.send_ctm(now, self.address, Mode::ClosestOther, Roles::NEAR, nonce);
            }
            self.discover_near(now, &[]);
        }

        // Leaf links are only for joining.
        let grace = self.config.unneeded_grace_duration;
        let has_near = self.table.iter().any(|c| c.mine.contains(Roles::NEAR));
        for c in self.table.iter_mut() {
            if c.mine.contains(Roles::LEAF) && has_near {
                c.mine = c.mine.without(Roles::LEAF);
                self.neighbors_dirty = true;
            }
        }

        // Shortcuts.
        if now >= self.shortcut_check_at {
            self.shortcut_check_at = now + self.config.shortcut_check_duration;
            let size = self.size_estimate;
            // Replace one shortcut drawn for a much smaller ring.
            if let Some(c) = self.table.iter_mut().find(|c| {
                c.mine.contains(Roles::SHORTCUT) && f64::from(c.shortcut_size) * 2.0 < size
            }) {
                c.mine = c.mine.without(Roles::SHORTCUT);
                self.neighbors_dirty = true;
            }
            let have = self
                .table
                .iter()
                .filter(|c| c.mine.contains(Roles::SHORTCUT))
                .count();
            let pending = self.pending_ctms.iter().any(|p| p.roles == Roles::SHORTCUT);
            if have < self.target_shortcuts() && !pending && size >= 8.0 {
                let target = self.draw_shortcut(size);
                let nonce = self.rng.next_u64();
                self.send_ctm(now, target, Mode::Closest, Roles::SHORTCUT, nonce);
            }
        }

        // Demand links whose traffic stopped.
        let window = self.config.demand_window_duration;
        self.demand
            .retain(|d| now.saturating_duration_since(d.window_start) <= window * 6);
        let demand = &self.demand;
        for c in self.table.iter_mut() {
            if c.mine.contains(Roles::DEMAND) && !demand.iter().any(|d| d.peer == c.address) {
                c.mine = c.mine.without(Roles::DEMAND);
                self.neighbors_dirty = true;
            }
        }

        // Close links neither side needs.
        let unneeded: Vec<usize> = self
            .table
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                !c.needed() && now.saturating_duration_since(c.established_at) >= grace
            })
            .map(|(i, _)| i)
            .collect();
        for i in unneeded.into_iter().rev() {
            if let Some(ep) = self.table.get(i).map(|c| c.endpoint) {
                self.send_maintenance(
                    ep,
                    Message::Close {
                        reason: CloseReason::Unneeded,
                    },
                );
            }
            self.drop_connection(now, i, DisconnectReason::Trimmed);
        }
        self.enforce_limit(now);

        // Lost near neighbours: retry directly (heals partitions).
        let memory = self.config.lost_memory_duration;
        self.lost
            .retain(|l| now.saturating_duration_since(l.lost_at) < memory);
        let retry = self.config.lost_retry_duration;
        let mut due = Vec::new();
        for l in self.lost.iter_mut() {
            if l.retry_at <= now {
                l.retry_at = now + retry;
                due.push((l.address, l.endpoint));
            }
        }
        for (address, endpoint) in due {
            let nonce = self.rng.next_u64();
            let msg = self.probe(nonce, address, Roles::NEAR);
            self.send_maintenance(endpoint, msg);
            self.pending_links.push(PendingLink {
                nonce,
                target: address,
                roles: Roles::NEAR,
                endpoints: vec![endpoint],
                unconfirmed: Vec::new(),
                answered: None,
                for_peer: false,
                attempts: self.config.link_attempts,
                retry_at: now + self.config.link_retry_duration,
                deferred: false,
            });
        }

        if now >= self.republish_at {
            self.republish_at = now + self.config.dht_republish_duration;
            self.republish(now, true);
        }
    }

    /// A shortcut target drawn from the harmonic distribution of Symphony:
    /// distance `n^(u-1)` of the ring, in a random direction.
    fn draw_shortcut(&mut self, size: f64) -> Address {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let fraction = (size.ln() * (u - 1.0)).exp().min(0.5);
        let d = Distance::from_fraction(fraction);
        if self.rng.next_u32() & 1 == 0 {
            self.address + d
        } else {
            self.address - d
        }
    }

    fn check_links(&mut self, now: Instant) {
        let mut dead = Vec::new();
        let mut pings = Vec::new();
        for (i, c) in self.table.iter_mut().enumerate() {
            let silent = now.saturating_duration_since(c.last_heard_at);
            let suspect = c
                .unanswered_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.config.suspect_timeout);
            if silent >= self.config.idle_timeout || suspect {
                dead.push(i);
                continue;
            }
            let since_ping = now.saturating_duration_since(c.last_ping_at);
            let probe = c.unanswered_since.is_some_and(|t| t < now)
                && since_ping >= self.config.tick_duration;
            if (silent >= self.config.keepalive_duration
                && since_ping >= self.config.keepalive_duration / 3)
                || probe
            {
                c.last_ping_at = now;
                if c.unanswered_since.is_none() {
                    c.unanswered_since = Some(now);
                }
                pings.push(c.endpoint);
            }
        }
        for ep in pings {
            let nonce = self.rng.next_u64();
            self.send_maintenance(
                ep,
                Message::Ping {
                    sender: self.address,
                    nonce,
                },
            );
        }
        for i in dead.into_iter().rev() {
            self.drop_connection(now, i, DisconnectReason::Timeout);
        }
    }

    fn retry_links(&mut self, now: Instant) {
        let mut sends = Vec::new();
        let attempts = self.config.link_attempts;
        let retry = self.config.link_retry_duration;
        let mut failed_leaf = false;
        self.pending_links.retain_mut(|p| {
            if p.retry_at > now {
                return true;
            }
            if p.attempts >= attempts {
                failed_leaf |= p.roles.contains(Roles::LEAF);
                return false;
            }
            p.attempts += 1;
            p.retry_at = now + retry;
            sends.push((p.nonce, p.answered, p.deferred));
            // The hook did not answer in time: link without it.
            p.deferred = false;
            true
        });
        for (nonce, answered, deferred) in sends {
            let Some(i) = self.pending_links.iter().position(|p| p.nonce == nonce) else {
                continue;
            };
            match answered {
                Some(a) => {
                    let roles = self.pending_links[i].roles;
                    let msg = self.answer(nonce, roles, a);
                    self.send_maintenance(a.endpoint, msg);
                }
                None => self.send_probes(now, i, deferred),
            }
        }
        if failed_leaf && !self.joined {
            self.try_bootstrap(now);
        }
    }

    fn retry_requests(&mut self, now: Instant) {
        let mut resend = Vec::new();
        let mut failed = Vec::new();
        let attempts = self.config.request_attempts;
        let timeout = self.config.request_timeout;
        self.requests.retain_mut(|r| {
            if r.retry_at > now {
                return true;
            }
            if r.attempts >= attempts {
                failed.push((r.id, r.kind.clone()));
                return false;
            }
            r.attempts += 1;
            // Back off: a dead hop on the path takes the suspect timeout
            // to be noticed.
            r.retry_at = now + timeout.mul_f64(1.0 + 0.5 * f64::from(r.attempts - 1));
            resend.push((r.destination, r.mode, r.payload.clone()));
            true
        });
        for (destination, mode, payload) in resend {
            let msg = self.routed(destination, mode, payload);
            self.route(now, None, msg);
        }
        for (id, kind) in failed {
            self.events.push_back(match kind {
                RequestKind::Echo => Event::EchoFailed { id },
                RequestKind::Dht(op) => Event::Dht {
                    id,
                    op,
                    outcome: DhtOutcome::Failed,
                    records: Vec::new(),
                },
            });
        }
    }
}
