//! A core serving a CA keeps the CA's state in the store its caller chose
//! (here memory; the node gives it a `FileStore`): wow-core itself touches
//! no file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Instant, SystemTime};

use dhcp_virt::MemoryStore;
use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, Policy};
use overlay_core::Address;
use wow_core::core::Core;
use wow_core::demo;

#[test]
fn a_core_serves_a_ca_from_the_store_it_is_given() {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut core: Core<MemoryStore> = Core::new_with_insecure_seed(
        now,
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        demo::settings(),
        demo::overlay_config("127.0.0.1:10001".parse().unwrap()),
        Address::from_key(b"ca-store"),
        MemoryStore::new(),
        1,
    )
    .unwrap();
    let identity = CaIdentity::create_root(
        wall,
        KeyType::Ed25519,
        "memory CA",
        std::time::Duration::from_secs(30 * 86_400),
    )
    .unwrap();
    let mut ca =
        Ca::open_with_insecure_seed(identity, Policy::default(), MemStore::default(), [1; 32])
            .unwrap();
    // The store refuses the next change: the core's first CRL must fail
    // through it, and the CRL number stay where it was.
    ca.store_mut().fail_next_save = true;
    core.set_ca(now, ca);
    assert_eq!(core.refresh_crl(now, wall), None);
    assert_eq!(core.with_ca(now, |ca| ca.crl_number()), Some(0));
    // The store takes the next one.
    assert_eq!(core.refresh_crl(now, wall), Some(1));
    assert_eq!(core.with_ca(now, |ca| ca.crl_number()), Some(1));
}
