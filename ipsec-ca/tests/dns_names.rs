//! Host names bound to certificates: a request's dNSName SANs reach the
//! certificate, the verifier hands them out, and the CA keeps one name to
//! one key (and, with a zone, to its zone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use ipsec_ca::verify::certificate_dns_names;
use ipsec_ca::{
    Ca, CaError, CaIdentity, CsrError, KeyError, KeyType, MemStore, NodeKey, NodeRequest, Policy,
    PolicyError, RevocationReason, Verifier, parse_csr,
};
use std::time::{Duration, SystemTime};

const IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 10);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 11);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn new_ca(policy: Policy) -> Ca<MemStore> {
    let identity = CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "wow CA",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap();
    Ca::open_with_insecure_seed(identity, policy, MemStore::default(), [5; 32]).unwrap()
}

fn zone_policy() -> Policy {
    Policy {
        dns_zone: Some("wow.internal".into()),
        ..Policy::default()
    }
}

fn named_csr(key: &NodeKey, ip: Ipv4Addr, name: &str) -> Vec<u8> {
    key.certificate_request(&NodeRequest::new(ip).with_dns_name(name))
        .unwrap()
}

fn policy_err(r: Result<impl std::fmt::Debug, CaError>) -> PolicyError {
    match r {
        Err(CaError::Policy(p)) => p,
        other => panic!("expected a policy refusal, got {other:?}"),
    }
}

#[test]
fn the_name_reaches_the_certificate_and_the_verifier() {
    for key_type in KeyType::ALL {
        let mut ca = new_ca(zone_policy());
        let key = NodeKey::generate(key_type).unwrap();
        let csr = named_csr(&key, IP, "db.wow.internal");
        assert_eq!(parse_csr(&csr).unwrap().dns_names, ["db.wow.internal"]);
        let issued = ca.sign(t0(), &csr, IP, None).unwrap();
        assert_eq!(
            certificate_dns_names(&issued.certificate).unwrap(),
            ["db.wow.internal"]
        );
        let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
        let peer = verifier.verify(t0(), &issued.certificate, IP).unwrap();
        assert_eq!(peer.dns_names, ["db.wow.internal"]);
        assert_eq!(peer.virtual_ip, IP);
    }
    // No name asked, none certified.
    let mut ca = new_ca(Policy::default());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let csr = key.certificate_request(&NodeRequest::new(IP)).unwrap();
    let issued = ca.sign(t0(), &csr, IP, None).unwrap();
    let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    assert!(
        verifier
            .verify(t0(), &issued.certificate, IP)
            .unwrap()
            .dns_names
            .is_empty()
    );
}

/// Mallory asks the CA for a name another key holds: refused while that
/// certificate is live, granted once it is revoked.
#[test]
fn attack_name_taken_by_another_key_is_refused() {
    let mut ca = new_ca(zone_policy());
    let alice = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mallory = NodeKey::generate(KeyType::Ed25519).unwrap();
    ca.sign(t0(), &named_csr(&alice, IP, "db.wow.internal"), IP, None)
        .unwrap();
    let err = policy_err(ca.sign(
        t0(),
        &named_csr(&mallory, OTHER_IP, "db.wow.internal"),
        OTHER_IP,
        None,
    ));
    assert!(
        matches!(&err, PolicyError::NameInUse { name, .. } if name == "db.wow.internal"),
        "{err:?}"
    );
    // The holder renews under its own name.
    ca.sign(t0(), &named_csr(&alice, IP, "db.wow.internal"), IP, None)
        .unwrap();
    for rec in ca.issued().to_vec() {
        if rec.revoked_at.is_none() {
            ca.revoke(t0(), &rec.serial, RevocationReason::KeyCompromise)
                .unwrap();
        }
    }
    ca.sign(
        t0(),
        &named_csr(&mallory, OTHER_IP, "db.wow.internal"),
        OTHER_IP,
        None,
    )
    .unwrap();
}

#[test]
fn names_outside_the_zone_and_malformed_names_are_refused() {
    let mut ca = new_ca(zone_policy());
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    for name in ["db.example.com", "a.b.wow.internal", "wow.internal", "db"] {
        let err = policy_err(ca.sign(t0(), &named_csr(&key, IP, name), IP, None));
        assert_eq!(err, PolicyError::NameOutsideZone(name.into()));
    }
    // Without a zone, a bare name is fine.
    let mut open = new_ca(Policy::default());
    open.sign(t0(), &named_csr(&key, IP, "db"), IP, None)
        .unwrap();
    // The requester's side refuses what is not a lowercase host name.
    for bad in [
        "",
        "DB.wow.internal",
        "-db.wow.internal",
        "db..wow",
        "d b",
        "db.",
        "*.wow.internal",
    ] {
        assert!(
            matches!(
                key.certificate_request(&NodeRequest::new(IP).with_dns_name(bad)),
                Err(KeyError::BadDnsName(_))
            ),
            "{bad:?}"
        );
    }
    let mut many = NodeRequest::new(IP);
    for i in 0..=ipsec_ca::csr::MAX_DNS_NAMES {
        many = many.with_dns_name(format!("n{i}.wow.internal"));
    }
    assert!(matches!(
        key.certificate_request(&many),
        Err(KeyError::BadDnsName(_))
    ));
    // The CA's side refuses a CSR carrying one (built with rcgen directly).
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![
        rcgen::SanType::IpAddress(IP.into()),
        rcgen::SanType::URI(key.overlay_address().to_uri().try_into().unwrap()),
        rcgen::SanType::DnsName("Upper.wow.internal".try_into().unwrap()),
    ];
    let pair = rcgen::KeyPair::try_from(key.pkcs8_der()).unwrap();
    let raw = params.serialize_request(&pair).unwrap().der().to_vec();
    assert_eq!(parse_csr(&raw), Err(CsrError::BadDnsName));
}
