//! Groups in host certificates: the CA's policy grants them, a request
//! only narrows them, the verifier reads them back, `openssl x509 -text`
//! shows them (skips without `openssl`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use ipsec_ca::admin::issue_node_in_groups;
use ipsec_ca::wire::EnrolmentMessage;
use ipsec_ca::wire::enrol::REPLY_LABEL;
use ipsec_ca::{
    Ca, CaError, CaIdentity, CsrError, Groups, KeyType, MemStore, NodeKey, NodeRequest, Policy,
    PolicyError, Verifier, parse_csr,
};

const IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 10);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 11);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn groups(list: &str) -> Groups {
    Groups::parse_list(list).unwrap()
}

fn new_ca(granted: &[(Ipv4Addr, &str)]) -> Ca<MemStore> {
    let identity = CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "wow CA",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap();
    let policy = Policy {
        auto_approve: true,
        groups: granted
            .iter()
            .map(|(ip, list)| (*ip, groups(list)))
            .collect::<BTreeMap<_, _>>(),
        ..Policy::default()
    };
    Ca::open_with_insecure_seed(identity, policy, MemStore::default(), [7; 32]).unwrap()
}

fn request(ip: Ipv4Addr, asked: &str) -> (NodeKey, Vec<u8>) {
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mut req = NodeRequest::new(ip);
    req.groups = groups(asked);
    let csr = key.certificate_request(&req).unwrap();
    (key, csr)
}

/// Enrols `csr` from `ip` over the enrolment messages; returns the
/// certificate issued.
fn enrol(ca: &mut Ca<MemStore>, ip: Ipv4Addr, csr: &[u8]) -> Vec<u8> {
    let msg = EnrolmentMessage::Request { request_id: 1, csr }.to_bytes();
    ca.handle_enrolment(t0(), ip, &msg).unwrap();
    let t = ca.poll_transmit().unwrap();
    let body = Verifier::new(ca.identity().cert_der())
        .unwrap()
        .verify_statement(REPLY_LABEL, &t.payload)
        .unwrap()
        .to_vec();
    match EnrolmentMessage::parse(&body).unwrap() {
        EnrolmentMessage::Issued { certificate, .. } => certificate.to_vec(),
        other => panic!("not issued: {other:?}"),
    }
}

fn verified_groups(ca: &Ca<MemStore>, cert: &[u8], ip: Ipv4Addr) -> Groups {
    Verifier::new(ca.identity().cert_der())
        .unwrap()
        .verify(t0(), cert, ip)
        .unwrap()
        .groups
}

#[test]
fn policy_groups_go_into_the_certificate_and_the_verifier_reads_them() {
    let mut ca = new_ca(&[(IP, "admin,web")]);
    let (_, csr) = request(IP, "");
    let issued = ca.sign(t0(), &csr, IP, None).unwrap();
    assert_eq!(
        verified_groups(&ca, &issued.certificate, IP),
        groups("admin,web")
    );
}

#[test]
fn a_request_narrows_the_granted_groups() {
    let mut ca = new_ca(&[(IP, "admin,web")]);
    let (_, csr) = request(IP, "web");
    assert_eq!(parse_csr(&csr).unwrap().requested_groups, groups("web"));
    let cert = enrol(&mut ca, IP, &csr);
    assert_eq!(verified_groups(&ca, &cert, IP), groups("web"));
}

#[test]
fn attack_a_requester_cannot_grant_itself_groups() {
    // OTHER_IP is granted nothing; IP only "web". Both ask for "admin".
    let mut ca = new_ca(&[(IP, "web")]);
    let (_, csr) = request(OTHER_IP, "admin");
    let cert = enrol(&mut ca, OTHER_IP, &csr);
    assert_eq!(verified_groups(&ca, &cert, OTHER_IP), Groups::empty());

    let (_, csr) = request(IP, "admin,web");
    let cert = enrol(&mut ca, IP, &csr);
    assert_eq!(verified_groups(&ca, &cert, IP), groups("web"));
}

#[test]
fn the_operator_grants_groups_directly() {
    let mut ca = new_ca(&[]);
    let node = issue_node_in_groups(
        &mut ca,
        t0(),
        IP,
        [],
        &groups("ops"),
        KeyType::EcdsaP256,
        None,
    )
    .unwrap();
    assert_eq!(
        verified_groups(&ca, &node.issued.certificate, IP),
        groups("ops")
    );
}

#[test]
fn a_csr_with_a_malformed_group_is_refused() {
    // Built by hand: NodeRequest only holds valid Groups.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let node = NodeKey::from_pkcs8_der(key.serialized_der()).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![
        rcgen::SanType::IpAddress(IP.into()),
        rcgen::SanType::URI(node.overlay_address().to_uri().try_into().unwrap()),
        rcgen::SanType::URI("wow:group:Not Valid".try_into().unwrap()),
    ];
    let csr = params.serialize_request(&key).unwrap();
    assert_eq!(parse_csr(csr.der()).map(|_| ()), Err(CsrError::BadGroups));
    let mut ca = new_ca(&[(IP, "admin")]);
    assert!(matches!(
        ca.sign(t0(), csr.der(), IP, None),
        Err(CaError::Policy(PolicyError::Csr(CsrError::BadGroups)))
    ));
}

#[test]
fn openssl_shows_the_groups() {
    if !wow_test_hosts::tool_available("openssl") {
        wow_test_hosts::skip("openssl_shows_the_groups", "`openssl` is not installed");
        return;
    }
    let mut ca = new_ca(&[(IP, "admin,web")]);
    let (_, csr) = request(IP, "");
    let issued = ca.sign(t0(), &csr, IP, None).unwrap();
    let mut child = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&issued.certificate)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("URI:wow:group:admin"), "{text}");
    assert!(text.contains("URI:wow:group:web"), "{text}");
}
