//! The data path allocates nothing in the steady state, counted per thread
//! by `wow_test_hosts::alloc_count` (so the tests may run in parallel):
//! packets sent with `send_slice`, encoded with `poll_transmit_into`,
//! decoded by `handle_input`, forwarded by relays, delivered and given back
//! with `recycle`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use overlay_core::wire::{MAX_DATA_MESSAGE_LEN, MAX_MESSAGE_LEN};
use overlay_core::{Address, Config, Event, Node};
use wow_test_hosts::alloc_count::{CountingAlloc, Region};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const PAYLOAD_LEN: usize = 1200;

fn ep(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7000))
}

/// A at 0x10…, B at 0x50…, C at 0x88… on the ring: B is the nearest
/// other node for both A and C.
fn address(i: usize) -> Address {
    let mut b = [0u8; 20];
    b[0] = [0x10, 0x50, 0x88][i];
    b[19] = 1;
    Address::from_bytes(b)
}

/// In the three-node test A and C cannot reach each other (as behind two
/// NATs that defeat traversal), so every packet between them is relayed by
/// B.
fn a_c_blocked(from: usize, to: usize) -> bool {
    !matches!((from, to), (A, C) | (C, A))
}

fn all_reachable(_: usize, _: usize) -> bool {
    true
}

type Reachable = fn(usize, usize) -> bool;

/// Checks a delivered payload against the one sent as packet `seq`.
fn expected(seq: u32) -> [u8; PAYLOAD_LEN] {
    let mut p = [0u8; PAYLOAD_LEN];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(31).wrapping_add(seq) as u8;
    }
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

#[derive(Default)]
struct Tally {
    delivered: u32,
    relayed_hops: u32,
    corrupt: u32,
    other_events: u32,
}

/// Delivers every datagram in flight (through the real encoding, into one
/// reused buffer) until all nodes are quiet, and handles events:
/// `Delivered` payloads are checked against `expected(seq)`, where `seq`
/// is read from the payload, and recycled.
fn drain(
    nodes: &mut [Node],
    reachable: Reachable,
    buf: &mut [u8],
    now: Instant,
    tally: &mut Tally,
) {
    loop {
        let mut moved = false;
        for from in 0..nodes.len() {
            while let Some((to, n)) = nodes[from].poll_transmit_into(buf) {
                moved = true;
                let to = usize::from(match to.ip() {
                    std::net::IpAddr::V4(ip) => ip.octets()[3],
                    std::net::IpAddr::V6(_) => unreachable!(),
                }) - 1;
                if reachable(from, to) {
                    nodes[to].handle_input(now, ep(from), &buf[..n]).unwrap();
                }
            }
        }
        for n in nodes.iter_mut() {
            while let Some(e) = n.poll_event() {
                moved = true;
                match e {
                    Event::Delivered { payload, hops, .. } => {
                        tally.delivered += 1;
                        tally.relayed_hops += u32::from(hops >= 2);
                        let seq = payload
                            .get(..4)
                            .map_or(u32::MAX, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
                        if payload[..] != expected(seq)[..] {
                            tally.corrupt += 1;
                        }
                        n.recycle(payload);
                    }
                    _ => tally.other_events += 1,
                }
            }
        }
        if !moved {
            return;
        }
    }
}

/// Sends packet `seq` for each of `seqs` on the pair `pair(seq)`, draining
/// after each.
fn exchange(
    nodes: &mut [Node],
    reachable: Reachable,
    pair: fn(u32) -> (usize, usize),
    buf: &mut [u8],
    now: Instant,
    seqs: core::ops::Range<u32>,
    tally: &mut Tally,
) {
    for seq in seqs {
        let (from, to) = pair(seq);
        let dest = nodes[to].address();
        nodes[from].send_slice(now, dest, &expected(seq)).unwrap();
        drain(nodes, reachable, buf, now, tally);
    }
}

/// Runs the nodes with timers for `duration` in 10 ms steps.
fn run(
    nodes: &mut [Node],
    reachable: Reachable,
    buf: &mut [u8],
    now: &mut Instant,
    duration: Duration,
) {
    let mut tally = Tally::default();
    let end = *now + duration;
    while *now < end {
        drain(nodes, reachable, buf, *now, &mut tally);
        *now += Duration::from_millis(10);
        for n in nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= *now) {
                n.handle_timeout(*now);
            }
        }
    }
    drain(nodes, reachable, buf, *now, &mut tally);
}

/// A→C for even packets, C→A for odd ones.
fn a_c_pair(seq: u32) -> (usize, usize) {
    if seq.is_multiple_of(2) {
        (A, C)
    } else {
        (C, A)
    }
}

#[test]
fn relayed_data_path_does_not_allocate() {
    let mut now = Instant::now();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let config = Config {
                endpoints: vec![ep(i)],
                ..Config::default()
            };
            Node::new_with_insecure_seed(now, config, address(i), i as u64 + 1)
        })
        .collect();
    nodes[A].join(now, &[]).unwrap();
    nodes[B].join(now, &[ep(A)]).unwrap();
    nodes[C].join(now, &[ep(B)]).unwrap();
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    // Join and settle with timers running.
    run(
        &mut nodes,
        a_c_blocked,
        &mut buf,
        &mut now,
        Duration::from_secs(10),
    );
    assert!(nodes.iter().all(Node::is_joined));
    assert_eq!(nodes[B].connections().len(), 2);
    assert_eq!(nodes[A].connections().len(), 1);
    assert_eq!(nodes[C].connections().len(), 1);

    // From here `now` stands still, so no timer is due: only the data path
    // runs. Warm up until queues, demand counters and the pools have
    // reached their steady size (this also triggers the demand-shortcut
    // requests, which fail because A and C cannot reach each other).
    let mut warm = Tally::default();
    exchange(
        &mut nodes,
        a_c_blocked,
        a_c_pair,
        &mut buf,
        now,
        0..400,
        &mut warm,
    );
    assert_eq!(warm.delivered, 400);
    assert!(
        nodes
            .iter()
            .all(|n| n.poll_timeout().is_some_and(|t| t > now))
    );
    let forwarded_before = nodes[B].stats().forwarded;

    // Only data messages from here; a buffer that holds the largest.
    let data_buf = &mut buf[..MAX_DATA_MESSAGE_LEN];
    let mut tally = Tally::default();
    let region = Region::new();
    exchange(
        &mut nodes,
        a_c_blocked,
        a_c_pair,
        data_buf,
        now,
        400..1400,
        &mut tally,
    );
    let stats = region.change();

    assert_eq!(tally.delivered, 1000);
    assert_eq!(tally.relayed_hops, 1000);
    assert_eq!(tally.corrupt, 0);
    assert_eq!(tally.other_events, 0);
    assert_eq!(nodes[B].stats().forwarded - forwarded_before, 1000);
    assert!(nodes.iter().all(|n| n.stats().transmits_skipped == 0));
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
}

const RING: usize = 16;

/// Every ordered pair of the ring in turn.
fn ring_pair(seq: u32) -> (usize, usize) {
    let n = RING as u32;
    let from = seq % n;
    let to = (from + 1 + (seq / n) % (n - 1)) % n;
    (from as usize, to as usize)
}

#[test]
fn ring_data_path_does_not_allocate() {
    let mut now = Instant::now();
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    // Lookahead routing on a 16-node ring (links per node are capped well
    // below 15, so many routes take several hops). Demand is counted but
    // never reaches its threshold, so routes stay multi-hop.
    let mut nodes: Vec<Node> = (0..RING)
        .map(|i| {
            let config = Config {
                endpoints: vec![ep(i)],
                max_connections: Some(4),
                demand_threshold: u32::MAX,
                ..Config::default()
            };
            Node::new_with_insecure_seed(now, config, Address::from_key(&[i as u8]), i as u64 + 1)
        })
        .collect();
    nodes[0].join(now, &[]).unwrap();
    for i in 1..RING {
        nodes[i].join(now, &[ep(i - 1)]).unwrap();
        run(
            &mut nodes,
            all_reachable,
            &mut buf,
            &mut now,
            Duration::from_millis(500),
        );
    }
    run(
        &mut nodes,
        all_reachable,
        &mut buf,
        &mut now,
        Duration::from_secs(60),
    );
    assert!(nodes.iter().all(Node::is_joined));

    let mut warm = Tally::default();
    exchange(
        &mut nodes,
        all_reachable,
        ring_pair,
        &mut buf,
        now,
        0..480,
        &mut warm,
    );
    assert_eq!(warm.delivered, 480);
    assert!(
        nodes
            .iter()
            .all(|n| n.poll_timeout().is_some_and(|t| t > now))
    );

    let data_buf = &mut buf[..MAX_DATA_MESSAGE_LEN];
    let mut tally = Tally::default();
    let region = Region::new();
    exchange(
        &mut nodes,
        all_reachable,
        ring_pair,
        data_buf,
        now,
        480..1440,
        &mut tally,
    );
    let stats = region.change();

    assert_eq!(tally.delivered, 960);
    assert!(tally.relayed_hops >= 240, "{}", tally.relayed_hops);
    assert_eq!(tally.corrupt, 0);
    assert_eq!(tally.other_events, 0);
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
}
