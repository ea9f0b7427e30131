//! Seal + open throughput of 1,400-byte packets on one core, measured in
//! thread CPU time rather than wall time, so that other processes on a
//! shared machine do not distort it. Prints one line per suite.
//!
//! `cargo bench -p ipsec-sa --bench cpu_throughput`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use ipsec_sa::wire::HEADER_LEN;
use ipsec_sa::{InboundSa, OutboundSa, SaKeys, Suite};
use nix::time::{ClockId, clock_gettime};

const PACKET: usize = 1_400;
const ROUNDS: usize = 5;
const PACKETS_PER_ROUND: u64 = 200_000;

fn cpu_now() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// Best of several rounds, in bytes of plaintext per CPU second.
fn measure(mut step: impl FnMut()) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let start = cpu_now();
            for _ in 0..PACKETS_PER_ROUND {
                step();
            }
            let cpu = (cpu_now() - start).as_secs_f64();
            (PACKETS_PER_ROUND as f64) * (PACKET as f64) / cpu
        })
        .fold(0.0, f64::max)
}

fn main() {
    let plaintext = vec![0xabu8; PACKET];
    let keys = SaKeys {
        key: [0x42; 32],
        salt: [1, 2, 3, 4],
    };
    for suite in [Suite::Aes256Gcm, Suite::ChaCha20Poly1305] {
        let mut out_sa = OutboundSa::new(0x1000, suite, &keys);
        let mut in_sa = InboundSa::new(0x1000, suite, &keys);
        let mut buf = Vec::with_capacity(PACKET + 64);
        let copy = measure(|| {
            out_sa.seal(black_box(&plaintext), &mut buf).unwrap();
            black_box(in_sa.open(&mut buf).unwrap().len());
        });
        let in_place = measure(|| {
            buf.clear();
            buf.resize(HEADER_LEN, 0);
            buf.extend_from_slice(black_box(&plaintext));
            out_sa.seal_in_place(&mut buf).unwrap();
            black_box(in_sa.open(&mut buf).unwrap().len());
        });
        let seal_only = measure(|| {
            out_sa.seal(black_box(&plaintext), &mut buf).unwrap();
            black_box(buf.len());
        });
        println!(
            "{suite:?}\tseal+open {:.2} GB/s\tseal_in_place+open {:.2} GB/s\tseal {:.2} GB/s\t(1,400-byte packets, one core, thread CPU time, best of {ROUNDS})",
            copy / 1e9,
            in_place / 1e9,
            seal_only / 1e9,
        );
    }
}
