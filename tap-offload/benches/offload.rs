//! The offloads' cost per byte and per frame.
//!
//! `cargo bench -p tap-offload --bench offload -- --warm-up-time 1 --measurement-time 3`
//!
//! - `segment/tso_64k`: one 64 KiB TCPv4 super-frame (as the guest's
//!   kernel hands it over) cut into 1,384-byte segments with complete
//!   checksums; throughput in bytes.
//! - `coalesce/tcp_segments`: those segments merged back into TSO writes.
//! - `coalesce/udp_answers`: 32 equal 120-byte UDP datagrams of one flow
//!   (a burst of DNS answers) merged into one USO write; throughput in
//!   datagrams.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tap_offload::{Coalescer, Segmenter};

#[path = "../tests/support/mod.rs"]
mod support;

use support::{TCP_ACK, split_all, tcp_frame, tso, udp_frame, with_hdr};

fn offload(c: &mut Criterion) {
    let payload: Vec<u8> = (0..65_000u32).map(|i| i as u8).collect();
    let read = with_hdr(tso(1384, 20), &tcp_frame(1, TCP_ACK, &[], &payload));
    let mut group = c.benchmark_group("segment");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    let mut seg = Segmenter::new();
    let mut scratch = read.clone();
    group.bench_function("tso_64k", |b| {
        b.iter(|| {
            scratch.copy_from_slice(&read);
            let mut n = 0usize;
            seg.split(&mut scratch, |f| n += f.len()).unwrap();
            black_box(n)
        })
    });
    group.finish();

    let segments = split_all(&mut read.clone()).unwrap();
    let mut group = c.benchmark_group("coalesce");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    let mut gro = Coalescer::new();
    group.bench_function("tcp_segments", |b| {
        b.iter(|| {
            let mut written = 0usize;
            for s in &segments {
                if !gro.push(s) {
                    written += gro.finish().len();
                    gro.push(s);
                }
            }
            written += gro.finish().len();
            black_box(written)
        })
    });
    let answers: Vec<Vec<u8>> = (0..32u16).map(|i| udp_frame(40000, i, &[7; 120])).collect();
    group.throughput(Throughput::Elements(answers.len() as u64));
    gro.merge_udp(true);
    group.bench_function("udp_answers", |b| {
        b.iter(|| {
            for a in &answers {
                assert!(gro.push(a));
            }
            black_box(gro.finish().len())
        })
    });
    group.finish();
}

criterion_group!(benches, offload);
criterion_main!(benches);
