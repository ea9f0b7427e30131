//! Deterministic simulations of two punch sessions through modelled NATs
//! (no sockets, no clock): which NAT pairs punch, what bounded port
//! guessing buys against a NAT with sequential ports, and a relay →
//! direct upgrade driven by a later punch attempt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use nat_traversal::link::{Link, LinkEvent, PathKind, Route, session_key};
use nat_traversal::punch::{PunchConfig, PunchEvent, PunchOutcome, PunchSession};
use nat_traversal::wire::{Candidate, CandidateKind, Offer};

const RENDEZVOUS: &str = "192.0.2.1:3478";
const LATENCY: Duration = Duration::from_millis(15);

/// A NAT with port-restricted filtering (RFC 4787 §5: address and port
/// dependent) and either endpoint-independent or per-destination mapping,
/// allocating ports sequentially.
struct NatBox {
    public_ip: IpAddr,
    symmetric: bool,
    next_port: u16,
    mappings: HashMap<Option<SocketAddr>, u16>,
    allowed: HashSet<(u16, SocketAddr)>,
    /// A closed firewall drops everything inbound.
    open: bool,
}

impl NatBox {
    fn new(ip: &str, symmetric: bool, first_port: u16) -> NatBox {
        NatBox {
            public_ip: ip.parse().unwrap(),
            symmetric,
            next_port: first_port,
            mappings: HashMap::new(),
            allowed: HashSet::new(),
            open: true,
        }
    }

    fn outbound(&mut self, dest: SocketAddr) -> SocketAddr {
        let key = self.symmetric.then_some(dest);
        let next = &mut self.next_port;
        let port = *self.mappings.entry(key).or_insert_with(|| {
            *next += 1;
            *next - 1
        });
        self.allowed.insert((port, dest));
        SocketAddr::new(self.public_ip, port)
    }

    fn inbound(&self, from: SocketAddr, port: u16) -> bool {
        self.open && self.allowed.contains(&(port, from))
    }
}

struct Peer {
    private: SocketAddr,
    nat: NatBox,
    offer: Offer,
}

fn peer(name: &str, other: &str, private: &str, nat: NatBox) -> Peer {
    let mut nat = nat;
    let srflx = nat.outbound(RENDEZVOUS.parse().unwrap());
    let private: SocketAddr = private.parse().unwrap();
    Peer {
        private,
        offer: Offer {
            from: name.into(),
            to: other.into(),
            ufrag: format!("{name}-ufrag"),
            password: format!("{name} password").into_bytes(),
            candidates: vec![
                Candidate::new(CandidateKind::Host, private, 65535),
                Candidate::new(CandidateKind::ServerReflexive, srflx, 65535),
            ],
        },
        nat,
    }
}

struct Packet {
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// Two peers, their sessions and the wire between them.
struct Sim {
    now: Instant,
    /// Percentage of datagrams lost, drawn from `rng_state`.
    loss_percent: u64,
    rng_state: u64,
    peers: [Peer; 2],
    sessions: [PunchSession; 2],
    wire: VecDeque<Packet>,
    outcomes: [Option<PunchEvent>; 2],
}

impl Sim {
    fn new(a: Peer, b: Peer, config: PunchConfig, now: Instant) -> Sim {
        let sa = PunchSession::new_with_insecure_seed(now, config.clone(), &a.offer, &b.offer, 1)
            .unwrap();
        let sb = PunchSession::new_with_insecure_seed(now, config, &b.offer, &a.offer, 2).unwrap();
        Sim {
            now,
            loss_percent: 0,
            rng_state: 0x9e37_79b9_7f4a_7c15,
            peers: [a, b],
            sessions: [sa, sb],
            wire: VecDeque::new(),
            outcomes: [None, None],
        }
    }

    fn restart(&mut self, config: PunchConfig, seed: u64) {
        let (a, b) = (&self.peers[0].offer, &self.peers[1].offer);
        self.sessions = [
            PunchSession::new_with_insecure_seed(self.now, config.clone(), a, b, seed).unwrap(),
            PunchSession::new_with_insecure_seed(self.now, config, b, a, seed + 1).unwrap(),
        ];
        self.outcomes = [None, None];
    }

    fn flush(&mut self) {
        for i in 0..2 {
            while let Some(t) = self.sessions[i].poll_transmit() {
                // Private networks do not reach each other.
                if t.destination.ip() == self.peers[1 - i].private.ip() {
                    continue;
                }
                let from = self.peers[i].nat.outbound(t.destination);
                // xorshift64: seeded loss, same seed same trace.
                self.rng_state ^= self.rng_state << 13;
                self.rng_state ^= self.rng_state >> 7;
                self.rng_state ^= self.rng_state << 17;
                if self.rng_state % 100 < self.loss_percent {
                    continue;
                }
                self.wire.push_back(Packet {
                    at: self.now + LATENCY,
                    from,
                    to: t.destination,
                    bytes: t.payload,
                });
            }
            while let Some(e) = self.sessions[i].poll_event() {
                self.outcomes[i].get_or_insert(e);
            }
        }
    }

    /// Run until both sessions reported or `limit` passed.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        loop {
            self.flush();
            if self.outcomes.iter().all(Option::is_some) {
                return;
            }
            let next_packet = self.wire.front().map(|p| p.at);
            let next_timer = self.sessions.iter().filter_map(|s| s.poll_timeout()).min();
            let Some(next) = next_packet.into_iter().chain(next_timer).min() else {
                return;
            };
            if next > end {
                return;
            }
            self.now = self.now.max(next);
            while self.wire.front().is_some_and(|p| p.at <= self.now) {
                let p = self.wire.pop_front().unwrap();
                if let Some(j) = self.peers.iter().position(|peer| {
                    peer.nat.public_ip == p.to.ip() && peer.nat.inbound(p.from, p.to.port())
                }) {
                    self.sessions[j].handle_input(self.now, p.from, &p.bytes);
                }
            }
            for s in &mut self.sessions {
                s.handle_timeout(self.now);
            }
        }
    }

    fn connected(&self) -> Vec<PunchOutcome> {
        self.outcomes
            .iter()
            .filter_map(|o| match o {
                Some(PunchEvent::Connected(outcome)) => Some(*outcome),
                _ => None,
            })
            .collect()
    }
}

fn cone(ip: &str) -> NatBox {
    NatBox::new(ip, false, 40000)
}

fn symmetric(ip: &str) -> NatBox {
    NatBox::new(ip, true, 50000)
}

#[test]
fn cone_to_cone_punches_through_port_restricted_filters() {
    let now = Instant::now();
    let a = peer("a", "b", "10.0.0.2:4000", cone("198.51.100.1"));
    let b = peer("b", "a", "10.1.0.2:4000", cone("198.51.100.2"));
    let mut sim = Sim::new(a, b, PunchConfig::default(), now);
    sim.run(Duration::from_secs(10));
    let c = sim.connected();
    assert_eq!(c.len(), 2, "{:?}", sim.outcomes);
    assert_eq!(c[0].remote, "198.51.100.2:40000".parse().unwrap());
    assert_eq!(c[1].remote, "198.51.100.1:40000".parse().unwrap());
    // Host candidates first, then server-reflexive: a few RTTs at most.
    assert!(
        c.iter()
            .all(|o| o.time_to_connect < Duration::from_millis(200)),
        "{c:?}"
    );
}

#[test]
fn symmetric_to_symmetric_fails_at_the_deadline() {
    let now = Instant::now();
    let a = peer("a", "b", "10.0.0.2:4000", symmetric("198.51.100.1"));
    let b = peer("b", "a", "10.1.0.2:4000", symmetric("198.51.100.2"));
    let config = PunchConfig {
        port_guess_range: 8,
        ..PunchConfig::default()
    };
    let mut sim = Sim::new(a, b, config.clone(), now);
    sim.run(Duration::from_secs(10));
    assert!(sim.connected().is_empty());
    for o in &sim.outcomes {
        assert!(matches!(o, Some(PunchEvent::Failed(_))), "{o:?}");
    }
    assert_eq!(sim.now, now + config.deadline);
}

#[test]
fn port_guessing_reaches_a_sequential_symmetric_nat() {
    let now = Instant::now();
    let run = |guess: u16| {
        let a = peer("a", "b", "10.0.0.2:4000", cone("198.51.100.1"));
        let b = peer("b", "a", "10.1.0.2:4000", symmetric("198.51.100.2"));
        let config = PunchConfig {
            port_guess_range: guess,
            max_guess_probes: 20,
            ..PunchConfig::default()
        };
        let mut sim = Sim::new(a, b, config, now);
        sim.run(Duration::from_secs(10));
        sim
    };
    // Without guessing, the symmetric side's new port is never probed.
    assert!(run(0).connected().is_empty());
    let sim = run(4);
    let c = sim.connected();
    assert_eq!(c.len(), 2, "{:?}", sim.outcomes);
    assert!(c.iter().any(|o| o.guessed), "{c:?}");
    assert!(sim.sessions[0].metrics().guess_probes_sent <= 20);
}

#[test]
fn relay_then_later_punch_upgrades_without_loss() {
    let now = Instant::now();
    let a = peer("a", "b", "10.0.0.2:4000", cone("198.51.100.1"));
    let mut b = peer("b", "a", "10.1.0.2:4000", cone("198.51.100.2"));
    b.nat.open = false;
    let key = session_key(&a.offer, &b.offer);
    let mut sim = Sim::new(a, b, PunchConfig::default(), now);
    sim.run(Duration::from_secs(10));
    assert!(sim.connected().is_empty(), "closed firewall must not punch");

    // Fall back to the relay: 500 ms one way.
    let (mut tx, mut rx) = (Link::new(sim.now, &key), Link::new(sim.now, &key));
    tx.use_route(Route::Relay);
    let mut relay: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut direct: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut sent = 0u64;
    let mut send = |tx: &mut Link,
                    now: Instant,
                    relay: &mut VecDeque<(Instant, Vec<u8>)>,
                    direct: &mut VecDeque<(Instant, Vec<u8>)>| {
        tx.send(&sent.to_be_bytes()).unwrap();
        sent += 1;
        let t = tx.poll_transmit().unwrap();
        match t.route {
            Route::Relay => relay.push_back((now + Duration::from_millis(500), t.payload)),
            Route::Direct(_) => direct.push_back((now + LATENCY, t.payload)),
        }
    };
    for _ in 0..5 {
        send(&mut tx, sim.now, &mut relay, &mut direct);
    }
    // The firewall opens; a later attempt punches while frames are in flight.
    sim.peers[1].nat.open = true;
    sim.restart(PunchConfig::default(), 7);
    sim.run(Duration::from_secs(10));
    let c = sim.connected();
    assert_eq!(c.len(), 2, "{:?}", sim.outcomes);
    tx.use_route(Route::Direct(c[0].remote));
    for _ in 0..5 {
        send(&mut tx, sim.now, &mut relay, &mut direct);
    }
    // Direct frames overtake the relayed ones; deliver in arrival order.
    let mut arrivals: Vec<(Instant, PathKind, Vec<u8>)> = relay
        .into_iter()
        .map(|(t, b)| (t, PathKind::Relay, b))
        .chain(direct.into_iter().map(|(t, b)| (t, PathKind::Direct, b)))
        .collect();
    arrivals.sort_by_key(|a| a.0);
    for (t, path, bytes) in &arrivals {
        assert!(rx.handle_input(*t, *path, bytes));
    }
    let got: Vec<(u64, PathKind)> = std::iter::from_fn(|| rx.poll_event())
        .filter_map(|e| match e {
            LinkEvent::Received { sequence, path, .. } => Some((sequence, path)),
            _ => None,
        })
        .collect();
    let mut seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    assert_eq!(got.iter().filter(|g| g.1 == PathKind::Relay).count(), 5);
    // The upgrade really overtook frames in flight on the relay.
    assert_eq!(got[0].1, PathKind::Direct, "{got:?}");
    assert_eq!(rx.metrics().duplicates, 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Under random loss up to 40 %, cone NATs still punch before the
    /// deadline, and every reported path leads to the peer's NAT.
    #[test]
    fn cone_pair_punches_under_loss(seed in 1u64.., loss in 0u64..40) {
        let now = Instant::now();
        let a = peer("a", "b", "10.0.0.2:4000", cone("198.51.100.1"));
        let b = peer("b", "a", "10.1.0.2:4000", cone("198.51.100.2"));
        let mut sim = Sim::new(a, b, PunchConfig::default(), now);
        sim.loss_percent = loss;
        sim.rng_state = seed;
        sim.run(Duration::from_secs(10));
        let c = sim.connected();
        proptest::prop_assert_eq!(c.len(), 2, "seed {} loss {}: {:?}", seed, loss, sim.outcomes);
        proptest::prop_assert_eq!(c[0].remote.ip(), sim.peers[1].nat.public_ip);
        proptest::prop_assert_eq!(c[1].remote.ip(), sim.peers[0].nat.public_ip);
    }
}
