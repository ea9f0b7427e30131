//! CSR input: the CSR parser, and the CA's signing policy on arbitrary CSRs.
//!
//! The first input byte picks the claimed source IP's last octet; the rest is
//! the DER CSR. A CSR that parses and passes the policy must yield a
//! certificate the verifier accepts for that IP, carrying only groups the
//! policy grants that address (10.0.0.5: `admin`, `web`), narrowed to those
//! the CSR asks for if it asks.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use ipsec_ca::{Ca, CaIdentity, Groups, KeyType, MemStore, Policy, Verifier, parse_csr};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ca_pem() -> &'static (String, String) {
    static PEM: OnceLock<(String, String)> = OnceLock::new();
    PEM.get_or_init(|| {
        let id = CaIdentity::create_root(
            now(),
            KeyType::Ed25519,
            "fuzz",
            Duration::from_secs(3650 * 86_400),
        )
        .unwrap();
        (id.cert_pem(), id.key_pem())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&octet, csr)) = data.split_first() else {
        return;
    };
    let parsed = parse_csr(csr);
    let (cert, key) = ca_pem();
    let identity = CaIdentity::from_pem(cert, key, None).unwrap();
    let granted = Groups::parse_list("admin,web").unwrap();
    let mut policy = Policy::default();
    policy
        .groups
        .insert(Ipv4Addr::new(10, 0, 0, 5), granted.clone());
    let mut ca =
        Ca::open_with_insecure_seed(identity, policy, MemStore::default(), [0; 32]).unwrap();
    let source = Ipv4Addr::new(10, 0, 0, octet);
    match ca.sign(now(), csr, source, None) {
        Ok(issued) => {
            let info = parsed.unwrap();
            assert_eq!(info.virtual_ip, source);
            let verifier = Verifier::new(ca.identity().cert_der()).unwrap();
            let peer = verifier.verify(now(), &issued.certificate, source).unwrap();
            assert_eq!(peer.public_key, info.public_key_raw);
            let allowed = if octet == 5 { granted } else { Groups::empty() };
            let expected = if info.requested_groups.is_empty() {
                allowed
            } else {
                allowed.intersection(&info.requested_groups)
            };
            assert_eq!(peer.groups, expected);
            assert_eq!(ca.issued().len(), 1);
        }
        Err(_) => assert!(ca.issued().is_empty()),
    }
});
