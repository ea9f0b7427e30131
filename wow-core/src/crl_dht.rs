//! CRLs through the overlay: a signed manifest, then 1 KiB chunks.
//!
//! A DHT value holds at most [`MAX_VALUE_LEN`] (1 KiB) bytes, about twenty
//! revocations. A CRL envelope is therefore described by a [`Manifest`] —
//! its CRL number, length, SHA-256 and the digest of every chunk — that the
//! CA signs as a statement labelled [`MANIFEST_LABEL`]
//! ([`ipsec_ca::CaIdentity::sign_statement`]). The signed manifest is stored
//! under the DHT key `wow/crl`, the chunks (of [`CHUNK_LEN`]) under
//! `wow/crl-chunk/<digest prefix, index>`, and the CA node answers the same
//! manifest and chunks over the overlay ([`Message`]).
//!
//! A fetcher ([`Fetcher`]) reads every value under `wow/crl`, ignores those
//! that are not manifests signed by its CA, keeps the highest CRL number
//! above the one it holds, and takes each chunk only if it matches its
//! digest: a wrong chunk from one replica or value is skipped and the chunk
//! asked again, it does not abort the assembly. The joined envelope must
//! match the overall digest; its CA signature and CRL number are checked
//! after that, by ipsec-ca, which never installs a CRL older than the
//! loaded one.
//!
//! ```
//! use wow_core::crl_dht::{Assembly, Manifest};
//!
//! let envelope: Vec<u8> = (0..5000u32).map(|i| (i / 3) as u8).collect();
//! let (manifest, chunks) = Manifest::split(7, &envelope).unwrap();
//! assert_eq!(chunks.len(), 5);
//! let parsed = Manifest::parse_body(&manifest.to_body()).unwrap();
//! let mut assembly = Assembly::new(parsed);
//! assert!(!assembly.insert(0, chunks[1]), "a chunk in the wrong place");
//! for (i, c) in chunks.iter().enumerate().rev() {
//!     assert!(assembly.insert(i, c));
//! }
//! assert_eq!(assembly.finish().unwrap(), envelope);
//! ```

use overlay_core::wire::MAX_VALUE_LEN;
use ring::digest;

/// The statement label of a signed CRL manifest.
pub const MANIFEST_LABEL: &[u8] = b"wow/crl-manifest";
/// Bytes per chunk: one DHT value.
pub const CHUNK_LEN: usize = MAX_VALUE_LEN;
/// Bytes of a chunk's digest in the manifest (SHA-256, truncated; the
/// chunks are the CA's, so only second preimages matter: 2^128 work).
pub const CHUNK_DIGEST_LEN: usize = 16;
/// Most chunks of one CRL, so that the signed manifest fits one DHT value.
pub const MAX_CHUNKS: usize = 48;
/// Longest CRL envelope stored (48 chunks, about a thousand revocations).
pub const MAX_CRL_LEN: usize = MAX_CHUNKS * CHUNK_LEN;
/// Manifest version.
const VERSION: u8 = 2;
/// Version, CRL number, length, digest.
const BODY_HEADER_LEN: usize = 1 + 8 + 4 + 32;
/// Times a chunk is asked again after wrong answers, per fetch round.
const CHUNK_RETRIES: u8 = 3;

/// Why bytes are not a manifest, or an envelope cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not a manifest body.
    #[error("not a CRL manifest")]
    NotManifest,
    /// A manifest of another version.
    #[error("CRL manifest version {0} not supported")]
    Version(u8),
    /// Length and chunk digests disagree, or the length is out of range.
    #[error("inconsistent CRL manifest: {len} bytes, {chunks} chunk digests")]
    Inconsistent {
        /// Envelope length.
        len: u32,
        /// Chunk digests present.
        chunks: usize,
    },
    /// The envelope is empty or longer than [`MAX_CRL_LEN`].
    #[error("CRL envelope of {0} bytes cannot be stored (1..={MAX_CRL_LEN})")]
    Size(usize),
    /// Not signed by the trusted CA (or not a manifest statement).
    #[error("CRL manifest not signed by the CA")]
    Signature,
    /// The CA key could not sign.
    #[error("cannot sign the CRL manifest")]
    Sign,
}

/// One CRL envelope as the CA describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The CRL number (the envelope's, RFC 5280 §5.2.3).
    pub number: u64,
    /// Envelope length in bytes.
    pub len: u32,
    /// SHA-256 of the envelope.
    pub digest: [u8; 32],
    /// Truncated SHA-256 of each chunk, in order.
    pub chunk_digests: Vec<[u8; CHUNK_DIGEST_LEN]>,
}

fn chunk_digest(chunk: &[u8]) -> [u8; CHUNK_DIGEST_LEN] {
    let mut d = [0u8; CHUNK_DIGEST_LEN];
    d.copy_from_slice(&digest::digest(&digest::SHA256, chunk).as_ref()[..CHUNK_DIGEST_LEN]);
    d
}

impl Manifest {
    /// The manifest (for CRL `number`) and the chunks of `envelope`.
    pub fn split(number: u64, envelope: &[u8]) -> Result<(Manifest, Vec<&[u8]>), ManifestError> {
        if envelope.is_empty() || envelope.len() > MAX_CRL_LEN {
            return Err(ManifestError::Size(envelope.len()));
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(digest::digest(&digest::SHA256, envelope).as_ref());
        let chunks: Vec<&[u8]> = envelope.chunks(CHUNK_LEN).collect();
        Ok((
            Manifest {
                number,
                len: envelope.len() as u32,
                digest: d,
                chunk_digests: chunks.iter().map(|c| chunk_digest(c)).collect(),
            },
            chunks,
        ))
    }

    /// Reads a manifest body (the signed statement's body).
    pub fn parse_body(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() < BODY_HEADER_LEN {
            return Err(ManifestError::NotManifest);
        }
        let (header, digests) = bytes.split_at(BODY_HEADER_LEN);
        if header[0] != VERSION {
            return Err(ManifestError::Version(header[0]));
        }
        let mut number = [0u8; 8];
        number.copy_from_slice(&header[1..9]);
        let len = u32::from_be_bytes([header[9], header[10], header[11], header[12]]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&header[13..45]);
        let l = len as usize;
        let chunks = digests.len() / CHUNK_DIGEST_LEN;
        if l == 0
            || l > MAX_CRL_LEN
            || digests.len() % CHUNK_DIGEST_LEN != 0
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

    /// The manifest's body, to be signed.
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

    /// The manifest signed by `ca`: what `wow/crl` holds.
    pub fn sign(&self, ca: &ipsec_ca::CaIdentity) -> Result<Vec<u8>, ManifestError> {
        ca.sign_statement(MANIFEST_LABEL, &self.to_body())
            .map_err(|_| ManifestError::Sign)
    }

    /// The manifest in `signed`, if the CA `verifier` trusts signed it.
    pub fn verify(verifier: &ipsec_ca::Verifier, signed: &[u8]) -> Result<Manifest, ManifestError> {
        let body = verifier
            .verify_statement(MANIFEST_LABEL, signed)
            .map_err(|_| ManifestError::Signature)?;
        Manifest::parse_body(body)
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u16 {
        self.chunk_digests.len() as u16
    }

    /// The DHT key suffix of chunk `index`: a digest prefix and the index.
    pub fn chunk_suffix(&self, index: u16) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[..16].copy_from_slice(&self.digest[..16]);
        s[16..].copy_from_slice(&index.to_be_bytes());
        s
    }

    /// Whether `bytes` is chunk `index`: its length and digest.
    pub fn chunk_matches(&self, index: usize, bytes: &[u8]) -> bool {
        let expected = (self.len as usize)
            .saturating_sub(index * CHUNK_LEN)
            .min(CHUNK_LEN);
        expected > 0
            && bytes.len() == expected
            && self.chunk_digests.get(index) == Some(&chunk_digest(bytes))
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

    /// Takes chunk `index` if it matches its digest; `false` if not.
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

    /// Chunks still missing.
    pub fn missing(&self) -> Vec<u16> {
        (0..self.manifest.chunks())
            .filter(|&i| self.chunks.get(usize::from(i)).is_some_and(Option::is_none))
            .collect()
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

/// What a chunk answer did (see [`Fetcher::offer_chunk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Not for the assembly under way (or already held).
    Ignored,
    /// Stored; more chunks missing.
    Stored,
    /// No value matched the chunk's digest: ask again (`true`) or wait for
    /// the next fetch round (`false`).
    Bad(bool),
    /// The last chunk: the whole envelope, digest checked.
    Complete(Vec<u8>),
}

/// The CRL fetch in progress: the best signed manifest seen and its chunks.
#[derive(Debug, Clone, Default)]
pub struct Fetcher {
    assembly: Option<Assembly>,
    retries: Vec<u8>,
    /// Highest CRL number assembled.
    fetched: u64,
}

impl Fetcher {
    /// Offers manifest values (signed statements, from the DHT or the CA).
    /// Unsigned or wrongly signed ones are ignored; among the others the
    /// highest CRL number wins, if it is above `loaded` (the CRL held), the
    /// last one assembled and the one under way. Returns the manifest newly
    /// chosen, whose chunks are to be fetched.
    pub fn offer_manifests<'a>(
        &mut self,
        verifier: &ipsec_ca::Verifier,
        loaded: u64,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<&Manifest> {
        let best = values
            .into_iter()
            .filter_map(|v| match Manifest::verify(verifier, v) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::debug!(error = %e, "CRL manifest ignored");
                    None
                }
            })
            .max_by_key(|m| m.number)?;
        let floor = loaded
            .max(self.fetched)
            .max(self.assembly.as_ref().map_or(0, |a| a.manifest.number));
        if best.number <= floor {
            return None;
        }
        self.retries = vec![0; best.chunk_digests.len()];
        let assembly = self.assembly.insert(Assembly::new(best));
        Some(&assembly.manifest)
    }

    /// The manifest under way.
    pub fn current(&self) -> Option<&Manifest> {
        self.assembly.as_ref().map(Assembly::manifest)
    }

    /// Chunks of the manifest under way still missing; starts a new round
    /// of retries.
    pub fn missing(&mut self) -> Vec<u16> {
        self.retries.iter_mut().for_each(|r| *r = 0);
        self.assembly
            .as_ref()
            .map(Assembly::missing)
            .unwrap_or_default()
    }

    /// Offers the values found for chunk `index` of CRL `number`: the first
    /// that matches the chunk's digest is kept, the others are skipped.
    pub fn offer_chunk<'a>(
        &mut self,
        number: u64,
        index: u16,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> ChunkOutcome {
        let Some(assembly) = self
            .assembly
            .as_mut()
            .filter(|a| a.manifest.number == number)
        else {
            return ChunkOutcome::Ignored;
        };
        let i = usize::from(index);
        if assembly.chunks.get(i).is_none_or(Option::is_some) {
            return ChunkOutcome::Ignored;
        }
        if !values.into_iter().any(|v| assembly.insert(i, v)) {
            let retry = self.retries.get_mut(i).is_some_and(|r| {
                *r += 1;
                *r <= CHUNK_RETRIES
            });
            return ChunkOutcome::Bad(retry);
        }
        if !assembly.is_complete() {
            return ChunkOutcome::Stored;
        }
        let envelope = assembly.finish();
        self.assembly = None;
        match envelope {
            Some(envelope) => {
                self.fetched = number;
                ChunkOutcome::Complete(envelope)
            }
            // Every chunk matched its digest but not the whole: the CA
            // signed an inconsistent manifest.
            None => ChunkOutcome::Ignored,
        }
    }
}

/// A CRL message between a node and the CA node, over the overlay (wire
/// kind 6). Answers need no trust in the sender: manifests are signed,
/// chunks checked against them.
///
/// ```text
/// 1                               manifest request
/// 2 | number u64 | index u16      chunk request
/// 3 | signed manifest             manifest answer
/// 4 | number u64 | index u16 | chunk   chunk answer
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Send me your signed manifest.
    ManifestRequest,
    /// Send me chunk `index` of CRL `number`.
    ChunkRequest {
        /// CRL number.
        number: u64,
        /// Chunk index.
        index: u16,
    },
    /// The CA's signed manifest.
    Manifest(&'a [u8]),
    /// Chunk `index` of CRL `number`.
    Chunk {
        /// CRL number.
        number: u64,
        /// Chunk index.
        index: u16,
        /// The chunk.
        bytes: &'a [u8],
    },
}

impl<'a> Message<'a> {
    /// Parses a message; `None` if malformed.
    pub fn parse(bytes: &'a [u8]) -> Option<Message<'a>> {
        let (&op, rest) = bytes.split_first()?;
        let numbered = |rest: &'a [u8]| -> Option<(u64, u16, &'a [u8])> {
            let number = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            let index = u16::from_be_bytes(rest.get(8..10)?.try_into().ok()?);
            Some((number, index, rest.get(10..)?))
        };
        match op {
            1 if rest.is_empty() => Some(Message::ManifestRequest),
            2 => match numbered(rest)? {
                (number, index, []) => Some(Message::ChunkRequest { number, index }),
                _ => None,
            },
            3 if !rest.is_empty() => Some(Message::Manifest(rest)),
            4 => {
                let (number, index, bytes) = numbered(rest)?;
                Some(Message::Chunk {
                    number,
                    index,
                    bytes,
                })
            }
            _ => None,
        }
    }

    /// The message's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match *self {
            Message::ManifestRequest => b.push(1),
            Message::ChunkRequest { number, index } => {
                b.push(2);
                b.extend_from_slice(&number.to_be_bytes());
                b.extend_from_slice(&index.to_be_bytes());
            }
            Message::Manifest(signed) => {
                b.push(3);
                b.extend_from_slice(signed);
            }
            Message::Chunk {
                number,
                index,
                bytes,
            } => {
                b.push(4);
                b.extend_from_slice(&number.to_be_bytes());
                b.extend_from_slice(&index.to_be_bytes());
                b.extend_from_slice(bytes);
            }
        }
        b
    }
}

/// A CRL the CA node serves: its signed manifest and envelope.
#[derive(Debug, Clone)]
pub struct Published {
    /// The manifest.
    pub manifest: Manifest,
    /// The manifest signed by the CA.
    pub signed: Vec<u8>,
    /// The envelope.
    pub envelope: Vec<u8>,
}

impl Published {
    /// Describes and signs `envelope` (CRL `number`) with `ca`.
    pub fn new(
        ca: &ipsec_ca::CaIdentity,
        number: u64,
        envelope: Vec<u8>,
    ) -> Result<Published, ManifestError> {
        let (manifest, _) = Manifest::split(number, &envelope)?;
        let signed = manifest.sign(ca)?;
        Ok(Published {
            manifest,
            signed,
            envelope,
        })
    }

    /// A manifest signed elsewhere (by `wow-node ca`, see
    /// [`manifest_path`]) and the envelope it describes; the signature is
    /// left to fetchers, the description is checked here.
    pub fn from_signed(signed: Vec<u8>, envelope: Vec<u8>) -> Result<Published, ManifestError> {
        let statement =
            ipsec_ca::wire::Statement::parse(&signed).map_err(|_| ManifestError::Signature)?;
        if statement.label != MANIFEST_LABEL {
            return Err(ManifestError::Signature);
        }
        let manifest = Manifest::parse_body(statement.body)?;
        let (expected, _) = Manifest::split(manifest.number, &envelope)?;
        if expected != manifest {
            return Err(ManifestError::NotManifest);
        }
        Ok(Published {
            manifest,
            signed,
            envelope,
        })
    }

    /// Chunk `index`, if it exists.
    pub fn chunk(&self, index: u16) -> Option<&[u8]> {
        self.envelope.chunks(CHUNK_LEN).nth(usize::from(index))
    }

    /// The answer to a request, if any.
    pub fn answer(&self, request: &Message<'_>) -> Option<Vec<u8>> {
        match *request {
            Message::ManifestRequest => Some(Message::Manifest(&self.signed).to_bytes()),
            Message::ChunkRequest { number, index } if number == self.manifest.number => {
                let bytes = self.chunk(index)?;
                Some(
                    Message::Chunk {
                        number,
                        index,
                        bytes,
                    }
                    .to_bytes(),
                )
            }
            _ => None,
        }
    }
}

/// Where `wow-node ca` keeps the signed manifest of the CRL envelope at
/// `crl`: the same name with `.manifest` appended.
pub fn manifest_path(crl: &std::path::Path) -> std::path::PathBuf {
    let mut name = crl.as_os_str().to_owned();
    name.push(".manifest");
    std::path::PathBuf::from(name)
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    fn ca() -> ipsec_ca::CaIdentity {
        let now = ipsec_ca::time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        ipsec_ca::CaIdentity::create_root(
            ipsec_ca::KeyType::EcdsaP256,
            "crl_dht test CA",
            now,
            ipsec_ca::time::Duration::days(30),
        )
        .unwrap()
    }

    proptest! {
        #[test]
        fn manifests_round_trip(
            envelope in proptest::collection::vec(any::<u8>(), 1..9000),
            number in any::<u64>(),
        ) {
            let (m, _) = Manifest::split(number, &envelope).unwrap();
            prop_assert_eq!(Manifest::parse_body(&m.to_body()), Ok(m));
        }

        #[test]
        fn envelopes_reassemble_in_any_order(
            envelope in proptest::collection::vec(any::<u8>(), 1..9000),
            seed in any::<u64>(),
        ) {
            let (m, chunks) = Manifest::split(1, &envelope).unwrap();
            let mut a = Assembly::new(Manifest::parse_body(&m.to_body()).unwrap());
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
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(m) = Manifest::parse_body(&bytes) {
                prop_assert_eq!(&m.to_body()[..], &bytes[..]);
            }
            if let Some(m) = Message::parse(&bytes) {
                prop_assert_eq!(&m.to_bytes()[..], &bytes[..]);
            }
        }
    }

    #[test]
    fn the_largest_signed_manifest_fits_one_dht_value() {
        let envelope = vec![1u8; MAX_CRL_LEN];
        let p = Published::new(&ca(), u64::MAX, envelope).unwrap();
        assert!(p.signed.len() <= MAX_VALUE_LEN, "{} bytes", p.signed.len());
        assert_eq!(
            Manifest::split(1, &vec![0; MAX_CRL_LEN + 1]).map(|_| ()),
            Err(ManifestError::Size(MAX_CRL_LEN + 1))
        );
        assert_eq!(Manifest::split(1, &[]), Err(ManifestError::Size(0)));
    }

    #[test]
    fn bad_manifests_and_chunks_are_refused() {
        let envelope = vec![7u8; 2500];
        let (m, chunks) = Manifest::split(3, &envelope).unwrap();
        assert_eq!((m.len, m.chunks()), (2500, 3));
        let mut b = m.to_body();
        b[0] = 1;
        assert_eq!(Manifest::parse_body(&b), Err(ManifestError::Version(1)));
        let mut b = m.to_body();
        b.extend_from_slice(&[0; CHUNK_DIGEST_LEN]); // four digests for 2500 bytes
        assert!(matches!(
            Manifest::parse_body(&b),
            Err(ManifestError::Inconsistent { .. })
        ));
        assert_eq!(
            Manifest::parse_body(&b[..20]),
            Err(ManifestError::NotManifest)
        );

        let mut a = Assembly::new(m);
        // Wrong length or bytes for its place, out of range.
        assert!(!a.insert(2, chunks[0]));
        assert!(!a.insert(3, chunks[2]));
        assert!(!a.insert(2, &vec![8u8; chunks[2].len()]));
        assert!(a.insert(0, chunks[0]));
        assert!(a.insert(1, chunks[1]));
        assert_eq!(a.missing(), vec![2]);
        assert_eq!(a.finish(), None, "incomplete");
        assert!(a.insert(2, chunks[2]));
        assert_eq!(a.finish(), Some(envelope));
    }

    #[test]
    fn the_fetcher_takes_the_highest_signed_number_and_skips_bad_chunks() {
        let ca = ca();
        let verifier = ipsec_ca::Verifier::new(ca.cert_der()).unwrap();
        let envelope = |n: u8| -> Vec<u8> { (0..2500u32).map(|i| (i as u8) ^ n).collect() };
        let p3 = Published::new(&ca, 3, envelope(3)).unwrap();
        let p5 = Published::new(&ca, 5, envelope(5)).unwrap();
        let p4 = Published::new(&ca, 4, envelope(4)).unwrap();
        let mut unsigned = p5.clone();
        unsigned.manifest.number = 9;
        unsigned.signed = unsigned.manifest.to_body();

        let mut f = Fetcher::default();
        // Nothing above the loaded number.
        assert!(f.offer_manifests(&verifier, 5, [&p3.signed[..]]).is_none());
        // The highest signed one wins, in any order; unsigned ones are ignored.
        let values = [&unsigned.signed[..], &p3.signed, &p5.signed, &p4.signed];
        assert_eq!(
            f.offer_manifests(&verifier, 2, values).map(|m| m.number),
            Some(5)
        );
        assert!(f.offer_manifests(&verifier, 2, [&p4.signed[..]]).is_none());
        assert_eq!(f.missing(), vec![0, 1, 2]);

        // Chunks of another CRL, or bad ones: skipped; retried a few times.
        let good = |i: u16| p5.chunk(i).unwrap();
        assert_eq!(
            f.offer_chunk(4, 0, [p4.chunk(0).unwrap()]),
            ChunkOutcome::Ignored
        );
        let wrong = p3.chunk(1).unwrap();
        for _ in 0..CHUNK_RETRIES {
            assert_eq!(f.offer_chunk(5, 1, [wrong]), ChunkOutcome::Bad(true));
        }
        assert_eq!(f.offer_chunk(5, 1, [wrong]), ChunkOutcome::Bad(false));
        assert_eq!(f.offer_chunk(5, 0, [good(0)]), ChunkOutcome::Stored);
        assert_eq!(f.offer_chunk(5, 0, [good(0)]), ChunkOutcome::Ignored);
        // A bad copy next to a good one does not matter.
        assert_eq!(f.offer_chunk(5, 1, [wrong, good(1)]), ChunkOutcome::Stored);
        assert_eq!(f.missing(), vec![2]);
        assert_eq!(
            f.offer_chunk(5, 2, [good(2)]),
            ChunkOutcome::Complete(envelope(5))
        );
        // Assembled once: not again, nor anything older.
        assert!(
            f.offer_manifests(&verifier, 0, [&p5.signed[..], &p4.signed])
                .is_none()
        );
        assert!(f.current().is_none());
    }

    #[test]
    fn messages_answer_requests() {
        let envelope: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let p = Published::new(&ca(), 9, envelope.clone()).unwrap();
        // The same, signed elsewhere; not for another envelope.
        let q = Published::from_signed(p.signed.clone(), envelope.clone()).unwrap();
        assert_eq!(q.manifest, p.manifest);
        assert!(Published::from_signed(p.signed.clone(), envelope[1..].to_vec()).is_err());
        assert!(Published::from_signed(p.manifest.to_body(), envelope.clone()).is_err());
        let answer = p.answer(&Message::ManifestRequest).unwrap();
        assert_eq!(Message::parse(&answer), Some(Message::Manifest(&p.signed)));
        let answer = p
            .answer(&Message::ChunkRequest {
                number: 9,
                index: 2,
            })
            .unwrap();
        assert_eq!(
            Message::parse(&answer),
            Some(Message::Chunk {
                number: 9,
                index: 2,
                bytes: &envelope[2048..]
            })
        );
        assert_eq!(
            p.answer(&Message::ChunkRequest {
                number: 8,
                index: 0
            }),
            None
        );
        assert_eq!(
            p.answer(&Message::ChunkRequest {
                number: 9,
                index: 3
            }),
            None
        );
        assert_eq!(Message::parse(&[1, 0]), None);
        assert_eq!(Message::parse(&[2, 0, 0]), None);
        assert_eq!(Message::parse(&[3]), None);
    }
}
