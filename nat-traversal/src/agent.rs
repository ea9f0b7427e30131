//! A punch [`Agent`]: hole punching with many peers at once, the "open our
//! own NAT first" policy and the TURN relay of last resort, behind one
//! sans-IO interface.
//!
//! [`PunchSession`] punches to one peer and [`TurnClient`] keeps one
//! allocation; an overlay node needs both for every peer it links to. The
//! agent keeps one exchange (offer, session) per peer, rate-limits the
//! signalling, answers offers, opens our NAT toward a peer before the
//! peer hears of us, lets peers that come through our TURN relay in and
//! answers them through it, and offers the relayed address when punching
//! fails.
//!
//! The caller carries signalling between peers (an overlay, a rendezvous,
//! anything that gets a message to a named peer): [`AgentEvent::Signal`]
//! out, [`Agent::handle_endpoints`] and [`Agent::handle_offer`] in. Peers
//! are named by any `P` whose `Display` form is the name in offers (an
//! overlay address, a string).
//!
//! # The flow
//!
//! 1. We want a path to `peer`: [`Agent::connect`] with whatever endpoints
//!    of the peer we know. The agent sends [`Signal::Endpoints`] (ours: "open
//!    your NAT toward these and try them") and [`Signal::Offer`] (fresh
//!    credentials and our candidates), and, with the policy on, empty
//!    datagrams with low IP TTLs ([`AgentConfig::open_ttl`], one per NAT
//!    of ours) to each known endpoint of the peer. A punch request while
//!    our exchange waits for the peer's offer, or while our session is
//!    checking, carries our offer again: a lost offer or answer costs one
//!    request interval, not the exchange.
//! 2. The peer's agent gets the endpoints ([`Agent::handle_endpoints`]):
//!    it opens its own NAT toward them the same way, permits them on its
//!    TURN allocation and signals back. Offers
//!    ([`Agent::handle_offer`]) start authenticated connectivity checks on
//!    both sides.
//! 3. [`AgentEvent::Punched`] names the working path; on
//!    [`AgentEvent::PunchFailed`] the agent signals our TURN relayed
//!    address, if any, as the peer's last resort.
//!
//! # Candidates
//!
//! Our offers carry two kinds of candidates (RFC 8445 §5.1.1): host
//! candidates ([`Agent::set_host_candidates`]: the addresses of our own
//! interfaces with our socket's port, which peers behind the same NAT
//! reach directly when that NAT does not hairpin) and server-reflexive
//! ones ([`Agent::set_local_endpoints`]: configured endpoints and the
//! NAT mappings peers or STUN servers saw). Their priorities follow the
//! type preferences of RFC 8445 §5.1.2.2, host above server-reflexive
//! (above relayed), so a peer checks our host candidates first; both
//! kinds are checked in the same session. Punch requests carry the
//! reflexive endpoints first (they get the NAT-opening datagrams), then
//! the host candidates.
//!
//! A candidate is only where authenticated checks go; the agent never
//! sends to an endpoint a peer names that cannot be one
//! ([`Agent::is_usable_remote`]: unspecified, multicast, broadcast, port
//! 0, or loopback while we are not on loopback ourselves).
//!
//! # Why a low TTL
//!
//! A datagram that reaches a Linux masquerading NAT before its host has
//! sent anything to us leaves a conntrack entry there that makes the NAT
//! remap the host's port toward us, so the hole would not match. With a
//! TTL of 2 the datagram leaves our NAT (opening it toward the peer)
//! and dies before the peer's: with both NATs opened from the inside
//! first, each side's packets arrive as answers. [`Transmit::ttl`] asks the
//! caller's socket for that TTL. Each session then sends its own opening
//! probes ([`PunchConfig::opening_ttls`](crate::punch::PunchConfig), TTL 2
//! then 3, which also leaves a carrier-grade NAT behind the home one)
//! before its full checks to the peer's reflexive candidates: the two
//! sessions start within a signalling trip of each other (the answer
//! offer starts the peer's), so both sides' NATs are open before either
//! side's full checks arrive. A TTL cannot separate two NATs one hop
//! apart: for those the sessions' patient attempt (on by default,
//! [`PunchConfig::patience`](crate::punch::PunchConfig::patience)) takes
//! over after the failure, and the agent keeps quiet toward the peer
//! meanwhile ([`Agent::is_patient`]).
//!
//! # Example
//!
//! Two agents, the network and the signalling channel are queues here:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use nat_traversal::agent::{Agent, AgentConfig, AgentEvent, Input, Signal};
//!
//! /// Carries `from`'s signals and datagrams to `to`; collects punched paths.
//! fn deliver(
//!     from: &mut Agent<String>,
//!     from_ep: SocketAddr,
//!     to: &mut Agent<String>,
//!     now: Instant,
//!     punched: &mut Vec<(String, SocketAddr)>,
//! ) {
//!     let name = from.name().to_string();
//!     while let Some(event) = from.poll_event() {
//!         match event {
//!             // Signalling: whatever carries a message to a named peer.
//!             AgentEvent::Signal { signal: Signal::Endpoints(e), .. } => {
//!                 to.handle_endpoints(now, name.clone(), &e)
//!             }
//!             AgentEvent::Signal { signal: Signal::Offer(o), .. } => {
//!                 to.handle_offer(now, name.clone(), &o)
//!             }
//!             AgentEvent::Punched { peer, remote } => punched.push((peer, remote)),
//!             _ => {}
//!         }
//!     }
//!     // The network: datagrams with a TTL die on the way (they only open
//!     // the sender's own NAT).
//!     while let Some(t) = from.poll_transmit() {
//!         if t.ttl.is_none() {
//!             assert_eq!(to.handle_input(now, from_ep, &t.payload), Input::Consumed);
//!         }
//!     }
//! }
//!
//! let a_ep: SocketAddr = "192.0.2.1:4000".parse().unwrap();
//! let b_ep: SocketAddr = "198.51.100.2:4000".parse().unwrap();
//! let mut a = Agent::new("a".to_string(), AgentConfig::default());
//! let mut b = Agent::new("b".to_string(), AgentConfig::default());
//! a.set_local_endpoints(vec![a_ep]);
//! b.set_local_endpoints(vec![b_ep]);
//! let t0 = Instant::now();
//! a.connect(t0, "b".to_string(), &[b_ep]);
//! let mut punched = Vec::new();
//! for i in 0..10 {
//!     // Full checks wait for the sessions' low-TTL opening probes.
//!     let now = t0 + std::time::Duration::from_millis(20 * i);
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//!     deliver(&mut a, a_ep, &mut b, now, &mut punched);
//!     deliver(&mut b, b_ep, &mut a, now, &mut punched);
//! }
//! punched.sort();
//! // Each side names the other and the address it answered from.
//! assert_eq!(punched, [("a".to_string(), a_ep), ("b".to_string(), b_ep)]);
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::error::Error;
use crate::punch::{DEFAULT_PATIENCE, PunchConfig, PunchEvent, PunchSession};
use crate::turn::{TurnClient, TurnConfig, TurnEvent, TurnFailure};
use crate::wire::stun;
use crate::wire::{Candidate, CandidateKind, Offer};
use crate::{Socket, Transmit};

/// The default IP TTL of the datagrams that open our NAT toward a peer:
/// enough to leave our NAT, too little to reach the peer's (see the
/// [module docs](self)).
pub const DEFAULT_OPEN_TTL: u8 = 2;

/// Agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The connectivity checks of every session. The default turns on
    /// [`PunchConfig::patience`] ([`DEFAULT_PATIENCE`]): after a failed
    /// punch the agent stays quiet toward the peer's reflexive endpoints
    /// and tries once more in turns (NATs one hop apart). Never with
    /// [`PunchConfig::birthday`]: the agent drives one socket.
    pub punch: PunchConfig,
    /// "Open our own NAT first": the IP TTL of the empty datagram sent to
    /// each endpoint of a peer we link to or that asks us to punch, before
    /// anything else goes to it; one more datagram goes with each higher
    /// TTL of [`PunchConfig::opening_ttls`], so that a carrier-grade NAT
    /// behind the home one opens too (set from the measured depth with
    /// [`Agent::set_opening_ttls`]). `None` turns the policy off.
    pub open_ttl: Option<u8>,
    /// Endpoints of one peer that get an opening datagram.
    pub open_per_peer: usize,
    /// Opening datagrams queued at most (more are dropped).
    pub max_open_queue: usize,
    /// Exchanges (one per peer) in progress at most.
    pub max_exchanges: usize,
    /// How long a finished exchange is kept (a new one with that peer may
    /// start afterwards).
    pub exchange_lifetime: Duration,
    /// Least time between two punch requests to one peer.
    pub request_interval: Duration,
    /// Candidates in our offers at most (IPv4 only). Host candidates take
    /// at most half of them when there are reflexive ones to offer too.
    pub max_candidates: usize,
    /// Peers reached through our TURN relay, permitted IPs and channels, at
    /// most each.
    pub max_relay_peers: usize,
    /// Datagrams (NAT openings and connectivity checks, of all sessions
    /// together) sent to one endpoint that has never sent us anything, per
    /// [`AgentConfig::unheard_window`]; the rest are dropped. Peers name the
    /// endpoints we check, so without this bound a stream of offers would
    /// make the agent a reflector toward any address; an endpoint that
    /// answers once is unbounded from then on.
    pub unheard_budget: u32,
    /// The period of [`AgentConfig::unheard_budget`].
    pub unheard_window: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            punch: PunchConfig {
                patience: Some(DEFAULT_PATIENCE),
                ..PunchConfig::default()
            },
            open_ttl: Some(DEFAULT_OPEN_TTL),
            open_per_peer: 4,
            max_open_queue: 64,
            max_exchanges: 64,
            exchange_lifetime: Duration::from_secs(10),
            request_interval: Duration::from_secs(2),
            max_candidates: 8,
            max_relay_peers: 256,
            unheard_budget: 32,
            unheard_window: Duration::from_secs(10),
        }
    }
}

/// A message for the caller to deliver to a peer, who hands it to its own
/// agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A punch request: "open your NAT toward these endpoints of mine and
    /// link to them" (to [`Agent::handle_endpoints`]). After a failed
    /// punch it carries our TURN relayed address alone.
    Endpoints(Vec<SocketAddr>),
    /// Our offer for the punch session (to [`Agent::handle_offer`]). It
    /// carries the session's password in clear: the channel must keep it
    /// from third parties that could also reach our socket.
    Offer(Offer),
}

/// Events from the [`Agent`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentEvent<P> {
    /// Deliver `signal` to `peer`.
    Signal {
        /// The peer.
        peer: P,
        /// The message.
        signal: Signal,
    },
    /// An authenticated connectivity check found a direct path to `peer`.
    Punched {
        /// The peer.
        peer: P,
        /// Its address on the working path.
        remote: SocketAddr,
    },
    /// No direct path to `peer` was found in time.
    PunchFailed {
        /// The peer.
        peer: P,
    },
    /// A datagram from `from` came through our TURN relay in a Data
    /// indication: handle it as if `from` had sent it to the socket.
    Data {
        /// The peer that sent it to our relayed address.
        from: SocketAddr,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Our TURN allocation exists; its address is offered to peers that
    /// cannot punch to us.
    RelayAllocated {
        /// The relayed address.
        relayed: SocketAddr,
    },
    /// The TURN allocation failed: no relay of last resort.
    RelayFailed(TurnFailure),
}

/// What [`Agent::handle_input`] made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// The agent's own traffic (a connectivity check, TURN control, a
    /// peer's empty NAT-opening datagram): nothing left to do.
    Consumed,
    /// Not the agent's: `payload` from `from` is for the caller (a peer's
    /// datagram relayed on a TURN channel arrives here with the peer's
    /// address and without the channel header).
    Data {
        /// The sender.
        from: SocketAddr,
        /// The bytes.
        payload: &'a [u8],
    },
}

/// Counters of the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Punch sessions started.
    pub started: u64,
    /// Sessions that found a direct path.
    pub connected: u64,
    /// Sessions that gave up (a patient attempt may still follow).
    pub failed: u64,
    /// Of `connected`: paths the patient attempt found after a failure
    /// ([`PunchConfig::patience`](crate::punch::PunchConfig::patience)).
    pub patient_connected: u64,
    /// NAT-opening datagrams queued.
    pub opened: u64,
    /// Datagrams dropped by [`AgentConfig::unheard_budget`].
    pub unheard_dropped: u64,
    /// Offers (ours, or our answer) signalled again with a later punch
    /// request, while the peer may not have them.
    pub offers_resent: u64,
}

#[derive(Debug)]
struct Exchange {
    local: Offer,
    session: Option<PunchSession>,
    remote_ufrag: Option<String>,
    started_at: Instant,
}

/// Our allocation on a TURN server and the peers that use it.
#[derive(Debug)]
struct Relay {
    client: TurnClient,
    server: SocketAddr,
    /// Peers heard through the relay: answered through it.
    peers: HashSet<SocketAddr>,
    /// Peer IPs given a permission already.
    permitted: HashSet<IpAddr>,
    /// Peers a channel was asked for.
    channels: HashSet<SocketAddr>,
    /// Scratch room for wrapping a datagram (kept between datagrams).
    buf: Vec<u8>,
}

/// Events queued at most (signalling beyond this is dropped).
const MAX_EVENTS: usize = 1024;
/// Endpoints remembered as heard from, and unheard endpoints budgeted.
const MAX_TRACKED_ENDPOINTS: usize = 4096;

/// What was sent to an endpoint that never answered, in the current window.
#[derive(Debug, Clone, Copy)]
struct Budget {
    since: Instant,
    sent: u32,
}

/// Whether `address` can be one of our host candidates: an IPv4 unicast
/// address that is not unspecified, loopback (peers on other hosts cannot
/// reach it), link-local (`169.254.0.0/16`: not routed, and a guess of the
/// host when no DHCP answered), multicast or broadcast, with a port.
/// (IPv6 host candidates are not offered yet.)
pub fn is_host_candidate(address: SocketAddr) -> bool {
    match address.ip() {
        IpAddr::V4(ip) => {
            address.port() != 0
                && !ip.is_unspecified()
                && !ip.is_loopback()
                && !ip.is_link_local()
                && !ip.is_multicast()
                && !ip.is_broadcast()
        }
        IpAddr::V6(_) => false,
    }
}

/// Punch sessions with many peers, NAT opening and a TURN relay of last
/// resort, sans-IO. See the [module docs](self).
///
/// Feed it every datagram from the socket ([`Agent::handle_input`]; what it
/// does not consume is the caller's), send what [`Agent::poll_transmit`]
/// returns (honouring [`Transmit::ttl`]), act on [`Agent::poll_event`], and
/// call [`Agent::handle_timeout`] at [`Agent::poll_timeout`].
#[derive(Debug)]
pub struct Agent<P> {
    name: String,
    config: AgentConfig,
    endpoints: Vec<SocketAddr>,
    /// Our host candidates (interface addresses), best first.
    host: Vec<SocketAddr>,
    exchanges: HashMap<P, Exchange>,
    requested: HashMap<P, Instant>,
    opening: VecDeque<(SocketAddr, u8)>,
    relay: Option<Relay>,
    /// `None`: the operating system's random source.
    rng: Option<ChaCha8Rng>,
    stats: AgentStats,
    events: VecDeque<AgentEvent<P>>,
    /// Endpoints that sent us something (a return route exists).
    heard: HashSet<SocketAddr>,
    /// Sends to endpoints not heard from yet.
    unheard: HashMap<SocketAddr, Budget>,
    /// The latest `now` we were given (`poll_transmit` takes none).
    clock: Option<Instant>,
    /// The endpoints patient attempts wait on ([`Agent::is_quiet`]).
    quiet: Vec<SocketAddr>,
}

impl<P: Clone + Eq + Hash + Display> Agent<P> {
    /// An agent for the peer named `name` (peers check that offers are
    /// addressed to it). Offer credentials, transaction ids and TURN
    /// request ids come from the operating system's random source.
    ///
    /// # Panics
    /// If the operating system's random source fails (as `std`'s
    /// `HashMap::new` does).
    pub fn new(name: String, config: AgentConfig) -> Agent<P> {
        Agent::with_rng(name, config, None)
    }

    /// [`Agent::new`] with **predictable** credentials and ids from `seed`,
    /// for tests and simulators only; production code uses [`Agent::new`].
    pub fn new_with_insecure_seed(name: String, config: AgentConfig, seed: u64) -> Agent<P> {
        Agent::with_rng(name, config, Some(ChaCha8Rng::seed_from_u64(seed)))
    }

    fn with_rng(name: String, config: AgentConfig, rng: Option<ChaCha8Rng>) -> Agent<P> {
        Agent {
            name,
            config,
            endpoints: Vec::new(),
            host: Vec::new(),
            exchanges: HashMap::new(),
            requested: HashMap::new(),
            opening: VecDeque::new(),
            relay: None,
            rng,
            stats: AgentStats::default(),
            events: VecDeque::new(),
            heard: HashSet::new(),
            unheard: HashMap::new(),
            clock: None,
            quiet: Vec::new(),
        }
    }

    /// Our name in offers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counters so far.
    pub fn stats(&self) -> AgentStats {
        self.stats
    }

    /// Sets the endpoints we advertise, best first (configured, reflexive,
    /// the TURN relayed address last if the caller includes it); they are
    /// offered as server-reflexive candidates.
    pub fn set_local_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.endpoints = endpoints;
    }

    /// Sets the opening-probe TTLs of the punch sessions started from now
    /// on ([`PunchConfig::opening_ttls`]), such as
    /// [`depth::opening_ttls`](crate::depth::opening_ttls) of our measured
    /// NAT depth.
    pub fn set_opening_ttls(&mut self, ttls: Vec<u8>) {
        self.config.punch.opening_ttls = ttls;
    }

    /// The opening-probe TTLs new punch sessions use.
    pub fn opening_ttls(&self) -> &[u8] {
        &self.config.punch.opening_ttls
    }

    /// The endpoints we advertise as server-reflexive candidates.
    pub fn local_endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// Sets our host candidates, best first: the addresses of our
    /// interfaces with our socket's port (RFC 8445 §5.1.1.1), for a socket
    /// bound to all addresses. Addresses that cannot be host candidates
    /// ([`is_host_candidate`]) and repeats are left out. Returns whether
    /// the set changed (exchanges in progress keep their offers; the next
    /// ones carry the new set).
    pub fn set_host_candidates(&mut self, candidates: Vec<SocketAddr>) -> bool {
        let mut host: Vec<SocketAddr> = Vec::with_capacity(candidates.len());
        for c in candidates {
            if is_host_candidate(c) && !host.contains(&c) {
                host.push(c);
            }
        }
        let changed = host != self.host;
        self.host = host;
        changed
    }

    /// Our host candidates.
    pub fn host_candidates(&self) -> &[SocketAddr] {
        &self.host
    }

    /// Everything our punch requests carry: the local (reflexive and
    /// configured) endpoints, then the host candidates not among them.
    pub fn advertised(&self) -> Vec<SocketAddr> {
        let mut all = self.endpoints.clone();
        all.extend(self.host.iter().filter(|h| !self.endpoints.contains(h)));
        all
    }

    /// Whether an endpoint a peer names (in an offer or a punch request)
    /// may be sent to: not unspecified (Linux delivers that to the host
    /// itself), multicast or broadcast, not port 0, and loopback only while
    /// one of our own endpoints is loopback too (a peer on another host has
    /// no business making us probe our own host's services). Endpoints that
    /// are not are dropped from the peer's candidates.
    pub fn is_usable_remote(&self, endpoint: SocketAddr) -> bool {
        let ip = endpoint.ip();
        let bad = match ip {
            IpAddr::V4(v4) => v4.is_broadcast(),
            IpAddr::V6(_) => false,
        };
        if endpoint.port() == 0 || ip.is_unspecified() || ip.is_multicast() || bad {
            return false;
        }
        !ip.is_loopback()
            || self
                .endpoints
                .iter()
                .chain(&self.host)
                .any(|e| e.ip().is_loopback())
    }

    /// Uses the TURN server in `config` as a relay of last resort: peers
    /// whose punch requests reach us get a permission, those heard through
    /// the relay are answered through it on a channel
    /// ([`Agent::relay_in_place`]), and the relayed address is signalled
    /// to a peer when punching to it fails.
    pub fn set_turn(&mut self, now: Instant, config: TurnConfig) -> Result<(), Error> {
        let server = config.server;
        let client = match self.rng.as_mut() {
            None => TurnClient::new(now, config)?,
            Some(rng) => TurnClient::new_with_insecure_seed(now, config, rng.next_u64())?,
        };
        self.relay = Some(Relay {
            client,
            server,
            peers: HashSet::new(),
            permitted: HashSet::new(),
            channels: HashSet::new(),
            buf: Vec::new(),
        });
        Ok(())
    }

    /// The relayed address of our TURN allocation, once it exists.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relay.as_ref().and_then(|r| r.client.relayed())
    }

    /// Peers we answer through our TURN relay.
    pub fn relay_peers(&self) -> Vec<SocketAddr> {
        self.relay
            .as_ref()
            .map(|r| r.peers.iter().copied().collect())
            .unwrap_or_default()
    }

    /// "Open our own NAT first": queues an empty datagram with
    /// [`AgentConfig::open_ttl`] to (the first few of) `endpoints`. A no-op
    /// with the policy off.
    ///
    /// One datagram goes with [`AgentConfig::open_ttl`] and one with each
    /// higher TTL of the sessions' opening steps
    /// ([`Agent::set_opening_ttls`]): every NAT of ours opens, the
    /// carrier-grade one behind a home NAT too. Otherwise a peer whose
    /// session starts before ours (our answer was lost on the way, say)
    /// sends checks that reach our outer NAT before we send anything
    /// through it, and they leave the conntrack entry that makes it remap
    /// our port.
    pub fn open_nat(&mut self, endpoints: &[SocketAddr]) {
        let Some(first) = self.config.open_ttl else {
            return;
        };
        let higher = self
            .config
            .punch
            .opening_ttls
            .iter()
            .copied()
            .filter(|t| *t > first);
        let mut ttls: Vec<u8> = std::iter::once(first).chain(higher).collect();
        ttls.sort_unstable();
        ttls.dedup();
        for e in endpoints.iter().take(self.config.open_per_peer) {
            for &ttl in &ttls {
                if self.opening.len() < self.config.max_open_queue {
                    self.opening.push_back((*e, ttl));
                    self.stats.opened += 1;
                }
            }
        }
    }

    /// We want a direct path to `peer`, known at `endpoints` (possibly
    /// none): opens our NAT toward them and sends the peer a punch request
    /// and an offer (at most one request per peer every
    /// [`AgentConfig::request_interval`], one exchange per peer at a time).
    pub fn connect(&mut self, now: Instant, peer: P, endpoints: &[SocketAddr]) {
        self.tick(now);
        if self.is_patient(&peer) {
            // Quiet toward the peer until the patient attempt ends.
            return;
        }
        let endpoints = self.usable(endpoints);
        self.open_nat(&endpoints);
        self.request(now, peer);
    }

    /// The peer's punch request ([`Signal::Endpoints`]) arrived: permits
    /// its addresses on our TURN allocation, opens our NAT toward them and
    /// answers with ours (rate-limited, so the exchange ends). The caller
    /// may also try `endpoints` itself.
    pub fn handle_endpoints(&mut self, now: Instant, peer: P, endpoints: &[SocketAddr]) {
        self.tick(now);
        let endpoints = self.usable(endpoints);
        if let Some(relay) = self.relay.as_mut() {
            for e in &endpoints {
                if relay.permitted.len() < self.config.max_relay_peers
                    && relay.permitted.insert(e.ip())
                {
                    relay.client.create_permission(now, e.ip());
                }
            }
        }
        if self.is_patient(&peer) {
            return;
        }
        self.open_nat(&endpoints);
        self.request(now, peer);
    }

    /// Whether the patient attempt with `peer` runs (the punch failed and
    /// [`PunchConfig::patience`] is on): the agent sends the peer nothing
    /// but that attempt's datagrams, and neither should the caller send to
    /// the peer's reflexive endpoints ([`Agent::is_quiet_toward`]); an
    /// [`AgentEvent::Punched`] may still come.
    pub fn is_patient(&self, peer: &P) -> bool {
        self.exchanges
            .get(peer)
            .and_then(|e| e.session.as_ref())
            .is_some_and(PunchSession::is_patient)
    }

    /// Whether `endpoint` is one the patient attempt with `peer` waits on:
    /// anything the caller sends there (a link request) would spoil it.
    pub fn is_quiet_toward(&self, peer: &P, endpoint: SocketAddr) -> bool {
        self.exchanges
            .get(peer)
            .and_then(|e| e.session.as_ref())
            .is_some_and(|s| s.is_quiet_toward(endpoint))
    }

    /// Whether any patient attempt waits on `endpoint`: the caller should
    /// drop whatever else it would send there (an overlay's link requests,
    /// say), or it spoils the attempt. Cheap when no attempt runs (the data
    /// path may ask for every datagram).
    pub fn is_quiet(&self, endpoint: SocketAddr) -> bool {
        !self.quiet.is_empty() && self.quiet.contains(&endpoint)
    }

    /// Recomputes [`Agent::is_quiet`]'s endpoints after sessions changed.
    fn refresh_quiet(&mut self) {
        self.quiet.clear();
        for e in self.exchanges.values() {
            if let Some(s) = e.session.as_ref() {
                self.quiet.extend(s.quiet_endpoints());
            }
        }
    }

    /// Whether a punch exchange with `peer` is under way: started and not
    /// yet connected nor failed, so a [`AgentEvent::Punched`] or
    /// [`AgentEvent::PunchFailed`] is still to come. A caller that links to
    /// the peer's endpoints itself should wait for it rather than send to
    /// them now (see [`crate::punch`]'s opening probes).
    pub fn is_punching(&self, peer: &P) -> bool {
        self.exchanges
            .get(peer)
            .is_some_and(|e| e.session.as_ref().is_none_or(PunchSession::is_checking))
    }

    /// `endpoints` without those [`Agent::is_usable_remote`] refuses.
    fn usable(&self, endpoints: &[SocketAddr]) -> Vec<SocketAddr> {
        endpoints
            .iter()
            .copied()
            .filter(|e| self.is_usable_remote(*e))
            .collect()
    }

    /// The peer's [`Signal::Offer`] arrived. Starts (or, for a new offer,
    /// restarts) the session and answers with our offer, which a peer that
    /// has it already ignores (so a lost offer costs no exchange, and
    /// answers end after one round). An offer not from `peer` to us is
    /// ignored; candidates [`Agent::is_usable_remote`] refuses are dropped
    /// from it.
    pub fn handle_offer(&mut self, now: Instant, peer: P, remote: &Offer) {
        self.tick(now);
        if remote.from != peer.to_string() || remote.to != self.name {
            return;
        }
        self.expire(now);
        if !self.exchanges.contains_key(&peer) {
            self.start(now, peer.clone());
        }
        if self
            .exchanges
            .get(&peer)
            .is_none_or(|e| e.remote_ufrag.as_deref() == Some(remote.ufrag.as_str()))
        {
            return;
        }
        let mut usable = remote.clone();
        usable
            .candidates
            .retain(|c| self.is_usable_remote(c.address));
        let Some(exchange) = self.exchanges.get_mut(&peer) else {
            return;
        };
        // The agent has one socket: no birthday probing (its extra
        // sockets would have nowhere to go).
        let config = PunchConfig {
            birthday: None,
            ..self.config.punch.clone()
        };
        let session = match self.rng.as_mut() {
            None => PunchSession::new(now, config, &exchange.local, &usable),
            Some(rng) => PunchSession::new_with_insecure_seed(
                now,
                config,
                &exchange.local,
                &usable,
                rng.next_u64(),
            ),
        };
        let Ok(session) = session else {
            return;
        };
        exchange.session = Some(session);
        exchange.remote_ufrag = Some(remote.ufrag.clone());
        let answer = exchange.local.clone();
        // A new session replaces any patient one.
        self.refresh_quiet();
        self.stats.started += 1;
        self.push_event(AgentEvent::Signal {
            peer,
            signal: Signal::Offer(answer),
        });
    }

    /// A datagram from `from` on our socket. Connectivity checks, TURN
    /// control and peers' empty NAT-opening datagrams are consumed;
    /// anything else is returned for the caller (unwrapped when it came on
    /// a TURN channel). Data indications from the TURN server become
    /// [`AgentEvent::Data`].
    pub fn handle_input<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Input<'a> {
        self.tick(now);
        if !self.heard.contains(&from) {
            if self.heard.len() >= MAX_TRACKED_ENDPOINTS {
                self.heard.clear();
            }
            self.heard.insert(from);
            self.unheard.remove(&from);
        }
        if let Some(relay) = self.relay.as_mut()
            && from == relay.server
        {
            if let Some((peer, payload)) = relay.client.handle_channel_data(from, bytes) {
                self.note_relay_peer(now, peer);
                return self.handle_direct(now, peer, payload);
            }
            if relay.client.handle_input(now, from, bytes) {
                self.drain_turn(now);
                return Input::Consumed;
            }
        }
        if let Some(relay) = self.relay.as_mut()
            && !relay.peers.is_empty()
        {
            // Heard directly: answered directly from now on.
            relay.peers.remove(&from);
        }
        self.handle_direct(now, from, bytes)
    }

    fn handle_direct<'a>(&mut self, now: Instant, from: SocketAddr, bytes: &'a [u8]) -> Input<'a> {
        if bytes.is_empty() {
            // A peer's NAT-opening datagram: it has done its job.
            return Input::Consumed;
        }
        if stun::is_stun(bytes) {
            let taken = self.exchanges.values_mut().any(|e| {
                e.session
                    .as_mut()
                    .is_some_and(|s| s.handle_input(now, from, bytes))
            });
            self.collect();
            if taken {
                return Input::Consumed;
            }
        }
        Input::Data {
            from,
            payload: bytes,
        }
    }

    /// If `to` reached us through our TURN relay, rewrites the datagram
    /// `buf[..len]` in place as a relayed message (a ChannelData message,
    /// or a Send indication until the channel is bound) and returns its
    /// new destination (the TURN server) and length. `None`: send it as it
    /// is (not a relay peer, or `buf` too short for the wrapped message).
    pub fn relay_in_place(
        &mut self,
        to: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<(SocketAddr, usize)> {
        let relay = self.relay.as_mut()?;
        if !relay.peers.contains(&to) {
            return None;
        }
        let data = buf.get(..len)?;
        relay.buf.resize(len + 64, 0);
        let (server, n) = relay.client.send_into(to, data, &mut relay.buf).ok()?;
        buf.get_mut(..n)?.copy_from_slice(relay.buf.get(..n)?);
        Some((server, n))
    }

    /// Advances sessions, the TURN client and expiry to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        for exchange in self.exchanges.values_mut() {
            if let Some(s) = exchange.session.as_mut() {
                s.handle_timeout(now);
            }
        }
        self.collect();
        self.expire(now);
        if let Some(relay) = self.relay.as_mut() {
            relay.client.handle_timeout(now);
            self.drain_turn(now);
        }
    }

    /// The next datagram to send: NAT-opening datagrams first (with
    /// [`Transmit::ttl`] set), then connectivity checks, then TURN
    /// requests.
    /// Datagrams to an endpoint that never sent us anything count against
    /// [`AgentConfig::unheard_budget`]; beyond it they are dropped.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some((destination, ttl)) = self.opening.pop_front() {
            if self.within_budget(destination) {
                return Some(Transmit {
                    source: Socket::Primary,
                    destination,
                    payload: Vec::new(),
                    ttl: Some(ttl),
                });
            }
        }
        while let Some(t) = self
            .exchanges
            .values_mut()
            .find_map(|e| e.session.as_mut().and_then(|s| s.poll_transmit()))
        {
            if self.within_budget(t.destination) {
                return Some(t);
            }
        }
        self.relay.as_mut().and_then(|r| r.client.poll_transmit())
    }

    fn tick(&mut self, now: Instant) {
        if self.clock.is_none_or(|c| now > c) {
            self.clock = Some(now);
        }
    }

    /// Whether one more datagram may go to `to` (and counts it).
    fn within_budget(&mut self, to: SocketAddr) -> bool {
        if self.heard.contains(&to) {
            return true;
        }
        let Some(now) = self.clock else {
            // Nothing has reached us yet, so nothing named `to` either.
            return true;
        };
        let window = self.config.unheard_window;
        if self.unheard.len() >= MAX_TRACKED_ENDPOINTS && !self.unheard.contains_key(&to) {
            self.unheard.retain(|_, b| now < b.since + window);
        }
        if self.unheard.len() >= MAX_TRACKED_ENDPOINTS && !self.unheard.contains_key(&to) {
            self.stats.unheard_dropped += 1;
            return false;
        }
        let b = self.unheard.entry(to).or_insert(Budget {
            since: now,
            sent: 0,
        });
        if now >= b.since + window {
            *b = Budget {
                since: now,
                sent: 0,
            };
        }
        if b.sent >= self.config.unheard_budget {
            self.stats.unheard_dropped += 1;
            return false;
        }
        b.sent += 1;
        true
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<AgentEvent<P>> {
        self.events.pop_front()
    }

    /// When [`Agent::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self
            .exchanges
            .values()
            .filter_map(|e| e.session.as_ref().and_then(|s| s.poll_timeout()));
        let relay = self.relay.as_ref().and_then(|r| r.client.poll_timeout());
        sessions.chain(relay).min()
    }

    fn push_event(&mut self, event: AgentEvent<P>) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(event);
        }
    }

    /// A punch request and an offer to `peer`, rate-limited.
    fn request(&mut self, now: Instant, peer: P) {
        if (self.endpoints.is_empty() && self.host.is_empty()) || self.is_patient(&peer) {
            return;
        }
        if self
            .requested
            .get(&peer)
            .is_some_and(|t| now < *t + self.config.request_interval)
        {
            return;
        }
        let keep = self.config.exchange_lifetime;
        self.requested.retain(|_, t| now < *t + keep);
        if self.requested.len() >= self.config.max_exchanges * 4 {
            return;
        }
        self.requested.insert(peer.clone(), now);
        self.push_event(AgentEvent::Signal {
            peer: peer.clone(),
            signal: Signal::Endpoints(self.advertised()),
        });
        self.expire(now);
        if let Some(offer) = self.start(now, peer.clone()) {
            self.push_event(AgentEvent::Signal {
                peer,
                signal: Signal::Offer(offer),
            });
        } else if let Some(e) = self.exchanges.get(&peer)
            && e.session.as_ref().is_none_or(PunchSession::is_checking)
        {
            // Our offer or our answer may have been lost (an overlay still
            // joining drops routed messages): the peer would never start
            // its session, and ours would fail. The same offer again; a
            // peer that has it ignores it.
            let offer = e.local.clone();
            self.stats.offers_resent += 1;
            self.push_event(AgentEvent::Signal {
                peer,
                signal: Signal::Offer(offer),
            });
        }
    }

    /// Our offer for a new exchange with `peer`, or `None` if one is in
    /// progress (or too many are, or we have no IPv4 endpoint).
    fn start(&mut self, now: Instant, peer: P) -> Option<Offer> {
        if self.exchanges.contains_key(&peer) || self.exchanges.len() >= self.config.max_exchanges {
            return None;
        }
        let candidates = self.candidates();
        if candidates.is_empty() {
            return None;
        }
        let offer = self.fresh_offer(peer.to_string(), candidates);
        self.exchanges.insert(
            peer,
            Exchange {
                local: offer.clone(),
                session: None,
                remote_ufrag: None,
                started_at: now,
            },
        );
        Some(offer)
    }

    /// Our candidates (IPv4 only, at most [`AgentConfig::max_candidates`]):
    /// host candidates first, then the other local endpoints as
    /// server-reflexive ones, each with its RFC 8445 §5.1.2.1 priority
    /// (type preference first, then our order).
    pub fn candidates(&self) -> Vec<Candidate> {
        let max = self.config.max_candidates;
        let host: Vec<SocketAddr> = self.host.iter().copied().filter(|e| e.is_ipv4()).collect();
        let reflexive: Vec<SocketAddr> = self
            .endpoints
            .iter()
            .copied()
            .filter(|e| e.is_ipv4() && !host.contains(e))
            .collect();
        // Host candidates leave room for the reflexive ones (at least half
        // of the offer when there are enough of those).
        let host_room = max.saturating_sub(reflexive.len()).max(max / 2);
        let n_host = host.len().min(host_room);
        let n_reflexive = reflexive.len().min(max - n_host);
        let with = |kind, list: &[SocketAddr], n: usize| {
            list.iter()
                .take(n)
                .enumerate()
                .map(move |(i, e)| {
                    let preference = u16::try_from(i).map_or(0, |i| 65535 - i);
                    Candidate::new(kind, *e, preference)
                })
                .collect::<Vec<_>>()
        };
        let mut all = with(CandidateKind::Host, &host, n_host);
        all.extend(with(
            CandidateKind::ServerReflexive,
            &reflexive,
            n_reflexive,
        ));
        all
    }

    fn fresh_offer(&mut self, to: String, candidates: Vec<Candidate>) -> Offer {
        let Some(rng) = self.rng.as_mut() else {
            return Offer::with_fresh_credentials(self.name.clone(), to, candidates);
        };
        let mut bytes = [0u8; 40];
        rng.fill_bytes(&mut bytes);
        Offer::with_credentials_from(&bytes, self.name.clone(), to, candidates)
    }

    fn expire(&mut self, now: Instant) {
        let lifetime = self.config.exchange_lifetime;
        self.exchanges.retain(|_, e| {
            e.session
                .as_ref()
                .is_some_and(|s| s.is_checking() || s.is_patient())
                || now < e.started_at + lifetime
        });
        self.refresh_quiet();
    }

    /// Turns the sessions' outcomes into events.
    fn collect(&mut self) {
        let mut outcomes = Vec::new();
        for (peer, exchange) in self.exchanges.iter_mut() {
            let Some(s) = exchange.session.as_mut() else {
                continue;
            };
            while let Some(event) = s.poll_event() {
                outcomes.push((peer.clone(), event));
            }
        }
        for (peer, event) in outcomes {
            match event {
                PunchEvent::Connected(outcome) => {
                    self.stats.connected += 1;
                    if outcome.patient {
                        self.stats.patient_connected += 1;
                    }
                    self.push_event(AgentEvent::Punched {
                        peer,
                        remote: outcome.remote,
                    });
                }
                PunchEvent::Failed(_) => {
                    self.stats.failed += 1;
                    self.push_event(AgentEvent::PunchFailed { peer: peer.clone() });
                    // No hole: offer our TURN relayed address, which the
                    // peer's own punch request already gave a permission.
                    if let Some(relayed) = self.relayed() {
                        self.push_event(AgentEvent::Signal {
                            peer,
                            signal: Signal::Endpoints(vec![relayed]),
                        });
                    }
                }
            }
        }
        self.refresh_quiet();
    }

    /// Acts on the TURN client's events.
    fn drain_turn(&mut self, now: Instant) {
        let mut relayed = Vec::new();
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        while let Some(event) = relay.client.poll_event() {
            match event {
                TurnEvent::Allocated { relayed: r, .. } => {
                    self.events
                        .push_back(AgentEvent::RelayAllocated { relayed: r });
                }
                TurnEvent::Data { peer, data } => relayed.push((peer, data)),
                TurnEvent::ChannelFailed { peer, .. } => {
                    relay.channels.remove(&peer);
                }
                TurnEvent::Failed(failure) => {
                    self.events.push_back(AgentEvent::RelayFailed(failure));
                }
                _ => {}
            }
        }
        for (peer, data) in relayed {
            self.note_relay_peer(now, peer);
            if matches!(self.handle_direct(now, peer, &data), Input::Data { .. }) {
                self.push_event(AgentEvent::Data { from: peer, data });
            }
        }
    }

    /// Notes that `peer` reached us through the relay, so that we answer
    /// through it, and binds it a channel.
    fn note_relay_peer(&mut self, now: Instant, peer: SocketAddr) {
        let max = self.config.max_relay_peers;
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if relay.peers.len() < max {
            relay.peers.insert(peer);
        }
        if relay.client.channel(peer).is_none()
            && relay.channels.len() < max
            && relay.channels.insert(peer)
            && relay.client.bind_channel(now, peer).is_err()
        {
            relay.channels.remove(&peer);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::stun::{Attribute, Class, Method, Repr, TransactionId};

    const SERVER: &str = "192.0.2.100:3478";
    const RELAYED: &str = "192.0.2.100:50000";

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn agent(name: &str, endpoint: &str, config: AgentConfig) -> Agent<String> {
        let mut a = Agent::new_with_insecure_seed(name.to_string(), config, 7);
        a.set_local_endpoints(vec![ep(endpoint)]);
        a
    }

    fn events(a: &mut Agent<String>) -> Vec<AgentEvent<String>> {
        std::iter::from_fn(|| a.poll_event()).collect()
    }

    fn transmits(a: &mut Agent<String>) -> Vec<Transmit> {
        std::iter::from_fn(|| a.poll_transmit()).collect()
    }

    fn offer_in(events: &[AgentEvent<String>]) -> Offer {
        events
            .iter()
            .find_map(|e| match e {
                AgentEvent::Signal {
                    signal: Signal::Offer(o),
                    ..
                } => Some(o.clone()),
                _ => None,
            })
            .expect("an offer")
    }

    /// Answers a TURN request the way a server does.
    fn answer(request: &[u8], attrs: Vec<Attribute>) -> Vec<u8> {
        let req = Repr::parse_bytes(request).unwrap();
        let mut resp = Repr::binding_request(req.transaction_id);
        resp.method = req.method;
        resp.class = Class::Success;
        resp.attributes = attrs;
        resp.to_bytes(&[]).unwrap()
    }

    /// An agent whose TURN allocation exists.
    fn allocated(now: Instant) -> Agent<String> {
        let mut a = agent("a", "192.0.2.1:4000", AgentConfig::default());
        a.set_turn(now, TurnConfig::new(ep(SERVER))).unwrap();
        let allocate = a.poll_transmit().unwrap();
        assert_eq!(allocate.destination, ep(SERVER));
        let resp = answer(
            &allocate.payload,
            vec![
                Attribute::XorRelayedAddress(ep(RELAYED)),
                Attribute::Lifetime(600),
            ],
        );
        assert_eq!(a.handle_input(now, ep(SERVER), &resp), Input::Consumed);
        assert_eq!(
            events(&mut a),
            [AgentEvent::RelayAllocated {
                relayed: ep(RELAYED)
            }]
        );
        a
    }

    #[test]
    fn opening_datagram_with_a_low_ttl_goes_first_when_the_policy_is_on() {
        let now = Instant::now();
        let mut a = agent("a", "192.0.2.1:4000", AgentConfig::default());
        a.connect(now, "b".into(), &[ep("198.51.100.2:4000")]);
        let first = a.poll_transmit().unwrap();
        assert_eq!(first.destination, ep("198.51.100.2:4000"));
        assert_eq!(first.ttl, Some(DEFAULT_OPEN_TTL));
        assert!(first.payload.is_empty());
        let ev = events(&mut a);
        assert_eq!(
            ev[0],
            AgentEvent::Signal {
                peer: "b".into(),
                signal: Signal::Endpoints(vec![ep("192.0.2.1:4000")])
            }
        );
        assert_eq!(offer_in(&ev).to, "b");
        // Policy off: nothing opens our NAT.
        let mut quiet = agent(
            "a",
            "192.0.2.1:4000",
            AgentConfig {
                open_ttl: None,
                ..AgentConfig::default()
            },
        );
        quiet.connect(now, "b".into(), &[ep("198.51.100.2:4000")]);
        assert!(quiet.poll_transmit().is_none());
        assert_eq!(quiet.stats().opened, 0);
    }

    /// The TTL steps a session sends are the agent's current ones: a host
    /// behind one NAT sends no TTL-3 step (it could reach a close peer's
    /// carrier NAT, see [`crate::depth`]).
    #[test]
    fn sessions_send_the_opening_steps_set() {
        for (set, expect) in [(None, vec![2, 3]), (Some(vec![2]), vec![2])] {
            let now = Instant::now();
            let a_ep = ep("192.0.2.1:4000");
            let mut a = agent("a", "192.0.2.1:4000", AgentConfig::default());
            let mut b = agent("b", "198.51.100.2:4000", AgentConfig::default());
            if let Some(ttls) = &set {
                b.set_opening_ttls(ttls.clone());
            }
            assert_eq!(b.opening_ttls(), &expect[..]);
            a.connect(now, "b".into(), &[]);
            deliver(&mut a, a_ep, &mut b, now, &mut Vec::new());
            let mut seen = std::collections::BTreeSet::new();
            for step in 0..50u64 {
                let t = now + Duration::from_millis(10 * step);
                b.handle_timeout(t);
                while let Some(x) = b.poll_transmit() {
                    seen.extend(x.ttl);
                }
            }
            assert_eq!(seen.into_iter().collect::<Vec<_>>(), expect, "{set:?}");
        }
    }

    /// A punch is under way from the first request until the session
    /// connects or fails; nothing is under way with a peer never asked.
    #[test]
    fn is_punching_from_the_request_to_the_outcome() {
        let now = Instant::now();
        let a_ep = ep("192.0.2.1:4000");
        let mut a = agent("a", "192.0.2.1:4000", AgentConfig::default());
        let mut b = agent("b", "198.51.100.2:4000", AgentConfig::default());
        assert!(!b.is_punching(&"a".to_string()));
        a.connect(now, "b".into(), &[]);
        assert!(a.is_punching(&"b".to_string()), "asked, no session yet");
        deliver(&mut a, a_ep, &mut b, now, &mut Vec::new());
        assert!(b.is_punching(&"a".to_string()), "checking");
        // Nobody answers b's checks: its session fails.
        let mut t = now;
        while b.is_punching(&"a".to_string()) && t < now + Duration::from_secs(60) {
            t += Duration::from_millis(100);
            b.handle_timeout(t);
            while b.poll_transmit().is_some() {}
        }
        assert!(!b.is_punching(&"a".to_string()));
        assert!(
            events(&mut b)
                .iter()
                .any(|e| matches!(e, AgentEvent::PunchFailed { .. })),
            "failed after {:?}",
            t - now
        );
    }

    /// Carries `from`'s signals and datagrams to `to`; returns the signals
    /// carried.
    fn deliver(
        from: &mut Agent<String>,
        from_ep: SocketAddr,
        to: &mut Agent<String>,
        now: Instant,
        punched: &mut Vec<(String, SocketAddr)>,
    ) -> usize {
        let name = from.name().to_string();
        let mut signals = 0;
        for event in events(from) {
            match event {
                AgentEvent::Signal { signal, .. } => {
                    signals += 1;
                    match signal {
                        Signal::Endpoints(e) => to.handle_endpoints(now, name.clone(), &e),
                        Signal::Offer(o) => to.handle_offer(now, name.clone(), &o),
                    }
                }
                AgentEvent::Punched { peer, remote } => punched.push((peer, remote)),
                other => panic!("{other:?}"),
            }
        }
        for t in transmits(from) {
            if t.ttl.is_none() {
                assert_eq!(to.handle_input(now, from_ep, &t.payload), Input::Consumed);
            }
        }
        signals
    }

    #[test]
    fn two_agents_punch_and_signals_end() {
        let (a_ep, b_ep) = (ep("192.0.2.1:4000"), ep("198.51.100.2:4000"));
        let now = Instant::now();
        let mut a = agent("a", "192.0.2.1:4000", AgentConfig::default());
        let mut b = agent("b", "198.51.100.2:4000", AgentConfig::default());
        a.connect(now, "b".into(), &[]);
        let mut punched = Vec::new();
        let mut signals = 0;
        // Time moves on: full checks to reflexive candidates wait for the
        // sessions' opening probes (which the network drops here).
        for i in 0..10 {
            let now = now + Duration::from_millis(20 * i);
            a.handle_timeout(now);
            b.handle_timeout(now);
            signals += deliver(&mut a, a_ep, &mut b, now, &mut punched);
            signals += deliver(&mut b, b_ep, &mut a, now, &mut punched);
        }
        punched.sort();
        assert_eq!(punched, [("a".into(), a_ep), ("b".into(), b_ep)]);
        // Endpoints both ways (once each: rate-limited), offers both ways,
        // and an answer each way that the other side ignores: it ends.
        assert_eq!(signals, 6);
        assert_eq!(a.stats().connected, 1);
        assert_eq!(b.stats().started, 1);
    }

    /// Behind a home NAT and a carrier-grade NAT (opening steps 2 and 3),
    /// the datagrams that open our NATs before the peer hears of us leave
    /// both; a host behind one NAT sends no TTL-3 datagram.
    #[test]
    fn opening_datagrams_leave_every_nat_of_ours() {
        for (ttls, expect) in [
            (vec![2, 3], vec![2, 3]),
            (vec![2], vec![2]),
            (vec![], vec![2]),
        ] {
            let now = Instant::now();
            let mut a = agent("a", "192.0.2.1:4000", AgentConfig::default());
            a.set_opening_ttls(ttls.clone());
            let peer = [ep("198.51.100.2:4000"), ep("198.51.100.3:4000")];
            a.connect(now, "b".into(), &peer);
            let sent: Vec<(SocketAddr, Option<u8>)> = transmits(&mut a)
                .into_iter()
                .map(|t| {
                    assert!(t.payload.is_empty());
                    (t.destination, t.ttl)
                })
                .collect();
            let want: Vec<(SocketAddr, Option<u8>)> = peer
                .iter()
                .flat_map(|e| expect.iter().map(|t| (*e, Some(*t))))
                .collect();
            assert_eq!(sent, want, "{ttls:?}");
            assert_eq!(a.stats().opened, want.len() as u64);
        }
    }

    /// The overlay that carries signals drops some while it is joining:
    /// when our answer is lost, the peer never starts its session, ours
    /// fails, and the peer's carrier NAT is spoiled by our checks. The
    /// next punch request carries our offer again.
    #[test]
    fn a_lost_answer_goes_again_with_the_next_request() {
        let (a_ep, b_ep) = (ep("192.0.2.1:4000"), ep("198.51.100.2:4000"));
        let t0 = Instant::now();
        let mut a = agent("a", "192.0.2.1:4000", AgentConfig::default());
        let mut b = agent("b", "198.51.100.2:4000", AgentConfig::default());
        // Both sides' overlays attempt the link at once.
        a.connect(t0, "b".into(), &[b_ep]);
        b.connect(t0, "a".into(), &[a_ep]);
        // b's signals arrive; a's offer and its answer are lost.
        deliver(&mut b, b_ep, &mut a, t0, &mut Vec::new());
        assert_eq!(a.stats().started, 1);
        let lost = events(&mut a);
        assert_eq!(
            lost.iter()
                .filter(|e| matches!(
                    e,
                    AgentEvent::Signal {
                        signal: Signal::Offer(_),
                        ..
                    }
                ))
                .count(),
            2,
            "{lost:?}"
        );
        while a.poll_transmit().is_some() {}
        assert_eq!(b.stats().started, 0);
        // The overlays retry two seconds later: requests both ways.
        let t1 = t0 + Duration::from_secs(2);
        b.connect(t1, "a".into(), &[a_ep]);
        a.connect(t1, "b".into(), &[b_ep]);
        let mut punched = Vec::new();
        for i in 0..20 {
            let now = t1 + Duration::from_millis(20 * i);
            a.handle_timeout(now);
            b.handle_timeout(now);
            deliver(&mut b, b_ep, &mut a, now, &mut punched);
            deliver(&mut a, a_ep, &mut b, now, &mut punched);
        }
        punched.sort();
        assert_eq!(punched, [("a".into(), a_ep), ("b".into(), b_ep)]);
        assert_eq!(b.stats().started, 1);
        assert!(a.stats().offers_resent >= 1);
    }

    #[test]
    fn a_session_times_out_to_an_event_and_the_relayed_address_is_offered() {
        let now = Instant::now();
        let mut a = allocated(now);
        let mut b = agent("b", "198.51.100.2:4000", AgentConfig::default());
        b.connect(now, "a".into(), &[]);
        let offer = offer_in(&events(&mut b));
        a.handle_offer(now, "b".into(), &offer);
        let first = offer_in(&events(&mut a));
        assert_eq!(first.to, "b");
        // Nothing ever answers.
        let mut at = now;
        while let Some(t) = a
            .poll_timeout()
            .filter(|t| *t <= now + PunchConfig::default().deadline)
        {
            transmits(&mut a);
            at = t;
            a.handle_timeout(at);
        }
        assert_eq!(at, now + PunchConfig::default().deadline);
        assert_eq!(
            events(&mut a),
            [
                AgentEvent::PunchFailed { peer: "b".into() },
                AgentEvent::Signal {
                    peer: "b".into(),
                    signal: Signal::Endpoints(vec![ep(RELAYED)])
                }
            ]
        );
        assert_eq!(a.stats().failed, 1);
        // The patient attempt follows (the default): quiet toward the
        // peer's reflexive endpoint, and no new exchange meanwhile.
        assert!(a.is_patient(&"b".into()));
        assert!(a.is_quiet_toward(&"b".into(), ep("198.51.100.2:4000")));
        assert!(!a.is_quiet_toward(&"b".into(), ep(RELAYED)));
        a.handle_timeout(now + Duration::from_secs(11));
        a.connect(
            now + Duration::from_secs(11),
            "b".into(),
            &[ep("198.51.100.2:4000")],
        );
        a.handle_endpoints(
            now + Duration::from_secs(11),
            "b".into(),
            &[ep("198.51.100.2:4000")],
        );
        assert_eq!(events(&mut a), []);
        assert!(
            transmits(&mut a)
                .iter()
                .all(|t| t.destination != ep("198.51.100.2:4000")),
            "nothing to the peer during the quiet period"
        );
        // Once it is over the exchange is forgotten: a new connect starts
        // a new one, with new credentials.
        while let Some(t) = a.poll_timeout().filter(|_| a.is_patient(&"b".into())) {
            transmits(&mut a);
            a.handle_timeout(t);
        }
        assert!(at < now + Duration::from_secs(400));
        let later = now + Duration::from_secs(400);
        a.handle_timeout(later);
        a.connect(later, "b".into(), &[]);
        let again = offer_in(&events(&mut a));
        assert_ne!(again.ufrag, first.ufrag);
    }

    /// Without patience the exchange ends with the failure.
    #[test]
    fn without_patience_a_failed_exchange_is_forgotten_after_its_lifetime() {
        let now = Instant::now();
        let config = AgentConfig {
            punch: PunchConfig::default(),
            ..AgentConfig::default()
        };
        let mut a = agent("a", "192.0.2.1:4000", config);
        let mut b = agent("b", "198.51.100.2:4000", AgentConfig::default());
        b.connect(now, "a".into(), &[]);
        let offer = offer_in(&events(&mut b));
        a.handle_offer(now, "b".into(), &offer);
        let first = offer_in(&events(&mut a));
        let mut at = now;
        while let Some(t) = a.poll_timeout() {
            transmits(&mut a);
            at = t;
            a.handle_timeout(at);
        }
        assert_eq!(at, now + PunchConfig::default().deadline);
        assert!(!a.is_patient(&"b".into()));
        a.handle_timeout(now + Duration::from_secs(11));
        a.connect(now + Duration::from_secs(11), "b".into(), &[]);
        let again = offer_in(&events(&mut a));
        assert_ne!(again.ufrag, first.ufrag);
    }

    #[test]
    fn turn_permissions_are_refreshed_before_they_expire() {
        let now = Instant::now();
        let mut a = allocated(now);
        a.handle_endpoints(now, "b".into(), &[ep("198.51.100.2:4000")]);
        let permission = transmits(&mut a)
            .into_iter()
            .find(|t| t.destination == ep(SERVER))
            .unwrap();
        let req = Repr::parse_bytes(&permission.payload).unwrap();
        assert_eq!(req.method, Method::CREATE_PERMISSION);
        let ok = answer(&permission.payload, vec![]);
        assert_eq!(a.handle_input(now, ep(SERVER), &ok), Input::Consumed);
        // Permissions last 300 s (RFC 8656 §9).
        let at = a.poll_timeout().unwrap();
        assert!(at < now + Duration::from_secs(300), "{at:?}");
        a.handle_timeout(now + Duration::from_secs(299));
        let methods: Vec<Method> = transmits(&mut a)
            .iter()
            .filter(|t| t.destination == ep(SERVER))
            .map(|t| Repr::parse_bytes(&t.payload).unwrap().method)
            .collect();
        assert!(methods.contains(&Method::CREATE_PERMISSION), "{methods:?}");
    }

    #[test]
    fn relayed_peers_are_answered_through_the_relay_until_heard_directly() {
        let now = Instant::now();
        let mut a = allocated(now);
        let peer = ep("203.0.113.5:7000");
        let mut data = Repr::binding_request(TransactionId([5; 12]));
        data.class = Class::Indication;
        data.method = Method::DATA;
        data.attributes = vec![
            Attribute::XorPeerAddress(peer),
            Attribute::Data(b"hello".to_vec()),
        ];
        let data = data.to_bytes(&[]).unwrap();
        assert_eq!(a.handle_input(now, ep(SERVER), &data), Input::Consumed);
        assert_eq!(
            events(&mut a),
            [AgentEvent::Data {
                from: peer,
                data: b"hello".to_vec()
            }]
        );
        assert_eq!(a.relay_peers(), [peer]);
        // A channel is asked for.
        let bind = a.poll_transmit().unwrap();
        assert_eq!(
            Repr::parse_bytes(&bind.payload).unwrap().method,
            Method::CHANNEL_BIND
        );
        // Answers to the peer are wrapped for the server.
        let mut buf = [0u8; 128];
        buf[..3].copy_from_slice(b"hey");
        let (to, n) = a.relay_in_place(peer, &mut buf, 3).unwrap();
        assert_eq!(to, ep(SERVER));
        assert_eq!(Repr::parse_bytes(&buf[..n]).unwrap().method, Method::SEND);
        assert!(a.relay_in_place(ep("203.0.113.6:1"), &mut buf, 3).is_none());
        // Heard directly: answered directly.
        assert_eq!(
            a.handle_input(now, peer, b"direct"),
            Input::Data {
                from: peer,
                payload: b"direct"
            }
        );
        assert!(a.relay_peers().is_empty());
        assert!(a.relay_in_place(peer, &mut buf, 3).is_none());
    }

    /// An offer replayed to us from another exchange, or one in another
    /// peer's name, starts nothing.
    #[test]
    fn attack_offers_not_from_the_peer_to_us_are_ignored() {
        let now = Instant::now();
        let mut a = agent("a", "192.0.2.1:4000", AgentConfig::default());
        let mut c = agent("c", "192.0.2.3:4000", AgentConfig::default());
        c.connect(now, "b".into(), &[]);
        let for_b = offer_in(&events(&mut c));
        a.handle_offer(now, "c".into(), &for_b);
        let mut in_b_name = for_b.clone();
        in_b_name.to = "a".into();
        in_b_name.from = "b".into();
        a.handle_offer(now, "c".into(), &in_b_name);
        assert_eq!(a.stats().started, 0);
        assert!(events(&mut a).is_empty());
        assert!(a.poll_transmit().is_none());
    }

    /// Offers naming a victim's endpoint, from many peers, do not make the
    /// agent a reflector: the victim, which never answers, gets at most
    /// the unheard budget per window, whatever the number of offers; an
    /// endpoint that answers is not limited.
    #[test]
    fn attack_offers_naming_a_victim_do_not_make_a_reflector() {
        let config = AgentConfig::default();
        let victim = ep("203.0.113.9:53");
        // Four fresh offers naming `victim` every 50 ms for one window;
        // returns the datagrams that went to it.
        let flood = |a: &mut Agent<String>, start: Instant| {
            let (mut now, mut to_victim) = (start, 0u32);
            while now < start + config.unheard_window - Duration::from_millis(100) {
                for i in 0..4u32 {
                    let peer = format!("p{}-{i}", (now - start).as_millis());
                    let mut offer = Offer::with_fresh_credentials(
                        peer.clone(),
                        "a".into(),
                        vec![Candidate::new(CandidateKind::Host, victim, 1)],
                    );
                    offer.from = peer.clone();
                    a.handle_offer(now, peer, &offer);
                }
                a.handle_timeout(now);
                to_victim += transmits(a)
                    .iter()
                    .filter(|t| t.destination == victim)
                    .count() as u32;
                now += Duration::from_millis(50);
            }
            to_victim
        };
        let start = Instant::now();
        let mut a = agent("a", "192.0.2.1:4000", config.clone());
        let to_victim = flood(&mut a, start);
        assert!(a.stats().started > 50, "the offers started sessions");
        assert!(
            to_victim <= config.unheard_budget,
            "{to_victim} datagrams to a silent victim in one window"
        );
        assert!(a.stats().unheard_dropped > 0);
        // An endpoint that has sent us something is not limited.
        let mut b = agent("a", "192.0.2.1:4000", config.clone());
        b.handle_input(start, victim, &[]);
        assert!(flood(&mut b, start) > config.unheard_budget);
    }

    #[test]
    fn host_candidates_are_offered_above_reflexive_ones() {
        let now = Instant::now();
        let srflx = ep("203.0.113.1:4000");
        let (lan, other) = (ep("192.168.1.2:4000"), ep("10.0.0.2:4000"));
        let mut a = agent("a", "203.0.113.1:4000", AgentConfig::default());
        // Loopback, link-local, unspecified and repeats are no host
        // candidates.
        let offered = vec![
            lan,
            ep("127.0.0.1:4000"),
            ep("169.254.7.7:4000"),
            ep("0.0.0.0:4000"),
            other,
            lan,
        ];
        assert!(a.set_host_candidates(offered.clone()));
        assert!(!a.set_host_candidates(offered));
        assert_eq!(a.host_candidates(), [lan, other]);
        a.connect(now, "b".into(), &[]);
        let ev = events(&mut a);
        // Punch requests: reflexive first (they get the NAT openings),
        // then the host candidates.
        assert_eq!(
            ev[0],
            AgentEvent::Signal {
                peer: "b".into(),
                signal: Signal::Endpoints(vec![srflx, lan, other])
            }
        );
        let offer = offer_in(&ev);
        let kinds: Vec<(CandidateKind, SocketAddr)> = offer
            .candidates
            .iter()
            .map(|c| (c.kind, c.address))
            .collect();
        assert_eq!(
            kinds,
            [
                (CandidateKind::Host, lan),
                (CandidateKind::Host, other),
                (CandidateKind::ServerReflexive, srflx)
            ]
        );
        // RFC 8445 §5.1.2: host above server-reflexive, our order within a
        // kind.
        let p: Vec<u32> = offer.candidates.iter().map(|c| c.priority).collect();
        assert!(p[0] > p[1] && p[1] > p[2], "{p:?}");
        assert_eq!(p[0] >> 24, 126);
        assert_eq!(p[2] >> 24, 100);
        // An address that is both stays a host candidate, offered once.
        a.set_host_candidates(vec![srflx]);
        assert_eq!(a.advertised(), [srflx]);
        assert_eq!(a.candidates().len(), 1);
        assert_eq!(a.candidates()[0].kind, CandidateKind::Host);
    }

    #[test]
    fn many_host_candidates_leave_room_for_reflexive_ones() {
        let config = AgentConfig::default();
        let mut a = agent("a", "203.0.113.1:4000", config.clone());
        a.set_local_endpoints(vec![ep("203.0.113.1:4000"), ep("203.0.113.1:4001")]);
        let host: Vec<SocketAddr> = (1..=12u8)
            .map(|i| SocketAddr::from(([10, 0, i, 2], 4000)))
            .collect();
        a.set_host_candidates(host.clone());
        let c = a.candidates();
        assert_eq!(c.len(), config.max_candidates);
        let reflexive = c
            .iter()
            .filter(|c| c.kind == CandidateKind::ServerReflexive)
            .count();
        assert_eq!(reflexive, 2);
        // With many reflexive endpoints too, host candidates keep half.
        a.set_local_endpoints(
            (0..12u16)
                .map(|i| SocketAddr::from(([203, 0, 113, 1], 5000 + i)))
                .collect(),
        );
        let c = a.candidates();
        assert_eq!(c.len(), config.max_candidates);
        let hosts = c.iter().filter(|c| c.kind == CandidateKind::Host).count();
        assert_eq!(hosts, config.max_candidates / 2);
        // Only host candidates (no reflexive endpoint yet): still offered.
        let mut lan_only: Agent<String> =
            Agent::new_with_insecure_seed("a".into(), config.clone(), 7);
        lan_only.set_host_candidates(host);
        assert_eq!(lan_only.candidates().len(), config.max_candidates);
        lan_only.connect(Instant::now(), "b".into(), &[]);
        assert_eq!(offer_in(&events(&mut lan_only)).candidates.len(), 8);
    }

    /// Two hosts behind one NAT that does not hairpin: datagrams to the
    /// NAT's mappings (the reflexive endpoints) are lost, the hosts reach
    /// each other only at their LAN addresses. The host candidates punch.
    #[test]
    fn two_agents_behind_one_nat_punch_over_their_host_candidates() {
        let now = Instant::now();
        let (a_lan, b_lan) = (ep("192.168.1.2:4000"), ep("192.168.1.3:4000"));
        let mut a = agent("a", "198.51.100.1:4000", AgentConfig::default());
        let mut b = agent("b", "198.51.100.1:61000", AgentConfig::default());
        a.set_host_candidates(vec![a_lan]);
        b.set_host_candidates(vec![b_lan]);
        a.connect(now, "b".into(), &[ep("198.51.100.1:61000")]);
        // Carries `from`'s signals, and its datagrams that reach `to` (over
        // the LAN); returns how many were lost (sent to the NAT).
        fn carry(
            from: &mut Agent<String>,
            from_lan: SocketAddr,
            to: &mut Agent<String>,
            to_lan: SocketAddr,
            at: Instant,
            punched: &mut Vec<(String, SocketAddr)>,
        ) -> usize {
            let name = from.name().to_string();
            for event in events(from) {
                match event {
                    AgentEvent::Signal { signal, .. } => match signal {
                        Signal::Endpoints(e) => to.handle_endpoints(at, name.clone(), &e),
                        Signal::Offer(o) => to.handle_offer(at, name.clone(), &o),
                    },
                    AgentEvent::Punched { peer, remote } => punched.push((peer, remote)),
                    _ => {}
                }
            }
            let mut lost = 0;
            for t in transmits(from) {
                if t.destination == to_lan && t.ttl.is_none() {
                    let _ = to.handle_input(at, from_lan, &t.payload);
                } else {
                    lost += 1;
                }
            }
            lost
        }
        let mut punched = Vec::new();
        let mut lost = 0;
        let mut at = now;
        for _ in 0..200 {
            lost += carry(&mut a, a_lan, &mut b, b_lan, at, &mut punched);
            lost += carry(&mut b, b_lan, &mut a, a_lan, at, &mut punched);
            at += Duration::from_millis(20);
            a.handle_timeout(at);
            b.handle_timeout(at);
        }
        punched.sort();
        assert_eq!(punched, [("a".into(), a_lan), ("b".into(), b_lan)]);
        assert!(lost > 0, "the reflexive endpoints were tried too");
    }

    /// A peer cannot make the agent send to endpoints that are no
    /// candidates: unspecified (Linux delivers it to the host itself),
    /// multicast, broadcast, port 0, or loopback (our own host's services)
    /// while we are not on loopback. The peer's real endpoint in the same
    /// messages is tried.
    #[test]
    fn attack_peer_named_local_and_multicast_endpoints_are_not_probed() {
        let now = Instant::now();
        let bad = [
            ep("127.0.0.1:53"),
            ep("127.0.0.53:53"),
            ep("0.0.0.0:4000"),
            ep("224.0.0.251:5353"),
            ep("255.255.255.255:67"),
            ep("198.51.100.2:0"),
            ep("[::1]:53"),
        ];
        let good = ep("198.51.100.2:4000");
        let mut named = bad.to_vec();
        named.push(good);
        let mut a = agent("a", "192.0.2.1:4000", AgentConfig::default());
        a.set_host_candidates(vec![ep("192.168.1.2:4000")]);
        a.connect(now, "b".into(), &named);
        a.handle_endpoints(now, "b".into(), &named);
        let mut offer = Offer::with_fresh_credentials(
            "b".into(),
            "a".into(),
            named
                .iter()
                .map(|e| Candidate::new(CandidateKind::Host, *e, 1))
                .collect(),
        );
        offer.from = "b".into();
        a.handle_offer(now, "b".into(), &offer);
        let mut sent = Vec::new();
        let mut at = now;
        while at < now + Duration::from_secs(6) {
            sent.extend(transmits(&mut a).into_iter().map(|t| t.destination));
            at += Duration::from_millis(20);
            a.handle_timeout(at);
        }
        assert!(sent.contains(&good), "{sent:?}");
        for e in bad {
            assert!(!sent.contains(&e), "sent to {e}: {sent:?}");
        }
        // On loopback (a test ring, a demo), loopback peers are fine.
        let mut local = agent("a", "127.0.0.1:4000", AgentConfig::default());
        assert!(local.is_usable_remote(ep("127.0.0.1:5000")));
        local.connect(now, "b".into(), &[ep("127.0.0.1:5000")]);
        assert_eq!(
            local.poll_transmit().unwrap().destination,
            ep("127.0.0.1:5000")
        );
    }

    /// Signalling from many peers cannot grow the agent without bound.
    #[test]
    fn attack_a_signal_flood_is_bounded() {
        let now = Instant::now();
        let mut a = allocated(now);
        let endpoints: Vec<SocketAddr> = (0..32u16)
            .map(|i| SocketAddr::from(([203, 0, 113, (i % 250) as u8], 1000 + i)))
            .collect();
        for i in 0..5000u32 {
            let peer = format!("p{i}");
            a.handle_endpoints(now, peer.clone(), &endpoints);
            let mut offer = Offer::with_fresh_credentials(
                peer.clone(),
                "a".into(),
                vec![Candidate::new(CandidateKind::Host, endpoints[0], 1)],
            );
            offer.from = peer.clone();
            a.handle_offer(now, peer, &offer);
        }
        let config = AgentConfig::default();
        assert!(a.exchanges.len() <= config.max_exchanges);
        assert!(a.requested.len() <= config.max_exchanges * 4);
        assert!(a.opening.len() <= config.max_open_queue);
        assert!(a.events.len() <= MAX_EVENTS);
        let relay = a.relay.as_ref().unwrap();
        assert!(relay.permitted.len() <= config.max_relay_peers);
    }
}
