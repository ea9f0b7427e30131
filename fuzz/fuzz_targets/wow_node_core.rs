//! Feeds a node core (overlay, ARP, DHCP, DNS, routing, punch handling)
//! arbitrary overlay payloads from a linked peer, raw underlay datagrams,
//! raw TAP frames and timer ticks. The core must never panic.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use dhcp_virt::MemoryStore;
use libfuzzer_sys::fuzz_target;
use overlay_core::wire::{LinkRequest, Payload, Routed};
use overlay_core::{Address, Message, Mode, Roles};
use wow_core::core::Core;
use wow_core::demo::{overlay_config, settings};

fn emit(message: &Message) -> Vec<u8> {
    let mut buf = vec![0; message.buffer_len()];
    let n = message.emit(&mut buf);
    buf.truncate(n);
    buf
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let me: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let peer_ep: SocketAddr = "10.0.0.2:4000".parse().unwrap();
    let address = Address::from_key(b"fuzz node");
    let peer = Address::from_key(b"fuzz peer");
    let mut core = Core::new_with_insecure_seed(
        now,
        std::time::SystemTime::UNIX_EPOCH,
        settings(),
        overlay_config(me),
        address,
        MemoryStore::new(),
        1,
    )
    .unwrap();
    // The peer links to us, so that its routed messages are accepted.
    // A probe, then the answer to the core's challenge (the open identity
    // asks for no proof).
    let mut link = LinkRequest {
        nonce: 7,
        challenge: 0,
        sender: peer,
        target: Address::ZERO,
        roles: Roles::NEAR,
        endpoints: vec![peer_ep],
        identity: Vec::new(),
    };
    core.handle_udp(now, peer_ep, &emit(&Message::LinkRequest(link.clone())));
    let mut out = vec![0u8; 65536];
    while let Some((_, len)) = core.poll_udp(&mut out) {
        if let Ok(Message::LinkReply(r)) = Message::parse(&out[..len]) {
            link.challenge = r.challenge;
        }
    }
    core.handle_udp(now, peer_ep, &emit(&Message::LinkRequest(link)));
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let take = |rest: &mut &[u8]| -> Vec<u8> {
            let Some((&len, tail)) = rest.split_first() else {
                *rest = &[];
                return Vec::new();
            };
            let len = (usize::from(len) * 4).min(tail.len());
            let (bytes, tail) = tail.split_at(len);
            *rest = tail;
            bytes.to_vec()
        };
        match op % 8 {
            // An overlay payload, as is or behind a well-formed header.
            0..=3 => {
                let mut payload = take(&mut rest);
                if op % 8 >= 2 {
                    let mut header = vec![op >> 5];
                    header.extend_from_slice(&Ipv4Addr::new(10, 128, 0, op).octets());
                    header.extend_from_slice(
                        &core
                            .guest_addr()
                            .unwrap_or(Ipv4Addr::new(10, 128, 1, 2))
                            .octets(),
                    );
                    header.append(&mut payload);
                    payload = header;
                }
                let message = Message::Routed(Routed {
                    source: if op & 0x10 == 0 {
                        peer
                    } else {
                        Address::from_key(&[op])
                    },
                    destination: address,
                    mode: Mode::Exact,
                    hops: 1,
                    hop_limit: 16,
                    payload: Payload::Data(payload),
                });
                core.handle_udp(now, peer_ep, &emit(&message));
            }
            4 => {
                let bytes = take(&mut rest);
                core.handle_udp(now, peer_ep, &bytes);
            }
            5 | 6 => {
                let frame = take(&mut rest);
                core.handle_tap_frame(now, &frame);
            }
            _ => {
                now += Duration::from_millis(u64::from(op) * 20);
                if core.poll_timeout().is_some_and(|t| t <= now) {
                    core.handle_timeout(now, SystemTime::UNIX_EPOCH + Duration::from_secs(1));
                }
            }
        }
        while core.poll_udp(&mut out).is_some() {}
        while core.poll_tap_frame().is_some() {}
        while core.poll_event().is_some() {}
    }
});
