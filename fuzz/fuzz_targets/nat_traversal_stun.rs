//! STUN input: the parser, integrity check, the Binding server and the
//! TURN client.
//!
//! Whatever parses must re-emit to bytes that parse to the same message;
//! the server must answer or drop without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_traversal::Socket;
use nat_traversal::server::{Server, ServerConfig};
use nat_traversal::turn::{TurnClient, TurnConfig};
use nat_traversal::wire::stun::{Attribute, Class, Packet, Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::new_checked(data) {
        let _ = packet.verify_integrity(b"fuzz key");
        if let Ok(repr) = Repr::parse(&packet) {
            let bytes = repr.to_bytes(b"fuzz key").expect("parsed message re-emits");
            assert_eq!(
                Repr::parse_bytes(&bytes).expect("re-emitted message parses"),
                repr
            );
        }
    }
    let mut server = Server::new(ServerConfig {
        primary: "192.0.2.1:3478".parse().unwrap(),
        alternate: Some("192.0.2.1:3479".parse().unwrap()),
        software: Some("fuzz".into()),
    });
    if server.handle_input(Socket::Primary, "198.51.100.1:5000".parse().unwrap(), data) {
        let t = server
            .poll_transmit()
            .expect("an answered request has a response");
        Repr::parse_bytes(&t.payload).expect("responses parse");
    }
    // Server input into a TURN client, waiting for its allocation and
    // allocated.
    let now = std::time::Instant::now();
    let server = "192.0.2.1:3478".parse().unwrap();
    let mut waiting = TurnClient::new_with_insecure_seed(now, TurnConfig::new(server), 1).unwrap();
    let mut allocated =
        TurnClient::new_with_insecure_seed(now, TurnConfig::new(server), 1).unwrap();
    let request = Repr::parse_bytes(&allocated.poll_transmit().unwrap().payload).unwrap();
    let mut success = Repr::binding_request(request.transaction_id);
    success.class = Class::Success;
    success.method = request.method;
    success.attributes = vec![Attribute::XorRelayedAddress(
        "192.0.2.1:50000".parse().unwrap(),
    )];
    assert!(allocated.handle_input(now, server, &success.to_bytes(&[]).unwrap()));
    allocated.create_permission(now, "198.51.100.1".parse().unwrap());
    for turn in [&mut waiting, &mut allocated] {
        turn.handle_input(now, server, data);
        turn.handle_timeout(now);
        while turn.poll_transmit().is_some() {}
        while turn.poll_event().is_some() {}
    }
});
