//! Cost of making one lease change durable with the [`FileStore`], on the
//! disk under the target directory: a journal append (one `write` and one
//! `fdatasync`, what a durable `put` costs) beside a full atomic snapshot
//! (temp file, fsync, rename, directory fsync: what every change cost before
//! the journal, and what compaction costs every 256 changes).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use dhcp_virt::wire::HardwareAddr;
use dhcp_virt::{ClientKey, FileStore, Lease, LeaseState, LeaseStore};

/// Leases already in the store (the bench script's pool size).
const LEASES: u8 = 150;

fn lease(n: u8, expires: u64) -> Lease {
    Lease {
        addr: Ipv4Addr::new(10, 96, 2, n),
        client: ClientKey::Hardware(HardwareAddr::ethernet([2, 0, 0, 0, 1, n])),
        expires_unix: expires,
        state: LeaseState::Bound,
        hostname: Some(format!("guest-{n}")),
    }
}

fn file_store(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-file-store");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut store = FileStore::open(dir.join("leases.json")).unwrap();
    for n in 1..=LEASES {
        store.put(&lease(n, 1_000)).unwrap();
    }
    let mut g = c.benchmark_group("file_store");
    g.sample_size(20);
    let mut expires = 2_000;
    g.bench_function("durable_put_journal_append", |b| {
        b.iter(|| {
            expires += 1;
            store.put(&lease(7, expires)).unwrap();
        })
    });
    g.bench_function("atomic_snapshot", |b| b.iter(|| store.compact().unwrap()));
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, file_store);
criterion_main!(benches);
