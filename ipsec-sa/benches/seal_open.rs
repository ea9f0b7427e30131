//! Seal + open throughput of 1,400-byte packets on one core.
//!
//! `cargo bench -p ipsec-sa --bench seal_open -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipsec_sa::{InboundSa, OutboundSa, SaKeys, Suite};

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

criterion_group!(benches, seal_open);
criterion_main!(benches);
