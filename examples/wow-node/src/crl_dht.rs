//! CRLs in the DHT, in chunks.
//!
//! A DHT value holds at most [`MAX_VALUE_LEN`] (1 KiB) bytes, about twenty
//! revocations. A CRL envelope is therefore stored as a [`Manifest`] under
//! the key `wow/crl` (its length, its chunk count and its SHA-256) and its
//! bytes in chunks of [`CHUNK_LEN`] under `wow/crl-chunk/<digest prefix,
//! index>`. A fetcher reads the manifest, then the chunks, and accepts the
//! envelope only if the SHA-256 of the joined chunks is the manifest's (the
//! envelope's own CA signature is checked after that, by ipsec-ca). A value
//! under `wow/crl` that is not a manifest is taken as a whole envelope, as
//! nodes before this format stored it.
//!
//! ```
//! use wow_node::crl_dht::{Assembly, Manifest};
//!
//! let envelope: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
//! let (manifest, chunks) = Manifest::split(&envelope).unwrap();
//! assert_eq!(chunks.len(), 5);
//! let bytes = manifest.to_bytes();
//! let parsed = Manifest::parse(&bytes).unwrap();
//! let mut assembly = Assembly::new(parsed);
//! for (i, c) in chunks.iter().enumerate().rev() {
//!     assembly.insert(i, c);
//! }
//! assert_eq!(assembly.finish().unwrap(), envelope);
//! ```

use overlay_core::wire::MAX_VALUE_LEN;
use ring::digest;

/// Bytes per chunk: one DHT value.
pub const CHUNK_LEN: usize = MAX_VALUE_LEN;
/// Longest CRL envelope stored (256 chunks, several thousand revocations).
pub const MAX_CRL_LEN: usize = 256 * CHUNK_LEN;
/// Length of a manifest.
pub const MANIFEST_LEN: usize = 4 + 1 + 2 + 4 + 32;
const MAGIC: &[u8; 4] = b"WCRL";
const VERSION: u8 = 1;

/// Why bytes are not a manifest, or an envelope cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not [`MANIFEST_LEN`] bytes starting with the magic `WCRL`.
    #[error("not a CRL manifest")]
    NotManifest,
    /// A manifest of another version.
    #[error("CRL manifest version {0} not supported")]
    Version(u8),
    /// Length and chunk count disagree, or the length is out of range.
    #[error("inconsistent CRL manifest: {len} bytes in {chunks} chunks")]
    Inconsistent {
        /// Envelope length.
        len: u32,
        /// Chunk count.
        chunks: u16,
    },
    /// The envelope is empty or longer than [`MAX_CRL_LEN`].
    #[error("CRL envelope of {0} bytes cannot be stored (1..={MAX_CRL_LEN})")]
    Size(usize),
}

/// What `wow/crl` holds: how to find and check the chunks of one envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// Envelope length in bytes.
    pub len: u32,
    /// Number of chunks.
    pub chunks: u16,
    /// SHA-256 of the envelope.
    pub digest: [u8; 32],
}

impl Manifest {
    /// The manifest and the chunks of `envelope`.
    pub fn split(envelope: &[u8]) -> Result<(Manifest, Vec<&[u8]>), ManifestError> {
        if envelope.is_empty() || envelope.len() > MAX_CRL_LEN {
            return Err(ManifestError::Size(envelope.len()));
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(digest::digest(&digest::SHA256, envelope).as_ref());
        let chunks: Vec<&[u8]> = envelope.chunks(CHUNK_LEN).collect();
        Ok((
            Manifest {
                len: envelope.len() as u32,
                chunks: chunks.len() as u16,
                digest: d,
            },
            chunks,
        ))
    }

    /// Reads a manifest; checks that length and chunk count agree.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() != MANIFEST_LEN || &bytes[..4] != MAGIC {
            return Err(ManifestError::NotManifest);
        }
        if bytes[4] != VERSION {
            return Err(ManifestError::Version(bytes[4]));
        }
        let chunks = u16::from_be_bytes([bytes[5], bytes[6]]);
        let len = u32::from_be_bytes([bytes[7], bytes[8], bytes[9], bytes[10]]);
        let l = len as usize;
        if l == 0 || l > MAX_CRL_LEN || l.div_ceil(CHUNK_LEN) != usize::from(chunks) {
            return Err(ManifestError::Inconsistent { len, chunks });
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[11..]);
        Ok(Manifest {
            len,
            chunks,
            digest,
        })
    }

    /// The manifest's bytes.
    pub fn to_bytes(&self) -> [u8; MANIFEST_LEN] {
        let mut b = [0u8; MANIFEST_LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5..7].copy_from_slice(&self.chunks.to_be_bytes());
        b[7..11].copy_from_slice(&self.len.to_be_bytes());
        b[11..].copy_from_slice(&self.digest);
        b
    }

    /// The DHT key suffix of chunk `index`: a digest prefix and the index.
    pub fn chunk_suffix(&self, index: u16) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[..16].copy_from_slice(&self.digest[..16]);
        s[16..].copy_from_slice(&index.to_be_bytes());
        s
    }

    /// Expected length of chunk `index`.
    fn chunk_len(&self, index: usize) -> usize {
        let len = self.len as usize;
        len.saturating_sub(index * CHUNK_LEN).min(CHUNK_LEN)
    }
}

/// Chunks of one envelope as they arrive.
#[derive(Debug, Clone)]
pub struct Assembly {
    manifest: Manifest,
    chunks: Vec<Option<Vec<u8>>>,
}

impl Assembly {
    /// Waiting for every chunk of `manifest`.
    pub fn new(manifest: Manifest) -> Assembly {
        Assembly {
            manifest,
            chunks: vec![None; usize::from(manifest.chunks)],
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Takes chunk `index` if it has the expected length; `false` if not.
    pub fn insert(&mut self, index: usize, bytes: &[u8]) -> bool {
        let expected = self.manifest.chunk_len(index);
        match self.chunks.get_mut(index) {
            Some(slot) if bytes.len() == expected => {
                *slot = Some(bytes.to_vec());
                true
            }
            _ => false,
        }
    }

    /// Whether every chunk has arrived.
    pub fn is_complete(&self) -> bool {
        self.chunks.iter().all(Option::is_some)
    }

    /// The envelope, if every chunk arrived and the digest matches.
    pub fn finish(&self) -> Option<Vec<u8>> {
        let mut envelope = Vec::with_capacity(self.manifest.len as usize);
        for c in &self.chunks {
            envelope.extend_from_slice(c.as_deref()?);
        }
        let d = digest::digest(&digest::SHA256, &envelope);
        (d.as_ref() == self.manifest.digest).then_some(envelope)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn manifests_round_trip(len in 1u32..=MAX_CRL_LEN as u32, digest in any::<[u8; 32]>()) {
            let m = Manifest {
                len,
                chunks: (len as usize).div_ceil(CHUNK_LEN) as u16,
                digest,
            };
            prop_assert_eq!(Manifest::parse(&m.to_bytes()), Ok(m));
        }

        #[test]
        fn envelopes_reassemble_in_any_order(
            envelope in proptest::collection::vec(any::<u8>(), 1..9000),
            seed in any::<u64>(),
        ) {
            let (m, chunks) = Manifest::split(&envelope).unwrap();
            let mut a = Assembly::new(Manifest::parse(&m.to_bytes()).unwrap());
            let n = chunks.len();
            for k in 0..n {
                let i = (k + seed as usize) % n;
                prop_assert!(!a.is_complete());
                prop_assert!(a.insert(i, chunks[i]));
            }
            prop_assert!(a.is_complete());
            prop_assert_eq!(a.finish(), Some(envelope));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(m) = Manifest::parse(&bytes) {
                prop_assert_eq!(&m.to_bytes()[..], &bytes[..]);
            }
        }
    }

    #[test]
    fn bad_manifests_and_chunks_are_refused() {
        let envelope = vec![7u8; 2500];
        let (m, chunks) = Manifest::split(&envelope).unwrap();
        assert_eq!((m.len, m.chunks), (2500, 3));
        let mut b = m.to_bytes();
        b[4] = 2;
        assert_eq!(Manifest::parse(&b), Err(ManifestError::Version(2)));
        let mut b = m.to_bytes();
        b[6] = 4; // four chunks for 2500 bytes
        assert!(matches!(
            Manifest::parse(&b),
            Err(ManifestError::Inconsistent { .. })
        ));
        assert_eq!(Manifest::parse(&b[..20]), Err(ManifestError::NotManifest));
        assert_eq!(Manifest::split(&[]), Err(ManifestError::Size(0)));
        assert_eq!(
            Manifest::split(&vec![0; MAX_CRL_LEN + 1]).map(|_| ()),
            Err(ManifestError::Size(MAX_CRL_LEN + 1))
        );

        let mut a = Assembly::new(m);
        // Wrong length for its place, out of range.
        assert!(!a.insert(2, chunks[0]));
        assert!(!a.insert(3, chunks[2]));
        a.insert(0, chunks[0]);
        a.insert(1, chunks[1]);
        assert_eq!(a.finish(), None, "incomplete");
        // A chunk of the right length but other bytes: the digest refuses it.
        a.insert(2, &vec![8u8; chunks[2].len()]);
        assert!(a.is_complete());
        assert_eq!(a.finish(), None);
        a.insert(2, chunks[2]);
        assert_eq!(a.finish(), Some(envelope));
    }
}
