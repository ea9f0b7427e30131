//! Two hosts in network namespaces exchange protected packets over UDP
//! with the `sa-udp` example, certificates from ipsec-ca; then the same with
//! the receiver holding a CRL that revokes the sender.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, NodeKey, NodeRequest, Policy, RevocationReason};
use wow_test_hosts::{Netns, TempDir, example_bin, require};

fn write_pem(path: &Path, tag: &str, der: &[u8]) {
    fs::write(path, ipsec_ca::key::to_pem(tag, der)).unwrap();
}

fn summary(log: &str, key: &str) -> u64 {
    log.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {key} in log:\n{log}"))
}

#[test]
fn protected_udp_between_namespaces() {
    if !require("ipsec_sa_protected_udp", &[]) {
        return;
    }
    let dir = TempDir::new("isa").unwrap();
    let now = std::time::SystemTime::now();
    let identity = CaIdentity::create_root(
        now,
        KeyType::Ed25519,
        "wow CA",
        std::time::Duration::from_secs(30 * 86_400),
    )
    .unwrap();
    let mut ca =
        Ca::open_with_insecure_seed(identity, Policy::default(), MemStore::default(), [5; 32])
            .unwrap();
    write_pem(
        &dir.path().join("ca.pem"),
        "CERTIFICATE",
        ca.identity().cert_der(),
    );
    let mut serial_a = Vec::new();
    for (name, ip, key_type) in [
        ("a", Ipv4Addr::new(10, 1, 0, 1), KeyType::Ed25519),
        ("b", Ipv4Addr::new(10, 1, 0, 2), KeyType::EcdsaP256),
    ] {
        let key = NodeKey::generate(key_type).unwrap();
        let csr = key.certificate_request(&NodeRequest::new(ip)).unwrap();
        let issued = ca.sign(now, &csr, ip, None).unwrap();
        if name == "a" {
            serial_a = issued.serial.clone();
        }
        write_pem(
            &dir.path().join(format!("{name}.pem")),
            "CERTIFICATE",
            &issued.certificate,
        );
        fs::write(dir.path().join(format!("{name}.key")), key.to_pem()).unwrap();
    }

    let ns_a = Netns::new("sa").unwrap();
    let ns_b = Netns::new("sb").unwrap();
    ns_a.veth_to(&ns_b, "va", "vb").unwrap();
    ns_a.addr_add("va", "192.0.2.1/24").unwrap();
    ns_b.addr_add("vb", "192.0.2.2/24").unwrap();
    let bin = example_bin("sa-udp");
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let args = |me: &str, ip: &str, bind: &str, peer: &str, extra: &[&str]| {
        let mut v: Vec<String> = vec![
            "--ip".into(),
            ip.into(),
            "--cert".into(),
            path(&format!("{me}.pem")),
            "--key".into(),
            path(&format!("{me}.key")),
            "--ca".into(),
            path("ca.pem"),
            "--bind".into(),
            bind.into(),
            "--peer".into(),
            peer.into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // B waits for 300 packets; A sends them.
    let b_args = args(
        "b",
        "10.1.0.2",
        "192.0.2.2:4500",
        "10.1.0.1=192.0.2.1:4500",
        &["--expect", "300", "--duration", "20"],
    );
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut b = ns_b.spawn(&bin, &b_refs).unwrap();
    let a_args = args(
        "a",
        "10.1.0.1",
        "192.0.2.1:4500",
        "10.1.0.2=192.0.2.2:4500",
        &[
            "--send",
            "300",
            "--interval-us",
            "1000",
            "--expect",
            "0",
            "--duration",
            "10",
        ],
    );
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    std::thread::sleep(Duration::from_millis(200));
    let a_out = ns_a.run(&bin, &a_refs).unwrap();
    let status = b.wait_timeout(Duration::from_secs(25)).unwrap();
    let b_log = b.log();
    assert!(
        status.is_some_and(|s| s.success()),
        "B failed:\n{b_log}\nA:\n{a_out:?}"
    );
    assert_eq!(summary(&b_log, "received="), 300, "{b_log}");
    assert_eq!(summary(&b_log, "rejected="), 0, "{b_log}");
    assert!(b_log.contains("SaEstablished"), "{b_log}");

    // B now holds a CRL revoking A: the handshake is refused, nothing arrives.
    ca.revoke(now, &serial_a, RevocationReason::KeyCompromise)
        .unwrap();
    let crl = ca.issue_crl(now).unwrap();
    write_pem(&dir.path().join("crl.pem"), "X509 CRL", &crl.der);
    let crl_path = path("crl.pem");
    let b_args = args(
        "b",
        "10.1.0.2",
        "192.0.2.2:4500",
        "10.1.0.1=192.0.2.1:4500",
        &["--expect", "1", "--duration", "3", "--crl", &crl_path],
    );
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut b = ns_b.spawn(&bin, &b_refs).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let a_args = args(
        "a",
        "10.1.0.1",
        "192.0.2.1:4500",
        "10.1.0.2=192.0.2.2:4500",
        &["--send", "10", "--duration", "2"],
    );
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let _ = ns_a.run(&bin, &a_refs).unwrap();
    let status = b.wait_timeout(Duration::from_secs(10)).unwrap();
    let b_log = b.log();
    assert!(status.is_some_and(|s| !s.success()), "{b_log}");
    assert_eq!(summary(&b_log, "received="), 0, "{b_log}");
    assert!(b_log.contains("certificate revoked"), "{b_log}");
}
