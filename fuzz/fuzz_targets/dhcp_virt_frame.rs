//! Ethernet frames from a TAP into the server's frame API: never panics,
//! and every framed reply parses as Ethernet/IPv4/UDP from port 67.
#![no_main]

use std::time::Instant;

use dhcp_virt::{Config, MemoryStore, Server, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut s = Server::new(
        t0,
        std::time::SystemTime::UNIX_EPOCH,
        Config::default(),
        MemoryStore::new(),
    )
    .expect("server");
    let _ = wire::parse_frame(data);
    let _ = s.handle_frame(t0, data);
    while let Some(frame) = s.poll_frame() {
        let sliced = etherparse::SlicedPacket::from_ethernet(&frame).expect("reply frame parses");
        match sliced.transport {
            Some(etherparse::TransportSlice::Udp(udp)) => {
                assert_eq!(udp.source_port(), wire::SERVER_PORT);
                wire::Reply::parse(udp.payload()).expect("reply payload parses");
            }
            other => panic!("reply is not UDP: {other:?}"),
        }
    }
});
