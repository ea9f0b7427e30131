//! `wow-node appliance …`: the WOW appliance's stacked file systems on
//! overlayfs.
//!
//! ```text
//!            develop                          release
//!  MNT  ┌──────────────────┐         ┌──────────────────┐
//!       │ module  (rw)     │ upper   │ home    (rw)     │ upper: the user's files
//!       ├──────────────────┤         ├──────────────────┤
//!       │ base    (ro)     │ lower   │ module  (ro)     │ lower: what the developer installed
//!       └──────────────────┘         ├──────────────────┤
//!                                    │ base    (ro)     │ lower: the distribution
//!                                    └──────────────────┘
//! ```
//!
//! A state directory holds the layers and `appliance.json`:
//!
//! ```text
//! STATE/appliance.json   the base (a directory or a read-only image), mode, mount point,
//!                        installed module, trusted module keys (written atomically)
//! STATE/module/          the module layer (develop's upper, release's middle lower)
//! STATE/home/            release's upper
//! STATE/work/            overlayfs's work directory
//! STATE/base.mnt/        where an image base is mounted (loop, read-only)
//! ```
//!
//! Overlay whiteouts (character devices 0:0) and opaque directories
//! (`trusted.overlay.opaque=y`) in the module layer travel in the published
//! module, so a base file deleted in develop stays deleted in release.
//! Mounting needs root (CAP_SYS_ADMIN); without it the commands that mount
//! say so and stop.

pub mod manifest;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use ipsec_ca::file_store::write_atomic;
use ipsec_ca::state::hex_encode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use manifest::{
    DEFAULT_CLEAN_LIST, MANIFEST_MEMBER, MAX_MANIFEST_BYTES, Manifest, ModuleError, ModuleKey,
    ModuleSignature, PAYLOAD_MEMBER, Provenance, SIGNATURE_MEMBER,
};

/// The state file's name.
pub const STATE_FILE: &str = "appliance.json";
/// The xattr overlayfs marks an opaque directory with.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Appliance subcommands.
#[derive(Debug, Subcommand)]
pub enum ApplianceCommand {
    /// Create a state directory over a base (a directory, or a read-only
    /// image such as squashfs or erofs, mounted through a loop device).
    Init {
        /// The base: a directory or an image file.
        #[arg(long)]
        base: PathBuf,
        /// The state directory (created).
        #[arg(long)]
        dir: PathBuf,
        /// A module key to trust (64 hex digits, or a `.pub` file from
        /// `appliance keygen`); repeatable. With any configured, release
        /// refuses unsigned modules and other keys.
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
    },
    /// Add a trusted module key to a state directory.
    Trust {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
        /// The key (64 hex digits or a `.pub` file).
        key: String,
    },
    /// Mount base (read-only) + module (read-write) at MNT.
    Develop {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
        /// The mount point (an existing directory).
        #[arg(long)]
        mount: PathBuf,
    },
    /// Unmount the stack (and an image base).
    Umount {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Remove from the module layer what must not ship (see the README
    /// for the default list); prints each path removed.
    Clean {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
        /// Use this list instead of the default (one pattern a line).
        #[arg(long)]
        list: Option<PathBuf>,
        /// A pattern to remove besides the list; repeatable.
        #[arg(long)]
        extra: Vec<String>,
        /// A pattern to keep although the list names it; repeatable.
        #[arg(long)]
        keep: Vec<String>,
        /// Print what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the default list and exit.
        #[arg(long)]
        show_list: bool,
    },
    /// Write the module layer as one file: manifest, SHA-256, signature.
    Publish {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
        /// The module file to write.
        #[arg(long)]
        out: PathBuf,
        /// Sign with this module key (from `appliance keygen`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The module's name (default: the output file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Make a module signing key (Ed25519, PKCS#8, mode 0600) and OUT.pub.
    Keygen {
        /// The private key file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Install a verified module and mount base + module (read-only) +
    /// home (read-write) at MNT.
    Release {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
        /// The module file.
        #[arg(long)]
        module: PathBuf,
        /// The mount point (an existing directory).
        #[arg(long)]
        mount: PathBuf,
    },
    /// Erase home (the user's files); module and base stay.
    ResetHome {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Install another verified module; home and base stay.
    ReplaceModule {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
        /// The module file.
        module: PathBuf,
    },
    /// Use a new base; module and home stay.
    UpdateBase {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
        /// The new base: a directory or an image file.
        base: PathBuf,
    },
    /// Mode, layers and their sizes.
    Status {
        /// The state directory.
        #[arg(long)]
        dir: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Why an appliance command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplianceError {
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS's answer.
        source: io::Error,
    },
    /// The module was refused.
    #[error("module refused: {0}")]
    Module(#[from] ModuleError),
    /// The module file is not a module.
    #[error("not a module file: {0}")]
    Archive(String),
    /// Mounting needs root.
    #[error(
        "mounting an overlay needs root (CAP_SYS_ADMIN): run as root, e.g. in a mount namespace (`unshare -m`)"
    )]
    NeedsRoot,
    /// A mount or unmount failed.
    #[error("{op} {}: {source}", path.display())]
    Mount {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The kernel's answer.
        source: nix::Error,
    },
    /// A helper program failed.
    #[error("{0}")]
    Command(String),
    /// No state directory here.
    #[error("{} is not an appliance state directory (run `appliance init`)", .0.display())]
    NotInitialised(PathBuf),
    /// The state file is unreadable.
    #[error("bad state file {}: {reason}", path.display())]
    BadState {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The command needs the stack unmounted.
    #[error("the stack is mounted at {}: `appliance umount` first", .0.display())]
    Mounted(PathBuf),
    /// The base is neither a directory nor a file.
    #[error("base {} is neither a directory nor an image file", .0.display())]
    BadBase(PathBuf),
    /// A path overlayfs cannot take in its options.
    #[error("path {} contains ',', ':' or '\\', which overlayfs options cannot carry", .0.display())]
    UnmountablePath(PathBuf),
    /// A key file others can read.
    #[error("key file {} is readable by others (mode {mode:o}): chmod 600", path.display())]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ApplianceError + use<> {
    let path = path.to_path_buf();
    move |source| ApplianceError::Io { op, path, source }
}

/// The base layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Base {
    /// A directory, used in place.
    Dir {
        /// Absolute path.
        path: PathBuf,
    },
    /// A file-system image, loop-mounted read-only at `STATE/base.mnt`.
    Image {
        /// Absolute path.
        path: PathBuf,
    },
}

/// What the stack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Initialised, never mounted.
    Idle,
    /// base (ro) + module (rw).
    Develop,
    /// base (ro) + module (ro) + home (rw).
    Release,
}

/// The installed module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledModule {
    /// Its name.
    pub name: String,
    /// Its payload's SHA-256.
    pub payload_sha256: String,
    /// The key that signed it (hex), if signed.
    pub signed_by: Option<String>,
    /// Whether that key was among the configured ones.
    pub trusted: bool,
    /// When it was installed, seconds since the Unix epoch.
    pub installed_unix: u64,
}

/// `STATE/appliance.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The base.
    pub base: Base,
    /// The current mode.
    pub mode: Mode,
    /// Where the stack was last mounted.
    pub mount: Option<PathBuf>,
    /// The module installed by `release`/`replace-module`.
    pub module: Option<InstalledModule>,
    /// Trusted module keys (hex).
    pub trusted_keys: Vec<String>,
}

/// A state directory.
#[derive(Debug)]
pub struct Appliance {
    dir: PathBuf,
    /// Its state.
    pub state: State,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn absolute(path: &Path) -> Result<PathBuf, ApplianceError> {
    fs::canonicalize(path).map_err(io_err("resolve", path))
}

fn classify_base(path: &Path) -> Result<Base, ApplianceError> {
    let path = absolute(path)?;
    let meta = fs::metadata(&path).map_err(io_err("stat", &path))?;
    if meta.is_dir() {
        Ok(Base::Dir { path })
    } else if meta.is_file() {
        Ok(Base::Image { path })
    } else {
        Err(ApplianceError::BadBase(path))
    }
}

/// Reads a trusted key given as hex or as a `.pub` file.
pub fn resolve_key(text: &str) -> Result<String, ApplianceError> {
    if let Ok(key) = manifest::parse_public_key(text) {
        return Ok(key);
    }
    let path = Path::new(text);
    let contents = fs::read_to_string(path).map_err(io_err("read key", path))?;
    Ok(manifest::parse_public_key(&contents)?)
}

fn mkdir(path: &Path) -> Result<(), ApplianceError> {
    fs::create_dir_all(path).map_err(io_err("mkdir", path))
}

fn sync_dir(path: &Path) -> Result<(), ApplianceError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", path))
}

impl Appliance {
    /// Creates a state directory over `base`.
    pub fn init(dir: &Path, base: &Path, trusted_keys: &[String]) -> Result<Self, ApplianceError> {
        let base = classify_base(base)?;
        mkdir(dir)?;
        let dir = absolute(dir)?;
        for layer in ["module", "home", "work"] {
            mkdir(&dir.join(layer))?;
        }
        let trusted_keys = trusted_keys
            .iter()
            .map(|k| resolve_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        let appliance = Appliance {
            dir,
            state: State {
                base,
                mode: Mode::Idle,
                mount: None,
                module: None,
                trusted_keys,
            },
        };
        appliance.save()?;
        Ok(appliance)
    }

    /// Opens a state directory.
    pub fn open(dir: &Path) -> Result<Self, ApplianceError> {
        let file = dir.join(STATE_FILE);
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ApplianceError::NotInitialised(dir.to_path_buf()));
            }
            Err(e) => return Err(io_err("read", &file)(e)),
        };
        let state = serde_json::from_slice(&bytes).map_err(|e| ApplianceError::BadState {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        Ok(Appliance {
            dir: absolute(dir)?,
            state,
        })
    }

    /// Writes the state file atomically (temp, fsync, rename).
    pub fn save(&self) -> Result<(), ApplianceError> {
        let mut bytes = serde_json::to_vec_pretty(&self.state).unwrap_or_default();
        bytes.push(b'\n');
        let path = self.dir.join(STATE_FILE);
        write_atomic(&path, &bytes, 0o644).map_err(|e| ApplianceError::Io {
            op: "write",
            path,
            source: io::Error::other(e.to_string()),
        })
    }

    /// The module layer.
    pub fn module_dir(&self) -> PathBuf {
        self.dir.join("module")
    }

    /// The home layer.
    pub fn home_dir(&self) -> PathBuf {
        self.dir.join("home")
    }

    fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    fn base_mount(&self) -> PathBuf {
        self.dir.join("base.mnt")
    }

    /// Where the stack is mounted now (in this mount namespace), if it is.
    pub fn mounted_at(&self) -> Option<PathBuf> {
        let target = self.state.mount.as_ref()?;
        is_mount_point(target, Some("overlay")).then(|| target.clone())
    }

    fn refuse_if_mounted(&self) -> Result<(), ApplianceError> {
        match self.mounted_at() {
            Some(at) => Err(ApplianceError::Mounted(at)),
            None => Ok(()),
        }
    }

    /// The base's directory, loop-mounting an image base first.
    fn base_dir(&self) -> Result<PathBuf, ApplianceError> {
        match &self.state.base {
            Base::Dir { path } => Ok(path.clone()),
            Base::Image { path } => {
                let at = self.base_mount();
                mkdir(&at)?;
                if !is_mount_point(&at, None) {
                    let out = std::process::Command::new("mount")
                        .args(["-o", "loop,ro"])
                        .arg(path)
                        .arg(&at)
                        .output()
                        .map_err(io_err("run mount", path))?;
                    if !out.status.success() {
                        return Err(ApplianceError::Command(format!(
                            "mount -o loop,ro {}: {}",
                            path.display(),
                            String::from_utf8_lossy(&out.stderr).trim()
                        )));
                    }
                }
                Ok(at)
            }
        }
    }

    /// Mounts the stack for `mode` at `target`.
    fn mount(&mut self, mode: Mode, target: &Path) -> Result<(), ApplianceError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(ApplianceError::NeedsRoot);
        }
        let target = absolute(target)?;
        let base = self.base_dir()?;
        let (lower, upper) = match mode {
            Mode::Develop => (vec![base], self.module_dir()),
            Mode::Release | Mode::Idle => (vec![self.module_dir(), base], self.home_dir()),
        };
        let work = self.work_dir();
        for path in lower.iter().chain([&upper, &work]) {
            let text = path.to_string_lossy();
            if text.contains([',', ':', '\\']) {
                return Err(ApplianceError::UnmountablePath(path.clone()));
            }
        }
        let lower: Vec<String> = lower
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        // No redirects, metacopy or index: the layers must stay plain
        // trees that can be published and restacked over another base.
        let options = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|source| match source {
            nix::Error::EPERM => ApplianceError::NeedsRoot,
            source => ApplianceError::Mount {
                op: "mount overlay at",
                path: target.clone(),
                source,
            },
        })?;
        self.state.mode = mode;
        self.state.mount = Some(target);
        self.save()
    }

    /// Unmounts the stack and an image base; true if the stack was mounted.
    pub fn umount(&self) -> Result<bool, ApplianceError> {
        let was = match self.mounted_at() {
            Some(at) => {
                nix::mount::umount2(&at, nix::mount::MntFlags::empty()).map_err(|source| {
                    ApplianceError::Mount {
                        op: "unmount",
                        path: at.clone(),
                        source,
                    }
                })?;
                true
            }
            None => false,
        };
        let base = self.base_mount();
        if is_mount_point(&base, None) {
            nix::mount::umount2(&base, nix::mount::MntFlags::empty()).map_err(|source| {
                ApplianceError::Mount {
                    op: "unmount",
                    path: base.clone(),
                    source,
                }
            })?;
        }
        Ok(was)
    }

    /// Unmounts if mounted, runs `change`, and mounts again as before.
    fn with_remount(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<(), ApplianceError>,
    ) -> Result<(), ApplianceError> {
        let remount = self.mounted_at();
        if remount.is_some() {
            self.umount()?;
        }
        change(self)?;
        // The change is on disk before the mount that may fail.
        self.save()?;
        match remount {
            Some(at) => self.mount(self.state.mode, &at),
            None => Ok(()),
        }
    }

    /// `develop`: base ro + module rw at `target`.
    pub fn develop(&mut self, target: &Path) -> Result<(), ApplianceError> {
        self.refuse_if_mounted()?;
        self.mount(Mode::Develop, target)
    }

    /// `release`: installs `module` (verified) and mounts base + module ro
    /// + home rw at `target`.
    pub fn release(&mut self, module: &Path, target: &Path) -> Result<(), ApplianceError> {
        self.refuse_if_mounted()?;
        self.install_module(module)?;
        self.mount(Mode::Release, target)
    }

    /// `replace-module`: installs `module` (verified); home and base stay.
    pub fn replace_module(&mut self, module: &Path) -> Result<(), ApplianceError> {
        // Verify before unmounting: a refused module changes nothing.
        let opened = self.open_module(module)?;
        self.with_remount(|a| a.install_opened(opened))
    }

    /// `reset-home`: erases home; module and base stay.
    pub fn reset_home(&mut self) -> Result<(), ApplianceError> {
        self.with_remount(|a| {
            let home = a.home_dir();
            replace_with_empty(&home)?;
            replace_with_empty(&a.work_dir())
        })
    }

    /// `update-base`: uses `base` from now on; module and home stay.
    pub fn update_base(&mut self, base: &Path) -> Result<(), ApplianceError> {
        let base = classify_base(base)?;
        self.with_remount(|a| {
            a.state.base = base;
            Ok(())
        })
    }

    fn install_module(&mut self, module: &Path) -> Result<(), ApplianceError> {
        let opened = self.open_module(module)?;
        self.install_opened(opened)
    }

    /// Reads and verifies a module file; its payload goes to a temporary
    /// file in the state directory.
    fn open_module(&self, module: &Path) -> Result<OpenedModule, ApplianceError> {
        open_module(module, &self.dir, &self.state.trusted_keys)
    }

    fn install_opened(&mut self, opened: OpenedModule) -> Result<(), ApplianceError> {
        let staged = self.dir.join(".module.new");
        let result = extract_payload(&opened.payload, &staged, &opened.manifest);
        let _ = fs::remove_file(&opened.payload);
        result?;
        exchange_dirs(&staged, &self.module_dir())?;
        remove_tree(&staged)?;
        replace_with_empty(&self.work_dir())?;
        let (signed_by, trusted) = match opened.provenance {
            Provenance::Trusted(k) => (Some(k), true),
            Provenance::SignedUnchecked(k) => (Some(k), false),
            Provenance::Unsigned => (None, false),
        };
        self.state.module = Some(InstalledModule {
            name: opened.manifest.name,
            payload_sha256: opened.manifest.payload_sha256,
            signed_by,
            trusted,
            installed_unix: now_unix(),
        });
        self.save()
    }

    /// `clean`: removes the module layer's files that `patterns` name and
    /// `keep` does not; returns them (relative paths). Whiteouts and
    /// directories stay.
    pub fn clean(
        &self,
        patterns: &[String],
        keep: &[String],
        dry_run: bool,
    ) -> Result<Vec<String>, ApplianceError> {
        self.refuse_if_mounted()?;
        let root = self.module_dir();
        let mut removed = Vec::new();
        for entry in walk(&root)? {
            if entry.kind == EntryKind::Dir || entry.kind == EntryKind::Whiteout {
                continue;
            }
            let hit = patterns
                .iter()
                .any(|p| manifest::pattern_matches(p, &entry.relative));
            let kept = keep
                .iter()
                .any(|p| manifest::pattern_matches(p, &entry.relative));
            if hit && !kept {
                if !dry_run {
                    let path = root.join(&entry.relative);
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
                removed.push(entry.relative);
            }
        }
        Ok(removed)
    }

    /// `publish`: writes the module layer to `out`.
    pub fn publish(
        &self,
        out: &Path,
        name: &str,
        key: Option<&ModuleKey>,
    ) -> Result<Manifest, ApplianceError> {
        self.refuse_if_mounted()?;
        publish(&self.module_dir(), out, name, key)
    }

    /// Sizes and counts of the layers, for `status`.
    pub fn status(&self) -> Result<serde_json::Value, ApplianceError> {
        let layer = |path: PathBuf| -> Result<serde_json::Value, ApplianceError> {
            let entries = walk(&path)?;
            let bytes: u64 = entries.iter().map(|e| e.bytes).sum();
            let files = entries.iter().filter(|e| e.kind == EntryKind::File).count();
            let whiteouts = entries
                .iter()
                .filter(|e| e.kind == EntryKind::Whiteout)
                .count();
            Ok(serde_json::json!({
                "path": path,
                "bytes": bytes,
                "files": files,
                "whiteouts": whiteouts,
            }))
        };
        let base = match &self.state.base {
            Base::Dir { path } => serde_json::json!({"kind": "dir", "path": path}),
            Base::Image { path } => serde_json::json!({
                "kind": "image",
                "path": path,
                "bytes": fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            }),
        };
        Ok(serde_json::json!({
            "mode": self.state.mode,
            "mounted_at": self.mounted_at(),
            "base": base,
            "module": layer(self.module_dir())?,
            "home": layer(self.home_dir())?,
            "installed_module": self.state.module,
            "trusted_keys": self.state.trusted_keys,
        }))
    }
}

/// A verified module whose payload waits in a temporary file.
#[derive(Debug)]
pub struct OpenedModule {
    /// Its manifest.
    pub manifest: Manifest,
    /// Who signed it.
    pub provenance: Provenance,
    /// The payload tar (a temporary file; the caller removes it).
    pub payload: PathBuf,
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads `module`, checks its signature against `trusted_keys` and its
/// payload against the manifest; the payload lands in `scratch`.
pub fn open_module(
    module: &Path,
    scratch: &Path,
    trusted_keys: &[String],
) -> Result<OpenedModule, ApplianceError> {
    let file = File::open(module).map_err(io_err("open", module))?;
    let payload = scratch.join(".payload.tmp");
    let result = read_module(file, &payload, trusted_keys);
    if result.is_err() {
        let _ = fs::remove_file(&payload);
    }
    result
}

fn read_module(
    file: File,
    payload: &Path,
    trusted_keys: &[String],
) -> Result<OpenedModule, ApplianceError> {
    let archive_err = |e: io::Error| ApplianceError::Archive(e.to_string());
    let mut archive = tar::Archive::new(file);
    let mut manifest_bytes = None;
    let mut signature_bytes = None;
    let mut digest = None;
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let name = entry
            .path()
            .map_err(archive_err)?
            .to_string_lossy()
            .into_owned();
        match name.as_str() {
            MANIFEST_MEMBER | SIGNATURE_MEMBER => {
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(MAX_MANIFEST_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
                    .map_err(archive_err)?;
                let slot = if name == MANIFEST_MEMBER {
                    &mut manifest_bytes
                } else {
                    &mut signature_bytes
                };
                if slot.replace(bytes).is_some() {
                    return Err(ApplianceError::Archive(format!("two {name} members")));
                }
            }
            PAYLOAD_MEMBER => {
                if digest.is_some() {
                    return Err(ApplianceError::Archive("two payloads".into()));
                }
                let out = File::create(payload).map_err(io_err("create", payload))?;
                let mut hashing = Hashing {
                    inner: io::BufWriter::new(out),
                    hasher: Sha256::new(),
                    bytes: 0,
                };
                io::copy(&mut entry, &mut hashing).map_err(io_err("write", payload))?;
                hashing.flush().map_err(io_err("write", payload))?;
                digest = Some((hashing.bytes, hex_encode(&hashing.hasher.finalize())));
            }
            other => {
                return Err(ApplianceError::Archive(format!(
                    "unexpected member {other:?}"
                )));
            }
        }
    }
    let manifest_bytes =
        manifest_bytes.ok_or_else(|| ApplianceError::Archive("no manifest.json".into()))?;
    let signature = signature_bytes
        .map(|b| ModuleSignature::parse(&b))
        .transpose()?;
    // The signature first: nothing of an unauthenticated manifest is used.
    let provenance = manifest::check_signature(&manifest_bytes, signature.as_ref(), trusted_keys)?;
    let manifest = Manifest::parse(&manifest_bytes)?;
    let (bytes, sha256) = digest.ok_or_else(|| ApplianceError::Archive("no payload.tar".into()))?;
    manifest::check_payload(&manifest, bytes, &sha256)?;
    Ok(OpenedModule {
        manifest,
        provenance,
        payload: payload.to_path_buf(),
    })
}

/// Unpacks a verified payload into `dest` (made anew): whiteouts become
/// character devices 0:0 again, the manifest's opaque directories get
/// their xattr.
fn extract_payload(payload: &Path, dest: &Path, manifest: &Manifest) -> Result<(), ApplianceError> {
    remove_tree(dest)?;
    mkdir(dest)?;
    let archive_err = |e: io::Error| ApplianceError::Archive(e.to_string());
    let file = File::open(payload).map_err(io_err("open", payload))?;
    let mut archive = tar::Archive::new(file);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    let canonical_dest = absolute(dest)?;
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let major = entry.header().device_major().ok().flatten();
            let minor = entry.header().device_minor().ok().flatten();
            let relative = entry
                .path()
                .map_err(archive_err)?
                .to_string_lossy()
                .into_owned();
            if !(kind.is_character_special() && major == Some(0) && minor == Some(0)) {
                return Err(ApplianceError::Archive(format!(
                    "device or fifo {relative:?} in a module (only whiteouts are allowed)"
                )));
            }
            make_whiteout(&canonical_dest, &relative)?;
            continue;
        }
        if !entry.unpack_in(dest).map_err(archive_err)? {
            return Err(ApplianceError::Archive(
                "a path climbs out of the module".into(),
            ));
        }
    }
    for relative in &manifest.opaque_dirs {
        let path = dest.join(relative);
        let inside = fs::canonicalize(&path)
            .map(|p| p.starts_with(&canonical_dest))
            .unwrap_or(false);
        if !inside || !path.is_dir() {
            return Err(ApplianceError::Archive(format!(
                "opaque directory {relative:?} is not a directory of the module"
            )));
        }
        xattr::set(&path, OPAQUE_XATTR, b"y").map_err(io_err("set opaque xattr on", &path))?;
    }
    Ok(())
}

fn make_whiteout(dest: &Path, relative: &str) -> Result<(), ApplianceError> {
    let relative = relative.trim_start_matches("./").trim_end_matches('/');
    if !manifest::is_safe_relative(relative) {
        return Err(ApplianceError::Module(ModuleError::UnsafePath(
            relative.to_owned(),
        )));
    }
    let path = dest.join(relative);
    let parent = path.parent().unwrap_or(dest);
    mkdir(parent)?;
    // A symlinked parent could point outside the module.
    if !absolute(parent)?.starts_with(dest) {
        return Err(ApplianceError::Module(ModuleError::UnsafePath(
            relative.to_owned(),
        )));
    }
    use nix::sys::stat::{Mode as FileMode, SFlag, makedev, mknod};
    mknod(&path, SFlag::S_IFCHR, FileMode::empty(), makedev(0, 0)).map_err(|source| {
        ApplianceError::Mount {
            op: "mknod whiteout",
            path: path.clone(),
            source,
        }
    })
}

/// Builds the module file for the layer at `layer`.
pub fn publish(
    layer: &Path,
    out: &Path,
    name: &str,
    key: Option<&ModuleKey>,
) -> Result<Manifest, ApplianceError> {
    let entries = walk(layer)?;
    let whiteouts = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Whiteout)
        .map(|e| e.relative.clone())
        .collect();
    let opaque_dirs = entries
        .iter()
        .filter(|e| e.opaque)
        .map(|e| e.relative.clone())
        .collect();
    let files = entries.iter().filter(|e| e.kind == EntryKind::File).count() as u64;

    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module".into());
    let payload_path = out_dir.join(format!(".{file_name}.payload.tmp"));
    let tmp_path = out_dir.join(format!(".{file_name}.tmp"));
    let result = (|| {
        let payload = File::create(&payload_path).map_err(io_err("create", &payload_path))?;
        let mut builder = tar::Builder::new(Hashing {
            inner: io::BufWriter::new(payload),
            hasher: Sha256::new(),
            bytes: 0,
        });
        builder.follow_symlinks(false);
        builder
            .append_dir_all("", layer)
            .map_err(io_err("archive", layer))?;
        let mut hashing = builder
            .into_inner()
            .map_err(io_err("write", &payload_path))?;
        hashing.flush().map_err(io_err("write", &payload_path))?;
        let manifest = Manifest {
            format: manifest::FORMAT.into(),
            name: name.to_owned(),
            created_unix: now_unix(),
            payload_sha256: hex_encode(&hashing.hasher.finalize()),
            payload_bytes: hashing.bytes,
            files,
            whiteouts,
            opaque_dirs,
        };
        let manifest_bytes = manifest.emit();
        let signature = key.map(|k| k.sign(&manifest_bytes).emit());

        let out_file = File::create(&tmp_path).map_err(io_err("create", &tmp_path))?;
        let mut builder = tar::Builder::new(io::BufWriter::new(out_file));
        let mut append = |member: &str, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(manifest.created_unix);
            header.set_cksum();
            builder
                .append_data(&mut header, member, bytes)
                .map_err(io_err("write", &tmp_path))
        };
        append(MANIFEST_MEMBER, &manifest_bytes)?;
        if let Some(sig) = &signature {
            append(SIGNATURE_MEMBER, sig)?;
        }
        builder
            .append_path_with_name(&payload_path, PAYLOAD_MEMBER)
            .map_err(io_err("write", &tmp_path))?;
        let writer = builder.into_inner().map_err(io_err("write", &tmp_path))?;
        let file = writer
            .into_inner()
            .map_err(|e| io_err("write", &tmp_path)(e.into_error()))?;
        file.sync_all().map_err(io_err("fsync", &tmp_path))?;
        fs::rename(&tmp_path, out).map_err(io_err("rename", out))?;
        sync_dir(&out_dir)?;
        Ok(manifest)
    })();
    let _ = fs::remove_file(&payload_path);
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// What kind of entry a layer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Dir,
    File,
    Symlink,
    Whiteout,
    Other,
}

#[derive(Debug)]
struct LayerEntry {
    relative: String,
    kind: EntryKind,
    bytes: u64,
    opaque: bool,
}

/// Every entry below `root` (not following symlinks), parents first.
fn walk(root: &Path) -> Result<Vec<LayerEntry>, ApplianceError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut children: Vec<_> = fs::read_dir(&dir)
            .map_err(io_err("read dir", &dir))?
            .collect::<Result<_, _>>()
            .map_err(io_err("read dir", &dir))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let path = child.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
            let relative = format!("{prefix}{}", child.file_name().to_string_lossy());
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File
            } else if ft.is_symlink() {
                EntryKind::Symlink
            } else if ft.is_char_device() && meta.rdev() == 0 {
                EntryKind::Whiteout
            } else {
                EntryKind::Other
            };
            let opaque = kind == EntryKind::Dir
                && xattr::get(&path, OPAQUE_XATTR)
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == b"y");
            if kind == EntryKind::Dir {
                stack.push((path, format!("{relative}/")));
            }
            out.push(LayerEntry {
                relative,
                kind,
                bytes: if kind == EntryKind::File {
                    meta.len()
                } else {
                    0
                },
                opaque,
            });
        }
    }
    Ok(out)
}

fn remove_tree(path: &Path) -> Result<(), ApplianceError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Swaps two directories in one step (`renameat2(RENAME_EXCHANGE)`), or
/// renames `new` into place when `current` does not exist.
fn exchange_dirs(new: &Path, current: &Path) -> Result<(), ApplianceError> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    if current.exists() {
        renameat2(
            AT_FDCWD,
            new,
            AT_FDCWD,
            current,
            RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|source| ApplianceError::Mount {
            op: "exchange with",
            path: current.to_path_buf(),
            source,
        })?;
    } else {
        fs::rename(new, current).map_err(io_err("rename", current))?;
    }
    if let Some(parent) = current.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `dir` by an empty directory of the same mode in one step.
fn replace_with_empty(dir: &Path) -> Result<(), ApplianceError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fresh = dir.with_file_name(format!(".{name}.new"));
    remove_tree(&fresh)?;
    mkdir(&fresh)?;
    if let Ok(meta) = fs::metadata(dir) {
        let _ = fs::set_permissions(&fresh, fs::Permissions::from_mode(meta.mode() & 0o7777));
    }
    exchange_dirs(&fresh, dir)?;
    remove_tree(&fresh)
}

/// Whether `path` is a mount point in this mount namespace (of `fstype`,
/// if given), from `/proc/self/mountinfo`.
fn is_mount_point(path: &Path, fstype: Option<&str>) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.to_string_lossy();
    info.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = fields.get(4).map(|p| unescape_mountinfo(p));
        // After the optional fields, "-" then the file-system type.
        let kind = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|i| fields.get(i + 1));
        point.as_deref() == Some(&*target) && fstype.is_none_or(|t| kind == Some(&t))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes.get(i), octal) {
            (Some(b'\\'), Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (Some(&b), _) => {
                out.push(b);
                i += 1;
            }
            (None, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Loads a module key, refusing a file others can read.
pub fn load_key(path: &Path) -> Result<ModuleKey, ApplianceError> {
    let meta = fs::metadata(path).map_err(io_err("stat", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ApplianceError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    Ok(ModuleKey::from_pkcs8(&bytes)?)
}

/// `keygen`: writes the key (0600, atomically) and `OUT.pub`; returns the
/// public key.
pub fn keygen(out: &Path) -> Result<String, ApplianceError> {
    let (key, pkcs8) = ModuleKey::generate()?;
    let write = |path: &Path, bytes: &[u8], mode: u32| {
        write_atomic(path, bytes, mode).map_err(|e| ApplianceError::Io {
            op: "write",
            path: path.to_path_buf(),
            source: io::Error::other(e.to_string()),
        })
    };
    write(out, &pkcs8, 0o600)?;
    let public = key.public_key_hex();
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    write(
        Path::new(&pub_path),
        format!("{public}\n").as_bytes(),
        0o644,
    )?;
    Ok(public)
}

fn run_command(command: ApplianceCommand) -> Result<(), ApplianceError> {
    match command {
        ApplianceCommand::Init {
            base,
            dir,
            trusted_keys,
        } => {
            let a = Appliance::init(&dir, &base, &trusted_keys)?;
            println!("initialised {} over {:?}", dir.display(), a.state.base);
        }
        ApplianceCommand::Trust { dir, key } => {
            let mut a = Appliance::open(&dir)?;
            let key = resolve_key(&key)?;
            if !a.state.trusted_keys.contains(&key) {
                a.state.trusted_keys.push(key.clone());
                a.save()?;
            }
            println!("trusting module key {key}");
        }
        ApplianceCommand::Develop { dir, mount } => {
            Appliance::open(&dir)?.develop(&mount)?;
            println!("develop: base (ro) + module (rw) at {}", mount.display());
        }
        ApplianceCommand::Umount { dir } => {
            let a = Appliance::open(&dir)?;
            if a.umount()? {
                println!("unmounted");
            } else {
                println!("not mounted");
            }
        }
        ApplianceCommand::Clean {
            dir,
            list,
            extra,
            keep,
            dry_run,
            show_list,
        } => {
            if show_list {
                for pattern in DEFAULT_CLEAN_LIST {
                    println!("{pattern}");
                }
                return Ok(());
            }
            let mut patterns = match list {
                Some(path) => manifest::parse_clean_list(
                    &fs::read_to_string(&path).map_err(io_err("read", &path))?,
                ),
                None => DEFAULT_CLEAN_LIST.iter().map(|p| p.to_string()).collect(),
            };
            patterns.extend(extra);
            let removed = Appliance::open(&dir)?.clean(&patterns, &keep, dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for path in &removed {
                println!("{verb} {path}");
            }
            println!("{verb} {} file(s)", removed.len());
        }
        ApplianceCommand::Publish {
            dir,
            out,
            key,
            name,
        } => {
            let key = key.as_deref().map(load_key).transpose()?;
            let name = name.unwrap_or_else(|| {
                out.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "module".into())
            });
            let m = Appliance::open(&dir)?.publish(&out, &name, key.as_ref())?;
            println!(
                "published {} ({} files, {} whiteouts, payload {} bytes, sha256 {}){}",
                out.display(),
                m.files,
                m.whiteouts.len(),
                m.payload_bytes,
                m.payload_sha256,
                match &key {
                    Some(k) => format!(", signed by {}", k.public_key_hex()),
                    None => ", unsigned".into(),
                }
            );
        }
        ApplianceCommand::Keygen { out } => {
            let public = keygen(&out)?;
            println!("{public}");
        }
        ApplianceCommand::Release { dir, module, mount } => {
            let mut a = Appliance::open(&dir)?;
            a.release(&module, &mount)?;
            println!(
                "release: base + module {} (ro) + home (rw) at {}",
                module.display(),
                mount.display()
            );
        }
        ApplianceCommand::ResetHome { dir } => {
            Appliance::open(&dir)?.reset_home()?;
            println!("home erased");
        }
        ApplianceCommand::ReplaceModule { dir, module } => {
            Appliance::open(&dir)?.replace_module(&module)?;
            println!("module replaced by {}", module.display());
        }
        ApplianceCommand::UpdateBase { dir, base } => {
            Appliance::open(&dir)?.update_base(&base)?;
            println!("base is now {}", base.display());
        }
        ApplianceCommand::Status { dir, json } => {
            let status = Appliance::open(&dir)?.status()?;
            if json {
                println!("{status:#}");
            } else {
                print_status(&status);
            }
        }
    }
    Ok(())
}

fn print_status(s: &serde_json::Value) {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!("mode:    {}", text(&s["mode"]));
    println!("mounted: {}", text(&s["mounted_at"]));
    println!(
        "base:    {} {}",
        text(&s["base"]["kind"]),
        text(&s["base"]["path"])
    );
    for layer in ["module", "home"] {
        let l = &s[layer];
        println!(
            "{layer:<7}  {} bytes in {} files, {} whiteouts ({})",
            l["bytes"],
            l["files"],
            l["whiteouts"],
            text(&l["path"])
        );
    }
    let m = &s["installed_module"];
    if !m.is_null() {
        println!(
            "installed module: {} sha256 {} signed by {} (trusted: {})",
            text(&m["name"]),
            text(&m["payload_sha256"]),
            text(&m["signed_by"]),
            m["trusted"]
        );
    }
}

/// Runs an appliance subcommand; errors go to stderr (exit status 1, 3
/// for a refused module).
pub fn run(command: ApplianceCommand) -> ExitCode {
    match run_command(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wow-node appliance: {e}");
            match e {
                ApplianceError::Module(_) => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/x\\"), "/x\\");
        assert_eq!(unescape_mountinfo("/x\\12"), "/x\\12");
    }
}
