//! DNS over TCP at the virtual gateway (RFC 1035 §4.2.2, RFC 7766).
//!
//! The guest's resolver retries over TCP when an answer comes back
//! truncated, and some resolvers (`options use-vc`, `dig +tcp`) use TCP
//! from the start. The node terminates those connections itself: a small
//! smoltcp stack on the gateway address, fed with the guest's TCP packets
//! to port 53, with a few listening sockets. Each connection's byte stream
//! is cut into messages by dns-virt's [`TcpFramer`] and answered by the
//! same [`dns_virt::Server`] as UDP queries; answers go back on the
//! connection they came from. TCP to any other gateway port is refused
//! with a reset.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::Instant;
//! use wow_node::tcp_dns::TcpDns;
//!
//! let mut tcp = TcpDns::new(Ipv4Addr::new(10, 128, 0, 1), 16, 1384, Instant::now());
//! // Nothing to do until the guest connects.
//! assert!(tcp.poll_packet().is_none());
//! assert!(tcp.poll_query().is_none());
//! ```

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use dns_virt::TcpFramer;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::guest::MemDevice;

/// Connections served at once.
pub const CONNECTIONS: usize = 8;
/// The DNS port.
const PORT: u16 = 53;
const RX_BUFFER: usize = 4096;
/// Room for a few whole answers (a message is at most 65535 octets, ours
/// far less).
const TX_BUFFER: usize = 16 * 1024;
/// Idle connections are closed after this long (RFC 7766 §6.2.3 suggests
/// seconds).
const IDLE_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(10);

/// One listening or connected socket and its stream's framer.
struct Slot {
    handle: SocketHandle,
    framer: TcpFramer,
}

/// The gateway's DNS-over-TCP endpoint. See the [module docs](self).
pub struct TcpDns {
    iface: Interface,
    device: MemDevice,
    sockets: SocketSet<'static>,
    slots: Vec<Slot>,
    queries: VecDeque<(SocketAddr, Vec<u8>)>,
    base: Instant,
    /// The stack's next deadline, as of the last poll.
    next: Option<Instant>,
}

impl std::fmt::Debug for TcpDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpDns")
            .field("connections", &self.slots.len())
            .finish_non_exhaustive()
    }
}

fn listening_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; RX_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TX_BUFFER]),
    );
    s.set_timeout(Some(IDLE_TIMEOUT));
    let _ = s.listen(PORT);
    s
}

impl TcpDns {
    /// An endpoint at `gateway` in a network of `prefix` bits, for packets
    /// of at most `mtu` bytes.
    pub fn new(gateway: Ipv4Addr, prefix: u8, mtu: u16, now: Instant) -> TcpDns {
        let mut device = MemDevice::ip(usize::from(mtu));
        let config = Config::new(HardwareAddress::Ip);
        let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(gateway), prefix));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let slots = (0..CONNECTIONS)
            .map(|_| Slot {
                handle: sockets.add(listening_socket()),
                framer: TcpFramer::new(),
            })
            .collect();
        TcpDns {
            iface,
            device,
            sockets,
            slots,
            queries: VecDeque::new(),
            base: now,
            next: None,
        }
    }

    fn smol(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            now.saturating_duration_since(self.base).as_micros() as i64
        )
    }

    /// An IPv4 packet from the guest (TCP to the gateway).
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        if self.device.rx.len() < 64 {
            self.device.rx.push_back(packet.to_vec());
        }
        self.poll(now);
    }

    /// Runs the stack's timers (retransmissions, idle timeouts).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.poll(now);
    }

    /// When [`TcpDns::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// Sends `bytes` (a length-prefixed answer, as dns-virt queues it for
    /// TCP) on the connection from `to`; `false` if it is gone or full.
    pub fn send(&mut self, now: Instant, to: SocketAddr, bytes: &[u8]) -> bool {
        let remote = IpEndpoint::new(
            match to.ip() {
                IpAddr::V4(a) => IpAddress::Ipv4(a),
                IpAddr::V6(_) => return false,
            },
            to.port(),
        );
        let sent = self.slots.iter().any(|slot| {
            let s = self.sockets.get_mut::<tcp::Socket>(slot.handle);
            s.remote_endpoint() == Some(remote)
                && s.can_send()
                && s.send_capacity() - s.send_queue() >= bytes.len()
                && s.send_slice(bytes).is_ok()
        });
        self.poll(now);
        sent
    }

    /// The next whole query received: the querier and the message
    /// (without its length prefix).
    pub fn poll_query(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.queries.pop_front()
    }

    /// The next IPv4 packet for the guest.
    pub fn poll_packet(&mut self) -> Option<Vec<u8>> {
        self.device.tx.pop_front()
    }

    fn poll(&mut self, now: Instant) {
        let ts = self.smol(now);
        // Sockets that closed (or were aborted) since the last poll, which
        // sent their FIN or RST, listen again.
        for slot in &mut self.slots {
            let s = self.sockets.get_mut::<tcp::Socket>(slot.handle);
            if !s.is_open() {
                slot.framer = TcpFramer::new();
                let _ = s.listen(PORT);
            }
        }
        self.iface.poll(ts, &mut self.device, &mut self.sockets);
        let mut buf = [0u8; 2048];
        for slot in &mut self.slots {
            let s = self.sockets.get_mut::<tcp::Socket>(slot.handle);
            let from = s.remote_endpoint().and_then(|e| match e.addr {
                IpAddress::Ipv4(a) => Some(SocketAddr::new(IpAddr::V4(a), e.port)),
                #[allow(unreachable_patterns)]
                _ => None,
            });
            while s.can_recv() {
                match s.recv_slice(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => slot.framer.push(&buf[..n]),
                }
            }
            loop {
                match slot.framer.next_message() {
                    Ok(Some(message)) => {
                        if let Some(from) = from
                            && self.queries.len() < 64
                        {
                            self.queries.push_back((from, message.to_vec()));
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // A zero-length message: the stream is broken.
                        s.abort();
                        break;
                    }
                }
            }
            // The peer closed its side: close ours once answers are out.
            if s.state() == tcp::State::CloseWait && s.send_queue() == 0 {
                s.close();
            }
        }
        // Sockets closed or aborted above have a FIN or RST to send.
        self.iface.poll(ts, &mut self.device, &mut self.sockets);
        self.next = self.iface.poll_at(ts, &self.sockets).map(|at| {
            self.base + std::time::Duration::from_micros(at.total_micros().max(0) as u64)
        });
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;

    const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 1);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 7);

    /// A smoltcp client stack on the guest's side.
    struct Client {
        iface: Interface,
        device: MemDevice,
        sockets: SocketSet<'static>,
        handle: SocketHandle,
    }

    impl Client {
        fn new() -> Client {
            let mut device = MemDevice::ip(1384);
            let mut iface = Interface::new(
                Config::new(HardwareAddress::Ip),
                &mut device,
                smoltcp::time::Instant::ZERO,
            );
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(CLIENT), 16));
            });
            let mut sockets = SocketSet::new(Vec::new());
            let handle = sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            ));
            Client {
                iface,
                device,
                sockets,
                handle,
            }
        }

        fn socket(&mut self) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket>(self.handle)
        }
    }

    /// Runs both stacks for `steps` milliseconds of simulated time.
    fn run(client: &mut Client, server: &mut TcpDns, base: Instant, at: &mut u64, steps: u64) {
        for _ in 0..steps {
            *at += 1;
            let now = base + Duration::from_millis(*at);
            let ts = smoltcp::time::Instant::from_millis(*at as i64);
            client
                .iface
                .poll(ts, &mut client.device, &mut client.sockets);
            while let Some(p) = client.device.tx.pop_front() {
                server.handle_packet(now, &p);
            }
            server.handle_timeout(now);
            while let Some(p) = server.poll_packet() {
                client.device.rx.push_back(p);
            }
        }
    }

    /// A server and a client that connected to its `port` 20 ms ago.
    fn connected(port: u16) -> (Instant, TcpDns, Client, u64) {
        let base = Instant::now();
        let mut server = TcpDns::new(GATEWAY, 16, 1384, base);
        let mut client = Client::new();
        let mut at = 0;
        let cx = client.iface.context();
        client
            .sockets
            .get_mut::<tcp::Socket>(client.handle)
            .connect(cx, (IpAddress::Ipv4(GATEWAY), port), 40000)
            .unwrap();
        run(&mut client, &mut server, base, &mut at, 20);
        (base, server, client, at)
    }

    #[test]
    fn queries_arrive_whole_and_answers_go_back_on_their_connection() {
        let (base, mut server, mut client, mut at) = connected(53);
        assert!(client.socket().may_send(), "{:?}", client.socket().state());

        // Two messages, the first split across writes.
        client.socket().send_slice(&[0, 5, b'h', b'e']).unwrap();
        run(&mut client, &mut server, base, &mut at, 100);
        assert!(
            server.poll_query().is_none(),
            "half a message is not a query"
        );
        client
            .socket()
            .send_slice(&[b'l', b'l', b'o', 0, 3, b'a', b'b', b'c'])
            .unwrap();
        run(&mut client, &mut server, base, &mut at, 100);
        let from = SocketAddr::new(IpAddr::V4(CLIENT), 40000);
        assert_eq!(server.poll_query(), Some((from, b"hello".to_vec())));
        assert_eq!(server.poll_query(), Some((from, b"abc".to_vec())));

        assert!(server.send(base + Duration::from_millis(at), from, &[0, 2, b'o', b'k']));
        assert!(!server.send(
            base + Duration::from_millis(at),
            SocketAddr::new(IpAddr::V4(CLIENT), 40001),
            b"x"
        ));
        run(&mut client, &mut server, base, &mut at, 100);
        let mut got = [0u8; 16];
        let n = client.socket().recv_slice(&mut got).unwrap();
        assert_eq!(&got[..n], &[0, 2, b'o', b'k']);

        // The client closes; the server closes too and listens again.
        client.socket().close();
        run(&mut client, &mut server, base, &mut at, 50);
        assert!(!client.socket().is_active() || client.socket().state() == tcp::State::TimeWait);
    }

    #[test]
    fn other_ports_are_refused() {
        let (_, _, mut client, _) = connected(80);
        assert_eq!(client.socket().state(), tcp::State::Closed, "reset");
    }

    #[test]
    fn a_zero_length_message_aborts_the_connection() {
        let (base, mut server, mut client, mut at) = connected(53);
        client.socket().send_slice(&[0, 0]).unwrap();
        run(&mut client, &mut server, base, &mut at, 100);
        assert!(server.poll_query().is_none());
        assert_eq!(client.socket().state(), tcp::State::Closed, "reset");
    }
}
