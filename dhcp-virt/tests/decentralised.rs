//! Decentralised allocation: 1,000 clients across 50 servers that share one
//! fake DHT with random delays, injected conflicts and failures never end
//! up with the same address twice, and every client gets one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcp_virt::wire::{ClientMessage, ClientMessageKind, HardwareAddr, Reply, ReplyKind};
use dhcp_virt::{
    AddressDirectory, Allocation, ClientKey, Config, Event, FakeConfig, FakeDirectory, MemoryStore,
    Pool, Server,
};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SERVERS: usize = 50;
const CLIENTS: usize = 1000;
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 1);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    Selecting,
    Requesting { addr: Ipv4Addr },
    Bound { addr: Ipv4Addr },
    Rebooting { addr: Ipv4Addr },
}

struct Client {
    hw: HardwareAddr,
    server: usize,
    phase: Phase,
    xid: u32,
    next_at: Instant,
    moved: bool,
}

fn config() -> Config {
    let mut c = Config::new("10.64.0.0/21".parse().unwrap(), GATEWAY);
    c.pool = Pool::range(Ipv4Addr::new(10, 64, 0, 10), Ipv4Addr::new(10, 64, 7, 240));
    c.allocation = Allocation::Directory {
        claim_timeout: Duration::from_millis(400),
        max_attempts: 6,
    };
    c
}

fn message(c: &Client) -> Option<ClientMessage> {
    let mut m = match c.phase {
        Phase::Idle | Phase::Selecting => {
            ClientMessage::new(ClientMessageKind::Discover, c.xid, c.hw)
        }
        Phase::Requesting { addr } => {
            let mut m = ClientMessage::new(ClientMessageKind::Request, c.xid, c.hw);
            m.server_id = Some(GATEWAY);
            m.requested_addr = Some(addr);
            m
        }
        Phase::Rebooting { addr } => {
            let mut m = ClientMessage::new(ClientMessageKind::Request, c.xid, c.hw);
            m.requested_addr = Some(addr);
            m
        }
        Phase::Bound { .. } => return None,
    };
    m.broadcast = true;
    Some(m)
}

/// Run the whole network; returns the number of bound clients after
/// checking, at every ACK, that no address is held twice.
fn run(seed: u64, fake: FakeConfig, move_fraction: f64) -> usize {
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut servers: Vec<_> = (0..SERVERS)
        .map(|_| {
            Server::new(
                t0,
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
                config(),
                MemoryStore::new(),
            )
            .unwrap()
        })
        .collect();
    let mut dht = FakeDirectory::<usize>::new(fake, seed);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let b = (i as u32).to_be_bytes();
            Client {
                hw: HardwareAddr::ethernet([2, 0, b[0], b[1], b[2], b[3]]),
                server: rng.random_range(0..SERVERS),
                phase: Phase::Idle,
                xid: rng.random(),
                next_at: t0 + Duration::from_millis(rng.random_range(0..2000)),
                moved: false,
            }
        })
        .collect();
    let by_hw: HashMap<HardwareAddr, usize> =
        clients.iter().enumerate().map(|(i, c)| (c.hw, i)).collect();
    // address -> client holding an ACKed lease.
    let mut held: HashMap<Ipv4Addr, usize> = HashMap::new();
    let retransmit = Duration::from_millis(1000);
    let mut now = t0;
    let end = t0 + Duration::from_secs(120);

    while now < end {
        // Clients whose timer fired (re)send.
        for c in clients.iter_mut() {
            if c.next_at > now {
                continue;
            }
            if let Phase::Bound { addr } = c.phase {
                // Some clients move to another node and INIT-REBOOT there.
                if !c.moved && rng.random_bool(move_fraction) {
                    c.moved = true;
                    c.server = (c.server + 1 + rng.random_range(0..SERVERS - 1)) % SERVERS;
                    c.phase = Phase::Rebooting { addr };
                } else {
                    c.next_at = end;
                    continue;
                }
            }
            if c.phase == Phase::Idle {
                c.phase = Phase::Selecting;
            }
            let m = message(c).unwrap();
            c.next_at = now + retransmit;
            let _ = servers[c.server].handle_message(now, &m.emit());
        }
        // Directory requests out, completions in.
        for (k, s) in servers.iter_mut().enumerate() {
            s.handle_timeout(now);
            while let Some(req) = s.poll_directory_request() {
                dht.submit(now, k, req);
            }
        }
        while let Some((k, done)) = dht.poll_completion(now) {
            servers[k].handle_directory_completion(now, done);
            while let Some(req) = servers[k].poll_directory_request() {
                dht.submit(now, k, req);
            }
        }
        // Replies to clients.
        for (k, s) in servers.iter_mut().enumerate() {
            while let Some(t) = s.poll_transmit() {
                let r = Reply::parse(&t.payload).unwrap();
                let i = by_hw[&r.hardware_addr];
                let c = &mut clients[i];
                if c.server != k || r.xid != c.xid {
                    continue;
                }
                match (c.phase, r.kind) {
                    (Phase::Selecting, ReplyKind::Offer) => {
                        // The REQUEST goes out on the next round.
                        c.phase = Phase::Requesting { addr: r.your_addr };
                        c.next_at = now;
                    }
                    (Phase::Requesting { addr } | Phase::Rebooting { addr }, ReplyKind::Ack) => {
                        assert_eq!(r.your_addr, addr);
                        if let Some(&other) = held.get(&addr) {
                            assert_eq!(
                                other, i,
                                "seed {seed}: {addr} ACKed to client {i} while client {other} holds it"
                            );
                        }
                        held.retain(|_, c| *c != i);
                        held.insert(addr, i);
                        c.phase = Phase::Bound { addr };
                        c.next_at = now + Duration::from_millis(rng.random_range(0..3000));
                    }
                    (Phase::Requesting { .. } | Phase::Rebooting { .. }, ReplyKind::Nak) => {
                        held.retain(|_, c| *c != i);
                        c.phase = Phase::Selecting;
                        c.xid = c.xid.wrapping_add(1);
                        c.next_at = now;
                    }
                    _ => {}
                }
            }
            while let Some(e) = s.poll_event() {
                if let Event::Leased { client, addr, .. } = e {
                    // Every lease a server grants is recorded in the DHT
                    // under the same owner.
                    assert_eq!(dht.owner(addr), Some(&client), "seed {seed}");
                }
            }
        }
        if clients
            .iter()
            .all(|c| matches!(c.phase, Phase::Bound { .. }) && c.next_at >= end)
        {
            break;
        }
        // Jump to the next thing that happens.
        let next = clients
            .iter()
            .map(|c| c.next_at)
            .chain(dht.poll_timeout())
            .chain(servers.iter().filter_map(|s| s.poll_timeout()))
            .filter(|t| *t > now)
            .min()
            .unwrap_or(end);
        let due_now = clients.iter().any(|c| c.next_at <= now);
        now = if due_now { now } else { next };
    }
    // Final cross-check: every server's bound leases agree with the DHT and
    // with each other.
    let mut owners: HashMap<Ipv4Addr, ClientKey> = HashMap::new();
    for s in &servers {
        for (addr, client, _) in s.leases() {
            if let Some(prev) = owners.insert(addr, client.clone()) {
                assert_eq!(&prev, client, "seed {seed}: {addr} bound twice");
            }
        }
    }
    clients
        .iter()
        .filter(|c| matches!(c.phase, Phase::Bound { .. }))
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn no_duplicate_addresses_across_servers(
        seed in any::<u64>(),
        max_delay_ms in 1u64..300,
        conflict_probability in 0.0f64..0.2,
        failure_probability in 0.0f64..0.05,
    ) {
        let fake = FakeConfig {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(max_delay_ms),
            conflict_probability,
            failure_probability,
        };
        let bound = run(seed, fake, 0.1);
        prop_assert_eq!(bound, CLIENTS, "seed {}", seed);
    }
}

/// Many simultaneous first DISCOVERs with slow, racy answers: a pinned
/// seed that exercises lost races on every server.
#[test]
fn heavy_races_pinned_seed() {
    let fake = FakeConfig {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(350),
        conflict_probability: 0.15,
        failure_probability: 0.02,
    };
    assert_eq!(run(0x5eed, fake, 0.2), CLIENTS);
}
