//! Statements signed by the CA key: what a node accepts and what it refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ipsec_ca::wire::Statement;
use ipsec_ca::{CaIdentity, KeyType, Verifier, VerifyError, WireError};
use proptest::prelude::*;
use std::time::{Duration, SystemTime};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ca(key_type: KeyType) -> CaIdentity {
    CaIdentity::create_root(t0(), key_type, "wow CA", Duration::from_secs(365 * 86_400)).unwrap()
}

#[test]
fn a_signed_statement_verifies_for_both_key_types() {
    for key_type in [KeyType::Ed25519, KeyType::EcdsaP256] {
        let ca = ca(key_type);
        let verifier = Verifier::new(ca.cert_der()).unwrap();
        let bytes = ca.sign_statement(b"wow/ca", b"where the CA is").unwrap();
        assert_eq!(
            verifier.verify_statement(b"wow/ca", &bytes),
            Ok(&b"where the CA is"[..])
        );
    }
}

#[test]
fn attack_forged_statement_from_another_key_is_refused() {
    let ca_a = ca(KeyType::Ed25519);
    let impostor = ca(KeyType::Ed25519);
    let verifier = Verifier::new(ca_a.cert_der()).unwrap();
    let forged = impostor.sign_statement(b"wow/ca", b"I am the CA").unwrap();
    assert_eq!(
        verifier.verify_statement(b"wow/ca", &forged),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn attack_tampered_body_or_relabelled_statement_is_refused() {
    let ca = ca(KeyType::EcdsaP256);
    let verifier = Verifier::new(ca.cert_der()).unwrap();
    let bytes = ca.sign_statement(b"wow/crl-manifest", b"number 7").unwrap();
    // Flip one bit of the body: the signature no longer matches.
    let mut tampered = bytes.clone();
    let at = bytes.windows(8).position(|w| w == b"number 7").unwrap();
    tampered[at + 7] ^= 1;
    assert_eq!(
        verifier.verify_statement(b"wow/crl-manifest", &tampered),
        Err(VerifyError::BadSignature)
    );
    // The same statement presented as another kind is refused before any
    // signature check.
    assert_eq!(
        verifier.verify_statement(b"wow/ca", &bytes),
        Err(VerifyError::StatementLabel)
    );
}

#[test]
fn malformed_statements_get_typed_errors() {
    let ca = ca(KeyType::Ed25519);
    let verifier = Verifier::new(ca.cert_der()).unwrap();
    let bytes = ca.sign_statement(b"l", b"body").unwrap();
    assert_eq!(
        verifier.verify_statement(b"l", &bytes[..bytes.len() - 1]),
        Err(VerifyError::Statement(WireError::Truncated))
    );
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(
        verifier.verify_statement(b"l", &long),
        Err(VerifyError::Statement(WireError::Trailing))
    );
    let mut version = bytes;
    version[0] = 9;
    assert_eq!(
        verifier.verify_statement(b"l", &version),
        Err(VerifyError::Statement(WireError::Version(9)))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn statement_round_trip(
        label in proptest::collection::vec(any::<u8>(), 0..40),
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        static CA: std::sync::OnceLock<CaIdentity> = std::sync::OnceLock::new();
        let ca = CA.get_or_init(|| ca(KeyType::Ed25519));
        let bytes = ca.sign_statement(&label, &body).unwrap();
        let parsed = Statement::parse(&bytes).unwrap();
        prop_assert_eq!(parsed.label, &label[..]);
        prop_assert_eq!(parsed.body, &body[..]);
        let verifier = Verifier::new(ca.cert_der()).unwrap();
        prop_assert_eq!(verifier.verify_statement(&label, &bytes), Ok(&body[..]));
    }

    #[test]
    fn statement_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Statement::parse(&bytes);
    }
}
