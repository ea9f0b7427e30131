//! A lease store in two files: an atomically written snapshot and an
//! append-only journal of the changes since.
//!
//! | file | content |
//! |---|---|
//! | `FILE` | snapshot: every lease and the sequence number of the last change in it |
//! | `FILE.journal` | changes since the snapshot, one JSON record per line |
//!
//! A change (`put` or `remove`) is one appended journal line, written with
//! one `write` and made durable with one `fdatasync` before the call
//! returns: O(1) per lease instead of rewriting every lease with the two
//! fsyncs of an atomic replace. Every [`DEFAULT_COMPACT_EVERY`] lines, and
//! on [`FileStore::compact`] (call it on clean shutdown), the state is
//! written as a new snapshot (write `FILE.tmp`, fsync, rename over `FILE`,
//! fsync the directory) and the journal is emptied the same way.
//!
//! Opening reads the snapshot and replays the journal lines newer than it,
//! by sequence number, so a crash between the snapshot and the journal reset
//! is harmless. A torn last line (a crash in the middle of an append: that
//! change was never acknowledged) is dropped and cut off the journal. Any
//! other damage (a snapshot that does not decode or has an unknown version,
//! a bad line before the last, a gap in the sequence numbers, a journal
//! without its snapshot) is reported as [`StoreError::Corrupt`] and both
//! files are left untouched, never replaced by an empty store. A missing
//! snapshot and journal is an empty store.
//!
//! Two write policies: write-through (the default: `put` returns once the
//! change is on disk, so the server answers only durable leases) and
//! [deferred](FileStore::deferred) (`put` only updates memory; the caller
//! calls [`LeaseStore::flush`] after sending the replies, as dnsmasq writes
//! its lease file after answering, and the flush appends every pending
//! change with one `write` and one `fdatasync`). A crash between answer and
//! flush loses the newest leases on disk; their clients keep them, and an
//! authoritative server grants them again when they renew or reboot.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::lease::{Lease, LeaseStore};

/// Snapshot format version written in the `version` field.
const VERSION: u32 = 2;

/// Journal lines between snapshots.
pub const DEFAULT_COMPACT_EVERY: usize = 256;

/// The snapshot file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    version: u32,
    /// Sequence number of the last change the snapshot contains (absent in
    /// version 1, which had no journal).
    #[serde(default)]
    seq: u64,
    leases: Vec<Lease>,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Change {
    Put(Lease),
    Remove(Ipv4Addr),
}

/// A [`LeaseStore`] backed by a snapshot file and a journal beside it.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    journal_path: PathBuf,
    leases: BTreeMap<Ipv4Addr, Lease>,
    /// Sequence number of the last change made (durable unless pending).
    seq: u64,
    /// The open journal, positioned at its end; `None` until the first
    /// snapshot of this process (or after a failed truncation), when the
    /// next change writes a snapshot instead of appending.
    journal: Option<File>,
    /// Lines in the journal.
    journal_lines: usize,
    /// Length of the journal's valid prefix, bytes.
    journal_len: u64,
    compact_every: usize,
    deferred: bool,
    /// Changes made in memory, not yet on disk (deferred policy).
    pending: Vec<Change>,
}

fn journal_path(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf().into_os_string();
    p.push(".journal");
    PathBuf::from(p)
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// Replace `path` with `bytes`: write `path.tmp`, fsync, rename, fsync the
/// directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(".tmp");
    wow_journal::write_atomic(path, Path::new(&tmp), bytes, None)
        .map_err(|e| io_err(path)(e.source))
}

impl FileStore {
    /// Open `path` (and its journal `path.journal`), reading them when they
    /// exist and dropping a torn last journal line.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let journal_path = journal_path(&path);
        let snapshot = match fs::read(&path) {
            Ok(bytes) => Some(decode(&path, &bytes)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let journal = match fs::read(&journal_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&journal_path)(e)),
        };
        let mut store = FileStore {
            path,
            journal_path,
            leases: BTreeMap::new(),
            seq: 0,
            journal: None,
            journal_lines: 0,
            journal_len: 0,
            compact_every: DEFAULT_COMPACT_EVERY,
            deferred: false,
            pending: Vec::new(),
        };
        let Some((seq, leases)) = snapshot else {
            if journal.is_some_and(|j| !j.is_empty()) {
                return Err(corrupt(
                    &store.journal_path,
                    format!("journal without its snapshot {}", store.path.display()),
                ));
            }
            return Ok(store);
        };
        store.seq = seq;
        store.leases = leases;
        let Some(journal) = journal else {
            // A version-1 file, or a crash before the first journal
            // existed: the next change writes a snapshot and the journal.
            return Ok(store);
        };
        let valid = store.replay(&journal)?;
        let jpath = store.journal_path.clone();
        let err = io_err(&jpath);
        let file = OpenOptions::new()
            .append(true)
            .open(&store.journal_path)
            .map_err(&err)?;
        if valid < journal.len() {
            // Cut the torn append off, so the next line starts clean.
            file.set_len(valid as u64)
                .and_then(|()| file.sync_data())
                .map_err(&err)?;
        }
        store.journal_len = valid as u64;
        store.journal = Some(file);
        Ok(store)
    }

    /// Apply the journal lines newer than the snapshot; returns the length
    /// of the valid prefix (shorter than `journal` only by a torn last line).
    fn replay(&mut self, journal: &[u8]) -> Result<usize, StoreError> {
        let leases = &mut self.leases;
        let done = wow_journal::replay(journal, self.seq, |change: Change| apply(leases, &change))
            .map_err(|e| corrupt(&self.journal_path, e.to_string()))?;
        self.seq = done.seq;
        self.journal_lines += done.lines;
        Ok(done.valid_len)
    }

    /// Switch to the deferred write policy: changes reach the disk on
    /// [`LeaseStore::flush`].
    pub fn deferred(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// Set the number of journal lines between snapshots (at least 1).
    pub fn set_compact_every(&mut self, lines: usize) {
        self.compact_every = lines.max(1);
    }

    /// Whether changes are waiting for [`LeaseStore::flush`].
    pub fn is_dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The snapshot file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal file's path (`path()` with `.journal` appended).
    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    /// Lines in the journal since the last snapshot.
    pub fn journal_lines(&self) -> usize {
        self.journal_lines
    }

    /// Write every change so far (pending ones included) as a new snapshot
    /// and empty the journal. Call it on clean shutdown, so the next start
    /// replays nothing.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.snapshot()?;
        self.pending.clear();
        Ok(())
    }

    /// Write the in-memory state as the snapshot, then reset the journal.
    fn snapshot(&mut self) -> Result<(), StoreError> {
        let contents = Contents {
            version: VERSION,
            seq: self.seq,
            leases: self.leases.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&contents)
            .map_err(|e| io_err(&self.path)(io::Error::other(e)))?;
        self.journal = None;
        write_atomic(&self.path, &bytes)?;
        // Lines up to `seq` are now redundant (and skipped if a crash leaves
        // them): start an empty journal.
        write_atomic(&self.journal_path, b"")?;
        let file = OpenOptions::new()
            .append(true)
            .open(&self.journal_path)
            .map_err(io_err(&self.journal_path))?;
        self.journal = Some(file);
        self.journal_lines = 0;
        self.journal_len = 0;
        Ok(())
    }

    /// Make `changes` (already applied in memory, numbered up to
    /// `self.seq`) durable: one append and one `fdatasync`, or a snapshot
    /// when there is no journal yet or it is due for compaction.
    fn persist(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let Some(file) = self.journal.as_mut() else {
            return self.snapshot();
        };
        if self.journal_lines + changes.len() > self.compact_every {
            return self.snapshot();
        }
        let first = self.seq + 1 - changes.len() as u64;
        let mut buf = Vec::new();
        wow_journal::encode(first, changes, &mut buf)
            .map_err(|e| io_err(&self.journal_path)(io::Error::other(e)))?;
        if let Err(e) = wow_journal::append(file, self.journal_len, &buf) {
            // A partial line that could not be cut off: the next change
            // rewrites everything as a snapshot.
            if !e.rolled_back {
                self.journal = None;
            }
            return Err(io_err(&self.journal_path)(e.source));
        }
        self.journal_lines += changes.len();
        self.journal_len += buf.len() as u64;
        Ok(())
    }

    /// Apply one change in memory and, write-through, on disk; on failure
    /// memory is rolled back to what is on disk.
    fn change(&mut self, change: Change) -> Result<(), StoreError> {
        let undo = match &change {
            Change::Put(lease) => match self.leases.get(&lease.addr) {
                Some(old) => Change::Put(old.clone()),
                None => Change::Remove(lease.addr),
            },
            Change::Remove(addr) => match self.leases.get(addr) {
                Some(old) => Change::Put(old.clone()),
                None => return Ok(()),
            },
        };
        // Both arms succeed in memory: the address is present for a remove.
        let _ = apply(&mut self.leases, &change);
        self.seq += 1;
        if self.deferred {
            self.pending.push(change);
            return Ok(());
        }
        let res = self.persist(std::slice::from_ref(&change));
        if res.is_err() {
            let _ = apply(&mut self.leases, &undo);
            self.seq -= 1;
        }
        res
    }
}

/// Apply `change` to `leases`; a removal of an absent address is an error.
fn apply(leases: &mut BTreeMap<Ipv4Addr, Lease>, change: &Change) -> Result<(), String> {
    match change {
        Change::Put(lease) => {
            leases.insert(lease.addr, lease.clone());
        }
        Change::Remove(addr) => {
            if leases.remove(addr).is_none() {
                return Err(format!("removal of {addr}, which has no lease"));
            }
        }
    }
    Ok(())
}

fn decode(path: &Path, bytes: &[u8]) -> Result<(u64, BTreeMap<Ipv4Addr, Lease>), StoreError> {
    let contents: Contents =
        serde_json::from_slice(bytes).map_err(|e| corrupt(path, e.to_string()))?;
    if contents.version != VERSION && contents.version != 1 {
        return Err(corrupt(
            path,
            format!("unknown version {}", contents.version),
        ));
    }
    let mut leases = BTreeMap::new();
    for lease in contents.leases {
        if leases.insert(lease.addr, lease.clone()).is_some() {
            return Err(corrupt(
                path,
                format!("address {} appears twice", lease.addr),
            ));
        }
    }
    Ok((contents.seq, leases))
}

impl LeaseStore for FileStore {
    fn load(&mut self) -> Result<Vec<Lease>, StoreError> {
        Ok(self.leases.values().cloned().collect())
    }

    fn put(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.change(Change::Put(lease.clone()))
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError> {
        self.change(Change::Remove(addr))
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Stays pending on failure, so the next flush retries.
        let pending = std::mem::take(&mut self.pending);
        let res = self.persist(&pending);
        if res.is_err() {
            self.pending = pending;
        }
        res
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::lease::{ClientKey, LeaseState};
    use crate::wire::HardwareAddr;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dhcp-virt-store-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn lease(n: u8) -> Lease {
        Lease {
            addr: Ipv4Addr::new(10, 0, 0, n),
            client: ClientKey::Hardware(HardwareAddr::ethernet([2, 0, 0, 0, 0, n])),
            expires_unix: 1_000 + u64::from(n),
            state: LeaseState::Bound,
            hostname: Some(format!("h{n}")),
        }
    }

    #[test]
    fn survives_reopen_and_removal() {
        let d = dir();
        let path = d.join("leases.json");
        let mut s = FileStore::open(&path).unwrap();
        assert!(s.load().unwrap().is_empty());
        s.put(&lease(1)).unwrap();
        s.put(&lease(2)).unwrap();
        s.remove(Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        let mut again = FileStore::open(&path).unwrap();
        assert_eq!(again.load().unwrap(), vec![lease(2)]);
        assert!(!d.join("leases.json.tmp").exists());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn deferred_writes_reach_disk_on_flush() {
        let d = dir();
        let path = d.join("leases.json");
        let mut s = FileStore::open(&path).unwrap().deferred();
        s.put(&lease(3)).unwrap();
        assert!(s.is_dirty());
        assert!(!path.exists());
        s.flush().unwrap();
        assert!(!s.is_dirty());
        assert_eq!(
            FileStore::open(&path).unwrap().load().unwrap(),
            vec![lease(3)]
        );
        s.remove(Ipv4Addr::new(10, 0, 0, 3)).unwrap();
        assert_eq!(FileStore::open(&path).unwrap().load().unwrap().len(), 1);
        s.flush().unwrap();
        assert!(FileStore::open(&path).unwrap().load().unwrap().is_empty());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn torn_file_is_an_error_and_is_kept() {
        let d = dir();
        let path = d.join("leases.json");
        let mut s = FileStore::open(&path).unwrap();
        s.put(&lease(1)).unwrap();
        let full = fs::read(&path).unwrap();
        for cut in [0, 1, full.len() / 2, full.len() - 2] {
            fs::write(&path, &full[..cut]).unwrap();
            match FileStore::open(&path) {
                Err(StoreError::Corrupt { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
            assert_eq!(fs::read(&path).unwrap(), &full[..cut]);
        }
        fs::write(&path, br#"{"version":9,"leases":[]}"#).unwrap();
        assert!(matches!(
            FileStore::open(&path),
            Err(StoreError::Corrupt { .. })
        ));
        fs::remove_dir_all(d).unwrap();
    }

    fn open_with(path: &Path, every: usize) -> FileStore {
        let mut s = FileStore::open(path).unwrap();
        s.set_compact_every(every);
        s
    }

    fn lines(path: &Path) -> usize {
        fs::read(journal_path(path))
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    #[test]
    fn write_through_appends_one_line_per_change() {
        let d = dir();
        let path = d.join("leases.json");
        let mut s = FileStore::open(&path).unwrap();
        // The first change writes the snapshot and creates the journal.
        s.put(&lease(1)).unwrap();
        let snapshot = fs::read(&path).unwrap();
        assert_eq!(lines(&path), 0);
        s.put(&lease(2)).unwrap();
        s.put(&lease(1)).unwrap();
        s.remove(Ipv4Addr::new(10, 0, 0, 2)).unwrap();
        // Removing an absent address changes nothing.
        s.remove(Ipv4Addr::new(10, 0, 0, 2)).unwrap();
        assert_eq!(lines(&path), 3);
        assert_eq!(s.journal_lines(), 3);
        assert_eq!(fs::read(&path).unwrap(), snapshot);
        assert_eq!(
            FileStore::open(&path).unwrap().load().unwrap(),
            vec![lease(1)]
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn torn_last_line_is_dropped_and_cut_off() {
        let d = dir();
        let path = d.join("leases.json");
        let jpath = journal_path(&path);
        let mut s = FileStore::open(&path).unwrap();
        for n in 1..=4 {
            s.put(&lease(n)).unwrap();
        }
        drop(s);
        let full = fs::read(&jpath).unwrap();
        let last_start = full[..full.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        let mut garbled = full[..last_start].to_vec();
        garbled.extend_from_slice(b"{\"seq\":5,\"chan\n");
        let mut cases: Vec<Vec<u8>> = [1, 2, (full.len() - last_start) / 2]
            .iter()
            .map(|&k| full[..full.len() - k].to_vec())
            .collect();
        cases.push(garbled);
        for torn in cases {
            fs::write(&jpath, &torn).unwrap();
            let mut s = FileStore::open(&path).unwrap();
            assert_eq!(s.load().unwrap(), vec![lease(1), lease(2), lease(3)]);
            assert_eq!(fs::read(&jpath).unwrap(), &full[..last_start]);
            // The next append starts on a clean line.
            s.put(&lease(9)).unwrap();
            drop(s);
            assert_eq!(
                FileStore::open(&path).unwrap().load().unwrap(),
                vec![lease(1), lease(2), lease(3), lease(9)]
            );
        }
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn damage_before_the_last_line_is_an_error_and_is_kept() {
        let d = dir();
        let path = d.join("leases.json");
        let jpath = journal_path(&path);
        let mut s = FileStore::open(&path).unwrap();
        for n in 1..=4 {
            s.put(&lease(n)).unwrap();
        }
        drop(s);
        let snapshot = fs::read(&path).unwrap();
        let full = fs::read(&jpath).unwrap();
        let text = String::from_utf8(full.clone()).unwrap();
        let broken = text.replacen("\"seq\"", "\"sq\"", 1);
        let gap = text.replacen("\"seq\":3", "\"seq\":7", 1);
        let unknown = text.replacen("\"put\"", "\"replace\"", 1);
        let bad_remove = format!("{text}{{\"seq\":5,\"change\":{{\"remove\":\"10.0.0.99\"}}}}\n");
        let mut cases = vec![broken, gap, unknown];
        // A bad line followed by a good one.
        cases.push(format!(
            "{bad_remove}{{\"seq\":6,\"change\":{{\"remove\":\"10.0.0.1\"}}}}\n"
        ));
        for bad in cases {
            fs::write(&jpath, &bad).unwrap();
            match FileStore::open(&path) {
                Err(StoreError::Corrupt { path: p, .. }) => assert_eq!(p, jpath),
                other => panic!("{bad}: {other:?}"),
            }
            assert_eq!(fs::read(&jpath).unwrap(), bad.as_bytes());
            assert_eq!(fs::read(&path).unwrap(), snapshot);
        }
        // A journal whose snapshot is gone.
        fs::write(&jpath, &full).unwrap();
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            FileStore::open(&path),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(fs::read(&jpath).unwrap(), full);
        fs::remove_dir_all(d).unwrap();
    }

    /// A deterministic mix of puts (new and replaced) and removals.
    fn churn(s: &mut FileStore, model: &mut BTreeMap<Ipv4Addr, Lease>, from: u32, to: u32) {
        for i in from..to {
            let n = (i.wrapping_mul(37) % 50) as u8 + 1;
            if i % 5 == 4 {
                s.remove(Ipv4Addr::new(10, 0, 0, n)).unwrap();
                model.remove(&Ipv4Addr::new(10, 0, 0, n));
            } else {
                let mut l = lease(n);
                l.expires_unix += u64::from(i);
                s.put(&l).unwrap();
                model.insert(l.addr, l);
            }
        }
    }

    #[test]
    fn compaction_keeps_everything() {
        let d = dir();
        let path = d.join("leases.json");
        let mut s = open_with(&path, 3);
        let mut model = BTreeMap::new();
        for round in 0..20 {
            churn(&mut s, &mut model, round * 7, round * 7 + 7);
            assert!(s.journal_lines() <= 3);
            assert_eq!(lines(&path), s.journal_lines());
            let mut again = FileStore::open(&path).unwrap();
            assert_eq!(
                again.load().unwrap(),
                model.values().cloned().collect::<Vec<_>>()
            );
        }
        s.compact().unwrap();
        assert_eq!(lines(&path), 0);
        let mut again = FileStore::open(&path).unwrap();
        assert_eq!(
            again.load().unwrap(),
            model.values().cloned().collect::<Vec<_>>()
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn crash_between_snapshot_and_journal_reset_is_harmless() {
        let d = dir();
        let path = d.join("leases.json");
        let jpath = journal_path(&path);
        let mut s = FileStore::open(&path).unwrap();
        let mut model = BTreeMap::new();
        churn(&mut s, &mut model, 0, 40);
        let old_journal = fs::read(&jpath).unwrap();
        s.compact().unwrap();
        // The old journal survives the crash: its lines are all in the
        // snapshot already and must not be applied twice.
        fs::write(&jpath, &old_journal).unwrap();
        let mut s = FileStore::open(&path).unwrap();
        assert_eq!(
            s.load().unwrap(),
            model.values().cloned().collect::<Vec<_>>()
        );
        churn(&mut s, &mut model, 40, 60);
        let mut again = FileStore::open(&path).unwrap();
        assert_eq!(
            again.load().unwrap(),
            model.values().cloned().collect::<Vec<_>>()
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn reopen_after_many_changes() {
        let d = dir();
        let path = d.join("leases.json");
        let mut model = BTreeMap::new();
        for round in 0..5 {
            let mut s = open_with(&path, 64);
            assert_eq!(
                s.load().unwrap(),
                model.values().cloned().collect::<Vec<_>>()
            );
            churn(&mut s, &mut model, round * 150, round * 150 + 150);
            if round == 2 {
                s.compact().unwrap();
            }
        }
        // Deferred changes land with the flush, in one append.
        let mut s = FileStore::open(&path).unwrap().deferred();
        let before = lines(&path);
        churn(&mut s, &mut model, 750, 760);
        assert!(s.is_dirty());
        assert_eq!(lines(&path), before);
        s.flush().unwrap();
        assert!(!s.is_dirty());
        assert!(lines(&path) > before);
        assert_eq!(lines(&path), s.journal_lines());
        let mut again = FileStore::open(&path).unwrap();
        assert_eq!(
            again.load().unwrap(),
            model.values().cloned().collect::<Vec<_>>()
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn version_one_file_is_read() {
        let d = dir();
        let path = d.join("leases.json");
        let v1 = serde_json::json!({"version": 1, "leases": [lease(7)]});
        fs::write(&path, serde_json::to_vec(&v1).unwrap()).unwrap();
        let mut s = FileStore::open(&path).unwrap();
        assert_eq!(s.load().unwrap(), vec![lease(7)]);
        s.put(&lease(8)).unwrap();
        s.put(&lease(9)).unwrap();
        assert_eq!(
            FileStore::open(&path).unwrap().load().unwrap(),
            vec![lease(7), lease(8), lease(9)]
        );
        fs::remove_dir_all(d).unwrap();
    }
}
