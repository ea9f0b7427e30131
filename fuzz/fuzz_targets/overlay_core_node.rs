//! Feeds a joined overlay node an arbitrary sequence of datagrams (raw or
//! valid-but-arbitrary messages), timer ticks and commands from a few peer
//! endpoints. The node must never panic and must keep its invariants.
//! Sends and transmits alternate between the owned and the pooled API, and
//! delivered payloads are recycled; the pool must stay within its limit.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use overlay_core::wire::MAX_MESSAGE_LEN;
use overlay_core::{Address, Config, Event, Node};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let me: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let peers: [SocketAddr; 4] = [
        "10.0.0.2:7000".parse().unwrap(),
        "10.0.0.3:7000".parse().unwrap(),
        "[fd00::4]:7000".parse().unwrap(),
        "10.0.0.5:9".parse().unwrap(),
    ];
    let config = Config {
        endpoints: vec![me],
        ..Config::default()
    };
    let mut node = Node::new_with_insecure_seed(now, config, Address::from_key(b"fuzz node"), 1);
    node.join(now, &peers[..1]).unwrap();
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 8 {
            // A datagram: length byte, then that many bytes.
            0..=4 => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let len = usize::from(len).min(tail.len());
                let (bytes, tail) = tail.split_at(len);
                rest = tail;
                let from = peers[usize::from(op >> 3) % peers.len()];
                let _ = node.handle_input(now, from, bytes);
            }
            5 => {
                now += Duration::from_millis(u64::from(op) * 40);
                if let Some(t) = node.poll_timeout() {
                    if t <= now {
                        node.handle_timeout(now);
                    }
                }
            }
            6 => {
                let key = [op; 3];
                let _ = match op >> 6 {
                    0 => node.dht_put(now, &key, b"v", Duration::from_secs(60)),
                    1 => node.dht_get(now, &key),
                    2 => node.dht_create(now, &key, b"w", Duration::from_secs(60)),
                    _ => node.echo(now, Address::from_key(&key)),
                };
            }
            _ if op & 0x40 == 0 => {
                let _ = node.send(now, Address::from_key(&[op]), vec![op; 8]);
            }
            _ => {
                let _ = node.send_slice(now, Address::from_key(&[op]), &[op; 8]);
            }
        }
        if op & 0x80 == 0 {
            while let Some(t) = node.poll_transmit() {
                // Everything the node sends must encode and decode again.
                let bytes = t.message.to_vec();
                assert_eq!(
                    overlay_core::Message::parse(&bytes).as_ref(),
                    Ok(&t.message)
                );
            }
        } else {
            while let Some((_, n)) = node.poll_transmit_into(&mut buf) {
                assert!(overlay_core::Message::parse(&buf[..n]).is_ok());
            }
        }
        while let Some(e) = node.poll_event() {
            if let Event::Delivered { payload, .. } = e {
                node.recycle(payload);
            }
        }
        assert!(node.buffer_pool().len() <= node.buffer_pool().limit());
        assert_eq!(node.stats().transmits_skipped, 0);
        assert!(node.connections().len() <= node.max_connections() + 6);
    }
});
