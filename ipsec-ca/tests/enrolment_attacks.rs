//! Attacks on enrolment: forged CA replies, stolen, replayed, expired or
//! misdirected join tokens, queue floods, spoofed sources, replayed renewals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Instant;

use ipsec_ca::wire::enrol::REPLY_LABEL;
use ipsec_ca::wire::{EnrolmentMessage, RejectReason};
use ipsec_ca::{
    Ca, CaIdentity, Enrolment, EnrolmentConfig, EnrolmentError, EnrolmentEvent, JoinToken, KeyType,
    MemStore, NodeKey, NodeRequest, Policy, Verifier,
};
use std::time::{Duration, SystemTime};

const IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 10);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 11);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn new_ca() -> Ca<MemStore> {
    let identity = CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "wow CA",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap();
    let policy = Policy {
        network: Some((Ipv4Addr::new(10, 128, 0, 0), 16)),
        max_pending: 8,
        ..Policy::default()
    };
    Ca::open_with_insecure_seed(identity, policy, MemStore::default(), [5; 32]).unwrap()
}

fn csr(key: &NodeKey, ip: Ipv4Addr) -> Vec<u8> {
    key.certificate_request(&NodeRequest::new(ip)).unwrap()
}

fn token_request(token: &JoinToken, request_id: u64, csr: &[u8]) -> Vec<u8> {
    EnrolmentMessage::TokenRequest {
        request_id,
        token_id: token.id,
        mac: &token.mac(request_id, csr),
        csr,
    }
    .to_bytes()
}

/// Sends `request` from `source` and returns the verified reply.
fn ask(ca: &mut Ca<MemStore>, source: Ipv4Addr, request: &[u8], now: SystemTime) -> Vec<u8> {
    ca.handle_enrolment(now, source, request).unwrap();
    let t = ca.poll_transmit().unwrap();
    assert!(ca.poll_transmit().is_none());
    Verifier::new(ca.identity().cert_der())
        .unwrap()
        .verify_statement(REPLY_LABEL, &t.payload)
        .unwrap()
        .to_vec()
}

fn is_issued(reply: &[u8]) -> bool {
    matches!(
        EnrolmentMessage::parse(reply).unwrap(),
        EnrolmentMessage::Issued { .. }
    )
}

fn is_pending(reply: &[u8]) -> bool {
    matches!(
        EnrolmentMessage::parse(reply).unwrap(),
        EnrolmentMessage::Pending { .. }
    )
}

#[test]
fn a_valid_token_is_signed_at_once_and_consumed() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let reply = ask(&mut ca, IP, &token_request(&token, 7, &csr(&key, IP)), t0());
    assert!(is_issued(&reply));
    assert!(ca.tokens()[0].used_at.is_some());
    // The same request again (a lost reply) gets the same certificate.
    let again = ask(&mut ca, IP, &token_request(&token, 7, &csr(&key, IP)), t0());
    assert_eq!(again, reply);
    assert_eq!(ca.issued().len(), 1);
}

#[test]
fn attack_spoofed_source_enrolment_for_another_address_gets_nothing() {
    // The source address in the overlay header is the attacker's to write:
    // without a token the request only waits for an administrator.
    let mut ca = new_ca();
    let attacker = NodeKey::generate(KeyType::Ed25519).unwrap();
    let reply = ask(
        &mut ca,
        IP,
        &EnrolmentMessage::Request {
            request_id: 1,
            csr: &csr(&attacker, IP),
        }
        .to_bytes(),
        t0(),
    );
    assert!(is_pending(&reply));
    assert!(ca.issued().is_empty());
}

#[test]
fn attack_token_reuse_is_refused() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    let first = NodeKey::generate(KeyType::Ed25519).unwrap();
    assert!(is_issued(&ask(
        &mut ca,
        IP,
        &token_request(&token, 1, &csr(&first, IP)),
        t0()
    )));
    let second = NodeKey::generate(KeyType::Ed25519).unwrap();
    let reply = ask(
        &mut ca,
        OTHER_IP,
        &token_request(&token, 2, &csr(&second, OTHER_IP)),
        t0(),
    );
    assert!(is_pending(&reply), "a used token authorises nothing");
    assert_eq!(ca.issued().len(), 1);
}

#[test]
fn attack_expired_token_is_refused() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let late = t0() + Duration::from_secs(3600) + Duration::from_secs(1);
    let reply = ask(&mut ca, IP, &token_request(&token, 1, &csr(&key, IP)), late);
    assert!(is_pending(&reply));
    assert!(ca.issued().is_empty());
}

#[test]
fn attack_token_for_another_ip_is_refused() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), Some(OTHER_IP), Duration::from_secs(3600))
        .unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let reply = ask(&mut ca, IP, &token_request(&token, 1, &csr(&key, IP)), t0());
    assert!(is_pending(&reply));
    assert!(ca.issued().is_empty());
    // For the address it names, it works.
    let reply = ask(
        &mut ca,
        OTHER_IP,
        &token_request(&token, 2, &csr(&key, OTHER_IP)),
        t0(),
    );
    assert!(is_issued(&reply));
}

#[test]
fn attack_observed_token_mac_does_not_authorise_another_csr() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    let victim = NodeKey::generate(KeyType::Ed25519).unwrap();
    let observed = token_request(&token, 1, &csr(&victim, IP));
    let EnrolmentMessage::TokenRequest { token_id, mac, .. } =
        EnrolmentMessage::parse(&observed).unwrap()
    else {
        panic!("not a token request");
    };
    let attacker = NodeKey::generate(KeyType::Ed25519).unwrap();
    let forged = EnrolmentMessage::TokenRequest {
        request_id: 1,
        token_id,
        mac,
        csr: &csr(&attacker, OTHER_IP),
    }
    .to_bytes();
    assert!(is_pending(&ask(&mut ca, OTHER_IP, &forged, t0())));
    assert!(ca.issued().is_empty());
    assert!(ca.tokens()[0].used_at.is_none());
}

#[test]
fn attack_pending_queue_flood_does_not_block_a_token_request() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    // Spoofed sources fill the queue.
    for i in 0..20u8 {
        let ip = Ipv4Addr::new(10, 128, 1, i + 1);
        let key = NodeKey::generate(KeyType::Ed25519).unwrap();
        ca.handle_enrolment(
            t0(),
            ip,
            &EnrolmentMessage::Request {
                request_id: u64::from(i),
                csr: &csr(&key, ip),
            }
            .to_bytes(),
        )
        .unwrap();
        while ca.poll_transmit().is_some() {}
    }
    assert_eq!(ca.pending().len(), 8);
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let reply = ask(
        &mut ca,
        IP,
        &token_request(&token, 99, &csr(&key, IP)),
        t0(),
    );
    assert!(is_issued(&reply));
}

#[test]
fn addresses_outside_the_network_are_refused() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    for ip in [
        Ipv4Addr::new(192, 168, 0, 5),
        Ipv4Addr::new(10, 128, 0, 0),
        Ipv4Addr::new(10, 128, 255, 255),
    ] {
        let key = NodeKey::generate(KeyType::Ed25519).unwrap();
        let reply = ask(&mut ca, ip, &token_request(&token, 1, &csr(&key, ip)), t0());
        assert_eq!(
            EnrolmentMessage::parse(&reply).unwrap(),
            EnrolmentMessage::Rejected {
                request_id: 1,
                reason: RejectReason::OutsideNetwork
            }
        );
    }
    assert!(
        ca.issue_token(
            t0(),
            Some(Ipv4Addr::new(192, 168, 0, 5)),
            Duration::from_secs(3600),
        )
        .is_err()
    );
    assert!(ca.tokens()[0].used_at.is_none());
}

#[test]
fn renewal_with_the_same_key_after_half_the_lifetime() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let first = ask(&mut ca, IP, &token_request(&token, 1, &csr(&key, IP)), t0());
    assert!(is_issued(&first));
    let renew = EnrolmentMessage::Request {
        request_id: 2,
        csr: &csr(&key, IP),
    }
    .to_bytes();
    // Early: the current certificate again, nothing new.
    let early = ask(&mut ca, IP, &renew, t0() + Duration::from_secs(10 * 86_400));
    assert_eq!(ca.issued().len(), 1);
    let (
        EnrolmentMessage::Issued { certificate: a, .. },
        EnrolmentMessage::Issued { certificate: b, .. },
    ) = (
        EnrolmentMessage::parse(&first).unwrap(),
        EnrolmentMessage::parse(&early).unwrap(),
    )
    else {
        panic!("expected certificates");
    };
    assert_eq!(a, b);
    // At two thirds: a new certificate, no token needed.
    let at = t0() + Duration::from_secs(20 * 86_400);
    let renewed = ask(&mut ca, IP, &renew, at);
    assert!(is_issued(&renewed));
    assert_eq!(ca.issued().len(), 2);
    assert!(ca.issued()[1].not_after > ca.issued()[0].not_after);
}

#[test]
fn attack_replayed_renewal_does_not_revoke_the_current_certificate() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let csr_der = csr(&key, IP);
    assert!(is_issued(&ask(
        &mut ca,
        IP,
        &token_request(&token, 1, &csr_der),
        t0()
    )));
    // An observer replays the node's request late in the lifetime.
    let replay = EnrolmentMessage::Request {
        request_id: 1,
        csr: &csr_der,
    }
    .to_bytes();
    ask(
        &mut ca,
        IP,
        &replay,
        t0() + Duration::from_secs(25 * 86_400),
    );
    assert!(ca.issued().iter().all(|r| r.revoked_at.is_none()));
}

fn enrolment(ca: &Ca<MemStore>, key: &NodeKey, now: Instant) -> Enrolment {
    Enrolment::new(
        now,
        EnrolmentConfig::default(),
        &csr(key, IP),
        IP,
        key.spki_der(),
        Verifier::new(ca.identity().cert_der()).unwrap(),
        0x55,
        None,
    )
}

#[test]
fn attack_unsigned_or_foreign_rejected_does_not_end_enrolment() {
    let mut ca = new_ca();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let now = Instant::now();
    let mut node = enrolment(&ca, &key, now);
    let rejected = EnrolmentMessage::Rejected {
        request_id: 0x55,
        reason: RejectReason::Administrator,
    }
    .to_bytes();
    assert!(matches!(
        node.handle_input(now, t0(), &rejected),
        Err(EnrolmentError::Unsigned(_))
    ));
    // Signed by another CA (a fake CA node).
    let fake = new_ca();
    let signed = fake
        .identity()
        .sign_statement(REPLY_LABEL, &rejected)
        .unwrap();
    assert!(matches!(
        node.handle_input(now, t0(), &signed),
        Err(EnrolmentError::Unsigned(_))
    ));
    // A statement of another kind from the right CA.
    let other = ca
        .identity()
        .sign_statement(b"wow-ca/1", &rejected)
        .unwrap();
    assert!(node.handle_input(now, t0(), &other).is_err());
    assert!(!node.is_finished());
    assert_eq!(node.poll_event(), None);
    // The real CA still gets through.
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    let mut node = Enrolment::new(
        now,
        EnrolmentConfig::default(),
        &csr(&key, IP),
        IP,
        key.spki_der(),
        Verifier::new(ca.identity().cert_der()).unwrap(),
        0x56,
        Some(&token),
    );
    let request = node.poll_transmit().unwrap();
    ca.handle_enrolment(t0(), IP, &request).unwrap();
    node.handle_input(now, t0(), &ca.poll_transmit().unwrap().payload)
        .unwrap();
    assert!(matches!(
        node.poll_event(),
        Some(EnrolmentEvent::Issued { .. })
    ));
}

#[test]
fn a_full_queue_is_retried_not_final() {
    let mut ca = new_ca();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let now = Instant::now();
    let mut node = enrolment(&ca, &key, now);
    let busy = ca
        .identity()
        .sign_statement(
            REPLY_LABEL,
            &EnrolmentMessage::Rejected {
                request_id: 0x55,
                reason: RejectReason::Internal,
            }
            .to_bytes(),
        )
        .unwrap();
    node.handle_input(now, t0(), &busy).unwrap();
    assert!(!node.is_finished());
    assert!(node.poll_timeout().is_some());
    let _ = &mut ca;
}

#[test]
fn only_a_usable_token_with_the_right_mac_passes_the_flood_check() {
    let mut ca = new_ca();
    let token = ca
        .issue_token(t0(), None, Duration::from_secs(3600))
        .unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let csr_der = csr(&key, IP);
    let good = token_request(&token, 1, &csr_der);
    assert!(ca.has_valid_token(t0(), &good));
    let mut forged = good.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(!ca.has_valid_token(t0(), &forged));
    let plain = EnrolmentMessage::Request {
        request_id: 1,
        csr: &csr_der,
    }
    .to_bytes();
    assert!(!ca.has_valid_token(t0(), &plain));
    assert!(!ca.has_valid_token(t0() + Duration::from_secs(2 * 3600), &good));
    ask(&mut ca, IP, &good, t0());
    assert!(!ca.has_valid_token(t0(), &good), "used");
}
