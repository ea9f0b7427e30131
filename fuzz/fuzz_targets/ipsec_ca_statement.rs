//! Signed statements: parsing and verification never panic, and nothing
//! but the CA's own signature is accepted.
#![no_main]

use std::sync::OnceLock;

use ipsec_ca::wire::Statement;
use ipsec_ca::{CaIdentity, KeyType, Verifier};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

fn verifier() -> &'static (Verifier, Vec<u8>) {
    static V: OnceLock<(Verifier, Vec<u8>)> = OnceLock::new();
    V.get_or_init(|| {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let id = CaIdentity::create_root(
            now,
            KeyType::Ed25519,
            "fuzz",
            Duration::from_secs(3650 * 86_400),
        )
        .unwrap();
        let genuine = id.sign_statement(b"wow/ca", b"genuine").unwrap();
        (Verifier::new(id.cert_der()).unwrap(), genuine)
    })
}

fuzz_target!(|data: &[u8]| {
    let (verifier, genuine) = verifier();
    if let Ok(s) = Statement::parse(data) {
        assert!(s.signed_bytes().len() <= data.len());
    }
    // Anything the fuzzer makes that verifies must be the genuine statement
    // (Ed25519 signatures are not malleable).
    if let Ok(body) = verifier.verify_statement(b"wow/ca", data) {
        assert_eq!(data, &genuine[..]);
        assert_eq!(body, b"genuine");
    }
});
