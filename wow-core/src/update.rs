//! Signed self-update, sans-IO: the release manifest, its Ed25519
//! signature, the binary in DHT-sized chunks, and the checks a node makes
//! before it swaps its binary.
//!
//! A release is published by whoever holds a **release key** (an Ed25519
//! key pair; nodes list the public halves in `[update] keys`). Its
//! [`Manifest`] names the channel, the version, the binary's size and
//! SHA-256, the head of the chunk chain and optionally a URL (a second
//! source); the publisher signs [`MANIFEST_LABEL`] followed by the
//! manifest's body. The signed manifest is stored under the DHT key
//! `wow/release/<channel>`, chunk `i` under
//! `wow/release-chunk/<`[`Manifest::chunk_suffix`]`>`.
//!
//! A binary is megabytes, a DHT value at most
//! [`CHUNK_LEN`] (1 KiB), so a manifest cannot list every chunk's digest
//! (the CRL's [`overlay_core::chunked`] manifest stops at 48 chunks). The
//! chunks form a **hash chain** instead: chunk `i` is
//! [`CHUNK_DATA_LEN`] bytes of the binary followed by the truncated
//! SHA-256 of chunk `i + 1` (the last chunk carries data only), and the
//! manifest holds the digest of chunk 0. A reader checks each chunk
//! against the link in the one before, so a wrong value written under a
//! chunk key by any member is refused at once and the chunk asked again,
//! without spoiling the others; the joined binary must then match the
//! manifest's size and SHA-256 ([`Download`]).
//!
//! Before a node installs anything, [`check_release`] refuses, each with
//! its own [`UpdateError`]: no release key configured, a manifest signed
//! by a key not configured, a bad signature, another channel, an older or
//! equal version; [`Download`] refuses a binary of the wrong size or
//! digest.
//!
//! ```
//! use wow_core::update::{check_release, Download, Offer, Publication, ReleaseKey, Version};
//!
//! let key = ReleaseKey::generate()?;
//! let binary: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
//! let v2: Version = "2.0.0".parse()?;
//! let published = Publication::new(&key, "stable", v2, &binary, None)?;
//!
//! // A node running 1.4.0 with the key configured takes it.
//! let running: Version = "1.4.0".parse()?;
//! let manifest = check_release(&published.signed, &[key.public_key()], "stable", running)?;
//! let mut download = Download::new(manifest);
//! let mut done = None;
//! for index in download.wanted(64) {
//!     if let Offer::Complete(bytes) = download.offer_chunk(index, [published.chunk(index).unwrap()])? {
//!         done = Some(bytes);
//!     }
//! }
//! assert_eq!(done, Some(binary));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

pub use overlay_core::chunked::CHUNK_LEN;

/// The context signed before a manifest's body.
pub const MANIFEST_LABEL: &[u8] = b"wow/release-manifest v1\0";
/// Bytes of a chunk's link: SHA-256 of the next chunk, truncated (only
/// second preimages of the signer's chunks matter: 2^128 work).
pub const LINK_LEN: usize = 16;
/// Bytes of the binary in each chunk but the last.
pub const CHUNK_DATA_LEN: usize = CHUNK_LEN - LINK_LEN;
/// Largest binary published (256 MiB).
pub const MAX_BINARY_LEN: u64 = 256 << 20;
/// Largest binary whose chunks go into the DHT when the manifest also
/// names a URL (4 MiB: 4161 chunks). Beyond it the chunks are not put and
/// readers go to the URL at once: every storing node takes at most 512
/// keys and 1 MiB per writer (overlay-core's default quotas), so with 3
/// replicas a binary of `B` MiB needs about `3 B` storing nodes, and a
/// 10 MiB binary (10 403 chunks) about 60 nodes.
pub const MAX_DHT_BINARY_LEN: u64 = 4 << 20;
/// Longest channel name.
pub const MAX_CHANNEL_LEN: usize = 32;
/// Longest second-source URL.
pub const MAX_URL_LEN: usize = 512;
/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Candidate values kept per chunk (one per DHT writer at most).
const MAX_CANDIDATES: usize = overlay_core::wire::MAX_VALUES_PER_KEY;
/// Manifest body format.
const FORMAT: u8 = 1;

/// Why a release is refused or cannot be published. Every refusal leaves
/// the node's binary untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// No release key is configured: the node takes no update.
    #[error("no release key configured ([update] keys)")]
    NoKey,
    /// Not a signed release manifest.
    #[error("malformed release manifest")]
    Malformed,
    /// Signed by a key not in `[update] keys`.
    #[error("release signed by an unknown key {0}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature on the release manifest")]
    BadSignature,
    /// A release of another channel.
    #[error("release for channel {offered:?}, not {configured:?}")]
    WrongChannel {
        /// The manifest's channel.
        offered: String,
        /// The node's channel.
        configured: String,
    },
    /// Not newer than the running version.
    #[error("release {offered} is not newer than the running {running}")]
    NotNewer {
        /// The manifest's version.
        offered: Version,
        /// The running version.
        running: Version,
    },
    /// The binary has another size than the manifest says.
    #[error("binary of {got} bytes, the manifest says {expected}")]
    Size {
        /// From the manifest.
        expected: u64,
        /// What arrived.
        got: u64,
    },
    /// The binary's SHA-256 is not the manifest's.
    #[error("binary digest does not match the manifest")]
    Digest,
    /// A binary that cannot be published (empty or too large), a channel or
    /// URL too long.
    #[error("cannot publish: {0}")]
    Publish(&'static str),
    /// The key could not sign or be read.
    #[error("release key: {0}")]
    Key(&'static str),
}

impl UpdateError {
    /// A short stable name, for status and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpdateError::NoKey => "no_key",
            UpdateError::Malformed => "malformed",
            UpdateError::UnknownKey(_) => "unknown_key",
            UpdateError::BadSignature => "bad_signature",
            UpdateError::WrongChannel { .. } => "wrong_channel",
            UpdateError::NotNewer { .. } => "not_newer",
            UpdateError::Size { .. } => "size",
            UpdateError::Digest => "digest",
            UpdateError::Publish(_) => "publish",
            UpdateError::Key(_) => "key",
        }
    }
}

/// A release version, `MAJOR.MINOR.PATCH`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Not a `MAJOR.MINOR.PATCH` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a MAJOR.MINOR.PATCH version")]
pub struct VersionError;

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Version, VersionError> {
        // A pre-release or build suffix (`-rc1`, `+abc`) is not ordered.
        let mut parts = s.trim().split('.').map(|p| p.parse::<u32>());
        let mut next = || parts.next().and_then(Result::ok).ok_or(VersionError);
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        match parts.next() {
            None => Ok(v),
            Some(_) => Err(VersionError),
        }
    }
}

/// A release as its publisher describes it (the signed part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The channel (`stable`, `testing`, …).
    pub channel: String,
    /// The version.
    pub version: Version,
    /// Binary length in bytes.
    pub size: u64,
    /// SHA-256 of the binary.
    pub digest: [u8; 32],
    /// Truncated SHA-256 of chunk 0: the head of the chain.
    pub head: [u8; LINK_LEN],
    /// A plain HTTP(S) URL serving the same binary, if any.
    pub url: Option<String>,
}

/// The signed manifest's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<'a> {
    /// The manifest body (what is signed after [`MANIFEST_LABEL`]).
    pub body: &'a [u8],
    /// The signer's Ed25519 public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The signature.
    pub signature: [u8; SIGNATURE_LEN],
}

/// A cursor over untrusted bytes: every read checks the length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], UpdateError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(UpdateError::Malformed)?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], UpdateError> {
        self.take(N)?.try_into().map_err(|_| UpdateError::Malformed)
    }

    fn u8(&mut self) -> Result<u8, UpdateError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, UpdateError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, UpdateError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, UpdateError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

impl Manifest {
    /// The body: format `u8`, channel (`u8` length, bytes), version
    /// (3 × `u32`), size `u64`, SHA-256 `[u8; 32]`, head `[u8; 16]`, URL
    /// (`u16` length, bytes; 0 for none). Big-endian.
    pub fn to_body(&self) -> Vec<u8> {
        let url = self.url.as_deref().unwrap_or("");
        let mut b = Vec::with_capacity(80 + self.channel.len() + url.len());
        b.push(FORMAT);
        // Lengths bounded by `Publication::new` and `parse_body`.
        b.push(self.channel.len().min(MAX_CHANNEL_LEN) as u8);
        b.extend_from_slice(&self.channel.as_bytes()[..self.channel.len().min(MAX_CHANNEL_LEN)]);
        b.extend_from_slice(&self.version.major.to_be_bytes());
        b.extend_from_slice(&self.version.minor.to_be_bytes());
        b.extend_from_slice(&self.version.patch.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.digest);
        b.extend_from_slice(&self.head);
        let url = &url.as_bytes()[..url.len().min(MAX_URL_LEN)];
        b.extend_from_slice(&(url.len() as u16).to_be_bytes());
        b.extend_from_slice(url);
        b
    }

    /// Reads a body. Check its signature first ([`verify`]).
    pub fn parse_body(bytes: &[u8]) -> Result<Manifest, UpdateError> {
        let mut r = Reader(bytes);
        if r.u8()? != FORMAT {
            return Err(UpdateError::Malformed);
        }
        let channel_len = usize::from(r.u8()?);
        if channel_len > MAX_CHANNEL_LEN {
            return Err(UpdateError::Malformed);
        }
        let channel = std::str::from_utf8(r.take(channel_len)?)
            .map_err(|_| UpdateError::Malformed)?
            .to_string();
        let version = Version {
            major: r.u32()?,
            minor: r.u32()?,
            patch: r.u32()?,
        };
        let size = r.u64()?;
        let digest = r.array()?;
        let head = r.array()?;
        let url_len = usize::from(r.u16()?);
        if url_len > MAX_URL_LEN {
            return Err(UpdateError::Malformed);
        }
        let url = std::str::from_utf8(r.take(url_len)?).map_err(|_| UpdateError::Malformed)?;
        if !r.0.is_empty() || size == 0 || size > MAX_BINARY_LEN {
            return Err(UpdateError::Malformed);
        }
        Ok(Manifest {
            channel,
            version,
            size,
            digest,
            head,
            url: (!url.is_empty()).then(|| url.to_string()),
        })
    }

    /// Whether the chunks are in the DHT: always without a URL, else only
    /// up to [`MAX_DHT_BINARY_LEN`].
    pub fn chunks_in_dht(&self) -> bool {
        self.url.is_none() || self.size <= MAX_DHT_BINARY_LEN
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u32 {
        // At most MAX_BINARY_LEN / CHUNK_DATA_LEN + 1, far below u32::MAX.
        u32::try_from(chunk_count(self.size)).unwrap_or(u32::MAX)
    }

    /// Length of chunk `index` (data and link).
    pub fn chunk_len(&self, index: u32) -> Option<usize> {
        let n = self.chunks();
        if index >= n {
            return None;
        }
        if index + 1 < n {
            return Some(CHUNK_LEN);
        }
        let before = u64::from(index) * CHUNK_DATA_LEN as u64;
        usize::try_from(self.size - before).ok()
    }

    /// The key suffix of chunk `index`: a prefix of the binary's digest
    /// and the index, so chunks of different releases never share a key.
    pub fn chunk_suffix(&self, index: u32) -> [u8; 20] {
        let mut s = [0u8; 20];
        s[..16].copy_from_slice(&self.digest[..16]);
        s[16..].copy_from_slice(&index.to_be_bytes());
        s
    }
}

fn chunk_count(size: u64) -> u64 {
    // All but the last carry CHUNK_DATA_LEN; the last carries the rest
    // (1..=CHUNK_DATA_LEN bytes).
    size.div_ceil(CHUNK_DATA_LEN as u64).max(1)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    d
}

fn link(chunk: &[u8]) -> [u8; LINK_LEN] {
    let mut l = [0u8; LINK_LEN];
    l.copy_from_slice(&sha256(chunk)[..LINK_LEN]);
    l
}

/// Splits a signed manifest: `u16` body length, body, public key,
/// signature.
pub fn split_signed(value: &[u8]) -> Result<Signed<'_>, UpdateError> {
    let mut r = Reader(value);
    let len = usize::from(r.u16()?);
    let body = r.take(len)?;
    let public_key = r.array()?;
    let signature = r.array()?;
    if !r.0.is_empty() {
        return Err(UpdateError::Malformed);
    }
    Ok(Signed {
        body,
        public_key,
        signature,
    })
}

/// The manifest in `value` if one of `keys` signed it: refuses with
/// [`UpdateError::NoKey`] when `keys` is empty, [`UpdateError::UnknownKey`]
/// when the signer is not among them, [`UpdateError::BadSignature`] when
/// the signature does not verify.
pub fn verify(value: &[u8], keys: &[[u8; PUBLIC_KEY_LEN]]) -> Result<Manifest, UpdateError> {
    if keys.is_empty() {
        return Err(UpdateError::NoKey);
    }
    let signed = split_signed(value)?;
    if !keys.contains(&signed.public_key) {
        return Err(UpdateError::UnknownKey(to_hex(&signed.public_key)));
    }
    let mut message = MANIFEST_LABEL.to_vec();
    message.extend_from_slice(signed.body);
    UnparsedPublicKey::new(&ED25519, signed.public_key)
        .verify(&message, &signed.signature)
        .map_err(|_| UpdateError::BadSignature)?;
    Manifest::parse_body(signed.body)
}

/// Everything a node checks before it downloads a release: [`verify`],
/// then the channel, then that the version is newer than `running`.
pub fn check_release(
    value: &[u8],
    keys: &[[u8; PUBLIC_KEY_LEN]],
    channel: &str,
    running: Version,
) -> Result<Manifest, UpdateError> {
    let manifest = verify(value, keys)?;
    if manifest.channel != channel {
        return Err(UpdateError::WrongChannel {
            offered: manifest.channel,
            configured: channel.to_string(),
        });
    }
    if manifest.version <= running {
        return Err(UpdateError::NotNewer {
            offered: manifest.version,
            running,
        });
    }
    Ok(manifest)
}

/// Checks a whole binary against the manifest: size, then SHA-256.
pub fn check_binary(manifest: &Manifest, binary: &[u8]) -> Result<(), UpdateError> {
    let got = binary.len() as u64;
    if got != manifest.size {
        return Err(UpdateError::Size {
            expected: manifest.size,
            got,
        });
    }
    if sha256(binary) != manifest.digest {
        return Err(UpdateError::Digest);
    }
    Ok(())
}

/// A release key pair (Ed25519, from `getrandom` through ring).
pub struct ReleaseKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for ReleaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseKey")
            .field("public_key", &to_hex(&self.public_key()))
            .finish_non_exhaustive()
    }
}

impl ReleaseKey {
    /// A new key from the OS's randomness.
    pub fn generate() -> Result<ReleaseKey, UpdateError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| UpdateError::Key("cannot generate"))?;
        ReleaseKey::from_pkcs8(doc.as_ref())
    }

    /// A key from its PKCS#8 document (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<ReleaseKey, UpdateError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| UpdateError::Key("not an Ed25519 PKCS#8 key"))?;
        Ok(ReleaseKey {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// The PKCS#8 document (DER): what the key file holds, as PEM.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key, as nodes list it in `[update] keys` (hex).
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut k = [0u8; PUBLIC_KEY_LEN];
        k.copy_from_slice(self.pair.public_key().as_ref());
        k
    }

    /// `manifest` signed: what `wow/release/<channel>` holds.
    pub fn sign(&self, manifest: &Manifest) -> Vec<u8> {
        let body = manifest.to_body();
        let mut message = MANIFEST_LABEL.to_vec();
        message.extend_from_slice(&body);
        let signature = self.pair.sign(&message);
        let mut value = Vec::with_capacity(2 + body.len() + PUBLIC_KEY_LEN + SIGNATURE_LEN);
        // Bounded by MAX_CHANNEL_LEN and MAX_URL_LEN: far below u16::MAX.
        value.extend_from_slice(&(body.len() as u16).to_be_bytes());
        value.extend_from_slice(&body);
        value.extend_from_slice(&self.public_key());
        value.extend_from_slice(signature.as_ref());
        value
    }
}

/// A release ready to publish: its signed manifest and chunks.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The manifest.
    pub manifest: Manifest,
    /// The manifest signed by the release key.
    pub signed: Vec<u8>,
    chunks: Vec<Vec<u8>>,
}

impl Publication {
    /// Describes, chains and signs `binary` as `version` on `channel`.
    pub fn new(
        key: &ReleaseKey,
        channel: &str,
        version: Version,
        binary: &[u8],
        url: Option<&str>,
    ) -> Result<Publication, UpdateError> {
        let (manifest, chunks) = describe(channel, version, binary, url)?;
        let signed = key.sign(&manifest);
        Ok(Publication {
            manifest,
            signed,
            chunks,
        })
    }

    /// A manifest signed elsewhere (by `wow-node release publish`) and the
    /// binary it describes; the signature is left to readers, the
    /// description is checked here.
    pub fn from_signed(signed: Vec<u8>, binary: &[u8]) -> Result<Publication, UpdateError> {
        let manifest = Manifest::parse_body(split_signed(&signed)?.body)?;
        check_binary(&manifest, binary)?;
        let (expected, chunks) = describe(
            &manifest.channel,
            manifest.version,
            binary,
            manifest.url.as_deref(),
        )?;
        if expected != manifest {
            return Err(UpdateError::Digest);
        }
        Ok(Publication {
            manifest,
            signed,
            chunks,
        })
    }

    /// Chunk `index` (data and link), if it exists.
    pub fn chunk(&self, index: u32) -> Option<&[u8]> {
        self.chunks
            .get(usize::try_from(index).ok()?)
            .map(Vec::as_slice)
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u32 {
        self.manifest.chunks()
    }
}

/// The manifest and chained chunks of `binary`.
fn describe(
    channel: &str,
    version: Version,
    binary: &[u8],
    url: Option<&str>,
) -> Result<(Manifest, Vec<Vec<u8>>), UpdateError> {
    if binary.is_empty() || binary.len() as u64 > MAX_BINARY_LEN {
        return Err(UpdateError::Publish("binary empty or over 256 MiB"));
    }
    if channel.is_empty() || channel.len() > MAX_CHANNEL_LEN {
        return Err(UpdateError::Publish("channel of 1 to 32 bytes"));
    }
    if url.is_some_and(|u| u.len() > MAX_URL_LEN) {
        return Err(UpdateError::Publish("URL over 512 bytes"));
    }
    let data: Vec<&[u8]> = binary.chunks(CHUNK_DATA_LEN).collect();
    let mut chunks = vec![Vec::new(); data.len()];
    let mut next: Option<[u8; LINK_LEN]> = None;
    // From the last chunk back: each carries the link to the next.
    for (i, d) in data.iter().enumerate().rev() {
        let mut c = Vec::with_capacity(CHUNK_LEN);
        c.extend_from_slice(d);
        if let Some(l) = next {
            c.extend_from_slice(&l);
        }
        next = Some(link(&c));
        chunks[i] = c;
    }
    let manifest = Manifest {
        channel: channel.to_string(),
        version,
        size: binary.len() as u64,
        digest: sha256(binary),
        head: next.unwrap_or_default(),
        url: url.map(str::to_string),
    };
    Ok((manifest, chunks))
}

/// What a chunk answer did (see [`Download::offer_chunk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Not wanted (out of range, or already verified).
    Ignored,
    /// Kept; more chunks are missing.
    Stored,
    /// No value of the right length, or none matching its link: ask
    /// chunk `index` again.
    Again(u32),
    /// The whole binary, size and SHA-256 checked.
    Complete(Vec<u8>),
}

/// A release being downloaded: chunks verified along the chain.
#[derive(Debug, Clone)]
pub struct Download {
    manifest: Manifest,
    binary: Vec<u8>,
    /// Next chunk to verify and the link it must match.
    next: u32,
    expected: [u8; LINK_LEN],
    /// Values of chunks past `next`, not yet verifiable.
    pending: BTreeMap<u32, Vec<Vec<u8>>>,
    in_flight: BTreeSet<u32>,
}

impl Download {
    /// Waiting for the chunks of `manifest` (checked by
    /// [`check_release`]).
    pub fn new(manifest: Manifest) -> Download {
        let expected = manifest.head;
        Download {
            binary: Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0)),
            manifest,
            next: 0,
            expected,
            pending: BTreeMap::new(),
            in_flight: BTreeSet::new(),
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Chunks verified so far.
    pub fn verified(&self) -> u32 {
        self.next
    }

    /// Up to `window` chunks to ask for now (from the next to verify, not
    /// held nor asked already); they count as asked until answered.
    pub fn wanted(&mut self, window: usize) -> Vec<u32> {
        let n = self.manifest.chunks();
        let busy = self.in_flight.len() + self.pending.len();
        let room = window.saturating_sub(busy);
        let mut out = Vec::new();
        let mut i = self.next;
        // Look a whole window past `next`: chunks ahead may be held.
        let end = self
            .next
            .saturating_add(u32::try_from(window).unwrap_or(u32::MAX));
        while i < n && i < end && out.len() < room {
            if !self.in_flight.contains(&i) && !self.pending.contains_key(&i) {
                out.push(i);
            }
            i += 1;
        }
        self.in_flight.extend(&out);
        out
    }

    /// Forgets that chunk `index` was asked (its request failed).
    pub fn lost(&mut self, index: u32) {
        self.in_flight.remove(&index);
    }

    /// Offers the values found under chunk `index`'s key. Values of the
    /// wrong length are dropped; the others wait until the chain reaches
    /// them, and only the one matching its link is kept. An error is the
    /// whole binary refused ([`UpdateError::Size`], [`UpdateError::Digest`]):
    /// the publisher signed a manifest that does not describe its chunks.
    pub fn offer_chunk<'a>(
        &mut self,
        index: u32,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Offer, UpdateError> {
        self.in_flight.remove(&index);
        let Some(len) = self.manifest.chunk_len(index) else {
            return Ok(Offer::Ignored);
        };
        if index < self.next {
            return Ok(Offer::Ignored);
        }
        let candidates: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| v.len() == len)
            .take(MAX_CANDIDATES)
            .map(<[u8]>::to_vec)
            .collect();
        if candidates.is_empty() {
            return Ok(Offer::Again(index));
        }
        self.pending.insert(index, candidates);
        while let Some(candidates) = self.pending.remove(&self.next) {
            let Some(chunk) = candidates.into_iter().find(|c| link(c) == self.expected) else {
                return Ok(Offer::Again(self.next));
            };
            let last = self.next + 1 == self.manifest.chunks();
            let data_len = if last { chunk.len() } else { CHUNK_DATA_LEN };
            let (data, next_link) = chunk.split_at(data_len);
            self.binary.extend_from_slice(data);
            if let Ok(l) = <[u8; LINK_LEN]>::try_from(next_link) {
                self.expected = l;
            }
            self.next += 1;
            if last {
                let binary = std::mem::take(&mut self.binary);
                check_binary(&self.manifest, &binary)?;
                return Ok(Offer::Complete(binary));
            }
        }
        Ok(Offer::Stored)
    }
}

/// The self-update as `wow-node status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpdateStatus {
    /// The channel followed.
    pub channel: String,
    /// The running version.
    pub running: String,
    /// The node's process id (it changes when a rollback's watchdog
    /// becomes the node).
    pub pid: u32,
    /// `idle`, `downloading`, `installing` or `publishing`.
    pub state: String,
    /// The version being downloaded.
    pub offered: Option<String>,
    /// Chunks verified of the one being downloaded.
    pub chunks_verified: u32,
    /// Its chunks.
    pub chunks: u32,
    /// The last release refused, and why.
    pub last_refusal: Option<Refusal>,
    /// The version this binary replaced, after an update.
    pub updated_from: Option<String>,
    /// A version rolled back (its binary did not report healthy).
    pub rolled_back: Option<String>,
    /// The release this node publishes, if any.
    pub publishing: Option<String>,
}

/// A release refused: its [`UpdateError::kind`] and message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// [`UpdateError::kind`].
    pub kind: String,
    /// The error's text.
    pub error: String,
}

impl Refusal {
    /// The refusal for `error`.
    pub fn of(error: &UpdateError) -> Refusal {
        Refusal {
            kind: error.kind().to_string(),
            error: error.to_string(),
        }
    }
}

impl UpdateStatus {
    /// The status text's `update` lines.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "update    {} on {:?}, {}",
            self.running, self.channel, self.state
        );
        if let Some(v) = &self.offered {
            s += &format!(" {v} ({}/{} chunks)", self.chunks_verified, self.chunks);
        }
        if let Some(v) = &self.updated_from {
            s += &format!("; updated from {v}");
        }
        if let Some(v) = &self.rolled_back {
            s += &format!("; ROLLED BACK {v}");
        }
        if let Some(v) = &self.publishing {
            s += &format!("; publishing {v}");
        }
        s.push('\n');
        if let Some(r) = &self.last_refusal {
            s += &format!("          refused: {} ({})\n", r.error, r.kind);
        }
        s
    }
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A public key from its hex form (as in `[update] keys`).
pub fn public_key_from_hex(text: &str) -> Option<[u8; PUBLIC_KEY_LEN]> {
    let text = text.trim();
    if text.len() != 2 * PUBLIC_KEY_LEN {
        return None;
    }
    let mut key = [0u8; PUBLIC_KEY_LEN];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod test {
    use super::*;

    fn binary(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn fetch(download: &mut Download, p: &Publication) -> Result<Vec<u8>, UpdateError> {
        loop {
            let wanted = download.wanted(8);
            assert!(!wanted.is_empty(), "stalled");
            for i in wanted {
                if let Offer::Complete(b) = download.offer_chunk(i, [p.chunk(i).unwrap()])? {
                    return Ok(b);
                }
            }
        }
    }

    #[test]
    fn versions_order_numerically() {
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(v("2.0.0") > v("1.99.99"));
        assert_eq!(v("0.1.0").to_string(), "0.1.0");
        for bad in ["1.2", "1.2.3.4", "a.b.c", "", "1.2.-3"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trip_for_many_sizes() {
        let key = ReleaseKey::generate().unwrap();
        for len in [
            1,
            CHUNK_DATA_LEN - 1,
            CHUNK_DATA_LEN,
            CHUNK_DATA_LEN + 1,
            3 * CHUNK_DATA_LEN,
            50_000,
        ] {
            let bin = binary(len);
            let p = Publication::new(&key, "stable", v("1.0.1"), &bin, None).unwrap();
            assert!(p.signed.len() <= overlay_core::wire::MAX_VALUE_LEN);
            for i in 0..p.chunks() {
                assert_eq!(p.chunk(i).unwrap().len(), p.manifest.chunk_len(i).unwrap());
                assert!(p.chunk(i).unwrap().len() <= CHUNK_LEN);
            }
            let m = check_release(&p.signed, &[key.public_key()], "stable", v("1.0.0")).unwrap();
            assert_eq!(m, p.manifest);
            assert_eq!(fetch(&mut Download::new(m), &p).unwrap(), bin, "{len}");
        }
    }

    #[test]
    fn chunks_out_of_order_and_in_reverse() {
        let key = ReleaseKey::generate().unwrap();
        let bin = binary(20 * CHUNK_DATA_LEN + 5);
        let p = Publication::new(&key, "stable", v("1.0.1"), &bin, None).unwrap();
        let mut d = Download::new(p.manifest.clone());
        let all = d.wanted(1000);
        assert_eq!(all.len(), 21);
        for &i in all.iter().skip(1).rev() {
            assert_eq!(d.offer_chunk(i, [p.chunk(i).unwrap()]), Ok(Offer::Stored));
        }
        assert_eq!(
            d.offer_chunk(0, [p.chunk(0).unwrap()]),
            Ok(Offer::Complete(bin))
        );
    }

    #[test]
    fn from_signed_checks_the_binary() {
        let key = ReleaseKey::generate().unwrap();
        let bin = binary(5000);
        let p = Publication::new(&key, "stable", v("1.0.1"), &bin, Some("http://x/b")).unwrap();
        let again = Publication::from_signed(p.signed.clone(), &bin).unwrap();
        assert_eq!(again.manifest.url.as_deref(), Some("http://x/b"));
        assert_eq!(again.chunk(3), p.chunk(3));
        let mut other = bin.clone();
        other[10] ^= 1;
        assert_eq!(
            Publication::from_signed(p.signed, &other).unwrap_err(),
            UpdateError::Digest
        );
    }

    #[test]
    fn key_from_pkcs8_is_the_same_key() {
        let key = ReleaseKey::generate().unwrap();
        let again = ReleaseKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let hex = to_hex(&key.public_key());
        assert_eq!(public_key_from_hex(&hex), Some(key.public_key()));
        assert_eq!(public_key_from_hex(&hex[1..]), None);
        assert_eq!(public_key_from_hex(&format!("{}zz", &hex[2..])), None);
    }

    // The refusals: each leaves nothing to install.

    #[test]
    fn attack_no_key_configured_refuses() {
        let key = ReleaseKey::generate().unwrap();
        let p = Publication::new(&key, "stable", v("9.0.0"), &binary(100), None).unwrap();
        assert_eq!(
            check_release(&p.signed, &[], "stable", v("1.0.0")),
            Err(UpdateError::NoKey)
        );
    }

    #[test]
    fn attack_unknown_key_refused() {
        let key = ReleaseKey::generate().unwrap();
        let intruder = ReleaseKey::generate().unwrap();
        let p = Publication::new(&intruder, "stable", v("9.0.0"), &binary(100), None).unwrap();
        let e = check_release(&p.signed, &[key.public_key()], "stable", v("1.0.0")).unwrap_err();
        assert_eq!(e.kind(), "unknown_key");
    }

    #[test]
    fn attack_bad_signature_refused() {
        let key = ReleaseKey::generate().unwrap();
        let p = Publication::new(&key, "stable", v("2.0.0"), &binary(100), None).unwrap();
        // A changed version under the real key's signature.
        let mut forged = p.signed.clone();
        let version_at = 2 + 2 + "stable".len();
        forged[version_at] ^= 0x01;
        assert_eq!(
            check_release(&forged, &[key.public_key()], "stable", v("1.0.0")),
            Err(UpdateError::BadSignature)
        );
        // The signature itself changed.
        let mut forged = p.signed.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x80;
        assert_eq!(
            verify(&forged, &[key.public_key()]),
            Err(UpdateError::BadSignature)
        );
    }

    #[test]
    fn attack_older_or_equal_version_refused() {
        let key = ReleaseKey::generate().unwrap();
        for offered in ["1.0.0", "0.9.9"] {
            let p = Publication::new(&key, "stable", v(offered), &binary(100), None).unwrap();
            assert_eq!(
                check_release(&p.signed, &[key.public_key()], "stable", v("1.0.0")),
                Err(UpdateError::NotNewer {
                    offered: v(offered),
                    running: v("1.0.0")
                })
            );
        }
    }

    #[test]
    fn attack_other_channel_refused() {
        let key = ReleaseKey::generate().unwrap();
        let p = Publication::new(&key, "testing", v("9.0.0"), &binary(100), None).unwrap();
        let e = check_release(&p.signed, &[key.public_key()], "stable", v("1.0.0")).unwrap_err();
        assert_eq!(e.kind(), "wrong_channel");
    }

    /// A signer whose manifest lies about the size or digest of the
    /// chunks it published: the joined binary is refused.
    #[test]
    fn attack_wrong_size_or_digest_refused() {
        let key = ReleaseKey::generate().unwrap();
        let bin = binary(3000);
        let p = Publication::new(&key, "stable", v("2.0.0"), &bin, None).unwrap();
        let mut lying = p.manifest.clone();
        lying.digest[0] ^= 1;
        let mut d = Download::new(lying);
        assert_eq!(fetch(&mut d, &p), Err(UpdateError::Digest));
        assert_eq!(
            check_binary(&p.manifest, &bin[1..]),
            Err(UpdateError::Size {
                expected: 3000,
                got: 2999
            })
        );
        let mut other = bin.clone();
        other[2999] ^= 1;
        assert_eq!(check_binary(&p.manifest, &other), Err(UpdateError::Digest));
    }

    /// Any member may write under a chunk key: a wrong value beside the
    /// right one is skipped; alone, the chunk is asked again.
    #[test]
    fn attack_forged_chunk_skipped() {
        let key = ReleaseKey::generate().unwrap();
        let bin = binary(4 * CHUNK_DATA_LEN);
        let p = Publication::new(&key, "stable", v("2.0.0"), &bin, None).unwrap();
        let mut forged = p.chunk(1).unwrap().to_vec();
        forged[0] ^= 1;
        let mut d = Download::new(p.manifest.clone());
        assert_eq!(d.wanted(2), vec![0, 1]);
        assert_eq!(d.offer_chunk(1, [&forged[..]]), Ok(Offer::Stored));
        assert_eq!(d.offer_chunk(0, [p.chunk(0).unwrap()]), Ok(Offer::Again(1)));
        assert_eq!(d.verified(), 1);
        assert_eq!(d.wanted(2), vec![1, 2]);
        assert_eq!(
            d.offer_chunk(1, [&forged[..], p.chunk(1).unwrap()]),
            Ok(Offer::Stored)
        );
        assert_eq!(d.offer_chunk(1, [p.chunk(1).unwrap()]), Ok(Offer::Ignored));
        assert_eq!(d.offer_chunk(2, [&[0u8; 3][..]]), Ok(Offer::Again(2)));
        assert_eq!(d.offer_chunk(2, [p.chunk(2).unwrap()]), Ok(Offer::Stored));
        assert_eq!(
            d.offer_chunk(3, [p.chunk(3).unwrap()]),
            Ok(Offer::Complete(bin))
        );
    }

    #[test]
    fn malformed_manifests_refused() {
        let key = ReleaseKey::generate().unwrap();
        let p = Publication::new(&key, "stable", v("2.0.0"), &binary(10), None).unwrap();
        let keys = [key.public_key()];
        for cut in 0..p.signed.len() {
            assert!(verify(&p.signed[..cut], &keys).is_err());
        }
        let mut longer = p.signed.clone();
        longer.push(0);
        assert_eq!(verify(&longer, &keys), Err(UpdateError::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn body_round_trip(
            channel in "[a-z]{1,32}",
            major: u32, minor: u32, patch: u32,
            size in 1u64..=MAX_BINARY_LEN,
            digest: [u8; 32],
            head: [u8; 16],
            url in proptest::option::of("[a-z:/.]{1,100}"),
        ) {
            let m = Manifest {
                channel,
                version: Version { major, minor, patch },
                size,
                digest,
                head,
                url,
            };
            proptest::prop_assert_eq!(Manifest::parse_body(&m.to_body()), Ok(m));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Manifest::parse_body(&bytes);
            let _ = split_signed(&bytes);
        }
    }
}
