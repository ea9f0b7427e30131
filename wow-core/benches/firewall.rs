//! The firewall's cost per packet: no rules, 50 rules with the packet's
//! flow tracked (every packet after a flow's first; one flow, and four
//! flows in turn), and 50 rules walked to the last (a flow's first
//! packet).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use wow_core::firewall::{Firewall, Limits, Rule, Rules};

fn rules(n: usize) -> Rules {
    let mut inbound: Vec<Rule> = (1..=n.saturating_sub(1))
        .map(|i| {
            let port = (10_000 + i).to_string();
            Rule::parse("tcp", &port, &[format!("g{i}")], None, None).unwrap()
        })
        .collect();
    inbound.push(Rule::parse("tcp", "5201", &[], None, None).unwrap());
    Rules {
        inbound,
        outbound: vec![],
    }
}

fn packet(sport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 128, 0, 3], [10, 128, 0, 2], 64)
        .tcp(sport, 5201, 1, 1000)
        .write(&mut out, &[0u8; 1300])
        .unwrap();
    out
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let p = packet(40_000);
    let mut none = Firewall::default();
    c.bench_function("firewall/no rules", |b| {
        b.iter(|| none.inbound(now, &p, None))
    });
    let mut fw = Firewall::new(rules(50), Limits::default());
    assert!(fw.inbound(now, &p, None).is_allowed());
    c.bench_function("firewall/50 rules, tracked flow", |b| {
        b.iter(|| fw.inbound(now, &p, None))
    });
    // Four tracked flows in turn (4 iperf3 streams): the last-flow
    // shortcut misses every time, so each packet pays the hash look-up.
    let mut four = Firewall::new(rules(50), Limits::default());
    let streams: Vec<Vec<u8>> = (0..4u16).map(|i| packet(40_000 + i)).collect();
    for p in &streams {
        assert!(four.inbound(now, p, None).is_allowed());
    }
    let mut turn = 0usize;
    c.bench_function("firewall/50 rules, 4 tracked flows in turn", |b| {
        b.iter(|| {
            turn = (turn + 1) % 4;
            four.inbound(now, &streams[turn], None)
        })
    });
    let mut sport = 0u16;
    let limits = Limits {
        max_flows: 4096,
        ..Limits::default()
    };
    let mut fresh = Firewall::new(rules(50), limits);
    let packets: Vec<Vec<u8>> = (0..4096u16).map(|i| packet(1000 + i)).collect();
    c.bench_function("firewall/50 rules, new flow (rule walk + insert)", |b| {
        b.iter(|| {
            sport = (sport + 1) % 4096;
            // A fresh table each lap so every packet is a new flow.
            if sport == 0 {
                fresh = Firewall::new(rules(50), limits);
            }
            fresh.inbound(now, &packets[usize::from(sport)], None)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
