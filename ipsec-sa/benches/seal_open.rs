//! Seal + open throughput of 1,400-byte packets on one core.
//!
//! `cargo bench -p ipsec-sa --bench seal_open -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipsec_ca::{
    Ca, CaIdentity, KeyType, MemStore, NodeKey, NodeRequest, Policy as CaPolicy, Verifier,
};
use ipsec_sa::wire::HEADER_LEN;
use ipsec_sa::{
    Config, Endpoint, InboundSa, LocalIdentity, OpenOutput, OutboundSa, Policy, SaKeys, SealOutput,
    Suite,
};

const PACKET: usize = 1_400;

fn sa_pair(suite: Suite) -> (OutboundSa, InboundSa) {
    let keys = SaKeys {
        key: [0x42; 32],
        salt: [1, 2, 3, 4],
    };
    (
        OutboundSa::new(0x1000, suite, &keys),
        InboundSa::new(0x1000, suite, &keys),
    )
}

fn seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("sa_1400B");
    group.throughput(Throughput::Bytes(PACKET as u64));
    let plaintext = vec![0xabu8; PACKET];
    for suite in Suite::ALL {
        let name = match suite {
            Suite::Aes256Gcm => "aes256gcm",
            Suite::ChaCha20Poly1305 => "chacha20poly1305",
        };
        let (mut out_sa, mut in_sa) = sa_pair(suite);
        let mut buf = Vec::with_capacity(PACKET + 64);
        group.bench_function(format!("seal+open/{name}"), |b| {
            b.iter(|| {
                out_sa.seal(black_box(&plaintext), &mut buf).unwrap();
                let opened = in_sa.open(&mut buf).unwrap();
                black_box(opened.len());
            })
        });
        let (mut out_sa, mut in_sa) = sa_pair(suite);
        let mut buf = Vec::with_capacity(PACKET + 64);
        group.bench_function(format!("seal_in_place+open/{name}"), |b| {
            b.iter(|| {
                // As a node would: the plaintext read after 12 bytes of headroom.
                buf.clear();
                buf.resize(HEADER_LEN, 0);
                buf.extend_from_slice(black_box(&plaintext));
                out_sa.seal_in_place(&mut buf).unwrap();
                black_box(in_sa.open(&mut buf).unwrap().len());
            })
        });
        let (mut out_sa, mut in_sa) = sa_pair(suite);
        group.bench_function(format!("open/{name}"), |b| {
            b.iter_batched_ref(
                || {
                    let mut sealed = Vec::with_capacity(PACKET + 64);
                    out_sa.seal(&plaintext, &mut sealed).unwrap();
                    sealed
                },
                |sealed| black_box(in_sa.open(sealed).unwrap().len()),
                criterion::BatchSize::SmallInput,
            )
        });
        let (mut out_sa, _) = sa_pair(suite);
        group.bench_function(format!("seal/{name}"), |b| {
            b.iter(|| {
                out_sa.seal(black_box(&plaintext), &mut buf).unwrap();
                black_box(buf.len());
            })
        });
    }
    group.finish();
}

/// Two endpoints with an established SA pair (ipsec-ca certificates).
fn endpoint_pair() -> (Endpoint<Verifier>, Endpoint<Verifier>, IpAddr, IpAddr) {
    let (mut make, a_ip, b_ip) = endpoint_maker();
    let (mut a, mut b) = (make(0, 1), make(1, 2));
    handshake(&mut a, &mut b, a_ip, b_ip);
    (a, b, a_ip, b_ip)
}

/// Runs a key exchange from `a` to `b`.
fn handshake(a: &mut Endpoint<Verifier>, b: &mut Endpoint<Verifier>, a_ip: IpAddr, b_ip: IpAddr) {
    let now = Instant::now();
    let mut out = Vec::new();
    a.seal(now, b_ip, b"x", &mut out).unwrap();
    for _ in 0..4 {
        while let Some(mut t) = a.poll_transmit() {
            let _ = b.open(now, a_ip, &mut t.payload);
        }
        while let Some(mut t) = b.poll_transmit() {
            let _ = a.open(now, b_ip, &mut t.payload);
        }
    }
    assert!(a.has_sa(b_ip) && b.has_sa(a_ip));
}

/// Certificates for two hosts, and a function making endpoint 0 or 1.
#[allow(clippy::type_complexity)]
fn endpoint_maker() -> (
    Box<dyn FnMut(usize, u8) -> Endpoint<Verifier>>,
    IpAddr,
    IpAddr,
) {
    let wall = SystemTime::now();
    let identity = CaIdentity::create_root(
        wall,
        KeyType::Ed25519,
        "bench CA",
        std::time::Duration::from_secs(30 * 86_400),
    )
    .unwrap();
    let mut ca =
        Ca::open_with_insecure_seed(identity, CaPolicy::default(), MemStore::default(), [1; 32])
            .unwrap();
    let start = Instant::now();
    let ips = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
    let nodes: Vec<(Vec<u8>, NodeKey)> = ips
        .iter()
        .map(|&ip| {
            let key = NodeKey::generate(KeyType::Ed25519).unwrap();
            let csr = key.certificate_request(&NodeRequest::new(ip)).unwrap();
            (ca.sign(wall, &csr, ip, None).unwrap().certificate, key)
        })
        .collect();
    let ca_der = ca.identity().cert_der().to_vec();
    let make = move |index: usize, seed: u8| {
        let (cert, key) = &nodes[index];
        let ip = ips[index];
        let config = Config {
            local_ip: IpAddr::V4(ip),
            policy: Policy::protect("10.0.0.0/8".parse().unwrap()),
            // No rekey during the measurement.
            rekey_after_packets: u64::MAX / 2,
            reject_after_packets: u64::MAX / 2,
            ..Config::default()
        };
        let identity = LocalIdentity::from_pkcs8(cert, key.pkcs8_der()).unwrap();
        let verifier = Verifier::new(&ca_der).unwrap();
        Endpoint::new_with_insecure_seed(start, wall, config, identity, verifier, [seed; 32])
    };
    (Box::new(make), IpAddr::V4(ips[0]), IpAddr::V4(ips[1]))
}

/// A complete key exchange (both sides' work, Ed25519 certificates).
fn key_exchange(c: &mut Criterion) {
    let (mut make, a_ip, b_ip) = endpoint_maker();
    c.bench_function("handshake/ed25519", |bench| {
        bench.iter_batched(
            || (make(0, 1), make(1, 2)),
            |(mut a, mut b)| handshake(&mut a, &mut b, a_ip, b_ip),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn endpoint_seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("endpoint_1400B");
    group.throughput(Throughput::Bytes(PACKET as u64));
    let (mut a, mut b, a_ip, b_ip) = endpoint_pair();
    let plaintext = vec![0xabu8; PACKET];
    let mut buf = Vec::with_capacity(PACKET + 64);
    let now = Instant::now();
    group.bench_function("seal+open/aes256gcm", |bench| {
        bench.iter(|| {
            let sealed = a.seal(now, b_ip, black_box(&plaintext), &mut buf).unwrap();
            assert_eq!(sealed, SealOutput::Sealed);
            match b.open(now, a_ip, &mut buf).unwrap() {
                OpenOutput::Plaintext(p) => black_box(p.len()),
                other => panic!("{other:?}"),
            };
        })
    });
    group.finish();
}

criterion_group!(benches, seal_open, endpoint_seal_open, key_exchange);
criterion_main!(benches);
