//! Test support: a CA, endpoint builders and a two-host network simulator.
#![allow(dead_code)]

include!("doc_ca.rs");

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use ipsec_sa::{
    Config, Endpoint, Event, LocalIdentity, OpenOutput, PeerAuthenticator, Policy, Rejection,
};

pub const A: &str = "10.1.0.1";
pub const B: &str = "10.1.0.2";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn config(local: &str) -> Config {
    Config {
        local_ip: ip(local),
        policy: Policy::protect("10.1.0.0/16".parse().unwrap()).with_public_host(ip("10.1.0.254")),
        ..Config::default()
    }
}

pub type Ep<A = TestAuthenticator> = Endpoint<A>;

pub fn endpoint<A: PeerAuthenticator>(
    config: Config,
    cert: &[u8],
    key: &[u8],
    auth: A,
    clock: &Clock,
    seed: u8,
) -> Ep<A> {
    let identity = LocalIdentity::from_pkcs8(cert, key).unwrap();
    Endpoint::new_with_insecure_seed(
        clock.now(),
        clock.wall(),
        config,
        identity,
        auth,
        [seed; 32],
    )
}

/// A test clock: a base instant plus an offset, and the matching wall time.
#[derive(Clone)]
pub struct Clock {
    base: Instant,
    wall: SystemTime,
    offset: Duration,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
            wall: SystemTime::now(),
            offset: Duration::ZERO,
        }
    }
    pub fn now(&self) -> Instant {
        self.base + self.offset
    }
    pub fn wall(&self) -> SystemTime {
        self.wall + self.offset
    }
    pub fn advance(&mut self, by: Duration) {
        self.offset += by;
    }
    pub fn set(&mut self, at: Instant) {
        if at > self.now() {
            self.offset = at - self.base;
        }
    }
}

/// Decides whether a datagram (A → B if true) is delivered; may rewrite it.
pub type Filter = Box<dyn FnMut(bool, &mut Vec<u8>) -> bool>;

/// One datagram in flight.
pub struct Flight {
    pub deliver_at: Instant,
    /// true: A → B.
    pub a_to_b: bool,
    pub payload: Vec<u8>,
}

/// Two endpoints joined by a network with fixed latency. A filter may drop
/// or rewrite datagrams.
pub struct Pair<A = TestAuthenticator> {
    pub clock: Clock,
    pub a: Ep<A>,
    pub b: Ep<A>,
    pub a_ip: IpAddr,
    pub b_ip: IpAddr,
    pub latency: Duration,
    /// Extra random delay per datagram, up to this much (reorders).
    pub jitter: Duration,
    /// xorshift state for the jitter.
    pub rng: u64,
    pub in_flight: VecDeque<Flight>,
    /// Plaintexts delivered to A and to B.
    pub to_a: Vec<Vec<u8>>,
    pub to_b: Vec<Vec<u8>>,
    pub rejections_a: Vec<Rejection>,
    pub rejections_b: Vec<Rejection>,
    pub events_a: Vec<Event>,
    pub events_b: Vec<Event>,
    /// Return false to drop; may rewrite the datagram.
    pub filter: Filter,
}

impl Pair<TestAuthenticator> {
    /// Two hosts with certificates from one CA.
    pub fn new() -> (Pair, TestCa) {
        let (pair, ca, _) = Pair::new_with_a_credentials();
        (pair, ca)
    }

    /// [`Pair::new`], also returning A's certificate and key (to build
    /// another A).
    pub fn new_with_a_credentials() -> (Pair, TestCa, (Vec<u8>, Vec<u8>)) {
        let ca = TestCa::new();
        let clock = Clock::new();
        let (ca_cert, ca_key) = ca.issue(ip(A));
        let (cb_cert, cb_key) = ca.issue(ip(B));
        let a = endpoint(config(A), &ca_cert, &ca_key, ca.authenticator(), &clock, 1);
        let b = endpoint(config(B), &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
        (Pair::from_endpoints(clock, a, b), ca, (ca_cert, ca_key))
    }
}

impl<A: PeerAuthenticator> Pair<A> {
    pub fn from_endpoints(clock: Clock, a: Ep<A>, b: Ep<A>) -> Pair<A> {
        Pair {
            clock,
            a_ip: a.config().local_ip,
            b_ip: b.config().local_ip,
            a,
            b,
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            rng: 0x9e37_79b9_7f4a_7c15,
            in_flight: VecDeque::new(),
            to_a: Vec::new(),
            to_b: Vec::new(),
            rejections_a: Vec::new(),
            rejections_b: Vec::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
            filter: Box::new(|_, _| true),
        }
    }

    /// Moves every pending transmit and event into the network / logs.
    pub fn collect(&mut self) {
        while let Some(t) = self.a.poll_transmit() {
            assert_eq!(t.destination, self.b_ip);
            let at = self.delivery_time();
            self.in_flight.push_back(Flight {
                deliver_at: at,
                a_to_b: true,
                payload: t.payload,
            });
        }
        while let Some(t) = self.b.poll_transmit() {
            assert_eq!(t.destination, self.a_ip);
            let at = self.delivery_time();
            self.in_flight.push_back(Flight {
                deliver_at: at,
                a_to_b: false,
                payload: t.payload,
            });
        }
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
    }

    /// Sends a sealed data packet (already produced by `seal`) into the network.
    pub fn send_raw(&mut self, a_to_b: bool, payload: Vec<u8>) {
        let at = self.delivery_time();
        self.in_flight.push_back(Flight {
            deliver_at: at,
            a_to_b,
            payload,
        });
    }

    /// Now plus latency plus a seeded random share of the jitter.
    fn delivery_time(&mut self) -> Instant {
        let mut extra = Duration::ZERO;
        if !self.jitter.is_zero() {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let micros = self.jitter.as_micros() as u64;
            extra = Duration::from_micros(self.rng % (micros + 1));
        }
        self.clock.now() + self.latency + extra
    }

    /// Seals `data` from A to B (or B to A) and puts it on the wire.
    pub fn send(&mut self, a_to_b: bool, data: &[u8]) -> ipsec_sa::SealOutput {
        let now = self.clock.now();
        let mut out = Vec::new();
        let result = if a_to_b {
            self.a.seal(now, self.b_ip, data, &mut out)
        } else {
            self.b.seal(now, self.a_ip, data, &mut out)
        }
        .unwrap();
        if result == ipsec_sa::SealOutput::Sealed {
            self.send_raw(a_to_b, out);
        }
        self.collect();
        result
    }

    /// Delivers one datagram to its receiver.
    pub fn deliver(&mut self, a_to_b: bool, mut payload: Vec<u8>) {
        if !(self.filter)(a_to_b, &mut payload) {
            return;
        }
        let now = self.clock.now();
        let (to, from_ip, sink, rejections) = if a_to_b {
            (
                &mut self.b,
                self.a_ip,
                &mut self.to_b,
                &mut self.rejections_b,
            )
        } else {
            (
                &mut self.a,
                self.b_ip,
                &mut self.to_a,
                &mut self.rejections_a,
            )
        };
        match to.open(now, from_ip, &mut payload) {
            Ok(OpenOutput::Plaintext(p)) => sink.push(p.to_vec()),
            Ok(_) => {}
            Err(e) => rejections.push(e),
        }
        self.collect();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let flights = self.in_flight.iter().map(|f| f.deliver_at).min();
        [flights, self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances time to the next delivery or timer, up to `until`, and
    /// handles it. Returns false when nothing is due before `until`.
    pub fn step(&mut self, until: Instant) -> bool {
        self.collect();
        let Some(next) = self.next_deadline() else {
            self.clock.set(until);
            return false;
        };
        if next > until {
            self.clock.set(until);
            return false;
        }
        self.clock.set(next);
        let now = self.clock.now();
        let mut due = Vec::new();
        let mut rest = VecDeque::new();
        for f in self.in_flight.drain(..) {
            if f.deliver_at <= now {
                due.push(f)
            } else {
                rest.push_back(f)
            }
        }
        self.in_flight = rest;
        for f in due {
            self.deliver(f.a_to_b, f.payload);
        }
        if self.a.poll_timeout().is_some_and(|t| t <= now) {
            self.a.handle_timeout(now);
        }
        if self.b.poll_timeout().is_some_and(|t| t <= now) {
            self.b.handle_timeout(now);
        }
        self.collect();
        true
    }

    /// Runs until the network is empty (timers may remain), bounded.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            if self.in_flight.is_empty() {
                return;
            }
            let until = self.clock.now() + Duration::from_secs(1);
            self.step(until);
        }
        panic!("network did not settle");
    }

    /// Runs all events up to `until`.
    pub fn run_until(&mut self, until: Instant) {
        for _ in 0..1_000_000 {
            if !self.step(until) {
                return;
            }
        }
        panic!("livelock");
    }

    /// Establishes SAs by sending one packet A → B; returns it once delivered.
    pub fn establish(&mut self) {
        assert_eq!(
            self.send(true, b"hello"),
            ipsec_sa::SealOutput::HandshakeNeeded
        );
        self.drive();
        assert_eq!(self.to_b, vec![b"hello".to_vec()]);
        self.to_b.clear();
    }
}
