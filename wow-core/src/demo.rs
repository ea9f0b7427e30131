//! The demo's settings: a small, fast ring on loopback, as the node's
//! `demo` command, the tests and the fuzz targets use it; its in-memory CA
//! ([`DemoCa`]); and, with the `test-util` feature, a demo node with its
//! smoltcp guest (`DemoNode`) and the final table (`table`), for the
//! node's `demo` command to drive over real sockets.

use std::net::{Ipv4Addr, SocketAddr};
#[cfg(feature = "test-util")]
use std::time::Instant;
use std::time::{Duration, SystemTime};

use overlay_core::Address;

#[cfg(feature = "test-util")]
use crate::core::{Core, CoreEvent};
use crate::core::{Settings, guest_mtu};
#[cfg(feature = "test-util")]
use crate::guest::{Guest, Phase, Report};
#[cfg(feature = "test-util")]
use crate::membership::{EnrolVia, Membership, MembershipConfig, Output};

/// The demo's network settings: `10.128.0.0/16`, gateway `10.128.0.1`,
/// DHT allocation, guest MTU for a 1500-byte underlay.
pub fn settings() -> Settings {
    Settings {
        network: ipnet::Ipv4Net::new(Ipv4Addr::new(10, 128, 0, 0), 16).unwrap_or_default(),
        gateway_addr: Ipv4Addr::new(10, 128, 0, 1),
        gateway_mac: [0x02, 0x77, 0x6f, 0x77, 0x00, 0x01],
        domain: "wow.internal".into(),
        guest_mtu: guest_mtu(1500),
        lease_duration: Duration::from_secs(3600),
        dht_allocation: true,
        allocator: None,
        fixed_addr: None,
        public_hosts: Vec::new(),
        pool: None,
        dns_forward: false,
        ipv6: None,
    }
}

/// The demo's overlay configuration for a node at `endpoint`: fast timers
/// for a small ring on loopback.
pub fn overlay_config(endpoint: SocketAddr) -> overlay_core::Config {
    overlay_core::Config {
        endpoints: vec![endpoint],
        // A small, fast ring: tick often so joins settle in well under a second.
        tick_duration: Duration::from_millis(100),
        link_retry_duration: Duration::from_millis(300),
        request_timeout: Duration::from_millis(700),
        shortcut_check_duration: Duration::from_millis(500),
        ..overlay_core::Config::default()
    }
}

/// The demo's certificate authority: in memory, it certifies each guest's
/// address (and host name) as soon as it is leased, as an administrator
/// approving every request would.
#[derive(Debug)]
pub struct DemoCa {
    ca: ipsec_ca::Ca<ipsec_ca::MemStore>,
    cert_der: Vec<u8>,
}

impl DemoCa {
    /// A fresh root CA valid for a day from `wall`.
    pub fn new(wall: SystemTime) -> Result<DemoCa, ipsec_ca::CaError> {
        let identity = ipsec_ca::CaIdentity::create_root(
            wall,
            ipsec_ca::KeyType::Ed25519,
            "wow demo CA",
            Duration::from_secs(86_400),
        )?;
        let cert_der = identity.cert_der().to_vec();
        let ca = ipsec_ca::Ca::open(
            identity,
            ipsec_ca::Policy::default(),
            ipsec_ca::MemStore::default(),
        )?;
        Ok(DemoCa { ca, cert_der })
    }

    /// The CA certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.cert_der
    }

    /// Signs `csr` for `ip` at `wall` (a
    /// [`crate::membership::Output::Sign`] request).
    pub fn sign(&mut self, wall: SystemTime, csr: &[u8], ip: Ipv4Addr) -> Result<Vec<u8>, String> {
        let issued = self
            .ca
            .sign(wall, csr, ip, None)
            .map_err(|e| e.to_string())?;
        Ok(issued.certificate)
    }
}

/// The first 8 characters of a ring address.
pub fn short(a: Address) -> String {
    a.to_string().chars().take(8).collect()
}

/// A byte count in KiB or MiB.
pub fn human_bytes(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// The host name of the demo's guest `index` (from 0).
pub fn guest_name(index: usize) -> String {
    format!("guest-{}", index + 1)
}

/// One demo node: its [`Core`], its [`Membership`] (enrolled by the
/// driver's [`DemoCa`]) and its smoltcp [`Guest`], which resolves the next
/// node's guest by name, pings it and streams bytes to it over TCP. The
/// driver moves datagrams ([`DemoNode::handle_udp`],
/// [`DemoNode::poll_udp`]), calls [`DemoNode::step`] at
/// [`DemoNode::poll_timeout`], signs [`DemoNode::poll_sign`]'s requests
/// and shows [`DemoNode::poll_line`]'s progress.
#[cfg(feature = "test-util")]
pub struct DemoNode {
    index: usize,
    nodes: usize,
    bytes: usize,
    /// The guest clock's zero.
    base: Instant,
    address: Address,
    core: Core<dhcp_virt::MemoryStore>,
    membership: Membership,
    guest: Option<Guest>,
    lines: std::collections::VecDeque<String>,
    signs: std::collections::VecDeque<(Vec<u8>, Ipv4Addr)>,
}

/// What a demo node achieved, for [`table`].
#[cfg(feature = "test-util")]
#[derive(Debug, Clone)]
pub struct NodeResult {
    /// Its index (from 0).
    pub index: usize,
    /// Its ring address.
    pub address: Address,
    /// Its guest's host name.
    pub name: String,
    /// What its guest found out.
    pub report: Report,
    /// Where its guest's script stopped.
    pub phase: Phase,
    /// Overlay hops from the peer its guest talked to.
    pub hops: Option<u8>,
    /// Security associations up.
    pub sa_count: usize,
    /// Its traffic counters.
    pub counters: crate::core::Counters,
}

#[cfg(feature = "test-util")]
impl DemoNode {
    /// Node `index` of `nodes` at `endpoint`, joining through `bootstrap`
    /// (none for the first); its guest sends `bytes` bytes. With
    /// `ca_certificate` it enrols with the driver's CA on its guest's first
    /// lease. `base` is the guest clock's zero.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        wall: SystemTime,
        index: usize,
        nodes: usize,
        bytes: usize,
        endpoint: SocketAddr,
        bootstrap: Option<SocketAddr>,
        ca_certificate: Option<Vec<u8>>,
        base: Instant,
    ) -> Result<DemoNode, String> {
        // The node key: its hash is the ring address, link set-up proves
        // it, and the demo CA certifies it (so the certificate's overlay
        // address is the ring address).
        let key =
            ipsec_ca::NodeKey::generate(ipsec_ca::KeyType::Ed25519).map_err(|e| e.to_string())?;
        let identity = overlay_core::KeyIdentity::from_pkcs8(
            overlay_core::KeyAlgorithm::Ed25519,
            key.pkcs8_der(),
        )
        .map_err(|e| e.to_string())?;
        let address = overlay_core::Identity::address(&identity);
        let mut core = Core::with_overlay_identity(
            now,
            wall,
            settings(),
            overlay_config(endpoint),
            Box::new(identity),
            dhcp_virt::MemoryStore::new(),
        )
        .map_err(|e| e.to_string())?;
        let enrol = ca_certificate.as_ref().map(|_| EnrolVia::Driver);
        let mut membership = Membership::new(
            now,
            MembershipConfig {
                key,
                ca_certificate,
                certificate: None,
                enrol,
                domain: settings().domain,
                crl_refresh: Duration::from_secs(3600),
                crl_file: false,
                overlay: None,
            },
        )
        .map_err(|e| e.to_string())?;
        membership
            .start(&mut core, now, wall)
            .map_err(|e| e.to_string())?;
        let bootstrap: Vec<SocketAddr> = bootstrap.into_iter().collect();
        core.join(now, &bootstrap);
        let mut lines = std::collections::VecDeque::new();
        lines.push_back(format!(
            "overlay address {} on udp {endpoint}",
            short(address)
        ));
        Ok(DemoNode {
            index,
            nodes,
            bytes,
            base,
            address,
            core,
            membership,
            guest: None,
            lines,
            signs: std::collections::VecDeque::new(),
        })
    }

    fn smol(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            i64::try_from(now.saturating_duration_since(self.base).as_micros()).unwrap_or(i64::MAX),
        )
    }

    /// A datagram from `from`.
    pub fn handle_udp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.core.handle_udp(now, from, bytes);
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_udp(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        self.core.poll_udp(buf)
    }

    /// Runs what is due at `now`: timers, the guest and its frames, the
    /// core's events; starts the guest once the node is on the ring.
    pub fn step(&mut self, now: Instant, wall: SystemTime) {
        loop {
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now, wall);
            }
            if self.membership.poll_timeout() <= now {
                self.membership.handle_timeout(&mut self.core, now, wall);
            }
            let ts = self.smol(now);
            let mut lines = Vec::new();
            if let Some(g) = self.guest.as_mut() {
                g.exchange(now, &mut self.core, ts, &mut lines);
            }
            while let Some(event) = self.core.poll_event() {
                match &event {
                    CoreEvent::Joined => lines.push("joined the ring".into()),
                    CoreEvent::SaEstablished { peer } => {
                        lines.push(format!("security association with {peer}"));
                    }
                    _ => {}
                }
                self.membership
                    .handle_event(&mut self.core, now, wall, &event);
            }
            self.lines.extend(lines);
            self.outputs();
            if self.guest.is_some() || !self.core.overlay().is_joined() {
                return;
            }
            let mac = [0x52, 0x54, 0x00, 0x77, 0x00, self.index as u8 + 1];
            let peer = format!("{}.wow.internal", guest_name((self.index + 1) % self.nodes));
            // Seeds only the demo guest's own smoltcp stack (its TCP
            // sequence numbers); the node's keys come from the operating
            // system.
            self.guest = Some(Guest::new(
                ts,
                mac,
                &guest_name(self.index),
                &peer,
                self.bytes,
                self.core.settings().guest_mtu,
                0x5eed_0000 + self.index as u64,
            ));
        }
    }

    fn outputs(&mut self) {
        while let Some(output) = self.membership.poll_output() {
            match output {
                Output::Sign { csr, ip } => self.signs.push_back((csr, ip)),
                Output::Certified { ip, .. } => self
                    .lines
                    .push_back(format!("certified for {ip} by the demo CA")),
                Output::Failed(why) => self.lines.push_back(why),
                Output::ReadCrlFile | Output::KeepCrl(_) | Output::KeepCertificate(_) => {}
            }
        }
    }

    /// A certificate request for the driver's [`DemoCa`]: the request and
    /// the address; answer with [`DemoNode::issued`].
    pub fn poll_sign(&mut self) -> Option<(Vec<u8>, Ipv4Addr)> {
        self.signs.pop_front()
    }

    /// The driver's CA's answer to [`DemoNode::poll_sign`].
    pub fn issued(&mut self, now: Instant, wall: SystemTime, certificate: Result<Vec<u8>, String>) {
        self.membership
            .issued(&mut self.core, now, wall, certificate);
        self.outputs();
    }

    /// The next progress line.
    pub fn poll_line(&mut self) -> Option<String> {
        self.lines.pop_front()
    }

    /// Whether the guest's script and the stream it receives are done.
    pub fn finished(&self) -> bool {
        self.guest.as_ref().is_some_and(Guest::finished)
    }

    /// When [`DemoNode::step`] is due next (at most 200 ms after `now`).
    pub fn poll_timeout(&mut self, now: Instant) -> Instant {
        let mut deadline = (now + Duration::from_millis(200)).min(self.membership.poll_timeout());
        if let Some(t) = self.core.poll_timeout() {
            deadline = deadline.min(t);
        }
        let ts = self.smol(now);
        if let Some(g) = self.guest.as_mut() {
            let at = g.poll_at(ts);
            let micros = u64::try_from(at.total_micros()).unwrap_or(0);
            deadline = deadline.min(self.base + Duration::from_micros(micros));
        }
        deadline
    }

    /// What the node achieved so far.
    pub fn result(&self) -> NodeResult {
        let (report, phase) = match &self.guest {
            Some(g) => (g.report.clone(), g.phase().clone()),
            None => (Report::default(), Phase::Failed("never joined".into())),
        };
        let hops = report.peer_addr.and_then(|a| self.core.hops_from(a));
        NodeResult {
            index: self.index,
            address: self.address,
            name: guest_name(self.index),
            report,
            phase,
            hops,
            sa_count: self.core.sa_count(),
            counters: self.core.counters(),
        }
    }
}

/// The demo's final table over `results` of `nodes` nodes whose guests
/// each sent `bytes` bytes (with security associations if `secure`; ANSI
/// colours if `color`), and whether every guest succeeded: its address,
/// the next guest's address by name, echo replies, the whole stream both
/// ways.
#[cfg(feature = "test-util")]
pub fn table(
    results: &[NodeResult],
    nodes: usize,
    bytes: usize,
    secure: bool,
    color: bool,
    elapsed: Duration,
) -> (String, bool) {
    use std::fmt::Write;
    let (green, red, reset) = if color {
        ("\x1b[32m", "\x1b[31m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let mut s = String::from("\n");
    let _ = writeln!(
        s,
        "{:<5} {:<9} {:<13} {:<26} {:<13} {:>4} {:>9} {:>12} {:>3}  result",
        "node", "ring", "guest", "name", "-> peer", "hops", "rtt ms", "tcp Mbit/s", "sa"
    );
    let mut all_ok = results.len() == nodes;
    for r in results {
        let next = (r.index + 1) % nodes;
        let peer = results.iter().find(|p| p.index == next);
        let peer_addr = peer.and_then(|p| p.report.addr);
        let received = peer.map(|p| p.report.received).unwrap_or(0);
        let rtt = if r.report.rtts_ms.is_empty() {
            None
        } else {
            Some(r.report.rtts_ms.iter().sum::<f64>() / r.report.rtts_ms.len() as f64)
        };
        let mbps = r.report.send_duration.and_then(|d| {
            let s = d.as_secs_f64();
            (s > 0.0).then(|| r.report.sent as f64 * 8.0 / s / 1e6)
        });
        let resolved_right = r.report.peer_addr.is_some() && r.report.peer_addr == peer_addr;
        let ok = matches!(r.phase, Phase::Done)
            && r.report.addr.is_some()
            && resolved_right
            && r.report.replies > 0
            && r.report.sent == bytes
            && received == bytes
            && (!secure || r.sa_count > 0);
        all_ok &= ok;
        let why = match &r.phase {
            Phase::Failed(w) => w.clone(),
            p if !ok => format!("stopped at {p:?}"),
            _ => String::new(),
        };
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<5} {:<9} {:<13} {:<26} {:<13} {:>4} {:>9} {:>12} {:>3}  {}",
            r.index + 1,
            short(r.address),
            dash(r.report.addr.map(|a| a.to_string())),
            format!("{}.wow.internal", r.name),
            dash(r.report.peer_addr.map(|a| a.to_string())),
            dash(r.hops.map(|h| h.to_string())),
            dash(rtt.map(|v| format!("{v:.2}"))),
            dash(mbps.map(|v| format!("{v:.1}"))),
            r.sa_count,
            if ok {
                format!("{green}ok{reset}")
            } else {
                format!("{red}FAILED{reset} {why}")
            }
        );
        tracing::debug!(node = r.index + 1, counters = ?r.counters, "counters");
    }
    s.push('\n');
    let secs = elapsed.as_secs_f64();
    if all_ok {
        let _ = write!(
            s,
            "{green}all {nodes} guests: DHCP, DNS, ping and TCP across the overlay ok{reset} ({secs:.1} s)"
        );
    } else {
        let _ = write!(s, "{red}demo FAILED{reset} ({secs:.1} s)");
    }
    (s, all_ok)
}
