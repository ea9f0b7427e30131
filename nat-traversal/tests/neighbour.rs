//! Two hosts behind NATs that are neighbours (one hop apart), modelled on
//! Linux conntrack: a datagram to a NAT's own address that matches no
//! flow is delivered locally and leaves an entry, which makes the NAT
//! remap its host's next flow toward that sender to a random port. No TTL
//! keeps a probe that left our NAT from the peer's, so the first attempt
//! fails unless both sides' first datagrams cross in flight; the patient
//! attempt ([`PunchConfig::patience`]) waits the entries out and opens in
//! turns.
//!
//! Two more details of Linux are modelled, because the patient attempt
//! must get past them: an expired entry stays in the table until a
//! datagram of its flow looks it up (its garbage collector is lazy), and a
//! new flow from a host port takes the public port of any entry of that
//! host port still in the table, expired or not (source NAT's "same
//! source" reuse).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use nat_traversal::punch::{Patience, PunchConfig, PunchEvent, PunchSession};
use nat_traversal::wire::{Candidate, CandidateKind, Offer};

const HOP: Duration = Duration::from_millis(1);
const TICK: Duration = Duration::from_millis(10);

/// One conntrack entry: the host's flow (`inside` → `remote`, seen as
/// `public` port outside) or, `local`, a datagram to the NAT itself from
/// `remote` to `public`.
#[derive(Debug, Clone)]
struct Entry {
    inside: Option<SocketAddr>,
    public: u16,
    remote: SocketAddr,
    expires: Instant,
}

/// A Linux masquerading NAT whose router accepts datagrams to itself.
struct Nat {
    ip: IpAddr,
    timeout: Duration,
    entries: Vec<Entry>,
    /// Remapped ports, in order (Linux picks them at random).
    next_random: u16,
}

impl Nat {
    fn new(ip: &str, timeout: Duration) -> Nat {
        Nat {
            ip: ip.parse().unwrap(),
            timeout,
            entries: Vec::new(),
            next_random: 40_000,
        }
    }

    /// Whether `port` towards `to` is taken by a live entry (expired ones
    /// do not count, as in Linux's tuple check).
    fn taken(&self, now: Instant, port: u16, to: SocketAddr) -> bool {
        self.entries
            .iter()
            .any(|e| e.public == port && e.remote == to && e.expires > now)
    }

    /// A datagram from the host with IP TTL `ttl`: its public source, or
    /// `None` when it dies here (TTL 1: conntrack runs before routing, so
    /// an existing flow is refreshed, or an expired one collected; a new
    /// one is never confirmed).
    fn outbound(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        ttl: u8,
    ) -> Option<SocketAddr> {
        let expires = now + self.timeout;
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.inside == Some(from) && e.remote == to)
        {
            if self.entries[i].expires > now {
                self.entries[i].expires = expires;
                return (ttl > 1).then_some(SocketAddr::new(self.ip, self.entries[i].public));
            }
            // The look-up collects the expired entry.
            self.entries.remove(i);
        }
        if ttl <= 1 {
            return None;
        }
        // The public port of another entry of this host port (expired or
        // not, while it is in the table), else the host's port, unless the
        // tuple is taken; then a random one.
        let same_source = self
            .entries
            .iter()
            .find(|e| e.inside == Some(from))
            .map(|e| e.public);
        let public = match same_source {
            Some(p) if !self.taken(now, p, to) => p,
            _ if !self.taken(now, from.port(), to) => from.port(),
            _ => {
                self.next_random += 7;
                self.next_random
            }
        };
        self.entries.push(Entry {
            inside: Some(from),
            public,
            remote: to,
            expires,
        });
        Some(SocketAddr::new(self.ip, public))
    }

    /// A datagram to the NAT's `port` from `from`: the host it is for, or
    /// `None` (delivered locally, leaving or refreshing a local entry).
    fn inbound(&mut self, now: Instant, from: SocketAddr, port: u16) -> Option<SocketAddr> {
        let expires = now + self.timeout;
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.public == port && e.remote == from)
        {
            if self.entries[i].expires > now {
                self.entries[i].expires = expires;
                return self.entries[i].inside;
            }
            self.entries.remove(i);
        }
        self.entries.push(Entry {
            inside: None,
            public: port,
            remote: from,
            expires,
        });
        None
    }
}

struct Side {
    host: SocketAddr,
    nat: Nat,
    session: Option<PunchSession>,
    starts_at: Instant,
    local: Offer,
    remote: Offer,
    failed_at: Option<Instant>,
    connected_at: Option<Instant>,
    connected_to: Option<SocketAddr>,
}

struct InFlight {
    at: Instant,
    to_side: usize,
    from: SocketAddr,
    dest_port: u16,
    payload: Vec<u8>,
}

/// An offer with the public (server-reflexive) candidate and a host
/// candidate on the side's LAN (which the peer probes too, through its own
/// NAT, to no avail).
fn offer(from: &str, to: &str, password: &[u8], public: SocketAddr) -> Offer {
    let lan = if from == "a" {
        "192.168.1.10"
    } else {
        "192.168.2.10"
    };
    let host = SocketAddr::new(lan.parse().unwrap(), public.port());
    Offer {
        from: from.into(),
        to: to.into(),
        ufrag: format!("{from}-uf"),
        password: password.to_vec(),
        candidates: vec![
            Candidate::new(CandidateKind::Host, host, 200),
            Candidate::new(CandidateKind::ServerReflexive, public, 100),
        ],
    }
}

struct Run {
    /// When each side failed and connected, from its start.
    sides: [Side; 2],
    t0: Instant,
}

/// Neighbour NATs with UDP timeout `timeout`; "a" (controlling, the
/// opener) starts `skew` before "b"; both open with TTL 2 (NAT depth 1).
fn run(
    patience: Option<Patience>,
    timeout: Duration,
    skew: Duration,
    opening_ttls: &[u8],
    until: Duration,
) -> Run {
    let t0 = Instant::now();
    let a_host: SocketAddr = "192.168.1.10:4000".parse().unwrap();
    let b_host: SocketAddr = "192.168.2.10:5000".parse().unwrap();
    let a_pub: SocketAddr = "198.19.0.11:4000".parse().unwrap();
    let b_pub: SocketAddr = "198.19.0.12:5000".parse().unwrap();
    let a_offer = offer("a", "b", b"password-a", a_pub);
    let b_offer = offer("b", "a", b"password-b", b_pub);
    let side = |host, nat, starts_at, local: &Offer, remote: &Offer| Side {
        host,
        nat,
        session: None,
        starts_at,
        local: local.clone(),
        remote: remote.clone(),
        failed_at: None,
        connected_at: None,
        connected_to: None,
    };
    let mut sides = [
        side(
            a_host,
            Nat::new("198.19.0.11", timeout),
            t0,
            &a_offer,
            &b_offer,
        ),
        side(
            b_host,
            Nat::new("198.19.0.12", timeout),
            t0 + skew,
            &b_offer,
            &a_offer,
        ),
    ];
    let config = PunchConfig {
        opening_ttls: opening_ttls.to_vec(),
        patience,
        ..PunchConfig::default()
    };
    let mut flight: VecDeque<InFlight> = VecDeque::new();
    let mut now = t0;
    while now < t0 + until {
        for (i, s) in sides.iter_mut().enumerate() {
            if s.session.is_none() && now >= s.starts_at {
                s.session = Some(
                    PunchSession::new_with_insecure_seed(
                        now,
                        config.clone(),
                        &s.local,
                        &s.remote,
                        i as u64,
                    )
                    .unwrap(),
                );
            }
        }
        // Deliveries due.
        while flight.front().is_some_and(|f| f.at <= now) {
            let f = flight.pop_front().unwrap();
            let s = &mut sides[f.to_side];
            if s.nat.inbound(now, f.from, f.dest_port) == Some(s.host)
                && let Some(session) = s.session.as_mut()
            {
                session.handle_input(now, f.from, &f.payload);
            }
        }
        for i in 0..2 {
            let peer_ip = sides[1 - i].nat.ip;
            let s = &mut sides[i];
            let Some(session) = s.session.as_mut() else {
                continue;
            };
            session.handle_timeout(now);
            while let Some(t) = session.poll_transmit() {
                let ttl = t.ttl.unwrap_or(64);
                // Through our NAT (a flow even for the peer's LAN
                // address), then anything not for the peer's NAT goes
                // nowhere.
                if let Some(source) = s.nat.outbound(now, s.host, t.destination, ttl)
                    && t.destination.ip() == peer_ip
                {
                    flight.push_back(InFlight {
                        at: now + HOP,
                        to_side: 1 - i,
                        from: source,
                        dest_port: t.destination.port(),
                        payload: t.payload,
                    });
                }
            }
            while let Some(event) = session.poll_event() {
                match event {
                    PunchEvent::Failed(_) => s.failed_at = Some(now),
                    PunchEvent::Connected(o) => {
                        s.connected_at = Some(now);
                        s.connected_to = Some(o.remote);
                    }
                    _ => {}
                }
            }
        }
        now += TICK;
    }
    Run { sides, t0 }
}

fn secs(run: &Run, at: Option<Instant>) -> Option<f64> {
    at.map(|t| t.duration_since(run.t0).as_secs_f64())
}

const LINUX: Duration = Duration::from_secs(30);
const SKEW: Duration = Duration::from_millis(50);

#[test]
fn neighbour_nats_fail_without_patience() {
    let r = run(None, LINUX, SKEW, &[2], Duration::from_secs(120));
    for s in &r.sides {
        assert!(s.failed_at.is_some());
        assert_eq!(s.connected_at, None, "{:?}", s.connected_to);
    }
}

/// Only datagrams that cross in flight get through without patience: the
/// model is not rigged against the first attempt.
#[test]
fn neighbour_nats_punch_when_both_start_at_once() {
    let r = run(None, LINUX, Duration::ZERO, &[2], Duration::from_secs(10));
    for s in &r.sides {
        assert!(s.connected_at.is_some());
    }
}

#[test]
fn patience_connects_neighbour_nats_after_two_quiet_periods() {
    let patience = nat_traversal::punch::DEFAULT_PATIENCE;
    let r = run(Some(patience), LINUX, SKEW, &[2], Duration::from_secs(120));
    let b_pub: SocketAddr = "198.19.0.12:5000".parse().unwrap();
    let a_pub: SocketAddr = "198.19.0.11:4000".parse().unwrap();
    let [a, b] = &r.sides;
    let failed = secs(&r, a.failed_at).unwrap();
    let connected = secs(&r, a.connected_at).expect("a connected");
    assert!(secs(&r, b.connected_at).is_some(), "b connected");
    // Both on the advertised (never remapped) ports.
    assert_eq!(a.connected_to, Some(b_pub));
    assert_eq!(b.connected_to, Some(a_pub));
    // Not before the responder's first round.
    let first_round = failed + 2.0 * patience.quiet.as_secs_f64();
    assert!(
        connected >= first_round - 0.5 && connected < first_round + patience.round.as_secs_f64(),
        "failed at {failed} s, connected at {connected} s"
    );
}

/// A NAT whose UDP timeout is longer than the quiet period: the first
/// round meets the entry the opening left and fails; the next, after a
/// longer silence, connects.
#[test]
fn patience_connects_a_slower_nat_in_a_later_round() {
    let patience = nat_traversal::punch::DEFAULT_PATIENCE;
    let r = run(
        Some(patience),
        Duration::from_secs(60),
        SKEW,
        &[2],
        Duration::from_secs(300),
    );
    let [a, b] = &r.sides;
    let failed = secs(&r, a.failed_at).unwrap();
    let connected = secs(&r, a.connected_at).expect("a connected");
    assert!(b.connected_at.is_some());
    assert!(
        connected > failed + 3.0 * patience.quiet.as_secs_f64(),
        "connected at {connected} s, failed at {failed} s: not the first round"
    );
}

/// The refreshes must die at our own NAT: with a refresh TTL that reaches
/// the neighbour (opening TTLs 2 and 3 from an unknown NAT depth, so the
/// refresh TTL is 2), they keep its entry alive and every round fails.
/// This is why patience takes its refresh TTL from the NAT depth.
#[test]
fn refreshes_that_reach_the_neighbour_spoil_the_attempt() {
    let patience = nat_traversal::punch::DEFAULT_PATIENCE;
    let r = run(
        Some(patience),
        LINUX,
        SKEW,
        &[2, 3],
        Duration::from_secs(300),
    );
    for s in &r.sides {
        assert_eq!(s.connected_at, None);
    }
}

/// During the patient attempt the opener sends nothing that reaches the
/// peer's NAT between its opening and the responder's round (the refresh
/// probes die at its own NAT), and the responder sends nothing before its
/// round.
#[test]
fn patient_sides_keep_quiet() {
    let patience = Patience {
        quiet: Duration::from_secs(10),
        refresh_interval: Duration::from_secs(2),
        round: Duration::from_secs(1),
        rounds: 1,
    };
    let t0 = Instant::now();
    let a_pub: SocketAddr = "198.19.0.11:4000".parse().unwrap();
    let b_pub: SocketAddr = "198.19.0.12:5000".parse().unwrap();
    let a_offer = offer("a", "b", b"password-a", a_pub);
    let b_offer = offer("b", "a", b"password-b", b_pub);
    let config = PunchConfig {
        opening_ttls: vec![2],
        patience: Some(patience),
        ..PunchConfig::default()
    };
    let mut a =
        PunchSession::new_with_insecure_seed(t0, config.clone(), &a_offer, &b_offer, 1).unwrap();
    let mut b = PunchSession::new_with_insecure_seed(t0, config, &b_offer, &a_offer, 2).unwrap();
    let mut sent: [Vec<(f64, Option<u8>)>; 2] = [Vec::new(), Vec::new()];
    let mut now = t0;
    let mut failed_at = None;
    let mut checked_quiet = false;
    while now < t0 + Duration::from_secs(40) {
        if a.is_patient() && !checked_quiet {
            // Quiet toward every address the first attempt probed (the
            // peer's LAN address too), nothing else.
            let b_host: SocketAddr = "192.168.2.10:5000".parse().unwrap();
            assert!(a.is_quiet_toward(b_pub) && a.is_quiet_toward(b_host));
            assert!(!a.is_quiet_toward("203.0.113.1:5000".parse().unwrap()));
            assert_eq!(a.quiet_endpoints().count(), 2);
            checked_quiet = true;
        }
        for (i, s) in [&mut a, &mut b].into_iter().enumerate() {
            s.handle_timeout(now);
            while let Some(t) = s.poll_transmit() {
                sent[i].push((now.duration_since(t0).as_secs_f64(), t.ttl));
            }
            while let Some(e) = s.poll_event() {
                if matches!(e, PunchEvent::Failed(_)) {
                    failed_at.get_or_insert(now.duration_since(t0).as_secs_f64());
                }
            }
            if let Some(next) = s.poll_timeout() {
                assert!(next >= now, "a deadline in the past");
            }
        }
        now += TICK;
    }
    let failed = failed_at.unwrap();
    assert!(checked_quiet);
    assert!(a.is_patient() || b.is_patient() || now > t0 + Duration::from_secs(35));
    let after = |i: usize| -> Vec<(f64, Option<u8>)> {
        sent[i]
            .iter()
            .copied()
            .filter(|(t, _)| *t > failed)
            .collect()
    };
    let a_after = after(0);
    let b_after = after(1);
    // Nothing that reaches the peer's NAT (TTL above 1, or full) goes out
    // but the opener's opening and the responder's round.
    let (a_low, a_rest): (Vec<(f64, Option<u8>)>, Vec<_>) = a_after
        .iter()
        .copied()
        .partition(|(_, ttl)| *ttl == Some(1));
    let (b_low, b_rest): (Vec<(f64, Option<u8>)>, Vec<_>) = b_after
        .iter()
        .copied()
        .partition(|(_, ttl)| *ttl == Some(1));
    // The opener: priming (TTL 1, every address the first attempt probed:
    // the peer's host and reflexive candidates) a second before its
    // opening, one opening (TTL 2) after the quiet period, then refreshes
    // with TTL 1 (and nothing at full TTL: no response was due).
    assert_eq!(a_rest.len(), 1, "{a_after:?}");
    assert_eq!(a_rest[0].1, Some(2));
    assert!((a_rest[0].0 - (failed + 10.0)).abs() < 0.02, "{a_after:?}");
    let primed: Vec<&(f64, Option<u8>)> = a_low.iter().filter(|(t, _)| *t < a_rest[0].0).collect();
    assert_eq!(primed.len(), 2, "{a_after:?}");
    assert!(
        primed
            .iter()
            .all(|(t, _)| (*t - (failed + 9.0)).abs() < 0.02),
        "{a_after:?}"
    );
    assert!(a_low.len() >= 2 + 4, "refreshes: {a_after:?}");
    // The responder: priming a second before its round, then full checks,
    // only in its round.
    assert_eq!(b_low.len(), 2, "{b_after:?}");
    assert!(
        b_low
            .iter()
            .all(|(t, _)| (*t - (failed + 19.0)).abs() < 0.02),
        "{b_after:?}"
    );
    assert!(!b_rest.is_empty());
    assert!(
        b_rest
            .iter()
            .all(|(t, ttl)| ttl.is_none() && *t >= failed + 20.0 - 0.01 && *t < failed + 21.05),
        "{b_after:?}"
    );
    // And afterwards the attempt is over.
    assert!(!a.is_patient() && !b.is_patient());
}

/// A forged check (wrong credentials) during the patient attempt gets no
/// answer and makes no path; the attempt goes on.
#[test]
fn attack_forged_checks_during_patience_make_no_path() {
    let patience = nat_traversal::punch::DEFAULT_PATIENCE;
    let t0 = Instant::now();
    let a_pub: SocketAddr = "198.19.0.11:4000".parse().unwrap();
    let b_pub: SocketAddr = "198.19.0.12:5000".parse().unwrap();
    let attacker: SocketAddr = "203.0.113.66:5000".parse().unwrap();
    let a_offer = offer("a", "b", b"password-a", a_pub);
    let b_offer = offer("b", "a", b"password-b", b_pub);
    let config = PunchConfig {
        opening_ttls: vec![2],
        patience: Some(patience),
        ..PunchConfig::default()
    };
    let mut a = PunchSession::new_with_insecure_seed(t0, config, &a_offer, &b_offer, 1).unwrap();
    let mut now = t0;
    while !a.is_patient() {
        now += TICK;
        a.handle_timeout(now);
        while a.poll_transmit().is_some() {}
    }
    assert!(matches!(a.poll_event(), Some(PunchEvent::Failed(_))));
    // The attacker knows the usernames (they travel in clear) but not the
    // password: it keys its request with a guess.
    let mut probe = None;
    let mut bs = PunchSession::new_with_insecure_seed(
        now,
        PunchConfig {
            opening_ttls: vec![],
            ..PunchConfig::default()
        },
        &b_offer,
        &Offer {
            password: b"not-a-password".to_vec(),
            ..a_offer.clone()
        },
        3,
    )
    .unwrap();
    while let Some(t) = bs.poll_transmit() {
        probe.get_or_insert(t.payload);
    }
    let probe = probe.unwrap();
    assert!(!a.handle_input(now, attacker, &probe));
    assert!(
        a.poll_transmit().is_none(),
        "no answer, no check to the forger"
    );
    assert!(a.poll_event().is_none());
    assert!(a.is_patient());
    assert_eq!(a.metrics().rejected, 1);
}
