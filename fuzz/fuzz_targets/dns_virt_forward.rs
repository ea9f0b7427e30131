//! Split DNS: arbitrary bytes as the upstream's reply to a forwarded query,
//! raw and with the forward's message ID spliced in. The server never
//! panics, relays at most one answer within the client's limit, and keeps
//! the query waiting (until its deadline) for anything it rejects.
#![no_main]

use std::time::{Duration, Instant};

use dns_virt::{Config, Server, Transport};
use libfuzzer_sys::fuzz_target;

/// `www.example.` A, ID 0x1234, RD.
const QUERY: &[u8] =
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x00\x00\x01\x00\x01";

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut server = Server::new(Config {
        forward: true,
        forward_cache_bytes: 4096,
        ..Config::default()
    });
    let from = "10.128.0.2:5353".parse().unwrap();
    for spliced in [false, true] {
        server.handle_input(now, from, Transport::Udp, QUERY);
        let Some(fwd) = server.poll_forward() else {
            // Answered from the cache the first round filled.
            assert!(server.poll_transmit().is_some());
            continue;
        };
        let mut reply = data.to_vec();
        if spliced && reply.len() >= 2 {
            reply[..2].copy_from_slice(&fwd.query[..2]);
        }
        server.handle_forward_response(now, fwd.id, &reply);
        let answered = server.poll_transmit();
        if let Some(t) = &answered {
            assert!(t.payload.len() <= 512);
            assert_eq!(t.payload.get(..2), Some(&QUERY[..2]));
            assert_eq!(server.waiting(), 0);
        }
        while let Some(again) = server.poll_forward() {
            assert_eq!(again.transport, Transport::Tcp);
        }
        server.handle_timeout(now + Duration::from_secs(5));
        while server.poll_transmit().is_some() {}
        assert_eq!(server.waiting(), 0);
        assert!(server.forward_cache().0 <= 4096);
    }
});
