//! Routes move only on authenticated input (issue #13, point 2): a node
//! that can send overlay messages — linked like any peer, holding no
//! certificate of the network — tries to reroute a certified node's
//! traffic, to forge answers "from the gateway", and to capture a public
//! host's route. Two certified cores with smoltcp guests are the victims.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use dhcp_virt::MemoryStore;
use ipsec_sa::{Endpoint, LocalIdentity, SealOutput};
use overlay_core::wire::{LinkRequest, Payload, Routed};
use overlay_core::{Address, Message, Mode, Roles};
use support::{Node, exchange, smol};
use wow_core::core::{Core, Settings};
use wow_core::demo;
use wow_core::guest::Guest;
use wow_core::wire::{Kind, Repr};

mod support;

/// A public host of the network, served by no node in these tests.
const PUBLIC_HOST: Ipv4Addr = Ipv4Addr::new(10, 128, 9, 9);
/// Where the attacker's datagrams come from (not one of the cores').
const ATTACKER_EP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 19999);

fn attacker() -> Address {
    Address::from_key(b"attacker")
}

fn settings() -> Settings {
    Settings {
        public_hosts: vec![PUBLIC_HOST],
        ..demo::settings()
    }
}

struct Net {
    cores: Vec<Node>,
    endpoints: Vec<SocketAddr>,
    addrs: [Ipv4Addr; 2],
    now: Instant,
    buf: Vec<u8>,
}

/// Two certified cores whose guests have leased, resolved each other and
/// exchanged traffic (so routes and SAs are up).
fn certified_pair() -> Net {
    let base = Instant::now();
    let endpoints: Vec<SocketAddr> = (0..2)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 10101 + i as u16)))
        .collect();
    let mut cores: Vec<Node> = (0..2)
        .map(|i| {
            Core::new_with_insecure_seed(
                base,
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
                settings(),
                demo::overlay_config(endpoints[i]),
                Address::from_key(format!("attack-{i}").as_bytes()),
                MemoryStore::new(),
                40 + i as u64,
            )
            .unwrap()
        })
        .collect();
    for (i, core) in cores.iter_mut().enumerate() {
        core.join(base, if i == 0 { &[] } else { &endpoints[..1] });
    }
    let (mut ca, ca_der) = support::ca("attack test CA");
    let macs = [[0x52, 0x54, 0, 0x77, 1, 1], [0x52, 0x54, 0, 0x77, 1, 2]];
    let mtu = cores[0].settings().guest_mtu;
    let mut guests: Vec<Guest> = (0..2)
        .map(|i| {
            Guest::new(
                smol(base, base),
                macs[i],
                &format!("host-{i}"),
                &format!("host-{}.wow.internal", 1 - i),
                4_000,
                mtu,
                11 + i as u64,
            )
        })
        .collect();
    let mut buf = vec![0u8; 16384];
    let (now, addrs) = support::bring_up(
        &mut cores,
        &endpoints,
        &mut guests,
        &mut ca,
        &ca_der,
        base,
        &mut buf,
    );
    for core in &mut cores {
        while core.poll_tap_frame().is_some() {}
        while core.poll_event().is_some() {}
    }
    Net {
        cores,
        endpoints,
        addrs: [addrs[0], addrs[1]],
        now,
        buf,
    }
}

fn emit(message: &Message) -> Vec<u8> {
    let mut buf = vec![0; message.buffer_len()];
    let n = message.emit(&mut buf);
    buf.truncate(n);
    buf
}

impl Net {
    /// The attacker links to core `i` (the open overlay lets anyone) and
    /// sends it one overlay data message: the node's header `repr`, then
    /// `body`.
    fn inject(&mut self, i: usize, repr: Repr, body: &[u8]) {
        let mut link = LinkRequest {
            nonce: 99,
            challenge: 0,
            sender: attacker(),
            target: Address::ZERO,
            roles: Roles::NEAR,
            endpoints: vec![ATTACKER_EP],
            identity: Vec::new(),
        };
        // The probe, then the answer to the core's challenge (the open
        // identity asks for no proof).
        self.cores[i].handle_udp(
            self.now,
            ATTACKER_EP,
            &emit(&Message::LinkRequest(link.clone())),
        );
        while let Some((to, len)) = self.cores[i].poll_udp(&mut self.buf) {
            match Message::parse(&self.buf[..len]) {
                Ok(Message::LinkReply(r)) if to == ATTACKER_EP => link.challenge = r.challenge,
                _ => {
                    let bytes = self.buf[..len].to_vec();
                    if let Some(j) = self.endpoints.iter().position(|e| *e == to) {
                        let from = self.endpoints[i];
                        self.cores[j].handle_udp(self.now, from, &bytes);
                    }
                }
            }
        }
        self.cores[i].handle_udp(self.now, ATTACKER_EP, &emit(&Message::LinkRequest(link)));
        let mut payload = Vec::new();
        repr.emit_with_body(body, &mut payload);
        let message = Message::Routed(Routed {
            source: attacker(),
            destination: self.cores[i].overlay().address(),
            mode: Mode::Exact,
            hops: 1,
            hop_limit: 16,
            payload: Payload::Data(payload),
        });
        self.cores[i].handle_udp(self.now, ATTACKER_EP, &emit(&message));
    }

    /// Runs the network for `ms` milliseconds of simulated time.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 2 {
            self.now += Duration::from_millis(2);
            support::tick(&mut self.cores, self.now);
            exchange(&mut self.cores, &self.endpoints, self.now, &mut self.buf);
        }
    }

    /// The overlay address core `i` routes `ip` to, if any.
    fn route(&self, i: usize, ip: Ipv4Addr) -> Option<Address> {
        self.cores[i]
            .peers()
            .into_iter()
            .find(|p| p.0 == ip)
            .and_then(|p| p.1)
    }

    /// Sends `n` UDP packets from core `from`'s guest to the other guest and
    /// returns how many the other core hands its guest.
    fn carry(&mut self, from: usize, n: u32) -> usize {
        for k in 0..n {
            let f = self.guest_frame(from, k);
            self.cores[from].handle_tap_frame(self.now, &f);
            exchange(&mut self.cores, &self.endpoints, self.now, &mut self.buf);
        }
        self.run(200);
        self.udp_to_guest(1 - from)
    }

    /// UDP packet `k` from core `from`'s guest to the other guest.
    fn guest_frame(&self, from: usize, k: u32) -> Vec<u8> {
        let gateway = self.cores[from].settings().gateway_mac;
        let mac = self.cores[from].guest_mac().unwrap();
        udp_frame(
            mac,
            gateway,
            self.addrs[from],
            self.addrs[1 - from],
            40000,
            k,
        )
    }

    /// Drains the frames core `to` has for its guest; returns how many
    /// were UDP packets.
    fn udp_to_guest(&mut self, to: usize) -> usize {
        std::iter::from_fn(|| self.cores[to].poll_tap_frame().map(<[u8]>::to_vec))
            .filter(|f| f.len() > 42 && f[14 + 9] == 17)
            .count()
    }
}

/// An Ethernet/IPv4/UDP frame.
fn udp_frame(
    mac: [u8; 6],
    gateway: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    n: u32,
) -> Vec<u8> {
    let payload = n.to_be_bytes();
    let builder = etherparse::PacketBuilder::ethernet2(mac, gateway)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(src_port, 40001);
    let mut f = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut f, &payload).unwrap();
    f
}

/// The IPv4 packet inside `udp_frame`.
fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16) -> Vec<u8> {
    udp_frame([0; 6], [0; 6], src, dst, src_port, 7)[14..].to_vec()
}

#[test]
fn attack_spoofed_handshake_init_does_not_move_a_route() {
    let mut net = certified_pair();
    let [a_ip, b_ip] = net.addrs;
    let b_address = net.cores[1].overlay().address();
    assert_eq!(net.route(0, b_ip), Some(b_address), "setup: A routes B");

    // The attacker builds a genuine-looking Init "from B": XX's first
    // message carries no identity, so any key (here from the attacker's
    // own CA) makes one.
    let (mut evil_ca, evil_der) = support::ca("attacker's CA");
    let creds = support::credentials(&mut evil_ca, &evil_der, b_ip);
    let identity = LocalIdentity::from_pkcs8(&creds.certificate, &creds.key).unwrap();
    let config = ipsec_sa::Config {
        local_ip: IpAddr::V4(b_ip),
        policy: ipsec_sa::Policy::protect("10.128.0.0/16".parse().unwrap()),
        ..ipsec_sa::Config::default()
    };
    let verifier = ipsec_ca::Verifier::new(&evil_der).unwrap();
    let mut forger = Endpoint::new_with_insecure_seed(
        net.now,
        SystemTime::now(),
        config,
        identity,
        verifier,
        [3; 32],
    );
    let mut sealed = Vec::new();
    assert_eq!(
        forger.seal(net.now, IpAddr::V4(a_ip), b"x", &mut sealed),
        Ok(SealOutput::HandshakeNeeded)
    );
    let init = forger.poll_transmit().unwrap().payload;

    for _ in 0..3 {
        let repr = Repr {
            kind: Kind::Sa,
            source: b_ip,
            destination: a_ip,
        };
        net.inject(0, repr, &init);
        net.run(100);
        assert_eq!(
            net.route(0, b_ip),
            Some(b_address),
            "an unauthenticated Init moved A's route for B"
        );
    }
    // A's traffic still reaches B.
    assert_eq!(net.carry(0, 20), 20, "A's packets no longer reach B");
}

#[test]
fn attack_forged_packets_from_the_gateway_network_or_broadcast_are_dropped() {
    let mut net = certified_pair();
    let a_ip = net.addrs[0];
    let s = settings();
    for forged in [s.gateway_addr, s.network.network(), s.network.broadcast()] {
        // A "DNS answer from the gateway", as plaintext (the gateway is
        // exempt from protection because it is the node itself).
        let repr = Repr {
            kind: Kind::Plain,
            source: forged,
            destination: a_ip,
        };
        net.inject(0, repr, &udp_packet(forged, a_ip, 53));
        net.run(20);
        let delivered = std::iter::from_fn(|| net.cores[0].poll_tap_frame().map(<[u8]>::to_vec))
            .filter(|f| f.len() > 34 && f[14 + 12..14 + 16] == forged.octets())
            .count();
        assert_eq!(delivered, 0, "a packet claiming {forged} reached the guest");
    }
}

#[test]
fn attack_plaintext_from_a_public_host_does_not_capture_its_route() {
    let mut net = certified_pair();
    let a_ip = net.addrs[0];
    let repr = Repr {
        kind: Kind::Plain,
        source: PUBLIC_HOST,
        destination: a_ip,
    };
    net.inject(0, repr, &udp_packet(PUBLIC_HOST, a_ip, 8080));
    net.run(20);
    // Public hosts' plaintext is let through, by policy ...
    let delivered = std::iter::from_fn(|| net.cores[0].poll_tap_frame().map(<[u8]>::to_vec))
        .filter(|f| f.len() > 34 && f[14 + 12..14 + 16] == PUBLIC_HOST.octets())
        .count();
    assert_eq!(delivered, 1, "the public host's packet was not delivered");
    // ... but the sender's say-so does not make it the host's route.
    assert_ne!(
        net.route(0, PUBLIC_HOST),
        Some(attacker()),
        "plaintext claiming a public host rerouted it to the sender"
    );
}

// ----- the deferred crypto path (`Core::set_deferred_crypto`) -----

/// The body of a data packet under an SA in an underlay datagram, if it
/// is one (what an eavesdropper on the path captures).
fn sa_body(datagram: &[u8]) -> Option<(Ipv4Addr, Vec<u8>)> {
    let Ok(Message::Routed(routed)) = Message::parse(datagram) else {
        return None;
    };
    let Payload::Data(payload) = routed.payload else {
        return None;
    };
    let packet = wow_core::wire::Packet::new_checked(&payload[..]).ok()?;
    let repr = Repr::parse(&packet).ok()?;
    (repr.kind == Kind::Sa).then(|| (repr.source, packet.body().to_vec()))
}

impl Net {
    /// Both cores leave their AEAD work to the driver from now on.
    fn defer_crypto(&mut self) {
        for core in &mut self.cores {
            core.set_deferred_crypto(true);
        }
    }

    /// [`exchange`] for cores that defer their crypto: jobs run on a worker
    /// thread before the outputs are drained. Returns the jobs run; SA data
    /// packets on the wire are added to `captured`.
    fn exchange_deferred(&mut self, captured: &mut Vec<(Ipv4Addr, Vec<u8>)>) -> usize {
        let mut ran = 0;
        let now = self.now;
        let crypto = |core: &mut Node| {
            let mut jobs = Vec::new();
            core.take_crypto_jobs(&mut jobs);
            ran += jobs.len();
            let any = !jobs.is_empty();
            let done = std::thread::spawn(move || {
                jobs.into_iter()
                    .map(wow_core::CryptoJob::run)
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            core.complete_crypto(now, done);
            any
        };
        let seen = |_: usize, datagram: &[u8]| captured.extend(sa_body(datagram));
        support::exchange_hooked(
            &mut self.cores,
            &self.endpoints,
            now,
            &mut self.buf,
            crypto,
            seen,
        );
        ran
    }

    fn run_deferred(&mut self, ms: u64, captured: &mut Vec<(Ipv4Addr, Vec<u8>)>) -> usize {
        let mut ran = 0;
        for _ in 0..ms / 2 {
            self.now += Duration::from_millis(2);
            support::tick(&mut self.cores, self.now);
            ran += self.exchange_deferred(captured);
        }
        ran
    }

    /// [`Net::carry`] over the deferred path: returns the packets delivered
    /// and the jobs run.
    fn carry_deferred(
        &mut self,
        from: usize,
        n: u32,
        captured: &mut Vec<(Ipv4Addr, Vec<u8>)>,
    ) -> (usize, usize) {
        for k in 0..n {
            let f = self.guest_frame(from, k);
            self.cores[from].handle_tap_frame(self.now, &f);
        }
        let ran = self.run_deferred(200, captured);
        (self.udp_to_guest(1 - from), ran)
    }
}

#[test]
fn deferred_crypto_carries_traffic_both_ways() {
    let mut net = certified_pair();
    net.defer_crypto();
    let mut captured = Vec::new();
    // Each packet is sealed by one job and opened by another.
    assert_eq!(net.carry_deferred(0, 30, &mut captured), (30, 60));
    assert_eq!(net.carry_deferred(1, 30, &mut captured), (30, 60));
    // And back to the inline path, on the same SAs.
    for core in &mut net.cores {
        core.set_deferred_crypto(false);
    }
    assert_eq!(net.carry(0, 10), 10);
}

/// An eavesdropper replays B's packets to A (through its own overlay link)
/// and sends forged ones in B's name, to a core that opens on workers:
/// the replays are refused by the window after authentication, the forged
/// ones by authentication; neither reaches the guest nor moves B's route
/// or A's replay window (B's next packets still arrive).
#[test]
fn attack_replayed_and_forged_packets_on_the_deferred_path_are_refused() {
    let mut net = certified_pair();
    net.defer_crypto();
    let [a_ip, b_ip] = net.addrs;
    let b_address = net.cores[1].overlay().address();
    let mut captured = Vec::new();
    assert_eq!(net.carry_deferred(1, 5, &mut captured).0, 5);
    let from_b: Vec<Vec<u8>> = captured
        .iter()
        .filter(|(src, _)| *src == b_ip)
        .map(|(_, body)| body.clone())
        .collect();
    assert!(from_b.len() >= 5, "setup: B's packets seen on the wire");
    let repr = Repr {
        kind: Kind::Sa,
        source: b_ip,
        destination: a_ip,
    };
    let opened = net.cores[0].counters().opened;
    let mut attempts = Vec::new();
    for body in &from_b {
        attempts.push(body.clone());
        // Forged: a sequence number far ahead, same ciphertext.
        let mut forged = body.clone();
        forged[4..12].copy_from_slice(&1_000_000u64.to_be_bytes());
        attempts.push(forged);
    }
    for body in attempts {
        net.inject(0, repr, &body);
        net.run_deferred(20, &mut captured);
        assert_eq!(
            net.udp_to_guest(0),
            0,
            "a replayed or forged packet reached the guest"
        );
        assert_eq!(net.route(0, b_ip), Some(b_address), "B's route moved");
    }
    assert_eq!(net.cores[0].counters().opened, opened);
    let stats = net.cores[0].sa_stats().unwrap();
    assert!(
        stats.replayed >= 5 && stats.authentication_failed >= 5,
        "{stats:?}"
    );
    assert_eq!(net.carry_deferred(1, 10, &mut captured).0, 10);
}
