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

fn core(now: Instant) -> Core<MemoryStore> {
    Core::new_with_insecure_seed(
        now,
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        demo::settings(),
        demo::overlay_config("127.0.0.1:10001".parse().unwrap()),
        Address::from_key(b"ca-store"),
        MemoryStore::new(),
        1,
    )
    .unwrap()
}

fn identity(wall: SystemTime) -> CaIdentity {
    CaIdentity::create_root(
        wall,
        KeyType::Ed25519,
        "memory CA",
        std::time::Duration::from_secs(30 * 86_400),
    )
    .unwrap()
}

#[test]
fn a_core_serves_a_ca_from_the_store_it_is_given() {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut core = core(now);
    let mut ca = Ca::open_with_insecure_seed(
        identity(wall),
        Policy::default(),
        MemStore::default(),
        [1; 32],
    )
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

/// With a write-behind store, a new CRL is neither served nor published
/// before its number is durable: a crash could otherwise make the CA sign
/// another CRL under the same number.
#[test]
fn a_new_crl_waits_for_its_number_to_be_durable() {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut core = core(now);
    let (store, mut writer) = ipsec_ca::store::write_behind(MemStore::default()).unwrap();
    let queue = store.queue();
    let ca =
        Ca::open_with_insecure_seed(identity(wall), Policy::default(), store, [2; 32]).unwrap();
    core.set_ca(now, ca);
    core.set_ca_queue(queue.clone());
    assert_eq!(core.refresh_crl(now, wall), Some(1));
    assert!(!core.publish_crl(now), "published before durable");
    // Durable in the store, but the core not told yet.
    queue.mark_durable(writer.write(queue.take()).unwrap());
    assert!(!core.publish_crl(now));
    core.handle_ca_durable(now);
    assert!(core.publish_crl(now), "not published once durable");
    assert_eq!(writer.state().crl_number, 1);
}
