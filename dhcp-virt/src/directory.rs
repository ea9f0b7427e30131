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
//! # The conflict rule
//!
//! A DHT does not answer in [`ClaimResult`]s: a create-if-absent either
//! stores the record or reports the owners already stored, and after a
//! healed partition the replicas of both sides may report several. An
//! adapter turns that [`CreateAnswer`] into a [`ClaimResult`] with
//! [`claim_result`], one rule every claimant applies alike so that all
//! agree on one winner without talking to each other: **the smallest
//! owner wins** ([`winning_owner`]). A renewal's re-claim
//! ([`ClaimKind::Renewal`], see
//! [`Server::claim_kind`](crate::Server::claim_kind)) loses its address only
//! to another owner: a directory that refuses to store (full, rejected)
//! says nothing about owners, so the lease stands and the next renewal asks
//! again, while a new claim so refused is [`ClaimResult::Taken`] and the
//! server tries another address.
//!
//! Owners are opaque to the rule: any `Ord` type. Today a node stores
//! [`ClientKey::to_bytes`] and compares those bytes. The rule is written
//! so that the owners can become *authenticated* claims: when the
//! directory's records are signed, the owner handed to [`claim_result`]
//! is the verified writer key of each record (with the client key, as a
//! tuple, when one writer claims for several clients), and a record whose
//! signature does not verify must be left out of the answer before the
//! rule runs — otherwise anyone could plant a smaller owner and take every
//! address. The rule itself never looks inside an owner.
//!
//! [`AddressDirectory`] is the same contract from the directory's side, so
//! a node can adapt its DHT to it and tests can use `FakeDirectory` (feature `test-util`): an
//! in-memory directory with configurable delays and injected conflicts.

#[cfg(any(test, feature = "test-util"))]
use std::cmp::Reverse;
#[cfg(any(test, feature = "test-util"))]
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

/// Whether a claim is a new binding's or a renewal's re-claim (see
/// [`Server::claim_kind`](crate::Server::claim_kind)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimKind {
    /// A new binding: the client is held until the answer comes.
    New,
    /// A renewal's re-claim of a bound address: the ACK has gone already,
    /// and only another owner takes the address away.
    Renewal,
}

/// What a directory answered to a create-if-absent of `address → owner`,
/// before the [conflict rule](self#the-conflict-rule) reads it. `O` is an
/// opaque owner identity (bytes today, a verified signer later).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CreateAnswer<O> {
    /// No record existed; the claimant's is stored now.
    Created,
    /// Records exist: the owners they name, in any order (several after a
    /// healed partition, when the replicas of both sides meet). Only
    /// authenticated owners belong here.
    Exists(Vec<O>),
    /// The directory would not store the record (the key is full, the
    /// request was rejected): nothing is known about owners.
    Refused,
    /// No answer (timeout, no route).
    Failed,
}

/// The owner that keeps an address claimed by several: the smallest. Every
/// claimant applies this alike, so all agree on one winner. `None` if there
/// are no owners.
pub fn winning_owner<'a, O: Ord + 'a>(owners: impl IntoIterator<Item = &'a O>) -> Option<&'a O> {
    owners.into_iter().min()
}

/// The conflict rule: what `answer` means for a claim by `claimant`.
///
/// * [`CreateAnswer::Created`] → [`ClaimResult::Granted`].
/// * [`CreateAnswer::Exists`] → `Granted` if the claimant is the
///   [winning owner](winning_owner) (the record is ours: a renewal, a
///   client that moved between servers, or a partition we won), else
///   [`ClaimResult::Taken`].
/// * [`CreateAnswer::Refused`] → `Taken` for a [`ClaimKind::New`] claim
///   (try another address), [`ClaimResult::Failed`] for a
///   [`ClaimKind::Renewal`] (the lease stands; the next renewal asks
///   again).
/// * [`CreateAnswer::Failed`] → `Failed`.
///
/// ```
/// use dhcp_virt::directory::{claim_result, ClaimKind, CreateAnswer};
/// use dhcp_virt::ClaimResult;
///
/// // After a healed partition both sides' owners come back: the smallest wins.
/// let both = CreateAnswer::Exists(vec![b"owner-b".to_vec(), b"owner-a".to_vec()]);
/// assert_eq!(claim_result(&both, &b"owner-a".to_vec(), ClaimKind::Renewal), ClaimResult::Granted);
/// assert_eq!(claim_result(&both, &b"owner-b".to_vec(), ClaimKind::Renewal), ClaimResult::Taken);
/// ```
pub fn claim_result<O: Ord>(
    answer: &CreateAnswer<O>,
    claimant: &O,
    kind: ClaimKind,
) -> ClaimResult {
    match (answer, kind) {
        (CreateAnswer::Created, _) => ClaimResult::Granted,
        (CreateAnswer::Exists(owners), _) if winning_owner(owners) == Some(claimant) => {
            ClaimResult::Granted
        }
        (CreateAnswer::Exists(_), _) => ClaimResult::Taken,
        (CreateAnswer::Refused, ClaimKind::New) => ClaimResult::Taken,
        (CreateAnswer::Refused, ClaimKind::Renewal) | (CreateAnswer::Failed, _) => {
            ClaimResult::Failed
        }
    }
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

#[cfg(any(test, feature = "test-util"))]
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

#[cfg(any(test, feature = "test-util"))]
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

#[cfg(any(test, feature = "test-util"))]
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

#[cfg(any(test, feature = "test-util"))]
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
            let keep = match self.records.get(&addr) {
                Some(kept) => {
                    let (kept_bytes, other_bytes) = (kept.to_bytes(), owner.to_bytes());
                    winning_owner([&kept_bytes, &other_bytes]) == Some(&kept_bytes)
                }
                None => false,
            };
            if !keep {
                self.records.insert(addr, owner);
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

#[cfg(any(test, feature = "test-util"))]
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

    // Moved from wow-node's core, where the rule used to live.
    #[test]
    fn claims_after_a_healed_partition_go_to_the_smallest_owner() {
        let (a, b) = (b"owner-a".to_vec(), b"owner-b".to_vec());
        for kind in [ClaimKind::New, ClaimKind::Renewal] {
            let claim =
                |answer: &CreateAnswer<Vec<u8>>, owner: &Vec<u8>| claim_result(answer, owner, kind);
            assert_eq!(claim(&CreateAnswer::Created, &a), ClaimResult::Granted);
            // The record is ours (a renewal), or another's.
            let ours = CreateAnswer::Exists(vec![a.clone()]);
            assert_eq!(claim(&ours, &a), ClaimResult::Granted);
            assert_eq!(claim(&ours, &b), ClaimResult::Taken);
            // Both sides' records: one winner, whatever the order.
            for owners in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
                let both = CreateAnswer::Exists(owners);
                assert_eq!(claim(&both, &a), ClaimResult::Granted);
                assert_eq!(claim(&both, &b), ClaimResult::Taken);
            }
            // A record with no owner we can name is nobody's grant.
            assert_eq!(claim(&CreateAnswer::Exists(vec![]), &a), ClaimResult::Taken);
            assert_eq!(claim(&CreateAnswer::Failed, &a), ClaimResult::Failed);
        }
        // A refusing store turns a new claim away but does not undo a lease.
        assert_eq!(
            claim_result(&CreateAnswer::Refused, &a, ClaimKind::New),
            ClaimResult::Taken
        );
        assert_eq!(
            claim_result(&CreateAnswer::Refused, &a, ClaimKind::Renewal),
            ClaimResult::Failed
        );
    }

    #[test]
    fn owners_are_opaque_any_ordered_identity_works() {
        // A signed claim's owner: (writer key, client) compared as a tuple.
        let ours = ([1u8; 32], 7u32);
        let theirs = ([2u8; 32], 1u32);
        let answer = CreateAnswer::Exists(vec![theirs, ours]);
        assert_eq!(
            claim_result(&answer, &ours, ClaimKind::Renewal),
            ClaimResult::Granted
        );
        assert_eq!(
            claim_result(&answer, &theirs, ClaimKind::Renewal),
            ClaimResult::Taken
        );
        assert_eq!(winning_owner(&[3, 1, 2]), Some(&1));
        assert_eq!(winning_owner::<u8>(&[]), None);
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
