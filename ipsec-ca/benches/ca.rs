//! Certificates signed per second and verifications per second with a
//! 100,000-entry CRL loaded.
//!
//! `cargo bench -p ipsec-ca --bench ca -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ipsec_ca::{
    Ca, CaIdentity, CaState, FileStore, KeyType, NodeKey, NodeRequest, Policy, Store, StoreError,
    Verifier,
};
use std::time::{Duration, SystemTime};

/// Keeps nothing: measures signing without persistence cost.
#[derive(Default)]
struct NullStore;

impl Store for NullStore {
    fn load(&mut self) -> Result<Option<CaState>, StoreError> {
        Ok(None)
    }
    fn save(&mut self, _state: &CaState) -> Result<(), StoreError> {
        Ok(())
    }
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn identity(key_type: KeyType) -> CaIdentity {
    CaIdentity::create_root(
        now(),
        key_type,
        "bench CA",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap()
}

fn csrs(key_type: KeyType, n: u32) -> Vec<(Ipv4Addr, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(0x0a80_0000 + i);
            let key = NodeKey::generate(key_type).unwrap();
            (ip, key.certificate_request(&NodeRequest::new(ip)).unwrap())
        })
        .collect()
}

fn bench_sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign");
    // Each iteration signs the whole pool with a fresh CA (index growth aside).
    group.throughput(Throughput::Elements(64));
    for key_type in KeyType::ALL {
        let pool = csrs(key_type, 64);
        let pem = identity(key_type);
        let (cert, key) = (pem.cert_pem(), pem.key_pem());
        let mut seed = 0u8;
        group.bench_function(format!("{key_type}_memory"), |b| {
            b.iter_batched(
                || {
                    seed = seed.wrapping_add(1);
                    let id = CaIdentity::from_pem(&cert, &key, None).unwrap();
                    Ca::open_with_insecure_seed(id, Policy::default(), NullStore, [seed; 32])
                        .unwrap()
                },
                |mut ca| {
                    for (ip, csr) in &pool {
                        black_box(ca.sign(now(), csr, *ip, None).unwrap());
                    }
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    // One certificate per iteration, each journaled with fdatasync, on a CA
    // whose index already holds 10,000 certificates (the append is O(1)).
    let mut group = c.benchmark_group("sign_file_store");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    let pool = csrs(KeyType::Ed25519, 64);
    let identity = identity(KeyType::Ed25519);
    let (cert, key) = (identity.cert_pem(), identity.key_pem());
    let mut big =
        Ca::open_with_insecure_seed(identity, Policy::default(), NullStore, [7; 32]).unwrap();
    let filler = NodeKey::generate(KeyType::Ed25519).unwrap();
    for i in 0..10_000u32 {
        let ip = Ipv4Addr::from(0x0b00_0000 + i);
        let csr = filler.certificate_request(&NodeRequest::new(ip)).unwrap();
        big.sign(now(), &csr, ip, None).unwrap();
    }
    let state = CaState {
        issued: big.issued().to_vec(),
        ..CaState::default()
    };
    let dir = RemoveOnDrop(std::env::temp_dir().join(format!(
        "ipsec-ca-bench-{}-{}",
        std::process::id(),
        rand_suffix()
    )));
    let _ = std::fs::remove_dir_all(&dir.0);
    let mut store = FileStore::new(&dir.0).unwrap();
    store.save(&state).unwrap();
    let id = CaIdentity::from_pem(&cert, &key, None).unwrap();
    let mut ca = Ca::open_with_insecure_seed(id, Policy::default(), store, [8; 32]).unwrap();
    let mut n = 0usize;
    group.bench_function("ed25519_fdatasync_index_10k", |b| {
        b.iter(|| {
            // Cycling the pool renews (same key, same IP): also one journal line.
            let (ip, csr) = &pool[n % pool.len()];
            n += 1;
            black_box(ca.sign(now(), csr, *ip, None).unwrap())
        })
    });
    group.finish();
    drop(ca);
    drop(dir);
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn bench_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    for key_type in KeyType::ALL {
        let mut ca =
            Ca::open_with_insecure_seed(identity(key_type), Policy::default(), NullStore, [3; 32])
                .unwrap();
        let ip = Ipv4Addr::new(10, 128, 0, 1);
        let node = NodeKey::generate(key_type).unwrap();
        let csr = node.certificate_request(&NodeRequest::new(ip)).unwrap();
        let issued = ca.sign(now(), &csr, ip, None).unwrap();
        let crl = ipsec_ca_bench_crl(&mut ca, 100_000);
        let mut verifier = Verifier::new(ca.identity().cert_der()).unwrap();
        verifier.handle_crl_envelope(now(), &crl).unwrap();
        assert_eq!(verifier.revoked_count(), 100_000);
        let bare = Verifier::new(ca.identity().cert_der()).unwrap();
        group.bench_function(format!("{key_type}_no_crl"), |b| {
            b.iter(|| black_box(bare.verify(now(), &issued.certificate, ip).unwrap()))
        });
        group.bench_function(format!("{key_type}_crl_100k"), |b| {
            b.iter(|| black_box(verifier.verify(now(), &issued.certificate, ip).unwrap()))
        });
        if key_type == KeyType::Ed25519 {
            group.bench_function("load_crl_100k", |b| {
                b.iter(|| {
                    let mut v = Verifier::new(ca.identity().cert_der()).unwrap();
                    black_box(v.handle_crl_envelope(now(), &crl).unwrap())
                })
            });
        }
    }
    group.finish();
}

/// A 100,000-entry CRL (random serials), signed with the CA's key through
/// rcgen directly: issuing and revoking 100,000 certificates is not the point.
fn ipsec_ca_bench_crl<S: Store>(ca: &mut Ca<S>, n: usize) -> Vec<u8> {
    use rcgen::{
        CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams,
        SerialNumber,
    };
    let identity = ca.identity();
    let issuer = Issuer::from_ca_cert_pem(
        &identity.cert_pem(),
        KeyPair::from_pem(&identity.key_pem()).unwrap(),
    )
    .unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let revoked_certs = (0..n)
        .map(|_| {
            let mut serial = [0u8; 16];
            for chunk in serial.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_be_bytes());
            }
            serial[0] = (serial[0] & 0x7f) | 0x40;
            RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: now().into(),
                reason_code: None,
                invalidity_date: None,
            }
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update: now().into(),
        next_update: (now() + Duration::from_secs(7 * 86_400)).into(),
        crl_number: SerialNumber::from_slice(&[1]),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let der = params.signed_by(&issuer).unwrap().der().to_vec();
    ipsec_ca::wire::CrlEnvelope {
        crl_number: 1,
        crl: &der,
    }
    .to_bytes()
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_sign, bench_verify
}
criterion_main!(benches);
