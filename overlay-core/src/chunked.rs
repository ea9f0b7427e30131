//! Values larger than one DHT value, as a manifest plus chunks (cargo
//! feature `chunked`).
//!
//! A DHT value holds at most [`MAX_VALUE_LEN`] bytes. A larger value is
//! cut into chunks of [`CHUNK_LEN`] bytes, each stored under its own key
//! ([`Manifest::chunk_key`]: a caller's prefix, a prefix of the value's
//! digest and the chunk's index), and described by a [`Manifest`]: a
//! sequence number chosen by the writer (for example a CRL number), the
//! value's length and SHA-256, and the (truncated) SHA-256 of every chunk.
//! A reader gets the manifest, then the chunks, and an [`Assembly`] takes a
//! chunk only if its length and digest match the manifest, so a wrong
//! chunk from one replica or one writer is refused (and can be asked again)
//! without spoiling the others; the joined value must match the overall
//! digest.
//!
//! **The manifest's authentication is the caller's.** This module only
//! binds the chunks to the manifest. Whoever can replace the manifest can
//! replace the whole value, so the caller must sign the manifest's body
//! ([`Manifest::to_body`]) with a key readers trust, and check that
//! signature before [`Manifest::parse_body`] (wow-node signs it with its CA
//! key and stores the signed statement under one DHT key). Records of the
//! DHT are signed by their writer already ([`crate::record`]), but any
//! member may write under any key, so a record's signature alone does not
//! say that the manifest is the right one.
//!
//! ```
//! use overlay_core::chunked::{Assembly, Manifest};
//!
//! let value: Vec<u8> = (0..5000u32).map(|i| (i / 3) as u8).collect();
//! let (manifest, chunks) = Manifest::split(7, &value).unwrap();
//! assert_eq!(chunks.len(), 5);
//! let body = manifest.to_body(); // sign this, store it under one key
//! let key = manifest.chunk_key(b"app/chunk/", 0); // where chunk 0 goes
//! # let _ = key;
//! // A reader: the manifest (signature checked by the caller), then chunks.
//! let mut assembly = Assembly::new(Manifest::parse_body(&body).unwrap());
//! assert!(!assembly.insert(0, chunks[1]), "a chunk in the wrong place");
//! for (i, c) in chunks.iter().enumerate().rev() {
//!     assert!(assembly.insert(i, c));
//! }
//! assert_eq!(assembly.finish().unwrap(), value);
//! ```
//!
//! The body format (version 2; big-endian): version `u8`, number `u64`,
//! length `u32`, SHA-256 of the value `[u8; 32]`, then one
//! [`CHUNK_DIGEST_LEN`]-byte digest per chunk. The format is wow-node's
//! CRL manifest, unchanged.

use sha2::{Digest, Sha256};

use crate::wire::MAX_VALUE_LEN;

/// Bytes per chunk: one DHT value.
pub const CHUNK_LEN: usize = MAX_VALUE_LEN;
/// Bytes of a chunk's digest in the manifest: SHA-256 truncated to 128
/// bits. The chunks are the manifest signer's, so only second preimages
/// matter (2^128 work).
pub const CHUNK_DIGEST_LEN: usize = 16;
/// Most chunks of one value, so that a manifest body (45 + 16 bytes per
/// chunk) plus a signature of up to about 200 bytes fits one DHT value.
pub const MAX_CHUNKS: usize = 48;
/// Longest value stored in chunks (48 KiB).
pub const MAX_LEN: usize = MAX_CHUNKS * CHUNK_LEN;
/// Manifest format version.
const VERSION: u8 = 2;
/// Version, number, length, digest.
const BODY_HEADER_LEN: usize = 1 + 8 + 4 + 32;
/// Bytes of the value's digest in a chunk key.
const KEY_DIGEST_LEN: usize = 16;

/// Why bytes are not a manifest, or a value cannot be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Too short to be a manifest body.
    #[error("not a chunk manifest")]
    NotManifest,
    /// A manifest of another version.
    #[error("chunk manifest version {0} not supported")]
    Version(u8),
    /// Length and chunk digests disagree, or the length is out of range.
    #[error("inconsistent chunk manifest: {len} bytes, {chunks} chunk digests")]
    Inconsistent {
        /// Value length.
        len: u32,
        /// Chunk digests present.
        chunks: usize,
    },
    /// The value is empty or longer than [`MAX_LEN`].
    #[error("value of {0} bytes cannot be stored in chunks (1..={MAX_LEN})")]
    Size(usize),
}

/// A chunked value as its writer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The writer's sequence number (a reader keeps the highest it trusts).
    pub number: u64,
    /// Value length in bytes.
    pub len: u32,
    /// SHA-256 of the value.
    pub digest: [u8; 32],
    /// Truncated SHA-256 of each chunk, in order.
    pub chunk_digests: Vec<[u8; CHUNK_DIGEST_LEN]>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn chunk_digest(chunk: &[u8]) -> [u8; CHUNK_DIGEST_LEN] {
    let mut d = [0u8; CHUNK_DIGEST_LEN];
    d.copy_from_slice(&sha256(chunk)[..CHUNK_DIGEST_LEN]);
    d
}

impl Manifest {
    /// The manifest (with sequence `number`) and the chunks of `value`.
    pub fn split(number: u64, value: &[u8]) -> Result<(Manifest, Vec<&[u8]>), ManifestError> {
        if value.is_empty() || value.len() > MAX_LEN {
            return Err(ManifestError::Size(value.len()));
        }
        let chunks: Vec<&[u8]> = value.chunks(CHUNK_LEN).collect();
        let manifest = Manifest {
            number,
            // At most MAX_LEN, checked above.
            len: u32::try_from(value.len()).map_err(|_| ManifestError::Size(value.len()))?,
            digest: sha256(value),
            chunk_digests: chunks.iter().map(|c| chunk_digest(c)).collect(),
        };
        Ok((manifest, chunks))
    }

    /// Reads a manifest body. Check the caller's signature over `bytes`
    /// first (see the [module docs](self)).
    pub fn parse_body(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let Some((header, digests)) = bytes.split_at_checked(BODY_HEADER_LEN) else {
            return Err(ManifestError::NotManifest);
        };
        let mut fixed = [0u8; BODY_HEADER_LEN];
        fixed.copy_from_slice(header);
        if fixed[0] != VERSION {
            return Err(ManifestError::Version(fixed[0]));
        }
        let mut number = [0u8; 8];
        number.copy_from_slice(&fixed[1..9]);
        let len = u32::from_be_bytes([fixed[9], fixed[10], fixed[11], fixed[12]]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&fixed[13..45]);
        let l = len as usize;
        let chunks = digests.len() / CHUNK_DIGEST_LEN;
        if l == 0
            || l > MAX_LEN
            || !digests.len().is_multiple_of(CHUNK_DIGEST_LEN)
            || l.div_ceil(CHUNK_LEN) != chunks
        {
            return Err(ManifestError::Inconsistent { len, chunks });
        }
        let chunk_digests = digests
            .chunks_exact(CHUNK_DIGEST_LEN)
            .map(|c| {
                let mut d = [0u8; CHUNK_DIGEST_LEN];
                d.copy_from_slice(c);
                d
            })
            .collect();
        Ok(Manifest {
            number: u64::from_be_bytes(number),
            len,
            digest,
            chunk_digests,
        })
    }

    /// The manifest's body: what the caller signs and stores.
    pub fn to_body(&self) -> Vec<u8> {
        let mut b =
            Vec::with_capacity(BODY_HEADER_LEN + CHUNK_DIGEST_LEN * self.chunk_digests.len());
        b.push(VERSION);
        b.extend_from_slice(&self.number.to_be_bytes());
        b.extend_from_slice(&self.len.to_be_bytes());
        b.extend_from_slice(&self.digest);
        for d in &self.chunk_digests {
            b.extend_from_slice(d);
        }
        b
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u16 {
        // At most MAX_CHUNKS for a split or parsed manifest.
        u16::try_from(self.chunk_digests.len()).unwrap_or(u16::MAX)
    }

    /// The key suffix of chunk `index`: a prefix of the value's digest and
    /// the index (so chunks of different values never share a key).
    pub fn chunk_suffix(&self, index: u16) -> [u8; KEY_DIGEST_LEN + 2] {
        let mut s = [0u8; KEY_DIGEST_LEN + 2];
        s[..KEY_DIGEST_LEN].copy_from_slice(&self.digest[..KEY_DIGEST_LEN]);
        s[KEY_DIGEST_LEN..].copy_from_slice(&index.to_be_bytes());
        s
    }

    /// The DHT key of chunk `index`: `prefix` then
    /// [`chunk_suffix`](Self::chunk_suffix).
    pub fn chunk_key(&self, prefix: &[u8], index: u16) -> Vec<u8> {
        let mut key = prefix.to_vec();
        key.extend_from_slice(&self.chunk_suffix(index));
        key
    }

    /// Whether `bytes` is chunk `index`: its length and its digest.
    pub fn chunk_matches(&self, index: usize, bytes: &[u8]) -> bool {
        let expected = (self.len as usize)
            .saturating_sub(index.saturating_mul(CHUNK_LEN))
            .min(CHUNK_LEN);
        expected > 0
            && bytes.len() == expected
            && self.chunk_digests.get(index) == Some(&chunk_digest(bytes))
    }
}

/// The chunks of one value as they arrive.
#[derive(Debug, Clone)]
pub struct Assembly {
    manifest: Manifest,
    chunks: Vec<Option<Vec<u8>>>,
}

impl Assembly {
    /// Waiting for every chunk of `manifest`.
    pub fn new(manifest: Manifest) -> Assembly {
        let n = manifest.chunk_digests.len();
        Assembly {
            manifest,
            chunks: vec![None; n],
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Takes chunk `index` if it matches the manifest (length and digest);
    /// `false` (and nothing changes) if not.
    pub fn insert(&mut self, index: usize, bytes: &[u8]) -> bool {
        if !self.manifest.chunk_matches(index, bytes) {
            return false;
        }
        match self.chunks.get_mut(index) {
            Some(slot) => {
                *slot = Some(bytes.to_vec());
                true
            }
            None => false,
        }
    }

    /// Whether chunk `index` has arrived (`false` past the last chunk).
    pub fn has(&self, index: usize) -> bool {
        self.chunks.get(index).is_some_and(Option::is_some)
    }

    /// Indices of the chunks still missing.
    pub fn missing(&self) -> Vec<u16> {
        (0..self.manifest.chunks())
            .filter(|&i| self.chunks.get(usize::from(i)).is_some_and(Option::is_none))
            .collect()
    }

    /// Whether every chunk has arrived.
    pub fn is_complete(&self) -> bool {
        self.chunks.iter().all(Option::is_some)
    }

    /// The value, if every chunk arrived and the joined value matches the
    /// manifest's digest.
    pub fn finish(&self) -> Option<Vec<u8>> {
        let mut value = Vec::with_capacity(self.manifest.len as usize);
        for c in &self.chunks {
            value.extend_from_slice(c.as_deref()?);
        }
        (sha256(&value) == self.manifest.digest).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn split_sizes_and_limits() {
        assert_eq!(Manifest::split(1, &[]), Err(ManifestError::Size(0)));
        let too_long = vec![0u8; MAX_LEN + 1];
        assert_eq!(
            Manifest::split(1, &too_long),
            Err(ManifestError::Size(MAX_LEN + 1))
        );
        let full = vec![7u8; MAX_LEN];
        let (m, chunks) = Manifest::split(1, &full).unwrap();
        assert_eq!(usize::from(m.chunks()), MAX_CHUNKS);
        assert!(chunks.iter().all(|c| c.len() == CHUNK_LEN));
        let (m, chunks) = Manifest::split(1, &[1, 2, 3]).unwrap();
        assert_eq!((m.chunks(), chunks.len(), m.len), (1, 1, 3));
        // The signed body fits one DHT value with room for a signature.
        let (m, _) = Manifest::split(1, &vec![7u8; MAX_LEN]).unwrap();
        assert!(m.to_body().len() + 200 <= MAX_VALUE_LEN);
    }

    #[test]
    fn parse_refuses_malformed_bodies() {
        let (m, _) = Manifest::split(9, &[5u8; 3000]).unwrap();
        let body = m.to_body();
        assert_eq!(Manifest::parse_body(&body).unwrap(), m);
        assert_eq!(
            Manifest::parse_body(&body[..10]),
            Err(ManifestError::NotManifest)
        );
        let mut other = body.clone();
        other[0] = 3;
        assert_eq!(Manifest::parse_body(&other), Err(ManifestError::Version(3)));
        // One digest missing, one too many, a ragged tail, a zero length.
        for bad in [
            body[..body.len() - CHUNK_DIGEST_LEN].to_vec(),
            [&body[..], &[0u8; CHUNK_DIGEST_LEN]].concat(),
            body[..body.len() - 1].to_vec(),
            {
                let mut b = body.clone();
                b[9..13].copy_from_slice(&0u32.to_be_bytes());
                b
            },
        ] {
            assert!(matches!(
                Manifest::parse_body(&bad),
                Err(ManifestError::Inconsistent { .. })
            ));
        }
    }

    #[test]
    fn chunk_keys_differ_per_value_and_index() {
        let (a, _) = Manifest::split(1, b"one value").unwrap();
        let (b, _) = Manifest::split(1, b"another value").unwrap();
        assert_ne!(a.chunk_key(b"p/", 0), b.chunk_key(b"p/", 0));
        assert_ne!(a.chunk_key(b"p/", 0), a.chunk_key(b"p/", 1));
        assert!(a.chunk_key(b"p/", 0).starts_with(b"p/"));
        assert_eq!(a.chunk_key(b"p/", 0).len(), 2 + KEY_DIGEST_LEN + 2);
    }

    #[test]
    fn missing_and_complete() {
        let value = vec![3u8; 2 * CHUNK_LEN + 1];
        let (m, chunks) = Manifest::split(1, &value).unwrap();
        let mut a = Assembly::new(m);
        assert_eq!(a.missing(), vec![0, 1, 2]);
        assert!(!a.has(1));
        assert!(a.insert(1, chunks[1]));
        assert_eq!(a.missing(), vec![0, 2]);
        assert!(a.has(1) && !a.has(0) && !a.has(3));
        assert!(!a.is_complete());
        assert_eq!(a.finish(), None);
        assert!(a.insert(0, chunks[0]) && a.insert(2, chunks[2]));
        assert!(a.is_complete());
        assert_eq!(a.finish(), Some(value));
    }
}
