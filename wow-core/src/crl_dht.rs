//! CRLs through the overlay: a CA-signed manifest, then 1 KiB chunks.
//!
//! A DHT value holds at most
//! [`MAX_VALUE_LEN`](overlay_core::wire::MAX_VALUE_LEN) (1 KiB) bytes, about twenty
//! revocations. A CRL envelope is therefore stored in chunks described by
//! a [`Manifest`] (overlay-core's [`chunked`]
//! module: the CRL number as its sequence number, the envelope's length
//! and SHA-256, the digest of every chunk), whose body the CA signs as a
//! statement labelled [`MANIFEST_LABEL`] ([`sign_manifest`],
//! [`ipsec_ca::CaIdentity::sign_statement`]). The signed manifest is stored
//! under the DHT key `wow/crl`, the chunks (of [`CHUNK_LEN`]) under
//! `wow/crl-chunk/<`[`Manifest::chunk_suffix`]`>`, and the CA node answers
//! the same manifest and chunks over the overlay ([`Message`]).
//!
//! A fetcher ([`Fetcher`]) reads every value under `wow/crl`, ignores those
//! that are not manifests signed by its CA ([`verify_manifest`]), keeps the
//! highest CRL number above the one it holds, and takes each chunk only if
//! it matches its digest: a wrong chunk from one replica or value is
//! skipped and the chunk asked again, it does not abort the assembly. The
//! joined envelope must match the overall digest; its CA signature and CRL
//! number are checked after that, by ipsec-ca, which never installs a CRL
//! older than the loaded one.
//!
//! ```
//! use wow_core::crl_dht::{Fetcher, Published, verify_manifest};
//! # use std::time::{Duration, SystemTime};
//! # let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! # let ca = ipsec_ca::CaIdentity::create_root(now, ipsec_ca::KeyType::Ed25519, "CA",
//! #     Duration::from_secs(30 * 86_400)).unwrap();
//! let verifier = ipsec_ca::Verifier::new(ca.cert_der())?;
//!
//! // The CA describes and signs CRL 7's envelope.
//! let envelope: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
//! let published = Published::new(&ca, 7, envelope.clone())?;
//! assert_eq!(verify_manifest(&verifier, &published.signed)?.number, 7);
//!
//! // A node holding CRL 3 takes it, chunk by chunk.
//! let mut fetcher = Fetcher::default();
//! let chunks = fetcher
//!     .offer_manifests(&verifier, 3, [&published.signed[..]])
//!     .map(|m| m.chunks())
//!     .unwrap();
//! let mut outcome = None;
//! for i in 0..chunks {
//!     outcome = Some(fetcher.offer_chunk(7, i, [published.chunk(i).unwrap()]));
//! }
//! assert_eq!(outcome, Some(wow_core::crl_dht::ChunkOutcome::Complete(envelope)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use overlay_core::chunked;
pub use overlay_core::chunked::{Assembly, CHUNK_DIGEST_LEN, CHUNK_LEN, MAX_CHUNKS, Manifest};

/// The statement label of a signed CRL manifest.
pub const MANIFEST_LABEL: &[u8] = b"wow/crl-manifest";
/// Longest CRL envelope stored (48 chunks, about a thousand revocations).
pub const MAX_CRL_LEN: usize = chunked::MAX_LEN;
/// Times a chunk is asked again after wrong answers, per fetch round.
pub const CHUNK_RETRIES: u8 = 3;

/// Why bytes are not a CRL manifest signed by the CA, or an envelope
/// cannot be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not a manifest body, or an envelope that cannot be stored in chunks.
    #[error("CRL {0}")]
    Chunks(#[from] chunked::ManifestError),
    /// Not signed by the trusted CA (or not a manifest statement).
    #[error("CRL manifest not signed by the CA")]
    Signature,
    /// The CA key could not sign.
    #[error("cannot sign the CRL manifest")]
    Sign,
    /// The manifest describes another envelope.
    #[error("the CRL manifest does not describe this envelope")]
    Mismatch,
}

/// `manifest` signed by `ca`: what `wow/crl` holds.
pub fn sign_manifest(
    manifest: &Manifest,
    ca: &ipsec_ca::CaIdentity,
) -> Result<Vec<u8>, ManifestError> {
    ca.sign_statement(MANIFEST_LABEL, &manifest.to_body())
        .map_err(|_| ManifestError::Sign)
}

/// The manifest in `signed`, if the CA `verifier` trusts signed it.
pub fn verify_manifest(
    verifier: &ipsec_ca::Verifier,
    signed: &[u8],
) -> Result<Manifest, ManifestError> {
    let body = verifier
        .verify_statement(MANIFEST_LABEL, signed)
        .map_err(|_| ManifestError::Signature)?;
    Ok(Manifest::parse_body(body)?)
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
            .filter_map(|v| match verify_manifest(verifier, v) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::debug!(error = %e, "CRL manifest ignored");
                    None
                }
            })
            .max_by_key(|m| m.number)?;
        let floor = loaded
            .max(self.fetched)
            .max(self.assembly.as_ref().map_or(0, |a| a.manifest().number));
        if best.number <= floor {
            return None;
        }
        self.retries = vec![0; best.chunk_digests.len()];
        Some(self.assembly.insert(Assembly::new(best)).manifest())
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
            .filter(|a| a.manifest().number == number)
        else {
            return ChunkOutcome::Ignored;
        };
        let i = usize::from(index);
        // Out of range, or already held.
        if index >= assembly.manifest().chunks() || assembly.has(i) {
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
        let signed = sign_manifest(&manifest, ca)?;
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
            return Err(ManifestError::Mismatch);
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
