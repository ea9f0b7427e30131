//! Nodes' cores wired together in memory, in simulated time.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use dhcp_virt::MemoryStore;
use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, NodeKey, NodeRequest, Policy};
use overlay_core::Address;
use wow_core::core::{Core, CoreEvent, Credentials};
use wow_core::demo;
use wow_core::guest::Guest;

/// A core with an in-memory lease store.
pub type Node = Core<MemoryStore>;

/// `n` cores with the demo's settings at `127.0.0.1:10001…` (never bound),
/// the first starting the ring and the others joining through it.
pub fn cores(n: usize, now: Instant) -> (Vec<Node>, Vec<SocketAddr>) {
    let endpoints: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 10001 + i as u16)))
        .collect();
    let mut cores: Vec<Node> = (0..n)
        .map(|i| {
            Core::new_with_insecure_seed(
                now,
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
                demo::settings(),
                demo::overlay_config(endpoints[i]),
                Address::from_key(format!("in-memory-{i}").as_bytes()),
                MemoryStore::new(),
                77 + i as u64,
            )
            .unwrap()
        })
        .collect();
    for (i, core) in cores.iter_mut().enumerate() {
        core.join(now, if i == 0 { &[] } else { &endpoints[..1] });
    }
    (cores, endpoints)
}

/// Moves every datagram between the cores until none is left.
pub fn exchange(cores: &mut [Node], endpoints: &[SocketAddr], now: Instant, buf: &mut [u8]) {
    exchange_hooked(cores, endpoints, now, buf, |_| false, |_, _| {});
}

/// [`exchange`] for cores with deferred crypto
/// (`Core::set_deferred_crypto`): before a core's datagrams are drained,
/// `crypto` runs the jobs it left (and says whether there were any); every
/// datagram is shown to `seen` with its sender's index.
pub fn exchange_hooked(
    cores: &mut [Node],
    endpoints: &[SocketAddr],
    now: Instant,
    buf: &mut [u8],
    mut crypto: impl FnMut(&mut Node) -> bool,
    mut seen: impl FnMut(usize, &[u8]),
) {
    loop {
        let mut any = false;
        for i in 0..cores.len() {
            any |= crypto(&mut cores[i]);
            while let Some((to, len)) = cores[i].poll_udp(buf) {
                any = true;
                seen(i, &buf[..len]);
                if let Some(j) = endpoints.iter().position(|e| *e == to) {
                    cores[j].handle_udp(now, endpoints[i], &buf[..len]);
                }
            }
        }
        if !any {
            return;
        }
    }
}

/// [`exchange`] with one more party: a plain overlay node (an attacker's)
/// at `outsider_ep`.
pub fn exchange_with(
    cores: &mut [Node],
    endpoints: &[SocketAddr],
    outsider: &mut overlay_core::Node,
    outsider_ep: SocketAddr,
    now: Instant,
    buf: &mut [u8],
) {
    loop {
        let mut any = false;
        for i in 0..cores.len() {
            while let Some((to, len)) = cores[i].poll_udp(buf) {
                any = true;
                if to == outsider_ep {
                    let _ = outsider.handle_input(now, endpoints[i], &buf[..len]);
                } else if let Some(j) = endpoints.iter().position(|e| *e == to) {
                    cores[j].handle_udp(now, endpoints[i], &buf[..len]);
                }
            }
        }
        while let Some(t) = outsider.poll_transmit() {
            any = true;
            if let Some(j) = endpoints.iter().position(|e| *e == t.destination) {
                let mut out = vec![0; t.message.buffer_len()];
                let n = overlay_core::Message::emit(&t.message, &mut out);
                cores[j].handle_udp(now, outsider_ep, &out[..n]);
            }
        }
        while outsider.poll_event().is_some() {}
        if !any {
            return;
        }
    }
}

/// Runs every due timer.
pub fn tick(cores: &mut [Node], now: Instant) {
    for core in cores {
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now, SystemTime::now());
        }
    }
}

/// A throw-away CA and its certificate.
pub fn ca(name: &str) -> (Ca<MemStore>, Vec<u8>) {
    let identity = CaIdentity::create_root(
        SystemTime::now(),
        KeyType::Ed25519,
        name,
        std::time::Duration::from_secs(86_400),
    )
    .unwrap();
    let der = identity.cert_der().to_vec();
    (
        Ca::open_with_insecure_seed(identity, Policy::default(), MemStore::default(), [9; 32])
            .unwrap(),
        der,
    )
}

/// A key and a certificate for `addr`, signed by `ca`.
pub fn credentials(ca: &mut Ca<MemStore>, ca_der: &[u8], addr: Ipv4Addr) -> Credentials {
    credentials_named(ca, ca_der, addr, None)
}

/// A key and a certificate for `addr` and, if given, host name `name`
/// (certified as `<name>.wow.internal`), signed by `ca`.
pub fn credentials_named(
    ca: &mut Ca<MemStore>,
    ca_der: &[u8],
    addr: Ipv4Addr,
    name: Option<&str>,
) -> Credentials {
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mut request = NodeRequest::new(addr);
    if let Some(name) = name {
        request = request.with_dns_name(format!("{name}.wow.internal"));
    }
    let csr = key.certificate_request(&request).unwrap();
    let now = SystemTime::now();
    let issued = ca.sign(now, &csr, addr, None).unwrap();
    Credentials {
        certificate: issued.certificate,
        key: key.pkcs8_der().to_vec(),
        ca_certificate: ca_der.to_vec(),
        virtual_ip: addr,
    }
}

/// The smoltcp clock at `now`, counted from `base`.
pub fn smol(base: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.duration_since(base).as_micros() as i64)
}

/// Drains `core`'s events; on the first lease (while `certified` is
/// `None`), certifies the leased address with `ca`, installs the identity
/// (SA randomness from the core's seed) and records the address in
/// `certified`.
pub fn certify_first_lease(
    core: &mut Node,
    ca: &mut Ca<MemStore>,
    ca_der: &[u8],
    now: Instant,
    certified: &mut Option<Ipv4Addr>,
) {
    while let Some(event) = core.poll_event() {
        if let CoreEvent::Leased { addr, hostname, .. } = event
            && certified.is_none()
        {
            let name = hostname.as_deref().map(wow_core::core::sanitize_hostname);
            let c = credentials_named(ca, ca_der, addr, name.as_deref());
            core.install_identity(now, SystemTime::now(), &c).unwrap();
            *certified = Some(addr);
        }
    }
}

/// Runs the guests' script (DNS, ping, TCP, which brings routes and SAs
/// up) on `cores` in simulated time from `base`, each core's first lease
/// certified by `ca`, until every guest has finished and every core is
/// certified (at most two simulated minutes). Returns the time then and
/// the certified addresses, in the cores' order.
pub fn bring_up(
    cores: &mut [Node],
    endpoints: &[SocketAddr],
    guests: &mut [Guest],
    ca: &mut Ca<MemStore>,
    ca_der: &[u8],
    base: Instant,
    buf: &mut [u8],
) -> (Instant, Vec<Ipv4Addr>) {
    let mut lines = Vec::new();
    let mut addrs: Vec<Option<Ipv4Addr>> = vec![None; cores.len()];
    let mut now = base;
    while !(guests.iter().all(Guest::finished) && addrs.iter().all(Option::is_some)) {
        assert!(now < base + Duration::from_secs(120), "setup timed out");
        now += Duration::from_millis(2);
        for (i, core) in cores.iter_mut().enumerate() {
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now, SystemTime::now());
            }
            guests[i].exchange(now, core, smol(base, now), &mut lines);
            certify_first_lease(core, ca, ca_der, now, &mut addrs[i]);
        }
        exchange(cores, endpoints, now, buf);
    }
    (now, addrs.into_iter().flatten().collect())
}
