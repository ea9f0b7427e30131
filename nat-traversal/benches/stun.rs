//! Codec and responder costs: what a node pays per STUN message.
//!
//! `cargo bench -p nat-traversal --bench stun -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use nat_traversal::Socket;
use nat_traversal::server::{Server, ServerConfig};
use nat_traversal::wire::stun::{Attribute, Class, Packet, Repr, TransactionId};

fn request() -> Repr {
    let mut r = Repr::binding_request(TransactionId([7; 12]));
    r.attributes
        .push(Attribute::Username("remote:local".into()));
    r.attributes.push(Attribute::Priority(0x6e00_01ff));
    r.message_integrity = true;
    r.fingerprint = true;
    r
}

fn bench(c: &mut Criterion) {
    let key = b"a short-term password";
    let bytes = request().to_bytes(key).unwrap();
    c.bench_function("stun parse+verify authenticated request", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&bytes[..])).unwrap();
            p.verify_integrity(key).unwrap();
            black_box(Repr::parse(&p).unwrap())
        })
    });
    let mut response = request();
    response.class = Class::Success;
    response.attributes = vec![Attribute::XorMappedAddress(
        "198.51.100.1:4000".parse().unwrap(),
    )];
    let mut buf = vec![0u8; response.buffer_len()];
    c.bench_function("stun emit authenticated response", |b| {
        b.iter(|| {
            black_box(&response)
                .emit(&mut Packet::new_unchecked(&mut buf[..]), key)
                .unwrap()
        })
    });
    let mut server = Server::new(ServerConfig {
        primary: "192.0.2.1:3478".parse().unwrap(),
        alternate: None,
        software: None,
    });
    let plain = Repr::binding_request(TransactionId([1; 12]))
        .to_bytes(&[])
        .unwrap();
    let from = "198.51.100.1:4000".parse().unwrap();
    c.bench_function("stun server binding round", |b| {
        b.iter(|| {
            server.handle_input(Socket::Primary, from, black_box(&plain));
            black_box(server.poll_transmit().unwrap())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
