//! Per-packet cost of the TURN client's data path: ChannelData
//! (`send_into`, `handle_channel_data`) against Send/Data indications
//! (`send` + `poll_transmit`, `handle_input` + `poll_event`), 1,200-byte
//! payloads.
//!
//! `cargo bench -p nat-traversal --bench turn -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nat_traversal::turn::{TurnClient, TurnConfig, TurnEvent};
use nat_traversal::wire::channel_data::{Packet as ChannelDataPacket, Repr as ChannelDataRepr};
use nat_traversal::wire::stun::{Attribute, Class, Method, Repr, TransactionId};

const PAYLOAD_LEN: usize = 1200;

fn success(request: &[u8], attributes: Vec<Attribute>) -> Vec<u8> {
    let req = Repr::parse_bytes(request).unwrap();
    let mut resp = Repr::binding_request(req.transaction_id);
    resp.method = req.method;
    resp.class = Class::Success;
    resp.attributes = attributes;
    resp.to_bytes(&[]).unwrap()
}

/// A client with an allocation and a channel bound to `peer`.
fn bound_client(server: SocketAddr, peer: SocketAddr) -> TurnClient {
    let now = Instant::now();
    let mut c = TurnClient::new_with_insecure_seed(now, TurnConfig::new(server), 1).unwrap();
    let allocate = c.poll_transmit().unwrap();
    let relayed = Attribute::XorRelayedAddress("192.0.2.1:50000".parse().unwrap());
    assert!(c.handle_input(now, server, &success(&allocate.payload, vec![relayed])));
    c.bind_channel(now, peer).unwrap();
    let bind = c.poll_transmit().unwrap();
    assert!(c.handle_input(now, server, &success(&bind.payload, vec![])));
    while c.poll_event().is_some() {}
    c
}

fn bench(c: &mut Criterion) {
    let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    let unbound: SocketAddr = "203.0.113.6:7000".parse().unwrap();
    let mut client = bound_client(server, peer);
    let data = vec![0x5au8; PAYLOAD_LEN];
    let mut out = vec![0u8; 2048];

    let mut g = c.benchmark_group("turn");
    g.throughput(Throughput::Elements(1));
    g.bench_function("send_into channel", |b| {
        b.iter(|| {
            black_box(
                client
                    .send_into(black_box(peer), black_box(&data), &mut out)
                    .unwrap(),
            )
        })
    });
    g.bench_function("send_into indication (no channel)", |b| {
        b.iter(|| {
            black_box(
                client
                    .send_into(black_box(unbound), black_box(&data), &mut out)
                    .unwrap(),
            )
        })
    });
    g.bench_function("send indication + poll_transmit", |b| {
        b.iter(|| {
            client.send(black_box(peer), black_box(&data)).unwrap();
            black_box(client.poll_transmit().unwrap())
        })
    });

    let channel = client.channel(peer).unwrap();
    let mut channel_data = vec![0u8; 4 + PAYLOAD_LEN];
    ChannelDataRepr {
        channel_number: channel,
        payload: &data,
    }
    .emit(&mut ChannelDataPacket::new_unchecked(&mut channel_data[..]))
    .unwrap();
    g.bench_function("handle_channel_data", |b| {
        b.iter(|| {
            black_box(
                client
                    .handle_channel_data(server, black_box(&channel_data))
                    .unwrap(),
            )
        })
    });
    let mut indication = Repr::binding_request(TransactionId([9; 12]));
    indication.class = Class::Indication;
    indication.method = Method::DATA;
    indication.attributes = vec![
        Attribute::XorPeerAddress(peer),
        Attribute::Data(data.clone()),
    ];
    let indication = indication.to_bytes(&[]).unwrap();
    let now = Instant::now();
    g.bench_function("handle_input data indication + poll_event", |b| {
        b.iter(|| {
            assert!(client.handle_input(now, server, black_box(&indication)));
            match client.poll_event() {
                Some(TurnEvent::Data { data, .. }) => black_box(data),
                other => panic!("{other:?}"),
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
