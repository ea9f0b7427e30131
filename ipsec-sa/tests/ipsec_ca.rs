//! The endpoint with ipsec-ca's CA, node keys and verifier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{Clock, Pair, config, endpoint};
use ipsec_ca::{
    Ca, CaIdentity, KeyType, MemStore, NodeKey, NodeRequest, Policy, RevocationReason, Verifier,
};
use ipsec_sa::{AuthError, Event, HandshakeError, Rejection, SealOutput};
use std::time::{Duration, SystemTime};

struct Node {
    cert: Vec<u8>,
    key: Vec<u8>,
    serial: Vec<u8>,
}

fn new_ca(now: SystemTime, seed: u8) -> Ca<MemStore> {
    let identity = CaIdentity::create_root(
        now,
        KeyType::Ed25519,
        "wow test CA",
        Duration::from_secs(365 * 86_400),
    )
    .unwrap();
    Ca::open_with_insecure_seed(identity, Policy::default(), MemStore::default(), [seed; 32])
        .unwrap()
}

fn enrol(ca: &mut Ca<MemStore>, ip: Ipv4Addr, key_type: KeyType, now: SystemTime) -> Node {
    let key = NodeKey::generate(key_type).unwrap();
    let csr = key.certificate_request(&NodeRequest::new(ip)).unwrap();
    let issued = ca.sign(now, &csr, ip, None).unwrap();
    Node {
        cert: issued.certificate,
        key: key.pkcs8_der().to_vec(),
        serial: issued.serial,
    }
}

const A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

fn pair(ca: &Ca<MemStore>, a: &Node, b: &Node, clock: Clock) -> Pair<Verifier> {
    let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    let ea = endpoint(
        config("10.1.0.1"),
        &a.cert,
        &a.key,
        verifier.clone(),
        &clock,
        1,
    );
    let eb = endpoint(config("10.1.0.2"), &b.cert, &b.key, verifier, &clock, 2);
    Pair::from_endpoints(clock, ea, eb)
}

#[test]
fn ed25519_and_p256_nodes_talk() {
    let clock = Clock::new();
    let now = clock.wall();
    let mut ca = new_ca(now, 1);
    let a = enrol(&mut ca, A, KeyType::Ed25519, now);
    let b = enrol(&mut ca, B, KeyType::EcdsaP256, now);
    let mut p = pair(&ca, &a, &b, clock);
    p.establish();
    p.send(false, b"reply");
    p.drive();
    assert_eq!(p.to_a, vec![b"reply".to_vec()]);
}

#[test]
fn crl_update_tears_down_revoked_peer() {
    let clock = Clock::new();
    let now = clock.wall();
    let mut ca = new_ca(now, 2);
    let a = enrol(&mut ca, A, KeyType::Ed25519, now);
    let b = enrol(&mut ca, B, KeyType::Ed25519, now);
    let mut p = pair(&ca, &a, &b, clock);
    p.establish();
    // An unrelated CRL update changes nothing.
    let crl = ca.issue_crl(now).unwrap();
    let t = p.clock.now();
    p.a.update_authenticator(t, |v| v.handle_crl_envelope(now, &crl.envelope()))
        .unwrap();
    assert!(p.a.has_sa(IpAddr::V4(B)));
    // B is revoked; the newer CRL reaches A.
    ca.revoke(now, &b.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let crl = ca.issue_crl(now).unwrap();
    p.a.update_authenticator(t, |v| v.handle_crl_envelope(now, &crl.envelope()))
        .unwrap();
    p.collect();
    assert!(p.events_a.contains(&Event::PeerRemoved {
        peer: IpAddr::V4(B),
        reason: AuthError::Revoked
    }));
    assert!(!p.a.has_sa(IpAddr::V4(B)));
    // A stale CRL is refused by the verifier and changes nothing.
    assert!(
        p.a.update_authenticator(t, |v| v.handle_crl_envelope(now, &crl.envelope()))
            .is_err()
    );
    p.send(false, b"still there?");
    p.drive();
    assert!(p.to_a.is_empty());
    assert!(matches!(p.rejections_a[..], [Rejection::UnknownSpi(_)]));
    assert_eq!(p.send(true, b"retry"), SealOutput::HandshakeNeeded);
    p.drive();
    assert!(p.events_a.iter().any(|e| matches!(
        e,
        Event::HandshakeFailed {
            error: HandshakeError::Certificate(AuthError::Revoked),
            ..
        }
    )));
}

#[test]
fn other_ca_and_other_ip_are_refused() {
    let clock = Clock::new();
    let now = clock.wall();
    let mut ca = new_ca(now, 3);
    let mut other = new_ca(now, 4);
    let a = enrol(&mut ca, A, KeyType::Ed25519, now);
    let b_other_ca = enrol(&mut other, B, KeyType::Ed25519, now);
    let mut p = pair(&ca, &a, &b_other_ca, clock.clone());
    p.send(true, b"hello");
    p.drive();
    assert_eq!(
        p.rejections_a,
        vec![Rejection::Handshake(HandshakeError::Certificate(
            AuthError::UntrustedIssuer
        ))]
    );

    let b_wrong_ip = enrol(&mut ca, Ipv4Addr::new(10, 1, 0, 3), KeyType::Ed25519, now);
    let mut p = pair(&ca, &a, &b_wrong_ip, clock);
    p.send(true, b"hello");
    p.drive();
    assert_eq!(
        p.rejections_a,
        vec![Rejection::Handshake(HandshakeError::Certificate(
            AuthError::IpMismatch {
                claimed: IpAddr::V4(B),
                certified: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 3))),
            }
        ))]
    );
}
