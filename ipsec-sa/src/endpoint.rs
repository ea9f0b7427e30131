//! The endpoint: all SAs, handshakes and policy of one virtual host.
//!
//! Method families, as in quinn-proto's `Connection`:
//!
//! - inputs: [`Endpoint::seal`] (a plaintext packet to send),
//!   [`Endpoint::open`] (a datagram received from a peer, data or
//!   handshake), [`Endpoint::handle_unprotected`] (a cleartext packet
//!   received), [`Endpoint::handle_timeout`];
//! - commands: [`Endpoint::update_authenticator`] (e.g. a new CRL), which
//!   re-checks every peer and tears down those now refused;
//! - outputs: [`Endpoint::poll_transmit`] (handshake messages and queued
//!   packets, to be sent to the named peer), [`Endpoint::poll_event`],
//!   [`Endpoint::poll_timeout`].
//!
//! After any input or command, drain `poll_transmit` and `poll_event` and
//! re-read `poll_timeout`. Time is always the caller's `now`; wall-clock
//! time for certificate validity is derived from the `(Instant,
//! SystemTime)` pair given to [`Endpoint::new`].
//!
//! # Life of an SA pair
//!
//! 1. The first packet to a peer in the private prefix is queued and the
//!    endpoint sends an init; the peer answers with a response, this side
//!    sends a finish ([`handshake`](crate::handshake)). Each message is
//!    retransmitted until answered or [`Config::handshake_timeout`].
//! 2. The responder installs its SAs on the finish and confirms with a
//!    keepalive on the new SA; the initiator starts using its new outbound
//!    SA only then (data sent earlier could overtake the finish). The first
//!    packet thus waits two round trips.
//! 3. An SA that carried data is rekeyed after [`Config::rekey_after`] or
//!    [`Config::rekey_after_packets`] by a fresh exchange (new ephemeral
//!    keys); the old outbound SA carries traffic until the new one is
//!    confirmed, and the old inbound SA stays until the peer has not used it
//!    for [`Config::drain_timeout`]. Idle SAs are not rekeyed; they expire
//!    at [`Config::reject_after`].
//! 4. A peer whose certificate expires, or is refused after
//!    [`Endpoint::update_authenticator`] (a newer CRL), loses all its SAs at
//!    once ([`Event::PeerRemoved`]).
//!
//! Simultaneous inits between two peers are resolved as RFC 7296 §2.8.1
//! resolves colliding rekeys: one exchange survives (here the one started
//! by the lower address). The higher address gives up its own exchange only
//! for an init that proved reachability with a cookie, so a spoofed init
//! cannot cancel it.
//!
//! # Handshake denial of service
//!
//! A responder does Diffie-Hellman and signature work, and keeps state,
//! before the initiator is authenticated. As in WireGuard, it can instead
//! answer an init with a small cookie reply and keep nothing
//! ([`crate::cookie`]); the initiator repeats its init with the cookie's
//! MAC, which proves that it receives traffic for the address it claims.
//! An init without a valid cookie gets a cookie reply when
//!
//! - more than [`Config::cookie_threshold`] responder handshakes are
//!   pending (under load);
//! - [`Config::require_reachability`] is on (the default) and this side
//!   has no SA and no authenticated handshake in the last ten minutes with
//!   the source: a first contact costs one extra round trip, and this
//!   side's certificate (in Noise message 2) goes only to whoever receives
//!   the claimed address's traffic;
//! - this side is itself initiating to the source (a collision it would
//!   give way in);
//! - the source already has [`Config::max_pending_per_source`] pending
//!   handshakes, or used up its [`Config::max_inits_per_source_per_second`].
//!
//! An init with a valid cookie is held to the same per-source bounds; over
//! them it is dropped ([`HandshakeError::RateLimited`],
//! [`Stats::handshakes_rate_limited`]), except that it may take the place
//! of the oldest pending handshake of its source that never proved
//! reachability. Responder slots in all are capped at
//! [`Config::max_pending_handshakes`].

mod resume;

use core::net::IpAddr;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::auth::{LocalIdentity, PeerAuthenticator, VerifiedPeer};
use crate::cookie::{self, COOKIE_SECRET_LIFETIME, Cookie, CookieChecker, MAC_LEN};
use crate::entropy::Entropy;
use crate::error::{AuthError, HandshakeError, Rejection, SealError};
use crate::handshake::{Established, HandshakeSeeds, Initiator, Responder, Role};
use crate::policy::{Action, Policy};
use crate::sa::{InboundSa, OpenJob, Opened, OutboundSa, SealJob};
use crate::wire::{
    self, COOKIE_REPLY_LEN, HEADER_LEN, HandshakeRepr, INIT_MACS_LEN, MAX_PLAINTEXT_LEN, Packet,
    Suite, SuiteSet,
};

/// Sources remembered for [`Event::UnprotectedDropped`]; beyond this,
/// drops are only counted.
const MAX_UNPROTECTED_SOURCES: usize = 65_536;
/// Sources whose init rate is tracked at once; a new source beyond this is
/// treated as over its rate until older entries expire.
const MAX_RATE_SOURCES: usize = 65_536;
/// Key exchanges [`Endpoint::handle_unknown_spi`] starts per second, all
/// peers together: packets under unknown SPIs are unauthenticated, so
/// anyone can send them in any peer's name, and each exchange costs a
/// look-up and an init toward that peer.
pub const MAX_UNKNOWN_SPI_EXCHANGES_PER_SECOND: u32 = 8;
/// Peers remembered as reachable after an authenticated handshake.
const MAX_RECENT_PEERS: usize = 65_536;
/// How long an authenticated handshake with a peer spares its later inits
/// the reachability round trip ([`Config::require_reachability`]).
pub const RECENT_PEER_MEMORY: Duration = Duration::from_secs(600);
/// The window of [`Config::max_inits_per_source_per_second`].
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Endpoint configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This host's virtual IP (the one in its certificate).
    pub local_ip: IpAddr,
    /// Which peers need SAs.
    pub policy: Policy,
    /// AEAD suites, most preferred first; all of them are offered.
    pub suites: Vec<Suite>,
    /// Start a new key exchange when an outbound SA is this old and in use.
    pub rekey_after: Duration,
    /// Delete an SA this old (hard lifetime, RFC 4301 §4.4.2.1).
    pub reject_after: Duration,
    /// Start a new key exchange after this many packets on an outbound SA.
    pub rekey_after_packets: u64,
    /// Stop using an outbound SA after this many packets.
    pub reject_after_packets: u64,
    /// Resend an unanswered handshake message after this long.
    pub handshake_retransmit_timeout: Duration,
    /// Give up a handshake after this long.
    pub handshake_timeout: Duration,
    /// Keep a replaced inbound SA this long after its last packet, for
    /// packets still in flight.
    pub drain_timeout: Duration,
    /// Packets queued per peer while its SA is being negotiated.
    pub max_queued_packets: usize,
    /// Responder handshakes kept at once; further inits are refused until
    /// some complete or time out (bounds the state a flood can create).
    pub max_pending_handshakes: usize,
    /// Pending responder handshakes at or above which every init must carry
    /// a valid cookie: "under load" (see [the module docs](self)).
    pub cookie_threshold: usize,
    /// Answer an init from an address with which this side has no SA and
    /// no recent authenticated handshake ([`RECENT_PEER_MEMORY`]) with a
    /// cookie reply first, so that this side's certificate only goes to
    /// whoever receives that address's traffic. Costs one round trip on
    /// first contact.
    pub require_reachability: bool,
    /// Pending responder handshakes per source address.
    pub max_pending_per_source: usize,
    /// Inits per source address and second that may start a responder
    /// handshake; more get cookie replies, or are dropped if they carry a
    /// valid cookie.
    pub max_inits_per_source_per_second: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            local_ip: IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED),
            policy: Policy::default(),
            suites: vec![Suite::Aes256Gcm, Suite::ChaCha20Poly1305],
            rekey_after: Duration::from_secs(120),
            reject_after: Duration::from_secs(180),
            // AES-GCM: at most 2^24.5 full-size records per key (RFC 8446 §5.5).
            rekey_after_packets: 1 << 23,
            reject_after_packets: 1 << 24,
            handshake_retransmit_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            max_queued_packets: 64,
            max_pending_handshakes: 1024,
            // WireGuard: under load at an eighth of its handshake queue.
            cookie_threshold: 128,
            require_reachability: true,
            max_pending_per_source: 4,
            max_inits_per_source_per_second: 10,
        }
    }
}

/// A datagram to send to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The peer's virtual IP.
    pub destination: IpAddr,
    /// A handshake message or a sealed data packet.
    pub payload: Vec<u8>,
}

/// What [`Endpoint::seal`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealOutput {
    /// The sealed packet is in the output buffer; send it to the
    /// destination.
    Sealed,
    /// Policy lets this destination be reached in the clear: send the
    /// plaintext unchanged.
    Bypass,
    /// No SA yet: the packet is queued and a handshake runs; its messages
    /// (and later the queued packet, sealed) come out of
    /// [`Endpoint::poll_transmit`].
    HandshakeNeeded,
}

/// What [`Endpoint::open`] found in a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenOutput<'a> {
    /// An authenticated packet from the peer; deliver it.
    Plaintext(&'a [u8]),
    /// A handshake message, consumed; poll for transmits and events.
    Handshake,
    /// An authenticated empty packet (keepalive or SA confirmation).
    Keepalive,
}

/// What [`Endpoint::prepare_seal`] did with a packet.
#[derive(Debug)]
pub enum PreparedSeal {
    /// The packet has its sequence number and header and was moved into
    /// the job: run [`SealJob::seal`] (on any thread) and send the result
    /// to the destination.
    Job(SealJob),
    /// As [`SealOutput::Bypass`]: the buffer is unchanged.
    Bypass,
    /// As [`SealOutput::HandshakeNeeded`]: the packet was queued (copied),
    /// the buffer is unchanged.
    HandshakeNeeded,
}

/// What [`Endpoint::prepare_open`] found in a datagram.
#[derive(Debug)]
pub enum PreparedOpen {
    /// A data packet that passed the cheap checks, moved into the job:
    /// run [`OpenJob::open`] (on any thread), then hand the result to
    /// [`Endpoint::complete_open`].
    Job(OpenJob),
    /// A handshake message, consumed as by [`Endpoint::open`].
    Handshake,
}

/// The verdict on a packet that arrived without protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The source may send in the clear; deliver it.
    Accept,
    /// The source is in the private prefix: drop it.
    Drop,
}

/// A plaintext to seal: copied into an output buffer, or sealed in place.
enum Plaintext<'a> {
    /// Copied into `out` after its first `keep` bytes.
    Copy {
        plaintext: &'a [u8],
        out: &'a mut Vec<u8>,
        keep: usize,
    },
    InPlace(&'a mut Vec<u8>),
    /// Sequence number and header only; the AEAD runs in the job.
    Deferred {
        buffer: &'a mut Vec<u8>,
        job: Option<SealJob>,
    },
}

impl Plaintext<'_> {
    fn plaintext(&self) -> &[u8] {
        match self {
            Plaintext::Copy { plaintext, .. } => plaintext,
            Plaintext::InPlace(buffer) | Plaintext::Deferred { buffer, .. } => {
                buffer.get(HEADER_LEN..).unwrap_or_default()
            }
        }
    }

    fn seal_with(&mut self, sa: &mut OutboundSa) -> Result<u64, SealError> {
        match self {
            Plaintext::Copy {
                plaintext,
                out,
                keep,
            } => {
                out.truncate(*keep);
                sa.seal_append(plaintext, out)
            }
            Plaintext::InPlace(buffer) => sa.seal_in_place(buffer),
            Plaintext::Deferred { buffer, job } => {
                let prepared = sa.prepare_seal(buffer)?;
                let seq = prepared.sequence_number();
                *job = Some(prepared);
                Ok(seq)
            }
        }
    }
}

/// Something the application may want to know or log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A key exchange completed and an SA pair was installed.
    SaEstablished {
        /// The peer.
        peer: IpAddr,
        /// SPI of the new inbound SA.
        inbound_spi: u32,
        /// SPI of the new outbound SA.
        outbound_spi: u32,
        /// The AEAD suite.
        suite: Suite,
        /// Whether this side initiated.
        role: Role,
        /// Whether it replaces an earlier SA (a rekey).
        rekey: bool,
    },
    /// An inbound SA was deleted after being replaced and drained, or at
    /// its hard lifetime.
    SaExpired {
        /// The peer.
        peer: IpAddr,
        /// Its SPI.
        spi: u32,
    },
    /// Every SA with a peer was torn down because its certificate is no
    /// longer acceptable (revoked by a newer CRL, or expired).
    PeerRemoved {
        /// The peer.
        peer: IpAddr,
        /// Why the certificate is now refused.
        reason: AuthError,
    },
    /// A key exchange with a peer failed; its queued packets were dropped.
    HandshakeFailed {
        /// The peer.
        peer: IpAddr,
        /// Why.
        error: HandshakeError,
    },
    /// A peer in the private prefix sent unprotected packets. Emitted once
    /// per peer; every such packet is counted in
    /// [`Stats::unprotected_dropped`].
    UnprotectedDropped {
        /// The source.
        peer: IpAddr,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Unprotected packets dropped because their source needs an SA.
    pub unprotected_dropped: u64,
    /// Sealed packets dropped by the replay check.
    pub replayed: u64,
    /// Sealed packets that failed authentication.
    pub authentication_failed: u64,
    /// Sealed packets for no known SA.
    pub unknown_spi: u64,
    /// Malformed datagrams.
    pub malformed: u64,
    /// Handshakes completed.
    pub handshakes_completed: u64,
    /// Handshake messages refused.
    pub handshakes_failed: u64,
    /// Outbound packets dropped because a peer's queue was full or its
    /// handshake failed.
    pub queue_dropped: u64,
    /// Cookie replies sent instead of a handshake response.
    pub cookie_replies_sent: u64,
    /// Valid cookie replies received (as initiator).
    pub cookies_received: u64,
    /// Inits with a valid cookie dropped by the per-source bounds
    /// ([`Config::max_pending_per_source`],
    /// [`Config::max_inits_per_source_per_second`]).
    pub handshakes_rate_limited: u64,
}

struct InboundEntry {
    peer: IpAddr,
    sa: InboundSa,
    role: Role,
    created_at: Instant,
    expires_at: Instant,
    last_received_at: Option<Instant>,
    superseded_at: Option<Instant>,
}

impl InboundEntry {
    fn deadline(&self, drain: Duration) -> Instant {
        match self.superseded_at {
            Some(at) => {
                let last = self.last_received_at.map_or(at, |r| r.max(at));
                (last + drain).min(self.expires_at)
            }
            None => self.expires_at,
        }
    }
}

struct OutboundEntry {
    sa: OutboundSa,
    /// Whether it carried data (keepalives do not count): idle SAs are not
    /// rekeyed, they expire.
    used: bool,
    rekey_at: Instant,
    expires_at: Instant,
}

/// An initiator's new SA pair, not yet confirmed by the responder. The
/// responder installs its SAs only on the finish message, so data sent
/// earlier could overtake the finish and be dropped: the new outbound SA is
/// used only once a packet arrives on the new inbound SA (the responder
/// sends a keepalive at once). Until then the previous SA, if any, carries
/// the traffic; otherwise new packets wait in the queue.
struct Unconfirmed {
    inbound_spi: u32,
    finish: Vec<u8>,
    retransmit_at: Instant,
    give_up_at: Instant,
    /// The new outbound SA.
    pending: Option<OutboundEntry>,
}

struct PeerCertificate {
    der: Vec<u8>,
    expires_at: Instant,
}

#[derive(Default)]
struct Peer {
    outbound: Option<OutboundEntry>,
    unconfirmed: Option<Unconfirmed>,
    initiating: Option<u32>,
    inbound_spis: Vec<u32>,
    queue: VecDeque<Vec<u8>>,
    certificate: Option<PeerCertificate>,
    /// The latest cookie this peer sent us, and when.
    cookie: Option<(Cookie, Instant)>,
}

/// A parsed init and the datagram it came in (its macs cover the bytes).
struct Init<'a> {
    bytes: &'a [u8],
    initiator_index: u32,
    offered: SuiteSet,
    noise: &'a [u8],
    mac1: [u8; MAC_LEN],
    mac2: [u8; MAC_LEN],
}

struct PendingInitiator {
    peer: IpAddr,
    state: Initiator,
    message: Vec<u8>,
    retransmit_at: Instant,
    give_up_at: Instant,
}

struct PendingResponder {
    peer: IpAddr,
    state: Responder,
    message: Vec<u8>,
    created_at: Instant,
    give_up_at: Instant,
    /// Whether the init carried a valid cookie.
    proven: bool,
}

/// Inits from one source in the current one-second window.
struct RateWindow {
    start: Instant,
    count: u32,
}

/// The security-association endpoint of one virtual host. See the
/// [module docs](self) for the call order.
pub struct Endpoint<A> {
    config: Config,
    identity: LocalIdentity,
    authenticator: A,
    rng: Entropy,
    clock_anchor: (Instant, SystemTime),
    peers: HashMap<IpAddr, Peer, ahash::RandomState>,
    /// By SPI, which the network picks: aHash keyed from the OS (a
    /// fraction of SipHash's cost per packet, as unpredictable).
    inbound: HashMap<u32, InboundEntry, ahash::RandomState>,
    initiators: HashMap<u32, PendingInitiator>,
    responders: HashMap<u32, PendingResponder>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    unprotected_seen: HashSet<IpAddr>,
    cookies: CookieChecker,
    /// When each peer last completed an authenticated handshake.
    recent_peers: HashMap<IpAddr, Instant>,
    init_rates: HashMap<IpAddr, RateWindow>,
    /// Exchanges started for unknown SPIs in the current second.
    unknown_spi_rate: RateWindow,
    stats: Stats,
}

impl<A> core::fmt::Debug for Endpoint<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_ip", &self.config.local_ip)
            .field("peers", &self.peers.len())
            .field("inbound_sas", &self.inbound.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<A: PeerAuthenticator> Endpoint<A> {
    /// Creates an endpoint. `now` and `wall_now` are the same moment on the
    /// monotonic and the wall clock. SPIs and the handshakes' Noise keys
    /// are drawn from the operating system's random source, each when it
    /// is needed.
    ///
    /// # Panics
    /// A draw panics if the operating system's random source fails.
    pub fn new(
        now: Instant,
        wall_now: SystemTime,
        config: Config,
        identity: LocalIdentity,
        authenticator: A,
    ) -> Self {
        Endpoint::with_entropy(config, identity, authenticator, now, wall_now, Entropy::Os)
    }

    /// [`Endpoint::new`] with every SPI and key drawn from a generator
    /// seeded with `seed`: **predictable**, for tests and simulators only.
    pub fn new_with_insecure_seed(
        now: Instant,
        wall_now: SystemTime,
        config: Config,
        identity: LocalIdentity,
        authenticator: A,
        seed: [u8; 32],
    ) -> Self {
        let rng = Entropy::insecure_seed(seed);
        Endpoint::with_entropy(config, identity, authenticator, now, wall_now, rng)
    }

    fn with_entropy(
        config: Config,
        identity: LocalIdentity,
        authenticator: A,
        now: Instant,
        wall_now: SystemTime,
        rng: Entropy,
    ) -> Self {
        Endpoint {
            config,
            identity,
            authenticator,
            rng,
            clock_anchor: (now, wall_now),
            peers: HashMap::default(),
            inbound: HashMap::default(),
            initiators: HashMap::new(),
            responders: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            unprotected_seen: HashSet::new(),
            cookies: CookieChecker::new(),
            recent_peers: HashMap::new(),
            init_rates: HashMap::new(),
            unknown_spi_rate: RateWindow {
                start: now,
                count: 0,
            },
            stats: Stats::default(),
        }
    }

    /// Responder handshakes pending (answered inits waiting for a finish).
    pub fn pending_responders(&self) -> usize {
        self.responders.len()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &A {
        &self.authenticator
    }

    /// Number of peers with any state (SAs, handshakes, queued packets).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether a usable outbound SA to `peer` exists.
    pub fn has_sa(&self, peer: IpAddr) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.outbound.is_some())
    }

    /// The DER certificate `peer` authenticated its current SA with (it
    /// verified then): what its groups and names are read from.
    pub fn peer_certificate(&self, peer: IpAddr) -> Option<&[u8]> {
        self.peers
            .get(&peer)
            .and_then(|p| p.certificate.as_ref())
            .map(|c| c.der.as_slice())
    }

    /// SPIs of the inbound SAs from `peer` (current and draining).
    pub fn inbound_spis(&self, peer: IpAddr) -> Vec<u32> {
        self.peers
            .get(&peer)
            .map(|p| p.inbound_spis.clone())
            .unwrap_or_default()
    }

    /// Re-anchors wall-clock time (e.g. after the system clock was set).
    pub fn handle_wall_clock(&mut self, now: Instant, wall_now: SystemTime) {
        self.clock_anchor = (now, wall_now);
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.clock_anchor.1 + now.saturating_duration_since(self.clock_anchor.0)
    }

    fn instant_for(&self, wall: SystemTime) -> Instant {
        let (anchor, anchor_wall) = self.clock_anchor;
        match wall.duration_since(anchor_wall) {
            Ok(ahead) => anchor
                .checked_add(ahead)
                .unwrap_or(anchor + Duration::from_secs(1 << 32)),
            Err(_) => anchor,
        }
    }

    /// Changes the authenticator (for example loads a newer CRL), then
    /// re-checks every authenticated peer's certificate and tears down the
    /// SAs of those now refused ([`Event::PeerRemoved`]).
    pub fn update_authenticator<R>(&mut self, now: Instant, update: impl FnOnce(&mut A) -> R) -> R {
        let result = update(&mut self.authenticator);
        self.revalidate(now);
        result
    }

    /// Re-checks every authenticated peer's certificate at `now`.
    pub fn revalidate(&mut self, now: Instant) {
        let wall = self.wall(now);
        let refused: Vec<(IpAddr, AuthError)> = self
            .peers
            .iter()
            .filter_map(|(ip, peer)| {
                let cert = peer.certificate.as_ref()?;
                self.authenticator
                    .authenticate(&cert.der, *ip, wall)
                    .err()
                    .map(|e| (*ip, e))
            })
            .collect();
        for (ip, reason) in refused {
            self.remove_peer(ip, reason);
        }
    }

    /// Protects a plaintext packet for `destination`.
    ///
    /// On [`SealOutput::Sealed`], `out` holds the packet to send; otherwise
    /// `out` is untouched.
    pub fn seal(
        &mut self,
        now: Instant,
        destination: IpAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<SealOutput, SealError> {
        self.seal_after(now, destination, packet, out, 0)
    }

    /// Like [`seal`](Self::seal), the packet written after the first
    /// `keep` bytes of `out` (a header of the caller's, in the buffer it
    /// sends: the plaintext is copied once). On [`SealOutput::Sealed`]
    /// `out` holds those bytes and the packet; otherwise it is untouched.
    pub fn seal_after(
        &mut self,
        now: Instant,
        destination: IpAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
        keep: usize,
    ) -> Result<SealOutput, SealError> {
        let packet = &mut Plaintext::Copy {
            plaintext: packet,
            out,
            keep,
        };
        self.seal_inner(now, destination, packet)
    }

    /// Like [`seal`](Self::seal), without copying the plaintext: `buffer`
    /// holds [`HEADER_LEN`] bytes of headroom
    /// followed by the plaintext. On [`SealOutput::Sealed`] it holds the
    /// packet; otherwise it is unchanged (on [`SealOutput::Bypass`], send
    /// the plaintext after the headroom).
    pub fn seal_in_place(
        &mut self,
        now: Instant,
        destination: IpAddr,
        buffer: &mut Vec<u8>,
    ) -> Result<SealOutput, SealError> {
        if buffer.len() < HEADER_LEN {
            return Err(SealError::NoHeadroom);
        }
        self.seal_inner(now, destination, &mut Plaintext::InPlace(buffer))
    }

    /// Like [`seal_in_place`](Self::seal_in_place), with the encryption
    /// left to the caller, who may run it on another thread: the SA
    /// lookup, lifetimes, rekeying, sequence number and header happen
    /// here, in order. On [`PreparedSeal::Job`] the buffer was moved into
    /// the job (`buffer` is left empty); otherwise it is unchanged.
    ///
    /// A job whose result is never sent costs only its sequence number.
    pub fn prepare_seal(
        &mut self,
        now: Instant,
        destination: IpAddr,
        buffer: &mut Vec<u8>,
    ) -> Result<PreparedSeal, SealError> {
        if buffer.len() < HEADER_LEN {
            return Err(SealError::NoHeadroom);
        }
        let mut packet = Plaintext::Deferred { buffer, job: None };
        let output = self.seal_inner(now, destination, &mut packet)?;
        Ok(match (output, packet) {
            (SealOutput::Sealed, Plaintext::Deferred { job: Some(job), .. }) => {
                PreparedSeal::Job(job)
            }
            (SealOutput::Bypass, _) => PreparedSeal::Bypass,
            // Sealed always leaves a job.
            _ => PreparedSeal::HandshakeNeeded,
        })
    }

    fn seal_inner(
        &mut self,
        now: Instant,
        destination: IpAddr,
        packet: &mut Plaintext<'_>,
    ) -> Result<SealOutput, SealError> {
        let len = packet.plaintext().len();
        if len > MAX_PLAINTEXT_LEN {
            return Err(SealError::TooLarge(len));
        }
        if destination == self.config.local_ip {
            return Err(SealError::LocalDestination);
        }
        if self.config.policy.action(destination) == Action::Bypass {
            return Ok(SealOutput::Bypass);
        }
        let reject_after_packets = self.config.reject_after_packets;
        let rekey_after_packets = self.config.rekey_after_packets;
        let peer = self.peers.entry(destination).or_default();
        if let Some(current) = &peer.outbound
            && (now >= current.expires_at || current.sa.packets() >= reject_after_packets)
        {
            peer.outbound = None;
            if let Some(unconfirmed) = &mut peer.unconfirmed {
                // The old SA is gone: use the new one without waiting.
                peer.outbound = unconfirmed.pending.take();
            }
        }
        if let Some(current) = &mut peer.outbound
            && packet.seal_with(&mut current.sa).is_ok()
        {
            current.used = true;
            let rekey = current.sa.packets() >= rekey_after_packets || now >= current.rekey_at;
            if rekey {
                self.maybe_rekey(now, destination);
            }
            return Ok(SealOutput::Sealed);
        }
        let packet = packet.plaintext();
        if peer.queue.len() >= self.config.max_queued_packets {
            peer.queue.pop_front();
            self.stats.queue_dropped += 1;
        }
        peer.queue.push_back(packet.to_vec());
        self.maybe_rekey(now, destination);
        Ok(SealOutput::HandshakeNeeded)
    }

    /// Starts a handshake with `peer` unless one is already running.
    fn maybe_rekey(&mut self, now: Instant, ip: IpAddr) {
        let busy = self
            .peers
            .get(&ip)
            .is_some_and(|p| p.initiating.is_some() || p.unconfirmed.is_some())
            || self.responding_proven(ip);
        if !busy {
            self.start_handshake(now, ip);
        }
    }

    /// Whether a responder handshake with `ip` runs whose init proved
    /// reachability (one that did not may be a spoofer's, and must not hold
    /// off this side's own exchange).
    fn responding_proven(&self, ip: IpAddr) -> bool {
        self.responders.values().any(|r| r.peer == ip && r.proven)
    }

    fn alloc_index(&mut self) -> u32 {
        loop {
            let index = self.rng.next_u32();
            if index >= 256
                && !self.inbound.contains_key(&index)
                && !self.initiators.contains_key(&index)
                && !self.responders.contains_key(&index)
            {
                return index;
            }
        }
    }

    fn offered(&self) -> SuiteSet {
        SuiteSet::from_suites(&self.config.suites)
    }

    fn start_handshake(&mut self, now: Instant, ip: IpAddr) {
        let index = self.alloc_index();
        let seeds = HandshakeSeeds::draw(&mut self.rng);
        match Initiator::start(self.config.local_ip, ip, self.offered(), index, seeds) {
            Ok((state, mut message)) => {
                let cookie = self
                    .peers
                    .get(&ip)
                    .and_then(|p| p.cookie.as_ref())
                    .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_SECRET_LIFETIME)
                    .map(|(c, _)| c);
                cookie::stamp_init(&mut message, ip, cookie);
                self.transmits.push_back(Transmit {
                    destination: ip,
                    payload: message.clone(),
                });
                self.initiators.insert(
                    index,
                    PendingInitiator {
                        peer: ip,
                        state,
                        message,
                        retransmit_at: now + self.config.handshake_retransmit_timeout,
                        give_up_at: now + self.config.handshake_timeout,
                    },
                );
                self.peers.entry(ip).or_default().initiating = Some(index);
            }
            Err(error) => self.handshake_failed(ip, error),
        }
    }

    fn handshake_failed(&mut self, ip: IpAddr, error: HandshakeError) {
        self.stats.handshakes_failed += 1;
        if let Some(peer) = self.peers.get_mut(&ip) {
            self.stats.queue_dropped += peer.queue.len() as u64;
            peer.queue.clear();
        }
        self.events
            .push_back(Event::HandshakeFailed { peer: ip, error });
    }

    /// Handles a datagram received from `source` (the peer's virtual IP as
    /// the overlay reports it): a data packet, decrypted in place, or a
    /// handshake message.
    pub fn open<'a>(
        &mut self,
        now: Instant,
        source: IpAddr,
        datagram: &'a mut [u8],
    ) -> Result<OpenOutput<'a>, Rejection> {
        if wire::is_handshake(datagram) {
            return match self.handle_handshake(now, source, datagram) {
                Ok(()) => Ok(OpenOutput::Handshake),
                Err(error) => {
                    match error {
                        HandshakeError::Wire(_) => self.stats.malformed += 1,
                        HandshakeError::RateLimited => self.stats.handshakes_rate_limited += 1,
                        _ => self.stats.handshakes_failed += 1,
                    }
                    Err(Rejection::Handshake(error))
                }
            };
        }
        let result = self.open_data(now, source, datagram);
        self.count(result.as_ref().err());
        result
    }

    /// Counts a refused data packet.
    fn count(&mut self, rejection: Option<&Rejection>) {
        match rejection {
            None => {}
            Some(Rejection::Wire(_)) => self.stats.malformed += 1,
            Some(Rejection::UnknownSpi(_) | Rejection::WrongPeer { .. }) => {
                self.stats.unknown_spi += 1;
            }
            Some(Rejection::Replayed(_) | Rejection::OutsideWindow(_)) => self.stats.replayed += 1,
            Some(_) => self.stats.authentication_failed += 1,
        }
    }

    /// Like [`open`](Self::open), with the authentication and decryption
    /// of data packets left to the caller, who may run them on another
    /// thread: handshake messages are handled here as by `open`; a data
    /// packet is checked (SA, peer, lifetime, and the replay window as an
    /// early refusal) and moved into a job (`datagram` is left empty).
    /// Nothing is recorded, and nothing is delivered, until
    /// [`complete_open`](Self::complete_open) takes the job's result. On
    /// error `datagram` is unchanged.
    pub fn prepare_open(
        &mut self,
        now: Instant,
        source: IpAddr,
        datagram: &mut Vec<u8>,
    ) -> Result<PreparedOpen, Rejection> {
        if wire::is_handshake(datagram) {
            return self
                .open(now, source, datagram)
                .map(|_| PreparedOpen::Handshake);
        }
        let result = self
            .inbound_entry(now, source, datagram)
            .and_then(|entry| entry.sa.prepare_open(datagram))
            .map(PreparedOpen::Job);
        self.count(result.as_ref().err());
        result
    }

    /// Takes a packet an [`OpenJob`] from [`prepare_open`](Self::prepare_open)
    /// processed, from `source` (the one given to `prepare_open`). It is
    /// accepted only if it authenticated, under the SA that is still
    /// installed for its SPI and `source`, still within its lifetime, and
    /// its sequence number is still new (a copy may have been accepted
    /// meanwhile); only then does the replay window move and the SA count
    /// as used. The plaintext is `opened`'s.
    pub fn complete_open<'a>(
        &mut self,
        now: Instant,
        source: IpAddr,
        opened: &'a Opened,
    ) -> Result<OpenOutput<'a>, Rejection> {
        let result = self.complete_data(now, source, opened);
        self.count(result.as_ref().err());
        result
    }

    fn complete_data<'a>(
        &mut self,
        now: Instant,
        source: IpAddr,
        opened: &'a Opened,
    ) -> Result<OpenOutput<'a>, Rejection> {
        let spi = opened.spi();
        let entry = self.live_entry(now, source, spi)?;
        entry.sa.accept(opened)?;
        let plaintext = opened.plaintext().ok_or(Rejection::Authentication)?;
        self.received(now, source, spi);
        Ok(if plaintext.is_empty() {
            OpenOutput::Keepalive
        } else {
            OpenOutput::Plaintext(plaintext)
        })
    }

    /// The inbound SA a data packet names, if it is `source`'s and alive.
    fn inbound_entry(
        &mut self,
        now: Instant,
        source: IpAddr,
        datagram: &[u8],
    ) -> Result<&mut InboundEntry, Rejection> {
        let spi = Packet::new_checked(datagram)?.spi();
        self.live_entry(now, source, spi)
    }

    fn live_entry(
        &mut self,
        now: Instant,
        source: IpAddr,
        spi: u32,
    ) -> Result<&mut InboundEntry, Rejection> {
        let entry = self
            .inbound
            .get_mut(&spi)
            .ok_or(Rejection::UnknownSpi(spi))?;
        if entry.peer != source {
            return Err(Rejection::WrongPeer {
                spi,
                sender: source,
            });
        }
        if now >= entry.expires_at {
            return Err(Rejection::UnknownSpi(spi));
        }
        Ok(entry)
    }

    /// An authenticated packet arrived on inbound SA `spi`.
    fn received(&mut self, now: Instant, source: IpAddr, spi: u32) {
        let Some(entry) = self.inbound.get_mut(&spi) else {
            return;
        };
        let first = entry.last_received_at.is_none();
        entry.last_received_at = Some(now);
        if first {
            self.on_first_packet(now, source, spi);
        }
    }

    fn open_data<'a>(
        &mut self,
        now: Instant,
        source: IpAddr,
        datagram: &'a mut [u8],
    ) -> Result<OpenOutput<'a>, Rejection> {
        let spi = Packet::new_checked(&*datagram)?.spi();
        let plaintext = self.live_entry(now, source, spi)?.sa.open(datagram)?;
        self.received(now, source, spi);
        Ok(if plaintext.is_empty() {
            OpenOutput::Keepalive
        } else {
            OpenOutput::Plaintext(plaintext)
        })
    }

    /// The peer started using inbound SA `spi`: older inbound SAs start
    /// draining, and an unconfirmed outbound SA paired with it is confirmed.
    fn on_first_packet(&mut self, now: Instant, ip: IpAddr, spi: u32) {
        let Some(created_at) = self.inbound.get(&spi).map(|e| e.created_at) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&ip) else {
            return;
        };
        for other in &peer.inbound_spis {
            if let Some(entry) = self.inbound.get_mut(other)
                && *other != spi
                && entry.created_at <= created_at
                && entry.superseded_at.is_none()
            {
                entry.superseded_at = Some(now);
            }
        }
        if peer
            .unconfirmed
            .as_ref()
            .is_some_and(|u| u.inbound_spi == spi)
            && let Some(unconfirmed) = peer.unconfirmed.take()
            && let Some(pending) = unconfirmed.pending
        {
            peer.outbound = Some(pending);
            self.flush_queue(ip);
        }
    }

    fn handle_handshake(
        &mut self,
        now: Instant,
        source: IpAddr,
        datagram: &[u8],
    ) -> Result<(), HandshakeError> {
        let repr = HandshakeRepr::parse(datagram)?;
        if self.config.policy.action(source) != Action::Protect || source == self.config.local_ip {
            return Err(HandshakeError::Policy);
        }
        match repr {
            HandshakeRepr::Init {
                initiator_index,
                offered,
                noise,
                mac1,
                mac2,
            } => {
                let init = Init {
                    bytes: datagram,
                    initiator_index,
                    offered,
                    noise,
                    mac1,
                    mac2,
                };
                self.handle_init(now, source, &init)
            }
            HandshakeRepr::CookieReply {
                initiator_index,
                nonce,
                cookie,
            } => self.handle_cookie_reply(now, source, initiator_index, &nonce, &cookie),
            HandshakeRepr::Response {
                initiator_index,
                responder_index,
                noise,
            } => self.handle_response(now, source, initiator_index, responder_index, noise),
            HandshakeRepr::Finish {
                initiator_index,
                responder_index,
                noise,
            } => self.handle_finish(now, source, initiator_index, responder_index, noise),
        }
    }

    /// Whether `source` completed an authenticated handshake with us
    /// recently or still has SAs with us.
    fn is_known(&self, now: Instant, source: IpAddr) -> bool {
        self.recent_peers
            .get(&source)
            .is_some_and(|at| now.saturating_duration_since(*at) < RECENT_PEER_MEMORY)
            || self
                .peers
                .get(&source)
                .is_some_and(|p| p.outbound.is_some() || !p.inbound_spis.is_empty())
    }

    /// Whether `source` may start another responder handshake in this
    /// second; counts it if `take`.
    fn rate_allows(&mut self, now: Instant, source: IpAddr, take: bool) -> bool {
        let limit = self.config.max_inits_per_source_per_second;
        if !self.init_rates.contains_key(&source) && self.init_rates.len() >= MAX_RATE_SOURCES {
            self.init_rates
                .retain(|_, w| now.saturating_duration_since(w.start) < RATE_WINDOW);
            if self.init_rates.len() >= MAX_RATE_SOURCES {
                return false;
            }
        }
        let window = self.init_rates.entry(source).or_insert(RateWindow {
            start: now,
            count: 0,
        });
        if now.saturating_duration_since(window.start) >= RATE_WINDOW {
            *window = RateWindow {
                start: now,
                count: 0,
            };
        }
        let allowed = window.count < limit;
        if allowed && take {
            window.count += 1;
        }
        allowed
    }

    /// Answers `init` with a cookie reply and keeps no state.
    fn send_cookie_reply(&mut self, now: Instant, source: IpAddr, init: &Init<'_>) {
        let (nonce, cookie) =
            self.cookies
                .reply(now, &mut self.rng, self.config.local_ip, source, &init.mac1);
        let mut payload = Vec::with_capacity(COOKIE_REPLY_LEN);
        HandshakeRepr::CookieReply {
            initiator_index: init.initiator_index,
            nonce,
            cookie,
        }
        .emit(&mut payload);
        self.stats.cookie_replies_sent += 1;
        self.transmits.push_back(Transmit {
            destination: source,
            payload,
        });
    }

    fn handle_init(
        &mut self,
        now: Instant,
        source: IpAddr,
        init: &Init<'_>,
    ) -> Result<(), HandshakeError> {
        // The parser guarantees room for the macs after a non-empty body.
        let mac1_at = init.bytes.len() - INIT_MACS_LEN;
        let mac2_at = mac1_at + MAC_LEN;
        if !cookie::mac1_matches(self.config.local_ip, &init.bytes[..mac1_at], &init.mac1) {
            return Err(HandshakeError::BadMac);
        }
        // A retransmitted init: our response was lost.
        if let Some(pending) = self
            .responders
            .values()
            .find(|r| r.peer == source && r.state.initiator_index == init.initiator_index)
        {
            let payload = pending.message.clone();
            self.transmits.push_back(Transmit {
                destination: source,
                payload,
            });
            return Ok(());
        }
        // Simultaneous initiation: the lower address's handshake wins
        // (compare RFC 7296 §2.8.1, which keeps one of two colliding SAs).
        // The higher side answers (once the init is proven) but keeps its
        // own initiator until the peer's handshake completes
        // (`handle_finish`): even a proven init is unauthenticated, and one
        // in the peer's name must not cancel a handshake in progress.
        let ours = self.peers.get(&source).and_then(|p| p.initiating);
        if ours.is_some() && self.config.local_ip < source {
            return Ok(());
        }
        let proven = init.mac2 != [0; MAC_LEN]
            && self.cookies.mac2_matches(
                now,
                &mut self.rng,
                source,
                &init.bytes[..mac2_at],
                &init.mac2,
            );
        let from_source = self
            .responders
            .values()
            .filter(|r| r.peer == source)
            .count();
        if !proven {
            let want_cookie = self.responders.len() >= self.config.cookie_threshold
                || (self.config.require_reachability && !self.is_known(now, source))
                || ours.is_some()
                || from_source >= self.config.max_pending_per_source
                || !self.rate_allows(now, source, false);
            if want_cookie {
                self.send_cookie_reply(now, source, init);
                return Ok(());
            }
        } else if from_source >= self.config.max_pending_per_source {
            // A proven init may replace the oldest unproven one of its
            // source (perhaps a spoofer's); otherwise the source is at its cap.
            let oldest = self
                .responders
                .iter()
                .filter(|(_, r)| r.peer == source && !r.proven)
                .min_by_key(|(_, r)| r.created_at)
                .map(|(index, _)| *index);
            match oldest {
                Some(index) => {
                    self.responders.remove(&index);
                }
                None => return Err(HandshakeError::RateLimited),
            }
        }
        if self.responders.len() >= self.config.max_pending_handshakes {
            return Err(HandshakeError::Busy);
        }
        if !self.rate_allows(now, source, true) {
            return Err(HandshakeError::RateLimited);
        }
        let index = self.alloc_index();
        let seeds = HandshakeSeeds::draw(&mut self.rng);
        let (state, message) = Responder::respond(
            self.config.local_ip,
            source,
            init.initiator_index,
            init.offered,
            init.noise,
            &self.config.suites,
            index,
            &self.identity,
            seeds,
        )?;
        self.transmits.push_back(Transmit {
            destination: source,
            payload: message.clone(),
        });
        self.responders.insert(
            index,
            PendingResponder {
                peer: source,
                state,
                message,
                created_at: now,
                give_up_at: now + self.config.handshake_timeout,
                proven,
            },
        );
        Ok(())
    }

    /// A cookie reply to one of our inits: keep the cookie and, if it is
    /// new, send the init again with its MAC.
    fn handle_cookie_reply(
        &mut self,
        now: Instant,
        source: IpAddr,
        initiator_index: u32,
        nonce: &[u8; cookie::COOKIE_NONCE_LEN],
        encrypted: &[u8; cookie::ENCRYPTED_COOKIE_LEN],
    ) -> Result<(), HandshakeError> {
        let pending = self
            .initiators
            .get_mut(&initiator_index)
            .ok_or(HandshakeError::UnknownSession(initiator_index))?;
        if pending.peer != source {
            return Err(HandshakeError::WrongPeer);
        }
        let mac1_at = pending.message.len() - INIT_MACS_LEN;
        let mac2_at = mac1_at + MAC_LEN;
        let cookie =
            cookie::open_reply(source, &pending.message[mac1_at..mac2_at], nonce, encrypted)
                .ok_or(HandshakeError::BadCookie)?;
        self.stats.cookies_received += 1;
        // A replayed reply changes nothing and sends nothing.
        if cookie.mac2(&pending.message[..mac2_at])[..] != pending.message[mac2_at..] {
            cookie::stamp_init(&mut pending.message, source, Some(&cookie));
            pending.retransmit_at = now + self.config.handshake_retransmit_timeout;
            self.transmits.push_back(Transmit {
                destination: source,
                payload: pending.message.clone(),
            });
        }
        self.peers.entry(source).or_default().cookie = Some((cookie, now));
        Ok(())
    }

    fn handle_response(
        &mut self,
        now: Instant,
        source: IpAddr,
        initiator_index: u32,
        responder_index: u32,
        noise: &[u8],
    ) -> Result<(), HandshakeError> {
        match self.initiators.get(&initiator_index) {
            None => return Err(HandshakeError::UnknownSession(initiator_index)),
            Some(pending) if pending.peer != source => return Err(HandshakeError::WrongPeer),
            Some(_) => {}
        }
        let Some(pending) = self.initiators.remove(&initiator_index) else {
            return Err(HandshakeError::UnknownSession(initiator_index));
        };
        if let Some(peer) = self.peers.get_mut(&source) {
            peer.initiating = None;
        }
        let wall = self.wall(now);
        match pending.state.handle_response(
            responder_index,
            noise,
            &self.identity,
            &self.authenticator,
            source,
            wall,
        ) {
            Ok((established, finish)) => {
                self.transmits.push_back(Transmit {
                    destination: source,
                    payload: finish.clone(),
                });
                self.install(now, established, Some(finish));
                Ok(())
            }
            Err(error) => {
                self.handshake_failed(source, error);
                Err(error)
            }
        }
    }

    fn handle_finish(
        &mut self,
        now: Instant,
        source: IpAddr,
        initiator_index: u32,
        responder_index: u32,
        noise: &[u8],
    ) -> Result<(), HandshakeError> {
        match self.responders.get(&responder_index) {
            Some(pending) if pending.peer != source => return Err(HandshakeError::WrongPeer),
            Some(pending) if pending.state.initiator_index != initiator_index => {
                return Err(HandshakeError::IndexMismatch);
            }
            Some(_) => {}
            None => {
                // A retransmitted finish: our confirmation was lost.
                let known = self.inbound.get(&responder_index).is_some_and(|e| {
                    e.peer == source && e.role == Role::Responder && e.last_received_at.is_none()
                });
                if !known {
                    return Err(HandshakeError::UnknownSession(responder_index));
                }
                self.send_keepalive(source);
                return Ok(());
            }
        }
        let Some(pending) = self.responders.remove(&responder_index) else {
            return Err(HandshakeError::UnknownSession(responder_index));
        };
        let wall = self.wall(now);
        match pending
            .state
            .handle_finish(noise, &self.authenticator, source, wall)
        {
            Ok(established) => {
                // The peer won a collision and proved who it is: our own
                // initiation to it is no longer needed.
                if let Some(ours) = self
                    .peers
                    .get_mut(&source)
                    .and_then(|p| p.initiating.take())
                {
                    self.initiators.remove(&ours);
                }
                self.install(now, established, None);
                Ok(())
            }
            Err(error) => {
                self.handshake_failed(source, error);
                Err(error)
            }
        }
    }

    fn send_keepalive(&mut self, ip: IpAddr) {
        if let Some(current) = self.peers.get_mut(&ip).and_then(|p| p.outbound.as_mut()) {
            let mut payload = Vec::new();
            if current.sa.seal(&[], &mut payload).is_ok() {
                self.transmits.push_back(Transmit {
                    destination: ip,
                    payload,
                });
            }
        }
    }

    fn install(&mut self, now: Instant, established: Established, finish: Option<Vec<u8>>) {
        let Established {
            role,
            peer: verified,
            certificate,
            suite,
            local_index,
            remote_index,
            inbound,
            outbound,
        } = established;
        let VerifiedPeer { ip, not_after, .. } = verified;
        let cert_expires_at = self.instant_for(not_after);
        let config = &self.config;
        self.inbound.insert(
            local_index,
            InboundEntry {
                peer: ip,
                sa: InboundSa::new(local_index, suite, &inbound),
                role,
                created_at: now,
                expires_at: now + config.reject_after + config.drain_timeout,
                last_received_at: None,
                superseded_at: None,
            },
        );
        // The responder rekeys later so the two sides rarely collide.
        let rekey_delay = match role {
            Role::Initiator => config.rekey_after,
            Role::Responder => {
                config.rekey_after + (config.reject_after.saturating_sub(config.rekey_after)) / 2
            }
        };
        let entry = OutboundEntry {
            sa: OutboundSa::new(remote_index, suite, &outbound),
            used: false,
            rekey_at: now + rekey_delay,
            expires_at: now + config.reject_after,
        };
        let retransmit_at = now + config.handshake_retransmit_timeout;
        let give_up_at = now + config.handshake_timeout;
        if self.recent_peers.len() < MAX_RECENT_PEERS || self.recent_peers.contains_key(&ip) {
            self.recent_peers.insert(ip, now);
        }
        let peer = self.peers.entry(ip).or_default();
        peer.certificate = Some(PeerCertificate {
            der: certificate,
            expires_at: cert_expires_at,
        });
        peer.inbound_spis.push(local_index);
        let rekey = peer.outbound.is_some();
        match (role, finish) {
            (Role::Initiator, Some(finish)) => {
                peer.unconfirmed = Some(Unconfirmed {
                    inbound_spi: local_index,
                    finish,
                    retransmit_at,
                    give_up_at,
                    pending: Some(entry),
                });
            }
            _ => {
                peer.outbound = Some(entry);
                // Tells the initiator that its finish arrived.
                self.send_keepalive(ip);
            }
        }
        self.stats.handshakes_completed += 1;
        self.events.push_back(Event::SaEstablished {
            peer: ip,
            inbound_spi: local_index,
            outbound_spi: remote_index,
            suite,
            role,
            rekey,
        });
        self.flush_queue(ip);
    }

    fn flush_queue(&mut self, ip: IpAddr) {
        let Some(peer) = self.peers.get_mut(&ip) else {
            return;
        };
        let Some(current) = peer.outbound.as_mut() else {
            return;
        };
        while let Some(packet) = peer.queue.pop_front() {
            let mut payload = Vec::new();
            if current.sa.seal(&packet, &mut payload).is_err() {
                self.stats.queue_dropped += 1;
                continue;
            }
            current.used = true;
            self.transmits.push_back(Transmit {
                destination: ip,
                payload,
            });
        }
    }

    fn remove_peer(&mut self, ip: IpAddr, reason: AuthError) {
        let Some(peer) = self.peers.remove(&ip) else {
            return;
        };
        for spi in &peer.inbound_spis {
            self.inbound.remove(spi);
        }
        self.recent_peers.remove(&ip);
        self.initiators.retain(|_, p| p.peer != ip);
        self.responders.retain(|_, p| p.peer != ip);
        self.stats.queue_dropped += peer.queue.len() as u64;
        self.events
            .push_back(Event::PeerRemoved { peer: ip, reason });
    }

    /// Handles a packet that arrived in the clear from `source`: packets
    /// from the private prefix are dropped and counted, and reported once
    /// per source ([`Event::UnprotectedDropped`]).
    pub fn handle_unprotected(&mut self, _now: Instant, source: IpAddr) -> Verdict {
        match self.config.policy.action(source) {
            Action::Bypass => Verdict::Accept,
            Action::Protect => {
                self.stats.unprotected_dropped += 1;
                // Bounded: a flood of spoofed sources must not grow memory.
                if self.unprotected_seen.len() < MAX_UNPROTECTED_SOURCES
                    && self.unprotected_seen.insert(source)
                {
                    self.events
                        .push_back(Event::UnprotectedDropped { peer: source });
                }
                Verdict::Drop
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let drain = self.config.drain_timeout;
        let initiators = self
            .initiators
            .values()
            .map(|p| p.retransmit_at.min(p.give_up_at));
        let responders = self.responders.values().map(|p| p.give_up_at);
        let inbound = self.inbound.values().map(|e| e.deadline(drain));
        let responding: HashSet<IpAddr> = self.responders.values().map(|r| r.peer).collect();
        let peers = self.peers.iter().flat_map(|(ip, p)| {
            let busy = p.initiating.is_some() || p.unconfirmed.is_some() || responding.contains(ip);
            let outbound = p.outbound.as_ref().map(|o| {
                if o.used && !busy {
                    o.rekey_at.min(o.expires_at)
                } else {
                    o.expires_at
                }
            });
            let unconfirmed = p
                .unconfirmed
                .as_ref()
                .map(|u| u.retransmit_at.min(u.give_up_at));
            let certificate = p.certificate.as_ref().map(|c| c.expires_at);
            [outbound, unconfirmed, certificate].into_iter().flatten()
        });
        initiators
            .chain(responders)
            .chain(inbound)
            .chain(peers)
            .min()
    }

    /// Runs retransmissions, rekeys and expiries due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let retransmit_timeout = self.config.handshake_retransmit_timeout;
        let drain_timeout = self.config.drain_timeout;
        // Handshakes: retransmit or give up.
        let mut failed = Vec::new();
        for (index, pending) in &mut self.initiators {
            if now >= pending.give_up_at {
                failed.push((*index, pending.peer));
            } else if now >= pending.retransmit_at {
                pending.retransmit_at = now + retransmit_timeout;
                let payload = pending.message.clone();
                self.transmits.push_back(Transmit {
                    destination: pending.peer,
                    payload,
                });
            }
        }
        for (index, ip) in failed {
            self.initiators.remove(&index);
            if let Some(peer) = self.peers.get_mut(&ip) {
                peer.initiating = None;
            }
            self.handshake_failed(ip, HandshakeError::Timeout);
        }
        let expired: Vec<(u32, IpAddr)> = self
            .responders
            .iter()
            .filter(|(_, p)| now >= p.give_up_at)
            .map(|(i, p)| (*i, p.peer))
            .collect();
        for (index, ip) in expired {
            self.responders.remove(&index);
            // Packets queued for the peer belong to our own exchange: an
            // init that never finished (perhaps spoofed) does not drop them.
            self.stats.handshakes_failed += 1;
            self.events.push_back(Event::HandshakeFailed {
                peer: ip,
                error: HandshakeError::Timeout,
            });
            if self.peers.get(&ip).is_some_and(|p| !p.queue.is_empty()) {
                self.maybe_rekey(now, ip);
            }
        }
        self.recent_peers
            .retain(|_, at| now.saturating_duration_since(*at) < RECENT_PEER_MEMORY);
        self.init_rates
            .retain(|_, w| now.saturating_duration_since(w.start) < RATE_WINDOW);
        // Certificates that expired tear their peer down.
        let expired: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.certificate.as_ref().is_some_and(|c| now >= c.expires_at))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in expired {
            self.remove_peer(ip, AuthError::Expired);
        }
        // Inbound SAs: drained or at hard lifetime.
        let dead: Vec<u32> = self
            .inbound
            .iter()
            .filter(|(_, e)| now >= e.deadline(drain_timeout))
            .map(|(spi, _)| *spi)
            .collect();
        for spi in dead {
            if let Some(entry) = self.inbound.remove(&spi) {
                if let Some(peer) = self.peers.get_mut(&entry.peer) {
                    peer.inbound_spis.retain(|s| *s != spi);
                }
                self.events.push_back(Event::SaExpired {
                    peer: entry.peer,
                    spi,
                });
            }
        }
        // Outbound SAs and unconfirmed handshakes.
        let mut rekey = Vec::new();
        let mut gave_up = Vec::new();
        for (ip, peer) in &mut self.peers {
            if let Some(unconfirmed) = &mut peer.unconfirmed {
                if now >= unconfirmed.give_up_at {
                    gave_up.push((*ip, unconfirmed.inbound_spi));
                    peer.unconfirmed = None;
                } else if now >= unconfirmed.retransmit_at {
                    unconfirmed.retransmit_at = now + retransmit_timeout;
                    let payload = unconfirmed.finish.clone();
                    self.transmits.push_back(Transmit {
                        destination: *ip,
                        payload,
                    });
                }
            }
            if peer.outbound.as_ref().is_some_and(|o| now >= o.expires_at) {
                peer.outbound = peer.unconfirmed.as_mut().and_then(|u| u.pending.take());
            }
            if let Some(current) = &peer.outbound
                && current.used
                && now >= current.rekey_at
                && peer.initiating.is_none()
                && peer.unconfirmed.is_none()
            {
                rekey.push(*ip);
            }
        }
        for (ip, spi) in gave_up {
            if self
                .inbound
                .get(&spi)
                .is_some_and(|e| e.last_received_at.is_none())
            {
                self.inbound.remove(&spi);
                if let Some(peer) = self.peers.get_mut(&ip) {
                    peer.inbound_spis.retain(|s| *s != spi);
                }
            }
            self.handshake_failed(ip, HandshakeError::Timeout);
        }
        for ip in rekey {
            if !self.responding_proven(ip) {
                self.start_handshake(now, ip);
            }
        }
        // Forget peers with nothing left.
        let responding: HashSet<IpAddr> = self.responders.values().map(|r| r.peer).collect();
        self.peers.retain(|ip, p| {
            p.outbound.is_some()
                || p.unconfirmed.is_some()
                || p.initiating.is_some()
                || !p.inbound_spis.is_empty()
                || !p.queue.is_empty()
                || responding.contains(ip)
                || p.cookie.as_ref().is_some_and(|(_, at)| {
                    now.saturating_duration_since(*at) < COOKIE_SECRET_LIFETIME
                })
        });
    }
}
