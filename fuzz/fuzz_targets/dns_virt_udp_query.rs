//! Arbitrary bytes as a UDP query: the zone (with IPv6: AAAA and ip6.arpa)
//! answers or drops, never panics,
//! never exceeds the query's size limit, and the server's state machine
//! (decentralised mode, with a store that answers) stays consistent.
#![no_main]

use std::time::{Duration, Instant};

use dns_virt::{Config, Mode, Server, StoreResult, Transport, Zone, ZoneConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // With an IPv6 prefix and one host's address: AAAA and ip6.arpa too.
    let mut zone = Zone::new(
        ZoneConfig {
            ipv6_prefix: Some("fd12:3456:789a::/48".parse().unwrap()),
            ..ZoneConfig::default()
        },
        1,
    );
    let host = std::net::Ipv4Addr::new(10, 128, 0, 20);
    let _ = zone.insert("bravo", host, None);
    zone.set_ipv6_addrs(host, &["fd12:3456:789a:14::1".parse().unwrap()]);
    let mut out = Vec::new();
    zone.respond(data, Transport::Udp, &mut out);
    assert!(out.len() <= 1232);
    if let Ok(req) = dns_virt::Request::parse(data) {
        assert!(out.len() <= zone.response_limit(&req, Transport::Udp).max(512));
        // Any response echoes the ID.
        assert_eq!(out.get(..2), Some(&data[..2]));
    }

    let now = Instant::now();
    let mut server = Server::new(Config {
        mode: Mode::Decentralised,
        ..Config::default()
    });
    let from = "10.128.0.2:5353".parse().unwrap();
    server.handle_input(now, from, Transport::Udp, data);
    while let Some(req) = server.poll_store_request() {
        server.handle_store_response(now, req.id(), StoreResult::NotFound);
    }
    server.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(server.waiting(), 0);
    while let Some(t) = server.poll_transmit() {
        assert!(t.payload.len() <= 1232);
    }
});
