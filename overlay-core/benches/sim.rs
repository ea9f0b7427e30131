//! Simulator speed and routing cost.
//!
//! `cargo bench -p overlay-core --bench sim -- --warm-up-time 1 --measurement-time 3`
//!
//! The full-scale figure (10,000 nodes joined and 100,000 routes) comes
//! from `scripts/sim-speed.sh`, which runs the `overlay-sim` example.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use overlay_core::routing::next_hop;
use overlay_core::sim::{Outcome, Sim, SimConfig};
use overlay_core::wire::Mode;

fn joined(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(
        Instant::now(),
        SimConfig {
            seed,
            ..SimConfig::default()
        },
    );
    for _ in 0..n {
        sim.spawn(3);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(60));
    sim
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.bench_function("join_1000_nodes_60s", |b| {
        b.iter(|| black_box(joined(1000, 1)))
    });

    let mut sim = joined(1000, 2);
    g.bench_function("route_1000_echoes_on_1000_nodes", |b| {
        b.iter(|| {
            let mut ids = Vec::with_capacity(1000);
            for _ in 0..1000 {
                let a = sim.random_live().unwrap();
                let z = sim.random_live().unwrap();
                ids.push(sim.echo(a, z).unwrap());
            }
            sim.run_for(Duration::from_secs(2));
            let ok = ids
                .into_iter()
                .filter(|&id| matches!(sim.take_outcome(id), Some(Outcome::Echo(_))))
                .count();
            assert_eq!(ok, 1000);
        })
    });
    g.finish();

    let node = sim.node(sim.live()[0]).unwrap();
    let table = node.connections().clone();
    let me = node.address();
    let mut dests = Vec::new();
    for _ in 0..256 {
        let i = sim.random_live().unwrap();
        dests.push(sim.node(i).unwrap().address());
    }
    c.bench_function("next_hop_lookahead", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % dests.len();
            black_box(next_hop(me, &table, me, dests[k], Mode::Exact, None, true))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
