//! TURN ChannelData and ChannelBind input: the ChannelData parser, and a
//! TURN client with a bound channel and a ChannelBind in flight.
//!
//! What parses must re-emit to the same bytes (less up to three padding
//! bytes); a payload the client delivers is the parsed one. The first byte
//! chooses whether the rest gets the in-flight ChannelBind's transaction id
//! spliced in, so responses to it are reached.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use nat_traversal::turn::{TurnClient, TurnConfig};
use nat_traversal::wire::channel_data::{Packet, Repr as ChannelDataRepr};
use nat_traversal::wire::stun::{Attribute, Class, Repr};

fn success(request: &[u8], attributes: Vec<Attribute>) -> Vec<u8> {
    let req = Repr::parse_bytes(request).unwrap();
    let mut resp = Repr::binding_request(req.transaction_id);
    resp.method = req.method;
    resp.class = Class::Success;
    resp.attributes = attributes;
    resp.to_bytes(&[]).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parsed = ChannelDataRepr::parse_bytes(rest);
    if let Ok(repr) = parsed {
        let mut buf = vec![0; repr.buffer_len()];
        let n = repr
            .emit(&mut Packet::new_unchecked(&mut buf[..]))
            .expect("parsed message re-emits");
        assert_eq!(&buf[..n], &rest[..n]);
        assert!(rest.len() - n <= 3);
    }

    let now = Instant::now();
    let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let peer: SocketAddr = "198.51.100.1:5000".parse().unwrap();
    let mut client = TurnClient::new_with_insecure_seed(now, TurnConfig::new(server), 1).unwrap();
    let allocate = client.poll_transmit().unwrap();
    let relayed = Attribute::XorRelayedAddress("192.0.2.1:50000".parse().unwrap());
    assert!(client.handle_input(now, server, &success(&allocate.payload, vec![relayed])));
    let channel = client.bind_channel(now, peer).unwrap();
    let bind = client.poll_transmit().unwrap();
    assert!(client.handle_input(now, server, &success(&bind.payload, vec![])));
    // A second channel, still binding.
    let other: SocketAddr = "198.51.100.2:5000".parse().unwrap();
    client.bind_channel(now, other).unwrap();
    let pending = client.poll_transmit().unwrap();

    let mut input = rest.to_vec();
    if mode & 1 == 1 && input.len() >= 20 {
        input[8..20].copy_from_slice(&pending.payload[8..20]);
    }
    if let Some((from, payload)) = client.handle_channel_data(server, &input) {
        let repr = ChannelDataRepr::parse_bytes(&input).expect("delivered data parses");
        assert_eq!(payload, repr.payload);
        assert!(from == peer || from == other);
    }
    client.handle_input(now, server, &input);
    client.handle_timeout(now);
    while client.poll_transmit().is_some() {}
    while client.poll_event().is_some() {}
    // The bound channel survives whatever came in, unless a challenge we
    // cannot answer (no credentials here) broke the allocation.
    if client.relayed().is_some() {
        assert_eq!(client.channel(peer), Some(channel));
        let mut out = [0u8; 64];
        let (to, n) = client.send_into(peer, b"x", &mut out).unwrap();
        assert_eq!((to, n), (server, 5));
    }
});
