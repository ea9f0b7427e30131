//! The DHT's local record store.
//!
//! Keys map to at most [`MAX_VALUES_PER_KEY`] distinct values, each with its
//! own expiry. The node decides which records it is responsible for; this
//! module only stores, merges and expires them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::wire::{MAX_VALUES_PER_KEY, Record};

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// The value.
    pub value: Vec<u8>,
    /// When it expires.
    pub expires_at: Instant,
}

/// Result of inserting a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Added or refreshed.
    Stored,
    /// The key is full.
    Full,
}

/// Records held by one node.
#[derive(Debug, Clone, Default)]
pub struct DhtStore {
    map: BTreeMap<Vec<u8>, Vec<StoredValue>>,
}

impl DhtStore {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Live values under `key`.
    pub fn get(&self, now: Instant, key: &[u8]) -> Vec<Vec<u8>> {
        self.map
            .get(key)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.expires_at > now)
                    .map(|v| v.value.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `key` has a live value.
    pub fn contains(&self, now: Instant, key: &[u8]) -> bool {
        self.map
            .get(key)
            .is_some_and(|vs| vs.iter().any(|v| v.expires_at > now))
    }

    /// Adds `value` under `key` (or extends its expiry).
    pub fn insert(&mut self, now: Instant, key: &[u8], value: &[u8], ttl: Duration) -> Insert {
        let expires_at = now + ttl;
        let vs = self.map.entry(key.to_vec()).or_default();
        vs.retain(|v| v.expires_at > now);
        if let Some(v) = vs.iter_mut().find(|v| v.value == value) {
            v.expires_at = v.expires_at.max(expires_at);
            return Insert::Stored;
        }
        if vs.len() >= MAX_VALUES_PER_KEY {
            return Insert::Full;
        }
        vs.push(StoredValue {
            value: value.to_vec(),
            expires_at,
        });
        Insert::Stored
    }

    /// Drops expired values and empty keys.
    pub fn expire(&mut self, now: Instant) {
        self.map.retain(|_, vs| {
            vs.retain(|v| v.expires_at > now);
            !vs.is_empty()
        });
    }

    /// Iterates over keys.
    pub fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.map.keys()
    }

    /// The live records under `key`, for replication.
    pub fn records(&self, now: Instant, key: &[u8]) -> Vec<Record> {
        self.map
            .get(key)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.expires_at > now)
                    .map(|v| Record {
                        key: key.to_vec(),
                        value: v.value.clone(),
                        ttl_secs: u32::try_from(
                            v.expires_at.saturating_duration_since(now).as_secs(),
                        )
                        .unwrap_or(u32::MAX)
                        .max(1),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &[u8]) {
        self.map.remove(key);
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.map
            .iter()
            .map(|(k, vs)| {
                k.capacity()
                    + 48
                    + vs.iter()
                        .map(|v| v.value.capacity() + core::mem::size_of::<StoredValue>())
                        .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn insert_refresh_full_expire() {
        let t0 = Instant::now();
        let mut s = DhtStore::default();
        let ttl = Duration::from_secs(10);
        assert_eq!(s.insert(t0, b"k", b"v", ttl), Insert::Stored);
        assert_eq!(s.insert(t0, b"k", b"v", ttl * 2), Insert::Stored);
        assert_eq!(s.get(t0, b"k"), vec![b"v".to_vec()]);
        assert!(s.contains(t0 + ttl, b"k"), "refresh extended expiry");
        for i in 1..MAX_VALUES_PER_KEY {
            assert_eq!(s.insert(t0, b"k", &[i as u8], ttl), Insert::Stored);
        }
        assert_eq!(s.insert(t0, b"k", b"x", ttl), Insert::Full);
        s.expire(t0 + ttl * 3);
        assert!(s.is_empty());
    }
}
