//! Arbitrary bytes as a query, and the same bytes with the header of a
//! common query (ID 1, RD, one question, no other records) put in front:
//! `Zone::respond` (pre-encoded answer path first) writes exactly what
//! `Zone::respond_general` (hickory decode and encode) writes, on UDP and
//! TCP.
#![no_main]

use std::net::Ipv4Addr;

use dns_virt::{Transport, Zone, ZoneConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut zone = Zone::new(
        ZoneConfig {
            zone: "wow.internal.".parse().unwrap(),
            ns_addr: Some(Ipv4Addr::new(10, 128, 0, 1)),
            ..ZoneConfig::default()
        },
        1,
    );
    for (i, name) in ["a", "bravo", "c.d", "_sip._udp"].iter().enumerate() {
        let _ = zone.insert(name, Ipv4Addr::new(10, 128, 1, i as u8 + 2), None);
    }
    let mut common = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    common.extend_from_slice(data);
    let (mut fast, mut general) = (Vec::new(), Vec::new());
    for query in [data, &common[..]] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let a = zone.respond(query, transport, &mut fast);
            let b = zone.respond_general(query, transport, &mut general);
            assert_eq!(fast, general);
            assert_eq!(a, b);
        }
    }
});
