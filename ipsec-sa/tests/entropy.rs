//! The production constructor draws every SPI and key from the operating
//! system: two endpoints built from identical inputs, at the same instant,
//! in the same process (same pid), share nothing an attacker could use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ipsec_sa::{Endpoint, LocalIdentity, SealOutput};

/// The first handshake message of an endpoint built through the production
/// path from fixed inputs.
fn first_init(ca: &TestCa, clock: &Clock) -> Vec<u8> {
    let (cert, key) = ca.issue(ip(A));
    let identity = LocalIdentity::from_pkcs8(&cert, &key).unwrap();
    let mut ep = Endpoint::new(
        clock.now(),
        clock.wall(),
        config(A),
        identity,
        ca.authenticator(),
    );
    let mut out = Vec::new();
    assert_eq!(
        ep.seal(clock.now(), ip(B), b"x", &mut out),
        Ok(SealOutput::HandshakeNeeded)
    );
    ep.poll_transmit().unwrap().payload
}

#[test]
fn attack_predictable_keys_production_endpoints_share_no_key_material() {
    let ca = TestCa::new();
    let clock = Clock::new();
    let a = first_init(&ca, &clock);
    let b = first_init(&ca, &clock);
    assert_eq!(a.len(), b.len());
    // The Init carries the sender's index and its Noise ephemeral public
    // key: an attacker who could predict either could predict both. No
    // 4-byte window of one may recur at the same offset in the other
    // beyond the fixed header (type, version, suites).
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(
        differing >= 32,
        "two production endpoints sent Inits differing in only {differing} bytes"
    );
    // And the seeded constructor, by contrast, repeats itself: the test
    // tells the two paths apart.
    let seeded = |seed| {
        let (cert, key) = ca.issue(ip(A));
        let mut ep = endpoint(config(A), &cert, &key, ca.authenticator(), &clock, seed);
        let mut out = Vec::new();
        let _ = ep.seal(clock.now(), ip(B), b"x", &mut out);
        ep.poll_transmit().unwrap().payload
    };
    assert_eq!(seeded(9), seeded(9));
}
