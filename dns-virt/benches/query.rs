//! In-process DNS performance with 1,000,000 names.
//!
//! `cargo bench -p dns-virt --bench query -- --warm-up-time 1 --measurement-time 3`
//!
//! - `respond/udp_1m_names`: query bytes → response bytes through
//!   [`Zone::respond`] (hits on the pre-encoded path, misses decoded and
//!   encoded with hickory), 90 % hits, 10 % misses; throughput in queries/s.
//! - `respond/general_udp_1m_names`: the same queries through
//!   [`Zone::respond_general`] (hickory decode, lookup, hickory encode).
//! - `lookup`: the name table alone (allocation-free).
//! - `load_1m`: parsing and loading a 1,000,000-line names file.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dns_virt::{Transport, Zone, ZoneConfig};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

const N: u32 = 1_000_000;

fn names_file() -> String {
    let mut s = String::with_capacity(N as usize * 24);
    for i in 1..=N {
        let a = Ipv4Addr::from(0x0a80_0000 + i);
        s.push_str(&format!("{a} h{i:07}.wow\n"));
    }
    s
}

fn zone(text: &str) -> Zone {
    let config = ZoneConfig {
        zone: Name::from_ascii("wow.").unwrap(),
        network: "10.128.0.0/12".parse().unwrap(),
        ..ZoneConfig::default()
    };
    let mut z = Zone::new(config, 1);
    assert_eq!(z.load_names(text).unwrap(), N as usize);
    z
}

fn queries() -> Vec<Vec<u8>> {
    // A fixed LCG: 90 % present names, 10 % missing.
    let mut x: u64 = 42;
    (0..4096)
        .map(|k| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (x >> 33) % u64::from(N) + 1;
            let name = if k % 10 == 9 {
                format!("m{i:07}.wow.")
            } else {
                format!("h{i:07}.wow.")
            };
            let mut m = Message::new(k as u16, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(
                Name::from_ascii(&name).unwrap(),
                RecordType::A,
            ));
            m.to_vec().unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let text = names_file();
    let z = zone(&text);
    eprintln!(
        "table: {} names, {} heap bytes, {} bytes/name",
        z.table().len(),
        z.table().heap_bytes(),
        z.table().heap_bytes() / z.table().len()
    );
    let qs = queries();

    let mut g = c.benchmark_group("respond");
    g.throughput(Throughput::Elements(qs.len() as u64));
    g.bench_function("udp_1m_names", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            for q in &qs {
                black_box(z.respond(q, Transport::Udp, &mut out));
            }
        })
    });
    g.bench_function("general_udp_1m_names", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            for q in &qs {
                black_box(z.respond_general(q, Transport::Udp, &mut out));
            }
        })
    });
    g.finish();

    let names: Vec<String> = (0..4096u32)
        .map(|k| format!("h{:07}", (k * 244_141) % N + 1))
        .collect();
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(names.len() as u64));
    g.bench_function("table_get_1m_names", |b| {
        b.iter(|| {
            for n in &names {
                black_box(z.table().get(n));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("load_1m_names", |b| b.iter(|| black_box(zone(&text))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
