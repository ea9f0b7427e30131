//! The record policy for releases: `wow/release/<channel>` holds only
//! manifests signed by a configured release key (for that channel);
//! chunks are any member's, checked by readers along the hash chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use overlay_core::record::{self, PolicyStage};
use overlay_core::wire::Record;
use overlay_core::{KeySigner, RecordPolicy};
use wow_core::records::NodePolicy;
use wow_core::update::{Publication, ReleaseKey};

fn record(key: &[u8], value: &[u8]) -> Record {
    let mut signer = KeySigner::ed25519_from_seed(&[7; 32], 1);
    record::sign(&mut signer, key, value, 600, &[]).unwrap()
}

fn policy(with_ca: bool) -> NodePolicy {
    let settings = wow_core::demo::settings();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ca = with_ca.then(|| {
        let ca = ipsec_ca::CaIdentity::create_root(
            wall,
            ipsec_ca::KeyType::Ed25519,
            "CA",
            Duration::from_secs(86_400),
        )
        .unwrap();
        ipsec_ca::Verifier::new(ca.cert_der()).unwrap()
    });
    NodePolicy::new(
        Instant::now(),
        wall,
        settings.network,
        settings.gateway_addr,
        &settings.domain,
        ca,
    )
}

fn accepts(policy: &mut NodePolicy, key: &[u8], value: &[u8]) -> bool {
    policy.accept(Instant::now(), PolicyStage::Store, &record(key, value))
}

#[test]
fn attack_release_manifest_of_unknown_key_not_stored() {
    let release = ReleaseKey::generate().unwrap();
    let intruder = ReleaseKey::generate().unwrap();
    let bin = vec![1u8; 3000];
    let v = "2.0.0".parse().unwrap();
    let good = Publication::new(&release, "stable", v, &bin, None).unwrap();
    let bad = Publication::new(&intruder, "stable", v, &bin, None).unwrap();
    for with_ca in [false, true] {
        let mut p = policy(with_ca).with_release_keys(vec![release.public_key()]);
        assert!(accepts(&mut p, b"wow/release/stable", &good.signed));
        assert!(!accepts(&mut p, b"wow/release/stable", &bad.signed));
        // The real manifest under another channel's key.
        assert!(!accepts(&mut p, b"wow/release/testing", &good.signed));
        assert!(!accepts(&mut p, b"wow/release/stable", b"junk"));
        // Chunks: any member's; readers check them.
        assert!(accepts(
            &mut p,
            &[&b"wow/release-chunk/"[..], &good.manifest.chunk_suffix(0)].concat(),
            good.chunk(0).unwrap()
        ));
    }
    // Without keys: an open network stores anything, a CA network nothing
    // from an uncertified writer (examples/wow-node/tests/attack_records.rs
    // has the certified writer's case).
    assert!(accepts(
        &mut policy(false),
        b"wow/release/stable",
        &bad.signed
    ));
    assert!(!accepts(
        &mut policy(true),
        b"wow/release/stable",
        &good.signed
    ));
}
