//! Handshake denial of service and certificate disclosure, as an attacker
//! would try them: init floods from spoofed and real sources, spoofed inits
//! fishing for the responder's certificate or cancelling its exchange,
//! cookies moved to another address or kept past the secret's rotation.
//!
//! The network is in memory (tests/common): a transmit goes to its
//! destination address, i.e. to whoever really owns that address, never to
//! the attacker who put it in an init's source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use ipsec_sa::cookie::{self, Cookie};
use ipsec_sa::wire::{HandshakeRepr, INIT_MACS_LEN};
use ipsec_sa::{Config, HandshakeError, OpenOutput, Rejection, SealOutput, Transmit};

/// An address the attacker spoofs; nobody answers for it in these tests.
const SPOOFED: &str = "10.1.0.66";
/// An address the attacker really owns (it receives that address's traffic).
const OWNED: &str = "10.1.0.7";
/// Another address, owned by someone else.
const OTHER: &str = "10.1.0.8";

const KIND_RESPONSE: u8 = 2;
const KIND_COOKIE: u8 = 4;

fn kind(payload: &[u8]) -> u8 {
    match HandshakeRepr::parse(payload) {
        Ok(HandshakeRepr::Init { .. }) => 1,
        Ok(HandshakeRepr::Response { .. }) => KIND_RESPONSE,
        Ok(HandshakeRepr::Finish { .. }) => 3,
        Ok(HandshakeRepr::CookieReply { .. }) => KIND_COOKIE,
        _ => 0,
    }
}

/// The attacker's init factory. One real init for `target` (made by an
/// endpoint configured as if it were at `claimed`), then copies with a new
/// initiator index and recomputed macs: `mac1`'s key is public, and `mac2`
/// is computed from a cookie the attacker holds, if any. Reusing one
/// ephemeral key costs the attacker nothing; it only makes the test fast.
struct Forger {
    base: Vec<u8>,
    target: IpAddr,
    counter: u32,
    cookie: Option<Cookie>,
}

impl Forger {
    fn new(ca: &TestCa, claimed: &str, target: &str, clock: &Clock, seed: u8) -> Forger {
        let (cert, key) = ca.issue(ip(claimed));
        let mut ep = endpoint(
            config(claimed),
            &cert,
            &key,
            ca.authenticator(),
            clock,
            seed,
        );
        let mut out = Vec::new();
        assert_eq!(
            ep.seal(clock.now(), ip(target), b"x", &mut out),
            Ok(SealOutput::HandshakeNeeded)
        );
        let base = ep.poll_transmit().unwrap().payload;
        assert_eq!(kind(&base), 1);
        Forger {
            base,
            target: ip(target),
            counter: 0,
            cookie: None,
        }
    }

    /// A new init (with mac2 if the forger holds a cookie for the target).
    fn next_init(&mut self) -> Vec<u8> {
        self.counter += 1;
        let mut init = self.base.clone();
        init[6..10].copy_from_slice(&(0x4000_0000 + self.counter).to_be_bytes());
        let mac1_at = init.len() - INIT_MACS_LEN;
        let mac1 = cookie::mac1(self.target, &init[..mac1_at]);
        init[mac1_at..mac1_at + 16].copy_from_slice(&mac1);
        let mac2 = self
            .cookie
            .as_ref()
            .map_or([0; 16], |c| c.mac2(&init[..mac1_at + 16]));
        init[mac1_at + 16..].copy_from_slice(&mac2);
        init
    }
}

/// Moves B's transmits to A into the pair's network; returns the others
/// (to spoofed or attacker addresses).
fn drain_b(p: &mut Pair) -> Vec<Transmit> {
    let mut others = Vec::new();
    while let Some(t) = p.b.poll_transmit() {
        if t.destination == p.a_ip {
            p.send_raw(false, t.payload);
        } else {
            others.push(t);
        }
    }
    others
}

fn pair_with_b(config_b: Config) -> (Pair, TestCa) {
    let ca = TestCa::new();
    let clock = Clock::new();
    let (ca_cert, ca_key) = ca.issue(ip(A));
    let (cb_cert, cb_key) = ca.issue(ip(B));
    let a = endpoint(config(A), &ca_cert, &ca_key, ca.authenticator(), &clock, 1);
    let b = endpoint(config_b, &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
    (Pair::from_endpoints(clock, a, b), ca)
}

/// 1,200 inits (more than the 1,024 responder slots) from one spoofed
/// address, one a millisecond; A opens its first SA with B near the end of
/// the flood, when an undefended B would be full. B keeps at most the
/// per-source cap of state for the spoofed address, answers the rest with
/// cookie replies (which go to the spoofed address, not to the attacker),
/// and A gets its SA. Run with and without `require_reachability`.
#[test]
fn attack_init_flood_from_one_spoofed_source_leaves_room_for_a_real_peer() {
    for require_reachability in [true, false] {
        let mut config_b = config(B);
        config_b.require_reachability = require_reachability;
        let (mut p, ca) = pair_with_b(config_b);
        let mut forger = Forger::new(&ca, SPOOFED, B, &p.clock, 9);
        let mut most_pending = 0;
        for i in 0..1_200 {
            // A starts when an undefended responder would be full.
            if i == 1_100 {
                assert_eq!(p.send(true, b"hello"), SealOutput::HandshakeNeeded);
            }
            let now = p.clock.now();
            let mut init = forger.next_init();
            let _ = p.b.open(now, ip(SPOOFED), &mut init);
            most_pending = most_pending.max(p.b.pending_responders());
            for t in drain_b(&mut p) {
                assert_eq!(t.destination, ip(SPOOFED));
            }
            let until = now + Duration::from_millis(1);
            p.run_until(until);
        }
        let until = p.clock.now() + Duration::from_secs(2);
        p.run_until(until);
        assert_eq!(p.to_b, vec![b"hello".to_vec()], "{require_reachability}");
        assert!(p.a.has_sa(p.b_ip) && p.b.has_sa(p.a_ip));
        assert!(
            most_pending <= p.b.config().max_pending_per_source + 1,
            "{most_pending}"
        );
        assert!(p.b.stats().cookie_replies_sent >= 1_190);
    }
}

/// Spoofed inits from 300 addresses (more than the 256 slots B has here),
/// with `require_reachability` off so that only load triggers cookies: B
/// stops keeping state at `cookie_threshold`, and A, a first contact, gets
/// its SA through a cookie round trip.
#[test]
fn attack_init_flood_from_many_spoofed_sources_puts_the_responder_under_load() {
    let mut config_b = config(B);
    config_b.require_reachability = false;
    config_b.max_pending_handshakes = 256;
    config_b.cookie_threshold = 32;
    let threshold = config_b.cookie_threshold;
    let (mut p, ca) = pair_with_b(config_b);
    let mut forger = Forger::new(&ca, SPOOFED, B, &p.clock, 9);
    let now = p.clock.now();
    for i in 0..300u32 {
        let source = IpAddr::from([10, 1, 100 + (i / 250) as u8, 1 + (i % 250) as u8]);
        let mut init = forger.next_init();
        let _ = p.b.open(now, source, &mut init);
        drain_b(&mut p);
    }
    assert_eq!(p.b.pending_responders(), threshold);
    assert_eq!(p.send(true, b"hello"), SealOutput::HandshakeNeeded);
    p.drive();
    assert_eq!(p.to_b, vec![b"hello".to_vec()]);
    assert!(p.a.has_sa(p.b_ip));
    assert_eq!(p.a.stats().cookies_received, 1);
}

/// An attacker claims an address it does not own (the real owner is an
/// endpoint of its own): B's certificate, inside Noise message 2, is never
/// sent; B answers with cookie replies that go to the real owner, who drops
/// them. The same attacker from the address it owns does get a response
/// after one cookie round trip: reachability, not refusal, is the rule.
#[test]
fn attack_spoofed_source_inits_never_get_our_certificate() {
    let (mut p, ca) = Pair::new();
    let now = p.clock.now();
    let mut forger = Forger::new(&ca, OTHER, B, &p.clock, 9);
    let (cx_cert, cx_key) = ca.issue(ip(OTHER));
    let mut owner = endpoint(
        config(OTHER),
        &cx_cert,
        &cx_key,
        ca.authenticator(),
        &p.clock,
        3,
    );
    let mut sent = Vec::new();
    for _ in 0..20 {
        let mut init = forger.next_init();
        assert_eq!(
            p.b.open(now, ip(OTHER), &mut init),
            Ok(OpenOutput::Handshake)
        );
        sent.extend(drain_b(&mut p));
    }
    assert_eq!(sent.len(), 20);
    for t in sent {
        assert_eq!(t.destination, ip(OTHER));
        assert_eq!(kind(&t.payload), KIND_COOKIE);
        let mut payload = t.payload;
        let index = u32::from_be_bytes(payload[6..10].try_into().unwrap());
        assert_eq!(
            owner.open(now, p.b_ip, &mut payload),
            Err(Rejection::Handshake(HandshakeError::UnknownSession(index)))
        );
    }
    assert_eq!(owner.poll_transmit(), None);
    assert_eq!(p.b.pending_responders(), 0);

    // From its own address, the attacker proves reachability and is answered.
    let mut honest = Forger::new(&ca, OWNED, B, &p.clock, 10);
    let mut again = cookie_for_owned(&mut p, &mut honest);
    p.b.open(now, ip(OWNED), &mut again).unwrap();
    let response = drain_b(&mut p).pop().unwrap();
    assert_eq!(
        (response.destination, kind(&response.payload)),
        (ip(OWNED), KIND_RESPONSE)
    );
}

/// Gets a cookie from B for the attacker's own address (B's cookie reply
/// goes there); returns an init that carries it.
fn cookie_for_owned(p: &mut Pair, forger: &mut Forger) -> Vec<u8> {
    let now = p.clock.now();
    let mut init = forger.next_init();
    p.b.open(now, ip(OWNED), &mut init).unwrap();
    let reply = drain_b(p).pop().unwrap();
    assert_eq!(reply.destination, ip(OWNED));
    let Ok(HandshakeRepr::CookieReply { nonce, cookie, .. }) = HandshakeRepr::parse(&reply.payload)
    else {
        panic!("no cookie reply")
    };
    let mac1_at = init.len() - INIT_MACS_LEN;
    forger.cookie =
        Some(cookie::open_reply(p.b_ip, &init[mac1_at..mac1_at + 16], &nonce, &cookie).unwrap());
    forger.next_init()
}

/// The attacker owns one address and gets a cookie for it, then claims
/// another address with an init whose mac2 uses that cookie (and, as a
/// second try, replays its own accepted init from the other address). B
/// answers both with cookie replies to the other address and keeps no state.
#[test]
fn attack_cookie_for_one_address_is_useless_for_another() {
    let (mut p, ca) = Pair::new();
    let now = p.clock.now();
    let mut owned = Forger::new(&ca, OWNED, B, &p.clock, 9);
    let accepted = cookie_for_owned(&mut p, &mut owned);
    // A fresh init made as if at the other address, with the cookie.
    let mut other = Forger::new(&ca, OTHER, B, &p.clock, 10);
    other.cookie = owned.cookie.clone();
    let forged = other.next_init();
    let mut replayed = accepted.clone();
    for mut init in [forged, replayed.clone()] {
        assert_eq!(
            p.b.open(now, ip(OTHER), &mut init),
            Ok(OpenOutput::Handshake)
        );
        let reply = drain_b(&mut p).pop().unwrap();
        assert_eq!(
            (reply.destination, kind(&reply.payload)),
            (ip(OTHER), KIND_COOKIE)
        );
        assert_eq!(p.b.pending_responders(), 0);
    }
    // The same init from the address the cookie was made for is answered.
    p.b.open(now, ip(OWNED), &mut replayed).unwrap();
    let response = drain_b(&mut p).pop().unwrap();
    assert_eq!(kind(&response.payload), KIND_RESPONSE);
}

/// A cookie works until B replaces its secret (two minutes), then not:
/// the init that carries it gets a new cookie reply and no state.
#[test]
fn attack_stale_cookie_after_secret_rotation_is_refused() {
    let (mut p, ca) = Pair::new();
    let t0 = p.clock.now();
    let mut owned = Forger::new(&ca, OWNED, B, &p.clock, 9);
    let accepted = cookie_for_owned(&mut p, &mut owned);
    // Still valid just before the rotation.
    let mut fresh = accepted.clone();
    p.b.open(t0 + Duration::from_secs(119), ip(OWNED), &mut fresh)
        .unwrap();
    assert_eq!(kind(&drain_b(&mut p).pop().unwrap().payload), KIND_RESPONSE);
    // That exchange times out; the same cookie after the rotation is stale.
    let later = t0 + Duration::from_secs(130);
    p.b.handle_timeout(later);
    assert_eq!(p.b.pending_responders(), 0);
    let mut stale = accepted;
    assert_eq!(
        p.b.open(later, ip(OWNED), &mut stale),
        Ok(OpenOutput::Handshake)
    );
    let reply = drain_b(&mut p).pop().unwrap();
    assert_eq!(kind(&reply.payload), KIND_COOKIE);
    assert_eq!(p.b.pending_responders(), 0);
}

/// Sends `count` fresh inits with a valid cookie from the attacker's own
/// address; returns B's results.
fn proven_flood(p: &mut Pair, forger: &mut Forger, count: usize) -> Vec<Result<(), Rejection>> {
    let now = p.clock.now();
    let mut first = cookie_for_owned(p, forger);
    let mut results = vec![p.b.open(now, ip(OWNED), &mut first).map(|_| ())];
    drain_b(p);
    for _ in 1..count {
        let mut init = forger.next_init();
        results.push(p.b.open(now, ip(OWNED), &mut init).map(|_| ()));
        for t in drain_b(p) {
            assert_ne!(kind(&t.payload), KIND_COOKIE, "the cookie was not used");
        }
    }
    results
}

/// An attacker who really owns its address (it answers cookies) floods B
/// with valid-cookie inits: B keeps at most `max_pending_per_source` of
/// them and drops and counts the rest.
#[test]
fn attack_reachable_flooder_is_held_to_the_per_source_cap() {
    let (mut p, ca) = Pair::new();
    let mut forger = Forger::new(&ca, OWNED, B, &p.clock, 9);
    let results = proven_flood(&mut p, &mut forger, 50);
    let cap = p.b.config().max_pending_per_source;
    assert_eq!(p.b.pending_responders(), cap);
    let limited = Err(Rejection::Handshake(HandshakeError::RateLimited));
    assert_eq!(results.iter().filter(|r| **r == limited).count(), 50 - cap);
    assert_eq!(p.b.stats().handshakes_rate_limited, (50 - cap) as u64);
    // A is unaffected.
    p.establish();
}

/// The same flooder against a responder with a large per-source cap: the
/// per-source rate (inits a second) holds, and the next second lets more in.
#[test]
fn attack_reachable_flooder_is_rate_limited() {
    let mut config_b = config(B);
    config_b.max_pending_per_source = 1_000;
    let rate = config_b.max_inits_per_source_per_second as usize;
    let (mut p, ca) = pair_with_b(config_b);
    let mut forger = Forger::new(&ca, OWNED, B, &p.clock, 9);
    let results = proven_flood(&mut p, &mut forger, 50);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), rate);
    assert_eq!(p.b.pending_responders(), rate);
    assert_eq!(p.b.stats().handshakes_rate_limited, (50 - rate) as u64);
    let next_second = p.clock.now() + Duration::from_secs(1);
    let mut init = forger.next_init();
    assert_eq!(
        p.b.open(next_second, ip(OWNED), &mut init),
        Ok(OpenOutput::Handshake)
    );
    assert_eq!(p.b.pending_responders(), rate + 1);
}

/// B (the higher address) is opening an SA with A when a spoofed init
/// "from A" arrives. Before, B gave up its own exchange for any colliding
/// init (the lower address wins) and waited for a finish that never came:
/// one spoofed packet every ten seconds kept B from ever reaching A. Now
/// only an init that proved reachability cancels B's exchange.
#[test]
fn attack_spoofed_init_does_not_cancel_our_handshake() {
    let (mut p, ca) = Pair::new();
    let mut forger = Forger::new(&ca, A, B, &p.clock, 9);
    assert_eq!(p.send(false, b"from b"), SealOutput::HandshakeNeeded);
    let now = p.clock.now();
    let mut spoofed = forger.next_init();
    assert_eq!(
        p.b.open(now, p.a_ip, &mut spoofed),
        Ok(OpenOutput::Handshake)
    );
    // B's answer (a cookie reply) goes to A, who drops it.
    drain_b(&mut p);
    let until = now + Duration::from_secs(1);
    p.run_until(until);
    assert_eq!(p.to_a, vec![b"from b".to_vec()]);
    assert!(p.b.has_sa(p.a_ip));
}
