//! An Init proves nothing about its sender (Noise XX's first message
//! carries no identity): one forged in a peer's name must not cancel our
//! own handshake to that peer (issue #13: "one packet every 10 s keeps A
//! from ever reaching B").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use ipsec_sa::SealOutput;

/// An Init "from `from`" to `to`, made with a key of the attacker's own CA.
fn forged_init(from: &str, to: &str) -> Vec<u8> {
    let evil = TestCa::new();
    let (cert, key) = evil.issue(ip(from));
    let clock = Clock::new();
    let mut forger = endpoint(config(from), &cert, &key, evil.authenticator(), &clock, 66);
    let mut out = Vec::new();
    assert_eq!(
        forger.seal(clock.now(), ip(to), b"x", &mut out),
        Ok(SealOutput::HandshakeNeeded)
    );
    forger.poll_transmit().unwrap().payload
}

#[test]
fn attack_forged_init_does_not_cancel_the_higher_sides_handshake() {
    let (mut p, _ca) = Pair::new();
    // B (10.1.0.2, the higher address, the side that yields in a genuine
    // collision) starts a handshake to A ...
    assert_eq!(p.send(false, b"from b"), SealOutput::HandshakeNeeded);
    // ... and before A's answer arrives, forged Inits "from A" reach B,
    // again and again.
    let forged = forged_init(A, B);
    let until = p.clock.now() + Duration::from_secs(2);
    while p.clock.now() < until {
        p.deliver(true, forged.clone());
        let step = p.clock.now() + Duration::from_millis(50);
        p.run_until(step);
    }
    assert_eq!(
        p.to_a,
        vec![b"from b".to_vec()],
        "B never reached A while forged Inits arrived"
    );
    assert!(p.b.has_sa(ip(A)) && p.a.has_sa(ip(B)));
}
