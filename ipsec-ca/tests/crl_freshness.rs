//! Revocation fails closed: a verifier that requires a current CRL refuses
//! certificates once its CRL is past nextUpdate plus the grace, or when no
//! CRL came at all in time; an older CRL never replaces a newer one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use ipsec_ca::{
    Ca, CaIdentity, CrlError, KeyType, MemStore, NodeKey, NodeRequest, Policy, Verifier,
    VerifyError,
};
use std::time::{Duration, SystemTime};

const IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 10);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn setup() -> (Ca<MemStore>, Verifier, Vec<u8>) {
    let identity = CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "wow CA",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap();
    let mut ca =
        Ca::open_with_insecure_seed(identity, Policy::default(), MemStore::default(), [5; 32])
            .unwrap();
    let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let csr = key.certificate_request(&NodeRequest::new(IP)).unwrap();
    let cert = ca.sign(t0(), &csr, IP, None).unwrap().certificate;
    (ca, verifier, cert)
}

#[test]
fn attack_expired_crl_blocks_new_certificates_after_grace() {
    let (mut ca, mut verifier, cert) = setup();
    let crl = ca.issue_crl(t0()).unwrap();
    assert_eq!(crl.next_update, t0() + Duration::from_secs(7 * 86_400));
    verifier.handle_crl_envelope(t0(), &crl.envelope()).unwrap();
    let grace = Duration::from_secs(3600);
    verifier.require_fresh_crl(grace, t0() + grace);
    assert_eq!(verifier.crl_next_update(), Some(crl.next_update));

    // Past nextUpdate but within the grace: still accepted.
    let within = crl.next_update + Duration::from_secs(30 * 60);
    verifier.verify(within, &cert, IP).unwrap();
    assert!(!verifier.crl_is_stale(within));
    // After the grace: refused, and shown as stale.
    let after = crl.next_update + grace + Duration::from_secs(1);
    assert!(verifier.crl_is_stale(after));
    assert_eq!(
        verifier.verify(after, &cert, IP),
        Err(VerifyError::CrlOutdated)
    );
    // A re-issued CRL makes it current again.
    let newer = ca.issue_crl(after).unwrap();
    verifier
        .handle_crl_envelope(after, &newer.envelope())
        .unwrap();
    verifier.verify(after, &cert, IP).unwrap();
    assert!(!verifier.crl_is_stale(after));
}

#[test]
fn attack_no_crl_at_all_fails_closed_after_grace() {
    let (_ca, mut verifier, cert) = setup();
    let grace = Duration::from_secs(3600);
    verifier.require_fresh_crl(grace, t0() + grace);
    verifier.verify(t0(), &cert, IP).unwrap();
    let after = t0() + grace + Duration::from_secs(1);
    assert!(verifier.crl_is_stale(after));
    assert_eq!(
        verifier.verify(after, &cert, IP),
        Err(VerifyError::CrlOutdated)
    );
}

#[test]
fn without_the_requirement_nothing_is_stale() {
    let (_ca, verifier, cert) = setup();
    let late = t0() + Duration::from_secs(30 * 86_400);
    assert!(!verifier.crl_is_stale(late));
    verifier.verify(late, &cert, IP).unwrap();
}

#[test]
fn attack_rollback_to_an_older_crl_is_refused() {
    let (mut ca, mut verifier, cert) = setup();
    let old = ca.issue_crl(t0()).unwrap();
    ca.revoke_certificate(t0(), &cert, ipsec_ca::RevocationReason::KeyCompromise)
        .unwrap();
    let new = ca.issue_crl(t0()).unwrap();
    assert_eq!(
        verifier.handle_crl_envelope(t0(), &new.envelope()),
        Ok(new.number)
    );
    assert_eq!(verifier.verify(t0(), &cert, IP), Err(VerifyError::Revoked));
    // The older CRL (which does not list the certificate) is refused, by
    // envelope and by DER, and the revocation stands.
    assert_eq!(
        verifier.handle_crl_envelope(t0(), &old.envelope()),
        Err(CrlError::Stale {
            offered: old.number,
            current: new.number
        })
    );
    assert!(matches!(
        verifier.set_crl(t0(), &old.der),
        Err(CrlError::Stale { .. })
    ));
    assert_eq!(verifier.crl_number(), new.number);
    assert_eq!(verifier.verify(t0(), &cert, IP), Err(VerifyError::Revoked));
}
