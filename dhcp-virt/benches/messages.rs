//! Messages handled per second, in process: full DISCOVER/OFFER/REQUEST/ACK
//! exchanges through the message API and the frame API, and renewals.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dhcp_virt::wire::{self, ClientMessage, ClientMessageKind, HardwareAddr};
use dhcp_virt::{Config, MemoryStore, Pool, Server};

const CLIENTS: u32 = 1000;

fn server(t0: Instant) -> Server<MemoryStore> {
    let mut c = Config::new("10.64.0.0/16".parse().unwrap(), Ipv4Addr::new(10, 64, 0, 1));
    c.pool = Pool::range(Ipv4Addr::new(10, 64, 1, 0), Ipv4Addr::new(10, 64, 255, 254));
    c.interface_mtu = Some(1280);
    Server::new(
        t0,
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        c,
        MemoryStore::new(),
    )
    .unwrap()
}

fn hw(i: u32) -> HardwareAddr {
    let b = i.to_be_bytes();
    HardwareAddr::ethernet([2, 0, b[0], b[1], b[2], b[3]])
}

/// Pre-encoded DISCOVER and REQUEST payloads per client; the REQUEST
/// names the address the server will offer (learnt in a dry run).
fn payloads(t0: Instant) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut s = server(t0);
    (0..CLIENTS)
        .map(|i| {
            let mut d = ClientMessage::new(ClientMessageKind::Discover, i, hw(i));
            d.parameter_request_list = Some(vec![1, 3, 6, 15, 26, 121]);
            let d = d.emit();
            s.handle_message(t0, &d).unwrap();
            let offer = wire::Reply::parse(&s.poll_transmit().unwrap().payload).unwrap();
            let mut r = ClientMessage::new(ClientMessageKind::Request, i, hw(i));
            r.server_id = Some(offer.server_id);
            r.requested_addr = Some(offer.your_addr);
            r.parameter_request_list = Some(vec![1, 3, 6, 15, 26, 121]);
            (d, r.emit())
        })
        .collect()
}

fn frame(payload: &[u8], i: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mac = hw(i).mac().unwrap();
    wire::emit_frame(
        mac,
        wire::BROADCAST_MAC,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        wire::SERVER_PORT,
        payload,
        &mut out,
    );
    // emit_frame writes source port 67; a client uses 68, the server does
    // not care.
    out
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let msgs = payloads(t0);
    let frames: Vec<_> = msgs
        .iter()
        .enumerate()
        .map(|(i, (d, r))| (frame(d, i as u32), frame(r, i as u32)))
        .collect();

    let mut g = c.benchmark_group("dhcp");
    g.throughput(Throughput::Elements(u64::from(CLIENTS) * 2));
    g.bench_function("message_api_1000_exchanges", |b| {
        b.iter(|| {
            let mut s = server(t0);
            for (d, r) in &msgs {
                s.handle_message(t0, d).unwrap();
                black_box(s.poll_transmit().unwrap());
                s.handle_message(t0, r).unwrap();
                black_box(s.poll_transmit().unwrap());
            }
        })
    });
    g.bench_function("frame_api_1000_exchanges", |b| {
        b.iter(|| {
            let mut s = server(t0);
            for (d, r) in &frames {
                s.handle_frame(t0, d).unwrap();
                black_box(s.poll_frame().unwrap());
                s.handle_frame(t0, r).unwrap();
                black_box(s.poll_frame().unwrap());
            }
        })
    });
    g.throughput(Throughput::Elements(u64::from(CLIENTS)));
    let mut s = server(t0);
    for (d, r) in &msgs {
        s.handle_message(t0, d).unwrap();
        s.poll_transmit();
        s.handle_message(t0, r).unwrap();
        s.poll_transmit();
    }
    let mut now = t0;
    g.bench_function("message_api_1000_renewals", |b| {
        b.iter(|| {
            now += Duration::from_millis(1);
            for (_, r) in &msgs {
                s.handle_message(now, r).unwrap();
                black_box(s.poll_transmit().unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
