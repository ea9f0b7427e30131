//! The forwarding path allocates nothing: two nodes' cores wired in
//! memory, guests leased by DHCP (smoltcp clients), certified by a CA,
//! security associations up; then guest packets cross the overlay both
//! ways — TAP frame in, sealed, overlay-routed, UDP datagram out, UDP
//! datagram in, opened, TAP frame out — counted per thread by
//! `wow_test_hosts::alloc_count`, so what other threads of the process
//! allocate meanwhile is not counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Instant;

use support::{Node, exchange, exchange_hooked, smol};
use wow_core::demo;
use wow_core::guest::Guest;
use wow_test_hosts::alloc_count::{CountingAlloc, Region};

mod support;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// An Ethernet/IPv4/UDP frame from `src` to `dst` numbered `n`.
fn frame(mac: [u8; 6], gateway: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, n: u32) -> Vec<u8> {
    let mut payload = vec![0x5a; 1200];
    payload[..4].copy_from_slice(&n.to_be_bytes());
    let builder = etherparse::PacketBuilder::ethernet2(mac, gateway)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(40000, 40001);
    let mut f = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut f, &payload).unwrap();
    f
}

/// The packet number in a frame the core hands its guest.
fn number(frame: &[u8]) -> u32 {
    let at = 14 + 20 + 8;
    u32::from_be_bytes(frame[at..at + 4].try_into().unwrap())
}

#[test]
fn forwarding_guest_packets_allocates_nothing() {
    forwarding_allocates_nothing(false);
}

/// The same with the core's crypto deferred (`Core::set_deferred_crypto`,
/// as the runtime runs it with worker threads): the jobs, their buffers and
/// their results are reused too. The jobs run on this thread here.
#[test]
fn forwarding_with_deferred_crypto_allocates_nothing() {
    forwarding_allocates_nothing(true);
}

fn forwarding_allocates_nothing(deferred: bool) {
    let base = Instant::now();
    let (mut ca, ca_der) = support::ca("no-alloc test CA");
    let (mut cores, endpoints) = support::cores(2, base);
    let macs = [[0x52, 0x54, 0, 0x77, 0, 1], [0x52, 0x54, 0, 0x77, 0, 2]];
    let mtu = cores[0].settings().guest_mtu;
    let mut guests: Vec<Guest> = (0..2)
        .map(|i| {
            Guest::new(
                smol(base, base),
                macs[i],
                &format!("host-{i}"),
                &format!("host-{}.wow.internal", 1 - i),
                20_000,
                mtu,
                5 + i as u64,
            )
        })
        .collect();

    // Setup, in simulated time: join, leases, certificates, the guests'
    // DNS/ping/TCP script (which brings routes and SAs up).
    let mut buf = vec![0u8; 16384];
    let (now, addrs) = support::bring_up(
        &mut cores,
        &endpoints,
        &mut guests,
        &mut ca,
        &ca_der,
        base,
        &mut buf,
    );
    for (i, g) in guests.iter().enumerate() {
        assert!(
            g.report.replies > 0 && g.report.receive_done,
            "guest {i} did not finish its script: {:?}",
            g.report
        );
    }
    drop(guests);
    // Whatever the guests' script left queued is not part of the test.
    for core in &mut cores {
        while core.poll_tap_frame().is_some() {}
    }
    assert!(cores[0].sa_count() > 0 && cores[1].sa_count() > 0);
    let gateway = demo::settings().gateway_mac;
    for core in &mut cores {
        core.set_deferred_crypto(deferred);
    }
    let (mut jobs, mut done) = (Vec::with_capacity(64), Vec::with_capacity(64));

    // Frames built beforehand: the measured loop only moves them.
    const PACKETS: u32 = 2000;
    let frames: Vec<[Vec<u8>; 2]> = (0..2 * PACKETS)
        .map(|n| {
            [
                frame(macs[0], gateway, addrs[0], addrs[1], n),
                frame(macs[1], gateway, addrs[1], addrs[0], n),
            ]
        })
        .collect();
    let mut received = [
        Vec::with_capacity(2 * PACKETS as usize),
        Vec::with_capacity(2 * PACKETS as usize),
    ];
    let mut run =
        |cores: &mut Vec<Node>, range: std::ops::Range<u32>, received: &mut [Vec<u32>; 2]| {
            for n in range {
                for (i, core) in cores.iter_mut().enumerate() {
                    core.handle_tap_frame(now, &frames[n as usize][i]);
                }
                if deferred {
                    // The jobs run here, their buffers reused.
                    let crypto = |core: &mut Node| {
                        core.take_crypto_jobs(&mut jobs);
                        done.extend(jobs.drain(..).map(wow_core::CryptoJob::run));
                        let any = !done.is_empty();
                        core.complete_crypto(now, done.drain(..));
                        any
                    };
                    exchange_hooked(cores, &endpoints, now, &mut buf, crypto, |_, _| {});
                } else {
                    exchange(cores, &endpoints, now, &mut buf);
                }
                for (i, core) in cores.iter_mut().enumerate() {
                    while let Some(f) = core.poll_tap_frame() {
                        received[i].push(number(f));
                    }
                    while core.poll_event().is_some() {}
                }
            }
        };
    // Warm-up: queues, maps and pools reach their working size.
    run(&mut cores, 0..PACKETS, &mut received);
    let region = Region::new();
    run(&mut cores, PACKETS..2 * PACKETS, &mut received);
    let stats = region.change();

    let expected: Vec<u32> = (0..2 * PACKETS).collect();
    for (i, r) in received.iter().enumerate() {
        assert!(
            *r == expected,
            "node {i} delivered {} packets, not 0..{} in order (first: {:?})",
            r.len(),
            2 * PACKETS,
            &r[..r.len().min(4)]
        );
    }
    let sealed = cores[0].counters().sealed;
    assert!(
        sealed >= u64::from(2 * PACKETS),
        "the packets were encrypted ({sealed})"
    );
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
}
