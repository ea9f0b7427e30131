//! The administrator's helpers ([`ipsec_ca::admin`]) and the CA-directory
//! entry points of [`FileStore`]: names and serials as typed, a node
//! provisioned in one step, certificate states, and a CA held through a
//! boxed store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use ipsec_ca::admin::{CertState, IssueError, der_or_pem, host_name_in, issue_node, parse_serial};
use ipsec_ca::key::to_pem;
use ipsec_ca::state::hex_encode;
use ipsec_ca::verify::certificate_dns_names;
use ipsec_ca::{
    BoxedStore, Ca, CaError, CaIdentity, FileStore, KeyType, MemStore, NodeKey, NodeRequest,
    Policy, RevocationReason, Store as _, StoreError, Verifier,
};
use std::time::{Duration, SystemTime};

const IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 7);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn identity() -> CaIdentity {
    CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "wow CA",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap()
}

fn new_ca() -> Ca<MemStore> {
    Ca::open_with_insecure_seed(identity(), Policy::default(), MemStore::default(), [3; 32])
        .unwrap()
}

#[test]
fn host_names_go_into_the_zone_unless_they_have_a_dot() {
    assert_eq!(host_name_in("DB", "wow.internal"), "db.wow.internal");
    assert_eq!(host_name_in("db.", "Wow.Internal."), "db.wow.internal");
    assert_eq!(
        host_name_in("web.example.org", "wow.internal"),
        "web.example.org"
    );
    assert_eq!(
        host_name_in("Web.Example.org.", "wow.internal"),
        "web.example.org"
    );
}

#[test]
fn serials_as_typed_round_trip_and_garbage_is_refused() {
    let serial = [0x40, 0x01, 0xff];
    assert_eq!(parse_serial(&hex_encode(&serial)), Some(serial.to_vec()));
    assert_eq!(parse_serial(" 0x4001FF\n"), Some(serial.to_vec()));
    assert_eq!(parse_serial("abc"), None);
    assert_eq!(parse_serial("zz"), None);
    assert_eq!(parse_serial("0x"), Some(Vec::new()));
}

#[test]
fn request_files_in_der_or_pem() {
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let csr = key.certificate_request(&NodeRequest::new(IP)).unwrap();
    let pem = to_pem("CERTIFICATE REQUEST", &csr).into_bytes();
    assert_eq!(der_or_pem("CERTIFICATE REQUEST", pem.clone()).unwrap(), csr);
    assert_eq!(der_or_pem("CERTIFICATE REQUEST", csr.clone()).unwrap(), csr);
    // A PEM file without the block asked for.
    assert!(der_or_pem("CERTIFICATE", pem).is_err());
}

/// `issue_node` with names: the DNS SANs reach the certificate (also as
/// openssl reads it), the key matches it, and a bad name issues nothing.
#[test]
fn issue_node_certifies_the_names_and_refuses_bad_ones_first() {
    let mut ca = new_ca();
    let names = ["DB", "web.wow.internal"].map(|n| host_name_in(n, "wow.internal"));
    let node = issue_node(
        &mut ca,
        t0(),
        IP,
        names,
        KeyType::Ed25519,
        Some(Duration::from_secs(86_400)),
    )
    .unwrap();
    assert_eq!(
        certificate_dns_names(&node.issued.certificate).unwrap(),
        ["db.wow.internal", "web.wow.internal"]
    );
    let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    let peer = verifier.verify(t0(), &node.issued.certificate, IP).unwrap();
    peer.verify_signature(b"m", &node.key.sign(b"m").unwrap())
        .unwrap();
    assert_eq!(ca.issued().len(), 1);

    let bad = issue_node(
        &mut ca,
        t0(),
        Ipv4Addr::new(10, 128, 0, 8),
        ["d b".to_string()],
        KeyType::Ed25519,
        None,
    );
    assert!(matches!(bad, Err(IssueError::Names(_))), "{bad:?}");
    assert_eq!(ca.issued().len(), 1, "nothing issued for a bad name");

    let dir = std::env::temp_dir().join(format!(
        "ipsec-ca-admin-{}",
        hex_encode(&node.issued.serial)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.pem");
    std::fs::write(&path, node.cert_pem()).unwrap();
    match std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
    {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{o:?}");
            assert!(
                text.contains("DNS:db.wow.internal, DNS:web.wow.internal"),
                "{text}"
            );
            assert!(text.contains("IP Address:10.128.0.7"), "{text}");
        }
        Err(e) => eprintln!("SKIP the openssl check: cannot run openssl: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn certificate_states() {
    let mut ca = new_ca();
    let a = issue_node(
        &mut ca,
        t0(),
        IP,
        [],
        KeyType::Ed25519,
        Some(Duration::from_secs(86_400)),
    )
    .unwrap();
    issue_node(
        &mut ca,
        t0(),
        Ipv4Addr::new(10, 128, 0, 9),
        [],
        KeyType::Ed25519,
        Some(Duration::from_secs(10 * 86_400)),
    )
    .unwrap();
    ca.revoke(t0(), &a.issued.serial, RevocationReason::Unspecified)
        .unwrap();
    let later = t0() + Duration::from_secs(2 * 86_400);
    let states: Vec<_> = ca
        .issued()
        .iter()
        .map(|r| (CertState::of(t0(), r), CertState::of(later, r)))
        .collect();
    assert_eq!(
        states,
        [
            (CertState::Revoked, CertState::Revoked),
            (CertState::Live, CertState::Live)
        ]
    );
    let far = t0() + Duration::from_secs(20 * 86_400);
    assert_eq!(CertState::of(far, &ca.issued()[1]), CertState::Expired);
    assert_eq!(format!("{:<8}|", CertState::Live), "live    |");
}

/// A CA moved behind a [`BoxedStore`] keeps its state and still records
/// through the store it had.
#[test]
fn a_boxed_ca_keeps_its_state_and_store() {
    let mut ca = new_ca();
    issue_node(&mut ca, t0(), IP, [], KeyType::Ed25519, None).unwrap();
    let mut boxed: Ca<BoxedStore> = ca.boxed();
    assert_eq!(boxed.issued().len(), 1);
    issue_node(
        &mut boxed,
        t0(),
        Ipv4Addr::new(10, 128, 0, 9),
        [],
        KeyType::Ed25519,
        None,
    )
    .unwrap();
    let saved = boxed.store_mut().load().unwrap().unwrap();
    assert_eq!(saved.issued.len(), 2);
}

#[test]
fn ca_directories_open_only_when_initialised_and_initialise_once() {
    let dir = std::env::temp_dir().join(format!(
        "ipsec-ca-admin-dir-{}",
        hex_encode(
            &NodeKey::generate(KeyType::Ed25519)
                .unwrap()
                .overlay_address()
                .0[..8]
        )
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let err = FileStore::new(&dir)
        .unwrap()
        .open_ca(Policy::default())
        .unwrap_err();
    assert!(
        matches!(err, CaError::Store(StoreError::NoCa(ref d)) if *d == dir),
        "{err}"
    );
    let mut ca = FileStore::new(&dir)
        .unwrap()
        .init_ca(identity(), Policy::default())
        .unwrap();
    issue_node(&mut ca, t0(), IP, [], KeyType::Ed25519, None).unwrap();
    let cert = ca.identity().cert_der().to_vec();
    drop(ca);
    let again = FileStore::new(&dir)
        .unwrap()
        .init_ca(identity(), Policy::default())
        .unwrap_err();
    assert!(
        matches!(again, CaError::Store(StoreError::AlreadyCa(_))),
        "{again}"
    );
    let ca = FileStore::new(&dir)
        .unwrap()
        .open_ca(Policy::default())
        .unwrap();
    assert_eq!(ca.identity().cert_der(), cert, "the first CA survives");
    assert_eq!(ca.issued().len(), 1);
    drop(ca);
    let _ = std::fs::remove_dir_all(&dir);
}
