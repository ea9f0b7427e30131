//! The TURN channel data path allocates nothing once the channel is bound,
//! counted per thread by `wow_test_hosts::alloc_count`: 1,000 packets written
//! with `send_into`, relayed by a fake TURN server to a peer that answers,
//! and the answers read back with `handle_channel_data`; and 1,000 Send
//! indications written by `send_into` to a peer without a channel.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use nat_traversal::turn::{TurnClient, TurnConfig, TurnEvent};
use nat_traversal::wire::channel_data::{Packet as ChannelDataPacket, Repr as ChannelDataRepr};
use nat_traversal::wire::stun::{Attribute, Class, Method, Repr};
use wow_test_hosts::alloc_count::{CountingAlloc, Region};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const PACKETS: u32 = 1000;
const PAYLOAD_LEN: usize = 1200;

/// Just enough TURN server: answers Allocate and ChannelBind, and relays
/// ChannelData by channel number.
struct FakeTurn {
    relayed: SocketAddr,
    channels: HashMap<u16, SocketAddr>,
}

impl FakeTurn {
    fn answer(&mut self, request: &[u8]) -> Vec<u8> {
        let req = Repr::parse_bytes(request).unwrap();
        let mut resp = Repr::binding_request(req.transaction_id);
        resp.method = req.method;
        resp.class = Class::Success;
        if req.method == Method::ALLOCATE {
            resp.attributes = vec![Attribute::XorRelayedAddress(self.relayed)];
        } else if req.method == Method::CHANNEL_BIND {
            let number = req.attributes.iter().find_map(|a| match a {
                Attribute::ChannelNumber(n) => Some(*n),
                _ => None,
            });
            let peer = req.attributes.iter().find_map(|a| match a {
                Attribute::XorPeerAddress(p) => Some(*p),
                _ => None,
            });
            self.channels.insert(number.unwrap(), peer.unwrap());
        } else {
            panic!("unexpected request {:?}", req.method);
        }
        resp.to_bytes(&[]).unwrap()
    }
}

fn payload(seq: u32, out: &mut [u8; PAYLOAD_LEN]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(31).wrapping_add(seq) as u8;
    }
    out[..4].copy_from_slice(&seq.to_be_bytes());
}

#[test]
fn channel_data_path_allocates_nothing() {
    let now = Instant::now();
    let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    let mut fake = FakeTurn {
        relayed: "192.0.2.1:50000".parse().unwrap(),
        channels: HashMap::new(),
    };
    let mut client = TurnClient::new_with_insecure_seed(now, TurnConfig::new(server), 7).unwrap();
    let allocate = client.poll_transmit().unwrap();
    assert!(client.handle_input(now, server, &fake.answer(&allocate.payload)));
    let channel = client.bind_channel(now, peer).unwrap();
    let bind = client.poll_transmit().unwrap();
    assert!(client.handle_input(now, server, &fake.answer(&bind.payload)));
    let events: Vec<TurnEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.contains(&TurnEvent::ChannelBound { peer, channel }));

    let mut to_server = [0u8; 2048];
    let mut to_client = [0u8; 2048];
    let mut data = [0u8; PAYLOAD_LEN];
    let mut answered = 0u32;
    let region = Region::new();
    for seq in 0..PACKETS {
        payload(seq, &mut data);
        let (dest, n) = client.send_into(peer, &data, &mut to_server).unwrap();
        assert_eq!(dest, server);
        // The server relays it to the channel's peer, which answers with the
        // bytes reversed through the same channel.
        let up = ChannelDataRepr::parse_bytes(&to_server[..n]).unwrap();
        assert_eq!(fake.channels.get(&up.channel_number), Some(&peer));
        assert_eq!(up.payload, &data[..]);
        data.reverse();
        let down = ChannelDataRepr {
            channel_number: up.channel_number,
            payload: &data,
        };
        let m = down
            .emit(&mut ChannelDataPacket::new_unchecked(&mut to_client[..]))
            .unwrap();
        let (from_peer, received) = client.handle_channel_data(server, &to_client[..m]).unwrap();
        assert_eq!(from_peer, peer);
        assert_eq!(received, &data[..]);
        answered += 1;
    }
    let stats = region.change();
    assert_eq!(answered, PACKETS);
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
    assert_eq!(client.metrics().sent, u64::from(PACKETS));
    assert_eq!(client.metrics().received, u64::from(PACKETS));

    // Before a peer has a channel, send_into writes Send indications,
    // also without allocating.
    let unbound: SocketAddr = "203.0.113.6:7000".parse().unwrap();
    let region = Region::new();
    for seq in 0..PACKETS {
        payload(seq, &mut data);
        let (_, n) = client.send_into(unbound, &data, &mut to_server).unwrap();
        assert_eq!(to_server[..2], [0x00, 0x16]);
        assert_eq!(to_server[n - PAYLOAD_LEN..n], data);
    }
    let stats = region.change();
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
    let indication = Repr::parse_bytes(&to_server[..PAYLOAD_LEN + 36]).unwrap();
    assert_eq!(
        (indication.class, indication.method),
        (Class::Indication, Method::SEND)
    );
    assert!(
        indication
            .attributes
            .contains(&Attribute::XorPeerAddress(unbound))
    );

    // The counter does see the queued indication path's copies.
    let region = Region::new();
    client.send(peer, &data).unwrap();
    assert!(region.change().allocations > 0);
}
