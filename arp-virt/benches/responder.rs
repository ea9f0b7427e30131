//! Frames handled per second on one core.
//!
//! `cargo bench -p arp-virt --bench responder`
//!
//! Each iteration handles one who-has frame (parse, classify, emit the reply
//! into its fixed array); the figure criterion prints as `thrpt` is frames per
//! second. The mixes cycle through several targets so the branch predictor
//! does not see one frame forever.
//!
//! `reply` and `mixed` measure wall-clock time, which on a loaded machine
//! includes time spent waiting for a core; `reply_on_cpu` measures the same
//! work in the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), the
//! figure for "frames per second on one core".
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use arp_virt::wire::{Operation, Repr};
use arp_virt::{Config, EthernetAddress, NoOtherHosts, Outcome, Responder};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nix::time::{ClockId, clock_gettime};

const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

fn request(sender: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    Repr {
        destination: EthernetAddress::BROADCAST,
        source: GUEST_MAC,
        operation: Operation::Request,
        sender_hardware_addr: GUEST_MAC,
        sender_protocol_addr: sender,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .to_bytes()
}

/// Time this thread has spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`).
fn on_cpu() -> Duration {
    let now = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    Duration::from(now)
}

fn new_responder() -> Responder {
    let mut config = Config::new(
        "10.128.0.0/9".parse().unwrap(),
        EthernetAddress([0x02, 0x77, 0x6f, 0x77, 0, 1]),
    );
    config.guest_addr = Some(Ipv4Addr::new(10, 128, 0, 2));
    let mut responder = Responder::new(config).unwrap();
    responder.poll_transmit().unwrap();
    responder
}

fn bench(c: &mut Criterion) {
    let guest = Ipv4Addr::new(10, 128, 0, 2);
    let mut group = c.benchmark_group("arp_virt");
    group.throughput(Throughput::Elements(1));

    // Who-has for virtual addresses: every frame gets a reply.
    let replies: Vec<[u8; 42]> = (0..64u32)
        .map(|i| request(guest, Ipv4Addr::from(0x0a80_0000 + 7 * i + 3)))
        .collect();
    let mut responder = new_responder();
    let mut i = 0;
    group.bench_function("reply", |b| {
        b.iter(|| {
            i = (i + 1) % replies.len();
            let outcome = responder.handle_frame(black_box(&replies[i]), &NoOtherHosts);
            match outcome {
                Ok(Outcome::Reply(t)) => black_box(t),
                other => panic!("{other:?}"),
            };
        })
    });

    let mut responder = new_responder();
    let mut i = 0;
    group.bench_function("reply_on_cpu", |b| {
        b.iter_custom(|iterations| {
            let start = on_cpu();
            for _ in 0..iterations {
                i = (i + 1) % replies.len();
                let outcome = responder.handle_frame(black_box(&replies[i]), &NoOtherHosts);
                match outcome {
                    Ok(Outcome::Reply(t)) => black_box(t),
                    other => panic!("{other:?}"),
                };
            }
            on_cpu() - start
        })
    });

    // A mix as a TAP sees it: replies, requests outside the network, the
    // guest's own address, and IPv4 frames that are not ARP at all.
    let mut mixed = replies.clone();
    mixed.extend((0..16u32).map(|i| request(guest, Ipv4Addr::from(0xc0a8_0000 + i))));
    mixed.extend((0..16).map(|_| request(guest, guest)));
    mixed.extend((0..32).map(|_| {
        let mut frame = request(guest, guest);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame
    }));
    let mut responder = new_responder();
    let mut i = 0;
    group.bench_function("mixed", |b| {
        b.iter(|| {
            i = (i + 1) % mixed.len();
            black_box(responder.handle_frame(black_box(&mixed[i]), &NoOtherHosts)).ok();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
