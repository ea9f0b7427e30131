//! End-to-end behaviour of two endpoints over a simulated network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use ipsec_sa::{
    AuthError, Event, HandshakeError, OpenOutput, REPLAY_WINDOW, Rejection, SealOutput, Suite,
    Verdict, WireError,
};

fn has_failure(events: &[Event], want: HandshakeError) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::HandshakeFailed { error, .. } if *error == want))
}

#[test]
fn establishes_and_carries_both_ways() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    assert!(p.a.has_sa(p.b_ip) && p.b.has_sa(p.a_ip));
    for i in 0..50u8 {
        assert_eq!(p.send(i % 2 == 0, &[i; 100]), SealOutput::Sealed);
    }
    p.drive();
    assert_eq!(p.to_b.len(), 25);
    assert_eq!(p.to_a.len(), 25);
    assert!(p.rejections_a.is_empty() && p.rejections_b.is_empty());
    let established = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::SaEstablished { .. }))
            .count()
    };
    assert_eq!(established(&p.events_a), 1);
    assert_eq!(established(&p.events_b), 1);
    // AES-256-GCM is both sides' first preference.
    assert!(p.events_a.iter().any(|e| matches!(
        e,
        Event::SaEstablished {
            suite: Suite::Aes256Gcm,
            rekey: false,
            ..
        }
    )));
}

#[test]
fn ecdsa_certificates_and_chacha() {
    let ca = TestCa::with_algorithm(&rcgen::PKCS_ECDSA_P256_SHA256);
    let clock = Clock::new();
    let hour = Duration::from_secs(3600);
    let (ca_cert, ca_key, _) = ca.issue_with(
        ip(A),
        &rcgen::PKCS_ECDSA_P256_SHA256,
        clock.wall() - hour,
        clock.wall() + hour,
    );
    let (cb_cert, cb_key, _) = ca.issue_with(
        ip(B),
        &rcgen::PKCS_ECDSA_P256_SHA256,
        clock.wall() - hour,
        clock.wall() + hour,
    );
    let mut config_a = config(A);
    config_a.suites = vec![Suite::ChaCha20Poly1305, Suite::Aes256Gcm];
    let mut config_b = config(B);
    config_b.suites = vec![Suite::ChaCha20Poly1305];
    let a = endpoint(config_a, &ca_cert, &ca_key, ca.authenticator(), &clock, 1);
    let b = endpoint(config_b, &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
    let mut p = Pair::from_endpoints(clock, a, b);
    p.establish();
    assert!(p.events_b.iter().any(|e| matches!(
        e,
        Event::SaEstablished {
            suite: Suite::ChaCha20Poly1305,
            ..
        }
    )));
    p.send(false, b"back");
    p.drive();
    assert_eq!(p.to_a, vec![b"back".to_vec()]);
}

/// Seals one packet A → B without sending it.
fn seal_a(p: &mut Pair, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let now = p.clock.now();
    assert_eq!(
        p.a.seal(now, p.b_ip, data, &mut out),
        Ok(SealOutput::Sealed)
    );
    out
}

fn open_b(p: &mut Pair, mut packet: Vec<u8>) -> Result<Vec<u8>, Rejection> {
    let now = p.clock.now();
    p.b.open(now, p.a_ip, &mut packet).map(|o| match o {
        OpenOutput::Plaintext(x) => x.to_vec(),
        other => panic!("{other:?}"),
    })
}

#[test]
fn tampered_ciphertext_is_rejected() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let packet = seal_a(&mut p, &[7; 64]);
    for index in [4, 11, 12, 40, packet.len() - 1] {
        let mut bad = packet.clone();
        bad[index] ^= 0x80;
        let err = open_b(&mut p, bad).unwrap_err();
        // Changing the sequence number may move it outside the window.
        assert!(
            matches!(err, Rejection::Authentication | Rejection::OutsideWindow(_)),
            "{err:?}"
        );
    }
    let mut wrong_spi = packet.clone();
    wrong_spi[0] ^= 0x80;
    assert!(matches!(
        open_b(&mut p, wrong_spi),
        Err(Rejection::UnknownSpi(_))
    ));
    assert_eq!(
        open_b(&mut p, packet[..20].to_vec()),
        Err(Rejection::Wire(WireError::Truncated))
    );
    // Nothing was recorded: the genuine packet still opens.
    assert_eq!(open_b(&mut p, packet).unwrap(), vec![7; 64]);
    assert!(p.b.stats().authentication_failed >= 4);
}

#[test]
fn seal_in_place_matches_seal() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let now = p.clock.now();
    let mut buffer = vec![0u8; ipsec_sa::wire::HEADER_LEN];
    buffer.extend_from_slice(b"in place");
    assert_eq!(
        p.a.seal_in_place(now, p.b_ip, &mut buffer),
        Ok(SealOutput::Sealed)
    );
    assert_eq!(open_b(&mut p, buffer).unwrap(), b"in place".to_vec());
    // Bypass and queueing leave the buffer alone.
    let mut buffer = vec![0u8; ipsec_sa::wire::HEADER_LEN];
    buffer.extend_from_slice(b"clear");
    let before = buffer.clone();
    assert_eq!(
        p.a.seal_in_place(now, ip("192.0.2.1"), &mut buffer),
        Ok(SealOutput::Bypass)
    );
    assert_eq!(
        p.a.seal_in_place(now, ip("10.1.0.77"), &mut buffer),
        Ok(SealOutput::HandshakeNeeded)
    );
    assert_eq!(buffer, before);
    assert_eq!(
        p.a.seal_in_place(now, p.b_ip, &mut vec![0; 3]),
        Err(ipsec_sa::SealError::NoHeadroom)
    );
}

#[test]
fn wrong_source_is_rejected() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let mut packet = seal_a(&mut p, b"x");
    let now = p.clock.now();
    let err = p.b.open(now, ip("10.1.0.9"), &mut packet).unwrap_err();
    assert!(matches!(err, Rejection::WrongPeer { .. }));
}

#[test]
fn replay_and_reorder_inside_and_outside_window() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let window = usize::try_from(REPLAY_WINDOW).unwrap();
    let packets: Vec<Vec<u8>> = (0..window + 10)
        .map(|i| seal_a(&mut p, &i.to_be_bytes()))
        .collect();
    // Deliver the newest first, then older ones: all inside the window pass.
    let newest = packets.len() - 1;
    assert!(open_b(&mut p, packets[newest].clone()).is_ok());
    for i in (newest + 1 - window..newest).rev().step_by(97) {
        assert_eq!(open_b(&mut p, packets[i].clone()).unwrap(), i.to_be_bytes());
    }
    // Replays inside the window.
    assert!(matches!(
        open_b(&mut p, packets[newest].clone()),
        Err(Rejection::Replayed(_))
    ));
    let inside = newest - 1;
    assert!(matches!(
        open_b(&mut p, packets[inside].clone()),
        Err(Rejection::Replayed(_))
    ));
    // Older than the window, never seen: still refused.
    let outside = newest - window;
    assert!(matches!(
        open_b(&mut p, packets[outside].clone()),
        Err(Rejection::OutsideWindow(_))
    ));
    assert!(matches!(
        open_b(&mut p, packets[0].clone()),
        Err(Rejection::OutsideWindow(_))
    ));
    // The reordered packet at the edge of the window is fine.
    assert!(open_b(&mut p, packets[newest + 1 - window].clone()).is_ok());
    assert!(p.b.stats().replayed >= 4);
}

/// Runs a handshake where B presents `cert`/`key` and returns A's events.
fn handshake_with_b_identity(ca: &TestCa, b_cert: &[u8], b_key: &[u8], b_ip: &str) -> Pair {
    let clock = Clock::new();
    let (ca_cert, ca_key) = ca.issue(ip(A));
    let a = endpoint(config(A), &ca_cert, &ca_key, ca.authenticator(), &clock, 1);
    let b = endpoint(config(b_ip), b_cert, b_key, ca.authenticator(), &clock, 2);
    let mut p = Pair::from_endpoints(clock, a, b);
    assert_eq!(p.send(true, b"hello"), SealOutput::HandshakeNeeded);
    p.drive();
    p
}

#[test]
fn certificate_for_another_ip_is_rejected() {
    let ca = TestCa::new();
    // B answers at 10.1.0.2 with a certificate for 10.1.0.3.
    let (cert, key) = ca.issue(ip("10.1.0.3"));
    let p = handshake_with_b_identity(&ca, &cert, &key, B);
    let want = HandshakeError::Certificate(AuthError::IpMismatch {
        claimed: ip(B),
        certified: Some(ip("10.1.0.3")),
    });
    assert_eq!(p.rejections_a, vec![Rejection::Handshake(want)]);
    assert!(has_failure(&p.events_a, want));
    assert!(p.to_b.is_empty() && !p.a.has_sa(ip(B)));

    // The same as initiator: B's finish is refused by A... here A with a
    // certificate for 10.1.0.3 initiates to B.
    let clock = Clock::new();
    let (cb_cert, cb_key) = ca.issue(ip(B));
    let a = endpoint(config(A), &cert, &key, ca.authenticator(), &clock, 1);
    let b = endpoint(config(B), &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
    let mut p = Pair::from_endpoints(clock, a, b);
    p.send(true, b"hello");
    p.drive();
    let want = HandshakeError::Certificate(AuthError::IpMismatch {
        claimed: ip(A),
        certified: Some(ip("10.1.0.3")),
    });
    assert_eq!(p.rejections_b, vec![Rejection::Handshake(want)]);
    // A never used the SA that B did not confirm.
    assert!(!p.b.has_sa(ip(A)) && !p.a.has_sa(ip(B)) && p.to_b.is_empty());
}

#[test]
fn expired_certificate_is_rejected() {
    let ca = TestCa::new();
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let (cert, key, _) = ca.issue_with(ip(B), &rcgen::PKCS_ED25519, now - 10 * day, now - day);
    let p = handshake_with_b_identity(&ca, &cert, &key, B);
    let want = HandshakeError::Certificate(AuthError::Expired);
    assert_eq!(p.rejections_a, vec![Rejection::Handshake(want)]);
}

#[test]
fn certificate_expiring_tears_down_sas() {
    let ca = TestCa::new();
    let clock = Clock::new();
    let (ca_cert, ca_key) = ca.issue(ip(A));
    let wall = clock.wall();
    let (cb_cert, cb_key, _) = ca.issue_with(
        ip(B),
        &rcgen::PKCS_ED25519,
        wall - Duration::from_secs(60),
        wall + Duration::from_secs(30),
    );
    let a = endpoint(config(A), &ca_cert, &ca_key, ca.authenticator(), &clock, 1);
    let b = endpoint(config(B), &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
    let mut p = Pair::from_endpoints(clock, a, b);
    p.establish();
    let spi = p.a.inbound_spis(p.b_ip)[0];
    let until = p.clock.now() + Duration::from_secs(40);
    p.run_until(until);
    assert!(p.events_a.iter().any(|e| matches!(
        e,
        Event::PeerRemoved {
            reason: AuthError::Expired,
            ..
        }
    )));
    assert!(!p.a.has_sa(p.b_ip));
    assert!(p.a.inbound_spis(p.b_ip).is_empty());
    // B's packets on the old SA are now refused, and a new handshake fails.
    p.send(false, b"late");
    p.drive();
    assert!(p.rejections_a.contains(&Rejection::UnknownSpi(spi)));
    assert_eq!(p.send(true, b"again"), SealOutput::HandshakeNeeded);
    p.drive();
    assert!(has_failure(
        &p.events_a,
        HandshakeError::Certificate(AuthError::Expired)
    ));
}

#[test]
fn revocation_tears_down_sas() {
    let ca = TestCa::new();
    let clock = Clock::new();
    let (ca_cert, ca_key) = ca.issue(ip(A));
    let wall = clock.wall();
    let hour = Duration::from_secs(3600);
    let (cb_cert, cb_key, serial_b) =
        ca.issue_with(ip(B), &rcgen::PKCS_ED25519, wall - hour, wall + hour);
    let a = endpoint(config(A), &ca_cert, &ca_key, ca.authenticator(), &clock, 1);
    let b = endpoint(config(B), &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
    let mut p = Pair::from_endpoints(clock, a, b);
    p.establish();
    let now = p.clock.now();
    p.a.update_authenticator(now, |auth| auth.revoke(&serial_b));
    p.collect();
    assert!(p.events_a.contains(&Event::PeerRemoved {
        peer: p.b_ip,
        reason: AuthError::Revoked
    }));
    assert!(!p.a.has_sa(p.b_ip));
    p.send(false, b"after revocation");
    p.drive();
    assert!(p.to_a.is_empty());
    assert!(matches!(p.rejections_a[..], [Rejection::UnknownSpi(_)]));
    // A new key exchange is refused too.
    p.send(true, b"retry");
    p.drive();
    assert!(has_failure(
        &p.events_a,
        HandshakeError::Certificate(AuthError::Revoked)
    ));
}

#[test]
fn certificate_from_another_ca_is_rejected() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let (cert, key) = other.issue(ip(B));
    let p = handshake_with_b_identity(&ca, &cert, &key, B);
    let want = HandshakeError::Certificate(AuthError::UntrustedIssuer);
    assert_eq!(p.rejections_a, vec![Rejection::Handshake(want)]);
}

#[test]
fn key_not_matching_certificate_is_rejected() {
    let ca = TestCa::new();
    let (cert, _) = ca.issue(ip(B));
    let (_, other_key) = ca.issue(ip(B));
    let p = handshake_with_b_identity(&ca, &cert, &other_key, B);
    assert_eq!(
        p.rejections_a,
        vec![Rejection::Handshake(HandshakeError::BadSignature)]
    );
}

#[test]
fn suite_downgrade_is_detected() {
    // B answers at once (no cookie round trip), so that the Noise
    // transcript is what catches the downgrade.
    let ca = TestCa::new();
    let clock = Clock::new();
    let (ca_cert, ca_key) = ca.issue(ip(A));
    let (cb_cert, cb_key) = ca.issue(ip(B));
    let mut config_b = config(B);
    config_b.require_reachability = false;
    let a = endpoint(config(A), &ca_cert, &ca_key, ca.authenticator(), &clock, 1);
    let b = endpoint(config_b, &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
    let mut p = Pair::from_endpoints(clock, a, b);
    let b_ip = ip(B);
    // An attacker strips AES-256-GCM from A's offer (byte 10 is the set)
    // and recomputes mac1, whose key is public.
    p.filter = Box::new(move |a_to_b, bytes| {
        if a_to_b && bytes.len() > 10 && bytes[..6] == [0, 0, 0, 0, 1, ipsec_sa::wire::VERSION] {
            bytes[10] = Suite::ChaCha20Poly1305.bit();
            let at = bytes.len() - 32;
            let mac1 = ipsec_sa::cookie::mac1(b_ip, &bytes[..at]);
            bytes[at..at + 16].copy_from_slice(&mac1);
        }
        true
    });
    p.send(true, b"hello");
    p.drive();
    assert_eq!(
        p.rejections_a,
        vec![Rejection::Handshake(HandshakeError::Transcript)]
    );
    assert!(!p.a.has_sa(p.b_ip) && !p.b.has_sa(p.a_ip));
    assert!(p.to_b.is_empty());
}

#[test]
fn version_downgrade_is_refused() {
    let (mut p, _ca) = Pair::new();
    p.filter = Box::new(|a_to_b, bytes| {
        if a_to_b && bytes.len() > 6 && bytes[..4] == [0, 0, 0, 0] {
            bytes[5] = 0;
        }
        true
    });
    p.send(true, b"hello");
    p.drive();
    assert_eq!(
        p.rejections_b,
        vec![Rejection::Handshake(HandshakeError::Wire(
            WireError::UnsupportedVersion(0)
        ))]
    );
}

#[test]
fn no_common_suite() {
    let ca = TestCa::new();
    let clock = Clock::new();
    let (ca_cert, ca_key) = ca.issue(ip(A));
    let (cb_cert, cb_key) = ca.issue(ip(B));
    let mut config_a = config(A);
    config_a.suites = vec![Suite::ChaCha20Poly1305];
    let mut config_b = config(B);
    config_b.suites = vec![Suite::Aes256Gcm];
    let a = endpoint(config_a, &ca_cert, &ca_key, ca.authenticator(), &clock, 1);
    let b = endpoint(config_b, &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
    let mut p = Pair::from_endpoints(clock, a, b);
    p.send(true, b"hello");
    p.drive();
    assert_eq!(
        p.rejections_b,
        vec![Rejection::Handshake(HandshakeError::NoCommonSuite)]
    );
}

#[test]
fn truncated_handshake_messages_are_rejected() {
    for (kind, cut) in [(1u8, 20usize), (2, 60), (2, 14), (3, 40)] {
        let (mut p, _ca) = Pair::new();
        p.filter = Box::new(move |_, bytes| {
            if bytes.len() > 5 && bytes[..4] == [0, 0, 0, 0] && bytes[4] == kind {
                bytes.truncate(cut);
            }
            true
        });
        p.send(true, b"hello");
        // Run past the handshake timeout: retransmissions are truncated too.
        let until = p.clock.now() + Duration::from_secs(20);
        p.run_until(until);
        let rejections = if kind == 2 {
            &p.rejections_a
        } else {
            &p.rejections_b
        };
        assert!(!rejections.is_empty(), "kind {kind} cut {cut}");
        for r in rejections {
            assert!(
                matches!(
                    r,
                    Rejection::Handshake(
                        HandshakeError::Transcript | HandshakeError::Wire(WireError::Truncated)
                    ) | Rejection::Handshake(HandshakeError::UnknownSession(_))
                ),
                "kind {kind} cut {cut}: {r:?}"
            );
        }
        assert!(p.to_b.is_empty(), "kind {kind}");
        assert!(
            has_failure(&p.events_a, HandshakeError::Timeout)
                || has_failure(&p.events_a, HandshakeError::Transcript),
            "kind {kind}: {:?}",
            p.events_a
        );
    }
}

#[test]
fn lost_handshake_messages_are_retransmitted() {
    for kind in [1u8, 2, 3] {
        let (mut p, _ca) = Pair::new();
        let mut dropped = false;
        p.filter = Box::new(move |_, bytes| {
            if !dropped && bytes.len() > 5 && bytes[..4] == [0, 0, 0, 0] && bytes[4] == kind {
                dropped = true;
                return false;
            }
            true
        });
        p.send(true, b"hello");
        let until = p.clock.now() + Duration::from_secs(5);
        p.run_until(until);
        p.send(true, b"second");
        p.send(false, b"reply");
        p.drive();
        assert_eq!(
            p.to_b,
            vec![b"hello".to_vec(), b"second".to_vec()],
            "kind {kind}"
        );
        assert_eq!(p.to_a, vec![b"reply".to_vec()], "kind {kind}");
        assert!(
            p.rejections_a.is_empty() && p.rejections_b.is_empty(),
            "kind {kind}"
        );
    }
}

#[test]
fn policy_bypass_and_unprotected_drop() {
    let (mut p, _ca) = Pair::new();
    let now = p.clock.now();
    let mut out = Vec::new();
    assert_eq!(
        p.a.seal(now, ip("10.1.0.254"), b"dns", &mut out),
        Ok(SealOutput::Bypass)
    );
    assert_eq!(
        p.a.seal(now, ip("192.0.2.1"), b"out", &mut out),
        Ok(SealOutput::Bypass)
    );
    assert!(p.a.poll_transmit().is_none());
    assert_eq!(
        p.a.handle_unprotected(now, ip("10.1.0.254")),
        Verdict::Accept
    );
    assert_eq!(
        p.a.handle_unprotected(now, ip("192.0.2.1")),
        Verdict::Accept
    );
    for _ in 0..3 {
        assert_eq!(p.a.handle_unprotected(now, ip(B)), Verdict::Drop);
        assert_eq!(p.a.handle_unprotected(now, ip("10.1.0.3")), Verdict::Drop);
    }
    p.collect();
    assert_eq!(
        p.events_a,
        vec![
            Event::UnprotectedDropped { peer: ip(B) },
            Event::UnprotectedDropped {
                peer: ip("10.1.0.3")
            }
        ]
    );
    assert_eq!(p.a.stats().unprotected_dropped, 6);
    // Handshakes from outside the private prefix are refused.
    let mut init = Vec::new();
    ipsec_sa::wire::HandshakeRepr::Init {
        initiator_index: 0x1234,
        offered: ipsec_sa::SuiteSet::from_suites(&[Suite::Aes256Gcm]),
        noise: &[0; 32],
        mac1: [0; 16],
        mac2: [0; 16],
    }
    .emit(&mut init);
    assert_eq!(
        p.a.open(now, ip("192.0.2.1"), &mut init),
        Err(Rejection::Handshake(HandshakeError::Policy))
    );
}

#[test]
fn simultaneous_initiation_converges() {
    let (mut p, _ca) = Pair::new();
    assert_eq!(p.send(true, b"from a"), SealOutput::HandshakeNeeded);
    assert_eq!(p.send(false, b"from b"), SealOutput::HandshakeNeeded);
    p.drive();
    let until = p.clock.now() + Duration::from_secs(3);
    p.run_until(until);
    assert_eq!(p.to_b, vec![b"from a".to_vec()]);
    assert_eq!(p.to_a, vec![b"from b".to_vec()]);
    assert!(
        p.rejections_a.is_empty() && p.rejections_b.is_empty(),
        "{:?} {:?}",
        p.rejections_a,
        p.rejections_b
    );
}

/// Continuous traffic both ways across many rekeys (by volume and by time),
/// with packets in flight at every switch: nothing is lost or duplicated.
#[test]
fn rekey_under_continuous_traffic_loses_nothing() {
    rekey_under_traffic(Duration::ZERO);
}

/// The same with up to 60 ms of random extra delay per datagram: packets
/// and handshake messages overtake each other across every SA switch.
#[test]
fn rekey_under_reordering_traffic_loses_nothing() {
    rekey_under_traffic(Duration::from_millis(60));
}

fn rekey_under_traffic(jitter: Duration) {
    let ca = TestCa::new();
    let clock = Clock::new();
    let (ca_cert, ca_key) = ca.issue(ip(A));
    let (cb_cert, cb_key) = ca.issue(ip(B));
    let mut config_a = config(A);
    config_a.rekey_after_packets = 500;
    config_a.reject_after_packets = 5_000;
    config_a.rekey_after = Duration::from_secs(2);
    config_a.reject_after = Duration::from_secs(6);
    config_a.drain_timeout = Duration::from_secs(1);
    let mut config_b = config_a.clone();
    config_b.local_ip = ip(B);
    config_b.rekey_after_packets = 700;
    let a = endpoint(config_a, &ca_cert, &ca_key, ca.authenticator(), &clock, 1);
    let b = endpoint(config_b, &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
    let mut p = Pair::from_endpoints(clock, a, b);
    p.latency = Duration::from_millis(20);
    p.jitter = jitter;
    p.establish();
    let mut sent_a = 0u32;
    let mut sent_b = 0u32;
    // 1 ms between packets, 20 ms latency: ~20 packets in flight each way.
    for i in 0..12_000u32 {
        let a_to_b = i % 3 != 0;
        let n = if a_to_b { &mut sent_a } else { &mut sent_b };
        *n += 1;
        let payload = n.to_be_bytes();
        let result = p.send(a_to_b, &payload);
        assert_eq!(
            result,
            SealOutput::Sealed,
            "packet {i} must not wait for a handshake"
        );
        let until = p.clock.now() + Duration::from_millis(1);
        p.run_until(until);
    }
    p.drive();
    let expect = |n: u32| {
        (1..=n)
            .map(|i| i.to_be_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    let sorted = |v: &[Vec<u8>]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    // Every packet exactly once (in order when there is no jitter).
    assert_eq!(sorted(&p.to_b), expect(sent_a));
    assert_eq!(sorted(&p.to_a), expect(sent_b));
    if jitter.is_zero() {
        assert_eq!(p.to_b, expect(sent_a));
        assert_eq!(p.to_a, expect(sent_b));
    }
    assert!(
        p.rejections_a.is_empty(),
        "{:?}",
        &p.rejections_a[..p.rejections_a.len().min(5)]
    );
    assert!(
        p.rejections_b.is_empty(),
        "{:?}",
        &p.rejections_b[..p.rejections_b.len().min(5)]
    );
    let rekeys = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::SaEstablished { rekey: true, .. }))
            .count()
    };
    assert!(rekeys(&p.events_a) >= 10, "{}", rekeys(&p.events_a));
    // Old inbound SAs drain away: only a few remain at any time.
    assert!(p.a.inbound_spis(p.b_ip).len() <= 3);
    assert!(
        p.events_a
            .iter()
            .any(|e| matches!(e, Event::SaExpired { .. }))
    );
    // Time-based rekey: traffic stops for a while, then one packet.
    let before = rekeys(&p.events_a) + rekeys(&p.events_b);
    p.send(true, b"tick");
    let until = p.clock.now() + Duration::from_millis(2_500);
    p.run_until(until);
    p.send(true, b"tock");
    p.drive();
    assert!(rekeys(&p.events_a) + rekeys(&p.events_b) > before);
    let tail = sorted(&p.to_b[p.to_b.len() - 2..]);
    assert_eq!(tail, [b"tick".to_vec(), b"tock".to_vec()]);
}

#[test]
fn idle_sas_expire() {
    let (mut p, _ca) = Pair::new();
    p.establish();
    let until = p.clock.now() + Duration::from_secs(400);
    p.run_until(until);
    assert!(!p.a.has_sa(p.b_ip) && !p.b.has_sa(p.a_ip));
    assert!(p.a.inbound_spis(p.b_ip).is_empty());
    assert_eq!((p.a.peer_count(), p.b.peer_count()), (0, 0));
    assert_eq!(p.a.poll_timeout(), None);
    // A new packet negotiates afresh.
    assert_eq!(p.send(true, b"again"), SealOutput::HandshakeNeeded);
    p.drive();
    assert_eq!(p.to_b, vec![b"again".to_vec()]);
}

#[test]
fn init_flood_is_bounded() {
    let ca = TestCa::new();
    let clock = Clock::new();
    let (cb_cert, cb_key) = ca.issue(ip(B));
    let mut config_b = config(B);
    config_b.max_pending_handshakes = 4;
    // The global cap alone: no cookies, no per-source bounds (the
    // attack_* tests cover those).
    config_b.require_reachability = false;
    config_b.cookie_threshold = usize::MAX;
    config_b.max_pending_per_source = usize::MAX;
    config_b.max_inits_per_source_per_second = u32::MAX;
    let mut b = endpoint(config_b, &cb_cert, &cb_key, ca.authenticator(), &clock, 2);
    let now = clock.now();
    let mut results = Vec::new();
    for i in 0..6u32 {
        // Each init needs a fresh initiator: take A's first message.
        let (ca_cert, ca_key) = ca.issue(ip(A));
        let mut a = endpoint(
            config(A),
            &ca_cert,
            &ca_key,
            ca.authenticator(),
            &clock,
            10 + i as u8,
        );
        let mut out = Vec::new();
        a.seal(now, ip(B), b"x", &mut out).unwrap();
        let mut init = a.poll_transmit().unwrap().payload;
        results.push(b.open(now, ip(A), &mut init).map(|_| ()));
    }
    assert_eq!(results[..4], [Ok(()), Ok(()), Ok(()), Ok(())]);
    assert_eq!(
        results[4..],
        [Err(Rejection::Handshake(HandshakeError::Busy)); 2]
    );
    // They time out and make room again.
    b.handle_timeout(now + Duration::from_secs(11));
    assert_eq!(b.stats().handshakes_failed, 6);
}
