//! Interoperability with OpenSSL (a peer nobody here wrote): `openssl verify
//! -crl_check` accepts issued certificates and refuses revoked ones, and
//! `openssl x509/crl/req -text` parse everything we produce. Skips with a
//! printed reason when `openssl` is not installed (fails instead under
//! `WOW_REQUIRE_ALL=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use ipsec_ca::key::to_pem;
use ipsec_ca::{
    Ca, CaIdentity, FileStore, KeyType, NodeKey, NodeRequest, Policy, RevocationReason, Verifier,
    VerifyError,
};
use std::time::{Duration, SystemTime};
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};

fn have_openssl(test: &str) -> bool {
    if wow_test_hosts::tool_available("openssl") {
        true
    } else {
        wow_test_hosts::skip(test, "`openssl` is not installed");
        false
    }
}

fn now() -> SystemTime {
    // OpenSSL checks validity against the real clock.
    SystemTime::now()
}

fn tmpdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ipsec-ca-{tag}-{}-{}",
        std::process::id(),
        wow_test_hosts::unique_name("t")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn lifecycle(key_type: KeyType, node_key_type: KeyType) {
    let dir = tmpdir(&format!("ossl-{key_type}-{node_key_type}"));
    let store = FileStore::new(dir.join("ca")).unwrap();
    let identity = CaIdentity::create_root(
        now(),
        key_type,
        "wow test CA",
        Duration::from_secs(30 * 86_400),
    )
    .unwrap();
    store.save_identity(&identity).unwrap();
    let mut ca = Ca::open_with_insecure_seed(identity, Policy::default(), store, [9; 32]).unwrap();
    let ca_pem = dir.join("ca").join("ca.pem");

    let ip = Ipv4Addr::new(10, 128, 3, 4);
    let node = NodeKey::generate(node_key_type).unwrap();
    let mut request = NodeRequest::new(ip);
    request.common_name = Some("node-3-4".into());
    let csr = node.certificate_request(&request).unwrap();
    let csr_pem = write(&dir, "node.csr", &to_pem("CERTIFICATE REQUEST", &csr));
    let (ok, text) = openssl(&["req", "-verify", "-noout", "-text", "-in", s(&csr_pem)]);
    assert!(ok, "{text}");
    assert!(text.contains("IP Address:10.128.3.4"), "{text}");
    assert!(text.contains("URI:brunet:node:"), "{text}");

    let issued = ca.sign(now(), &csr, ip, None).unwrap();
    let cert_pem = write(
        &dir,
        "node.pem",
        &to_pem("CERTIFICATE", &issued.certificate),
    );
    let crl = ca.issue_crl(now()).unwrap();
    let crl_pem = write(&dir, "crl.pem", &to_pem("X509 CRL", &crl.der));

    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", s(&cert_pem)]);
    assert!(ok, "{text}");
    assert!(text.contains("IP Address:10.128.3.4"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(
        text.contains("CN = node-3-4") || text.contains("CN=node-3-4"),
        "{text}"
    );
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", s(&ca_pem)]);
    assert!(ok && text.contains("CA:TRUE"), "{text}");

    let verify = |crl: &Path| {
        openssl(&[
            "verify",
            "-CAfile",
            s(&ca_pem),
            "-crl_check",
            "-CRLfile",
            s(crl),
            s(&cert_pem),
        ])
    };
    let (ok, text) = verify(&crl_pem);
    assert!(ok, "openssl refused a fresh certificate: {text}");

    ca.revoke(now(), &issued.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let crl2 = ca.issue_crl(now()).unwrap();
    assert_eq!(crl2.number, crl.number + 1);
    let crl2_pem = write(&dir, "crl2.pem", &to_pem("X509 CRL", &crl2.der));
    let (ok, text) = verify(&crl2_pem);
    assert!(!ok, "openssl accepted a revoked certificate: {text}");
    assert!(text.contains("revoked"), "{text}");

    let (ok, text) = openssl(&["crl", "-noout", "-text", "-in", s(&crl2_pem)]);
    assert!(ok, "{text}");
    assert!(text.contains("CRL Number"), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    let serial_upper: String = ipsec_ca::state::hex_encode(&issued.serial).to_uppercase();
    assert!(text.contains(&serial_upper), "{text}");

    // x509-parser reads back what rcgen wrote.
    let (_, cert) = X509Certificate::from_der(&issued.certificate).unwrap();
    assert_eq!(cert.raw_serial(), issued.serial.as_slice());
    assert_eq!(cert.public_key().raw, node.spki_der().as_slice());
    let (_, parsed_crl) = CertificateRevocationList::from_der(&crl2.der).unwrap();
    let serials: Vec<&[u8]> = parsed_crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial())
        .collect();
    assert_eq!(serials, vec![issued.serial.as_slice()]);
    // And so does our verifier, consistently with openssl.
    let mut verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    verifier.set_crl(now(), &crl.der).unwrap();
    let peer = verifier.verify(now(), &issued.certificate, ip).unwrap();
    assert_eq!(peer.key_type, node_key_type);
    assert_eq!(peer.public_key, node.public_key_raw());
    verifier.set_crl(now(), &crl2.der).unwrap();
    assert_eq!(
        verifier.verify(now(), &issued.certificate, ip),
        Err(VerifyError::Revoked)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn openssl_ed25519_ca_ed25519_node() {
    if have_openssl("openssl_ed25519_ca_ed25519_node") {
        lifecycle(KeyType::Ed25519, KeyType::Ed25519);
    }
}

#[test]
fn openssl_p256_ca_p256_node() {
    if have_openssl("openssl_p256_ca_p256_node") {
        lifecycle(KeyType::EcdsaP256, KeyType::EcdsaP256);
    }
}

#[test]
fn openssl_p256_ca_ed25519_node() {
    if have_openssl("openssl_p256_ca_ed25519_node") {
        lifecycle(KeyType::EcdsaP256, KeyType::Ed25519);
    }
}

/// Reloading the CA from its PEM files (as the CLI does on every call) must
/// issue certificates that still chain: rcgen re-encodes the issuer name.
#[test]
fn openssl_reloaded_ca_and_intermediate_chain() {
    if !have_openssl("openssl_reloaded_ca_and_intermediate_chain") {
        return;
    }
    let dir = tmpdir("ossl-int");
    let root_store = FileStore::new(dir.join("root")).unwrap();
    let root = CaIdentity::create_root(
        now(),
        KeyType::EcdsaP256,
        "wow root",
        Duration::from_secs(60 * 86_400),
    )
    .unwrap();
    root_store.save_identity(&root).unwrap();
    let root = root_store.load_identity().unwrap();
    let int_store = FileStore::new(dir.join("int")).unwrap();
    let int = CaIdentity::create_intermediate(
        now(),
        &root,
        KeyType::Ed25519,
        "wow site",
        Duration::from_secs(30 * 86_400),
    )
    .unwrap();
    int_store.save_identity(&int).unwrap();
    let int = int_store.load_identity().unwrap();
    assert_eq!(int.chain().len(), 1);
    let mut ca = Ca::open_with_insecure_seed(int, Policy::default(), int_store, [4; 32]).unwrap();

    let ip = Ipv4Addr::new(10, 128, 9, 9);
    let node = NodeKey::generate(KeyType::EcdsaP256).unwrap();
    let csr = node.certificate_request(&NodeRequest::new(ip)).unwrap();
    let issued = ca.sign(now(), &csr, ip, None).unwrap();
    let crl = ca.issue_crl(now()).unwrap();
    let cert_pem = write(
        &dir,
        "node.pem",
        &to_pem("CERTIFICATE", &issued.certificate),
    );
    let crl_pem = write(&dir, "crl.pem", &to_pem("X509 CRL", &crl.der));
    let root_pem = dir.join("root").join("ca.pem");
    let int_pem = dir.join("int").join("ca.pem");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        s(&root_pem),
        "-untrusted",
        s(&int_pem),
        "-crl_check",
        "-CRLfile",
        s(&crl_pem),
        s(&cert_pem),
    ]);
    assert!(ok, "{text}");

    let mut verifier = Verifier::new(ca.identity().root_der()).unwrap();
    assert_eq!(
        verifier.verify(now(), &issued.certificate, ip),
        Err(VerifyError::UnknownIssuer)
    );
    verifier
        .add_intermediate(now(), ca.identity().cert_der())
        .unwrap();
    verifier.set_crl(now(), &crl.der).unwrap();
    verifier.verify(now(), &issued.certificate, ip).unwrap();

    ca.revoke(now(), &issued.serial, RevocationReason::Unspecified)
        .unwrap();
    let crl = ca.issue_crl(now()).unwrap();
    let crl_pem = write(&dir, "crl2.pem", &to_pem("X509 CRL", &crl.der));
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        s(&root_pem),
        "-untrusted",
        s(&int_pem),
        "-crl_check",
        "-CRLfile",
        s(&crl_pem),
        s(&cert_pem),
    ]);
    assert!(!ok && text.contains("revoked"), "{text}");
    verifier.set_crl(now(), &crl.der).unwrap();
    assert_eq!(
        verifier.verify(now(), &issued.certificate, ip),
        Err(VerifyError::Revoked)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// OpenSSL-made certificates for the same IP are not trusted by our verifier,
/// and an OpenSSL-made CSR (ECDSA P-256 with an IP SAN) is accepted by our CA.
#[test]
fn openssl_made_csr_is_signed_and_foreign_cert_refused() {
    if !have_openssl("openssl_made_csr_is_signed_and_foreign_cert_refused") {
        return;
    }
    let dir = tmpdir("ossl-csr");
    let key = dir.join("k.pem");
    let csr = dir.join("r.csr");
    let (ok, text) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        s(&key),
        "-out",
        s(&csr),
        "-subj",
        "/CN=foreign",
        "-addext",
        "subjectAltName=IP:10.128.7.7,URI:brunet:node:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ]);
    assert!(ok, "{text}");
    let der = ipsec_ca::key::from_pem(
        "CERTIFICATE REQUEST",
        &std::fs::read_to_string(&csr).unwrap(),
    )
    .unwrap();
    let identity = CaIdentity::create_root(
        now(),
        KeyType::Ed25519,
        "wow CA",
        Duration::from_secs(30 * 86_400),
    )
    .unwrap();
    let mut ca = Ca::open_with_insecure_seed(
        identity,
        Policy::default(),
        ipsec_ca::MemStore::default(),
        [1; 32],
    )
    .unwrap();
    let ip = Ipv4Addr::new(10, 128, 7, 7);
    let issued = ca.sign(now(), &der, ip, None).unwrap();
    let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
    let peer = verifier.verify(now(), &issued.certificate, ip).unwrap();
    assert_eq!(peer.key_type, KeyType::EcdsaP256);
    assert_eq!(peer.common_name.as_deref(), Some("foreign"));

    // A self-signed certificate from openssl with the right IP is refused.
    let self_signed = dir.join("self.pem");
    let (ok, text) = openssl(&[
        "req",
        "-x509",
        "-key",
        s(&key),
        "-in",
        s(&csr),
        "-out",
        s(&self_signed),
        "-days",
        "1",
        "-copy_extensions",
        "copy",
    ]);
    assert!(ok, "{text}");
    let der = ipsec_ca::key::from_pem(
        "CERTIFICATE",
        &std::fs::read_to_string(&self_signed).unwrap(),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(now(), &der, ip),
        Err(VerifyError::UnknownIssuer)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
