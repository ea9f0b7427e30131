//! parse(emit(x)) == x for every wire repr, and no input panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Instant;

use dhcp_virt::wire::{
    self, ClientFqdn, ClientMessage, ClientMessageKind, HardwareAddr, LeaseTimes, Reply, ReplyKind,
};
use dhcp_virt::{Config, MemoryStore, Server};
use dhcproto::Name;
use ipnet::Ipv4Net;
use proptest::prelude::*;

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn hw() -> impl Strategy<Value = HardwareAddr> {
    prop_oneof![
        any::<[u8; 6]>().prop_map(HardwareAddr::ethernet),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..=16))
            .prop_map(|(t, a)| HardwareAddr::new(t, &a).unwrap()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,30}"
}

fn name() -> impl Strategy<Value = Name> {
    proptest::collection::vec("[a-z][a-z0-9]{0,10}", 1..4)
        .prop_map(|labels| Name::from_ascii(format!("{}.", labels.join("."))).unwrap())
}

fn kind() -> impl Strategy<Value = ClientMessageKind> {
    prop_oneof![
        Just(ClientMessageKind::Discover),
        Just(ClientMessageKind::Request),
        Just(ClientMessageKind::Decline),
        Just(ClientMessageKind::Release),
        Just(ClientMessageKind::Inform),
    ]
}

prop_compose! {
    fn client_message()(
        kind in kind(),
        xid in any::<u32>(),
        secs in any::<u16>(),
        broadcast in any::<bool>(),
        hardware_addr in hw(),
        client_addr in ip(),
        relay_addr in ip(),
        hops in any::<u8>(),
        client_id in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..20)),
        requested_addr in proptest::option::of(ip()),
        server_id in proptest::option::of(ip()),
        parameter_request_list in proptest::option::of(proptest::collection::vec(1u8..=254, 1..20)),
        lease_secs in proptest::option::of(any::<u32>()),
        max_message_size in proptest::option::of(any::<u16>()),
        hostname in proptest::option::of(text()),
        fqdn in proptest::option::of(((0u8..16).prop_map(|f| f | 4), name())),
    ) -> ClientMessage {
        let mut m = ClientMessage::new(kind, xid, hardware_addr);
        m.secs = secs;
        m.broadcast = broadcast;
        m.client_addr = client_addr;
        m.relay_addr = relay_addr;
        m.hops = hops;
        m.client_id = client_id;
        m.requested_addr = requested_addr;
        m.server_id = server_id;
        m.parameter_request_list = parameter_request_list;
        m.lease_secs = lease_secs;
        m.max_message_size = max_message_size;
        m.hostname = hostname;
        m.fqdn = fqdn.map(|(flags, name)| ClientFqdn { flags, name });
        m
    }
}

fn route() -> impl Strategy<Value = (Ipv4Net, Ipv4Addr)> {
    (ip(), 0u8..=32, ip()).prop_map(|(a, len, gw)| (Ipv4Net::new(a, len).unwrap().trunc(), gw))
}

prop_compose! {
    fn reply()(
        kind in prop_oneof![Just(ReplyKind::Offer), Just(ReplyKind::Ack), Just(ReplyKind::Nak)],
        xid in any::<u32>(),
        broadcast in any::<bool>(),
        hardware_addr in hw(),
        addrs in (ip(), ip(), ip(), ip()),
        client_id in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..20)),
        lease in proptest::option::of(any::<(u32, u32, u32)>()),
        subnet_mask in proptest::option::of(ip()),
        broadcast_addr in proptest::option::of(ip()),
        routers in proptest::collection::vec(ip(), 0..3),
        dns_servers in proptest::collection::vec(ip(), 0..3),
        domain_name in proptest::option::of(text()),
        domain_search in proptest::collection::vec(name(), 0..3),
        interface_mtu in proptest::option::of(any::<u16>()),
        classless_routes in proptest::collection::vec(route(), 0..4),
        message in proptest::option::of(text()),
        fqdn in proptest::option::of(((0u8..16).prop_map(|f| f | 4), name())),
    ) -> Reply {
        let (client_addr, your_addr, relay_addr, server_id) = addrs;
        Reply {
            kind,
            xid,
            broadcast,
            hardware_addr,
            client_addr,
            your_addr,
            relay_addr,
            server_id,
            client_id,
            lease: lease.map(|(lease_secs, renewal_secs, rebinding_secs)| LeaseTimes {
                lease_secs,
                renewal_secs,
                rebinding_secs,
            }),
            subnet_mask,
            broadcast_addr,
            routers,
            dns_servers,
            domain_name,
            domain_search,
            interface_mtu,
            classless_routes,
            message,
            fqdn: fqdn.map(|(flags, name)| ClientFqdn { flags, name }),
        }
    }
}

proptest! {
    #[test]
    fn client_message_round_trips(m in client_message()) {
        prop_assert_eq!(ClientMessage::parse(&m.emit()).unwrap(), m);
    }

    #[test]
    fn reply_round_trips(r in reply()) {
        prop_assert_eq!(Reply::parse(&r.emit()).unwrap(), r);
    }

    #[test]
    fn frame_round_trips(
        src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(),
        sa in ip(), da in ip(),
        payload in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut frame = Vec::new();
        wire::emit_frame(src, dst, sa, da, wire::SERVER_PORT, &payload, &mut frame);
        let inbound = wire::parse_frame(&frame).unwrap();
        prop_assert_eq!(inbound.source_mac, src);
        prop_assert_eq!(inbound.source_addr, sa);
        prop_assert_eq!(inbound.destination_addr, da);
        prop_assert_eq!(inbound.payload, &payload[..]);
    }

    /// Mutated messages never panic the parser or the server, and a
    /// refused message leaves the lease table as it was.
    #[test]
    fn mutated_input_never_panics(
        m in client_message(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = m.emit();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] ^= b;
        }
        bytes.truncate(cut % (bytes.len() + 1) + 200);
        let t0 = Instant::now();
        let mut s = Server::new(t0, std::time::SystemTime::UNIX_EPOCH, Config::default(), MemoryStore::new()).unwrap();
        let _ = ClientMessage::parse(&bytes);
        if ClientMessage::parse(&bytes).is_err() {
            prop_assert!(s.handle_message(t0, &bytes).is_err());
            prop_assert_eq!(s.leases().count(), 0);
            prop_assert!(s.poll_transmit().is_none());
        } else {
            let _ = s.handle_message(t0, &bytes);
        }
    }
}
