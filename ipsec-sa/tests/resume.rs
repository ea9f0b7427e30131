//! SAs carried to a new endpoint (the next process of a self-update):
//! traffic continues both ways without a key exchange, replay windows and
//! sequence numbers carry over, and a truncated, forged or stale blob is
//! refused (the peer then gets a fresh key exchange).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use ipsec_sa::resume::{MAX_STATE_AGE, ResumeError};
use ipsec_sa::{Event, Rejection, SealOutput};

/// A pair with SAs, and A's credentials (to build A's successor).
fn established() -> (Pair, TestCa, Vec<u8>, Vec<u8>) {
    let (mut p, ca, (cert, key)) = Pair::new_with_a_credentials();
    p.establish();
    for i in 0..10u8 {
        assert_eq!(p.send(i % 2 == 0, &[i; 50]), SealOutput::Sealed);
    }
    p.drive();
    p.to_a.clear();
    p.to_b.clear();
    (p, ca, cert, key)
}

/// A's successor: same credentials, another seed, no SAs yet.
fn successor(p: &Pair, ca: &TestCa, cert: &[u8], key: &[u8]) -> Ep {
    endpoint(config(A), cert, key, ca.authenticator(), &p.clock, 9)
}

fn handshakes(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::SaEstablished { .. }))
        .count()
}

#[test]
fn resumed_sas_carry_traffic_both_ways_without_a_key_exchange() {
    let (mut p, ca, cert, key) = established();
    // A packet B sent that A already took: replayed to the successor.
    let mut replay = Vec::new();
    let now = p.clock.now();
    p.b.seal(now, p.a_ip, b"old", &mut replay).unwrap();
    p.send_raw(false, replay.clone());
    p.drive();
    assert_eq!(p.to_a, vec![b"old".to_vec()]);
    p.to_a.clear();

    let blob = p.a.export_state(p.clock.now()).unwrap();
    p.clock.advance(Duration::from_millis(300));
    let mut next = successor(&p, &ca, &cert, &key);
    assert_eq!(next.import_state(p.clock.now(), &blob), Ok(1));
    assert!(next.has_sa(p.b_ip));
    p.a = next;
    let before_a = handshakes(&p.events_a);
    let before_b = handshakes(&p.events_b);
    for i in 0..20u8 {
        assert_eq!(p.send(i % 2 == 0, &[i; 80]), SealOutput::Sealed, "{i}");
    }
    p.drive();
    assert_eq!(p.to_a.len(), 10);
    assert_eq!(p.to_b.len(), 10);
    assert!(p.rejections_a.is_empty(), "{:?}", p.rejections_a);
    assert!(p.rejections_b.is_empty(), "{:?}", p.rejections_b);
    assert_eq!(handshakes(&p.events_a), before_a);
    assert_eq!(handshakes(&p.events_b), before_b);
    // The replay window came along.
    p.send_raw(false, replay);
    p.drive();
    assert!(matches!(p.rejections_a[..], [Rejection::Replayed(_)]));
}

#[test]
fn attack_resumed_sas_never_reuse_an_outbound_sequence_number() {
    let (mut p, ca, cert, key) = established();
    let blob = p.a.export_state(p.clock.now()).unwrap();
    // The old process seals one more packet after the export (in flight
    // during the exec): its sequence number must not come again, else two
    // packets share an AEAD nonce and B drops the second as a replay.
    assert_eq!(p.send(true, b"last of the old"), SealOutput::Sealed);
    let mut next = successor(&p, &ca, &cert, &key);
    next.import_state(p.clock.now(), &blob).unwrap();
    p.a = next;
    assert_eq!(p.send(true, b"first of the new"), SealOutput::Sealed);
    p.drive();
    assert!(p.rejections_b.is_empty(), "{:?}", p.rejections_b);
    assert_eq!(
        p.to_b,
        vec![b"last of the old".to_vec(), b"first of the new".to_vec()]
    );
}

#[test]
fn attack_truncated_forged_or_stale_state_is_refused_and_a_fresh_exchange_follows() {
    let (mut p, ca, cert, key) = established();
    let now = p.clock.now();
    let blob = p.a.export_state(now).unwrap();
    let check = |p: &Pair, bytes: &[u8], at, want: fn(&ResumeError) -> bool| {
        let mut next = successor(p, &ca, &cert, &key);
        let got = next.import_state(at, bytes);
        assert!(got.as_ref().is_err_and(want), "{got:?}");
        assert!(!next.has_sa(p.b_ip), "state changed by a refused blob");
    };
    // Every truncation.
    for len in 0..blob.len() {
        check(&p, &blob[..len], now, |_| true);
    }
    // Any flipped bit.
    for index in [0, 5, 20, blob.len() / 2, blob.len() - 80, blob.len() - 1] {
        let mut forged = blob.clone();
        forged[index] ^= 0x10;
        check(&p, &forged, now, |_| true);
    }
    // An outbound key rewritten: the signature no longer verifies.
    let mut forged = blob.clone();
    let at = blob.len() / 3;
    forged[at] ^= 1;
    check(&p, &forged, now, |e| {
        matches!(e, ResumeError::BadSignature | ResumeError::Invalid(_))
    });
    // Signed by another node (B exports its own state): not ours.
    let others = p.b.export_state(now).unwrap();
    check(&p, &others, now, |e| *e == ResumeError::BadSignature);
    // Stale.
    let later = now + MAX_STATE_AGE + Duration::from_secs(1);
    check(&p, &blob, later, |e| matches!(e, ResumeError::Stale(_)));
    // A peer revoked since: refused.
    let mut revoking = ca.authenticator();
    let serial = {
        let peer_cert = p.a.peer_certificate(p.b_ip).unwrap().to_vec();
        let (_, parsed) = x509_parser::parse_x509_certificate(&peer_cert).unwrap();
        parsed.raw_serial().to_vec()
    };
    revoking.revoke(&serial);
    let mut next = endpoint(config(A), &cert, &key, revoking, &p.clock, 9);
    assert_eq!(
        next.import_state(now, &blob),
        Err(ResumeError::PeerRefused(p.b_ip))
    );
    assert!(!next.has_sa(p.b_ip));

    // Refused: the successor starts a fresh key exchange with B.
    let mut next = successor(&p, &ca, &cert, &key);
    assert!(next.import_state(later, &blob).is_err());
    p.a = next;
    assert_eq!(p.send(true, b"again"), SealOutput::HandshakeNeeded);
    p.drive();
    assert_eq!(p.to_b, vec![b"again".to_vec()]);
}

#[test]
fn a_peer_sealing_with_lost_sas_gets_a_fresh_exchange_at_once() {
    let (mut p, ca, cert, key) = established();
    // A restarts without its state (refused or none): B still seals with
    // its SAs, unknown to A's successor.
    p.a = successor(&p, &ca, &cert, &key);
    let before = handshakes(&p.events_b);
    assert_eq!(p.send(false, b"into the void"), SealOutput::Sealed);
    p.drive();
    assert!(
        matches!(p.rejections_a[..], [Rejection::UnknownSpi(_)]),
        "{:?}",
        p.rejections_a
    );
    // As the embedding does on that rejection: a fresh exchange at once
    // (only one: a second call while it runs does nothing). B's next
    // packet arrives under new SAs, well before B's own rekey.
    let now = p.clock.now();
    assert!(p.a.handle_unknown_spi(now, p.b_ip));
    assert!(!p.a.handle_unknown_spi(now, p.b_ip));
    p.collect();
    p.drive();
    assert!(p.a.has_sa(p.b_ip), "no fresh exchange");
    assert!(!p.a.handle_unknown_spi(p.clock.now(), p.b_ip));
    assert!(handshakes(&p.events_b) > before);
    assert_eq!(p.send(false, b"again"), SealOutput::Sealed);
    p.drive();
    assert_eq!(p.to_a, vec![b"again".to_vec()]);
}

/// Packets under unknown SPIs are unauthenticated: a flood of them in the
/// names of a thousand peers starts at most
/// `MAX_UNKNOWN_SPI_EXCHANGES_PER_SECOND` key exchanges a second, not a
/// thousand (each one a look-up and an init toward that peer).
#[test]
fn attack_unknown_spi_flood_in_many_peers_names_starts_few_exchanges() {
    let (mut p, _ca) = Pair::new();
    let limit = ipsec_sa::endpoint::MAX_UNKNOWN_SPI_EXCHANGES_PER_SECOND;
    let claimed = |i: u32| -> std::net::IpAddr {
        std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 1, 1, 0)) + i).into()
    };
    let now = p.clock.now();
    let started = (0..1000)
        .filter(|&i| p.a.handle_unknown_spi(now, claimed(i)))
        .count();
    assert_eq!(started, limit as usize, "one exchange per forged packet");
    // The next second has a fresh allowance, no more.
    p.clock.advance(Duration::from_secs(1));
    let now = p.clock.now();
    let started = (1000..2000)
        .filter(|&i| p.a.handle_unknown_spi(now, claimed(i)))
        .count();
    assert_eq!(started, limit as usize);
}
