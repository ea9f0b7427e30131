//! DNS over TCP on a small smoltcp stack (feature `smoltcp`; RFC 1035
//! §4.2.2, RFC 7766).
//!
//! A host that answers DNS at an address it captures packets for (a
//! virtual gateway on a TAP, say) has no kernel TCP there. A stub resolver
//! retries over TCP when an answer comes back truncated, and some
//! (`options use-vc`, `dig +tcp`) use TCP from the start. [`TcpEndpoint`]
//! terminates those connections itself: a smoltcp stack at the gateway
//! address, fed with the querier's IPv4 packets, with [`CONNECTIONS`]
//! listening sockets on port 53. Each connection's byte stream is cut into
//! messages by a [`TcpFramer`]; hand each query to
//! [`Server::handle_input`](crate::Server::handle_input) with
//! [`Transport::Tcp`](crate::Transport::Tcp) and send each TCP
//! [`Transmit`](crate::Transmit) back with [`TcpEndpoint::send`], which
//! finds the connection it came from. TCP to any other port is refused with
//! a reset. Like the rest of the crate it does no I/O and reads no clock:
//! packets and `Instant`s in, packets and deadlines out.
//!
//! [`MemDevice`] is the in-memory smoltcp device it runs on, public so that
//! other in-process smoltcp stacks (test clients, simulated guests) can use
//! the same one.
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddr};
//! use std::time::Instant;
//! use dns_virt::tcp::TcpEndpoint;
//! use dns_virt::{Config, Server, Transport};
//!
//! let now = Instant::now();
//! let mut dns = Server::new(Config::default());
//! let mut tcp = TcpEndpoint::new(now, Ipv4Addr::new(10, 128, 0, 1), 9, 1400);
//! # fn packet_from_guest() -> Option<Vec<u8>> { None }
//! # fn packet_to_guest(_: &[u8]) {}
//! // For each IPv4 packet the querier sends to the gateway over TCP:
//! while let Some(packet) = packet_from_guest() {
//!     tcp.handle_packet(now, &packet);
//! }
//! // Whole queries go to the DNS server, its answers back on their connection.
//! while let Some((from, query)) = tcp.poll_query() {
//!     dns.handle_input(now, from, Transport::Tcp, &query);
//! }
//! while let Some(t) = dns.poll_transmit() {
//!     if t.transport == Transport::Tcp {
//!         tcp.send(now, t.destination, &t.payload);
//!     }
//! }
//! // The stack's packets for the querier; `handle_timeout` at `poll_timeout`.
//! while let Some(packet) = tcp.poll_packet() {
//!     packet_to_guest(&packet);
//! }
//! ```

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::wire::TcpFramer;

/// Frames (or IP packets) in both directions between an in-process
/// smoltcp stack and whatever carries them: the stand-in for a TAP
/// ([`Medium::Ethernet`]) or a TUN ([`Medium::Ip`]).
///
/// `rx` is what the stack owning the device will receive, `tx` what it
/// sent, oldest first.
///
/// ```
/// use dns_virt::tcp::MemDevice;
///
/// let mut dev = MemDevice::ethernet(1514);
/// dev.rx.push_back(vec![0; 60]);
/// assert!(dev.is_busy());
/// ```
#[derive(Debug)]
pub struct MemDevice {
    /// Frames for the stack.
    pub rx: VecDeque<Vec<u8>>,
    /// Frames from the stack.
    pub tx: VecDeque<Vec<u8>>,
    medium: Medium,
    mtu: usize,
}

impl MemDevice {
    /// A device of `medium` for frames (packets) of at most `mtu` bytes;
    /// for Ethernet, the whole frame (e.g. 1514).
    pub fn new(medium: Medium, mtu: usize) -> MemDevice {
        MemDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            medium,
            mtu,
        }
    }

    /// An Ethernet device for frames of at most `mtu` bytes.
    pub fn ethernet(mtu: usize) -> MemDevice {
        MemDevice::new(Medium::Ethernet, mtu)
    }

    /// A device for IP packets of at most `mtu` bytes (no link layer).
    pub fn ip(mtu: usize) -> MemDevice {
        MemDevice::new(Medium::Ip, mtu)
    }

    /// Whether frames wait in either direction.
    pub fn is_busy(&self) -> bool {
        !self.rx.is_empty() || !self.tx.is_empty()
    }
}

impl Device for MemDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = self.medium;
        caps.max_transmission_unit = self.mtu;
        caps
    }

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(RxToken, TxToken<'_>)> {
        let buffer = self.rx.pop_front()?;
        Some((
            RxToken { buffer },
            TxToken {
                queue: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            queue: &mut self.tx,
        })
    }
}

/// A received frame ([`MemDevice`]).
#[derive(Debug)]
pub struct RxToken {
    buffer: Vec<u8>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.buffer)
    }
}

/// Room for a frame to send ([`MemDevice`]).
#[derive(Debug)]
pub struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buffer = vec![0; len];
        let r = f(&mut buffer);
        self.queue.push_back(buffer);
        r
    }
}

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

/// A DNS-over-TCP endpoint at one address. See the [module docs](self).
pub struct TcpEndpoint {
    iface: Interface,
    device: MemDevice,
    sockets: SocketSet<'static>,
    slots: Vec<Slot>,
    queries: VecDeque<(SocketAddr, Vec<u8>)>,
    base: Instant,
    /// The stack's next deadline, as of the last poll.
    next: Option<Instant>,
}

impl std::fmt::Debug for TcpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpEndpoint")
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

impl TcpEndpoint {
    /// An endpoint at `gateway` in a network of `prefix` bits, for packets
    /// of at most `mtu` bytes; `now` is the stack's time origin.
    pub fn new(now: Instant, gateway: Ipv4Addr, prefix: u8, mtu: u16) -> TcpEndpoint {
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
        TcpEndpoint {
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

    /// An IPv4 packet from a querier (TCP to the endpoint's address).
    /// At most 64 packets wait between polls; more are dropped (TCP
    /// retransmits them).
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

    /// When [`TcpEndpoint::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// Sends `bytes` (a length-prefixed answer, as
    /// [`Server`](crate::Server) queues it for TCP) on the connection from
    /// `to`; `false` if it is gone or full.
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
    /// (without its length prefix). At most 64 wait; more are dropped.
    pub fn poll_query(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.queries.pop_front()
    }

    /// The next IPv4 packet for a querier.
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
    fn run(client: &mut Client, server: &mut TcpEndpoint, base: Instant, at: &mut u64, steps: u64) {
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
    fn connected(port: u16) -> (Instant, TcpEndpoint, Client, u64) {
        let base = Instant::now();
        let mut server = TcpEndpoint::new(base, GATEWAY, 16, 1384);
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

    // Moved from wow-test-hosts' QueueDevice, which this device replaces.
    #[test]
    fn frames_flow_through_both_queues_in_order() {
        use smoltcp::phy::{RxToken as _, TxToken as _};
        let t = smoltcp::time::Instant::ZERO;
        let mut dev = MemDevice::ip(1500);
        assert!(!dev.is_busy());
        assert!(dev.receive(t).is_none());
        dev.rx.push_back(vec![1, 2, 3]);
        dev.rx.push_back(vec![4]);
        let (rx, _) = dev.receive(t).unwrap();
        assert_eq!(rx.consume(|b| b.to_vec()), vec![1, 2, 3]);
        let tx = dev.transmit(t).unwrap();
        tx.consume(2, |b| b.copy_from_slice(&[7, 8]));
        assert_eq!(dev.tx.pop_front(), Some(vec![7, 8]));
        assert_eq!(dev.rx.len(), 1);
        assert_eq!(dev.capabilities().medium, Medium::Ip);
        assert_eq!(dev.capabilities().max_transmission_unit, 1500);
        assert_eq!(
            MemDevice::ethernet(1514).capabilities().medium,
            Medium::Ethernet
        );
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
