//! Name lookups never allocate: counted per thread by
//! `wow_test_hosts::alloc_count`, so what other threads of the process
//! allocate meanwhile is not counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::Ipv4Addr;

use dns_virt::{NameTable, Zone, ZoneConfig};
use wow_test_hosts::alloc_count::{CountingAlloc, Region};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn lookups_do_not_allocate() {
    let mut zone = Zone::new(ZoneConfig::default(), 3);
    let mut text = String::new();
    for i in 1..=20_000u32 {
        text.push_str(&format!("h{i} {}\n", Ipv4Addr::from(0x0a80_0000 + i)));
    }
    zone.load_names(&text).unwrap();
    let table: &NameTable = zone.table();
    let names: Vec<String> = (1..=20_000u32).map(|i| format!("H{i}")).collect();
    let labels: Vec<[&[u8]; 2]> = (0..1000).map(|_| [&b"c010128000005"[..], b""]).collect();

    let region = Region::new();
    let mut found = 0;
    for n in &names {
        found += usize::from(table.get(black_box(n)).is_some());
        found += usize::from(table.name_of(Ipv4Addr::new(10, 128, 0, 7)).is_some());
    }
    for l in &labels {
        let rel = l[..1].iter().copied();
        found += usize::from(zone.lookup_forward(black_box(rel)).is_some());
        let missing: [&[u8]; 2] = [b"nope", b"deeper"];
        found += usize::from(zone.lookup_forward(missing.iter().copied()).is_some());
    }
    let stats = region.change();

    assert_eq!(found, 2 * names.len() + labels.len());
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
}

/// A registered name's A query takes the pre-encoded path: answering it
/// into a buffer with room allocates nothing (the general path decodes into
/// a hickory-proto message and allocates several times).
#[test]
fn common_answers_do_not_allocate() {
    let mut zone = Zone::new(ZoneConfig::default(), 3);
    zone.load_names("alpha 10.128.0.9\n").unwrap();
    // ID 7, RD, one question alpha.wow.internal A IN, EDNS 1232.
    let mut query = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    query.extend_from_slice(b"\x05Alpha\x03wow\x08internal\x00\x00\x01\x00\x01");
    query.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    let mut out = Vec::with_capacity(512);

    let region = Region::new();
    for _ in 0..1000 {
        zone.respond(black_box(&query), dns_virt::Transport::Udp, &mut out);
    }
    let fast = region.change();
    let region = Region::new();
    zone.respond_general(&query, dns_virt::Transport::Udp, &mut out);
    let general = region.change();

    assert_eq!(
        out.get(out.len() - 4 - 11..out.len() - 11),
        Some(&[10, 128, 0, 9][..])
    );
    assert_eq!(fast.allocations, 0, "{fast:?}");
    assert!(general.allocations > 0, "{general:?}");
}
