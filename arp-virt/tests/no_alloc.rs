//! The hot path does not allocate: answering who-has requests, ignoring
//! frames for outside addresses and refusing RFC 5227 probes of held
//! addresses, counted per thread by `wow_test_hosts::alloc_count`, so what
//! other threads of the process allocate meanwhile is not counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use arp_virt::{Config, EthernetAddress, Outcome, Responder, wire};
use wow_test_hosts::alloc_count::{CountingAlloc, Region};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let guest = EthernetAddress([0x52, 0x54, 0, 0, 0, 2]);
    wire::Repr {
        destination: EthernetAddress::BROADCAST,
        source: guest,
        operation: wire::Operation::Request,
        sender_hardware_addr: guest,
        sender_protocol_addr: sender,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .to_bytes()
    .to_vec()
}

#[test]
fn answering_and_ignoring_frames_allocates_nothing() {
    let gateway = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
    let guest_addr = Ipv4Addr::new(10, 10, 0, 2);
    let mut config = Config::new("10.10.0.0/16".parse().unwrap(), gateway);
    config.guest_addr = Some(guest_addr);
    let mut responder = Responder::new(config).unwrap();
    while responder.poll_transmit().is_some() {}
    let held = Ipv4Addr::new(10, 10, 7, 9);
    let others = |a: Ipv4Addr| a == held;
    // Built beforehand: who-has for virtual hosts, for an outside address,
    // and a probe (sender 0.0.0.0) for an address another host holds.
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| match i % 3 {
            0 => request(guest_addr, Ipv4Addr::from(0x0a0a_0100 + i)),
            1 => request(guest_addr, Ipv4Addr::new(192, 0, 2, 1)),
            _ => request(Ipv4Addr::UNSPECIFIED, held),
        })
        .collect();
    // Warm-up: event queues reach their working size.
    for f in &frames {
        let _ = responder.handle_frame(f, &others);
        while responder.poll_event().is_some() {}
    }

    let region = Region::new();
    let (mut replies, mut ignored) = (0, 0);
    for f in &frames {
        match responder.handle_frame(f, &others).unwrap() {
            Outcome::Reply(reply) => {
                assert_eq!(reply.repr().sender_hardware_addr, gateway);
                replies += 1;
            }
            Outcome::Ignored(_) => ignored += 1,
        }
        while responder.poll_event().is_some() {}
    }
    let stats = region.change();
    assert!(
        replies > 600 && ignored > 300,
        "{replies} replies, {ignored} ignored"
    );
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
}
