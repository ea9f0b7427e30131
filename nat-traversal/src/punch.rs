//! Hole punching: ICE-like connectivity checks between two peers that
//! learned each other's candidates through a rendezvous (RFC 8445 §6–7,
//! simplified to one component and one local socket).
//!
//! Each side builds a checklist from the peer's [`Offer`]: one pair per
//! remote candidate, ordered by pair priority (RFC 8445 §6.1.2.3), plus
//! optional guessed ports next to the peer's server-reflexive port for
//! symmetric NATs (bounded by [`PunchConfig::max_guess_probes`]). Checks are
//! paced every [`PunchConfig::check_interval`]; each pair is re-probed every
//! [`PunchConfig::retransmit_interval`] up to
//! [`PunchConfig::max_probes_per_pair`] times, until
//! [`PunchConfig::deadline`].
//!
//! Probes are STUN Binding requests with `USERNAME` = `RFRAG:LFRAG` and
//! `MESSAGE-INTEGRITY` keyed with the receiver's password (RFC 8445 §7.2.2);
//! anything unauthenticated is dropped and counted. An authenticated
//! request is answered and triggers a check back to its source (a
//! peer-reflexive candidate, §7.3.1.4), which is what opens holes through
//! port-restricted NATs. The first authenticated success response from the
//! address probed wins: the session reports [`PunchEvent::Connected`].
//!
//! # Opening probes
//!
//! A probe that reaches a Linux masquerading NAT whose router accepts
//! datagrams to itself, before the host behind it has sent anything our
//! way, leaves a conntrack entry there that makes that NAT remap the
//! host's port toward us: its answers then come from a port our own
//! (port-restricted) NAT drops, and our probes keep refreshing the stale
//! entry. So, before its first full probe to a reflexive candidate, the
//! session sends *opening probes* with the low IP TTLs of
//! [`PunchConfig::opening_ttls`] ([`Transmit::ttl`]), one step every
//! [`PunchConfig::opening_interval`]: they leave our own NAT(s), opening
//! them toward the peer, and die before the peer's. With both sides' NATs
//! opened from the inside first, each side's full probes arrive as answers.
//! Full probes to reflexive candidates also wait for
//! [`PunchConfig::opening_hold`] (the two sides rarely start at the same
//! moment) unless the peer's authenticated request arrives first.
//! Host candidates get no opening probes (there is no NAT between hosts on
//! one LAN). An authenticated request from a pair's address proves the
//! peer's NATs open toward us: that pair's full probes start at once.
//!
//! # Patience: NATs one hop apart
//!
//! No TTL separates two NATs that are neighbours (one hop apart, as on a
//! shared carrier or campus network): a probe that leaves our NAT is
//! delivered to the peer's NAT itself, whatever TTL it has left, and if it
//! arrives before the peer's own first packet toward us has passed that
//! NAT, the entry it leaves makes the NAT remap the peer. Linux picks the
//! new port at random, so it cannot be guessed. Both sides' first packets
//! would have to cross in flight.
//!
//! With [`PunchConfig::patience`] a session whose deadline passed with no
//! path (it reports [`PunchEvent::Failed`] as before, so the caller relays)
//! tries once more, in turns, on the peer's server-reflexive candidates:
//!
//! 1. both sides send the peer nothing for [`Patience::quiet`] (longer than
//!    the NATs' UDP timeout), so every entry the failed checks left expires;
//! 2. the controlling side (the *opener*) sends its opening probes
//!    ([`PunchConfig::opening_ttls`]): they open its NATs toward the peer
//!    (and leave an entry at the peer's NAT, which is expected), and from
//!    then on, every [`Patience::refresh_interval`], a probe with an IP
//!    TTL one less than the highest opening TTL (its NAT depth): it
//!    refreshes the opener's own mappings and dies at its outermost NAT,
//!    before the peer's, so the entry at the peer's NAT is left to expire;
//! 3. the controlled side (the *responder*) waits another quiet period for
//!    that, then sends full checks for [`Patience::round`]; they leave its
//!    NAT with its usual port, arrive at the opener's NAT as answers, and
//!    the usual triggered check connects both sides
//!    ([`PunchEvent::Connected`], after the `Failed`). Further rounds
//!    follow after quiet periods twice as long each time (a NAT with a
//!    longer UDP timeout than [`Patience::quiet`]), up to
//!    [`Patience::rounds`].
//!
//! Linux keeps an expired conntrack entry until something looks it up or
//! its garbage collector reaches it, and a new flow from a host port takes
//! the public port of any entry of that host port it still finds, expired
//! or not. A port the first attempt was remapped to would so come back
//! (in the NAT matrix, half the trials failed this way). So a second
//! before the opener's opening and before each of the responder's rounds,
//! the session *primes*: it sends every address the first attempt probed
//! (host candidates included) a probe with the refresh TTL. The probe
//! dies at our outermost NAT, but that NAT looks its flow up first and so
//! collects the expired entry; nothing new is made there.
//!
//! It costs one opening per attempt, a refresh probe every few seconds
//! that never leaves our NATs, and a few rounds of checks; and the direct
//! path comes after about two quiet periods (70 s with the default
//! 35 s). Only authenticated checks ever make a path.
//! # Birthday probing
//!
//! Between a NAT that maps endpoint-dependently with random ports (a
//! "symmetric" NAT; Linux `masquerade random`/`fully-random`) and one that
//! maps endpoint-independently but filters by address and port (a
//! port-restricted cone), no candidate either side learned works: the
//! symmetric side's port towards the peer is one nobody observed, and the
//! cone drops it. With [`PunchConfig::birthday`] set, a session whose
//! offers show exactly that (see [`maps_per_destination`]) plays one of two
//! roles, Tailscale-style:
//!
//! - **open** (we are the symmetric side): ask the I/O shell for
//!   [`BirthdayConfig::sockets`] extra sockets ([`PunchSession::extra_sockets`],
//!   addressed as [`Socket::Extra`]) and send one probe from each to the
//!   peer's server-reflexive address, with the opening TTL (the largest of
//!   [`PunchConfig::opening_ttls`]) so that it opens a fresh random port of
//!   our NAT towards the peer and dies before the peer's NAT;
//! - **scan** (we are the cone side): send up to [`BirthdayConfig::probes`]
//!   authenticated probes to distinct random ports (1024–65535, from the
//!   session's random source) of the peer's public address, one every
//!   [`BirthdayConfig::interval`]. Each opens our filter towards that port.
//!
//! With N sockets and M probes the chance that some probe lands on an
//! opened port is about 1 − exp(−N·M / 64512) (256 × 1024: 98 %). A hit is
//! only a datagram: the symmetric side answers it only if it is
//! authenticated, and a pair becomes the path only through an
//! authenticated success response that arrives on the socket its request
//! left from, from the address it went to, as for every other pair.
//! Between two symmetric NATs the chance is about N·M / 64512² (both ports
//! must match), which is why that case is off unless
//! [`BirthdayConfig::both_symmetric`] asks for it (for measurements).
//!
//! It is off by default: probes to random ports of the peer's address look
//! like a port scan and, behind a carrier-grade NAT, land on other
//! subscribers; and the I/O shell must open the extra sockets (on the
//! primary socket's local address, any port), send each [`Transmit`] from
//! the socket its [`Transmit::source`] names, feed what they receive to
//! [`PunchSession::handle_input_on`], and carry the path's data on
//! [`PunchOutcome::local_socket`]. Without opening TTLs the extra sockets'
//! datagrams go out at full TTL. In the NAT matrix (port-restricted cone
//! against `masquerade fully-random`): direct 40 of 40 with the defaults
//! (medians 458 and 299 ms in two runs of 20), against 0 of 20 without.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::error::Error;
use crate::wire::signal::{Candidate, CandidateKind, Offer};
use crate::wire::stun::{self, Attribute, Class, Packet, Repr, TransactionId};
use crate::{Socket, Transmit};

/// Punch configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PunchConfig {
    /// Pacing between two checks (RFC 8445 §14.2 `Ta`).
    pub check_interval: Duration,
    /// Time before one pair is probed again.
    pub retransmit_interval: Duration,
    /// Probes per pair before it is given up.
    pub max_probes_per_pair: u32,
    /// Time after which the session fails.
    pub deadline: Duration,
    /// Ports guessed on each side of every remote server-reflexive port
    /// (0 disables guessing).
    pub port_guess_range: u16,
    /// Total probes allowed to guessed ports.
    pub max_guess_probes: u32,
    /// The IP TTLs of the opening probes sent to every reflexive
    /// candidate before its full probes, in order (see the
    /// [module docs](self#opening-probes)); empty turns them off. Default
    /// [`DEFAULT_OPENING_TTLS`].
    pub opening_ttls: Vec<u8>,
    /// Time between two steps of [`PunchConfig::opening_ttls`], and from
    /// the last step to the first full probe.
    pub opening_interval: Duration,
    /// With opening probes on: the least time from the start of the
    /// session to the first full probe to a reflexive candidate, unless an
    /// authenticated request from the peer arrives earlier (the peer's
    /// checks have started, so its openings went out). It covers the skew
    /// between the two sides' starts, and the difference between their
    /// numbers of opening steps: the side that starts first, or has fewer
    /// NATs to open (see [`crate::depth::opening_ttls`]), must not reach
    /// the peer's outermost NAT before the peer has opened it. Default
    /// [`DEFAULT_OPENING_HOLD`].
    pub opening_hold: Duration,
    /// What to do once the deadline passed with no path: `None` (the
    /// default) ends the session with [`PunchEvent::Failed`]; `Some` reports
    /// the failure and then tries once more in turns (see the
    /// [module docs](self#patience-nats-one-hop-apart)). Needs opening
    /// probes ([`PunchConfig::opening_ttls`], from the NAT depth).
    pub patience: Option<Patience>,
    /// Birthday probing between a symmetric NAT and a cone (see the
    /// [module docs](self#birthday-probing), which say what the I/O shell
    /// must do for it); `None` (the default) turns it off.
    pub birthday: Option<BirthdayConfig>,
}

/// The budget of [birthday probing](self#birthday-probing): per session,
/// at most [`BirthdayConfig::sockets`] extra sockets and one datagram from
/// each on the symmetric side, at most [`BirthdayConfig::probes`] probes on
/// the cone side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirthdayConfig {
    /// Extra sockets the symmetric side opens (each one datagram). Default
    /// 256.
    pub sockets: u16,
    /// Probes to random ports the cone side sends. Default 1024.
    pub probes: u32,
    /// Time between two of the cone side's probes, and between two of the
    /// symmetric side's batches of [`BirthdayConfig::sockets_per_step`]
    /// datagrams. Default 2 ms (1024 probes take about 2 s; 500 a second
    /// of 100-byte datagrams is about 400 kbit/s).
    pub interval: Duration,
    /// Extra-socket datagrams the symmetric side sends each
    /// [`BirthdayConfig::interval`]: it opens its ports well before the
    /// cone side's probes arrive. Default 8 (256 sockets in 64 ms).
    pub sockets_per_step: u16,
    /// Also when both offers show endpoint-dependent mapping: the
    /// controlling side opens, the other scans. The chance of a hit is
    /// then about N·M / 64512² (0.006 % with the defaults); for
    /// measurements only. Default false.
    pub both_symmetric: bool,
}

impl Default for BirthdayConfig {
    fn default() -> Self {
        BirthdayConfig {
            sockets: 256,
            probes: 1024,
            interval: Duration::from_millis(2),
            sockets_per_step: 8,
            both_symmetric: false,
        }
    }
}

/// A session's part in [birthday probing](self#birthday-probing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BirthdayRole {
    /// Extra sockets, one datagram each to the peer's reflexive address.
    Open {
        /// The peer's server-reflexive address.
        target: SocketAddr,
    },
    /// Probes to random ports of the peer's public address.
    Scan {
        /// The peer's public address.
        target: IpAddr,
    },
}

/// Whether `offer` shows endpoint-dependent ("symmetric") mapping: two
/// server-reflexive candidates on one address with different ports (a
/// peer offers every observer's view of its address to say so).
pub fn maps_per_destination(offer: &Offer) -> bool {
    let srflx: Vec<SocketAddr> = offer
        .candidates
        .iter()
        .filter(|c| c.kind == CandidateKind::ServerReflexive)
        .map(|c| c.address)
        .collect();
    srflx.iter().any(|a| {
        srflx
            .iter()
            .any(|b| a.ip() == b.ip() && a.port() != b.port())
    })
}

/// The part a session from `local` to `remote` plays in birthday probing
/// with `config` (`None`: none). `controlling`: our name sorts first.
pub fn birthday_role(
    config: &BirthdayConfig,
    local: &Offer,
    remote: &Offer,
    controlling: bool,
) -> Option<BirthdayRole> {
    let srflx = |o: &Offer| {
        o.candidates
            .iter()
            .find(|c| c.kind == CandidateKind::ServerReflexive)
            .map(|c| c.address)
    };
    // Only a NATed side plays (a public host is reached without this).
    srflx(local)?;
    let remote_srflx = srflx(remote)?;
    let open = BirthdayRole::Open {
        target: remote_srflx,
    };
    let scan = BirthdayRole::Scan {
        target: remote_srflx.ip(),
    };
    match (maps_per_destination(local), maps_per_destination(remote)) {
        (true, false) => Some(open),
        (false, true) => Some(scan),
        (true, true) if config.both_symmetric => Some(if controlling { open } else { scan }),
        _ => None,
    }
}

/// The patient attempt after a failed punch (see the
/// [module docs](self#patience-nats-one-hop-apart)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// Silence toward the peer before the opener opens, and before the
    /// responder's first round: more than the UDP timeout of both sides'
    /// NATs for a flow that saw no answer (Linux: 30 s).
    pub quiet: Duration,
    /// Time between two of the opener's refresh probes: less than its
    /// NATs' UDP timeout.
    pub refresh_interval: Duration,
    /// Length of one round of the responder's checks.
    pub round: Duration,
    /// Rounds at most; round `k` follows `quiet × 2^k` of silence.
    pub rounds: u32,
}

/// The default [`Patience`]: 35 s quiet (Linux's 30 s UDP timeout and
/// some skew), refresh every 5 s, three rounds of 2 s (after 35, 70 and
/// 140 s of silence), so a path comes about 75 s after the failure and the
/// attempt ends after about 290 s.
pub const DEFAULT_PATIENCE: Patience = Patience {
    quiet: Duration::from_secs(35),
    refresh_interval: Duration::from_secs(5),
    round: Duration::from_secs(2),
    rounds: 3,
};

/// The default [`PunchConfig::opening_hold`]: the opening steps of a peer
/// behind [`crate::depth::MAX_DEPTH`] NATs (4 × 20 ms) and 20 ms of skew.
/// In the NAT matrix a home NAT behind a carrier NAT meeting a plain home
/// NAT, all accepting packets to themselves, with each side's steps from
/// its NAT depth: direct in 10 of 20 trials without a hold (the plain
/// side's full probes met the carrier NAT as the peer's TTL-3 step went
/// out), 20 of 20 with it.
pub const DEFAULT_OPENING_HOLD: Duration = Duration::from_millis(100);

/// The default [`PunchConfig::opening_ttls`]: 2 leaves a home NAT and
/// dies at the next router; 3 also leaves a carrier-grade NAT behind it.
/// On the Internet both die long before the peer's NAT; only a NAT one or
/// two hops from ours (neighbours) is reached.
pub const DEFAULT_OPENING_TTLS: [u8; 2] = [2, 3];

impl Default for PunchConfig {
    fn default() -> Self {
        PunchConfig {
            check_interval: Duration::from_millis(20),
            retransmit_interval: Duration::from_millis(200),
            max_probes_per_pair: 25,
            deadline: Duration::from_secs(5),
            port_guess_range: 0,
            max_guess_probes: 64,
            opening_ttls: DEFAULT_OPENING_TTLS.to_vec(),
            opening_interval: Duration::from_millis(20),
            opening_hold: DEFAULT_OPENING_HOLD,
            patience: None,
            birthday: None,
        }
    }
}

/// A successful punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchOutcome {
    /// The peer's address on the working path.
    pub remote: SocketAddr,
    /// How that address was learned.
    pub remote_kind: CandidateKind,
    /// Whether it was a guessed port.
    pub guessed: bool,
    /// Our socket on the working path: [`Socket::Primary`], or the
    /// [`Socket::Extra`] a birthday probe found (send the path's data from
    /// it).
    pub local_socket: Socket,
    /// Whether birthday probing found it.
    pub birthday: bool,
    /// Our address as the peer saw it (`XOR-MAPPED-ADDRESS`).
    pub local_reflexive: Option<SocketAddr>,
    /// From start to the first authenticated packet from the peer.
    pub time_to_first_packet: Duration,
    /// From start to the winning response.
    pub time_to_connect: Duration,
    /// Probes sent so far.
    pub probes_sent: u32,
    /// Whether the patient attempt found the path, after a failure
    /// ([`PunchConfig::patience`]).
    pub patient: bool,
}

/// Why a punch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PunchFailure {
    /// The deadline passed with no authenticated answer.
    DeadlineExpired {
        /// Probes sent.
        probes_sent: u32,
        /// Authenticated requests from the peer that did reach us.
        requests_received: u32,
    },
}

/// Events from [`PunchSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PunchEvent {
    /// A direct path works.
    Connected(PunchOutcome),
    /// No direct path: fall back to a relay.
    Failed(PunchFailure),
}

/// Counters of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PunchMetrics {
    /// Probes (Binding requests) sent, triggered ones included.
    pub probes_sent: u32,
    /// Probes to guessed ports.
    pub guess_probes_sent: u32,
    /// Opening probes (low IP TTL) sent; not in `probes_sent`.
    pub opening_probes_sent: u32,
    /// The patient opener's refresh probes (low IP TTL); not in
    /// `probes_sent` nor `opening_probes_sent`.
    pub refresh_probes_sent: u32,
    /// Birthday datagrams sent: extra-socket openings and probes to random
    /// ports (also counted in `probes_sent` or `opening_probes_sent`).
    pub birthday_probes_sent: u32,
    /// Authenticated requests answered.
    pub responses_sent: u32,
    /// Authenticated requests received.
    pub requests_received: u32,
    /// STUN inputs dropped: bad credentials, unknown transaction, malformed.
    pub rejected: u32,
}

/// What a probe is for: how it is counted in [`PunchMetrics`] and the IP
/// TTL it is sent with.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// A connectivity check, with the socket's TTL.
    Check,
    /// Opens our own NATs; dies before the peer's.
    Opening(u8),
    /// Keeps our mapping alive or collects a stale conntrack entry during
    /// a patient attempt; dies at our outermost NAT.
    Refresh(u8),
}

#[derive(Debug, Clone)]
struct Pair {
    local: Socket,
    remote: SocketAddr,
    kind: CandidateKind,
    priority: u64,
    guessed: bool,
    /// Found by birthday probing.
    birthday: bool,
    /// Not probed by the paced checks (a birthday datagram's pair, until
    /// the peer's authenticated request comes from it).
    passive: bool,
    probes: u32,
    next_probe_at: Instant,
}

/// Birthday probing in progress.
#[derive(Debug)]
struct Birthday {
    role: BirthdayRole,
    config: BirthdayConfig,
    next_at: Instant,
    /// Datagrams sent so far (sockets opened or ports probed).
    sent: u32,
    /// Ports probed (scan), so none is probed twice.
    ports: HashSet<u16>,
    /// The opening TTL of the extra sockets' datagrams.
    ttl: Option<u8>,
}

impl Birthday {
    fn budget(&self) -> u32 {
        match self.role {
            BirthdayRole::Open { .. } => u32::from(self.config.sockets),
            BirthdayRole::Scan { .. } => self.config.probes.min(64_512),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Checking,
    /// The deadline passed ([`PunchEvent::Failed`] reported): the patient
    /// attempt runs.
    Patient,
    Connected,
    Failed,
}

/// The schedule of a patient attempt, from the failure.
#[derive(Debug, Clone)]
struct PatientPlan {
    /// Whether we open (controlling) or run the rounds (controlled).
    opener: bool,
    /// The reflexive pairs the attempt is about.
    pairs: Vec<usize>,
    /// Every address the first attempt probed (at most [`MAX_PRIMES`]):
    /// nothing else may go there meanwhile, and priming collects their
    /// flows.
    quiet: Vec<SocketAddr>,
    /// The opener's refresh TTL (0: none).
    refresh_ttl: u8,
    /// The opener's next refresh probe.
    next_refresh_at: Instant,
    /// The responder's rounds: start and end, in order.
    rounds: VecDeque<(Instant, Instant)>,
    /// When to send the priming probes (before the opening, before each
    /// round).
    primes: VecDeque<Instant>,
    /// The end of the attempt.
    ends_at: Instant,
}

/// How many outstanding transaction ids are remembered.
const MAX_OUTSTANDING: usize = 256;

/// How long before the patient opener's opening and the responder's
/// rounds the priming probes go (see the module docs).
const PRIME_LEAD: Duration = Duration::from_secs(1);

/// Priming probes per patient step at most.
const MAX_PRIMES: usize = 64;

/// One punch attempt towards one peer. Feed it every STUN datagram from
/// the shared socket ([`PunchSession::handle_input`] says whether it was
/// ours); send what [`PunchSession::poll_transmit`] returns; call
/// [`PunchSession::handle_timeout`] at [`PunchSession::poll_timeout`].
/// After the outcome it still answers the peer's probes, so the peer can
/// finish too.
#[derive(Debug)]
pub struct PunchSession {
    config: PunchConfig,
    local_ufrag: String,
    local_password: Vec<u8>,
    remote_ufrag: String,
    remote_password: Vec<u8>,
    local_priority: u32,
    controlling: bool,
    pairs: Vec<Pair>,
    outstanding: VecDeque<(TransactionId, usize)>,
    started_at: Instant,
    deadline_at: Instant,
    next_check_at: Instant,
    first_packet_at: Option<Instant>,
    state: State,
    rng: ChaCha8Rng,
    metrics: PunchMetrics,
    transmits: VecDeque<Transmit>,
    events: VecDeque<PunchEvent>,
    /// Opening probes still to send: when, to which pair, with which TTL.
    opening: VecDeque<(Instant, usize, u8)>,
    /// The patient attempt, once the deadline passed (with patience on).
    patient: Option<PatientPlan>,
    birthday: Option<Birthday>,
    /// Transaction ids remembered: [`MAX_OUTSTANDING`] and the birthday
    /// budget.
    max_outstanding: usize,
}

/// Pair priority (RFC 8445 §6.1.2.3), `g` the controlling side's candidate.
pub fn pair_priority(g: u32, d: u32) -> u64 {
    let (g, d) = (u64::from(g), u64::from(d));
    (g.min(d) << 32) + 2 * g.max(d) + u64::from(g > d)
}

impl PunchSession {
    /// Start punching at `now` from our `local` offer towards the peer's
    /// `remote` offer. The side whose name sorts first is controlling.
    /// Transaction ids come from the operating system's random source.
    ///
    /// # Panics
    /// If the operating system's random source fails (as `std`'s
    /// `HashMap::new` does).
    pub fn new(
        now: Instant,
        config: PunchConfig,
        local: &Offer,
        remote: &Offer,
    ) -> Result<PunchSession, Error> {
        PunchSession::with_rng(config, local, remote, now, crate::os_rng())
    }

    /// [`PunchSession::new`] with **predictable** randomness from `seed`, for tests and simulators only; production code uses
    /// [`PunchSession::new`].
    pub fn new_with_insecure_seed(
        now: Instant,
        config: PunchConfig,
        local: &Offer,
        remote: &Offer,
        seed: u64,
    ) -> Result<PunchSession, Error> {
        PunchSession::with_rng(config, local, remote, now, ChaCha8Rng::seed_from_u64(seed))
    }

    fn with_rng(
        config: PunchConfig,
        local: &Offer,
        remote: &Offer,
        now: Instant,
        rng: ChaCha8Rng,
    ) -> Result<PunchSession, Error> {
        if remote.candidates.is_empty() {
            return Err(Error::InvalidConfig {
                what: "peer offered no candidates",
            });
        }
        if remote.password.is_empty() || local.password.is_empty() {
            return Err(Error::InvalidConfig {
                what: "empty password",
            });
        }
        let controlling = local.from < remote.from;
        let birthday = config.birthday.as_ref().and_then(|b| {
            let role = birthday_role(b, local, remote, controlling)?;
            Some(Birthday {
                role,
                config: b.clone(),
                next_at: now,
                sent: 0,
                ports: HashSet::new(),
                ttl: config.opening_ttls.iter().copied().max(),
            })
        });
        let max_outstanding =
            MAX_OUTSTANDING + birthday.as_ref().map_or(0, |b| b.budget() as usize);
        // All local candidates share one socket; its best priority stands
        // for the local side of every pair.
        let local_priority = local
            .candidates
            .iter()
            .map(|c| c.priority)
            .max()
            .unwrap_or_else(|| {
                Candidate::new(CandidateKind::Host, remote.candidates[0].address, 0).priority
            });
        let mut session = PunchSession {
            local_ufrag: local.ufrag.clone(),
            local_password: local.password.clone(),
            remote_ufrag: remote.ufrag.clone(),
            remote_password: remote.password.clone(),
            local_priority,
            controlling,
            pairs: Vec::new(),
            outstanding: VecDeque::new(),
            started_at: now,
            deadline_at: now + config.deadline,
            next_check_at: now,
            first_packet_at: None,
            state: State::Checking,
            rng,
            metrics: PunchMetrics::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            opening: VecDeque::new(),
            patient: None,
            birthday,
            max_outstanding,
            config,
        };
        for c in &remote.candidates {
            session.add_pair(Socket::Primary, c.address, c.kind, c.priority, false, now);
        }
        if session.config.port_guess_range > 0 {
            let srflx: Vec<Candidate> = remote
                .candidates
                .iter()
                .filter(|c| c.kind == CandidateKind::ServerReflexive)
                .copied()
                .collect();
            // Nearest ports first, alternating above and below.
            for step in 1..=session.config.port_guess_range {
                for c in &srflx {
                    for port in [
                        c.address.port().checked_add(step),
                        c.address.port().checked_sub(step),
                    ]
                    .into_iter()
                    .flatten()
                    .filter(|p| *p != 0)
                    {
                        let addr = SocketAddr::new(c.address.ip(), port);
                        session.add_pair(
                            Socket::Primary,
                            addr,
                            CandidateKind::PeerReflexive,
                            0,
                            true,
                            now,
                        );
                    }
                }
            }
        }
        let full_probes_at = session.schedule_opening(now);
        // The cone side's probes go out with its full probes (after the
        // hold); the symmetric side opens its ports at once.
        if let Some(b) = session.birthday.as_mut()
            && matches!(b.role, BirthdayRole::Scan { .. })
        {
            b.next_at = full_probes_at;
        }
        session.handle_timeout(now);
        Ok(session)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_pair(
        &mut self,
        local: Socket,
        remote: SocketAddr,
        kind: CandidateKind,
        remote_priority: u32,
        guessed: bool,
        now: Instant,
    ) -> usize {
        if let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.remote == remote && p.local == local)
        {
            return i;
        }
        let priority = if guessed {
            0
        } else if self.controlling {
            pair_priority(self.local_priority, remote_priority)
        } else {
            pair_priority(remote_priority, self.local_priority)
        };
        self.pairs.push(Pair {
            local,
            remote,
            kind,
            priority,
            guessed,
            birthday: false,
            passive: false,
            probes: 0,
            next_probe_at: now,
        });
        self.pairs.len() - 1
    }

    /// Queues the opening probes of every reflexive (non-host, not
    /// guessed) pair and holds those pairs' full probes until after them;
    /// returns when those full probes start.
    fn schedule_opening(&mut self, now: Instant) -> Instant {
        let steps = self.config.opening_ttls.len();
        if steps == 0 {
            return now;
        }
        let interval = self.config.opening_interval;
        let mut at = now;
        for &ttl in &self.config.opening_ttls {
            for (i, p) in self.pairs.iter().enumerate() {
                if p.kind != CandidateKind::Host && !p.guessed {
                    self.opening.push_back((at, i, ttl));
                }
            }
            at += interval;
        }
        let at = at.max(now + self.config.opening_hold);
        for p in &mut self.pairs {
            if p.kind != CandidateKind::Host && !p.guessed {
                p.next_probe_at = at;
            }
        }
        at
    }

    /// Sends the birthday datagrams due at `now`, within the budget.
    fn send_birthday(&mut self, now: Instant) {
        loop {
            let Some(b) = self.birthday.as_mut() else {
                return;
            };
            if b.sent >= b.budget() || b.next_at > now {
                return;
            }
            let ttl = b.ttl;
            let (local, remote) = match b.role {
                BirthdayRole::Open { target } => {
                    let Ok(index) = u16::try_from(b.sent) else {
                        return;
                    };
                    if (index + 1) % b.config.sockets_per_step.max(1) == 0 {
                        b.next_at += b.config.interval;
                    }
                    (Socket::Extra(index), target)
                }
                BirthdayRole::Scan { target } => {
                    // Distinct random ports above the well-known range.
                    let port = loop {
                        let port = 1024 + (self.rng.next_u32() % 64_512) as u16;
                        if b.ports.insert(port) {
                            break port;
                        }
                    };
                    b.next_at += b.config.interval;
                    (Socket::Primary, SocketAddr::new(target, port))
                }
            };
            b.sent += 1;
            if self
                .pairs
                .iter()
                .any(|p| p.local == local && p.remote == remote)
            {
                // A candidate the paced checks probe already.
                continue;
            }
            let open = local != Socket::Primary;
            let i = self.add_pair(local, remote, CandidateKind::PeerReflexive, 0, false, now);
            let pair = &mut self.pairs[i];
            pair.birthday = true;
            pair.passive = true;
            if !open {
                pair.probes = 1;
            }
            self.metrics.birthday_probes_sent += 1;
            let kind = match ttl {
                Some(ttl) if open => Probe::Opening(ttl),
                _ => Probe::Check,
            };
            self.send_probe(i, kind);
        }
    }

    /// How many extra sockets ([`Socket::Extra`] 0 to this − 1) the I/O
    /// shell must open before sending this session's transmits: bound to
    /// the primary socket's local address, any port. 0 unless the session
    /// opens ports for [birthday probing](self#birthday-probing). Feed
    /// what they receive to [`PunchSession::handle_input_on`].
    pub fn extra_sockets(&self) -> u16 {
        match &self.birthday {
            Some(Birthday {
                role: BirthdayRole::Open { .. },
                config,
                ..
            }) => config.sockets,
            _ => 0,
        }
    }

    /// This session's part in birthday probing, if any.
    pub fn birthday_role(&self) -> Option<BirthdayRole> {
        self.birthday.as_ref().map(|b| b.role)
    }

    /// Sends the opening probes due at `now`.
    fn send_opening(&mut self, now: Instant) {
        while let Some(&(at, index, ttl)) = self.opening.front() {
            if at > now {
                break;
            }
            self.opening.pop_front();
            self.send_probe(index, Probe::Opening(ttl));
        }
    }

    /// Counters so far.
    pub fn metrics(&self) -> PunchMetrics {
        self.metrics
    }

    /// Whether checks are still running (the first attempt; not the
    /// patient one).
    pub fn is_checking(&self) -> bool {
        self.state == State::Checking
    }

    /// Whether the patient attempt runs: the first attempt failed and
    /// [`PunchConfig::patience`] is on. The caller should send nothing else
    /// to the peer's reflexive endpoints meanwhile (a datagram reaching a
    /// neighbour NAT first spoils the attempt).
    pub fn is_patient(&self) -> bool {
        self.state == State::Patient
    }

    /// The endpoints the patient attempt waits on (none unless it runs).
    pub fn quiet_endpoints(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.patient
            .as_ref()
            .filter(|_| self.state == State::Patient)
            .into_iter()
            .flat_map(|p| p.quiet.iter().copied())
    }

    /// Whether the patient attempt runs and waits on `remote`: one of the
    /// peer's candidates (host ones too: a flow from our port that stays
    /// alive there lends its remapped port to the opening) that the first
    /// attempt probed. Nothing else should go there.
    pub fn is_quiet_toward(&self, remote: SocketAddr) -> bool {
        self.state == State::Patient
            && self
                .patient
                .as_ref()
                .is_some_and(|p| p.quiet.contains(&remote))
    }

    fn probe(&mut self, index: usize, now: Instant) {
        let pair = &mut self.pairs[index];
        pair.probes += 1;
        pair.passive = false;
        pair.next_probe_at = now + self.config.retransmit_interval;
        self.send_probe(index, Probe::Check);
    }

    /// Queues one authenticated Binding request to pair `index`, counted
    /// and sent with the IP TTL its `kind` asks for.
    fn send_probe(&mut self, index: usize, kind: Probe) {
        let mut id = [0; 12];
        self.rng.fill_bytes(&mut id);
        let id = TransactionId(id);
        let pair = &self.pairs[index];
        let mut req = Repr::binding_request(id);
        req.attributes.push(Attribute::Username(format!(
            "{}:{}",
            self.remote_ufrag, self.local_ufrag
        )));
        req.attributes.push(Attribute::Priority(
            Candidate::new(CandidateKind::PeerReflexive, pair.remote, 0).priority,
        ));
        req.message_integrity = true;
        req.fingerprint = true;
        let Ok(payload) = req.to_bytes(&self.remote_password) else {
            debug_assert!(false, "probe does not encode");
            return;
        };
        let ttl = match kind {
            Probe::Check => {
                self.metrics.probes_sent += 1;
                if pair.guessed {
                    self.metrics.guess_probes_sent += 1;
                }
                None
            }
            Probe::Opening(ttl) => {
                self.metrics.opening_probes_sent += 1;
                Some(ttl)
            }
            Probe::Refresh(ttl) => {
                self.metrics.refresh_probes_sent += 1;
                Some(ttl)
            }
        };
        if self.outstanding.len() >= self.max_outstanding {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((id, index));
        self.transmits.push_back(Transmit {
            source: pair.local,
            destination: pair.remote,
            payload,
            ttl,
        });
    }

    fn eligible(&self, pair: &Pair, now: Instant) -> bool {
        pair.probes < self.config.max_probes_per_pair
            && !pair.passive
            && pair.next_probe_at <= now
            && (!pair.guessed || self.metrics.guess_probes_sent < self.config.max_guess_probes)
    }

    /// Send the next paced check, or fail once the deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Patient {
            return self.patient_timeout(now);
        }
        if self.state != State::Checking {
            return;
        }
        if now >= self.deadline_at {
            self.state = State::Failed;
            self.events
                .push_back(PunchEvent::Failed(PunchFailure::DeadlineExpired {
                    probes_sent: self.metrics.probes_sent,
                    requests_received: self.metrics.requests_received,
                }));
            self.start_patience(now);
            return;
        }
        self.send_opening(now);
        self.send_birthday(now);
        if now < self.next_check_at {
            return;
        }
        let best = (0..self.pairs.len())
            .filter(|&i| self.eligible(&self.pairs[i], now))
            .min_by_key(|&i| {
                let p = &self.pairs[i];
                (std::cmp::Reverse(p.priority), p.probes, i)
            });
        if let Some(i) = best {
            self.probe(i, now);
            self.next_check_at = now + self.config.check_interval;
        } else {
            self.next_check_at = self
                .pairs
                .iter()
                .filter(|p| p.probes < self.config.max_probes_per_pair)
                .map(|p| p.next_probe_at)
                .min()
                .unwrap_or(self.deadline_at)
                .max(now + self.config.check_interval);
        }
    }

    /// Plans the patient attempt, if [`PunchConfig::patience`] is on and
    /// there is something to try.
    fn start_patience(&mut self, now: Instant) {
        let Some(patience) = self.config.patience else {
            return;
        };
        let Some(&top) = self.config.opening_ttls.iter().max() else {
            return;
        };
        let pairs: Vec<usize> = (0..self.pairs.len())
            .filter(|&i| {
                let p = &self.pairs[i];
                p.kind == CandidateKind::ServerReflexive && !p.guessed
            })
            .collect();
        if pairs.is_empty() || patience.rounds == 0 {
            return;
        }
        self.opening.clear();
        let opens_at = now + patience.quiet;
        let mut rounds = VecDeque::new();
        let mut silence = patience.quiet;
        let mut at = opens_at;
        for _ in 0..patience.rounds {
            let start = at + silence;
            rounds.push_back((start, start + patience.round));
            at = start + patience.round;
            silence = silence.saturating_mul(2);
        }
        // Two more seconds for the skew between the two sides' failures.
        let ends_at = at + Duration::from_secs(2);
        let opener = self.controlling;
        let lead = PRIME_LEAD.min(patience.quiet);
        let primes = if opener {
            VecDeque::from([opens_at - lead])
        } else {
            rounds.iter().map(|&(start, _)| start - lead).collect()
        };
        if opener {
            let mut at = opens_at;
            for &ttl in &self.config.opening_ttls {
                for &i in &pairs {
                    self.opening.push_back((at, i, ttl));
                }
                at += self.config.opening_interval;
            }
        }
        let quiet = self
            .pairs
            .iter()
            .filter(|p| p.probes > 0)
            .map(|p| p.remote)
            .take(MAX_PRIMES)
            .collect();
        self.patient = Some(PatientPlan {
            opener,
            pairs,
            quiet,
            refresh_ttl: top.saturating_sub(1),
            next_refresh_at: opens_at + patience.refresh_interval,
            rounds: if opener { VecDeque::new() } else { rounds },
            primes,
            ends_at,
        });
        self.state = State::Patient;
    }

    /// The patient attempt's timers: the opener's openings and refreshes,
    /// the responder's rounds of checks.
    fn patient_timeout(&mut self, now: Instant) {
        let Some(plan) = self.patient.as_mut() else {
            self.state = State::Failed;
            return;
        };
        if now >= plan.ends_at {
            self.state = State::Failed;
            self.opening.clear();
            return;
        }
        let mut prime = false;
        while plan.primes.front().is_some_and(|&at| at <= now) {
            plan.primes.pop_front();
            prime = plan.refresh_ttl > 0;
        }
        if prime {
            let ttl = plan.refresh_ttl;
            // Every address the first attempt sent to (those flows' entries
            // are the ones to collect), a bounded number.
            let probed: Vec<usize> = (0..self.pairs.len())
                .filter(|&i| self.pairs[i].probes > 0)
                .take(MAX_PRIMES)
                .collect();
            for i in probed {
                self.send_probe(i, Probe::Refresh(ttl));
            }
        }
        let Some(plan) = self.patient.as_mut() else {
            return;
        };
        if plan.opener {
            let refresh = plan.refresh_ttl > 0 && now >= plan.next_refresh_at;
            let ttl = plan.refresh_ttl;
            let pairs = plan.pairs.clone();
            if refresh {
                let interval = self.config.patience.map_or(Duration::from_secs(5), |p| {
                    p.refresh_interval.max(Duration::from_millis(100))
                });
                while plan.next_refresh_at <= now {
                    plan.next_refresh_at += interval;
                }
            }
            self.send_opening(now);
            if refresh {
                for i in pairs {
                    self.send_probe(i, Probe::Refresh(ttl));
                }
            }
            return;
        }
        while plan.rounds.front().is_some_and(|&(_, end)| end <= now) {
            plan.rounds.pop_front();
        }
        let Some(&(start, _)) = plan.rounds.front() else {
            return;
        };
        if now < start || now < self.next_check_at {
            return;
        }
        let pairs = plan.pairs.clone();
        // A new round: every pair's checks start over.
        for &i in &pairs {
            let p = &mut self.pairs[i];
            if p.next_probe_at < start {
                p.probes = 0;
                p.next_probe_at = start;
            }
        }
        let best = pairs
            .iter()
            .copied()
            .filter(|&i| self.eligible(&self.pairs[i], now))
            .min_by_key(|&i| (self.pairs[i].probes, i));
        if let Some(i) = best {
            self.probe(i, now);
        }
        self.next_check_at = now + self.config.check_interval;
    }

    /// When the patient attempt next needs [`PunchSession::handle_timeout`].
    fn patient_wake(&self) -> Option<Instant> {
        let plan = self.patient.as_ref()?;
        let mut next = plan.ends_at;
        if plan.refresh_ttl > 0
            && let Some(&at) = plan.primes.front()
        {
            next = next.min(at);
        }
        if plan.opener {
            if plan.refresh_ttl > 0 {
                next = next.min(plan.next_refresh_at);
            }
            if let Some(&(at, _, _)) = self.opening.front() {
                next = next.min(at);
            }
        } else if let Some(&(start, _)) = plan.rounds.front() {
            let probe = plan
                .pairs
                .iter()
                .map(|&i| &self.pairs[i])
                .filter(|p| p.next_probe_at >= start && p.probes < self.config.max_probes_per_pair)
                .map(|p| p.next_probe_at)
                .min()
                .unwrap_or(start);
            next = next.min(probe.max(start).max(self.next_check_at));
        }
        Some(next)
    }

    /// Handle a datagram from `from` to the primary socket. Returns whether
    /// it was an authenticated message of this session.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        self.handle_input_on(now, Socket::Primary, from, bytes)
    }

    /// [`PunchSession::handle_input`] for a datagram that arrived on
    /// `socket` (one of the [extra sockets](PunchSession::extra_sockets)).
    pub fn handle_input_on(
        &mut self,
        now: Instant,
        socket: Socket,
        from: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let Ok(packet) = Packet::new_checked(bytes) else {
            return false;
        };
        let Ok(msg) = Repr::parse(&packet) else {
            self.metrics.rejected += 1;
            return false;
        };
        if !msg.is_modern() || msg.method != stun::Method::BINDING {
            return false;
        }
        match msg.class {
            Class::Request => self.handle_request(now, socket, from, &packet, &msg),
            Class::Success => self.handle_success(now, socket, from, &packet, &msg),
            _ => false,
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        socket: Socket,
        from: SocketAddr,
        packet: &Packet<&[u8]>,
        msg: &Repr,
    ) -> bool {
        let expected = format!("{}:{}", self.local_ufrag, self.remote_ufrag);
        if msg.username() != Some(expected.as_str())
            || packet.verify_integrity(&self.local_password).is_err()
        {
            self.metrics.rejected += 1;
            return false;
        }
        self.metrics.requests_received += 1;
        self.first_packet_at.get_or_insert(now);
        let mut resp = Repr::binding_request(msg.transaction_id);
        resp.class = Class::Success;
        resp.attributes.push(Attribute::XorMappedAddress(from));
        resp.message_integrity = true;
        resp.fingerprint = true;
        if let Ok(payload) = resp.to_bytes(&self.local_password) {
            self.metrics.responses_sent += 1;
            self.transmits.push_back(Transmit {
                source: socket,
                destination: from,
                payload,
                ttl: None,
            });
        }
        if matches!(self.state, State::Checking | State::Patient) {
            // Triggered check (RFC 8445 §7.3.1.4): probe the source now.
            let priority = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    Attribute::Priority(p) => Some(*p),
                    _ => None,
                })
                .unwrap_or(0);
            let i = self.add_pair(
                socket,
                from,
                CandidateKind::PeerReflexive,
                priority,
                false,
                now,
            );
            // The peer's checks have started (its openings went out) and
            // our NATs let it in: no need to open or hold any longer.
            self.opening.retain(|&(_, j, _)| j != i);
            for p in &mut self.pairs {
                if p.probes == 0 {
                    p.next_probe_at = p.next_probe_at.min(now);
                }
            }
            // The patient attempt's answer comes after the first attempt
            // used up the pair's probes: an authenticated request is worth
            // a check back whatever the count.
            if self.pairs[i].probes < self.config.max_probes_per_pair
                || self.state == State::Patient
            {
                self.probe(i, now);
            }
        }
        true
    }

    fn handle_success(
        &mut self,
        now: Instant,
        socket: Socket,
        from: SocketAddr,
        packet: &Packet<&[u8]>,
        msg: &Repr,
    ) -> bool {
        let Some(&(_, index)) = self
            .outstanding
            .iter()
            .find(|(id, _)| *id == msg.transaction_id)
        else {
            return false;
        };
        if packet.verify_integrity(&self.remote_password).is_err() {
            self.metrics.rejected += 1;
            return false;
        }
        // Non-symmetric answers fail the check (RFC 8445 §7.2.5.2.1).
        let pair = &self.pairs[index];
        if pair.remote != from || pair.local != socket {
            self.metrics.rejected += 1;
            return false;
        }
        self.first_packet_at.get_or_insert(now);
        if matches!(self.state, State::Checking | State::Patient) {
            let patient = self.state == State::Patient;
            self.state = State::Connected;
            self.opening.clear();
            let outcome = PunchOutcome {
                remote: from,
                remote_kind: pair.kind,
                guessed: pair.guessed,
                local_socket: pair.local,
                birthday: pair.birthday,
                local_reflexive: msg.mapped_address(),
                time_to_first_packet: self
                    .first_packet_at
                    .unwrap_or(now)
                    .saturating_duration_since(self.started_at),
                time_to_connect: now.saturating_duration_since(self.started_at),
                probes_sent: self.metrics.probes_sent,
                patient,
            };
            self.events.push_back(PunchEvent::Connected(outcome));
        }
        true
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`PunchSession::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Patient {
            return self.patient_wake();
        }
        (self.state == State::Checking).then(|| {
            let mut next = self.next_check_at.min(self.deadline_at);
            if let Some(b) = &self.birthday
                && b.sent < b.budget()
            {
                next = next.min(b.next_at);
            }
            self.opening
                .front()
                .map_or(next, |&(at, _, _)| next.min(at))
        })
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PunchEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn offer(from: &str, to: &str, pw: &[u8], cands: &[(CandidateKind, &str)]) -> Offer {
        Offer {
            from: from.into(),
            to: to.into(),
            ufrag: format!("{from}-uf"),
            password: pw.to_vec(),
            candidates: cands
                .iter()
                .map(|(k, a)| Candidate::new(*k, a.parse().unwrap(), 65535))
                .collect(),
        }
    }

    #[test]
    fn checks_follow_priority_and_pacing() {
        let a = offer("a", "b", b"pa", &[(CandidateKind::Host, "10.0.0.1:1")]);
        let b = offer(
            "b",
            "a",
            b"pb",
            &[
                (CandidateKind::ServerReflexive, "203.0.113.2:4000"),
                (CandidateKind::Host, "10.1.0.2:4000"),
            ],
        );
        let t0 = Instant::now();
        let config = PunchConfig {
            opening_ttls: vec![],
            ..PunchConfig::default()
        };
        let mut s = PunchSession::new_with_insecure_seed(t0, config, &a, &b, 1).unwrap();
        let first = s.poll_transmit().unwrap();
        assert_eq!(first.destination, "10.1.0.2:4000".parse().unwrap());
        assert_eq!(first.ttl, None);
        assert!(s.poll_transmit().is_none());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(20)));
        s.handle_timeout(t0 + Duration::from_millis(20));
        let second = s.poll_transmit().unwrap();
        assert_eq!(second.destination, "203.0.113.2:4000".parse().unwrap());
        // The probe is authenticated with the receiver's password.
        let p = Packet::new_checked(&second.payload[..]).unwrap();
        p.verify_integrity(b"pb").unwrap();
        assert_eq!(Repr::parse(&p).unwrap().username(), Some("b-uf:a-uf"));
    }

    /// Drives `s` until `until`, collecting (time, destination, ttl).
    fn drive(
        s: &mut PunchSession,
        t0: Instant,
        until: Instant,
    ) -> Vec<(Duration, SocketAddr, Option<u8>)> {
        let mut sent = vec![];
        let mut now = t0;
        loop {
            while let Some(t) = s.poll_transmit() {
                sent.push((now - t0, t.destination, t.ttl));
            }
            match s.poll_timeout() {
                Some(at) if at <= until => {
                    now = at;
                    s.handle_timeout(now);
                }
                _ => return sent,
            }
        }
    }

    #[test]
    fn opening_probes_carry_the_low_ttls_and_precede_full_probes() {
        let a = offer("a", "b", b"pa", &[(CandidateKind::Host, "10.0.0.1:1")]);
        let srflx: SocketAddr = "203.0.113.2:4000".parse().unwrap();
        let host: SocketAddr = "10.1.0.2:4000".parse().unwrap();
        let b = offer(
            "b",
            "a",
            b"pb",
            &[
                (CandidateKind::ServerReflexive, "203.0.113.2:4000"),
                (CandidateKind::Host, "10.1.0.2:4000"),
            ],
        );
        let config = PunchConfig {
            opening_ttls: vec![2, 3],
            opening_interval: Duration::from_millis(50),
            ..PunchConfig::default()
        };
        let t0 = Instant::now();
        let mut s = PunchSession::new_with_insecure_seed(t0, config, &a, &b, 1).unwrap();
        let sent = drive(&mut s, t0, t0 + Duration::from_millis(500));
        let to_srflx: Vec<_> = sent.iter().filter(|(_, d, _)| *d == srflx).collect();
        // TTL 2 at once, TTL 3 one interval later, full probes after that.
        assert_eq!(to_srflx[0], &(Duration::ZERO, srflx, Some(2)));
        assert_eq!(to_srflx[1], &(Duration::from_millis(50), srflx, Some(3)));
        assert!(to_srflx.len() > 2);
        for (at, _, ttl) in &to_srflx[2..] {
            assert_eq!(*ttl, None);
            assert!(*at >= Duration::from_millis(100), "{at:?}");
        }
        // The host candidate needs no opening: probed at full TTL at once.
        assert!(sent.contains(&(Duration::ZERO, host, None)));
        assert!(sent.iter().all(|(_, d, t)| *d == srflx || t.is_none()));
        let m = s.metrics();
        assert_eq!(m.opening_probes_sent, 2);
        assert_eq!(m.probes_sent as usize, sent.len() - 2);
    }

    #[test]
    fn a_request_from_the_peer_ends_the_wait_for_its_pair() {
        let a = offer("a", "b", b"pa", &[(CandidateKind::Host, "10.0.0.1:1")]);
        let srflx: SocketAddr = "203.0.113.2:4000".parse().unwrap();
        let b = offer(
            "b",
            "a",
            b"pb",
            &[(CandidateKind::ServerReflexive, "203.0.113.2:4000")],
        );
        let config = PunchConfig {
            opening_ttls: vec![2, 3, 4],
            opening_interval: Duration::from_millis(100),
            ..PunchConfig::default()
        };
        let t0 = Instant::now();
        let mut s = PunchSession::new_with_insecure_seed(t0, config, &a, &b, 1).unwrap();
        assert_eq!(s.poll_transmit().unwrap().ttl, Some(2));
        assert!(s.poll_transmit().is_none());
        let mut req = Repr::binding_request(TransactionId([7; 12]));
        req.attributes.push(Attribute::Username("a-uf:b-uf".into()));
        req.message_integrity = true;
        let now = t0 + Duration::from_millis(10);
        assert!(s.handle_input(now, srflx, &req.to_bytes(b"pa").unwrap()));
        // The answer and a triggered full check, no further opening probes.
        let rest = drive(&mut s, now, t0 + Duration::from_millis(400));
        assert!(rest.len() >= 2);
        assert!(rest.iter().all(|(_, d, t)| *d == srflx && t.is_none()));
    }

    #[test]
    fn unauthenticated_probe_and_forged_response_are_rejected() {
        let a = offer("a", "b", b"pa", &[(CandidateKind::Host, "10.0.0.1:1")]);
        let b = offer("b", "a", b"pb", &[(CandidateKind::Host, "10.1.0.2:4000")]);
        let t0 = Instant::now();
        let mut s =
            PunchSession::new_with_insecure_seed(t0, PunchConfig::default(), &a, &b, 1).unwrap();
        let probe = s.poll_transmit().unwrap();
        let from: SocketAddr = "10.1.0.2:4000".parse().unwrap();
        // A request with the right username but the wrong key.
        let mut req = Repr::binding_request(TransactionId([9; 12]));
        req.attributes.push(Attribute::Username("a-uf:b-uf".into()));
        req.message_integrity = true;
        assert!(!s.handle_input(t0, from, &req.to_bytes(b"wrong").unwrap()));
        // A success for our transaction keyed with the wrong password.
        let id = Repr::parse_bytes(&probe.payload).unwrap().transaction_id;
        let mut resp = Repr::binding_request(id);
        resp.class = Class::Success;
        resp.message_integrity = true;
        assert!(!s.handle_input(t0, from, &resp.to_bytes(b"pa").unwrap()));
        // The right key from the wrong address is not symmetric.
        assert!(!s.handle_input(
            t0,
            "10.9.9.9:1".parse().unwrap(),
            &resp.to_bytes(b"pb").unwrap()
        ));
        assert_eq!(s.metrics().rejected, 3);
        assert!(s.poll_event().is_none());
        assert!(s.handle_input(t0, from, &resp.to_bytes(b"pb").unwrap()));
        assert!(matches!(s.poll_event(), Some(PunchEvent::Connected(o)) if o.remote == from));
    }

    #[test]
    fn deadline_fails_and_guessing_is_bounded() {
        let a = offer("a", "b", b"pa", &[(CandidateKind::Host, "10.0.0.1:1")]);
        let b = offer(
            "b",
            "a",
            b"pb",
            &[(CandidateKind::ServerReflexive, "203.0.113.2:4000")],
        );
        let config = PunchConfig {
            port_guess_range: 50,
            max_guess_probes: 30,
            ..PunchConfig::default()
        };
        let t0 = Instant::now();
        let mut s = PunchSession::new_with_insecure_seed(t0, config, &a, &b, 1).unwrap();
        let mut now = t0;
        let mut destinations = std::collections::HashSet::new();
        while let Some(at) = s.poll_timeout() {
            while let Some(t) = s.poll_transmit() {
                destinations.insert(t.destination);
            }
            now = at;
            s.handle_timeout(now);
        }
        assert_eq!(now, t0 + Duration::from_secs(5));
        let m = s.metrics();
        assert_eq!(m.guess_probes_sent, 30);
        // The reflexive port and the nearest 15 ports on each side.
        assert_eq!(destinations.len(), 31);
        assert!(destinations.contains(&"203.0.113.2:3985".parse().unwrap()));
        assert!(!destinations.contains(&"203.0.113.2:3984".parse().unwrap()));
        assert_eq!(
            s.poll_event(),
            Some(PunchEvent::Failed(PunchFailure::DeadlineExpired {
                probes_sent: m.probes_sent,
                requests_received: 0
            }))
        );
    }
}
