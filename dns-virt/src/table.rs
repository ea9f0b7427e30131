//! The name table: registered names of the virtual zone, built for millions.
//!
//! Layout (about 35 bytes per name, see [`NameTable::heap_bytes`]):
//!
//! - one byte arena holding every name once, lowercase, relative to the zone
//!   and dotted (`h0000001`, `web.rack1`);
//! - a dense `Vec` of 16-byte entries (hash, arena offset, length, address);
//! - two open-addressing indexes of `u32` entry numbers with linear probing
//!   and backward-shift deletion (no tombstones): one keyed by the name's hash,
//!   one by the address (for PTR).
//!
//! Lookups hash the query's labels on the fly and compare them with the arena
//! case-insensitively, so they never allocate. Names that follow the address
//! rule ([`crate::rule`]) need no entry at all.
//!
//! Arena bytes of removed names are reclaimed when the arena is compacted,
//! which happens when more than half of it is garbage.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::time::Instant;

use crate::error::TableError;

const EMPTY: u32 = u32::MAX;
/// Longest relative name stored (RFC 1035 §2.3.4 caps a whole name at 255 octets).
pub const MAX_NAME_LEN: usize = 253;

#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: u32,
    offset: u32,
    addr: u32,
    /// 0 marks a free entry.
    len: u8,
}

/// Names of the zone mapped to IPv4 addresses, with optional expiry.
///
/// Names are relative to the zone, case-insensitive, and dotted
/// (`"web.rack1"` stands for `web.rack1.<zone>`). A name maps to one
/// address; registering it again replaces the address. The reverse index maps
/// an address to one name registered for it (the latest, until the table
/// grows); when that name goes, the address falls back to its rule name.
#[derive(Clone, Debug)]
pub struct NameTable {
    seed: u32,
    arena: Vec<u8>,
    garbage: usize,
    entries: Vec<Entry>,
    free: Vec<u32>,
    by_name: Vec<u32>,
    by_addr: Vec<u32>,
    len: usize,
    /// Lifetimes of the (usually few) names that have one.
    lifetimes: HashMap<u32, Instant>,
    expiry: BinaryHeap<Reverse<(Instant, u32)>>,
}

impl Default for NameTable {
    fn default() -> Self {
        Self::new(0)
    }
}

#[inline]
fn mix(h: u32, b: u8) -> u32 {
    (h.rotate_left(5) ^ u32::from(b)).wrapping_mul(0x9e37_79b9)
}

#[inline]
fn finish(h: u32) -> u32 {
    let h = h ^ (h >> 15);
    let h = h.wrapping_mul(0x2c1b_3c6d);
    h ^ (h >> 12)
}

/// Checks that `name` is a valid relative host name: labels of 1–63 octets of
/// letters, digits, `-` and `_`, dotted, at most [`MAX_NAME_LEN`] in all.
pub fn validate_name(name: &[u8]) -> Result<(), TableError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(TableError::InvalidName { len: name.len() });
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(TableError::InvalidName { len: name.len() });
        }
    }
    Ok(())
}

impl NameTable {
    /// An empty table; `seed` keys the name hash.
    pub fn new(seed: u64) -> Self {
        Self::with_capacity(seed, 0)
    }

    /// An empty table sized for `names` names without rehashing.
    pub fn with_capacity(seed: u64, names: usize) -> Self {
        let slots = Self::slots_for(names);
        NameTable {
            seed: (seed as u32) ^ ((seed >> 32) as u32) ^ 0x5bd1_e995,
            arena: Vec::with_capacity(names.saturating_mul(9)),
            garbage: 0,
            entries: Vec::with_capacity(names),
            free: Vec::new(),
            by_name: vec![EMPTY; slots],
            by_addr: vec![EMPTY; slots],
            len: 0,
            lifetimes: HashMap::new(),
            expiry: BinaryHeap::new(),
        }
    }

    fn slots_for(names: usize) -> usize {
        // Load factor at most 3/4.
        (names.saturating_mul(4) / 3 + 1)
            .next_power_of_two()
            .max(16)
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no names.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap memory held by the table, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.entries.capacity() * size_of::<Entry>()
            + self.free.capacity() * 4
            + (self.by_name.capacity() + self.by_addr.capacity()) * 4
            + self.expiry.capacity() * size_of::<(Instant, u32)>()
            + self.lifetimes.capacity() * (size_of::<(u32, Instant)>() + 1)
    }

    #[inline]
    fn hash_bytes(&self, name: &[u8]) -> u32 {
        finish(
            name.iter()
                .fold(self.seed, |h, b| mix(h, b.to_ascii_lowercase())),
        )
    }

    #[inline]
    fn hash_labels<'a>(&self, labels: impl Iterator<Item = &'a [u8]>) -> u32 {
        let mut h = self.seed;
        for (i, label) in labels.enumerate() {
            if i > 0 {
                h = mix(h, b'.');
            }
            for b in label {
                h = mix(h, b.to_ascii_lowercase());
            }
        }
        finish(h)
    }

    #[inline]
    fn addr_hash(&self, addr: u32) -> u32 {
        finish(addr.wrapping_mul(0x9e37_79b9) ^ self.seed)
    }

    fn name_of_entry(&self, e: &Entry) -> &[u8] {
        let start = e.offset as usize;
        self.arena
            .get(start..start + usize::from(e.len))
            .unwrap_or_default()
    }

    fn find_slot(&self, hash: u32, eq: impl Fn(&[u8]) -> bool) -> Option<usize> {
        let mask = self.by_name.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let id = self.by_name[i];
            if id == EMPTY {
                return None;
            }
            let e = &self.entries[id as usize];
            if e.hash == hash && eq(self.name_of_entry(e)) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn find_addr_slot(&self, addr: u32) -> Option<usize> {
        let mask = self.by_addr.len() - 1;
        let mut i = self.addr_hash(addr) as usize & mask;
        loop {
            let id = self.by_addr[i];
            if id == EMPTY {
                return None;
            }
            if self.entries[id as usize].addr == addr {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Address of `name` (relative, dotted, any case). Never allocates.
    pub fn get(&self, name: &str) -> Option<Ipv4Addr> {
        let name = name.as_bytes();
        let hash = self.hash_bytes(name);
        self.find_slot(hash, |stored| stored.eq_ignore_ascii_case(name))
            .map(|slot| Ipv4Addr::from(self.entries[self.by_name[slot] as usize].addr))
    }

    /// Address of the relative name given as labels (most specific first, as
    /// on the wire), compared case-insensitively. Never allocates.
    pub fn get_labels<'a, I>(&self, labels: I) -> Option<Ipv4Addr>
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        let hash = self.hash_labels(labels.clone());
        self.find_slot(hash, |stored| labels_eq(stored, labels.clone()))
            .map(|slot| Ipv4Addr::from(self.entries[self.by_name[slot] as usize].addr))
    }

    /// Name most recently registered for `addr`, lowercase and relative.
    pub fn name_of(&self, addr: Ipv4Addr) -> Option<&str> {
        let slot = self.find_addr_slot(u32::from(addr))?;
        let e = &self.entries[self.by_addr[slot] as usize];
        std::str::from_utf8(self.name_of_entry(e)).ok()
    }

    /// When `name` expires, if it has a lifetime.
    pub fn expires_at(&self, name: &str) -> Option<Instant> {
        let hash = self.hash_bytes(name.as_bytes());
        let slot = self.find_slot(hash, |s| s.eq_ignore_ascii_case(name.as_bytes()))?;
        self.lifetimes.get(&self.by_name[slot]).copied()
    }

    fn set_lifetime(&mut self, id: u32, expires_at: Option<Instant>) {
        match expires_at {
            Some(at) => {
                self.lifetimes.insert(id, at);
                self.expiry.push(Reverse((at, id)));
            }
            None => {
                self.lifetimes.remove(&id);
            }
        }
    }

    /// Registers `name` → `addr`, replacing any previous address; with
    /// `expires_at`, the name disappears at [`NameTable::expire`] after that
    /// instant. Returns the previous address.
    pub fn insert(
        &mut self,
        name: &str,
        addr: Ipv4Addr,
        expires_at: Option<Instant>,
    ) -> Result<Option<Ipv4Addr>, TableError> {
        self.insert_bytes(name.as_bytes(), addr, expires_at)
    }

    /// Makes room for `additional` more names without rehashing.
    pub fn reserve(&mut self, additional: usize) {
        let want = self.len.saturating_add(additional);
        self.entries
            .reserve(want.saturating_sub(self.entries.len()));
        self.arena.reserve(additional.saturating_mul(9));
        let slots = Self::slots_for(want);
        if slots > self.by_name.len() {
            self.rehash(slots);
        }
    }

    /// [`NameTable::insert`] for a name given as bytes.
    pub fn insert_bytes(
        &mut self,
        name: &[u8],
        addr: Ipv4Addr,
        expires_at: Option<Instant>,
    ) -> Result<Option<Ipv4Addr>, TableError> {
        validate_name(name)?;
        let addr = u32::from(addr);
        let hash = self.hash_bytes(name);
        if let Some(slot) = self.find_slot(hash, |s| s.eq_ignore_ascii_case(name)) {
            let id = self.by_name[slot];
            let old = self.entries[id as usize].addr;
            if old != addr {
                self.remove_addr_index(id);
                self.entries[id as usize].addr = addr;
                self.insert_addr_index(id);
            }
            self.set_lifetime(id, expires_at);
            return Ok(Some(Ipv4Addr::from(old)));
        }
        if self.arena.len() + name.len() > u32::MAX as usize || self.len >= (u32::MAX - 1) as usize
        {
            return Err(TableError::Full);
        }
        self.grow_if_needed();
        let offset = self.arena.len() as u32;
        self.arena.extend(name.iter().map(u8::to_ascii_lowercase));
        let entry = Entry {
            hash,
            offset,
            addr,
            len: name.len() as u8,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        let mask = self.by_name.len() - 1;
        let mut i = hash as usize & mask;
        while self.by_name[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.by_name[i] = id;
        self.insert_addr_index(id);
        self.set_lifetime(id, expires_at);
        self.len += 1;
        Ok(None)
    }

    fn insert_addr_index(&mut self, id: u32) {
        let addr = self.entries[id as usize].addr;
        let mask = self.by_addr.len() - 1;
        let mut i = self.addr_hash(addr) as usize & mask;
        loop {
            let cur = self.by_addr[i];
            if cur == EMPTY {
                self.by_addr[i] = id;
                return;
            }
            if self.entries[cur as usize].addr == addr {
                // Most recent registration wins the PTR.
                self.by_addr[i] = id;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn remove_addr_index(&mut self, id: u32) {
        let addr = self.entries[id as usize].addr;
        if let Some(slot) = self.find_addr_slot(addr)
            && self.by_addr[slot] == id
        {
            let entries = &self.entries;
            let seed = self.seed;
            backward_shift(&mut self.by_addr, slot, |id| {
                finish(entries[id as usize].addr.wrapping_mul(0x9e37_79b9) ^ seed)
            });
        }
    }

    fn grow_if_needed(&mut self) {
        if (self.len + 1) * 4 <= self.by_name.len() * 3 {
            return;
        }
        self.rehash(self.by_name.len() * 2);
    }

    fn rehash(&mut self, slots: usize) {
        self.by_name = vec![EMPTY; slots];
        self.by_addr = vec![EMPTY; slots];
        let mask = slots - 1;
        for id in 0..self.entries.len() as u32 {
            let e = self.entries[id as usize];
            if e.len == 0 {
                continue;
            }
            let mut i = e.hash as usize & mask;
            while self.by_name[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.by_name[i] = id;
            self.insert_addr_index(id);
        }
    }

    /// Removes `name`; returns its address if it was there.
    pub fn remove(&mut self, name: &str) -> Option<Ipv4Addr> {
        let name = name.as_bytes();
        let hash = self.hash_bytes(name);
        let slot = self.find_slot(hash, |s| s.eq_ignore_ascii_case(name))?;
        let id = self.by_name[slot];
        Some(self.remove_at(slot, id))
    }

    fn remove_at(&mut self, slot: usize, id: u32) -> Ipv4Addr {
        let entries = &self.entries;
        backward_shift(&mut self.by_name, slot, |id| entries[id as usize].hash);
        self.remove_addr_index(id);
        let e = &mut self.entries[id as usize];
        let addr = Ipv4Addr::from(e.addr);
        self.garbage += usize::from(e.len);
        e.len = 0;
        self.lifetimes.remove(&id);
        self.free.push(id);
        self.len -= 1;
        if self.garbage > 4096 && self.garbage * 2 > self.arena.len() {
            self.compact();
        }
        addr
    }

    fn compact(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        for e in self.entries.iter_mut().filter(|e| e.len > 0) {
            let start = e.offset as usize;
            let end = start + usize::from(e.len);
            e.offset = arena.len() as u32;
            arena.extend_from_slice(self.arena.get(start..end).unwrap_or_default());
        }
        self.arena = arena;
        self.garbage = 0;
    }

    /// Removes every name whose lifetime ended at or before `now`; returns how
    /// many went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some(&Reverse((at, id))) = self.expiry.peek() {
            if at > now {
                break;
            }
            self.expiry.pop();
            // Stale heap item: the name was removed, re-registered or reused.
            if self.lifetimes.get(&id) != Some(&at) {
                continue;
            }
            let e = self.entries[id as usize];
            let mask = self.by_name.len() - 1;
            let mut i = e.hash as usize & mask;
            let slot = loop {
                let cur = self.by_name[i];
                if cur == id {
                    break Some(i);
                }
                if cur == EMPTY {
                    break None;
                }
                i = (i + 1) & mask;
            };
            if let Some(slot) = slot {
                self.remove_at(slot, id);
                removed += 1;
            }
        }
        removed
    }

    /// Earliest instant at which [`NameTable::expire`] has work to do.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.peek().map(|Reverse((at, _))| *at)
    }

    /// A [`TableBuilder`] with this table's hash key.
    pub fn builder(&self, names: usize) -> TableBuilder {
        let mut b = TableBuilder::new(0, names);
        b.table.seed = self.seed;
        b
    }

    /// Iterates over `(name, address)` pairs in insertion order (for a built
    /// table, the order names were pushed).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> + '_ {
        self.entries.iter().filter(|e| e.len > 0).filter_map(|e| {
            std::str::from_utf8(self.name_of_entry(e))
                .ok()
                .map(|n| (n, Ipv4Addr::from(e.addr)))
        })
    }
}

/// Builds a [`NameTable`] from many names at once, much faster than
/// repeated [`NameTable::insert`]: names are appended without indexing, then
/// [`TableBuilder::finish`] sorts them by home slot and fills both indexes
/// front to back, touching memory in order. A later name replaces an earlier
/// equal one, as with `insert`.
#[derive(Debug)]
pub struct TableBuilder {
    table: NameTable,
}

impl TableBuilder {
    /// A builder for about `names` names; `seed` keys the hash.
    pub fn new(seed: u64, names: usize) -> Self {
        let mut table = NameTable::with_capacity(seed, 0);
        table.entries.reserve(names);
        table.arena.reserve(names.saturating_mul(9));
        TableBuilder { table }
    }

    /// Appends `name` (relative, dotted, any case) → `addr`.
    pub fn push(&mut self, name: &[u8], addr: Ipv4Addr) -> Result<(), TableError> {
        validate_name(name)?;
        let t = &mut self.table;
        if t.arena.len() + name.len() > u32::MAX as usize
            || t.entries.len() >= (u32::MAX - 1) as usize
        {
            return Err(TableError::Full);
        }
        let offset = t.arena.len() as u32;
        t.arena.extend(name.iter().map(u8::to_ascii_lowercase));
        t.entries.push(Entry {
            hash: t.hash_bytes(name),
            offset,
            addr: u32::from(addr),
            len: name.len() as u8,
        });
        Ok(())
    }

    /// Names pushed so far (duplicates included).
    pub fn len(&self) -> usize {
        self.table.entries.len()
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.table.entries.is_empty()
    }

    /// Indexes the names and returns the table.
    pub fn finish(self) -> NameTable {
        let mut t = self.table;
        let slots = NameTable::slots_for(t.entries.len());
        let bits = slots.trailing_zeros();
        let mask = slots - 1;
        // Sort keys: the home slot's bits on top (so the sort follows the
        // index), then the rest of the hash, then the entry number.
        let mut keys: Vec<u64> = t
            .entries
            .iter()
            .enumerate()
            .map(|(id, e)| (u64::from(e.hash.rotate_right(bits)) << 32) | id as u64)
            .collect();
        let mut scratch = vec![0u64; keys.len()];
        radix_sort_high(&mut keys, &mut scratch);
        t.by_name = vec![EMPTY; slots];
        let mut i = 0;
        while i < keys.len() {
            let run = keys[i] >> 32;
            let end = i + keys[i..].iter().take_while(|k| *k >> 32 == run).count();
            // The hash is in the key; entries are read only for ties, so
            // the fill walks memory in order.
            let hash = ((run as u32).rotate_left(bits)) as usize;
            for k in i..end {
                let id = keys[k] as u32;
                if end - i > 1 {
                    let e = t.entries[id as usize];
                    let name = t.name_of_entry(&e);
                    let replaced = keys[k + 1..end]
                        .iter()
                        .any(|later| t.name_of_entry(&t.entries[*later as u32 as usize]) == name);
                    if replaced {
                        t.garbage += usize::from(e.len);
                        t.entries[id as usize].len = 0;
                        t.free.push(id);
                        continue;
                    }
                }
                let mut slot = hash & mask;
                while t.by_name[slot] != EMPTY {
                    slot = (slot + 1) & mask;
                }
                t.by_name[slot] = id;
                t.len += 1;
            }
            i = end;
        }
        keys.clear();
        keys.extend(
            t.entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.len > 0)
                .map(|(id, e)| {
                    (u64::from(t.addr_hash(e.addr).rotate_right(bits)) << 32) | id as u64
                }),
        );
        radix_sort_high(&mut keys, &mut scratch);
        t.by_addr = vec![EMPTY; slots];
        let mut i = 0;
        while i < keys.len() {
            let run = keys[i] >> 32;
            let end = i + keys[i..].iter().take_while(|k| *k >> 32 == run).count();
            let hash = ((run as u32).rotate_left(bits)) as usize;
            for k in i..end {
                let id = keys[k] as u32;
                // The latest name registered for an address gets its PTR.
                if end - i > 1 {
                    let addr = t.entries[id as usize].addr;
                    if keys[k + 1..end]
                        .iter()
                        .any(|later| t.entries[*later as u32 as usize].addr == addr)
                    {
                        continue;
                    }
                }
                let mut slot = hash & mask;
                while t.by_addr[slot] != EMPTY {
                    slot = (slot + 1) & mask;
                }
                t.by_addr[slot] = id;
            }
            i = end;
        }
        t
    }
}

/// Stable LSD radix sort of `keys` by their high 32 bits (three passes of
/// 11 bits): keys that tie keep their order, so entry numbers stay ascending
/// within a hash.
fn radix_sort_high(keys: &mut Vec<u64>, scratch: &mut Vec<u64>) {
    scratch.clear();
    scratch.resize(keys.len(), 0);
    for pass in 0..3 {
        let shift = 32 + pass * 11;
        let mut offsets = [0usize; 2048];
        for k in keys.iter() {
            offsets[((k >> shift) & 2047) as usize] += 1;
        }
        let mut sum = 0;
        for o in offsets.iter_mut() {
            let count = *o;
            *o = sum;
            sum += count;
        }
        for k in keys.iter() {
            let bucket = ((k >> shift) & 2047) as usize;
            scratch[offsets[bucket]] = *k;
            offsets[bucket] += 1;
        }
        std::mem::swap(keys, scratch);
    }
}

/// Compares a stored dotted lowercase name with wire labels, ignoring case.
///
/// A wire label may hold any octet, a dot included; stored names never have
/// a dot inside a label, so such a label matches nothing (the one label
/// `c.d` is not the two labels `c` and `d`).
#[inline]
fn labels_eq<'a>(mut stored: &[u8], labels: impl Iterator<Item = &'a [u8]>) -> bool {
    for (i, label) in labels.enumerate() {
        if label.contains(&b'.') {
            return false;
        }
        if i > 0 {
            match stored.split_first() {
                Some((b'.', rest)) => stored = rest,
                _ => return false,
            }
        }
        let Some((head, rest)) = stored.split_at_checked(label.len()) else {
            return false;
        };
        if !head.eq_ignore_ascii_case(label) {
            return false;
        }
        stored = rest;
    }
    stored.is_empty()
}

/// Linear-probing deletion without tombstones (Knuth 6.4, algorithm R).
fn backward_shift(slots: &mut [u32], mut hole: usize, home_hash: impl Fn(u32) -> u32) {
    let mask = slots.len() - 1;
    slots[hole] = EMPTY;
    let mut j = hole;
    loop {
        j = (j + 1) & mask;
        let id = slots[j];
        if id == EMPTY {
            return;
        }
        let home = home_hash(id) as usize & mask;
        // Move `id` into the hole unless its home lies cyclically in (hole, j].
        let stays = if hole <= j {
            hole < home && home <= j
        } else {
            hole < home || home <= j
        };
        if !stays {
            slots[hole] = id;
            slots[j] = EMPTY;
            hole = j;
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn a(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a80_0000 + n)
    }

    #[test]
    fn insert_get_remove_case_insensitive() {
        let mut t = NameTable::new(7);
        assert_eq!(t.insert("Web.Rack1", a(1), None), Ok(None));
        assert_eq!(t.get("web.rack1"), Some(a(1)));
        assert_eq!(t.get("WEB.RACK1"), Some(a(1)));
        assert_eq!(t.get("web"), None);
        assert_eq!(t.name_of(a(1)), Some("web.rack1"));
        let labels: [&[u8]; 2] = [b"wEb", b"rAck1"];
        assert_eq!(t.get_labels(labels.into_iter()), Some(a(1)));
        let labels: [&[u8]; 2] = [b"web", b"rack"];
        assert_eq!(t.get_labels(labels.into_iter()), None);
        // One wire label holding a dot is not two labels.
        let labels: [&[u8]; 1] = [b"web.rack1"];
        assert_eq!(t.get_labels(labels.into_iter()), None);
        assert_eq!(t.insert("web.rack1", a(2), None), Ok(Some(a(1))));
        assert_eq!(t.name_of(a(1)), None);
        assert_eq!(t.name_of(a(2)), Some("web.rack1"));
        assert_eq!(t.remove("WEB.rack1"), Some(a(2)));
        assert_eq!(t.get("web.rack1"), None);
        assert_eq!(t.name_of(a(2)), None);
        assert!(t.is_empty());
    }

    #[test]
    fn builder_matches_inserts() {
        let mut inserted = NameTable::new(9);
        let mut b = inserted.builder(100);
        for i in 0..3000u32 {
            // Every name three times, and addresses shared by two names.
            let name = format!("N{}", i % 1000);
            b.push(name.as_bytes(), a(i / 2)).unwrap();
            inserted.insert(&name, a(i / 2), None).unwrap();
        }
        assert_eq!(b.len(), 3000);
        let built = b.finish();
        assert_eq!(built.len(), 1000);
        for i in 2000..3000u32 {
            let name = format!("n{}", i % 1000);
            assert_eq!(built.get(&name), Some(a(i / 2)));
            assert_eq!(built.get(&name), inserted.get(&name));
            let expect = inserted.name_of(a(i / 2));
            assert_eq!(built.name_of(a(i / 2)), expect, "{i}");
        }
        assert_eq!(built.iter().count(), 1000);
        // The built table takes updates like any other.
        let mut built = built;
        assert_eq!(built.insert("n5", a(7), None), Ok(Some(a(1002))));
        assert_eq!(built.remove("n6"), Some(a(1003)));
        assert_eq!(built.len(), 999);
        assert!(b_err());
    }

    fn b_err() -> bool {
        let mut b = TableBuilder::new(0, 1);
        b.push(b"bad..name", a(1)).is_err() && b.is_empty()
    }

    #[test]
    fn radix_sort_is_a_stable_sort_by_high_bits() {
        let mut x: u64 = 1;
        let mut keys: Vec<u64> = (0..5000u64)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                // Few distinct high halves, so ties are common.
                (((x >> 40) % 97) << 32) | i
            })
            .collect();
        let mut expect = keys.clone();
        expect.sort_by_key(|k| k >> 32);
        radix_sort_high(&mut keys, &mut Vec::new());
        assert_eq!(keys, expect);
    }

    #[test]
    fn rejects_invalid_names() {
        let mut t = NameTable::new(0);
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            "sp ace",
            &"x".repeat(64),
            &"a.".repeat(127),
        ] {
            assert!(t.insert(bad, a(1), None).is_err(), "{bad:?}");
        }
        assert!(t.is_empty());
    }

    #[test]
    fn expiry_removes_only_due_names() {
        let t0 = Instant::now();
        let mut t = NameTable::new(1);
        t.insert("a", a(1), Some(t0 + Duration::from_secs(10)))
            .unwrap();
        t.insert("b", a(2), Some(t0 + Duration::from_secs(20)))
            .unwrap();
        t.insert("c", a(3), None).unwrap();
        assert_eq!(t.next_expiry(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(t.expire(t0 + Duration::from_secs(9)), 0);
        assert_eq!(t.expire(t0 + Duration::from_secs(10)), 1);
        assert_eq!(t.get("a"), None);
        // Re-registering extends the lifetime; the stale heap item is ignored.
        t.insert("b", a(2), Some(t0 + Duration::from_secs(40)))
            .unwrap();
        assert_eq!(t.expire(t0 + Duration::from_secs(30)), 0);
        assert_eq!(t.get("b"), Some(a(2)));
        assert_eq!(t.expire(t0 + Duration::from_secs(40)), 1);
        assert_eq!(t.get("c"), Some(a(3)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn matches_a_hashmap_under_random_operations() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let mut t = NameTable::new(3);
        let mut model: HashMap<String, u32> = HashMap::new();
        for _ in 0..20_000 {
            let name = format!("n{}", rng.random_range(0..600u32));
            let addr = rng.random_range(0..400u32);
            if rng.random_range(0..3u32) == 0 {
                assert_eq!(t.remove(&name), model.remove(&name).map(a));
            } else {
                let prev = t.insert(&name, a(addr), None).unwrap();
                assert_eq!(prev, model.insert(name.clone(), addr).map(a));
            }
            assert_eq!(t.len(), model.len());
        }
        for (name, addr) in &model {
            assert_eq!(t.get(name), Some(a(*addr)));
            // The reverse index may have lost a shared address's other names,
            // but never names a wrong one.
            if let Some(n) = t.name_of(a(*addr)) {
                assert_eq!(model[n], *addr);
            }
        }
        assert_eq!(t.iter().count(), model.len());
    }
}
