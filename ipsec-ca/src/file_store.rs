//! A directory-backed [`Store`], plus the CA's key and certificate files.
//!
//! Layout of a CA directory:
//!
//! | file | content | mode |
//! |---|---|---|
//! | `ca.pem` | CA certificate | 0644 |
//! | `ca.key` | CA private key, PKCS#8 PEM | 0600 |
//! | `chain.pem` | certificates above an intermediate CA, nearest first | 0644 |
//! | `state.json` | [`CaState`] snapshot | 0600 |
//! | `journal.jsonl` | changes since the snapshot, one JSON [`Change`] per line | 0600 |
//! | `lock` | held (`flock`) while a [`FileStore`] is open | 0600 |
//!
//! Whole files are written atomically: write a temporary file in the same
//! directory, fsync it, rename it over the target, fsync the directory.
//! A change is one appended journal line, fsynced before the call returns
//! (O(1) per certificate instead of rewriting the index). Every
//! [`DEFAULT_COMPACT_EVERY`] lines the state is snapshotted and the journal
//! emptied. Loading replays the journal lines newer than the snapshot (by
//! sequence number, so a crash between snapshot and journal reset is
//! harmless) and drops a torn last line: it was never acknowledged.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::ca::{Ca, Policy};
use crate::error::{CaError, StoreError};
use crate::identity::CaIdentity;
use crate::state::{CaState, Change};
use crate::store::Store;

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the chain above an intermediate CA.
pub const CHAIN_FILE: &str = "chain.pem";
/// File name of the state snapshot.
pub const STATE_FILE: &str = "state.json";
/// File name of the change journal.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// File name of the lock file.
pub const LOCK_FILE: &str = "lock";
/// Journal lines between snapshots.
pub const DEFAULT_COMPACT_EVERY: usize = 1024;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl From<wow_journal::IoError> for StoreError {
    fn from(e: wow_journal::IoError) -> Self {
        StoreError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// Writes `bytes` to `path` atomically and durably with the given mode,
/// through the temporary file `.NAME.tmp` beside it.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        file_name.as_deref().unwrap_or("unnamed")
    ));
    Ok(wow_journal::write_atomic(path, &tmp, bytes, Some(mode))?)
}

fn read(path: &Path) -> Result<String, StoreError> {
    fs::read_to_string(path).map_err(io_err("read", path))
}

/// A CA directory on disk, locked for exclusive use while this value lives.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    _lock: File,
    /// Lines in the journal (valid after `load`).
    journal_entries: usize,
    /// Length of the journal's valid prefix, bytes.
    journal_len: u64,
    /// A failed append may have left a partial line: snapshot next time.
    needs_snapshot: bool,
    compact_every: usize,
}

impl FileStore {
    /// Uses `dir` (created if missing, mode 0700) and takes its lock; fails
    /// with [`StoreError::Locked`] if another `FileStore` holds it.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        if !dir.is_dir() {
            std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
                .create(&dir)
                .map_err(io_err("mkdir", &dir))?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        Ok(FileStore {
            dir,
            _lock: lock,
            journal_entries: 0,
            journal_len: 0,
            needs_snapshot: true,
            compact_every: DEFAULT_COMPACT_EVERY,
        })
    }

    /// Sets the number of journal lines between snapshots (at least 1).
    pub fn set_compact_every(&mut self, lines: usize) {
        self.compact_every = lines.max(1);
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a CA was initialised here.
    pub fn has_identity(&self) -> bool {
        self.dir.join(CA_KEY_FILE).exists()
    }

    /// Writes the CA certificate, key (0600) and chain.
    pub fn save_identity(&self, identity: &CaIdentity) -> Result<(), StoreError> {
        // The key goes last: its presence marks an initialised directory, so a
        // crash part-way leaves a directory `init` can simply redo.
        if !identity.chain().is_empty() {
            write_atomic(
                &self.dir.join(CHAIN_FILE),
                identity.chain_pem().as_bytes(),
                0o644,
            )?;
        }
        write_atomic(
            &self.dir.join(CA_CERT_FILE),
            identity.cert_pem().as_bytes(),
            0o644,
        )?;
        write_atomic(
            &self.dir.join(CA_KEY_FILE),
            identity.key_pem().as_bytes(),
            0o600,
        )
    }

    /// Opens the CA initialised in this directory under `policy`; fails
    /// with [`StoreError::NoCa`] if there is none.
    pub fn open_ca(self, policy: Policy) -> Result<Ca<FileStore>, CaError> {
        if !self.has_identity() {
            return Err(StoreError::NoCa(self.dir).into());
        }
        let identity = self.load_identity()?;
        Ca::open(identity, policy, self)
    }

    /// Initialises a CA with `identity` in this directory and opens it;
    /// fails with [`StoreError::AlreadyCa`] (and writes nothing) if the
    /// directory already holds one.
    pub fn init_ca(self, identity: CaIdentity, policy: Policy) -> Result<Ca<FileStore>, CaError> {
        if self.has_identity() {
            return Err(StoreError::AlreadyCa(self.dir).into());
        }
        self.save_identity(&identity)?;
        Ca::open(identity, policy, self)
    }

    /// Reads the CA certificate, key and chain.
    pub fn load_identity(&self) -> Result<CaIdentity, CaError> {
        let cert = read(&self.dir.join(CA_CERT_FILE))?;
        let key = read(&self.dir.join(CA_KEY_FILE))?;
        let chain_path = self.dir.join(CHAIN_FILE);
        let chain = if chain_path.exists() {
            Some(read(&chain_path)?)
        } else {
            None
        };
        CaIdentity::from_pem(&cert, &key, chain.as_deref())
    }
}

impl FileStore {
    fn append(&mut self, line: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join(JOURNAL_FILE);
        let mut file = OpenOptions::new()
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        wow_journal::append(&mut file, self.journal_len, line).map_err(|e| {
            // The next change rewrites everything as a snapshot.
            self.needs_snapshot = true;
            io_err("append", &path)(e.source)
        })
    }
}

impl Store for FileStore {
    fn load(&mut self) -> Result<Option<CaState>, StoreError> {
        let path = self.dir.join(STATE_FILE);
        let snapshot = match fs::read(&path) {
            Ok(bytes) => CaState::decode(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.needs_snapshot = true;
                return Ok(None);
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let journal_path = self.dir.join(JOURNAL_FILE);
        let journal = match fs::read(&journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", &journal_path)(e)),
        };
        let mut state = snapshot;
        let from = state.seq;
        let done = wow_journal::replay(&journal, from, |change: Change| state.apply(&change))
            .map_err(|e| match e {
                wow_journal::ReplayError::Garbled { source, .. } => StoreError::Corrupt(source),
                wow_journal::ReplayError::Gap { .. } => StoreError::Inconsistent,
                wow_journal::ReplayError::Apply { reason, .. } => reason,
            })?;
        let (pos, entries) = (done.valid_len, done.lines);
        if pos < journal.len() {
            let file = OpenOptions::new()
                .write(true)
                .open(&journal_path)
                .map_err(io_err("open", &journal_path))?;
            file.set_len(pos as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err("truncate", &journal_path))?;
        }
        self.journal_entries = entries;
        self.journal_len = pos as u64;
        self.needs_snapshot = !journal_path.exists();
        Ok(Some(state))
    }

    fn save(&mut self, state: &CaState) -> Result<(), StoreError> {
        write_atomic(&self.dir.join(STATE_FILE), &state.encode(), 0o600)?;
        // Lines up to `state.seq` are now redundant (and skipped if a crash
        // leaves them): start an empty journal.
        write_atomic(&self.dir.join(JOURNAL_FILE), b"", 0o600)?;
        self.journal_entries = 0;
        self.journal_len = 0;
        self.needs_snapshot = false;
        Ok(())
    }

    fn record(&mut self, before: &CaState, change: &Change) -> Result<(), StoreError> {
        if self.needs_snapshot || self.journal_entries >= self.compact_every {
            let mut after = before.clone();
            after.apply(change)?;
            return self.save(&after);
        }
        let mut line = Vec::new();
        wow_journal::encode(before.seq + 1, [change], &mut line).map_err(StoreError::Corrupt)?;
        self.append(&line)?;
        self.journal_entries += 1;
        self.journal_len += line.len() as u64;
        Ok(())
    }
}
