//! A deterministic discrete-event simulator of many [`Node`]s in one
//! process.
//!
//! The simulator drives the very same [`Node`] state machine a real
//! deployment does: it calls [`Node::handle_message`],
//! [`Node::handle_timeout`] and the commands, and drains
//! [`Node::poll_transmit`] / [`Node::poll_event`]. Messages travel between
//! nodes as values (no encoding) to keep 10,000-node runs fast; every
//! [`SimConfig::wire_check_every`]-th message is encoded, decoded and
//! compared with the original instead, so the wire format is exercised
//! on a steady sample of real traffic ([`SimStats::wire_mismatches`] counts
//! failures).
//!
//! Time is a base `Instant` plus a microsecond offset. Pending deliveries
//! and node deadlines share one binary heap ordered by (time, sequence
//! number); a node's deadline is re-queried only after the node was
//! touched. The latency between two nodes is fixed per pair (so each pair
//! is FIFO), drawn from a hash of the pair in `[min_latency, max_latency]`.
//! Loss, churn, addresses and node seeds come from one seeded RNG: the
//! same seed gives the same run.

use core::cmp::Ordering;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::address::Address;
use crate::node::{Config, DhtOutcome, Event, Node};
use crate::wire::{DhtOp, Message};

/// Simulator configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed for everything random.
    pub seed: u64,
    /// Node configuration (endpoints are filled in per node).
    pub node: Config,
    /// Smallest one-way latency.
    pub min_latency: Duration,
    /// Largest one-way latency.
    pub max_latency: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Round-trip every n-th message through the wire format (0: never).
    pub wire_check_every: u32,
    /// Keep every node event for [`Sim::take_events`].
    pub record_events: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 1,
            node: Config::default(),
            min_latency: Duration::from_millis(5),
            max_latency: Duration::from_millis(60),
            loss: 0.0,
            wire_check_every: 16,
            record_events: false,
        }
    }
}

/// Counters over a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages delivered to a live node.
    pub delivered: u64,
    /// Messages lost to the loss model, a partition or a dead node.
    pub lost: u64,
    /// Messages round-tripped through the wire format.
    pub wire_checked: u64,
    /// Round trips that did not reproduce the message.
    pub wire_mismatches: u64,
}

/// Outcome of a request the simulator issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Echo answered after this many hops.
    Echo(u8),
    /// Echo failed.
    EchoFailed,
    /// A DHT request finished.
    Dht(DhtOp, DhtOutcome),
}

#[derive(Debug)]
struct Slot {
    node: Option<Node>,
    /// The address of the slot's node (kept after a crash, for
    /// [`Sim::restart`]).
    address: Address,
    group: u8,
    timer_at: u64,
    spawned_at: u64,
    joined_at: Option<u64>,
}

/// A queued event. Kept small (a message in flight waits in
/// [`Sim::in_flight`], named by its index): the heap moves entries on every
/// push and pop.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Deliver { to: u32, from: u32, message: u32 },
    Timer { node: u32 },
}

#[derive(Debug)]
struct Entry {
    at: u64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap.
    fn cmp(&self, other: &Entry) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    start: Instant,
    now: u64,
    slots: Vec<Slot>,
    queue: BinaryHeap<Entry>,
    seq: u64,
    rng: ChaCha8Rng,
    partitioned: bool,
    stats: SimStats,
    outcomes: HashMap<(u32, u64), Outcome>,
    message_count: u32,
    events: Vec<(usize, Event)>,
    /// Messages in flight, by the index their heap entry names; freed
    /// slots are reused.
    in_flight: Vec<Option<Message>>,
    free_slots: Vec<u32>,
}

const ENDPOINT_BASE: u32 = 0x0a00_0000;
const PORT: u16 = 7000;

/// The transport endpoint the simulator gives node `index`.
pub fn endpoint_of(index: usize) -> SocketAddr {
    let ip = ENDPOINT_BASE.wrapping_add(index as u32);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), PORT)
}

fn index_of(endpoint: SocketAddr) -> Option<u32> {
    match endpoint.ip() {
        IpAddr::V4(ip) if endpoint.port() == PORT => {
            let v = u32::from(ip);
            v.checked_sub(ENDPOINT_BASE).filter(|i| *i < 0x0100_0000)
        }
        _ => None,
    }
}

fn unit(rng: &mut ChaCha8Rng) -> f64 {
    let x = (rng.next_u64() >> 11) as f64;
    x / ((1u64 << 53) as f64)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Sim {
    /// A simulator with no nodes, its clock starting at `start`.
    pub fn new(start: Instant, config: SimConfig) -> Sim {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Sim {
            config,
            start,
            now: 0,
            slots: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            partitioned: false,
            stats: SimStats::default(),
            outcomes: HashMap::new(),
            message_count: 0,
            events: Vec::new(),
            in_flight: Vec::new(),
            free_slots: Vec::new(),
        }
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.start + Duration::from_micros(self.now)
    }
    /// Simulated time since start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.now)
    }
    /// Counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }
    /// Number of slots (live or dead nodes).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
    /// The node in slot `index`, if alive.
    pub fn node(&self, index: usize) -> Option<&Node> {
        self.slots.get(index).and_then(|s| s.node.as_ref())
    }
    /// Indices of live nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].node.is_some())
            .collect()
    }
    /// Time from spawn to [`Event::Joined`] of slot `index`.
    pub fn join_duration(&self, index: usize) -> Option<Duration> {
        let s = self.slots.get(index)?;
        s.joined_at
            .map(|j| Duration::from_micros(j.saturating_sub(s.spawned_at)))
    }

    /// Draws a random number (for callers that want the run's RNG).
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A random live node.
    pub fn random_live(&mut self) -> Option<usize> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        for _ in 0..64 {
            let i = (self.rng.next_u64() % n as u64) as usize;
            if self.slots[i].node.is_some() {
                return Some(i);
            }
        }
        let live = self.live();
        if live.is_empty() {
            return None;
        }
        let i = (self.rng.next_u64() % live.len() as u64) as usize;
        Some(live[i])
    }

    /// Adds a node that joins through up to `bootstrap` random live nodes
    /// (none: it starts a ring of its own). Returns its slot.
    pub fn spawn(&mut self, bootstrap: usize) -> usize {
        let index = self.slots.len();
        let node = self.joining_node(index, None, bootstrap);
        self.slots.push(Slot {
            address: node.address(),
            node: Some(node),
            group: 0,
            timer_at: u64::MAX,
            spawned_at: self.now,
            joined_at: None,
        });
        self.drain(index);
        index
    }

    /// A node for slot `index` at `address` (a random one when `None`),
    /// joining through up to `bootstrap` random live nodes.
    fn joining_node(&mut self, index: usize, address: Option<Address>, bootstrap: usize) -> Node {
        let mut eps = Vec::new();
        for _ in 0..bootstrap {
            if let Some(b) = self.random_live() {
                let e = endpoint_of(b);
                if !eps.contains(&e) {
                    eps.push(e);
                }
            }
        }
        let address = address.unwrap_or_else(|| Address::random(&mut self.rng));
        let seed = self.rng.next_u64();
        let mut config = self.config.node.clone();
        config.endpoints = vec![endpoint_of(index)];
        let now = self.now();
        let mut node = Node::new_with_insecure_seed(now, config, address, seed);
        // Cannot fail: the node has an endpoint and has not left.
        let joined = node.join(now, &eps);
        debug_assert!(joined.is_ok());
        node
    }

    /// Kills the node in slot `index` without warning (if it is alive) and
    /// starts a new process in its place at once: the same address and
    /// endpoint (an identity kept on disk), no memory of links or records,
    /// joining through up to `bootstrap` random live nodes. A slot
    /// [`crash`](Self::crash)ed earlier comes back this way after its
    /// downtime. Returns false if there is no such slot.
    pub fn restart(&mut self, index: usize, bootstrap: usize) -> bool {
        let Some(address) = self.slots.get(index).map(|s| s.address) else {
            return false;
        };
        self.crash(index);
        let node = self.joining_node(index, Some(address), bootstrap);
        let slot = &mut self.slots[index];
        slot.node = Some(node);
        slot.timer_at = u64::MAX;
        slot.spawned_at = self.now;
        slot.joined_at = None;
        self.drain(index);
        true
    }

    /// Kills a node without warning.
    pub fn crash(&mut self, index: usize) {
        if let Some(s) = self.slots.get_mut(index) {
            s.node = None;
        }
    }

    /// Makes a node leave gracefully, then removes it.
    pub fn leave(&mut self, index: usize) {
        let now = self.now();
        if let Some(n) = self.slots.get_mut(index).and_then(|s| s.node.as_mut()) {
            n.leave(now);
        }
        self.drain(index);
        self.crash(index);
    }

    /// Splits the live nodes into two random halves that cannot reach each
    /// other.
    pub fn partition(&mut self) {
        for i in 0..self.slots.len() {
            self.slots[i].group = (self.rng.next_u32() & 1) as u8;
        }
        self.partitioned = true;
    }

    /// Removes the partition.
    pub fn heal(&mut self) {
        self.partitioned = false;
    }

    /// Issues an echo from `from` to the node in slot `to`; returns the
    /// request key for [`take_outcome`](Self::take_outcome).
    pub fn echo(&mut self, from: usize, to: usize) -> Option<(u32, u64)> {
        let dest = self.node(to)?.address();
        let now = self.now();
        let id = self
            .slots
            .get_mut(from)?
            .node
            .as_mut()?
            .echo(now, dest)
            .ok()?;
        self.drain(from);
        Some((from as u32, id))
    }

    /// Issues a DHT request from `from`.
    pub fn dht(
        &mut self,
        from: usize,
        op: DhtOp,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Option<(u32, u64)> {
        let now = self.now();
        let node = self.slots.get_mut(from)?.node.as_mut()?;
        let id = match op {
            DhtOp::Put => node.dht_put(now, key, value, ttl),
            DhtOp::Get => node.dht_get(now, key),
            DhtOp::Create => node.dht_create(now, key, value, ttl),
        }
        .ok()?;
        self.drain(from);
        Some((from as u32, id))
    }

    /// Takes the events recorded so far (with [`SimConfig::record_events`]),
    /// each with its node's slot.
    pub fn take_events(&mut self) -> Vec<(usize, Event)> {
        core::mem::take(&mut self.events)
    }

    /// Sends application data from `from` to the node in slot `to`.
    pub fn send(&mut self, from: usize, to: usize, payload: Vec<u8>) -> bool {
        let Some(dest) = self.node(to).map(Node::address) else {
            return false;
        };
        let now = self.now();
        let ok = self
            .slots
            .get_mut(from)
            .and_then(|s| s.node.as_mut())
            .is_some_and(|n| n.send(now, dest, payload).is_ok());
        self.drain(from);
        ok
    }

    /// Sends a routed echo to an arbitrary address (which may not exist).
    pub fn echo_address(&mut self, from: usize, address: Address) -> Option<(u32, u64)> {
        let now = self.now();
        let id = self
            .slots
            .get_mut(from)?
            .node
            .as_mut()?
            .echo(now, address)
            .ok()?;
        self.drain(from);
        Some((from as u32, id))
    }

    /// Removes and returns the outcome of a request, once known.
    pub fn take_outcome(&mut self, key: (u32, u64)) -> Option<Outcome> {
        self.outcomes.remove(&key)
    }

    /// Runs the simulation for `duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now.saturating_add(micros(duration));
        while let Some(top) = self.queue.peek() {
            if top.at > until {
                break;
            }
            let Some(e) = self.queue.pop() else { break };
            self.now = self.now.max(e.at);
            match e.kind {
                Kind::Timer { node } => {
                    let i = node as usize;
                    if self.slots[i].timer_at != e.at {
                        continue;
                    }
                    self.slots[i].timer_at = u64::MAX;
                    let now = self.now();
                    if let Some(n) = self.slots[i].node.as_mut() {
                        n.handle_timeout(now);
                        self.drain(i);
                    }
                }
                Kind::Deliver { to, from, message } => {
                    let i = to as usize;
                    let now = self.now();
                    let Some(message) = self.take_in_flight(message) else {
                        continue;
                    };
                    if let Some(n) = self.slots[i].node.as_mut() {
                        self.stats.delivered += 1;
                        n.handle_message(now, endpoint_of(from as usize), message);
                        self.drain(i);
                    } else {
                        self.stats.lost += 1;
                    }
                }
            }
        }
        self.now = until;
    }

    fn latency(&self, a: u32, b: u32) -> u64 {
        let (x, y) = if a < b { (a, b) } else { (b, a) };
        let mut h = (u64::from(x) << 32 | u64::from(y)) ^ self.config.seed;
        // splitmix64 finaliser
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        let lo = micros(self.config.min_latency);
        let hi = micros(self.config.max_latency).max(lo);
        lo + h % (hi - lo + 1)
    }

    fn put_in_flight(&mut self, message: Message) -> u32 {
        match self.free_slots.pop() {
            Some(k) => {
                self.in_flight[k as usize] = Some(message);
                k
            }
            None => {
                self.in_flight.push(Some(message));
                (self.in_flight.len() - 1) as u32
            }
        }
    }

    fn take_in_flight(&mut self, k: u32) -> Option<Message> {
        let m = self.in_flight.get_mut(k as usize)?.take();
        self.free_slots.push(k);
        m
    }

    fn push(&mut self, at: u64, kind: Kind) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            kind,
        });
    }

    /// Drains a node's transmits and events and re-arms its timer.
    fn drain(&mut self, index: usize) {
        let Some(node) = self.slots[index].node.as_mut() else {
            return;
        };
        let mut transmits = Vec::new();
        while let Some(t) = node.poll_transmit() {
            transmits.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = node.poll_event() {
            events.push(e);
        }
        let timeout = node.poll_timeout();
        for t in transmits {
            self.stats.sent += 1;
            let Some(to) = index_of(t.destination) else {
                self.stats.lost += 1;
                continue;
            };
            let to_slot = to as usize;
            if to_slot >= self.slots.len()
                || (self.partitioned && self.slots[to_slot].group != self.slots[index].group)
                || (self.config.loss > 0.0 && unit(&mut self.rng) < self.config.loss)
            {
                self.stats.lost += 1;
                continue;
            }
            let mut message = t.message;
            self.message_count = self.message_count.wrapping_add(1);
            if self.config.wire_check_every > 0
                && self
                    .message_count
                    .is_multiple_of(self.config.wire_check_every)
            {
                self.stats.wire_checked += 1;
                match Message::parse(&message.to_vec()) {
                    Ok(m) if m == message => message = m,
                    _ => self.stats.wire_mismatches += 1,
                }
            }
            let at = self.now + self.latency(index as u32, to);
            let message = self.put_in_flight(message);
            self.push(
                at,
                Kind::Deliver {
                    to,
                    from: index as u32,
                    message,
                },
            );
        }
        for e in events {
            if self.config.record_events {
                self.events.push((index, e.clone()));
            }
            match e {
                Event::Joined if self.slots[index].joined_at.is_none() => {
                    self.slots[index].joined_at = Some(self.now);
                }
                Event::EchoReply { id, hops } => {
                    self.outcomes
                        .insert((index as u32, id), Outcome::Echo(hops));
                }
                Event::EchoFailed { id } => {
                    self.outcomes
                        .insert((index as u32, id), Outcome::EchoFailed);
                }
                Event::Dht {
                    id, op, outcome, ..
                } => {
                    self.outcomes
                        .insert((index as u32, id), Outcome::Dht(op, outcome));
                }
                _ => {}
            }
        }
        if let Some(t) = timeout {
            // Round up: the node must see a time at or past its deadline.
            let d = t.saturating_duration_since(self.start);
            let at = micros(d)
                .saturating_add(u64::from(d.subsec_nanos() % 1000 != 0))
                .max(self.now);
            if at != self.slots[index].timer_at {
                self.slots[index].timer_at = at;
                self.push(at, Kind::Timer { node: index as u32 });
            }
        }
    }

    /// Fraction of adjacent pairs on the ring of live, joined nodes that
    /// hold a link to each other (1.0: the ring is consistent).
    pub fn ring_consistency(&self) -> f64 {
        let mut ring: Vec<(Address, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_ref().map(|n| (n.address(), i)))
            .collect();
        if ring.len() < 2 {
            return 1.0;
        }
        ring.sort_unstable();
        let n = ring.len();
        let mut ok = 0usize;
        for k in 0..n {
            let (a, i) = ring[k];
            let (b, j) = ring[(k + 1) % n];
            let ab = self
                .node(i)
                .is_some_and(|x| x.connections().position(b).is_some());
            let ba = self
                .node(j)
                .is_some_and(|x| x.connections().position(a).is_some());
            if ab && ba {
                ok += 1;
            }
        }
        ok as f64 / n as f64
    }

    /// Links per live node: (mean, max).
    pub fn connection_counts(&self) -> (f64, usize) {
        let counts: Vec<usize> = self
            .slots
            .iter()
            .filter_map(|s| s.node.as_ref().map(|n| n.connections().len()))
            .collect();
        if counts.is_empty() {
            return (0.0, 0);
        }
        let sum: usize = counts.iter().sum();
        (
            sum as f64 / counts.len() as f64,
            counts.iter().copied().max().unwrap_or(0),
        )
    }

    /// Sum of maintenance messages sent by live nodes.
    pub fn maintenance_sent(&self) -> u64 {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref().map(|n| n.stats().maintenance_sent))
            .sum()
    }

    /// Sum of neighbour lists (lookahead upkeep) sent by live nodes.
    pub fn neighbor_lists_sent(&self) -> u64 {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref().map(|n| n.stats().neighbor_lists_sent))
            .sum()
    }

    /// Mean of [`Node::memory_estimate`] over live nodes.
    pub fn memory_per_node(&self) -> f64 {
        let v: Vec<usize> = self
            .slots
            .iter()
            .filter_map(|s| s.node.as_ref().map(|n| n.memory_estimate()))
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<usize>() as f64 / v.len() as f64
        }
    }
}
