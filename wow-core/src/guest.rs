//! The demo's guest: an unmodified-OS stand-in built on smoltcp.
//!
//! A smoltcp [`Interface`] on an in-memory Ethernet device (the TAP's
//! place) runs a short script: get an address by DHCP (sending its host
//! name), resolve the next guest's name through the node's DNS, ping it,
//! and send it a TCP stream; meanwhile it accepts the previous guest's
//! stream and answers pings (smoltcp's automatic echo reply).

use std::time::Duration as StdDuration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, dns, icmp, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    DhcpOption, EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr,
    Ipv4Address,
};

/// TCP port the guests stream to.
pub const STREAM_PORT: u16 = 5001;
/// Echo requests per guest.
pub const PINGS: u16 = 5;
const ICMP_IDENT: u16 = 0x2a2a;
const TCP_BUFFER: usize = 64 * 1024;

/// The in-memory device the guest and its node exchange frames through.
pub use dns_virt::MemDevice;

/// Where the guest's script stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Waiting for a DHCP lease.
    Dhcp,
    /// Resolving the peer's name.
    Resolve,
    /// Pinging the peer.
    Ping,
    /// Streaming to the peer.
    Stream,
    /// Everything done.
    Done,
    /// Gave up.
    Failed(String),
}

/// What the guest found out.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Its address.
    pub addr: Option<Ipv4Address>,
    /// The peer's address, as resolved.
    pub peer_addr: Option<Ipv4Address>,
    /// Echo replies received.
    pub replies: u16,
    /// Round-trip times, milliseconds.
    pub rtts_ms: Vec<f64>,
    /// Bytes of the stream the peer acknowledged.
    pub sent: usize,
    /// Time from connect to the last acknowledgement.
    pub send_duration: Option<StdDuration>,
    /// Bytes received from the previous guest.
    pub received: usize,
    /// When the previous guest's stream ended.
    pub receive_done: bool,
}

/// One guest.
pub struct Guest {
    iface: Interface,
    /// The device the node exchanges frames through.
    pub device: MemDevice,
    sockets: SocketSet<'static>,
    dhcp: SocketHandle,
    dns: SocketHandle,
    icmp: SocketHandle,
    listener: SocketHandle,
    client: SocketHandle,
    peer_name: String,
    bytes: usize,
    phase: Phase,
    query: Option<dns::QueryHandle>,
    retry_at: Instant,
    ping_seq: u16,
    ping_sent_at: Option<Instant>,
    stream_started_at: Option<Instant>,
    written: usize,
    received_first: Option<Instant>,
    /// Results so far.
    pub report: Report,
}

impl Guest {
    /// A guest with MAC `mac` and host name `name` that will talk to
    /// `peer_name` and send it `bytes` bytes; `mtu` is its IP MTU.
    pub fn new(
        now: Instant,
        mac: [u8; 6],
        name: &str,
        peer_name: &str,
        bytes: usize,
        mtu: u16,
        seed: u64,
    ) -> Guest {
        let mut device = MemDevice::ethernet(usize::from(mtu) + 14);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let iface = Interface::new(config, &mut device, now);
        let mut sockets = SocketSet::new(Vec::new());

        let mut dhcp = dhcpv4::Socket::new();
        // Option 12: the host name the node registers in DNS.
        let hostname: &'static [u8] = Box::leak(name.as_bytes().to_vec().into_boxed_slice());
        let options: &'static [DhcpOption<'static>] = Box::leak(Box::new([DhcpOption {
            kind: 12,
            data: hostname,
        }]));
        dhcp.set_outgoing_options(options);
        let mut retry = dhcpv4::RetryConfig::default();
        retry.discover_timeout = Duration::from_millis(500);
        retry.initial_request_timeout = Duration::from_millis(500);
        dhcp.set_retry_config(retry);
        let dhcp = sockets.add(dhcp);
        let dns = sockets.add(dns::Socket::new(&[], Vec::new()));
        let icmp = sockets.add(icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 4096]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 4096]),
        ));
        let tcp_socket = || {
            tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
                tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            )
        };
        let mut listener = tcp_socket();
        let _ = listener.listen(STREAM_PORT);
        let listener = sockets.add(listener);
        let client = sockets.add(tcp_socket());
        if let Some(s) = sockets
            .get_mut::<icmp::Socket>(icmp)
            .bind(icmp::Endpoint::Ident(ICMP_IDENT))
            .err()
        {
            let _ = s;
        }
        Guest {
            iface,
            device,
            sockets,
            dhcp,
            dns,
            icmp,
            listener,
            client,
            peer_name: peer_name.to_string(),
            bytes,
            phase: Phase::Dhcp,
            query: None,
            retry_at: now,
            ping_seq: 0,
            ping_sent_at: None,
            stream_started_at: None,
            written: 0,
            received_first: None,
            report: Report::default(),
        }
    }

    /// Runs the guest and moves frames between it and its node's `core`
    /// (the TAP's place) until both are quiet; `now` is the node's clock,
    /// `ts` the same instant on the guest's.
    pub fn exchange<S: dhcp_virt::LeaseStore>(
        &mut self,
        now: std::time::Instant,
        core: &mut crate::core::Core<S>,
        ts: Instant,
        progress: &mut Vec<String>,
    ) {
        loop {
            self.poll(ts, progress);
            let mut moved = false;
            while let Some(f) = self.device.tx.pop_front() {
                core.handle_tap_frame(now, &f);
                moved = true;
            }
            while let Some(f) = core.poll_tap_frame() {
                self.device.rx.push_back(f.to_vec());
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// The script's phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether both its own script and the incoming stream are finished.
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed(_)) && self.report.receive_done
    }

    /// When to call [`Guest::poll`] again at the latest.
    pub fn poll_at(&mut self, now: Instant) -> Instant {
        let iface = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| now + d)
            .unwrap_or(now + Duration::from_millis(100));
        let script = if matches!(self.phase, Phase::Resolve | Phase::Ping) {
            self.retry_at.max(now)
        } else {
            now + Duration::from_millis(100)
        };
        iface.min(script).max(now)
    }

    /// Runs the interface and the script at `now`; returns progress lines.
    pub fn poll(&mut self, now: Instant, progress: &mut Vec<String>) {
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.step_dhcp(progress);
        self.step_receive(now, progress);
        match self.phase {
            Phase::Resolve => self.step_resolve(now, progress),
            Phase::Ping => self.step_ping(now, progress),
            Phase::Stream => self.step_stream(now, progress),
            _ => {}
        }
        // Send what the script queued.
        self.iface.poll(now, &mut self.device, &mut self.sockets);
    }

    fn step_dhcp(&mut self, progress: &mut Vec<String>) {
        let event = self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).poll();
        let Some(dhcpv4::Event::Configured(config)) = event else {
            return;
        };
        let addr = config.address;
        let router = config.router;
        let servers: Vec<IpAddress> = config
            .dns_servers
            .iter()
            .map(|s| IpAddress::Ipv4(*s))
            .collect();
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::Ipv4(addr));
        });
        if let Some(router) = router {
            let _ = self.iface.routes_mut().add_default_ipv4_route(router);
        }
        self.sockets
            .get_mut::<dns::Socket>(self.dns)
            .update_servers(&servers);
        if self.report.addr.is_none() {
            progress.push(format!("DHCP lease {addr}"));
        }
        self.report.addr = Some(addr.address());
        if self.phase == Phase::Dhcp {
            self.phase = Phase::Resolve;
        }
    }

    fn step_resolve(&mut self, now: Instant, progress: &mut Vec<String>) {
        let dns = self.sockets.get_mut::<dns::Socket>(self.dns);
        if let Some(q) = self.query {
            match dns.get_query_result(q) {
                Ok(addrs) => {
                    self.query = None;
                    if let Some(IpAddress::Ipv4(a)) = addrs.first() {
                        progress.push(format!("resolved {} -> {a}", self.peer_name));
                        self.report.peer_addr = Some(*a);
                        self.phase = Phase::Ping;
                        self.retry_at = now;
                    }
                }
                Err(dns::GetQueryResultError::Pending) => {}
                Err(dns::GetQueryResultError::Failed) => {
                    // Not registered yet: try again shortly.
                    self.query = None;
                    self.retry_at = now + Duration::from_millis(200);
                }
            }
            return;
        }
        if now < self.retry_at {
            return;
        }
        let name = self.peer_name.clone();
        match dns.start_query(self.iface.context(), &name, smoltcp::wire::DnsQueryType::A) {
            Ok(q) => self.query = Some(q),
            Err(e) => self.phase = Phase::Failed(format!("dns query: {e:?}")),
        }
    }

    fn step_ping(&mut self, now: Instant, progress: &mut Vec<String>) {
        let Some(peer) = self.report.peer_addr else {
            return;
        };
        let socket = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        while socket.can_recv() {
            let Ok((bytes, _)) = socket.recv() else { break };
            let Ok(packet) = Icmpv4Packet::new_checked(bytes) else {
                continue;
            };
            let Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) =
                Icmpv4Repr::parse(&packet, &Default::default())
            else {
                continue;
            };
            if ident == ICMP_IDENT
                && seq_no == self.ping_seq
                && let Some(sent) = self.ping_sent_at.take()
            {
                let rtt = (now - sent).total_micros() as f64 / 1000.0;
                self.report.rtts_ms.push(rtt);
                self.report.replies += 1;
                progress.push(format!("ping {peer} seq={seq_no} time={rtt:.2} ms"));
                self.retry_at = now + Duration::from_millis(20);
            }
        }
        if let Some(sent) = self.ping_sent_at
            && now >= sent + Duration::from_millis(1000)
        {
            // Lost (the first one waits for the SA and the route).
            self.ping_sent_at = None;
            self.retry_at = now;
        }
        if self.ping_sent_at.is_some() || now < self.retry_at {
            return;
        }
        if self.report.replies >= 3 || self.ping_seq >= PINGS + 5 {
            if self.report.replies == 0 {
                self.phase = Phase::Failed("no echo reply".into());
                return;
            }
            self.phase = Phase::Stream;
            return;
        }
        self.ping_seq += 1;
        let repr = Icmpv4Repr::EchoRequest {
            ident: ICMP_IDENT,
            seq_no: self.ping_seq,
            data: b"wow-node demo ping",
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
            &Default::default(),
        );
        if socket.send_slice(&buf, IpAddress::Ipv4(peer)).is_ok() {
            self.ping_sent_at = Some(now);
        }
    }

    fn step_stream(&mut self, now: Instant, progress: &mut Vec<String>) {
        let Some(peer) = self.report.peer_addr else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(self.client);
        if self.stream_started_at.is_none() {
            let local_port = 40000 + (self.ping_seq % 1000);
            match socket.connect(self.iface.context(), (peer, STREAM_PORT), local_port) {
                Ok(()) => {
                    self.stream_started_at = Some(now);
                    progress.push(format!("TCP connect {peer}:{STREAM_PORT}"));
                }
                Err(e) => self.phase = Phase::Failed(format!("connect: {e:?}")),
            }
            return;
        }
        while socket.can_send() && self.written < self.bytes {
            let pattern = |i: usize| (i % 251) as u8;
            let start = self.written;
            let n = socket.send(|buf| {
                let n = buf.len().min(self.bytes - start);
                for (k, b) in buf[..n].iter_mut().enumerate() {
                    *b = pattern(start + k);
                }
                (n, n)
            });
            match n {
                Ok(0) | Err(_) => break,
                Ok(n) => self.written += n,
            }
        }
        if self.written >= self.bytes && socket.send_queue() == 0 {
            if socket.state() == tcp::State::Established {
                socket.close();
            }
            if self.report.send_duration.is_none()
                && let Some(start) = self.stream_started_at
            {
                self.report.sent = self.written;
                self.report.send_duration =
                    Some(StdDuration::from_micros((now - start).total_micros()));
                progress.push(format!("TCP sent {} bytes to {peer}", self.written));
                self.phase = Phase::Done;
            }
        }
        if socket.state() == tcp::State::Closed && self.report.send_duration.is_none() {
            self.phase = Phase::Failed("connection closed early".into());
        }
    }

    fn step_receive(&mut self, now: Instant, progress: &mut Vec<String>) {
        let socket = self.sockets.get_mut::<tcp::Socket>(self.listener);
        while socket.can_recv() {
            let got = socket.recv(|buf| (buf.len(), buf.len())).unwrap_or(0);
            if got == 0 {
                break;
            }
            if self.received_first.is_none() {
                self.received_first = Some(now);
            }
            self.report.received += got;
        }
        if !self.report.receive_done && self.report.received > 0 && !socket.may_recv() {
            self.report.receive_done = true;
            socket.close();
            progress.push(format!("TCP received {} bytes", self.report.received));
        }
    }
}
