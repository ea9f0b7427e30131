//! The data path across two linked nodes: one 1,400-byte packet from A's
//! application through A's transmit queue, the encoding, B's input and B's
//! `Delivered` event, per iteration.
//!
//! `cargo bench -p overlay-core --bench data_path -- --warm-up-time 1 --measurement-time 3`
//!
//! - `old_api`: `send(Vec)` → `poll_transmit` + `Message::emit` →
//!   `handle_input` → `Delivered` (payload dropped).
//! - `pooled_api`: `send_slice` → `poll_transmit_into` → `handle_input` →
//!   `Delivered` → `recycle`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use overlay_core::{Address, Config, Event, Node};

const PAYLOAD_LEN: usize = 1400;

fn ep(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7000))
}

/// Two joined nodes (A = ep(1), B = ep(2)) and the time they reached.
fn pair() -> (Node, Node, Instant) {
    let mut now = Instant::now();
    let config = |i| Config {
        endpoints: vec![ep(i)],
        ..Config::default()
    };
    let mut a = Node::new_with_insecure_seed(now, config(1), Address::from_key(b"a"), 1);
    let mut b = Node::new_with_insecure_seed(now, config(2), Address::from_key(b"b"), 2);
    a.join(now, &[]).unwrap();
    b.join(now, &[ep(1)]).unwrap();
    let end = now + Duration::from_secs(3);
    while now < end {
        while let Some(t) = a.poll_transmit() {
            b.handle_input(now, ep(1), &t.message.to_vec()).unwrap();
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_input(now, ep(2), &t.message.to_vec()).unwrap();
        }
        now += Duration::from_millis(10);
        for n in [&mut a, &mut b] {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
            while n.poll_event().is_some() {}
        }
    }
    assert_eq!(a.connections().len(), 1);
    assert_eq!(b.connections().len(), 1);
    (a, b, now)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_path");
    g.throughput(Throughput::Elements(1));
    let payload = vec![0x5au8; PAYLOAD_LEN];
    let mut buf = vec![0u8; 65_536];

    let (mut a, mut b, now) = pair();
    let dest = b.address();
    g.bench_function("old_api", |bench| {
        bench.iter(|| {
            a.send(now, dest, payload.clone()).unwrap();
            let t = a.poll_transmit().unwrap();
            let n = t.message.emit(&mut buf);
            b.handle_input(now, ep(1), &buf[..n]).unwrap();
            match b.poll_event() {
                Some(Event::Delivered { payload, .. }) => black_box(payload),
                other => panic!("{other:?}"),
            };
        })
    });

    let (mut a, mut b, now) = pair();
    let dest = b.address();
    g.bench_function("pooled_api", |bench| {
        bench.iter(|| {
            a.send_slice(now, dest, &payload).unwrap();
            let (_, n) = a.poll_transmit_into(&mut buf).unwrap();
            b.handle_input(now, ep(1), &buf[..n]).unwrap();
            match b.poll_event() {
                Some(Event::Delivered { payload, .. }) => b.recycle(black_box(payload)),
                other => panic!("{other:?}"),
            };
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
