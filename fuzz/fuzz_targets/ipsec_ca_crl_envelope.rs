//! CRL envelopes (and the CRLs inside) fed to a verifier holding a CRL.
//!
//! A refusal must keep the loaded CRL; an acceptance must raise the number.
#![no_main]

use std::sync::OnceLock;

use ipsec_ca::wire::CrlEnvelope;
use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, Policy, Verifier};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let id = CaIdentity::create_root(
            now(),
            KeyType::Ed25519,
            "fuzz",
            Duration::from_secs(3650 * 86_400),
        )
        .unwrap();
        let mut ca =
            Ca::open_with_insecure_seed(id, Policy::default(), MemStore::default(), [0; 32])
                .unwrap();
        let crl = ca.issue_crl(now()).unwrap();
        let mut v = Verifier::new(ca.identity().cert_der()).unwrap();
        v.handle_crl_envelope(now(), &crl.envelope()).unwrap();
        v
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = CrlEnvelope::parse(data) {
        assert_eq!(env.to_bytes(), data);
    }
    let mut v = verifier().clone();
    let before = v.crl_number();
    match v.handle_crl_envelope(now(), data) {
        Ok(n) => assert!(n > before && v.crl_number() == n),
        Err(_) => assert_eq!(v.crl_number(), before),
    }
    let mut v = verifier().clone();
    if v.set_crl(now(), data).is_err() {
        assert_eq!(v.crl_number(), before);
    }
});
