//! Signed DHT records: who wrote a value, and the hooks that sign and
//! judge records.
//!
//! Every value in the DHT is a [`Record`]: the key,
//! the value, a lifetime, a *version*, the writer's public key
//! ([`WriterKey`]: Ed25519 or ECDSA P-256, as `ipsec-ca`'s key types), an
//! optional credential blob (for example the writer's DER certificate) and
//! the writer's signature over all of that
//! ([`Record::signed_bytes`](crate::wire::Record::signed_bytes)).
//!
//! # Who may change what
//!
//! A key holds one *slot* per writer (at most
//! [`MAX_VALUES_PER_KEY`](crate::wire::MAX_VALUES_PER_KEY) writers). The
//! first record a writer stores under a key creates its slot; afterwards
//! only a record signed by the same key, with a strictly greater
//! `version`, replaces it (the same record again only refreshes its
//! lifetime, never past the signed lifetime from now). No writer can
//! overwrite, shorten or delete another writer's slot: a slot goes away
//! only when it expires. Readers get every live slot with its writer and
//! decide among them (for example with the credential: "the record whose
//! certificate binds this name").
//!
//! A *create* ([`Node::dht_create`](crate::Node::dht_create)) succeeds only
//! when the key holds no live slot of another writer (the node responsible
//! for the key decides); a writer that already holds a slot updates it. It
//! does not stop later *puts* by other writers into their own slots: a
//! reader that wants "first claim wins" asks its [`RecordPolicy`] to
//! accept only the claims it trusts.
//!
//! # Replay
//!
//! Versions must increase per slot, so an old signed value cannot replace
//! a newer one while the slot lives. [`KeySigner`] issues versions counting
//! up from a floor its creator gives (the node uses the wall clock in
//! microseconds, so versions also increase across restarts). Once every
//! copy of a slot has expired the DHT has forgotten its version; a policy
//! that must refuse a replay of a record older than its lifetime can read
//! the version as the writer's clock.
//!
//! # Verification and policy
//!
//! Storing nodes (on a put, a create, or a replica pushed by a linked peer)
//! and readers (on every record in a reply) verify the signature, then ask
//! the node's [`RecordPolicy`]. A record that fails either is dropped,
//! never stored or returned, and counted in [`Stats`](crate::Stats) with
//! its [`RecordRejection`].

use std::fmt;
use std::time::Instant;

use ring::signature::{self, KeyPair as _};

use crate::wire::Record;

/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;
/// Length of an uncompressed P-256 public key (`0x04 || X || Y`).
pub const P256_PUBLIC_KEY_LEN: usize = 65;

/// The writer's key algorithm (wire code in parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// Ed25519 (1): 32-byte public key, 64-byte signature.
    Ed25519,
    /// ECDSA on P-256 with SHA-256 (2): 65-byte uncompressed public key,
    /// ASN.1 DER signature.
    EcdsaP256,
}

impl KeyType {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            KeyType::Ed25519 => 1,
            KeyType::EcdsaP256 => 2,
        }
    }
    /// The key type with wire code `code`.
    pub fn from_code(code: u8) -> Option<KeyType> {
        match code {
            1 => Some(KeyType::Ed25519),
            2 => Some(KeyType::EcdsaP256),
            _ => None,
        }
    }
    /// Length of a public key of this type.
    pub fn public_key_len(self) -> usize {
        match self {
            KeyType::Ed25519 => ED25519_PUBLIC_KEY_LEN,
            KeyType::EcdsaP256 => P256_PUBLIC_KEY_LEN,
        }
    }
    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            KeyType::Ed25519 => &signature::ED25519,
            KeyType::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
        }
    }
}

/// A writer's public key: the owner of a slot.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriterKey {
    /// The algorithm.
    pub key_type: KeyType,
    /// The raw public key ([`KeyType::public_key_len`] bytes).
    pub public_key: Vec<u8>,
}

impl fmt::Debug for WriterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterKey({:?}, ", self.key_type)?;
        for b in self.public_key.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl WriterKey {
    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(self.key_type.verification(), &self.public_key)
            .verify(message, signature)
            .is_ok()
    }
}

/// Why a record was dropped. Each is counted in [`Stats`](crate::Stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RecordRejection {
    /// The signature does not verify with the record's writer key.
    #[error("bad record signature")]
    BadSignature,
    /// A record in a reply is for another key than the one asked for.
    #[error("record for another key")]
    WrongKey,
    /// The node's [`RecordPolicy`] refused it.
    #[error("refused by the record policy")]
    Policy,
    /// The writer already holds a newer (or a different same-version)
    /// record under this key: an old value replayed.
    #[error("stale record version")]
    Stale,
    /// The key already holds the most writers.
    #[error("key full")]
    Full,
    /// The writer, or the whole store, is at its quota.
    #[error("store quota exceeded")]
    Quota,
}

/// Records dropped, by [`RecordRejection`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordRejections {
    /// [`RecordRejection::BadSignature`].
    pub bad_signature: u64,
    /// [`RecordRejection::WrongKey`].
    pub wrong_key: u64,
    /// [`RecordRejection::Policy`].
    pub policy: u64,
    /// [`RecordRejection::Stale`].
    pub stale: u64,
    /// [`RecordRejection::Full`].
    pub full: u64,
    /// [`RecordRejection::Quota`].
    pub quota: u64,
}

impl RecordRejections {
    /// Counts one rejection.
    pub fn count(&mut self, reason: RecordRejection) {
        let c = match reason {
            RecordRejection::BadSignature => &mut self.bad_signature,
            RecordRejection::WrongKey => &mut self.wrong_key,
            RecordRejection::Policy => &mut self.policy,
            RecordRejection::Stale => &mut self.stale,
            RecordRejection::Full => &mut self.full,
            RecordRejection::Quota => &mut self.quota,
        };
        *c += 1;
    }
    /// All rejections.
    pub fn total(&self) -> u64 {
        self.bad_signature + self.wrong_key + self.policy + self.stale + self.full + self.quota
    }
}

/// Signs the records a node writes. The node asks it for a fresh version
/// and a signature each time it puts or creates a value.
pub trait RecordSigner: Send {
    /// The public key records are signed with.
    fn writer(&self) -> WriterKey;
    /// A version greater than every one returned before, including by
    /// earlier runs with the same key (e.g. wall-clock microseconds).
    fn next_version(&mut self) -> u64;
    /// Signs `message` ([`Record::signed_bytes`]); `None` if the key
    /// cannot sign (the write then fails).
    fn sign(&mut self, message: &[u8]) -> Option<Vec<u8>>;
}

enum KeyPair {
    Ed25519(signature::Ed25519KeyPair),
    EcdsaP256(signature::EcdsaKeyPair),
}

/// A [`RecordSigner`] over an Ed25519 or ECDSA P-256 private key (for
/// example an `ipsec_ca::NodeKey`'s PKCS#8 DER), issuing versions counting
/// up from a floor.
pub struct KeySigner {
    pair: KeyPair,
    writer: WriterKey,
    last_version: u64,
}

impl fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySigner")
            .field("writer", &self.writer)
            .field("last_version", &self.last_version)
            .finish_non_exhaustive()
    }
}

/// A private key `ring` did not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the private key is not a valid {0:?} PKCS#8 key")]
pub struct BadKey(pub KeyType);

impl KeySigner {
    /// A signer over a PKCS#8 DER private key of type `key_type`; the
    /// first version it issues is `version_floor + 1` (pass the wall clock
    /// in microseconds so that versions increase across restarts).
    pub fn from_pkcs8(
        key_type: KeyType,
        pkcs8_der: &[u8],
        version_floor: u64,
    ) -> Result<KeySigner, BadKey> {
        let pair = match key_type {
            KeyType::Ed25519 => KeyPair::Ed25519(
                signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8_der)
                    .map_err(|_| BadKey(key_type))?,
            ),
            KeyType::EcdsaP256 => KeyPair::EcdsaP256(
                signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    pkcs8_der,
                    &ring::rand::SystemRandom::new(),
                )
                .map_err(|_| BadKey(key_type))?,
            ),
        };
        Ok(KeySigner::build(pair, version_floor))
    }

    /// An Ed25519 signer whose private key is `seed`. Whoever holds the
    /// seed can write as this key: take it from the operating system (the
    /// node's ephemeral default) or, in tests and simulators only, from a
    /// seeded generator.
    pub fn ed25519_from_seed(seed: &[u8; 32], version_floor: u64) -> KeySigner {
        match signature::Ed25519KeyPair::from_seed_unchecked(seed) {
            Ok(pair) => KeySigner::build(KeyPair::Ed25519(pair), version_floor),
            // Every 32-byte string is a valid Ed25519 seed.
            Err(_) => unreachable!("ring refused a 32-byte Ed25519 seed"),
        }
    }

    fn build(pair: KeyPair, version_floor: u64) -> KeySigner {
        let writer = match &pair {
            KeyPair::Ed25519(p) => WriterKey {
                key_type: KeyType::Ed25519,
                public_key: p.public_key().as_ref().to_vec(),
            },
            KeyPair::EcdsaP256(p) => WriterKey {
                key_type: KeyType::EcdsaP256,
                public_key: p.public_key().as_ref().to_vec(),
            },
        };
        KeySigner {
            pair,
            writer,
            last_version: version_floor,
        }
    }
}

impl RecordSigner for KeySigner {
    fn writer(&self) -> WriterKey {
        self.writer.clone()
    }
    fn next_version(&mut self) -> u64 {
        self.last_version = self.last_version.saturating_add(1);
        self.last_version
    }
    fn sign(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        match &self.pair {
            KeyPair::Ed25519(p) => Some(p.sign(message).as_ref().to_vec()),
            KeyPair::EcdsaP256(p) => p
                .sign(&ring::rand::SystemRandom::new(), message)
                .ok()
                .map(|s| s.as_ref().to_vec()),
        }
    }
}

/// Where a record is being judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyStage {
    /// A storing node is about to store it (a put, a create, or a replica
    /// pushed by a linked peer).
    Store,
    /// A reader got it in a reply.
    Read,
}

/// The application's rule for which records may be stored and believed.
/// Storing nodes and readers call it after the signature has verified.
///
/// The record carries the key, the value, the writer's key and the
/// optional credential the writer attached (see
/// [`Node::set_record_credential`](crate::Node::set_record_credential)):
/// a network with a CA would, for example, accept a record under
/// `wow/name/db` only with a certificate from the CA whose DNS name is
/// `db` and whose public key is the writer key.
pub trait RecordPolicy: Send {
    /// Whether `record` may be stored (`stage` = [`PolicyStage::Store`])
    /// or returned to the application ([`PolicyStage::Read`]).
    fn accept(&mut self, now: Instant, stage: PolicyStage, record: &Record) -> bool;
}

/// A [`RecordPolicy`] that accepts every correctly signed record (the
/// default).
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptSigned;

impl RecordPolicy for AcceptSigned {
    fn accept(&mut self, _now: Instant, _stage: PolicyStage, _record: &Record) -> bool {
        true
    }
}

/// Checks `record`'s signature.
pub fn verify(record: &Record) -> Result<(), RecordRejection> {
    if record
        .writer
        .verify(&record.signed_bytes(), &record.signature)
    {
        Ok(())
    } else {
        Err(RecordRejection::BadSignature)
    }
}

/// Fills in `record`'s version, writer and signature with `signer`;
/// `None` if the signer cannot sign.
pub fn sign(
    signer: &mut dyn RecordSigner,
    key: &[u8],
    value: &[u8],
    lifetime_secs: u32,
    credential: &[u8],
) -> Option<Record> {
    let mut record = Record {
        key: key.to_vec(),
        value: value.to_vec(),
        lifetime_secs,
        version: signer.next_version(),
        writer: signer.writer(),
        credential: credential.to_vec(),
        signature: Vec::new(),
    };
    record.signature = signer.sign(&record.signed_bytes())?;
    Some(record)
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let mut s = KeySigner::ed25519_from_seed(&[7; 32], 10);
        let r = sign(&mut s, b"k", b"v", 60, b"cert").unwrap();
        assert_eq!(r.version, 11);
        assert_eq!(verify(&r), Ok(()));
        for f in [
            |r: &mut Record| r.value.push(0),
            |r: &mut Record| r.key.push(0),
            |r: &mut Record| r.version += 1,
            |r: &mut Record| r.lifetime_secs += 1,
            |r: &mut Record| r.credential.clear(),
            |r: &mut Record| r.public_key_mut()[0] ^= 1,
        ] {
            let mut bad = r.clone();
            f(&mut bad);
            assert_eq!(verify(&bad), Err(RecordRejection::BadSignature));
        }
    }

    #[test]
    fn ecdsa_p256_from_pkcs8() {
        let rng = ring::rand::SystemRandom::new();
        let der = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap();
        let mut s = KeySigner::from_pkcs8(KeyType::EcdsaP256, der.as_ref(), 0).unwrap();
        assert_eq!(s.writer().public_key.len(), P256_PUBLIC_KEY_LEN);
        let r = sign(&mut s, b"k", b"v", 60, b"").unwrap();
        assert_eq!(verify(&r), Ok(()));
        assert!(KeySigner::from_pkcs8(KeyType::Ed25519, der.as_ref(), 0).is_err());
    }

    impl Record {
        fn public_key_mut(&mut self) -> &mut Vec<u8> {
            &mut self.writer.public_key
        }
    }
}
