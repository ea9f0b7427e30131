//! The DHT's local record store.
//!
//! A key holds one *slot* per writer (at most [`MAX_VALUES_PER_KEY`]
//! writers), each a signed [`Record`] with its own expiry: the first record
//! a writer stores under a key creates its slot, and only a record of the
//! same writer with a greater version replaces it (see
//! [`crate::record`]). Nothing here checks signatures: the node verifies
//! records before it inserts them.
//!
//! The store enforces [`Quotas`]: per writer, the keys it holds a slot
//! under and their bytes; for the whole store, the slots and their bytes.
//! A write over a quota changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::record::{RecordRejection, WriterKey};
use crate::wire::{MAX_VALUES_PER_KEY, Record, Replica};

/// Bytes a slot is charged beyond its record's variable fields.
const SLOT_OVERHEAD: usize = 64;

/// Limits of one node's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Keys one writer may hold a slot under.
    pub keys_per_writer: usize,
    /// Bytes of one writer's slots.
    pub bytes_per_writer: usize,
    /// Slots in the whole store.
    pub records: usize,
    /// Bytes of the whole store.
    pub bytes: usize,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            keys_per_writer: 512,
            bytes_per_writer: 1 << 20,
            records: 100_000,
            bytes: 64 << 20,
        }
    }
}

/// One writer's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The writer's current record.
    pub record: Record,
    /// When it expires.
    pub expires_at: Instant,
}

/// Result of inserting a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// A new slot, or a newer version in the writer's slot.
    Stored,
    /// The same record again: its expiry may have been extended.
    Refreshed,
}

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    keys: usize,
    bytes: usize,
}

/// Records held by one node.
#[derive(Debug, Clone, Default)]
pub struct DhtStore {
    map: BTreeMap<Vec<u8>, Vec<Slot>>,
    usage: HashMap<WriterKey, Usage>,
    records: usize,
    bytes: usize,
    quotas: Quotas,
}

fn cost(r: &Record) -> usize {
    SLOT_OVERHEAD
        + r.key.len()
        + r.value.len()
        + r.writer.public_key.len()
        + r.credential.len()
        + r.signature.len()
}

impl DhtStore {
    /// An empty store with `quotas`.
    pub fn with_quotas(quotas: Quotas) -> DhtStore {
        DhtStore {
            quotas,
            ..DhtStore::default()
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Number of slots (records) held.
    pub fn record_count(&self) -> usize {
        self.records
    }
    /// Bytes charged to the store's quota.
    pub fn charged_bytes(&self) -> usize {
        self.bytes
    }
    /// Keys `writer` holds a slot under, and their bytes.
    pub fn writer_usage(&self, writer: &WriterKey) -> (usize, usize) {
        self.usage.get(writer).map_or((0, 0), |u| (u.keys, u.bytes))
    }

    /// Live records under `key`, one per writer, oldest slot first.
    pub fn get(&self, now: Instant, key: &[u8]) -> Vec<Record> {
        self.map
            .get(key)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.expires_at > now)
                    .map(|v| v.record.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Live slots under `key`.
    pub fn slots(&self, key: &[u8]) -> &[Slot] {
        self.map.get(key).map_or(&[], Vec::as_slice)
    }

    /// Whether `key` has a live record.
    pub fn contains(&self, now: Instant, key: &[u8]) -> bool {
        self.map
            .get(key)
            .is_some_and(|vs| vs.iter().any(|v| v.expires_at > now))
    }

    /// Whether `key` has a live record of a writer other than `writer`.
    pub fn held_by_other(&self, now: Instant, key: &[u8], writer: &WriterKey) -> bool {
        self.map.get(key).is_some_and(|vs| {
            vs.iter()
                .any(|v| v.expires_at > now && v.record.writer != *writer)
        })
    }

    /// Stores `record` (already verified) in its writer's slot for `ttl`:
    /// a new slot, a newer version, or a refresh of the same record.
    /// Anything else is refused with the reason, and changes nothing.
    pub fn insert(
        &mut self,
        now: Instant,
        record: &Record,
        ttl: Duration,
    ) -> Result<Insert, RecordRejection> {
        let expires_at = now + ttl;
        self.expire_key(now, &record.key);
        let new_cost = cost(record);
        let quotas = self.quotas;
        let usage = self.usage.get(&record.writer).copied().unwrap_or_default();
        let slots = self.map.get(&record.key).map_or(&[][..], Vec::as_slice);
        match slots.iter().position(|s| s.record.writer == record.writer) {
            Some(i) => {
                let slot = &slots[i];
                if record.version < slot.record.version
                    || (record.version == slot.record.version && *record != slot.record)
                {
                    return Err(RecordRejection::Stale);
                }
                if record.version == slot.record.version {
                    if let Some(s) = self.map.get_mut(&record.key).and_then(|v| v.get_mut(i)) {
                        s.expires_at = s.expires_at.max(expires_at);
                    }
                    return Ok(Insert::Refreshed);
                }
                let old_cost = cost(&slot.record);
                let grow = new_cost.saturating_sub(old_cost);
                if usage.bytes - old_cost + new_cost > quotas.bytes_per_writer
                    || (grow > 0 && self.bytes + grow > quotas.bytes)
                {
                    return Err(RecordRejection::Quota);
                }
                if let Some(s) = self.map.get_mut(&record.key).and_then(|v| v.get_mut(i)) {
                    s.record = record.clone();
                    s.expires_at = expires_at;
                }
                self.bytes = self.bytes - old_cost + new_cost;
                if let Some(u) = self.usage.get_mut(&record.writer) {
                    u.bytes = u.bytes - old_cost + new_cost;
                }
                Ok(Insert::Stored)
            }
            None => {
                if slots.len() >= MAX_VALUES_PER_KEY {
                    return Err(RecordRejection::Full);
                }
                if usage.keys >= quotas.keys_per_writer
                    || usage.bytes + new_cost > quotas.bytes_per_writer
                    || self.records >= quotas.records
                    || self.bytes + new_cost > quotas.bytes
                {
                    return Err(RecordRejection::Quota);
                }
                self.map.entry(record.key.clone()).or_default().push(Slot {
                    record: record.clone(),
                    expires_at,
                });
                let u = self.usage.entry(record.writer.clone()).or_default();
                u.keys += 1;
                u.bytes += new_cost;
                self.records += 1;
                self.bytes += new_cost;
                Ok(Insert::Stored)
            }
        }
    }

    fn release(&mut self, slot: &Slot) {
        let c = cost(&slot.record);
        self.records -= 1;
        self.bytes -= c;
        if let Some(u) = self.usage.get_mut(&slot.record.writer) {
            u.keys -= 1;
            u.bytes -= c;
            if u.keys == 0 {
                self.usage.remove(&slot.record.writer);
            }
        }
    }

    fn expire_key(&mut self, now: Instant, key: &[u8]) {
        let Some(vs) = self.map.get_mut(key) else {
            return;
        };
        if vs.iter().all(|v| v.expires_at > now) {
            return;
        }
        let (dead, live): (Vec<Slot>, Vec<Slot>) = core::mem::take(vs)
            .into_iter()
            .partition(|v| v.expires_at <= now);
        if live.is_empty() {
            self.map.remove(key);
        } else if let Some(vs) = self.map.get_mut(key) {
            *vs = live;
        }
        for s in &dead {
            self.release(s);
        }
    }

    /// Drops expired records and empty keys.
    pub fn expire(&mut self, now: Instant) {
        let mut dead = Vec::new();
        self.map.retain(|_, vs| {
            vs.retain(|v| {
                let live = v.expires_at > now;
                if !live {
                    dead.push(v.clone());
                }
                live
            });
            !vs.is_empty()
        });
        for s in &dead {
            self.release(s);
        }
    }

    /// Iterates over keys.
    pub fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.map.keys()
    }

    /// The live records under `key` with their remaining lifetimes, for
    /// replication.
    pub fn replicas(&self, now: Instant, key: &[u8]) -> Vec<Replica> {
        self.map
            .get(key)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.expires_at > now)
                    .map(|v| Replica {
                        record: v.record.clone(),
                        remaining_secs: u32::try_from(
                            v.expires_at.saturating_duration_since(now).as_secs(),
                        )
                        .unwrap_or(u32::MAX)
                        .max(1),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes `key` (every writer's slot).
    pub fn remove(&mut self, key: &[u8]) {
        if let Some(vs) = self.map.remove(key) {
            for s in &vs {
                self.release(s);
            }
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.map.len() * 48
            + self.bytes
            + self.records * core::mem::size_of::<Slot>()
            + self.usage.len() * (core::mem::size_of::<(WriterKey, Usage)>() + 72)
    }
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::{KeySigner, sign};

    fn rec(seed: u8, key: &[u8], value: &[u8]) -> Record {
        let mut s = KeySigner::ed25519_from_seed(&[seed; 32], 0);
        sign(&mut s, key, value, 60, b"").unwrap()
    }

    #[test]
    fn slots_per_writer_versions_full_expire() {
        let t0 = Instant::now();
        let mut s = DhtStore::default();
        let ttl = Duration::from_secs(10);
        let mut a = KeySigner::ed25519_from_seed(&[1; 32], 0);
        let a1 = sign(&mut a, b"k", b"v1", 60, b"").unwrap();
        let a2 = sign(&mut a, b"k", b"v2", 60, b"").unwrap();
        assert_eq!(s.insert(t0, &a1, ttl), Ok(Insert::Stored));
        assert_eq!(s.insert(t0, &a1, ttl * 2), Ok(Insert::Refreshed));
        assert!(s.contains(t0 + ttl, b"k"), "refresh extended expiry");
        assert_eq!(s.insert(t0, &a2, ttl), Ok(Insert::Stored));
        assert_eq!(s.insert(t0, &a1, ttl), Err(RecordRejection::Stale));
        assert_eq!(s.get(t0, b"k"), vec![a2.clone()]);
        for i in 2..=MAX_VALUES_PER_KEY as u8 {
            assert_eq!(s.insert(t0, &rec(i, b"k", &[i]), ttl), Ok(Insert::Stored));
        }
        assert_eq!(
            s.insert(t0, &rec(99, b"k", b"x"), ttl),
            Err(RecordRejection::Full)
        );
        assert_eq!(s.record_count(), MAX_VALUES_PER_KEY);
        s.expire(t0 + ttl * 3);
        assert!(s.is_empty());
        assert_eq!((s.record_count(), s.charged_bytes()), (0, 0));
        assert_eq!(s.writer_usage(&a2.writer), (0, 0));
    }

    #[test]
    fn quotas_per_writer_and_total() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut s = DhtStore::with_quotas(Quotas {
            keys_per_writer: 2,
            records: 3,
            ..Quotas::default()
        });
        assert!(s.insert(t0, &rec(1, b"a", b"1"), ttl).is_ok());
        assert!(s.insert(t0, &rec(1, b"b", b"1"), ttl).is_ok());
        assert_eq!(
            s.insert(t0, &rec(1, b"c", b"1"), ttl),
            Err(RecordRejection::Quota)
        );
        assert!(s.insert(t0, &rec(2, b"c", b"1"), ttl).is_ok());
        assert_eq!(
            s.insert(t0, &rec(3, b"d", b"1"), ttl),
            Err(RecordRejection::Quota)
        );
        assert_eq!(s.record_count(), 3);
        s.remove(b"a");
        assert!(s.insert(t0, &rec(3, b"d", b"1"), ttl).is_ok());
    }
}
