//! Every signing-policy refusal, the pending queue, renewal, revocation and
//! CRL distribution, store-failure rollback, and every verifier refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use ipsec_ca::wire::{CrlEnvelope, EnrolmentMessage, RejectReason};
use ipsec_ca::{
    Ca, CaError, CaIdentity, CrlError, CsrError, KeyType, MemStore, NodeKey, NodeRequest,
    OverlayAddress, Policy, PolicyError, RevocationReason, Verifier, VerifyError, WireError,
};
use std::time::{Duration, SystemTime};

const IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 10);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 11);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn new_ca(key_type: KeyType, policy: Policy) -> Ca<MemStore> {
    let identity =
        CaIdentity::create_root(t0(), key_type, "wow CA", Duration::from_secs(3650 * 86_400))
            .unwrap();
    Ca::open_with_insecure_seed(identity, policy, MemStore::default(), [5; 32]).unwrap()
}

fn csr(key: &NodeKey, ip: Ipv4Addr) -> Vec<u8> {
    key.certificate_request(&NodeRequest::new(ip)).unwrap()
}

/// The enrolment message inside a reply signed by `ca`.
fn reply<'a, S: ipsec_ca::Store>(ca: &Ca<S>, payload: &'a [u8]) -> EnrolmentMessage<'a> {
    let body = Verifier::new(ca.identity().cert_der())
        .unwrap()
        .verify_statement(ipsec_ca::wire::enrol::REPLY_LABEL, payload)
        .unwrap();
    EnrolmentMessage::parse(body).unwrap()
}

fn policy_err(r: Result<impl std::fmt::Debug, CaError>) -> PolicyError {
    match r {
        Err(CaError::Policy(p)) => p,
        other => panic!("expected a policy refusal, got {other:?}"),
    }
}

#[test]
fn refuses_csr_ip_other_than_source() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let err = policy_err(ca.sign(t0(), &csr(&key, IP), OTHER_IP, None));
    assert_eq!(
        err,
        PolicyError::IpMismatch {
            requested: IP,
            source_ip: OTHER_IP
        }
    );
    assert!(ca.issued().is_empty());
}

#[test]
fn refuses_duplicate_ip_with_another_key_until_revoked_or_expired() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let first = NodeKey::generate(KeyType::Ed25519).unwrap();
    let issued = ca.sign(t0(), &csr(&first, IP), IP, None).unwrap();
    let second = NodeKey::generate(KeyType::Ed25519).unwrap();
    let err = policy_err(ca.sign(t0(), &csr(&second, IP), IP, None));
    assert!(
        matches!(err, PolicyError::IpInUse { ip, .. } if ip == IP),
        "{err:?}"
    );
    assert_eq!(ca.issued().len(), 1);

    // Once expired, the IP is free again.
    let later = t0() + ca.policy().default_validity + Duration::from_secs(1);
    ca.sign(later, &csr(&second, IP), IP, None).unwrap();

    // Once revoked, too.
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let issued2 = ca.sign(t0(), &csr(&first, IP), IP, None).unwrap();
    assert!(ca.find_serial(&issued2.serial).is_some());
    let _ = issued;
    ca.revoke(t0(), &issued2.serial, RevocationReason::KeyCompromise)
        .unwrap();
    ca.sign(t0(), &csr(&second, IP), IP, None).unwrap();
}

#[test]
fn renewal_by_same_key_supersedes_old_certificate() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let old = ca.sign(t0(), &csr(&key, IP), IP, None).unwrap();
    let new = ca
        .sign(
            t0() + Duration::from_secs(20 * 86_400),
            &csr(&key, IP),
            IP,
            None,
        )
        .unwrap();
    assert_ne!(old.serial, new.serial);
    let old_rec = ca.find_serial(&old.serial).unwrap();
    assert_eq!(
        old_rec.revocation_reason,
        Some(RevocationReason::Superseded)
    );
    assert!(ca.find_serial(&new.serial).unwrap().revoked_at.is_none());
    let live = ca
        .issued()
        .iter()
        .filter(|r| r.virtual_ip == IP && r.is_live(t0() + Duration::from_secs(20 * 86_400)))
        .count();
    assert_eq!(live, 1);
}

#[test]
fn refuses_disallowed_key_type() {
    let policy = Policy {
        allowed_key_types: vec![KeyType::Ed25519],
        ..Policy::default()
    };
    let mut ca = new_ca(KeyType::Ed25519, policy);
    let key = NodeKey::generate(KeyType::EcdsaP256).unwrap();
    assert_eq!(
        policy_err(ca.sign(t0(), &csr(&key, IP), IP, None)),
        PolicyError::KeyTypeNotAllowed(KeyType::EcdsaP256)
    );
    let ok = NodeKey::generate(KeyType::Ed25519).unwrap();
    ca.sign(t0(), &csr(&ok, IP), IP, None).unwrap();
}

#[test]
fn refuses_over_long_validity_and_caps_at_ca_lifetime() {
    let policy = Policy {
        max_validity: Duration::from_secs(90 * 86_400),
        ..Policy::default()
    };
    let mut ca = new_ca(KeyType::Ed25519, policy);
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    assert_eq!(
        policy_err(ca.sign(
            t0(),
            &csr(&key, IP),
            IP,
            Some(Duration::from_secs(91 * 86_400))
        )),
        PolicyError::ValidityTooLong {
            requested_secs: 91 * 86400,
            max_secs: 90 * 86400
        }
    );
    assert_eq!(
        policy_err(ca.sign(t0(), &csr(&key, IP), IP, Some(Duration::ZERO))),
        PolicyError::ValidityNotPositive
    );
    let issued = ca
        .sign(
            t0(),
            &csr(&key, IP),
            IP,
            Some(Duration::from_secs(90 * 86_400)),
        )
        .unwrap();
    let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    let peer = verifier.verify(t0(), &issued.certificate, IP).unwrap();
    assert_eq!(peer.not_after, t0() + Duration::from_secs(90 * 86_400));

    // Near the CA's end, validity is capped at the CA's notAfter.
    let near_end = ca.identity().not_after() - Duration::from_secs(86_400);
    let other = NodeKey::generate(KeyType::Ed25519).unwrap();
    let issued = ca
        .sign(near_end, &csr(&other, OTHER_IP), OTHER_IP, None)
        .unwrap();
    let peer = verifier
        .verify(near_end, &issued.certificate, OTHER_IP)
        .unwrap();
    assert_eq!(peer.not_after, ca.identity().not_after());
    let after_end = ca.identity().not_after() + Duration::from_secs(1);
    let third = NodeKey::generate(KeyType::Ed25519).unwrap();
    let ip3 = Ipv4Addr::new(10, 128, 0, 12);
    assert_eq!(
        policy_err(ca.sign(after_end, &csr(&third, ip3), ip3, None)),
        PolicyError::BeyondCaValidity
    );
}

#[test]
fn refuses_bad_csr_signature_and_garbage() {
    let mut ca = new_ca(KeyType::EcdsaP256, Policy::default());
    let key = NodeKey::generate(KeyType::EcdsaP256).unwrap();
    let mut bad = csr(&key, IP);
    // The ECDSA signature is the BIT STRING at the end: corrupt an r/s octet.
    let n = bad.len();
    bad[n - 3] ^= 0x40;
    assert_eq!(
        policy_err(ca.sign(t0(), &bad, IP, None)),
        PolicyError::Csr(CsrError::BadSignature)
    );
    assert_eq!(
        policy_err(ca.sign(t0(), b"\x30\x03\x02\x01\x01", IP, None)),
        PolicyError::Csr(CsrError::Malformed)
    );
    assert!(ca.issued().is_empty());
}

#[test]
fn refuses_csr_without_single_ipv4_san() {
    // Build CSRs by hand with rcgen to get the shapes a NodeKey never makes.
    use rcgen::{CertificateParams, KeyPair, PKCS_ED25519, SanType};
    let kp = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let uri = SanType::URI(OverlayAddress([1; 20]).to_uri().try_into().unwrap());
    let make = |sans: Vec<SanType>| {
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans;
        p.serialize_request(&kp).unwrap().der().to_vec()
    };
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    assert_eq!(
        policy_err(ca.sign(t0(), &make(vec![uri.clone()]), IP, None)),
        PolicyError::Csr(CsrError::MissingIp)
    );
    let two = make(vec![
        SanType::IpAddress(IP.into()),
        SanType::IpAddress(OTHER_IP.into()),
        uri.clone(),
    ]);
    assert_eq!(
        policy_err(ca.sign(t0(), &two, IP, None)),
        PolicyError::Csr(CsrError::AmbiguousIp)
    );
    let v6 = make(vec![SanType::IpAddress("fd00::1".parse().unwrap()), uri]);
    assert_eq!(
        policy_err(ca.sign(t0(), &v6, IP, None)),
        PolicyError::Csr(CsrError::AmbiguousIp)
    );
    let no_uri = make(vec![SanType::IpAddress(IP.into())]);
    assert_eq!(
        policy_err(ca.sign(t0(), &no_uri, IP, None)),
        PolicyError::Csr(CsrError::BadOverlayAddress)
    );
}

#[test]
fn serials_are_unique_and_differ_between_cas() {
    let mut a = new_ca(KeyType::Ed25519, Policy::default());
    let identity = CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "b",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap();
    let mut b =
        Ca::open_with_insecure_seed(identity, Policy::default(), MemStore::default(), [6; 32])
            .unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..50u32 {
        let ip = Ipv4Addr::from(0x0a80_1000 + i);
        let x = a.sign(t0(), &csr(&key, ip), ip, None).unwrap();
        let y = b.sign(t0(), &csr(&key, ip), ip, None).unwrap();
        assert_eq!(x.serial.len(), 16);
        assert!(x.serial[0] & 0x80 == 0, "serial must be positive");
        assert!(seen.insert(x.serial));
        assert!(seen.insert(y.serial));
    }
}

#[test]
fn pending_queue_list_approve_reject() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let k1 = NodeKey::generate(KeyType::Ed25519).unwrap();
    let k2 = NodeKey::generate(KeyType::Ed25519).unwrap();
    let id1 = ca.enqueue(t0(), &csr(&k1, IP), IP, None, 77).unwrap();
    let id2 = ca
        .enqueue(t0(), &csr(&k2, OTHER_IP), OTHER_IP, None, 78)
        .unwrap();
    assert_ne!(id1, id2);
    assert_eq!(ca.pending().len(), 2);
    // Queueing still applies the policy up front.
    assert!(matches!(
        ca.enqueue(t0(), &csr(&k1, IP), OTHER_IP, None, 1),
        Err(CaError::Policy(PolicyError::IpMismatch { .. }))
    ));

    let issued = ca.approve(t0(), id1).unwrap();
    let t = ca.poll_transmit().unwrap();
    assert_eq!(t.destination, IP);
    assert_eq!(
        reply(&ca, &t.payload),
        EnrolmentMessage::Issued {
            request_id: 77,
            certificate: &issued.certificate
        }
    );
    ca.reject(id2).unwrap();
    let t = ca.poll_transmit().unwrap();
    assert_eq!(
        reply(&ca, &t.payload),
        EnrolmentMessage::Rejected {
            request_id: 78,
            reason: RejectReason::Administrator
        }
    );
    assert!(ca.pending().is_empty());
    assert!(matches!(
        ca.approve(t0(), id2),
        Err(CaError::UnknownRequest(_))
    ));
    assert!(matches!(ca.reject(id1), Err(CaError::UnknownRequest(_))));
}

#[test]
fn approval_rechecks_policy_when_ip_was_taken_meanwhile() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let k1 = NodeKey::generate(KeyType::Ed25519).unwrap();
    let k2 = NodeKey::generate(KeyType::Ed25519).unwrap();
    let id = ca.enqueue(t0(), &csr(&k1, IP), IP, None, 1).unwrap();
    ca.sign(t0(), &csr(&k2, IP), IP, None).unwrap();
    assert!(matches!(
        ca.approve(t0(), id),
        Err(CaError::Policy(PolicyError::IpInUse { .. }))
    ));
    assert_eq!(ca.pending().len(), 1, "a refused approval stays queued");
}

#[test]
fn enrolment_messages_drive_the_ca() {
    let mut ca = new_ca(
        KeyType::Ed25519,
        Policy {
            auto_approve: true,
            ..Policy::default()
        },
    );
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let req = EnrolmentMessage::Request {
        request_id: 42,
        csr: &csr(&key, IP),
    }
    .to_bytes();
    ca.handle_enrolment(t0(), IP, &req).unwrap();
    let t = ca.poll_transmit().unwrap();
    let EnrolmentMessage::Issued {
        request_id: 42,
        certificate,
    } = reply(&ca, &t.payload)
    else {
        panic!("expected Issued");
    };
    Verifier::new(ca.identity().cert_der())
        .unwrap()
        .verify(t0(), certificate, IP)
        .unwrap();

    // Spoofed source: rejected with a reason, nothing issued.
    ca.handle_enrolment(t0(), OTHER_IP, &req).unwrap();
    let t = ca.poll_transmit().unwrap();
    assert_eq!(t.destination, OTHER_IP);
    assert_eq!(
        reply(&ca, &t.payload),
        EnrolmentMessage::Rejected {
            request_id: 42,
            reason: RejectReason::IpMismatch
        }
    );
    assert_eq!(ca.issued().len(), 1);

    // Malformed bytes and replies change nothing and queue nothing.
    assert_eq!(
        ca.handle_enrolment(t0(), IP, &req[..5]),
        Err(WireError::Truncated)
    );
    let pending = EnrolmentMessage::Pending {
        request_id: 1,
        queue_id: 1,
    }
    .to_bytes();
    assert_eq!(
        ca.handle_enrolment(t0(), IP, &pending),
        Err(WireError::Unexpected)
    );
    assert!(ca.poll_transmit().is_none());

    // Manual mode: the request is queued and the node told so.
    ca.set_policy(Policy::default());
    let key2 = NodeKey::generate(KeyType::Ed25519).unwrap();
    let req2 = EnrolmentMessage::Request {
        request_id: 43,
        csr: &csr(&key2, OTHER_IP),
    }
    .to_bytes();
    ca.handle_enrolment(t0(), OTHER_IP, &req2).unwrap();
    let t = ca.poll_transmit().unwrap();
    assert!(matches!(
        reply(&ca, &t.payload),
        EnrolmentMessage::Pending { request_id: 43, .. }
    ));
    assert_eq!(ca.pending().len(), 1);
}

#[test]
fn failed_save_rolls_back_and_releases_nothing() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    ca.store_mut().fail_next_save = true;
    assert!(matches!(
        ca.sign(t0(), &csr(&key, IP), IP, None),
        Err(CaError::Store(_))
    ));
    assert!(ca.issued().is_empty());
    let issued = ca.sign(t0(), &csr(&key, IP), IP, None).unwrap();
    assert_eq!(ca.store().state.as_ref().unwrap().issued.len(), 1);

    ca.store_mut().fail_next_save = true;
    assert!(
        ca.revoke(t0(), &issued.serial, RevocationReason::Unspecified)
            .is_err()
    );
    assert!(ca.find_serial(&issued.serial).unwrap().revoked_at.is_none());

    ca.store_mut().fail_next_save = true;
    assert!(ca.issue_crl(t0()).is_err());
    assert_eq!(ca.crl_number(), 0);
    assert_eq!(ca.issue_crl(t0()).unwrap().number, 1);
}

#[test]
fn reopening_restores_state() {
    let mut ca = new_ca(KeyType::EcdsaP256, Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let issued = ca.sign(t0(), &csr(&key, IP), IP, None).unwrap();
    ca.enqueue(t0(), &csr(&key, OTHER_IP), OTHER_IP, None, 9)
        .unwrap();
    ca.issue_crl(t0()).unwrap();
    let store = ca.store().clone();
    let identity =
        CaIdentity::from_pem(&ca.identity().cert_pem(), &ca.identity().key_pem(), None).unwrap();
    let mut again =
        Ca::open_with_insecure_seed(identity, Policy::default(), store, [8; 32]).unwrap();
    assert_eq!(again.issued(), ca.issued());
    assert_eq!(again.pending(), ca.pending());
    assert_eq!(again.crl_number(), 1);
    // The reopened CA still knows the IP is taken.
    let other = NodeKey::generate(KeyType::Ed25519).unwrap();
    assert!(matches!(
        again.sign(t0(), &csr(&other, IP), IP, None),
        Err(CaError::Policy(PolicyError::IpInUse { .. }))
    ));
    assert!(again.find_serial(&issued.serial).is_some());
}

#[test]
fn refuses_stale_and_mismatched_crls() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let mut verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    let crl1 = ca.issue_crl(t0()).unwrap();
    let crl2 = ca.issue_crl(t0()).unwrap();
    assert_eq!(verifier.handle_crl_envelope(t0(), &crl2.envelope()), Ok(2));
    assert_eq!(
        verifier.handle_crl_envelope(t0(), &crl1.envelope()),
        Err(CrlError::Stale {
            offered: 1,
            current: 2
        })
    );
    assert_eq!(
        verifier.handle_crl_envelope(t0(), &crl2.envelope()),
        Err(CrlError::Stale {
            offered: 2,
            current: 2
        })
    );
    assert_eq!(
        verifier.set_crl(t0(), &crl1.der),
        Err(CrlError::Stale {
            offered: 1,
            current: 2
        })
    );
    // An envelope that lies about the number inside.
    let crl3 = ca.issue_crl(t0()).unwrap();
    let liar = CrlEnvelope {
        crl_number: 99,
        crl: &crl3.der,
    }
    .to_bytes();
    assert_eq!(
        verifier.handle_crl_envelope(t0(), &liar),
        Err(CrlError::NumberMismatch {
            envelope: 99,
            crl: 3
        })
    );
    // Expired CRL.
    let late = t0() + ca.policy().crl_validity + Duration::from_secs(1);
    assert_eq!(verifier.set_crl(late, &crl3.der), Err(CrlError::Expired));
    // A CRL from another CA.
    let mut other = new_ca(KeyType::Ed25519, Policy::default());
    for _ in 0..5 {
        other.issue_crl(t0()).unwrap();
    }
    let foreign = other.issue_crl(t0()).unwrap();
    // Same subject name "wow CA", different key: the signature check refuses it.
    assert_eq!(
        verifier.set_crl(t0(), &foreign.der),
        Err(CrlError::BadSignature)
    );
    // Corrupted signature.
    let mut bad = crl3.der.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert_eq!(verifier.set_crl(t0(), &bad), Err(CrlError::BadSignature));
    assert_eq!(verifier.set_crl(t0(), &bad[..20]), Err(CrlError::Malformed));
    assert_eq!(verifier.crl_number(), 2, "refusals keep the loaded CRL");
    assert_eq!(verifier.set_crl(t0(), &crl3.der), Ok(3));
}

#[test]
fn verifier_refusals() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let key = NodeKey::generate(KeyType::EcdsaP256).unwrap();
    let issued = ca.sign(t0(), &csr(&key, IP), IP, None).unwrap();
    let mut verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    let peer = verifier.verify(t0(), &issued.certificate, IP).unwrap();
    assert_eq!(peer.virtual_ip, IP);
    assert_eq!(peer.serial, issued.serial);
    assert_eq!(peer.overlay_address, Some(key.overlay_address()));
    assert_eq!(peer.spki_der, key.spki_der());
    // Handshake signature by the certified key checks out; by another key, not.
    let sig = key.sign(b"transcript").unwrap();
    peer.verify_signature(b"transcript", &sig).unwrap();
    assert_eq!(
        peer.verify_signature(b"other transcript", &sig),
        Err(VerifyError::BadSignature)
    );

    assert_eq!(
        verifier.verify(t0(), &issued.certificate, OTHER_IP),
        Err(VerifyError::IpMismatch {
            certified: Some(IP),
            claimed: OTHER_IP
        })
    );
    assert_eq!(
        verifier.verify(t0() - Duration::from_secs(3600), &issued.certificate, IP),
        Err(VerifyError::NotYetValid)
    );
    assert_eq!(
        verifier.verify(
            t0() + Duration::from_secs(31 * 86_400),
            &issued.certificate,
            IP
        ),
        Err(VerifyError::Expired)
    );
    let mut tampered = issued.certificate.clone();
    let n = tampered.len();
    tampered[n - 1] ^= 1;
    assert_eq!(
        verifier.verify(t0(), &tampered, IP),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        verifier.verify(t0(), &tampered[..40], IP),
        Err(VerifyError::Malformed)
    );
    // The CA certificate itself is not a host certificate.
    let ca_der = ca.identity().cert_der().to_vec();
    assert_eq!(
        verifier.verify(t0(), &ca_der, IP),
        Err(VerifyError::BadKeyUsage)
    );
    // Not a CA as trust anchor.
    assert_eq!(
        Verifier::new(&issued.certificate).err(),
        Some(VerifyError::BadCaCertificate)
    );
    // A certificate from another CA.
    let mut other = new_ca(KeyType::Ed25519, Policy::default());
    let foreign = other.sign(t0(), &csr(&key, IP), IP, None).unwrap();
    assert_eq!(
        verifier.verify(t0(), &foreign.certificate, IP),
        Err(VerifyError::BadSignature)
    );
    // Revoked, with a stale CRL required to be current.
    ca.revoke(t0(), &issued.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let crl = ca.issue_crl(t0()).unwrap();
    verifier.set_crl(t0(), &crl.der).unwrap();
    assert_eq!(verifier.revoked_count(), 1);
    assert_eq!(
        verifier.verify(t0(), &issued.certificate, IP),
        Err(VerifyError::Revoked)
    );
    let key2 = NodeKey::generate(KeyType::Ed25519).unwrap();
    let fresh = ca.sign(t0(), &csr(&key2, IP), IP, None).unwrap();
    let late = t0() + Duration::from_secs(8 * 86_400);
    verifier.verify(late, &fresh.certificate, IP).unwrap();
    verifier.set_require_current_crl(true);
    assert_eq!(
        verifier.verify(late, &fresh.certificate, IP),
        Err(VerifyError::CrlOutdated)
    );
}

#[test]
fn revoke_refusals() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let issued = ca.sign(t0(), &csr(&key, IP), IP, None).unwrap();
    assert!(matches!(
        ca.revoke(t0(), &[1, 2, 3], RevocationReason::Unspecified),
        Err(CaError::UnknownCertificate)
    ));
    ca.revoke_certificate(t0(), &issued.certificate, RevocationReason::Unspecified)
        .unwrap();
    assert!(matches!(
        ca.revoke(t0(), &issued.serial, RevocationReason::Unspecified),
        Err(CaError::AlreadyRevoked)
    ));
}

#[test]
fn queue_replaces_resent_request_and_has_a_limit() {
    let mut ca = new_ca(
        KeyType::Ed25519,
        Policy {
            max_pending: 2,
            ..Policy::default()
        },
    );
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let first = ca.enqueue(t0(), &csr(&key, IP), IP, None, 1).unwrap();
    // A retry of the same request keeps its id.
    assert_eq!(
        ca.enqueue(t0(), &csr(&key, IP), IP, None, 1).unwrap(),
        first
    );
    // A different request from the same IP replaces it.
    let mut renamed = NodeRequest::new(IP);
    renamed.common_name = Some("renamed".into());
    let renamed = key.certificate_request(&renamed).unwrap();
    let again = ca.enqueue(t0(), &renamed, IP, None, 2).unwrap();
    assert_ne!(first, again);
    assert_eq!(ca.pending().len(), 1);
    assert_eq!(ca.pending()[0].request_id, 2);
    ca.enqueue(t0(), &csr(&key, OTHER_IP), OTHER_IP, None, 3)
        .unwrap();
    let third = Ipv4Addr::new(10, 128, 0, 99);
    assert_eq!(
        policy_err(ca.enqueue(t0(), &csr(&key, third), third, None, 4)),
        PolicyError::QueueFull
    );
    // Re-sending from a queued IP still works when full.
    ca.enqueue(t0(), &csr(&key, OTHER_IP), OTHER_IP, None, 5)
        .unwrap();
    assert_eq!(ca.pending().len(), 2);
}

#[test]
fn intermediate_revoked_by_root_crl() {
    let root = CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "root",
        Duration::from_secs(100 * 86_400),
    )
    .unwrap();
    let int = CaIdentity::create_intermediate(
        t0(),
        &root,
        KeyType::EcdsaP256,
        "site",
        Duration::from_secs(100 * 86_400),
    )
    .unwrap();
    let int_der = int.cert_der().to_vec();
    let mut ca =
        Ca::open_with_insecure_seed(int, Policy::default(), MemStore::default(), [2; 32]).unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let issued = ca.sign(t0(), &csr(&key, IP), IP, None).unwrap();
    let mut verifier = Verifier::new(root.cert_der()).unwrap();
    verifier.add_intermediate(t0(), &int_der).unwrap();
    verifier.verify(t0(), &issued.certificate, IP).unwrap();

    // The root revokes the intermediate: everything under it is refused.
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(&int_der).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &root.cert_pem(),
        rcgen::KeyPair::from_pem(&root.key_pem()).unwrap(),
    )
    .unwrap();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: t0().into(),
        next_update: (t0() + Duration::from_secs(86_400)).into(),
        crl_number: rcgen::SerialNumber::from_slice(&[1]),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(parsed.raw_serial()),
            revocation_time: t0().into(),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();
    verifier.set_crl(t0(), crl.der()).unwrap();
    assert_eq!(
        verifier.verify(t0(), &issued.certificate, IP),
        Err(VerifyError::Revoked)
    );
}

#[test]
fn node_enrolment_machine_against_the_ca() {
    use ipsec_ca::{Enrolment, EnrolmentConfig, EnrolmentError, EnrolmentEvent};
    use std::time::{Duration as StdDuration, Instant};

    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    let start = Instant::now();
    let config = EnrolmentConfig::default();
    let mut node = Enrolment::new(
        start,
        config,
        &csr(&key, IP),
        IP,
        key.spki_der(),
        verifier.clone(),
        0xabc,
        None,
    );
    // The first request is lost; the retry reaches the CA.
    assert!(node.poll_transmit().is_some());
    assert!(node.poll_transmit().is_none());
    let retry_at = node.poll_timeout().unwrap();
    assert_eq!(retry_at, start + config.retry_timeout);
    node.handle_timeout(retry_at - StdDuration::from_millis(1));
    assert!(node.poll_transmit().is_none());
    node.handle_timeout(retry_at);
    let request = node.poll_transmit().unwrap();
    assert!(node.poll_timeout().unwrap() > retry_at);

    ca.handle_enrolment(t0(), IP, &request).unwrap();
    let reply = ca.poll_transmit().unwrap();
    node.handle_input(retry_at, t0(), &reply.payload).unwrap();
    let Some(EnrolmentEvent::Pending { queue_id }) = node.poll_event() else {
        panic!("expected Pending");
    };
    // A periodic re-send while queued keeps the same queue entry.
    let resend_at = node.poll_timeout().unwrap();
    node.handle_timeout(resend_at);
    ca.handle_enrolment(t0(), IP, &node.poll_transmit().unwrap())
        .unwrap();
    let reply = ca.poll_transmit().unwrap();
    node.handle_input(resend_at, t0(), &reply.payload).unwrap();
    assert!(node.poll_event().is_none(), "no second Pending event");
    assert_eq!(ca.pending().len(), 1);
    assert_eq!(ca.pending()[0].id, queue_id);

    // A reply to someone else's request is ignored.
    let sign = |m: &[u8]| {
        ca.identity()
            .sign_statement(ipsec_ca::wire::enrol::REPLY_LABEL, m)
            .unwrap()
    };
    let stray = EnrolmentMessage::Rejected {
        request_id: 1,
        reason: RejectReason::IpInUse,
    }
    .to_bytes();
    assert_eq!(
        node.handle_input(resend_at, t0(), &sign(&stray)),
        Err(EnrolmentError::NotOurs)
    );
    // A certificate for another key (same IP, same id) is refused.
    let other = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mut ca2 = new_ca(KeyType::Ed25519, Policy::default());
    let foreign = ca2.sign(t0(), &csr(&other, IP), IP, None).unwrap();
    let forged = EnrolmentMessage::Issued {
        request_id: 0xabc,
        certificate: &foreign.certificate,
    }
    .to_bytes();
    let forged = sign(&forged);
    assert!(matches!(
        node.handle_input(resend_at, t0(), &forged),
        Err(EnrolmentError::BadCertificate(_))
    ));
    assert!(!node.is_finished());

    // The administrator approves; the CA pushes the certificate.
    let issued = ca.approve(t0(), queue_id).unwrap();
    let push = ca.poll_transmit().unwrap();
    assert_eq!(push.destination, IP);
    node.handle_input(resend_at, t0(), &push.payload).unwrap();
    let Some(EnrolmentEvent::Issued { certificate, peer }) = node.poll_event() else {
        panic!("expected Issued");
    };
    assert_eq!(certificate, issued.certificate);
    assert_eq!(peer.virtual_ip, IP);
    assert!(node.is_finished());
    assert_eq!(node.poll_timeout(), None);
}

#[test]
fn node_enrolment_gives_up_without_answers() {
    use ipsec_ca::{Enrolment, EnrolmentConfig, EnrolmentEvent};
    use std::time::Instant;

    let ca = new_ca(KeyType::Ed25519, Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let config = EnrolmentConfig {
        max_attempts: 3,
        ..EnrolmentConfig::default()
    };
    let mut now = Instant::now();
    let mut node = Enrolment::new(
        now,
        config,
        &csr(&key, IP),
        IP,
        key.spki_der(),
        Verifier::new(ca.identity().cert_der()).unwrap(),
        1,
        None,
    );
    let mut sent = 0;
    let mut gaps = Vec::new();
    while let Some(at) = node.poll_timeout() {
        while node.poll_transmit().is_some() {
            sent += 1;
        }
        gaps.push(at - now);
        now = at;
        node.handle_timeout(now);
    }
    assert_eq!(sent, 3);
    assert!(
        gaps.windows(2).all(|w| w[1] > w[0]),
        "backoff grows: {gaps:?}"
    );
    assert_eq!(node.poll_event(), Some(EnrolmentEvent::GaveUp));
}

/// Pinned from `ca_invariants`: at exactly notAfter a certificate is still
/// valid (RFC 5280 §4.1.2.5), for the verifier, the index and the CRL alike.
#[test]
fn not_after_is_inclusive_everywhere() {
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let issued = ca.sign(t0(), &csr(&key, IP), IP, None).unwrap();
    let end = t0() + ca.policy().default_validity;
    let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    verifier.verify(end, &issued.certificate, IP).unwrap();
    assert!(ca.issued()[0].is_live(end));
    let other = NodeKey::generate(KeyType::Ed25519).unwrap();
    assert!(matches!(
        ca.sign(end, &csr(&other, IP), IP, None),
        Err(CaError::Policy(PolicyError::IpInUse { .. }))
    ));
    let after = end + Duration::from_secs(1);
    assert_eq!(
        verifier.verify(after, &issued.certificate, IP),
        Err(VerifyError::Expired)
    );
    ca.sign(after, &csr(&other, IP), IP, None).unwrap();
}

#[test]
fn attack_predictable_serials_production_cas_draw_from_the_os() {
    // Two CAs opened through the production path from the same identity and
    // the same (empty) state, issuing the same request at the same time: the
    // serials must still differ (a seed from the clock or the state would
    // repeat them).
    let identity = CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "wow CA",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap();
    let (cert_pem, key_pem) = (identity.cert_pem(), identity.key_pem());
    let identity = || CaIdentity::from_pem(&cert_pem, &key_pem, None).unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let serial = || {
        let mut ca = Ca::open(identity(), Policy::default(), MemStore::default()).unwrap();
        ca.sign(t0(), &csr(&key, IP), IP, None).unwrap().serial
    };
    assert_ne!(serial(), serial());
    // The seeded constructor repeats itself, so this test tells them apart.
    let seeded = || {
        let mut ca = Ca::open_with_insecure_seed(
            identity(),
            Policy::default(),
            MemStore::default(),
            [1; 32],
        )
        .unwrap();
        ca.sign(t0(), &csr(&key, IP), IP, None).unwrap().serial
    };
    assert_eq!(seeded(), seeded());
}

/// A wall time before the Unix epoch (a broken clock) is a typed error or
/// a refusal everywhere, never a panic, and changes nothing.
#[test]
fn a_time_before_the_epoch_is_a_typed_error() {
    let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
    assert!(matches!(
        CaIdentity::create_root(before, KeyType::Ed25519, "x", Duration::from_secs(86_400)),
        Err(CaError::TimeOutOfRange)
    ));
    let mut ca = new_ca(KeyType::Ed25519, Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    assert_eq!(
        policy_err(ca.sign(before, &csr(&key, IP), IP, None)),
        PolicyError::TimeOutOfRange
    );
    assert!(matches!(
        ca.issue_crl(before),
        Err(CaError::Policy(PolicyError::TimeOutOfRange))
    ));
    assert!(
        ca.issue_token(before, None, Duration::from_secs(60))
            .is_err()
    );
    let request = EnrolmentMessage::Request {
        request_id: 9,
        csr: &csr(&key, IP),
    }
    .to_bytes();
    assert!(!ca.has_valid_token(before, &request));
    ca.handle_enrolment(before, IP, &request).unwrap();
    let sent = ca.poll_transmit().unwrap();
    assert!(matches!(
        reply(&ca, &sent.payload),
        EnrolmentMessage::Rejected {
            request_id: 9,
            reason: RejectReason::Internal
        }
    ));
    assert!(ca.issued().is_empty() && ca.pending().is_empty());
    assert_eq!(ca.crl_number(), 0);
    // Far beyond what a certificate can carry.
    let far = t0() + Duration::from_secs(10_000 * 365 * 86_400);
    assert!(ca.sign(far, &csr(&key, IP), IP, None).is_err());
    // The verifier compares: nothing is valid before the epoch.
    let issued = ca.sign(t0(), &csr(&key, IP), IP, None).unwrap();
    let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    assert_eq!(
        verifier.verify(before, &issued.certificate, IP),
        Err(VerifyError::NotYetValid)
    );
}
