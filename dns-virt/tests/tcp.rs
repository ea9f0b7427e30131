//! DNS over TCP end to end, in process: smoltcp's own TCP socket is the
//! querier, `TcpEndpoint` terminates the connection, `Server` answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dns_virt::{Config, MemDevice, Name, Server, TcpEndpoint, Transport};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{RData, RecordType};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 7);

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Message::query();
    q.metadata.id = id;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = q.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    framed
}

#[test]
fn a_smoltcp_client_resolves_over_tcp_two_queries_on_one_connection() {
    let base = Instant::now();
    let mut dns = Server::new(Config::default());
    dns.register(base, "web", Ipv4Addr::new(10, 128, 0, 9), None)
        .unwrap();
    let mut endpoint = TcpEndpoint::new(base, GATEWAY, 9, 1400);

    // The querier: a smoltcp stack on an IP-medium device.
    let mut device = MemDevice::ip(1400);
    let mut iface = Interface::new(
        IfaceConfig::new(HardwareAddress::Ip),
        &mut device,
        smoltcp::time::Instant::ZERO,
    );
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(CLIENT), 9)).unwrap());
    let mut sockets = SocketSet::new(Vec::new());
    let handle = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    ));
    let cx = iface.context();
    sockets
        .get_mut::<tcp::Socket>(handle)
        .connect(cx, (IpAddress::Ipv4(GATEWAY), 53), 40000)
        .unwrap();

    let mut sent = false;
    let mut received = Vec::new();
    for ms in 1..2000u64 {
        let now = base + Duration::from_millis(ms);
        iface.poll(
            smoltcp::time::Instant::from_millis(ms as i64),
            &mut device,
            &mut sockets,
        );
        let socket = sockets.get_mut::<tcp::Socket>(handle);
        if !sent && socket.may_send() {
            // Two queries in one write; the second for a name by rule.
            let mut both = query(1, "Web.wow.internal.");
            both.extend(query(2, "c010128000005.wow.internal."));
            socket.send_slice(&both).unwrap();
            sent = true;
        }
        while socket.can_recv() {
            let mut buf = [0u8; 1024];
            let n = socket.recv_slice(&mut buf).unwrap();
            received.extend_from_slice(&buf[..n]);
        }
        while let Some(p) = device.tx.pop_front() {
            endpoint.handle_packet(now, &p);
        }
        endpoint.handle_timeout(now);
        while let Some((from, q)) = endpoint.poll_query() {
            assert_eq!(from, (CLIENT, 40000).into());
            dns.handle_input(now, from, Transport::Tcp, &q);
        }
        while let Some(t) = dns.poll_transmit() {
            assert_eq!(t.transport, Transport::Tcp);
            assert!(endpoint.send(now, t.destination, &t.payload));
        }
        while let Some(p) = endpoint.poll_packet() {
            device.rx.push_back(p);
        }
        if received.len() > 4 && replies(&received).len() == 2 {
            break;
        }
    }
    let replies = replies(&received);
    assert_eq!(replies.len(), 2, "{} bytes back", received.len());
    assert_eq!(replies[0].metadata.id, 1);
    assert_eq!(
        replies[0].answers[0].data,
        RData::A(Ipv4Addr::new(10, 128, 0, 9).into())
    );
    assert_eq!(replies[1].metadata.id, 2);
    assert_eq!(
        replies[1].answers[0].data,
        RData::A(Ipv4Addr::new(10, 128, 0, 5).into())
    );
}

/// The whole length-prefixed messages in `stream`.
fn replies(stream: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut rest = stream;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len {
            break;
        }
        out.push(Message::from_vec(&rest[2..2 + len]).unwrap());
        rest = &rest[2 + len..];
    }
    out
}
