//! Signed self-update, the node's I/O half ([`wow_core::update`] is the
//! logic): `wow-node release keygen|publish`, the [`Updater`] that looks
//! for a newer release in the DHT, downloads and verifies it, the atomic
//! swap of the binary, the exec that keeps the TAP device and UDP socket
//! open ([`crate::fdpass`]), and the watchdog that rolls a new binary back
//! when it does not report healthy in time.
//!
//! Files, in `STATE_DIR/release/`: `publish.manifest` and `publish.bin`
//! (staged by `wow-node release publish` for the running node to publish),
//! `installed` (`VERSION SHA256` of the binary the last update installed:
//! the running version when the executable still has that digest) and
//! `refused` (versions rolled back, one per line, never taken again). The
//! previous binary is kept beside the executable as `NAME.prev`.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use wow_core::core::Core;
use wow_core::update::{
    Download, Manifest, Offer, Publication, Refusal, ReleaseKey, UpdateError, UpdateStatus,
    Version, check_release, public_key_from_hex, to_hex,
};

use crate::fdpass;

/// Directory of the release files in the state directory.
pub const RELEASE_DIR: &str = "release";
const STAGED_MANIFEST: &str = "publish.manifest";
const STAGED_BINARY: &str = "publish.bin";
const INSTALLED_FILE: &str = "installed";
const REFUSED_FILE: &str = "refused";
/// Set for the new binary after an update: `FROM TO HEALTH_SECS`.
pub const ENV_UPDATED: &str = "WOW_NODE_UPDATED";
/// Set for the new binary after an update: the NAT depth the old one
/// measured (`N`, or `unknown`), so that it starts without a traceroute.
pub const ENV_NAT_DEPTH: &str = "WOW_NODE_NAT_DEPTH";
/// Set for the old binary after a rollback: the version refused.
pub const ENV_ROLLED_BACK: &str = "WOW_NODE_ROLLED_BACK";
/// DHT lifetime of a release's records (the overlay's maximum).
const RELEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The publisher puts its records again this often.
const REPUBLISH: Duration = Duration::from_secs(3600);
/// Puts per tick while publishing.
const PUT_BATCH: u32 = 128;
/// Chunk gets in flight while downloading.
const WINDOW: usize = 64;
/// Times a chunk is asked again before the URL (if any) is tried.
const MAX_AGAIN: u32 = 8;
/// The updater's tick while publishing or downloading.
const TICK: Duration = Duration::from_millis(200);

/// `wow-node release …`.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Create a release key (Ed25519): the private key to FILE (0600,
    /// PKCS#8 PEM), the public key (hex, for `[update] keys`) printed.
    Keygen {
        /// The key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign BINARY as VERSION and have the running node publish it in
    /// the DHT (manifest and chunks), through its control socket.
    Publish {
        /// The release key file (from `release keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The new wow-node binary.
        #[arg(long)]
        binary: PathBuf,
        /// Its version, MAJOR.MINOR.PATCH (above the nodes' running one).
        #[arg(long)]
        version: String,
        /// The channel.
        #[arg(long, default_value = "stable")]
        channel: String,
        /// A plain HTTP URL serving the same binary (second source).
        #[arg(long)]
        url: Option<String>,
        /// The running node's state directory.
        #[arg(long, default_value = "/var/lib/wow-node")]
        state_dir: PathBuf,
    },
}

/// Runs `wow-node release …`.
pub fn run(command: ReleaseCommand) -> ExitCode {
    let result = match command {
        ReleaseCommand::Keygen { out } => keygen(&out),
        ReleaseCommand::Publish {
            key,
            binary,
            version,
            channel,
            url,
            state_dir,
        } => publish(
            &key,
            &binary,
            &version,
            &channel,
            url.as_deref(),
            &state_dir,
        ),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wow-node release: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(out: &Path) -> Result<String, String> {
    if out.exists() {
        return Err(format!("{} exists: not overwritten", out.display()));
    }
    let key = ReleaseKey::generate().map_err(|e| e.to_string())?;
    let pem = ipsec_ca::key::to_pem("PRIVATE KEY", key.pkcs8());
    ipsec_ca::file_store::write_atomic(out, pem.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    Ok(format!("{}\n", to_hex(&key.public_key())))
}

fn read_key(path: &Path) -> Result<ReleaseKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let der = ipsec_ca::key::from_pem("PRIVATE KEY", &text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    ReleaseKey::from_pkcs8(&der).map_err(|e| format!("{}: {e}", path.display()))
}

fn publish(
    key: &Path,
    binary: &Path,
    version: &str,
    channel: &str,
    url: Option<&str>,
    state_dir: &Path,
) -> Result<String, String> {
    let key = read_key(key)?;
    let version: Version = version
        .parse()
        .map_err(|e| format!("--version {version}: {e}"))?;
    let bytes =
        std::fs::read(binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    let p = Publication::new(&key, channel, version, &bytes, url).map_err(|e| e.to_string())?;
    let dir = state_dir.join(RELEASE_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        ipsec_ca::file_store::write_atomic(&dir.join(name), bytes, 0o600)
            .map_err(|e| format!("{name}: {e}"))
    };
    write(STAGED_BINARY, &bytes)?;
    write(STAGED_MANIFEST, &p.signed)?;
    let answer = crate::control::request(state_dir, "release publish\n", 10)
        .map_err(|e| format!("cannot reach the node behind {}: {e}", state_dir.display()))?;
    if answer.starts_with("error") {
        return Err(answer.trim().to_string());
    }
    Ok(answer)
}

/// SHA-256 of a file, hex.
fn file_digest(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(to_hex(
        ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
    ))
}

/// The running version: the one the last update installed if the
/// executable is still that binary, else the crate's.
pub fn running_version(state_dir: &Path) -> Version {
    let built = env!("CARGO_PKG_VERSION").parse().unwrap_or_default();
    // Just exec'd by an update that verified this binary: no need to
    // hash it again (the exec's gap is the guest's).
    if let Some(v) = std::env::var(ENV_UPDATED)
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<Version>().ok())
    {
        return v.max(built);
    }
    let Ok(text) = std::fs::read_to_string(state_dir.join(RELEASE_DIR).join(INSTALLED_FILE)) else {
        return built;
    };
    let mut words = text.split_whitespace();
    let (Some(version), Some(digest)) = (words.next(), words.next()) else {
        return built;
    };
    let exe = std::env::current_exe().ok();
    match (
        version.parse::<Version>(),
        exe.and_then(|e| file_digest(&e)),
    ) {
        (Ok(v), Some(d)) if d == digest => v.max(built),
        _ => built,
    }
}

fn refused_versions(state_dir: &Path) -> Vec<Version> {
    std::fs::read_to_string(state_dir.join(RELEASE_DIR).join(REFUSED_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// What a DHT get was for.
#[derive(Debug, Clone, Copy)]
enum Get {
    Manifest,
    Chunk(u32),
}

/// A verified binary to install.
#[derive(Debug)]
pub struct Ready {
    /// Its manifest.
    pub manifest: Manifest,
    /// The binary (size and digest checked).
    pub binary: Vec<u8>,
}

/// The self-update of a running node: looks for newer releases, fetches
/// and verifies them, and publishes the release staged by `release
/// publish`.
#[derive(Debug)]
pub struct Updater {
    keys: Vec<[u8; 32]>,
    channel: String,
    check: Duration,
    state_dir: PathBuf,
    running: Version,
    refused: Vec<Version>,
    check_at: Instant,
    tick_at: Instant,
    gets: HashMap<u64, Get>,
    download: Option<Download>,
    again: HashMap<u32, u32>,
    http: Option<tokio::sync::oneshot::Receiver<Result<Vec<u8>, String>>>,
    serving: Option<Publication>,
    put_cursor: u32,
    republish_at: Instant,
    /// What `status` shows.
    pub status: UpdateStatus,
}

impl Updater {
    /// The updater of `[update]`; keys already parsed.
    pub fn new(
        now: Instant,
        keys: Vec<[u8; 32]>,
        channel: &str,
        check: Duration,
        state_dir: &Path,
    ) -> Updater {
        let running = running_version(state_dir);
        let mut status = UpdateStatus {
            channel: channel.to_string(),
            running: running.to_string(),
            state: "idle".into(),
            pid: std::process::id(),
            ..UpdateStatus::default()
        };
        if let Ok(text) = std::env::var(ENV_UPDATED) {
            status.updated_from = text.split_whitespace().next().map(str::to_string);
        }
        if let Ok(v) = std::env::var(ENV_ROLLED_BACK) {
            status.rolled_back = Some(v);
        }
        Updater {
            keys,
            channel: channel.to_string(),
            check: check.max(Duration::from_secs(1)),
            state_dir: state_dir.to_path_buf(),
            running,
            refused: refused_versions(state_dir),
            // The first look soon after start (the ring needs a moment).
            check_at: now + Duration::from_secs(2),
            tick_at: now,
            gets: HashMap::new(),
            download: None,
            again: HashMap::new(),
            http: None,
            serving: None,
            put_cursor: 0,
            republish_at: now,
            status,
        }
    }

    /// The running version.
    pub fn running(&self) -> Version {
        self.running
    }

    /// When [`Updater::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Instant {
        let busy = self
            .download
            .as_ref()
            .is_some_and(|d| d.manifest().chunks_in_dht())
            || self
                .serving
                .as_ref()
                .is_some_and(|p| self.put_cursor <= dht_chunks(p));
        if busy {
            return self.tick_at;
        }
        self.check_at.min(if self.serving.is_some() {
            self.republish_at
        } else {
            self.check_at
        })
    }

    /// Looks for a release, asks for chunks, publishes a batch.
    pub fn handle_timeout<S: dhcp_virt::LeaseStore>(&mut self, core: &mut Core<S>, now: Instant) {
        self.tick_at = now + TICK;
        if now >= self.check_at {
            self.check_at = now + self.check;
            if !self.keys.is_empty()
                && let Some(id) = core.dht_get_values(now, "release", self.channel.as_bytes())
            {
                self.gets.insert(id, Get::Manifest);
            }
        }
        self.ask_chunks(core, now);
        self.publish_batch(core, now);
    }

    fn ask_chunks<S: dhcp_virt::LeaseStore>(&mut self, core: &mut Core<S>, now: Instant) {
        let Some(download) = self
            .download
            .as_mut()
            .filter(|d| d.manifest().chunks_in_dht())
        else {
            return;
        };
        let suffix = |m: &Manifest, i| m.chunk_suffix(i);
        for index in download.wanted(WINDOW) {
            let s = suffix(download.manifest(), index);
            match core.dht_get_values(now, "release-chunk", &s) {
                Some(id) => {
                    self.gets.insert(id, Get::Chunk(index));
                }
                None => download.lost(index),
            }
        }
        self.status.chunks_verified = download.verified();
    }

    fn publish_batch<S: dhcp_virt::LeaseStore>(&mut self, core: &mut Core<S>, now: Instant) {
        let Some(p) = &self.serving else {
            return;
        };
        if now >= self.republish_at {
            self.republish_at = now + REPUBLISH;
            self.put_cursor = 0;
        }
        let n = dht_chunks(p);
        let end = self.put_cursor.saturating_add(PUT_BATCH).min(n);
        let mut refused = 0u32;
        for i in self.put_cursor..end {
            if let Some(chunk) = p.chunk(i)
                && !core.dht_put_value(
                    now,
                    "release-chunk",
                    &p.manifest.chunk_suffix(i),
                    chunk,
                    RELEASE_TTL,
                )
            {
                refused += 1;
            }
        }
        if refused > 0 {
            tracing::warn!(refused, "release chunks refused by the overlay");
        }
        self.put_cursor = end;
        // The manifest last, once every chunk is out.
        if self.put_cursor == n {
            let channel = p.manifest.channel.clone();
            if !core.dht_put_value(now, "release", channel.as_bytes(), &p.signed, RELEASE_TTL) {
                tracing::warn!("release manifest refused by the overlay");
            }
            tracing::info!(version = %p.manifest.version, chunks = n, "release published in the DHT");
            self.put_cursor = n + 1;
        }
    }

    /// `release publish` on the control socket: publishes the staged
    /// release (the manifest's signature is left to readers; the node
    /// checks that it describes the staged binary).
    pub fn publish_staged(&mut self, now: Instant) -> Result<String, String> {
        let dir = self.state_dir.join(RELEASE_DIR);
        let signed = std::fs::read(dir.join(STAGED_MANIFEST)).map_err(|e| e.to_string())?;
        let binary = std::fs::read(dir.join(STAGED_BINARY)).map_err(|e| e.to_string())?;
        let p = Publication::from_signed(signed, &binary).map_err(|e| e.to_string())?;
        let text = format!(
            "publishing {} on {:?}: {} bytes, {} chunks, SHA-256 {}\n",
            p.manifest.version,
            p.manifest.channel,
            p.manifest.size,
            p.chunks(),
            to_hex(&p.manifest.digest)
        );
        self.status.publishing = Some(p.manifest.version.to_string());
        self.serving = Some(p);
        self.put_cursor = 0;
        self.republish_at = now + REPUBLISH;
        Ok(text)
    }

    /// Values for one of our gets; a verified binary when the download
    /// completes.
    pub fn handle_values<S: dhcp_virt::LeaseStore>(
        &mut self,
        core: &mut Core<S>,
        now: Instant,
        id: u64,
        values: &[Vec<u8>],
    ) -> Option<Ready> {
        match self.gets.remove(&id)? {
            Get::Manifest => {
                self.on_manifests(values);
                self.ask_chunks(core, now);
                None
            }
            Get::Chunk(index) => {
                let download = self.download.as_mut()?;
                match download.offer_chunk(index, values.iter().map(Vec::as_slice)) {
                    Ok(Offer::Complete(binary)) => {
                        let manifest = download.manifest().clone();
                        self.download = None;
                        self.status.state = "installing".into();
                        Some(Ready { manifest, binary })
                    }
                    Ok(Offer::Again(i)) => {
                        let n = self.again.entry(i).or_default();
                        *n += 1;
                        if *n > MAX_AGAIN {
                            self.try_url();
                        }
                        None
                    }
                    Ok(_) => None,
                    Err(e) => {
                        self.refuse(&e);
                        self.download = None;
                        None
                    }
                }
            }
        }
    }

    fn refuse(&mut self, e: &UpdateError) {
        match e {
            // The release running now: seen at every check, not news.
            UpdateError::NotNewer { offered, running } if offered == running => {
                tracing::debug!(error = %e, kind = e.kind(), "release refused");
                return;
            }
            _ => tracing::warn!(error = %e, kind = e.kind(), "release refused"),
        }
        self.status.last_refusal = Some(Refusal::of(e));
        self.status.state = "idle".into();
        self.status.offered = None;
    }

    /// Manifests from the DHT: the newest valid one above ours (and not
    /// rolled back) is downloaded.
    fn on_manifests(&mut self, values: &[Vec<u8>]) {
        let mut best: Option<Manifest> = None;
        for v in values {
            match check_release(v, &self.keys, &self.channel, self.running) {
                Ok(m) if self.refused.contains(&m.version) => {
                    tracing::debug!(version = %m.version, "release rolled back before: not taken");
                }
                Ok(m) => {
                    if best.as_ref().is_none_or(|b| m.version > b.version) {
                        best = Some(m);
                    }
                }
                Err(e) => self.refuse(&e),
            }
        }
        let Some(m) = best else {
            return;
        };
        if self.status.state == "installing" {
            return;
        }
        let busy = self
            .download
            .as_ref()
            .is_some_and(|d| d.manifest().version >= m.version);
        if busy {
            return;
        }
        tracing::info!(version = %m.version, size = m.size, chunks = m.chunks(), "downloading a release");
        self.status.state = "downloading".into();
        self.status.offered = Some(m.version.to_string());
        self.status.chunks = m.chunks();
        self.status.chunks_verified = 0;
        self.again.clear();
        self.http = None;
        let url_only = !m.chunks_in_dht();
        self.download = Some(Download::new(m));
        if url_only {
            self.try_url();
        }
    }

    /// The second source: the manifest's URL, fetched once per download.
    fn try_url(&mut self) {
        if self.http.is_some() {
            return;
        }
        let Some(url) = self
            .download
            .as_ref()
            .and_then(|d| d.manifest().url.clone())
        else {
            return;
        };
        tracing::info!(%url, "release chunks missing in the DHT: fetching the URL");
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(http_get(&url).await);
        });
        self.http = Some(rx);
    }

    /// The URL's answer, when one was asked (pending otherwise).
    pub async fn http_done(updater: Option<&mut Updater>) -> Result<Vec<u8>, String> {
        match updater.and_then(|u| u.http.as_mut()) {
            Some(rx) => rx.await.unwrap_or_else(|_| Err("fetch task ended".into())),
            None => std::future::pending().await,
        }
    }

    /// The binary from the URL: checked against the manifest.
    pub fn handle_http(&mut self, result: Result<Vec<u8>, String>) -> Option<Ready> {
        self.http = None;
        let binary = match result {
            Ok(b) => b,
            Err(e) => {
                // The next check starts the download again.
                tracing::warn!(error = %e, "release URL failed");
                self.download = None;
                self.status.state = "idle".into();
                self.status.offered = None;
                return None;
            }
        };
        let download = self.download.take()?;
        // Size and SHA-256 are checked by `install`, off the event loop
        // (hashing megabytes here would stall the guest's traffic).
        self.status.state = "installing".into();
        Some(Ready {
            manifest: download.manifest().clone(),
            binary,
        })
    }

    /// Installing failed: back to idle (the old binary stays); a binary
    /// that does not match its manifest is a refusal.
    pub fn install_failed(&mut self, error: &InstallError) {
        match error {
            InstallError::Refused(e) => self.refuse(e),
            InstallError::Io(e) => {
                tracing::error!(error = %e, "release not installed");
                self.status.state = "idle".into();
                self.status.offered = None;
            }
        }
    }
}

/// Chunks put in the DHT: only where the manifest says readers look.
fn dht_chunks(p: &Publication) -> u32 {
    if p.manifest.chunks_in_dht() {
        p.chunks()
    } else {
        0
    }
}

/// A plain `http://host[:port]/path` GET (HTTP/1.0, the whole body). The
/// binary is checked against the signed manifest, so the transport need
/// not be trusted.
async fn http_get(url: &str) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are fetched")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| format!("{address}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .take(wow_core::update::MAX_BINARY_LEN + 65_536)
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no HTTP header")?;
        let head = String::from_utf8_lossy(&response[..end]);
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(format!("HTTP status {status}"));
        }
        Ok(response.split_off(end + 4))
    };
    tokio::time::timeout(Duration::from_secs(300), fetch)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The descriptors named in [`fdpass::ENV_FDS`], adopted (each checked;
/// one that fails is left alone and logged).
pub fn inherited() -> Inherited {
    let Ok(text) = std::env::var(fdpass::ENV_FDS) else {
        return (None, None, None);
    };
    let (udp, tap) = fdpass::parse(&text);
    // The SA state is read at once and its descriptor closed.
    let state = fdpass::parse_state(&text).and_then(|fd| {
        match fdpass::adopt(fd, fdpass::Kind::State).map(fdpass::read_state) {
            Ok(Ok(bytes)) => Some(bytes),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "SA state not read");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "SA state descriptor not adopted");
                None
            }
        }
    });
    let adopt = |fd: Option<i32>, kind| {
        fd.and_then(|fd| match fdpass::adopt(fd, kind) {
            Ok(owned) => {
                tracing::info!(fd, ?kind, "descriptor kept across the update adopted");
                Some(owned)
            }
            Err(e) => {
                tracing::warn!(error = %e, "inherited descriptor not adopted");
                None
            }
        })
    };
    (
        adopt(udp, fdpass::Kind::Udp),
        adopt(tap, fdpass::Kind::Tap),
        state,
    )
}

/// What [`inherited`] returns: the UDP socket, the TAP and the SA state
/// (read, its descriptor closed).
pub type Inherited = (
    Option<std::os::fd::OwnedFd>,
    Option<std::os::fd::OwnedFd>,
    Option<zeroize::Zeroizing<Vec<u8>>>,
);

/// In the state directory while this node's TAP is left persistent for
/// an exec (holds the device's name): the next start that attaches to the
/// device clears the flag and removes the file, so that a crash between
/// the two leaves no persistent device behind for good.
pub const TAP_PERSIST_FILE: &str = "tap.persist";

/// Whether the previous process left the TAP `name` persistent for us.
pub fn tap_left_persistent(state_dir: &Path, name: &str) -> bool {
    std::fs::read_to_string(state_dir.join(TAP_PERSIST_FILE)).is_ok_and(|n| n.trim() == name)
}

/// Makes `tap` persistent before an exec, recording it first in
/// [`TAP_PERSIST_FILE`] (written atomically).
pub fn persist_tap(
    state_dir: &Path,
    name: &str,
    tap: &impl std::os::fd::AsRawFd,
) -> Result<(), String> {
    let path = state_dir.join(TAP_PERSIST_FILE);
    let temp = state_dir.join(format!("{TAP_PERSIST_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&temp)?;
        std::io::Write::write_all(&mut f, name.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&temp, &path)?;
        std::fs::File::open(state_dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", path.display()))?;
    fdpass::set_persist(tap, true).map_err(|e| {
        let _ = std::fs::remove_file(&path);
        e.to_string()
    })
}

/// Clears the persistence [`persist_tap`] set (after attaching again, or
/// when the exec failed) and removes [`TAP_PERSIST_FILE`].
pub fn unpersist_tap(state_dir: &Path, tap: &impl std::os::fd::AsRawFd) {
    match fdpass::set_persist(tap, false) {
        Ok(()) => {
            let _ = std::fs::remove_file(state_dir.join(TAP_PERSIST_FILE));
        }
        Err(e) => tracing::warn!(error = %e, "TAP left persistent"),
    }
}

/// `[update] keys` parsed; an error names the bad one.
pub fn parse_keys(keys: &[String]) -> Result<Vec<[u8; 32]>, String> {
    keys.iter()
        .map(|k| {
            public_key_from_hex(k)
                .ok_or_else(|| format!("[update] keys: {k:?} is not a hex Ed25519 public key"))
        })
        .collect()
}

/// The executable and where its predecessor is kept.
fn exe_paths() -> std::io::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe()?;
    let mut prev = exe.clone().into_os_string();
    prev.push(".prev");
    Ok((exe, PathBuf::from(prev)))
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Replaces the executable with `binary` atomically (a temporary file
/// beside it, fsync, rename), keeping the current one as `NAME.prev`.
pub fn swap_binary(binary: &[u8]) -> std::io::Result<(PathBuf, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (exe, prev) = exe_paths()?;
    let mut tmp = exe.clone().into_os_string();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&tmp)?;
    f.write_all(binary)?;
    f.sync_all()?;
    drop(f);
    // The previous binary stays reachable as NAME.prev (a hard link: the
    // executable's name never points nowhere).
    let _ = std::fs::remove_file(&prev);
    std::fs::hard_link(&exe, &prev)?;
    std::fs::rename(&tmp, &exe)?;
    sync_dir(&exe)?;
    Ok((exe, prev))
}

/// Records the installed version (the running version after the exec);
/// the previous record is kept for a rollback.
fn record_installed(state_dir: &Path, manifest: &Manifest) -> std::io::Result<()> {
    let dir = state_dir.join(RELEASE_DIR);
    std::fs::create_dir_all(&dir)?;
    let (current, prev) = installed_paths(state_dir);
    let _ = std::fs::remove_file(&prev);
    if current.exists() {
        std::fs::rename(&current, &prev)?;
    }
    let text = format!("{} {}\n", manifest.version, to_hex(&manifest.digest));
    ipsec_ca::file_store::write_atomic(&dir.join(INSTALLED_FILE), text.as_bytes(), 0o600)
        .map_err(std::io::Error::other)
}

fn installed_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = state_dir.join(RELEASE_DIR);
    (
        dir.join(INSTALLED_FILE),
        dir.join(format!("{INSTALLED_FILE}.prev")),
    )
}

/// The descriptors handed to the next binary.
pub struct Handover<'a> {
    /// The underlay socket.
    pub udp: &'a tokio::net::UdpSocket,
    /// The TAP device, when it can be adopted (no offloads).
    pub tap: Option<&'a tun_rs::AsyncDevice>,
    /// The security associations ([`wow_core::core::Core::export_sa_state`]),
    /// passed to the new binary only (not the watchdog) in a sealed memory
    /// file.
    pub state: Option<&'a [u8]>,
    /// The NAT depth measured at start (`None`: unknown).
    pub nat_depth: Option<u8>,
}

/// The NAT depth the previous binary measured, when this process is its
/// update: `Some(None)` if it was unknown, `None` if not handed over.
pub fn inherited_nat_depth() -> Option<Option<u8>> {
    std::env::var_os(fdpass::ENV_FDS)?;
    match std::env::var(ENV_NAT_DEPTH).ok()?.as_str() {
        "unknown" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

/// Why a release was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The binary does not match its manifest (size or digest).
    #[error("{0}")]
    Refused(UpdateError),
    /// Writing or executing it failed.
    #[error("{0}")]
    Io(String),
}

/// A release written in place of the executable, to exec.
#[derive(Debug)]
pub struct Installed {
    manifest: Manifest,
    exe: PathBuf,
    prev: PathBuf,
}

/// Checks `ready` against its manifest (size, SHA-256), swaps the
/// executable for it and records its version. Blocking (hashes, writes
/// and fsyncs megabytes): run it off the event loop.
pub fn install(ready: Ready, state_dir: &Path) -> Result<Installed, InstallError> {
    wow_core::update::check_binary(&ready.manifest, &ready.binary)
        .map_err(InstallError::Refused)?;
    let (exe, prev) = swap_binary(&ready.binary)
        .map_err(|e| InstallError::Io(format!("cannot swap the binary: {e}")))?;
    if let Err(e) = record_installed(state_dir, &ready.manifest) {
        let _ = std::fs::rename(&prev, &exe);
        return Err(InstallError::Io(format!(
            "cannot record the installed version: {e}"
        )));
    }
    Ok(Installed {
        manifest: ready.manifest,
        exe,
        prev,
    })
}

/// Execs an installed release with the TAP and UDP descriptors kept
/// open, after starting a watchdog (the previous binary) that rolls it
/// back unless it reports healthy within `health`. Returns only on
/// failure (the old binary is then put back and keeps running).
pub fn exec(
    installed: &Installed,
    running: Version,
    state_dir: &Path,
    health: Duration,
    fds: Handover<'_>,
) -> String {
    use std::os::unix::process::CommandExt;
    let Installed {
        manifest,
        exe,
        prev,
    } = installed;
    let udp = fds.udp.as_raw_fd();
    let tap = fds.tap.map(|t| t.as_raw_fd());
    let kept = fdpass::keep_across_exec(fds.udp)
        .and_then(|()| fds.tap.map_or(Ok(()), fdpass::keep_across_exec));
    if let Err(e) = kept {
        let _ = std::fs::rename(prev, exe);
        return format!("cannot keep descriptors open: {e}");
    }
    let env_fds = fdpass::format(Some(udp), tap);
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // The watchdog: the previous binary, holding the same descriptors.
    let watchdog = std::process::Command::new(prev)
        .arg("update-watchdog")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--version")
        .arg(manifest.version.to_string())
        .arg("--health-secs")
        .arg(health.as_secs().to_string())
        .arg("--exe")
        .arg(exe)
        .arg("--")
        .args(&args)
        .env(fdpass::ENV_FDS, &env_fds)
        .stdin(std::process::Stdio::null())
        .spawn();
    if let Err(e) = watchdog {
        let _ = std::fs::rename(prev, exe);
        return format!("cannot start the update watchdog: {e}");
    }
    // The SA state (keys) goes to the new binary alone: the watchdog,
    // started above, never holds it; a rollback starts fresh exchanges.
    let state = fds.state.and_then(|bytes| {
        fdpass::write_state(bytes)
            .and_then(|fd| fdpass::keep_across_exec(&fd).map(|()| fd))
            .map_err(|e| tracing::warn!(error = %e, "SA state not handed over"))
            .ok()
    });
    let env_fds = match &state {
        Some(fd) => format!("{env_fds},sa={}", fd.as_raw_fd()),
        None => env_fds,
    };
    tracing::info!(
        from = %running,
        to = %manifest.version,
        fds = %env_fds,
        "release installed: exec"
    );
    let e = std::process::Command::new(exe)
        .args(&args)
        .env(fdpass::ENV_FDS, &env_fds)
        .env(
            ENV_NAT_DEPTH,
            fds.nat_depth
                .map_or_else(|| "unknown".to_string(), |d| d.to_string()),
        )
        .env(
            ENV_UPDATED,
            format!("{running} {} {}", manifest.version, health.as_secs()),
        )
        .env_remove(ENV_ROLLED_BACK)
        .exec();
    let _ = std::fs::rename(prev, exe);
    format!("exec {}: {e}", exe.display())
}

/// `wow-node update-watchdog`: waits until the node at `pid` answers
/// `health` with `ok` on its control socket; if it does not within
/// `health_secs`, kills it, puts the previous binary back and execs it
/// with the inherited descriptors (this process becomes the node).
pub fn watchdog(
    pid: u32,
    state_dir: &Path,
    version: &str,
    health_secs: u64,
    exe: &Path,
    args: &[std::ffi::OsString],
) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let deadline = Instant::now() + Duration::from_secs(health_secs.max(1));
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let healthy = crate::control::request(state_dir, "health\n", 1)
            .is_ok_and(|a| a.trim() == format!("ok {version}"));
        if healthy {
            // Healthy: the descriptors this process holds close with it.
            return ExitCode::SUCCESS;
        }
    }
    eprintln!(
        "wow-node update-watchdog: {version} not healthy after {health_secs} s: rolling back"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
        nix::sys::signal::Signal::SIGKILL,
    );
    let mut prev = exe.as_os_str().to_owned();
    prev.push(".prev");
    if let Err(e) = std::fs::rename(&prev, exe) {
        eprintln!("wow-node update-watchdog: cannot put {prev:?} back: {e}");
    }
    let _ = sync_dir(exe);
    let dir = state_dir.join(RELEASE_DIR);
    let (current, prev_record) = installed_paths(state_dir);
    if std::fs::rename(&prev_record, &current).is_err() {
        let _ = std::fs::remove_file(&current);
    }
    let mut refused = std::fs::read_to_string(dir.join(REFUSED_FILE)).unwrap_or_default();
    refused += &format!("{version}\n");
    let _ = ipsec_ca::file_store::write_atomic(&dir.join(REFUSED_FILE), refused.as_bytes(), 0o600);
    // Our copies of the descriptors (ENV_FDS, inherited at the same
    // numbers) go to the old binary.
    let e = std::process::Command::new(exe)
        .args(args)
        .env(ENV_ROLLED_BACK, version)
        .env_remove(ENV_UPDATED)
        .exec();
    eprintln!("wow-node update-watchdog: exec {}: {e}", exe.display());
    ExitCode::FAILURE
}
