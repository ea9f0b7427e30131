//! A lease store in one JSON file, rewritten atomically on every change.
//!
//! Each write goes to `FILE.tmp`, is fsynced, renamed over `FILE`, and the
//! directory is fsynced, so a crash leaves either the old or the new file.
//! A file that exists but does not decode (torn by something else, edited
//! by hand) is reported as [`StoreError::Corrupt`] and never replaced by an
//! empty one. A missing file is an empty store.
//!
//! Two write policies: write-through (the default: `put` returns once the
//! record is on disk, so the server answers only durable leases) and
//! [deferred](FileStore::deferred) (`put` only updates memory; the caller
//! calls [`LeaseStore::flush`] after sending the replies, as dnsmasq writes
//! its lease file after answering). An atomic write with its two fsyncs
//! costs milliseconds on a real disk, which the deferred policy takes off
//! the DISCOVER-to-ACK path. A crash between answer and flush loses the
//! newest leases on disk; their clients keep them, and an authoritative
//! server grants them again when they renew or reboot.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::lease::{Lease, LeaseStore};

/// File format version written in the `version` field.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    version: u32,
    leases: Vec<Lease>,
}

/// A [`LeaseStore`] backed by one file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    leases: BTreeMap<Ipv4Addr, Lease>,
    deferred: bool,
    dirty: bool,
}

impl FileStore {
    /// Open `path`, reading it when it exists.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let leases = match fs::read(&path) {
            Ok(bytes) => decode(&path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(FileStore {
            path,
            leases,
            deferred: false,
            dirty: false,
        })
    }

    /// Switch to the deferred write policy: changes reach the disk on
    /// [`LeaseStore::flush`].
    pub fn deferred(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// Whether changes are waiting for [`LeaseStore::flush`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self) -> Result<(), StoreError> {
        let contents = Contents {
            version: VERSION,
            leases: self.leases.values().cloned().collect(),
        };
        let io_err = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes =
            serde_json::to_vec_pretty(&contents).map_err(|e| io_err(io::Error::other(e)))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err)?;
        f.write_all(&bytes).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io_err)?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        Ok(())
    }
}

fn decode(path: &Path, bytes: &[u8]) -> Result<BTreeMap<Ipv4Addr, Lease>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let contents: Contents = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if contents.version != VERSION {
        return Err(corrupt(format!("unknown version {}", contents.version)));
    }
    let mut leases = BTreeMap::new();
    for lease in contents.leases {
        if leases.insert(lease.addr, lease.clone()).is_some() {
            return Err(corrupt(format!("address {} appears twice", lease.addr)));
        }
    }
    Ok(leases)
}

impl LeaseStore for FileStore {
    fn load(&mut self) -> Result<Vec<Lease>, StoreError> {
        Ok(self.leases.values().cloned().collect())
    }

    fn put(&mut self, lease: &Lease) -> Result<(), StoreError> {
        let old = self.leases.insert(lease.addr, lease.clone());
        if self.deferred {
            self.dirty = true;
            return Ok(());
        }
        let res = self.write();
        if res.is_err() {
            // Keep memory equal to what is on disk.
            match old {
                Some(old) => self.leases.insert(old.addr, old),
                None => self.leases.remove(&lease.addr),
            };
        }
        res
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError> {
        let Some(old) = self.leases.remove(&addr) else {
            return Ok(());
        };
        if self.deferred {
            self.dirty = true;
            return Ok(());
        }
        let res = self.write();
        if res.is_err() {
            self.leases.insert(addr, old);
        }
        res
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            // Stays dirty on failure, so the next flush retries.
            self.write()?;
            self.dirty = false;
        }
        Ok(())
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
}
