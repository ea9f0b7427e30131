//! Frames from the guest into the gateway's neighbour discovery.
//!
//! Whatever the bytes, the responder does not panic; what it answers is a
//! well-formed Router or Neighbor Advertisement from the gateway with a
//! valid checksum, and a refused frame changes no counter but `malformed`.
#![no_main]

use arp_virt::EthernetAddress;
use arp_virt::ndp::{NdpConfig, NdpOutcome, NdpResponder};
use libfuzzer_sys::fuzz_target;
use smoltcp::wire::{EthernetFrame, Icmpv6Packet, Ipv6Packet};

fuzz_target!(|frame: &[u8]| {
    let gateway = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
    let config = NdpConfig::new(
        "fd00:1:2::/48".parse().unwrap(),
        "fd00:1:2:5::/64".parse().unwrap(),
        gateway,
    );
    let mut ndp = NdpResponder::new(config).unwrap();
    match ndp.handle_frame(frame) {
        Ok(NdpOutcome::Reply(reply)) => {
            let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
            assert_eq!(eth.src_addr(), gateway);
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
            assert_eq!(ip.src_addr(), ndp.router_addr());
            assert_eq!(ip.hop_limit(), 255);
            let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
            assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
            let stats = ndp.stats();
            assert_eq!(stats.advertisements + stats.neighbour_replies, 1);
        }
        Ok(NdpOutcome::Ignored) => assert_eq!(ndp.stats().malformed, 0),
        Err(_) => {
            let stats = ndp.stats();
            assert_eq!((stats.malformed, stats.advertisements, stats.neighbour_replies), (1, 0, 0));
            assert_eq!(ndp.poll_event(), None);
        }
    }
});
