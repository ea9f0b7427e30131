//! Central allocation: one designated node keeps the network's
//! `address → owner` table and answers every other node's claims (the
//! WOW paper's central DHCP server, reached through the overlay).
//!
//! Each node still runs its own [`Server`](crate::Server) in
//! [`Allocation::Directory`](crate::Allocation::Directory) mode and picks
//! candidate addresses from its pool; instead of a DHT create-if-absent,
//! its [`DirectoryRequest`](crate::DirectoryRequest)s go to the designated
//! node, whose [`Registry`] decides. One authority means no duplicate can
//! arise, even when every node's pool is the whole network (what
//! `allocation = "local"` cannot promise past a few hundred nodes), and no
//! partition can grant an address twice: a node cut off from the
//! allocator gets [`ClaimResult::Failed`] and leases nothing new.
//!
//! The registry is sans-IO: the caller hands it each claim with the
//! requester's identity (`R`, such as the requesting node's overlay
//! address, as the transport authenticated it) and the time.
//!
//! # Rules
//!
//! * An address outside the registry's [`RegistryConfig::network`] (or
//!   its network, broadcast or excluded addresses) is
//!   [`ClaimResult::Taken`]: the server tries another.
//! * A free address (never claimed, released, or expired) is granted to
//!   the claimant for the claimed lease time, at most
//!   [`RegistryConfig::max_lease`].
//! * A held address is granted again only to the same owner *through the
//!   same requester* (a renewal); anyone else, even one that knows the
//!   owner's client key, gets [`ClaimResult::Taken`] until the record
//!   expires. A requester cannot take over another node's guest's lease.
//! * One requester holds at most [`RegistryConfig::max_per_requester`]
//!   addresses and the table at most [`RegistryConfig::max_records`]: a
//!   node asking for address after address is refused before it drains
//!   the pool. Renewals are never refused for these limits.
//! * A release by the holder frees the address; a release by anyone else
//!   changes nothing.
//!
//! # Persistence
//!
//! [`Registry::open`] keeps the table in any [`LeaseStore`] (the
//! [`FileStore`](crate::FileStore): an atomically replaced snapshot and a
//! journal, one `fdatasync` per change): every grant, renewal and release
//! is written before [`Registry::claim`] returns, so an answer never
//! promises what a crash would forget. A write that fails answers
//! [`ClaimResult::Failed`] and changes nothing. Each record is stored as a
//! [`Lease`] of its address whose client key packs the requester and the
//! owner ([`ClientKey::Id`]: requester length, requester, owner) and whose
//! expiry is wall-clock time; reopening drops what expired meanwhile.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use dhcp_virt::central::{Registry, RegistryConfig};
//! use dhcp_virt::ClaimResult;
//!
//! let now = Instant::now();
//! let mut registry: Registry<&str> =
//!     Registry::new(RegistryConfig::new("10.128.0.0/16".parse().unwrap()));
//! let addr = "10.128.0.7".parse().unwrap();
//! let hour = Duration::from_secs(3600);
//! assert_eq!(registry.claim(now, "node-a", addr, b"guest-a", hour), ClaimResult::Granted);
//! // Another node cannot lease the same address...
//! assert_eq!(registry.claim(now, "node-b", addr, b"guest-b", hour), ClaimResult::Taken);
//! // ...until the first lease runs out unrenewed.
//! let later = now + hour + Duration::from_secs(1);
//! assert_eq!(registry.claim(later, "node-b", addr, b"guest-b", hour), ClaimResult::Granted);
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use std::time::SystemTime;

use ipnet::Ipv4Net;

use crate::directory::ClaimResult;
use crate::error::StoreError;
use crate::lease::{ClientKey, Lease, LeaseState, LeaseStore};

/// Longest owner identity a registry stores ([`ClientKey::to_bytes`] is at
/// most 1 + 255 bytes; longer owners are refused as malformed).
///
/// [`ClientKey::to_bytes`]: crate::ClientKey::to_bytes
pub const MAX_OWNER_LEN: usize = 256;

/// The registry's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The addresses it hands out: the network's hosts, minus
    /// [`RegistryConfig::excluded`].
    pub network: Ipv4Net,
    /// Addresses never granted (the virtual gateway, reserved hosts).
    pub excluded: Vec<Ipv4Addr>,
    /// Longest lease granted; a claim for longer gets this.
    pub max_lease: Duration,
    /// Most addresses one requester holds at once.
    pub max_per_requester: usize,
    /// Most records in the table.
    pub max_records: usize,
}

impl RegistryConfig {
    /// Limits for `network`: leases up to a day, 16 addresses per
    /// requester, 1,048,576 records (about 100 MB at most).
    pub fn new(network: Ipv4Net) -> Self {
        RegistryConfig {
            network,
            excluded: Vec::new(),
            max_lease: Duration::from_secs(24 * 3600),
            max_per_requester: 16,
            max_records: 1 << 20,
        }
    }
}

/// One granted address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<R> {
    /// The client that holds it ([`ClientKey::to_bytes`](crate::ClientKey::to_bytes)).
    pub owner: Vec<u8>,
    /// The node that claimed it for the client.
    pub requester: R,
    /// When it is free again unless renewed.
    pub expires: Instant,
}

/// Where a [`Registry`] writes its records (see
/// [Persistence](self#persistence)).
struct Persist<R> {
    store: Box<dyn LeaseStore + Send>,
    /// The requester's bytes in a stored record.
    encode: fn(&R) -> Vec<u8>,
    /// An `Instant` and the wall-clock time it was, to store expiries as
    /// Unix seconds.
    anchor: (Instant, SystemTime),
}

impl<R> Persist<R> {
    fn unix(&self, at: Instant) -> u64 {
        let wall = self.anchor.1 + at.saturating_duration_since(self.anchor.0);
        wall.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn put(&mut self, addr: Ipv4Addr, record: &Record<R>) -> Result<(), StoreError> {
        let requester = (self.encode)(&record.requester);
        let mut packed = Vec::with_capacity(1 + requester.len() + record.owner.len());
        packed.push(requester.len().min(255) as u8);
        packed.extend_from_slice(&requester[..requester.len().min(255)]);
        packed.extend_from_slice(&record.owner);
        let lease = Lease {
            addr,
            client: ClientKey::Id(packed),
            expires_unix: self.unix(record.expires),
            state: LeaseState::Bound,
            hostname: None,
        };
        self.store.put(&lease)
    }
}

/// The designated node's table of the whole network's leases (see the
/// [module docs](self)).
pub struct Registry<R> {
    config: RegistryConfig,
    records: HashMap<Ipv4Addr, Record<R>>,
    per_requester: HashMap<R, usize>,
    /// Expiry times, possibly stale (a renewed record's old time stays
    /// until popped; [`Registry::expire`] checks the record itself).
    expiries: BinaryHeap<Reverse<(Instant, Ipv4Addr)>>,
    persist: Option<Persist<R>>,
}

impl<R: std::fmt::Debug> std::fmt::Debug for Registry<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .field("records", &self.records.len())
            .field("persistent", &self.persist.is_some())
            .finish()
    }
}

impl<R: Clone + Eq + Hash> Registry<R> {
    /// An empty registry in memory only.
    pub fn new(config: RegistryConfig) -> Self {
        Registry {
            config,
            records: HashMap::new(),
            per_requester: HashMap::new(),
            expiries: BinaryHeap::new(),
            persist: None,
        }
    }

    /// A registry kept in `store`, holding what the store holds (records
    /// that expired by `wall`, lie outside the network or do not decode
    /// are left out). `now` and `wall` are the same moment; `encode` and
    /// `decode` turn a requester into the bytes stored and back.
    pub fn open(
        config: RegistryConfig,
        mut store: Box<dyn LeaseStore + Send>,
        now: Instant,
        wall: SystemTime,
        encode: fn(&R) -> Vec<u8>,
        decode: fn(&[u8]) -> Option<R>,
    ) -> Result<Self, StoreError> {
        let stored = store.load()?;
        let mut registry = Registry::new(config);
        let wall_secs = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for lease in stored {
            let ClientKey::Id(packed) = &lease.client else {
                continue;
            };
            let Some((&len, rest)) = packed.split_first() else {
                continue;
            };
            let Some((requester, owner)) = rest.split_at_checked(usize::from(len)) else {
                continue;
            };
            let Some(requester) = decode(requester) else {
                continue;
            };
            let left = lease.expires_unix.saturating_sub(wall_secs);
            if left == 0
                || owner.is_empty()
                || owner.len() > MAX_OWNER_LEN
                || !registry.in_range(lease.addr)
                || registry.records.len() >= registry.config.max_records
            {
                continue;
            }
            let expires = now + Duration::from_secs(left).min(registry.config.max_lease);
            *registry.per_requester.entry(requester.clone()).or_insert(0) += 1;
            registry.records.insert(
                lease.addr,
                Record {
                    owner: owner.to_vec(),
                    requester,
                    expires,
                },
            );
            registry.expiries.push(Reverse((expires, lease.addr)));
        }
        registry.persist = Some(Persist {
            store,
            encode,
            anchor: (now, wall),
        });
        Ok(registry)
    }

    /// Its limits.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Whether `addr` is one the registry may grant.
    pub fn in_range(&self, addr: Ipv4Addr) -> bool {
        let net = self.config.network;
        net.contains(&addr)
            && (net.prefix_len() >= 31 || (addr != net.network() && addr != net.broadcast()))
            && !self.config.excluded.contains(&addr)
    }

    /// `requester` claims `addr` for `owner` for `lease` (see the rules in
    /// the [module docs](self)).
    pub fn claim(
        &mut self,
        now: Instant,
        requester: R,
        addr: Ipv4Addr,
        owner: &[u8],
        lease: Duration,
    ) -> ClaimResult {
        self.expire(now);
        if owner.is_empty() || owner.len() > MAX_OWNER_LEN || !self.in_range(addr) {
            return ClaimResult::Taken;
        }
        let expires = now + lease.min(self.config.max_lease);
        if let Some(record) = self.records.get(&addr) {
            if record.owner != owner || record.requester != requester {
                return ClaimResult::Taken;
            }
        } else {
            let held = self.per_requester.get(&requester).copied().unwrap_or(0);
            if held >= self.config.max_per_requester
                || self.records.len() >= self.config.max_records
            {
                return ClaimResult::Taken;
            }
        }
        let record = Record {
            owner: owner.to_vec(),
            requester,
            expires,
        };
        // Durable before it is granted: a failed write changes nothing.
        if let Some(p) = self.persist.as_mut()
            && p.put(addr, &record).is_err()
        {
            return ClaimResult::Failed;
        }
        if !self.records.contains_key(&addr) {
            *self
                .per_requester
                .entry(record.requester.clone())
                .or_insert(0) += 1;
        }
        self.records.insert(addr, record);
        self.expiries.push(Reverse((expires, addr)));
        ClaimResult::Granted
    }

    /// `requester` gives `addr` up for `owner`: [`ClaimResult::Granted`]
    /// if it held it (or nobody did), [`ClaimResult::Taken`] (and nothing
    /// changes) if someone else holds it.
    pub fn release(
        &mut self,
        now: Instant,
        requester: &R,
        addr: Ipv4Addr,
        owner: &[u8],
    ) -> ClaimResult {
        self.expire(now);
        match self.records.get(&addr) {
            None => ClaimResult::Granted,
            Some(r) if r.owner == owner && &r.requester == requester => {
                if let Some(p) = self.persist.as_mut()
                    && p.store.remove(addr).is_err()
                {
                    return ClaimResult::Failed;
                }
                self.remove(addr);
                ClaimResult::Granted
            }
            Some(_) => ClaimResult::Taken,
        }
    }

    /// Drops the records whose lease ran out by `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(&Reverse((at, addr))) = self.expiries.peek() {
            if at > now {
                break;
            }
            self.expiries.pop();
            if self.records.get(&addr).is_some_and(|r| r.expires <= now) {
                // A removal that fails to reach the disk is harmless: the
                // stored record's expiry has passed too, and reopening
                // drops it.
                if let Some(p) = self.persist.as_mut() {
                    let _ = p.store.remove(addr);
                }
                self.remove(addr);
                dropped += 1;
            }
        }
        // Renewals leave stale entries behind: rebuild when they dominate.
        if self.expiries.len() > 2 * self.records.len() + 64 {
            self.expiries = self
                .records
                .iter()
                .map(|(&a, r)| Reverse((r.expires, a)))
                .collect();
        }
        dropped
    }

    /// When the next record expires, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.peek().map(|Reverse((at, _))| *at)
    }

    /// The record of `addr`, if it is held (expired records may linger
    /// until the next call that takes `now`).
    pub fn get(&self, addr: Ipv4Addr) -> Option<&Record<R>> {
        self.records.get(&addr)
    }

    /// Every record, in no order (for status and persistence).
    pub fn records(&self) -> impl Iterator<Item = (Ipv4Addr, &Record<R>)> {
        self.records.iter().map(|(&a, r)| (a, r))
    }

    /// How many addresses `requester` holds.
    pub fn held_by(&self, requester: &R) -> usize {
        self.per_requester.get(requester).copied().unwrap_or(0)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no address is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn remove(&mut self, addr: Ipv4Addr) {
        if let Some(r) = self.records.remove(&addr)
            && let Some(n) = self.per_requester.get_mut(&r.requester)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_requester.remove(&r.requester);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn registry() -> Registry<u32> {
        let mut config = RegistryConfig::new("10.128.0.0/24".parse().unwrap());
        config.excluded = vec!["10.128.0.1".parse().unwrap()];
        Registry::new(config)
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 128, 0, last)
    }

    #[test]
    fn a_renewal_by_the_holder_extends_the_lease() {
        let now = Instant::now();
        let mut r = registry();
        assert_eq!(r.claim(now, 1, ip(5), b"a", HOUR), ClaimResult::Granted);
        let later = now + HOUR - Duration::from_secs(1);
        assert_eq!(r.claim(later, 1, ip(5), b"a", HOUR), ClaimResult::Granted);
        // Past the first lease's end, the renewed record still holds.
        assert_eq!(
            r.claim(now + HOUR + Duration::from_secs(1), 2, ip(5), b"b", HOUR),
            ClaimResult::Taken
        );
        assert_eq!(r.held_by(&1), 1);
    }

    #[test]
    fn addresses_outside_the_pool_are_never_granted() {
        let now = Instant::now();
        let mut r = registry();
        for addr in [ip(0), ip(1), ip(255), Ipv4Addr::new(10, 129, 0, 5)] {
            assert_eq!(
                r.claim(now, 1, addr, b"a", HOUR),
                ClaimResult::Taken,
                "{addr}"
            );
        }
        assert!(r.is_empty());
    }

    #[test]
    fn leases_are_capped_and_expire() {
        let now = Instant::now();
        let mut r = registry();
        let year = Duration::from_secs(365 * 86_400);
        assert_eq!(r.claim(now, 1, ip(5), b"a", year), ClaimResult::Granted);
        assert_eq!(r.poll_timeout(), Some(now + r.config().max_lease));
        assert_eq!(r.expire(now + r.config().max_lease), 1);
        assert!(r.is_empty());
        assert_eq!(r.held_by(&1), 0);
    }

    #[test]
    fn only_the_holder_releases() {
        let now = Instant::now();
        let mut r = registry();
        r.claim(now, 1, ip(5), b"a", HOUR);
        assert_eq!(r.release(now, &2, ip(5), b"a"), ClaimResult::Taken);
        assert_eq!(r.release(now, &1, ip(5), b"b"), ClaimResult::Taken);
        assert!(r.get(ip(5)).is_some());
        assert_eq!(r.release(now, &1, ip(5), b"a"), ClaimResult::Granted);
        assert_eq!(r.claim(now, 2, ip(5), b"b", HOUR), ClaimResult::Granted);
    }

    #[test]
    fn malformed_owners_are_refused() {
        let now = Instant::now();
        let mut r = registry();
        assert_eq!(r.claim(now, 1, ip(5), b"", HOUR), ClaimResult::Taken);
        let long = vec![7; MAX_OWNER_LEN + 1];
        assert_eq!(r.claim(now, 1, ip(5), &long, HOUR), ClaimResult::Taken);
        assert!(r.is_empty());
    }

    #[test]
    fn stale_expiry_entries_stay_bounded() {
        let now = Instant::now();
        let mut r = registry();
        r.claim(now, 1, ip(5), b"a", HOUR);
        for i in 0..10_000u32 {
            r.claim(
                now + Duration::from_millis(u64::from(i)),
                1,
                ip(5),
                b"a",
                HOUR,
            );
        }
        assert!(r.expiries.len() <= 2 * r.len() + 65, "{}", r.expiries.len());
    }

    /// A node that knows another node's guest's client key (it is sent in
    /// the clear on the guest's link, and travels in every claim) cannot
    /// have that guest's address granted to itself while the lease runs.
    #[test]
    fn attack_another_requester_cannot_take_a_held_address_with_the_owners_key() {
        let now = Instant::now();
        let mut r = registry();
        assert_eq!(r.claim(now, 1, ip(5), b"guest", HOUR), ClaimResult::Granted);
        assert_eq!(r.claim(now, 2, ip(5), b"guest", HOUR), ClaimResult::Taken);
        assert_eq!(r.get(ip(5)).map(|r| r.requester), Some(1));
        assert_eq!(r.release(now, &2, ip(5), b"guest"), ClaimResult::Taken);
        assert_eq!(r.get(ip(5)).map(|r| r.requester), Some(1));
    }

    /// One node asking for address after address gets a bounded share and
    /// leaves the rest of the pool to the others; its renewals still pass.
    #[test]
    fn attack_one_requester_cannot_drain_the_pool() {
        let now = Instant::now();
        let mut r = registry();
        let mut granted = 0;
        for last in 2..=254u8 {
            if r.claim(now, 666, ip(last), &[last], HOUR) == ClaimResult::Granted {
                granted += 1;
            }
        }
        assert_eq!(granted, r.config().max_per_requester);
        assert_eq!(r.claim(now, 666, ip(2), &[2], HOUR), ClaimResult::Granted);
        assert_eq!(
            r.claim(now, 1, ip(200), b"honest", HOUR),
            ClaimResult::Granted
        );
    }

    #[cfg(feature = "file-store")]
    #[test]
    fn a_reopened_registry_keeps_what_it_granted() {
        use crate::FileStore;
        let dir = std::env::temp_dir().join(format!("dhcp-virt-central-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("allocator.json");
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let config = RegistryConfig::new("10.128.0.0/24".parse().unwrap());
        let encode: fn(&u32) -> Vec<u8> = |r| r.to_be_bytes().to_vec();
        let decode: fn(&[u8]) -> Option<u32> = |b| Some(u32::from_be_bytes(b.try_into().ok()?));
        let open = |now, wall| {
            let store = Box::new(FileStore::open(&path).unwrap());
            Registry::open(config.clone(), store, now, wall, encode, decode).unwrap()
        };
        let mut r = open(now, wall);
        assert_eq!(r.claim(now, 1, ip(5), b"a", HOUR), ClaimResult::Granted);
        assert_eq!(r.claim(now, 2, ip(6), b"b", 2 * HOUR), ClaimResult::Granted);
        assert_eq!(r.claim(now, 2, ip(7), b"c", HOUR), ClaimResult::Granted);
        assert_eq!(r.release(now, &2, ip(7), b"c"), ClaimResult::Granted);
        drop(r);

        // A crash and a restart 30 minutes later: both grants hold.
        let later = now + Duration::from_secs(10);
        let mut r = open(later, wall + HOUR / 2);
        assert_eq!(r.len(), 2);
        assert_eq!(r.held_by(&2), 1);
        assert_eq!(r.claim(later, 3, ip(5), b"z", HOUR), ClaimResult::Taken);
        assert_eq!(r.claim(later, 3, ip(7), b"z", HOUR), ClaimResult::Granted);
        assert_eq!(
            r.get(ip(5)).map(|rec| rec.expires),
            Some(later + HOUR / 2),
            "the remaining half hour"
        );
        drop(r);

        // Ninety minutes after the first start: .5 expired, .6 stands.
        let r = open(later, wall + 3 * HOUR / 2);
        assert!(r.get(ip(5)).is_none());
        assert!(r.get(ip(6)).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A store that refuses every write.
    struct Broken;

    impl LeaseStore for Broken {
        fn load(&mut self) -> Result<Vec<Lease>, StoreError> {
            Ok(Vec::new())
        }
        fn put(&mut self, _: &Lease) -> Result<(), StoreError> {
            Err(StoreError::Io {
                path: "broken".into(),
                source: std::io::Error::other("disk full"),
            })
        }
        fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError> {
            self.put(&Lease {
                addr,
                client: ClientKey::Id(vec![1]),
                expires_unix: 0,
                state: LeaseState::Bound,
                hostname: None,
            })
        }
    }

    #[test]
    fn a_grant_that_cannot_be_written_is_not_granted() {
        let now = Instant::now();
        let config = RegistryConfig::new("10.128.0.0/24".parse().unwrap());
        let mut r: Registry<u32> = Registry::open(
            config,
            Box::new(Broken),
            now,
            SystemTime::now(),
            |r: &u32| r.to_be_bytes().to_vec(),
            |_| None,
        )
        .unwrap();
        assert_eq!(r.claim(now, 1, ip(5), b"a", HOUR), ClaimResult::Failed);
        assert!(r.is_empty());
        assert_eq!(r.held_by(&1), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let now = Instant::now();
        let mut config = RegistryConfig::new("10.128.0.0/24".parse().unwrap());
        config.max_records = 3;
        let mut r: Registry<u32> = Registry::new(config);
        for (i, last) in (10..16u8).enumerate() {
            r.claim(now, i as u32, ip(last), &[last], HOUR);
        }
        assert_eq!(r.len(), 3);
    }
}
