//! A partition heals: 1,000 clients across 50 servers, the servers split in
//! two groups that each see only their own fake DHT. Both groups grant
//! overlapping addresses. Then the directories merge (the smallest owner
//! keeps each address, as a merged DHT answers) and clients renew: after one
//! renewal round no address is bound to two clients on the servers, and
//! after the next every client that lost holds a new address nobody else
//! holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
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
const LEASE: Duration = Duration::from_secs(3600);
/// T1 (RFC 2131 §4.4.5): half the lease.
const RENEW: Duration = Duration::from_secs(1800);
const RETRANSMIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Selecting,
    Requesting { addr: Ipv4Addr },
    Bound { addr: Ipv4Addr },
    Renewing { addr: Ipv4Addr },
}

struct Client {
    hw: HardwareAddr,
    key: ClientKey,
    server: usize,
    phase: Phase,
    xid: u32,
    next_at: Instant,
    /// Renewals ACKed.
    renewals: u32,
    /// NAKs received.
    naks: u32,
}

impl Client {
    fn addr(&self) -> Option<Ipv4Addr> {
        match self.phase {
            Phase::Bound { addr } | Phase::Renewing { addr } => Some(addr),
            _ => None,
        }
    }
}

fn config() -> Config {
    let mut c = Config::new("10.64.0.0/21".parse().unwrap(), GATEWAY);
    c.pool = Pool::range(Ipv4Addr::new(10, 64, 0, 10), Ipv4Addr::new(10, 64, 7, 240));
    c.lease_duration = LEASE;
    c.allocation = Allocation::Directory {
        claim_timeout: Duration::from_millis(400),
        max_attempts: 6,
    };
    c
}

fn message(c: &Client) -> ClientMessage {
    let mut m = match c.phase {
        Phase::Selecting => ClientMessage::new(ClientMessageKind::Discover, c.xid, c.hw),
        Phase::Requesting { addr } => {
            let mut m = ClientMessage::new(ClientMessageKind::Request, c.xid, c.hw);
            m.server_id = Some(GATEWAY);
            m.requested_addr = Some(addr);
            m
        }
        Phase::Renewing { addr } | Phase::Bound { addr } => {
            let mut m = ClientMessage::new(ClientMessageKind::Request, c.xid, c.hw);
            m.client_addr = addr;
            m
        }
    };
    m.broadcast = !matches!(c.phase, Phase::Renewing { .. });
    m
}

struct Net {
    seed: u64,
    rng: ChaCha8Rng,
    servers: Vec<Server<MemoryStore>>,
    /// The directory each server reaches.
    side: Vec<usize>,
    dirs: Vec<FakeDirectory<usize>>,
    clients: Vec<Client>,
    by_hw: HashMap<HardwareAddr, usize>,
    /// `ClaimLost` events: client index and address.
    lost: Vec<(usize, Ipv4Addr)>,
    /// After the merge: addresses ACKed to a client that did not hold them.
    fresh: Vec<(usize, Ipv4Addr)>,
    merged: bool,
    now: Instant,
}

impl Net {
    fn new(seed: u64, fake: FakeConfig) -> Self {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let servers = (0..SERVERS)
            .map(|_| {
                Server::new(
                    t0,
                    std::time::SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_secs(1_700_000_000),
                    config(),
                    MemoryStore::new(),
                )
                .unwrap()
            })
            .collect();
        // The partition: the first half of the servers on one side.
        let side = (0..SERVERS)
            .map(|k| usize::from(k >= SERVERS / 2))
            .collect();
        let dirs = vec![
            FakeDirectory::new(fake, seed),
            FakeDirectory::new(fake, seed ^ 0xa5a5),
        ];
        let clients: Vec<Client> = (0..CLIENTS)
            .map(|i| {
                let b = (i as u32).to_be_bytes();
                let hw = HardwareAddr::ethernet([2, 0, b[0], b[1], b[2], b[3]]);
                Client {
                    hw,
                    key: ClientKey::of(None, &hw),
                    server: rng.random_range(0..SERVERS),
                    phase: Phase::Selecting,
                    xid: rng.random(),
                    next_at: t0 + Duration::from_millis(rng.random_range(0..2000)),
                    renewals: 0,
                    naks: 0,
                }
            })
            .collect();
        let by_hw = clients.iter().enumerate().map(|(i, c)| (c.hw, i)).collect();
        Net {
            seed,
            rng,
            servers,
            side,
            dirs,
            clients,
            by_hw,
            lost: Vec::new(),
            fresh: Vec::new(),
            merged: false,
            now: t0,
        }
    }

    /// Heal the partition: one directory holding both sides' records.
    fn merge(&mut self, healed: FakeConfig) {
        let mut dir = FakeDirectory::new(healed, self.seed ^ 0x5a5a);
        for d in self.dirs.drain(..) {
            dir.merge(d);
        }
        self.dirs.push(dir);
        self.side.iter_mut().for_each(|s| *s = 0);
        self.merged = true;
    }

    /// Which client holds `addr`, by the clients' own view.
    fn believed(&self) -> HashMap<Ipv4Addr, Vec<usize>> {
        let mut m: HashMap<Ipv4Addr, Vec<usize>> = HashMap::new();
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(a) = c.addr() {
                m.entry(a).or_default().push(i);
            }
        }
        m
    }

    /// Run until `done` holds with nothing in flight, or `limit` passes.
    fn run_until(&mut self, limit: Instant, done: impl Fn(&Net) -> bool) {
        let seed = self.seed;
        while self.now < limit {
            let now = self.now;
            for c in self.clients.iter_mut() {
                if c.next_at > now {
                    continue;
                }
                if let Phase::Bound { addr } = c.phase {
                    c.phase = Phase::Renewing { addr };
                }
                let m = message(c);
                c.next_at = now + RETRANSMIT;
                let _ = self.servers[c.server].handle_message(now, &m.emit());
            }
            for (k, s) in self.servers.iter_mut().enumerate() {
                s.handle_timeout(now);
                while let Some(req) = s.poll_directory_request() {
                    self.dirs[self.side[k]].submit(now, k, req);
                }
            }
            for d in 0..self.dirs.len() {
                while let Some((k, done)) = self.dirs[d].poll_completion(now) {
                    self.servers[k].handle_directory_completion(now, done);
                    while let Some(req) = self.servers[k].poll_directory_request() {
                        self.dirs[self.side[k]].submit(now, k, req);
                    }
                }
            }
            for k in 0..SERVERS {
                while let Some(t) = self.servers[k].poll_transmit() {
                    let r = Reply::parse(&t.payload).unwrap();
                    let i = self.by_hw[&r.hardware_addr];
                    if self.clients[i].server != k || r.xid != self.clients[i].xid {
                        continue;
                    }
                    let phase = self.clients[i].phase;
                    match (phase, r.kind) {
                        (Phase::Selecting, ReplyKind::Offer) => {
                            let c = &mut self.clients[i];
                            c.phase = Phase::Requesting { addr: r.your_addr };
                            c.next_at = now;
                        }
                        (Phase::Requesting { addr } | Phase::Renewing { addr }, ReplyKind::Ack) => {
                            assert_eq!(r.your_addr, addr, "seed {seed}");
                            if let Phase::Requesting { .. } = phase {
                                if self.merged {
                                    self.fresh.push((i, addr));
                                }
                                // A new binding never duplicates another
                                // client's, on either side of the partition.
                                let holders = self.believed();
                                let side = self.side[k];
                                for &j in holders.get(&addr).into_iter().flatten() {
                                    assert!(
                                        j == i || self.side[self.clients[j].server] != side,
                                        "seed {seed}: {addr} ACKed to {i} while {j} holds it"
                                    );
                                }
                            }
                            let c = &mut self.clients[i];
                            if let Phase::Renewing { .. } = phase {
                                c.renewals += 1;
                            }
                            c.phase = Phase::Bound { addr };
                            // T1, with a little jitter.
                            c.next_at =
                                now + RENEW + Duration::from_millis(self.rng.random_range(0..5000));
                        }
                        (Phase::Requesting { .. } | Phase::Renewing { .. }, ReplyKind::Nak) => {
                            let c = &mut self.clients[i];
                            c.naks += 1;
                            c.phase = Phase::Selecting;
                            c.xid = c.xid.wrapping_add(1);
                            c.next_at = now;
                        }
                        _ => {}
                    }
                }
                while let Some(e) = self.servers[k].poll_event() {
                    match e {
                        Event::ClaimLost { client, addr } => {
                            let i = self.clients.iter().position(|c| c.key == client).unwrap();
                            self.lost.push((i, addr));
                        }
                        Event::Expired { addr, .. } => {
                            panic!("seed {seed}: {addr} expired; every client renews")
                        }
                        _ => {}
                    }
                }
            }
            let idle = self.dirs.iter().all(|d| d.poll_timeout().is_none())
                && self.servers.iter().all(|s| s.pending_count() == 0)
                && self.clients.iter().all(|c| c.next_at > now);
            if idle && done(self) {
                return;
            }
            let next = self
                .clients
                .iter()
                .map(|c| c.next_at)
                .chain(self.dirs.iter().filter_map(|d| d.poll_timeout()))
                .chain(self.servers.iter().filter_map(|s| s.poll_timeout()))
                .filter(|t| *t > now)
                .min()
                .unwrap_or(limit);
            let due_now = self.clients.iter().any(|c| c.next_at <= now);
            self.now = if due_now { now } else { next };
        }
        panic!("seed {}: not done by the time limit", self.seed);
    }

    /// Every server's bound leases, checked to name each address once.
    fn server_leases(&self) -> HashMap<Ipv4Addr, ClientKey> {
        let mut owners = HashMap::new();
        for s in &self.servers {
            for (addr, client, _) in s.leases() {
                if let Some(prev) = owners.insert(addr, client.clone()) {
                    panic!("seed {}: {addr} bound to {prev} and {client}", self.seed);
                }
            }
        }
        owners
    }
}

/// Returns the number of addresses the partition had granted twice.
fn run(seed: u64, fake: FakeConfig) -> usize {
    let mut net = Net::new(seed, fake);
    let t0 = net.now;

    // The partition: every client gets an address on its side.
    net.run_until(t0 + Duration::from_secs(120), |n| {
        n.clients
            .iter()
            .all(|c| matches!(c.phase, Phase::Bound { .. }))
    });
    let before: Vec<Ipv4Addr> = net.clients.iter().map(|c| c.addr().unwrap()).collect();
    // Addresses held twice, once per side.
    let mut duplicates = 0;
    for holders in net.believed().values() {
        assert!(holders.len() <= 2, "seed {seed}: {holders:?}");
        if let [a, b] = holders[..] {
            assert_ne!(
                net.side[net.clients[a].server], net.side[net.clients[b].server],
                "seed {seed}: duplicate within one side"
            );
            duplicates += 1;
        }
    }

    // Heal. Re-claims in the healed directory do not fail, so one round
    // settles every duplicate (a failed one waits for the next renewal).
    net.merge(FakeConfig {
        failure_probability: 0.0,
        ..fake
    });
    // The losers: clients whose address the merged directory gives to
    // another owner (the smaller one of a duplicate, or a claim the other
    // side's server made and then abandoned).
    let losers: HashSet<usize> = (0..CLIENTS)
        .filter(|&i| net.dirs[0].owner(before[i]) != Some(&net.clients[i].key))
        .collect();
    for holders in net.believed().values() {
        if let [a, b] = holders[..] {
            let (ka, kb) = (&net.clients[a].key, &net.clients[b].key);
            let larger = if ka.to_bytes() < kb.to_bytes() { b } else { a };
            assert!(losers.contains(&larger), "seed {seed}");
        }
    }

    // Round one: every client renews once and is ACKed (an ACK cannot wait
    // for the directory); the losers' servers give their addresses up.
    let limit = net.now + RENEW + Duration::from_secs(600);
    net.run_until(limit, |n| n.clients.iter().all(|c| c.renewals >= 1));
    assert!(net.fresh.is_empty(), "seed {seed}: {:?}", net.fresh);
    let on_servers = net.server_leases();
    let lost: HashSet<usize> = net.lost.iter().map(|&(i, _)| i).collect();
    assert_eq!(lost, losers, "seed {seed}: the larger owners lose");
    for &(i, addr) in &net.lost {
        assert_eq!(addr, before[i], "seed {seed}");
        assert_ne!(on_servers.get(&addr), Some(&net.clients[i].key));
    }
    assert_eq!(on_servers.len(), CLIENTS - losers.len(), "seed {seed}");

    // Round two: the losers' REQUESTs are NAKed and they start over; the
    // others renew again.
    let limit = net.now + RENEW + Duration::from_secs(600);
    net.run_until(limit, |n| {
        n.clients.iter().enumerate().all(|(i, c)| {
            matches!(c.phase, Phase::Bound { .. })
                && (c.renewals >= 2 || (losers.contains(&i) && c.naks >= 1))
        })
    });
    let holders = net.believed();
    assert_eq!(holders.len(), CLIENTS, "seed {seed}: an address held twice");
    let on_servers = net.server_leases();
    for (i, c) in net.clients.iter().enumerate() {
        let addr = c.addr().unwrap();
        if losers.contains(&i) {
            assert_ne!(addr, before[i], "seed {seed}: loser {i} kept {addr}");
            assert_eq!(c.naks, 1, "seed {seed}");
            assert!(net.fresh.contains(&(i, addr)), "seed {seed}");
        } else {
            assert_eq!(addr, before[i], "seed {seed}: client {i} moved");
            assert_eq!(c.naks, 0, "seed {seed}");
        }
        assert_eq!(on_servers.get(&addr), Some(&c.key), "seed {seed}");
        assert_eq!(net.dirs[0].owner(addr), Some(&c.key), "seed {seed}");
    }
    assert_eq!(net.fresh.len(), losers.len(), "seed {seed}");
    duplicates
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3))]

    #[test]
    fn a_healed_partition_leaves_no_duplicate_after_renewals(
        seed in any::<u64>(),
        max_delay_ms in 1u64..300,
        conflict_probability in 0.0f64..0.1,
        failure_probability in 0.0f64..0.05,
    ) {
        let fake = FakeConfig {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(max_delay_ms),
            conflict_probability,
            failure_probability,
        };
        let duplicates = run(seed, fake);
        // 500 clients a side in 1,999 addresses: overlaps are certain.
        prop_assert!(duplicates > 0, "seed {}: no overlap to heal", seed);
    }
}

/// A pinned seed with slow, racy directories on both sides.
#[test]
fn healed_partition_pinned_seed() {
    let fake = FakeConfig {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(350),
        conflict_probability: 0.1,
        failure_probability: 0.02,
    };
    assert!(run(0x9a57, fake) > 50);
}
