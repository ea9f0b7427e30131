//! The decentralised allocation contract: a shared directory of
//! `address → owner` records with atomic create-if-absent, such as an
//! overlay DHT.
//!
//! The server never calls the directory. In
//! [`Allocation::Directory`](crate::Allocation::Directory) mode it emits
//! [`DirectoryRequest`]s through
//! [`Server::poll_directory_request`](crate::Server::poll_directory_request);
//! the caller executes each one (a DHT `create` is a network round trip)
//! and hands the answer back with
//! [`Server::handle_directory_completion`](crate::Server::handle_directory_completion).
//! Meanwhile the client is held as pending: its retransmissions are
//! absorbed, and a lost race makes the server try another address.
//!
//! # Renewals and partitions
//!
//! A renewal is ACKed at once and re-claims the address (a [`DirectoryOp::Claim`]
//! by the same owner), which refreshes the record's lifetime. A network
//! partition can let servers on both sides grant one address to two
//! clients, each side's directory deciding alone. Once the partition heals,
//! the directory keeps one record (a merged DHT should answer every
//! claimant by one rule, such as the smallest owner wins) and answers the
//! other owner's re-claim with [`ClaimResult::Taken`]. That server then
//! gives the address up: the binding leaves its store, the address stays
//! out of its pool while the client may still use it, and it emits
//! [`Event::ClaimLost`](crate::Event::ClaimLost). The ACK already sent cannot
//! be called back, so the loser keeps the duplicate until its next REQUEST
//! (T1, half the lease), which is NAKed (RFC 2131 §4.3.2): the client
//! restarts at DISCOVER and is offered another address. A re-claim that
//! [`Failed`](ClaimResult::Failed) changes nothing; the next renewal tries
//! again.
//!
//! [`AddressDirectory`] is the same contract from the directory's side, so
//! a node can adapt its DHT to it and tests can use [`FakeDirectory`]: an
//! in-memory directory with configurable delays and injected conflicts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::lease::ClientKey;

/// Identifies a request, unique per server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What the server asks of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DirectoryOp {
    /// Create `addr → owner` if no record exists. Succeeds also when the
    /// record exists with the same owner (a renewal, or a client moving
    /// between servers).
    Claim,
    /// Delete the record of `addr` if `owner` holds it.
    Release,
}

/// One request for the directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirectoryRequest {
    /// Echo this in the completion.
    pub id: RequestId,
    /// Claim or release.
    pub op: DirectoryOp,
    /// The address.
    pub addr: Ipv4Addr,
    /// The owner (use [`ClientKey::to_bytes`] as the stored value).
    pub owner: ClientKey,
    /// How long the record must live at least (the lease time); a DHT
    /// record's TTL.
    pub lease_duration: Duration,
}

/// The directory's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimResult {
    /// The record now names the requested owner (or was released).
    Granted,
    /// Another owner holds the address.
    Taken,
    /// The directory could not answer (timeout, no route); nothing is known.
    Failed,
}

/// The answer to one [`DirectoryRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirectoryCompletion {
    /// The request's id.
    pub id: RequestId,
    /// The outcome.
    pub result: ClaimResult,
}

/// A shared `address → owner` directory seen as a sans-IO machine.
///
/// `Tag` routes completions back to the submitter (several servers may
/// share one directory).
pub trait AddressDirectory {
    /// Routing tag returned with each completion.
    type Tag;
    /// Start executing `request`.
    fn submit(&mut self, now: Instant, tag: Self::Tag, request: DirectoryRequest);
    /// A completion that is due at `now`, if any.
    fn poll_completion(&mut self, now: Instant) -> Option<(Self::Tag, DirectoryCompletion)>;
    /// When the next completion becomes due.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// Knobs of [`FakeDirectory`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FakeConfig {
    /// Shortest time from submit to completion.
    pub min_delay: Duration,
    /// Longest time from submit to completion.
    pub max_delay: Duration,
    /// Chance that a claim of a free address loses to a phantom owner (who
    /// then keeps the address), as when a node outside the test wins.
    pub conflict_probability: f64,
    /// Chance that a request fails without effect.
    pub failure_probability: f64,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            conflict_probability: 0.0,
            failure_probability: 0.0,
        }
    }
}

/// An in-memory [`AddressDirectory`] for tests. Each request takes effect
/// atomically when it completes, so concurrent claims race as they would
/// on a DHT: the first to complete wins.
#[derive(Debug)]
pub struct FakeDirectory<T> {
    config: FakeConfig,
    records: HashMap<Ipv4Addr, ClientKey>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, (T, DirectoryRequest)>,
    seq: u64,
    rng: u64,
}

impl<T> FakeDirectory<T> {
    /// An empty directory; `seed` drives delays and injected faults.
    pub fn new(config: FakeConfig, seed: u64) -> Self {
        FakeDirectory {
            config,
            records: HashMap::new(),
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            seq: 0,
            rng: seed,
        }
    }

    /// The current owner of `addr`.
    pub fn owner(&self, addr: Ipv4Addr) -> Option<&ClientKey> {
        self.records.get(&addr)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Heal a partition: take over `other`'s records and its requests in
    /// flight (still due at their times). Where both hold a record of one
    /// address, the owner with the smallest [`ClientKey::to_bytes`] keeps
    /// it, a rule every node of a merged DHT applies alike; the other
    /// owner's next claim is [`ClaimResult::Taken`].
    pub fn merge(&mut self, other: FakeDirectory<T>) {
        for (addr, owner) in other.records {
            match self.records.get(&addr) {
                Some(kept) if kept.to_bytes() <= owner.to_bytes() => {}
                _ => {
                    self.records.insert(addr, owner);
                }
            }
        }
        let mut in_flight = other.in_flight;
        for Reverse((due, seq)) in other.queue {
            if let Some(entry) = in_flight.remove(&seq) {
                self.seq += 1;
                self.queue.push(Reverse((due, self.seq)));
                self.in_flight.insert(self.seq, entry);
            }
        }
    }

    /// splitmix64.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn apply(&mut self, request: &DirectoryRequest) -> ClaimResult {
        if self.chance(self.config.failure_probability) {
            return ClaimResult::Failed;
        }
        match request.op {
            DirectoryOp::Claim => match self.records.get(&request.addr).cloned() {
                Some(owner) if owner == request.owner => ClaimResult::Granted,
                Some(_) => ClaimResult::Taken,
                None if self.chance(self.config.conflict_probability) => {
                    let phantom = ClientKey::Id(b"phantom".to_vec());
                    self.records.insert(request.addr, phantom);
                    ClaimResult::Taken
                }
                None => {
                    self.records.insert(request.addr, request.owner.clone());
                    ClaimResult::Granted
                }
            },
            DirectoryOp::Release => {
                if self.records.get(&request.addr) == Some(&request.owner) {
                    self.records.remove(&request.addr);
                }
                ClaimResult::Granted
            }
        }
    }
}

impl<T> AddressDirectory for FakeDirectory<T> {
    type Tag = T;

    fn submit(&mut self, now: Instant, tag: T, request: DirectoryRequest) {
        let spread = self
            .config
            .max_delay
            .saturating_sub(self.config.min_delay)
            .as_micros();
        let extra = match u64::try_from(spread) {
            Ok(0) | Err(_) => 0,
            Ok(s) => self.next_u64() % (s + 1),
        };
        let due = now + self.config.min_delay + Duration::from_micros(extra);
        self.seq += 1;
        self.queue.push(Reverse((due, self.seq)));
        self.in_flight.insert(self.seq, (tag, request));
    }

    fn poll_completion(&mut self, now: Instant) -> Option<(T, DirectoryCompletion)> {
        let &Reverse((due, seq)) = self.queue.peek()?;
        if due > now {
            return None;
        }
        self.queue.pop();
        let (tag, request) = self.in_flight.remove(&seq)?;
        let result = self.apply(&request);
        Some((
            tag,
            DirectoryCompletion {
                id: request.id,
                result,
            },
        ))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((due, _))| *due)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::HardwareAddr;

    fn key(n: u8) -> ClientKey {
        ClientKey::Hardware(HardwareAddr::ethernet([2, 0, 0, 0, 0, n]))
    }

    fn claim(id: u64, owner: ClientKey) -> DirectoryRequest {
        DirectoryRequest {
            id: RequestId(id),
            op: DirectoryOp::Claim,
            addr: Ipv4Addr::new(10, 0, 0, 9),
            owner,
            lease_duration: Duration::from_secs(60),
        }
    }

    #[test]
    fn first_completion_wins_and_owner_may_reclaim() {
        let t0 = Instant::now();
        let mut d = FakeDirectory::new(FakeConfig::default(), 7);
        d.submit(t0, 'a', claim(1, key(1)));
        d.submit(t0, 'b', claim(2, key(2)));
        assert!(d.poll_completion(t0).is_none());
        let end = t0 + Duration::from_secs(1);
        let first = d.poll_completion(end).unwrap();
        let second = d.poll_completion(end).unwrap();
        assert_eq!(first.1.result, ClaimResult::Granted);
        assert_eq!(second.1.result, ClaimResult::Taken);
        let winner = if first.0 == 'a' { key(1) } else { key(2) };
        assert_eq!(d.owner(Ipv4Addr::new(10, 0, 0, 9)), Some(&winner));
        d.submit(end, 'x', claim(3, winner.clone()));
        assert_eq!(
            d.poll_completion(end + Duration::from_secs(1))
                .unwrap()
                .1
                .result,
            ClaimResult::Granted
        );
        let mut release = claim(4, winner);
        release.op = DirectoryOp::Release;
        d.submit(end, 'x', release);
        d.poll_completion(end + Duration::from_secs(1)).unwrap();
        assert!(d.is_empty());
    }

    #[test]
    fn merge_keeps_the_smallest_owner_and_requests_in_flight() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let fixed = FakeConfig {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            ..FakeConfig::default()
        };
        let mut a = FakeDirectory::new(fixed, 1);
        let mut b = FakeDirectory::new(fixed, 2);
        // Both sides grant 10.0.0.9, to different owners; a larger owner
        // on the side that is merged into.
        a.submit(t0, 'a', claim(1, key(7)));
        b.submit(t0, 'b', claim(1, key(3)));
        assert_eq!(
            a.poll_completion(later).unwrap().1.result,
            ClaimResult::Granted
        );
        assert_eq!(
            b.poll_completion(later).unwrap().1.result,
            ClaimResult::Granted
        );
        let mut only_b = claim(2, key(4));
        only_b.addr = Ipv4Addr::new(10, 0, 0, 10);
        b.submit(t0, 'b', only_b);
        assert_eq!(
            b.poll_completion(later).unwrap().1.result,
            ClaimResult::Granted
        );
        // A request still in flight on b completes after the merge.
        b.submit(later, 'b', claim(3, key(3)));
        a.merge(b);
        assert_eq!(a.len(), 2);
        assert_eq!(a.owner(Ipv4Addr::new(10, 0, 0, 9)), Some(&key(3)));
        assert_eq!(a.owner(Ipv4Addr::new(10, 0, 0, 10)), Some(&key(4)));
        assert_eq!(a.poll_timeout(), Some(later + Duration::from_millis(10)));
        let (tag, done) = a.poll_completion(later + Duration::from_secs(1)).unwrap();
        assert_eq!(
            (tag, done.id, done.result),
            ('b', RequestId(3), ClaimResult::Granted)
        );
        // The loser's re-claim is refused.
        a.submit(later, 'a', claim(4, key(7)));
        let (_, done) = a.poll_completion(later + Duration::from_secs(1)).unwrap();
        assert_eq!(done.result, ClaimResult::Taken);
    }
}
