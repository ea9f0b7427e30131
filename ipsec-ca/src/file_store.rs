//! A directory-backed [`Store`], plus the CA's key and certificate files.
//!
//! Layout of a CA directory:
//!
//! | file | content | mode |
//! |---|---|---|
//! | `ca.pem` | CA certificate | 0644 |
//! | `ca.key` | CA private key, PKCS#8 PEM | 0600 |
//! | `chain.pem` | certificates above an intermediate CA, nearest first | 0644 |
//! | `state.json` | [`CaState`] | 0600 |
//!
//! Every file is written atomically: write a temporary file in the same
//! directory, fsync it, rename it over the target, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{CaError, StoreError};
use crate::identity::CaIdentity;
use crate::state::CaState;
use crate::store::Store;

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the chain above an intermediate CA.
pub const CHAIN_FILE: &str = "chain.pem";
/// File name of the state snapshot.
pub const STATE_FILE: &str = "state.json";

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically and durably with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp",
        file_name.as_deref().unwrap_or("unnamed")
    ));
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        // `mode` only applies on creation; a leftover temp file keeps its mode.
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io_err("chmod", &tmp))?;
        file.write_all(bytes).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync dir", &dir))?;
    Ok(())
}

fn read(path: &Path) -> Result<String, StoreError> {
    fs::read_to_string(path).map_err(io_err("read", path))
}

/// A CA directory on disk.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Uses `dir` (created if missing, mode 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        if !dir.is_dir() {
            std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
                .create(&dir)
                .map_err(io_err("mkdir", &dir))?;
        }
        Ok(FileStore { dir })
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

impl Store for FileStore {
    fn load(&mut self) -> Result<Option<CaState>, StoreError> {
        let path = self.dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => CaState::decode(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    fn save(&mut self, state: &CaState) -> Result<(), StoreError> {
        write_atomic(&self.dir.join(STATE_FILE), &state.encode(), 0o600)
    }
}
