//! smoltcp's DNS client socket resolving through the sans-IO server, in
//! process: smoltcp's IPv4/UDP packets are carried to `Server::handle_input`
//! and the replies wrapped back into IPv4/UDP packets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dns_virt::{Config, MemDevice, Server, Transport};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::dns::{self, GetQueryResultError};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    DnsQueryType, HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket,
    UdpRepr,
};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 2);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 1);

/// Hands smoltcp's DNS queries to the server and its replies back.
fn carry(wire: &mut MemDevice, server: &mut Server, now: Instant) {
    let caps = ChecksumCapabilities::default();
    while let Some(packet) = wire.tx.pop_front() {
        let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
        let ip_repr = Ipv4Repr::parse(&ip, &caps).unwrap();
        assert_eq!(ip_repr.next_header, IpProtocol::Udp);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let (src, dst) = (
            IpAddress::Ipv4(ip_repr.src_addr),
            IpAddress::Ipv4(ip_repr.dst_addr),
        );
        let udp_repr = UdpRepr::parse(&udp, &src, &dst, &caps).unwrap();
        assert_eq!(udp_repr.dst_port, 53);
        let from = SocketAddr::from((ip_repr.src_addr, udp_repr.src_port));
        server.handle_input(now, from, Transport::Udp, udp.payload());
        while let Some(t) = server.poll_transmit() {
            let reply_udp = UdpRepr {
                src_port: 53,
                dst_port: udp_repr.src_port,
            };
            let reply_ip = Ipv4Repr {
                src_addr: SERVER_IP,
                dst_addr: ip_repr.src_addr,
                next_header: IpProtocol::Udp,
                payload_len: reply_udp.header_len() + t.payload.len(),
                hop_limit: 64,
            };
            let mut buf = vec![0xa5; reply_ip.buffer_len() + reply_ip.payload_len];
            let mut ip_out = Ipv4Packet::new_unchecked(&mut buf[..]);
            reply_ip.emit(&mut ip_out, &caps);
            let mut udp_out = UdpPacket::new_unchecked(ip_out.payload_mut());
            reply_udp.emit(
                &mut udp_out,
                &IpAddress::Ipv4(SERVER_IP),
                &IpAddress::Ipv4(ip_repr.src_addr),
                t.payload.len(),
                |p| p.copy_from_slice(&t.payload),
                &caps,
            );
            wire.rx.push_back(buf);
        }
    }
}

fn resolve(names: &[&str]) -> Vec<Result<Vec<IpAddress>, GetQueryResultError>> {
    let mut server = Server::new(Config::default());
    let start = Instant::now();
    server
        .register(start, "web", Ipv4Addr::new(10, 128, 0, 9), None)
        .unwrap();
    let mut wire = MemDevice::ip(1500);
    let mut config = IfaceConfig::new(HardwareAddress::Ip);
    config.random_seed = 7;
    let smol_start = SmolInstant::from_millis(0);
    let mut iface = Interface::new(config, &mut wire, smol_start);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(CLIENT_IP), 9)).unwrap());
    let mut sockets = SocketSet::new(vec![]);
    let handle = sockets.add(dns::Socket::new(&[IpAddress::Ipv4(SERVER_IP)], vec![]));
    let queries: Vec<_> = names
        .iter()
        .map(|n| {
            sockets
                .get_mut::<dns::Socket>(handle)
                .start_query(iface.context(), n, DnsQueryType::A)
                .unwrap()
        })
        .collect();
    let mut results: Vec<Option<Result<Vec<IpAddress>, GetQueryResultError>>> =
        vec![None; names.len()];
    // Simulated time: 10 ms per round, far below smoltcp's retransmit timer.
    for round in 0..200u64 {
        let t = smol_start + smoltcp::time::Duration::from_millis(round * 10);
        iface.poll(t, &mut wire, &mut sockets);
        carry(
            &mut wire,
            &mut server,
            start + Duration::from_millis(round * 10),
        );
        iface.poll(t, &mut wire, &mut sockets);
        let socket = sockets.get_mut::<dns::Socket>(handle);
        for (slot, q) in results.iter_mut().zip(&queries) {
            if slot.is_none() {
                match socket.get_query_result(*q) {
                    Err(GetQueryResultError::Pending) => {}
                    r => *slot = Some(r.map(|v| v.to_vec())),
                }
            }
        }
        if results.iter().all(Option::is_some) {
            break;
        }
    }
    results.into_iter().map(Option::unwrap).collect()
}

#[test]
fn smoltcp_dns_socket_resolves_registered_and_rule_names() {
    let r = resolve(&[
        "web.wow.internal",
        "WEB.Wow.Internal",
        "c010200003004.wow.internal",
        "nope.wow.internal",
    ]);
    let web = vec![IpAddress::Ipv4(Ipv4Addr::new(10, 128, 0, 9))];
    assert_eq!(r[0], Ok(web.clone()));
    assert_eq!(r[1], Ok(web));
    assert_eq!(
        r[2],
        Ok(vec![IpAddress::Ipv4(Ipv4Addr::new(10, 200, 3, 4))])
    );
    assert_eq!(r[3], Err(GetQueryResultError::Failed));
}
