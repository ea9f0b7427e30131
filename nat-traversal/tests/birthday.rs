//! Birthday probing (`PunchConfig::birthday`) through modelled NATs, all
//! randomness seeded: a port-restricted cone against a symmetric NAT that
//! picks a random port for every flow (Linux `masquerade fully-random`).
//! What the probe budget buys in hits, that nothing happens without it,
//! and that a datagram nobody authenticated never becomes a path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use nat_traversal::Socket;
use nat_traversal::punch::{
    BirthdayConfig, BirthdayRole, PunchConfig, PunchEvent, PunchOutcome, PunchSession,
};
use nat_traversal::wire::stun::{Attribute, Class, Repr};
use nat_traversal::wire::{Candidate, CandidateKind, Offer};

const LATENCY: Duration = Duration::from_millis(15);
const RENDEZVOUS: &str = "192.0.2.1:3478";
const OBSERVER: &str = "192.0.2.2:3478";
/// The port of every host's primary socket; extra socket `i` is
/// `EXTRA_BASE + i`.
const PRIMARY_PORT: u16 = 4000;
const EXTRA_BASE: u16 = 50_000;

/// A NAT with address-and-port-dependent filtering and either
/// endpoint-independent mapping that keeps the host's port, or a fresh
/// random port (1024–65535, from a seeded xorshift) for every flow.
struct Nat {
    public: IpAddr,
    symmetric: bool,
    rng: u64,
    mappings: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    used: HashSet<u16>,
    /// (public port, remote) pairs let in, and whom each port belongs to.
    allowed: HashSet<(u16, SocketAddr)>,
    owner: HashMap<u16, SocketAddr>,
}

impl Nat {
    fn new(public: &str, symmetric: bool, seed: u64) -> Nat {
        Nat {
            public: public.parse().unwrap(),
            symmetric,
            rng: seed | 1,
            mappings: HashMap::new(),
            used: HashSet::new(),
            allowed: HashSet::new(),
            owner: HashMap::new(),
        }
    }

    fn random_port(&mut self) -> u16 {
        loop {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let port = 1024 + (self.rng % 64_512) as u16;
            if self.used.insert(port) {
                return port;
            }
        }
    }

    fn outbound(&mut self, private: SocketAddr, dest: SocketAddr) -> SocketAddr {
        let key = (private, self.symmetric.then_some(dest));
        let port = match self.mappings.get(&key) {
            Some(&p) => p,
            None => {
                let p = if self.symmetric {
                    self.random_port()
                } else {
                    private.port()
                };
                self.mappings.insert(key, p);
                p
            }
        };
        self.allowed.insert((port, dest));
        self.owner.insert(port, private);
        SocketAddr::new(self.public, port)
    }

    fn inbound(&self, from: SocketAddr, port: u16) -> Option<SocketAddr> {
        self.allowed
            .contains(&(port, from))
            .then(|| self.owner.get(&port).copied())
            .flatten()
    }
}

struct Host {
    private: IpAddr,
    nat: Nat,
    session: PunchSession,
    outcome: Option<PunchEvent>,
}

fn private_addr(ip: IpAddr, socket: Socket) -> SocketAddr {
    match socket {
        Socket::Extra(i) => SocketAddr::new(ip, EXTRA_BASE + i),
        _ => SocketAddr::new(ip, PRIMARY_PORT),
    }
}

fn socket_of(addr: SocketAddr) -> Socket {
    match addr.port() {
        PRIMARY_PORT => Socket::Primary,
        p => Socket::Extra(p - EXTRA_BASE),
    }
}

fn offer(name: &str, other: &str, nat: &mut Nat, private: IpAddr) -> Offer {
    let primary = SocketAddr::new(private, PRIMARY_PORT);
    let mut candidates = vec![Candidate::new(CandidateKind::Host, primary, 65535)];
    // Every observer's view (two ports: a symmetric NAT).
    for observer in [RENDEZVOUS, OBSERVER] {
        let mapped = nat.outbound(primary, observer.parse().unwrap());
        if candidates.iter().all(|c| c.address != mapped) {
            candidates.push(Candidate::new(
                CandidateKind::ServerReflexive,
                mapped,
                65535,
            ));
        }
    }
    Offer {
        from: name.into(),
        to: other.into(),
        ufrag: format!("{name}-ufrag"),
        password: format!("{name} password").into_bytes(),
        candidates,
    }
}

/// A cone ("a", controlling) and a symmetric NAT ("b") punching with
/// `birthday`; returns both outcomes and both sessions' metrics.
struct Run {
    hosts: [Host; 2],
}

impl Run {
    fn new(seed: u64, birthday: Option<BirthdayConfig>, cone_b: bool) -> Run {
        let mut nat_a = Nat::new("203.0.113.1", false, seed.wrapping_mul(3) + 1);
        let mut nat_b = Nat::new("198.51.100.1", !cone_b, seed.wrapping_mul(7) + 5);
        let (pa, pb): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.1.0.2".parse().unwrap());
        let oa = offer("a", "b", &mut nat_a, pa);
        let ob = offer("b", "a", &mut nat_b, pb);
        let config = PunchConfig {
            deadline: Duration::from_secs(3),
            birthday,
            ..PunchConfig::default()
        };
        let now = Instant::now();
        let sa =
            PunchSession::new_with_insecure_seed(now, config.clone(), &oa, &ob, seed * 2).unwrap();
        let sb = PunchSession::new_with_insecure_seed(now, config, &ob, &oa, seed * 2 + 1).unwrap();
        Run {
            hosts: [
                Host {
                    private: pa,
                    nat: nat_a,
                    session: sa,
                    outcome: None,
                },
                Host {
                    private: pb,
                    nat: nat_b,
                    session: sb,
                    outcome: None,
                },
            ],
        }
    }

    /// Runs both sessions to their end through the NATs.
    fn run(&mut self) {
        let mut now = Instant::now();
        let mut wire: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
        let mut packets: HashMap<u64, (usize, SocketAddr, SocketAddr, Vec<u8>)> = HashMap::new();
        let mut seq = 0u64;
        loop {
            for i in 0..2 {
                let host = &mut self.hosts[i];
                while let Some(t) = host.session.poll_transmit() {
                    if !t.destination.ip().to_string().starts_with("10.") {
                        let from = host
                            .nat
                            .outbound(private_addr(host.private, t.source), t.destination);
                        // Low-TTL datagrams open our NAT and die.
                        if t.ttl.is_none() {
                            seq += 1;
                            wire.push(Reverse((now + LATENCY, seq)));
                            packets.insert(seq, (1 - i, from, t.destination, t.payload));
                        }
                    }
                }
                while let Some(ev) = host.session.poll_event() {
                    host.outcome.get_or_insert(ev);
                }
            }
            let timers = self.hosts.iter().filter_map(|h| h.session.poll_timeout());
            let next_packet = wire.peek().map(|Reverse((at, _))| *at);
            let Some(next) = timers.chain(next_packet).min() else {
                return;
            };
            now = next;
            if let Some(Reverse((at, id))) = wire.peek().copied()
                && at <= now
            {
                wire.pop();
                let (to, from, dest, bytes) = packets.remove(&id).unwrap();
                let host = &mut self.hosts[to];
                if dest.ip() == host.nat.public
                    && let Some(private) = host.nat.inbound(from, dest.port())
                {
                    host.session
                        .handle_input_on(now, socket_of(private), from, &bytes);
                }
            }
            for h in &mut self.hosts {
                if h.session.poll_timeout().is_some_and(|at| at <= now) {
                    h.session.handle_timeout(now);
                }
            }
        }
    }

    fn connected(&self, i: usize) -> Option<PunchOutcome> {
        match self.hosts[i].outcome {
            Some(PunchEvent::Connected(o)) => Some(o),
            _ => None,
        }
    }
}

/// Trials out of `runs` where both sides connected.
fn hits(runs: u64, birthday: Option<BirthdayConfig>) -> (u64, u32, u32) {
    let mut direct = 0;
    let (mut scan, mut open) = (0, 0);
    for seed in 1..=runs {
        let mut run = Run::new(seed, birthday.clone(), false);
        run.run();
        scan = scan.max(run.hosts[0].session.metrics().birthday_probes_sent);
        open = open.max(run.hosts[1].session.metrics().birthday_probes_sent);
        if let (Some(a), Some(b)) = (run.connected(0), run.connected(1)) {
            assert!(a.birthday && b.birthday);
            assert_eq!(a.local_socket, Socket::Primary);
            // The symmetric side's path leaves from the extra socket hit.
            assert!(matches!(b.local_socket, Socket::Extra(_)), "{b:?}");
            assert_eq!(a.remote.ip(), "198.51.100.1".parse::<IpAddr>().unwrap());
            assert_eq!(b.remote, "203.0.113.1:4000".parse().unwrap());
            direct += 1;
        }
    }
    (direct, scan, open)
}

/// The offers of "a" behind a cone and "b" behind a symmetric NAT.
fn cone_and_symmetric_offers() -> (Offer, Offer) {
    let mut cone = Nat::new("203.0.113.1", false, 1);
    let mut sym = Nat::new("198.51.100.1", true, 2);
    let (pa, pb) = ("10.0.0.2".parse().unwrap(), "10.1.0.2".parse().unwrap());
    (
        offer("a", "b", &mut cone, pa),
        offer("b", "a", &mut sym, pb),
    )
}

#[test]
fn roles_follow_the_offers() {
    let (oa, ob) = cone_and_symmetric_offers();
    assert!(!nat_traversal::punch::maps_per_destination(&oa));
    assert!(nat_traversal::punch::maps_per_destination(&ob));
    let c = BirthdayConfig::default();
    use nat_traversal::punch::birthday_role;
    assert_eq!(
        birthday_role(&c, &oa, &ob, true),
        Some(BirthdayRole::Scan {
            target: "198.51.100.1".parse().unwrap()
        })
    );
    assert_eq!(
        birthday_role(&c, &ob, &oa, false),
        Some(BirthdayRole::Open {
            target: "203.0.113.1:4000".parse().unwrap()
        })
    );
    // Two cones, or two symmetric NATs without `both_symmetric`: none.
    assert_eq!(birthday_role(&c, &oa, &oa, true), None);
    assert_eq!(birthday_role(&c, &ob, &ob, true), None);
    let both = BirthdayConfig {
        both_symmetric: true,
        ..c
    };
    assert!(matches!(
        birthday_role(&both, &ob, &ob, true),
        Some(BirthdayRole::Open { .. })
    ));
    // Off by default: no extra sockets, no random ports.
    let s =
        PunchSession::new_with_insecure_seed(Instant::now(), PunchConfig::default(), &ob, &oa, 1)
            .unwrap();
    assert_eq!(s.extra_sockets(), 0);
    assert_eq!(s.birthday_role(), None);
}

/// The default budget (256 sockets, 1024 probes: 1 − exp(−256·1024/64512)
/// ≈ 98 %) against a smaller one (64 × 256: ≈ 22 %), and none, over 60
/// seeded runs each. The figures are printed; the bounds are loose.
#[test]
fn birthday_hit_rate_follows_the_budget() {
    let (full, scan, open) = hits(60, Some(BirthdayConfig::default()));
    println!("default budget: {full}/60 direct, {scan} probes, {open} sockets");
    assert!(full >= 54, "{full}/60");
    assert!(scan <= 1024 && open <= 256);
    let small = BirthdayConfig {
        sockets: 64,
        probes: 256,
        ..BirthdayConfig::default()
    };
    let (some, scan, open) = hits(60, Some(small));
    println!("64 sockets x 256 probes: {some}/60 direct");
    assert!((3..=30).contains(&some), "{some}/60");
    assert!(scan <= 256 && open <= 64);
    let (none, scan, open) = hits(20, None);
    assert_eq!((none, scan, open), (0, 0, 0));
}

/// Between two cones birthday probing stays off and the ordinary checks
/// win on the primary socket.
#[test]
fn cones_punch_without_birthday_datagrams() {
    let mut run = Run::new(3, Some(BirthdayConfig::default()), true);
    run.run();
    for i in 0..2 {
        let o = run.connected(i).unwrap();
        assert!(!o.birthday);
        assert_eq!(o.local_socket, Socket::Primary);
        assert_eq!(run.hosts[i].session.metrics().birthday_probes_sent, 0);
    }
}

/// Someone who holds every port of the peer's address (a neighbour behind
/// the same carrier NAT) answers each of the cone side's random-port
/// probes with a success response for its transaction, and sends Binding
/// requests to the symmetric side's extra sockets, all without the
/// peer's password. Nothing becomes a path, and the extra sockets send no
/// answer. (Fails with `handle_success`'s integrity check removed, and
/// with `handle_request`'s.)
#[test]
fn attack_unauthenticated_birthday_hits_never_become_a_path() {
    let (oa, ob) = cone_and_symmetric_offers();
    let config = PunchConfig {
        birthday: Some(BirthdayConfig::default()),
        ..PunchConfig::default()
    };
    let t0 = Instant::now();
    let mut scanner =
        PunchSession::new_with_insecure_seed(t0, config.clone(), &oa, &ob, 1).unwrap();
    let mut answered = 0;
    while let Some(now) = scanner.poll_timeout() {
        scanner.handle_timeout(now);
        while let Some(t) = scanner.poll_transmit() {
            let Ok(req) = Repr::parse_bytes(&t.payload) else {
                continue;
            };
            if t.ttl.is_some() || req.class != Class::Request {
                continue;
            }
            let mut resp = Repr::binding_request(req.transaction_id);
            resp.class = Class::Success;
            resp.attributes.push(Attribute::XorMappedAddress(
                "203.0.113.1:4000".parse().unwrap(),
            ));
            resp.message_integrity = true;
            resp.fingerprint = true;
            let forged = resp.to_bytes(b"a guess").unwrap();
            assert!(!scanner.handle_input(now, t.destination, &forged));
            answered += 1;
        }
        if let Some(ev) = scanner.poll_event() {
            assert!(matches!(ev, PunchEvent::Failed(_)), "{ev:?}");
        }
    }
    assert!(answered > 1000, "{answered}");
    assert!(scanner.metrics().rejected >= 1000);

    let mut opener = PunchSession::new_with_insecure_seed(t0, config, &ob, &oa, 2).unwrap();
    assert_eq!(opener.extra_sockets(), 256);
    let attacker: SocketAddr = "203.0.113.1:4000".parse().unwrap();
    let mut req = Repr::binding_request(nat_traversal::wire::stun::TransactionId([5; 12]));
    req.attributes
        .push(Attribute::Username("b-ufrag:a-ufrag".into()));
    req.message_integrity = true;
    let forged = req.to_bytes(b"a guess").unwrap();
    while let Some(now) = opener.poll_timeout() {
        opener.handle_timeout(now);
        while opener.poll_transmit().is_some() {}
        for i in 0..256 {
            assert!(!opener.handle_input_on(now, Socket::Extra(i), attacker, &forged));
        }
        while let Some(t) = opener.poll_transmit() {
            assert_eq!(t.source, Socket::Primary, "an extra socket answered");
        }
    }
    assert!(matches!(opener.poll_event(), Some(PunchEvent::Failed(_))));
}
