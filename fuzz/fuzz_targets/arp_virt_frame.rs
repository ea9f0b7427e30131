//! Frames from the guest into the ARP responder, and the ARP frame parser.
//!
//! The first input byte picks the responder's situation (guest address known
//! or not, which addresses other hosts hold); the rest is the Ethernet frame.
#![no_main]

use std::net::Ipv4Addr;

use arp_virt::wire::{FRAME_LEN, Operation, Repr};
use arp_virt::{Config, EthernetAddress, Outcome, Responder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, frame)) = data.split_first() else {
        return;
    };

    // Parse then emit gives back the frame's leading bytes.
    if let Ok(repr) = Repr::parse(frame) {
        assert_eq!(&repr.to_bytes()[..], &frame[..FRAME_LEN]);
    }

    let prefix = [8, 16, 24, 30, 31, 32][usize::from(knobs & 7) % 6];
    let network = arp_virt::Ipv4Net::new(Ipv4Addr::new(10, 1, 2, 3), prefix).unwrap();
    let mut config = Config::new(network, EthernetAddress([0x02, 0, 0, 0, 0, 1]));
    if knobs & 8 != 0 && prefix < 31 {
        config.guest_addr = Some(Ipv4Addr::from(u32::from(config.gateway_addr) + 1));
    }
    let mut responder = Responder::new(config).unwrap();
    responder.poll_transmit().unwrap();
    let held = |addr: Ipv4Addr| knobs & 16 != 0 && addr.octets()[3] % 2 == 0;

    match responder.handle_frame(frame, &held) {
        Ok(Outcome::Reply(reply)) => {
            let request = Repr::parse(frame).unwrap();
            let repr = *reply.repr();
            assert_eq!(Repr::parse(reply.as_bytes()), Ok(repr));
            assert_eq!(repr.operation, Operation::Reply);
            assert_eq!(repr.sender_hardware_addr, config.gateway_hardware_addr);
            assert_eq!(repr.destination, request.sender_hardware_addr);
            assert_eq!(repr.sender_protocol_addr, request.target_protocol_addr);
            assert!(responder.answers_for(repr.sender_protocol_addr));
            assert_eq!(responder.stats().replies, 1);
        }
        Ok(Outcome::Ignored(_)) => assert_eq!(responder.stats().ignored, 1),
        Err(error) => {
            assert!(error.is_malformed());
            let stats = responder.stats();
            assert_eq!((stats.malformed, stats.replies, stats.ignored), (1, 0, 0));
            assert_eq!(responder.poll_event(), None);
        }
    }
    assert_eq!(responder.poll_transmit(), None);
});
