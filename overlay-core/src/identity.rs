//! Node identities bound to keys, and the link handshake that proves them.
//!
//! # Addresses
//!
//! A node's ring address is derived from its public key, once, in one
//! way: the first 160 bits of SHA-256 over the key's DER
//! SubjectPublicKeyInfo, lowest bit cleared ([`Address::from_spki`]). This
//! is byte for byte the `OverlayAddress` that `ipsec-ca` puts in a host
//! certificate (URI SAN `brunet:node:...`), so a certified node's ring
//! address *is* its certificate's overlay address, and a verifier checks
//! that the certificate's field equals the address derived from the
//! certificate's own key.
//!
//! # The link handshake
//!
//! A link takes two round trips (R is the requester, S the responder):
//!
//! 1. R → S `LinkRequest { nonce, challenge: 0 }`, no proof: a small
//!    probe. S keeps no state for it.
//! 2. S → R `LinkReply { status: Challenge, nonce, challenge }`, no proof
//!    and no endpoint list, so it is no larger than the probe (S is no
//!    amplifier). `challenge` is a keyed hash (HMAC-SHA-256 under a secret
//!    S draws at random and rotates) of R's nonce, R's claimed address and
//!    the endpoint the probe came from: S can recompute it later without
//!    having stored anything.
//! 3. R → S `LinkRequest { nonce, challenge, proof }`: R signs the
//!    [transcript](Transcript) (both addresses, both nonces, R's roles and R's
//!    endpoint as S sees it, from step 2). S recomputes the challenge from
//!    the endpoint *this* message came from, so a request recorded and
//!    replayed from another endpoint fails here, then checks the proof.
//!    Only now does S create the link, or move an existing link with R to
//!    this endpoint.
//! 4. S → R `LinkReply { status: Accepted, nonce, challenge, proof }`: S
//!    signs the same transcript with the reply role; R checks it against
//!    the nonce it drew and the challenge it answered.
//!
//! R's nonce is fresh from its random source; S's challenge is fresh per
//! (nonce, address, endpoint) and per secret rotation. Step 2 is also the
//! return-routability check before a node sends anything of substance to
//! an endpoint another node named (see `Node`'s ConnectToMe handling).
//!
//! # Identities
//!
//! - [`KeyIdentity`]: the node's own Ed25519 or ECDSA P-256 key; the proof
//!   carries the public key and a signature; a peer is accepted when its
//!   claimed address equals the one derived from the key in its proof. For
//!   open networks: anyone may join, but nobody picks their address or
//!   speaks for another node's address.
//! - [`OpenIdentity`]: **insecure**, proves nothing and accepts everyone;
//!   addresses are self-chosen. For the simulator and tests only.
//! - Anything else implementing [`Identity`], e.g. wow-node's CA-backed
//!   identity that admits only certified, unrevoked nodes.

use core::net::SocketAddr;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

use crate::address::Address;

/// Why a peer's identity proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No proof was sent.
    #[error("no identity proof")]
    Missing,
    /// The proof does not parse.
    #[error("malformed identity proof")]
    Malformed,
    /// The proof names a key algorithm this node does not know.
    #[error("unsupported key algorithm {0}")]
    UnsupportedAlgorithm(u8),
    /// The claimed address is not the one derived from the proven key (or
    /// certificate).
    #[error("address {claimed} is not derived from the peer's key ({derived})")]
    AddressMismatch {
        /// The address the peer claimed.
        claimed: Address,
        /// The address its key gives.
        derived: Address,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The network admits only certified nodes and the peer sent no
    /// certificate.
    #[error("peer is not certified")]
    Uncertified,
    /// The peer's certificate was refused (chain, validity, revocation,
    /// overlay-address field).
    #[error("certificate refused: {0}")]
    Certificate(String),
}

/// A key algorithm a [`KeyIdentity`] can hold (the same two as
/// `ipsec_ca::KeyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// Ed25519 (RFC 8032); raw public key: 32 bytes.
    Ed25519,
    /// ECDSA on P-256 with SHA-256, ASN.1 DER signatures; raw public key:
    /// the 65-byte uncompressed point.
    EcdsaP256,
}

/// DER SubjectPublicKeyInfo prefix of an Ed25519 key (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER SubjectPublicKeyInfo prefix of an uncompressed P-256 key (RFC 5480).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl KeyAlgorithm {
    /// Code in a [`KeyIdentity`] proof.
    pub fn code(self) -> u8 {
        match self {
            KeyAlgorithm::Ed25519 => 1,
            KeyAlgorithm::EcdsaP256 => 2,
        }
    }

    /// The algorithm with proof code `code`.
    pub fn from_code(code: u8) -> Result<KeyAlgorithm, IdentityError> {
        match code {
            1 => Ok(KeyAlgorithm::Ed25519),
            2 => Ok(KeyAlgorithm::EcdsaP256),
            other => Err(IdentityError::UnsupportedAlgorithm(other)),
        }
    }

    fn raw_len(self) -> usize {
        match self {
            KeyAlgorithm::Ed25519 => 32,
            KeyAlgorithm::EcdsaP256 => 65,
        }
    }

    /// The DER SubjectPublicKeyInfo of a raw public key, or `None` if the
    /// key has the wrong length.
    pub fn spki_der(self, raw: &[u8]) -> Option<Vec<u8>> {
        if raw.len() != self.raw_len() {
            return None;
        }
        let prefix: &[u8] = match self {
            KeyAlgorithm::Ed25519 => &ED25519_SPKI_PREFIX,
            KeyAlgorithm::EcdsaP256 => &P256_SPKI_PREFIX,
        };
        let mut out = Vec::with_capacity(prefix.len() + raw.len());
        out.extend_from_slice(prefix);
        out.extend_from_slice(raw);
        Some(out)
    }

    /// Checks `signature` over `message` by the raw public key `raw`.
    pub fn verify(self, raw: &[u8], message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
        let alg: &dyn signature::VerificationAlgorithm = match self {
            KeyAlgorithm::Ed25519 => &signature::ED25519,
            KeyAlgorithm::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
        };
        signature::UnparsedPublicKey::new(alg, raw)
            .verify(message, signature)
            .map_err(|_| IdentityError::BadSignature)
    }
}

/// Which side of the handshake signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The requester (step 3).
    Request,
    /// The responder (step 4).
    Reply,
}

/// What both sides sign: a domain tag, the signer's role, both addresses,
/// the requester's nonce, the responder's challenge, the requester's roles
/// and the requester's endpoint as the responder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript {
    /// The side that signs.
    pub role: Role,
    /// The requester's address.
    pub requester: Address,
    /// The responder's address.
    pub responder: Address,
    /// The requester's fresh nonce.
    pub nonce: u64,
    /// The responder's challenge.
    pub challenge: u64,
    /// Roles the requester asks for (raw bits).
    pub roles: u8,
    /// The requester's endpoint as the responder sees it.
    pub requester_endpoint: SocketAddr,
}

/// Length of an encoded [`Transcript`].
pub const TRANSCRIPT_LEN: usize = 24 + 1 + 20 + 20 + 8 + 8 + 1 + 1 + 16 + 2;

impl Transcript {
    /// The bytes that are signed.
    pub fn to_bytes(&self) -> [u8; TRANSCRIPT_LEN] {
        let mut out = [0u8; TRANSCRIPT_LEN];
        let mut pos = 0;
        let mut put = |b: &[u8]| {
            out[pos..pos + b.len()].copy_from_slice(b);
            pos += b.len();
        };
        put(b"wow-overlay link v2\0\0\0\0\0");
        put(&[match self.role {
            Role::Request => 1,
            Role::Reply => 2,
        }]);
        put(&self.requester.to_bytes());
        put(&self.responder.to_bytes());
        put(&self.nonce.to_be_bytes());
        put(&self.challenge.to_be_bytes());
        put(&[self.roles]);
        match self.requester_endpoint {
            SocketAddr::V4(a) => {
                put(&[4]);
                put(&a.ip().to_ipv6_mapped().octets());
            }
            SocketAddr::V6(a) => {
                put(&[6]);
                put(&a.ip().octets());
            }
        }
        put(&self.requester_endpoint.port().to_be_bytes());
        out
    }
}

/// Proves this node's identity and checks peers' during the link
/// handshake (see the [module docs](self)).
pub trait Identity {
    /// This node's ring address. For a key-bound identity it is derived
    /// from the key ([`Address::from_spki`]).
    fn address(&self) -> Address;
    /// A proof over `transcript`: whatever a peer needs to check it (a
    /// public key or certificate, and a signature). Empty if this identity
    /// cannot sign.
    fn prove(&mut self, transcript: &Transcript) -> Vec<u8>;
    /// Checks that `proof` shows the peer owns `peer` and signed
    /// `transcript`.
    fn verify(
        &mut self,
        peer: Address,
        transcript: &Transcript,
        proof: &[u8],
    ) -> Result<(), IdentityError>;
}

impl<T: Identity + ?Sized> Identity for Box<T> {
    fn address(&self) -> Address {
        (**self).address()
    }
    fn prove(&mut self, transcript: &Transcript) -> Vec<u8> {
        (**self).prove(transcript)
    }
    fn verify(
        &mut self,
        peer: Address,
        transcript: &Transcript,
        proof: &[u8],
    ) -> Result<(), IdentityError> {
        (**self).verify(peer, transcript, proof)
    }
}

/// A boxed identity, for drivers that choose one at run time.
pub type DynIdentity = Box<dyn Identity + Send>;

/// **Insecure**: proves nothing and accepts every peer, whose address is
/// whatever it claims. For the deterministic simulator and tests only;
/// real nodes use [`KeyIdentity`] or a certificate-backed identity.
#[derive(Debug, Clone, Copy)]
pub struct OpenIdentity {
    address: Address,
}

impl OpenIdentity {
    /// An open identity claiming `address`.
    pub fn new(address: Address) -> OpenIdentity {
        OpenIdentity { address }
    }
}

impl Identity for OpenIdentity {
    fn address(&self) -> Address {
        self.address
    }
    fn prove(&mut self, _transcript: &Transcript) -> Vec<u8> {
        Vec::new()
    }
    fn verify(&mut self, _: Address, _: &Transcript, _: &[u8]) -> Result<(), IdentityError> {
        Ok(())
    }
}

enum Signer {
    Ed25519(Ed25519KeyPair),
    EcdsaP256(EcdsaKeyPair, SystemRandom),
}

/// Why a key could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PKCS#8 document is not a key of the named algorithm.
    #[error("not a valid PKCS#8 key for this algorithm")]
    BadKey,
}

/// An identity bound to the node's own key pair: the address is derived
/// from the public key, proofs are signatures, and a peer is accepted when
/// its claimed address is derived from the key it proves (see the
/// [module docs](self)).
///
/// Proof format: `algorithm:u8, key_len:u8, key, signature`.
pub struct KeyIdentity {
    signer: Signer,
    algorithm: KeyAlgorithm,
    public_key: Vec<u8>,
    address: Address,
}

impl core::fmt::Debug for KeyIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyIdentity")
            .field("algorithm", &self.algorithm)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl KeyIdentity {
    /// Loads a PKCS#8 DER private key of `algorithm` (as `ipsec_ca::NodeKey`
    /// stores it).
    pub fn from_pkcs8(algorithm: KeyAlgorithm, pkcs8: &[u8]) -> Result<KeyIdentity, KeyError> {
        let signer = match algorithm {
            KeyAlgorithm::Ed25519 => Signer::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|_| KeyError::BadKey)?,
            ),
            KeyAlgorithm::EcdsaP256 => {
                let rng = SystemRandom::new();
                let kp = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    pkcs8,
                    &rng,
                )
                .map_err(|_| KeyError::BadKey)?;
                Signer::EcdsaP256(kp, rng)
            }
        };
        let public_key = match &signer {
            Signer::Ed25519(k) => k.public_key().as_ref().to_vec(),
            Signer::EcdsaP256(k, _) => k.public_key().as_ref().to_vec(),
        };
        let address = Address::from_public_key(algorithm, &public_key).ok_or(KeyError::BadKey)?;
        Ok(KeyIdentity {
            signer,
            algorithm,
            public_key,
            address,
        })
    }

    /// A fresh Ed25519 key from the operating system's random source.
    ///
    /// # Panics
    /// If the operating system's random source fails.
    pub fn generate_ed25519() -> KeyIdentity {
        let rng = SystemRandom::new();
        let doc = match Ed25519KeyPair::generate_pkcs8(&rng) {
            Ok(d) => d,
            Err(e) => panic!("the operating system's random source failed: {e}"),
        };
        match KeyIdentity::from_pkcs8(KeyAlgorithm::Ed25519, doc.as_ref()) {
            Ok(k) => k,
            Err(e) => panic!("a freshly generated key did not load: {e}"),
        }
    }

    /// A **predictable** Ed25519 key derived from `seed`, for the simulator
    /// and tests only.
    pub fn ed25519_with_insecure_seed(seed: u64) -> KeyIdentity {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        secret[8..16].copy_from_slice(b"insecure");
        let kp = match Ed25519KeyPair::from_seed_unchecked(&secret) {
            Ok(kp) => kp,
            Err(e) => panic!("a 32-byte Ed25519 seed was refused: {e}"),
        };
        let public_key = kp.public_key().as_ref().to_vec();
        let address =
            Address::from_public_key(KeyAlgorithm::Ed25519, &public_key).unwrap_or(Address::ZERO);
        KeyIdentity {
            signer: Signer::Ed25519(kp),
            algorithm: KeyAlgorithm::Ed25519,
            public_key,
            address,
        }
    }

    /// The key algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The raw public key.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// Signs `message` with the node's key (empty if signing failed).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Ed25519(k) => k.sign(message).as_ref().to_vec(),
            Signer::EcdsaP256(k, rng) => k
                .sign(rng, message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
        }
    }
}

/// A parsed [`KeyIdentity`] proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProof<'a> {
    /// The key algorithm.
    pub algorithm: KeyAlgorithm,
    /// The raw public key.
    pub public_key: &'a [u8],
    /// The signature over the transcript.
    pub signature: &'a [u8],
}

impl<'a> KeyProof<'a> {
    /// Parses `algorithm:u8, key_len:u8, key, signature`.
    pub fn parse(proof: &'a [u8]) -> Result<KeyProof<'a>, IdentityError> {
        let (&code, rest) = proof.split_first().ok_or(IdentityError::Missing)?;
        let algorithm = KeyAlgorithm::from_code(code)?;
        let (&len, rest) = rest.split_first().ok_or(IdentityError::Malformed)?;
        let len = usize::from(len);
        if rest.len() < len || len != algorithm.raw_len() {
            return Err(IdentityError::Malformed);
        }
        let (public_key, signature) = rest.split_at(len);
        Ok(KeyProof {
            algorithm,
            public_key,
            signature,
        })
    }

    /// Checks the signature over `transcript` and that `peer` is the
    /// address derived from the key.
    pub fn verify(&self, peer: Address, transcript: &Transcript) -> Result<(), IdentityError> {
        let derived = Address::from_public_key(self.algorithm, self.public_key)
            .ok_or(IdentityError::Malformed)?;
        if derived != peer {
            return Err(IdentityError::AddressMismatch {
                claimed: peer,
                derived,
            });
        }
        self.algorithm
            .verify(self.public_key, &transcript.to_bytes(), self.signature)
    }
}

impl Identity for KeyIdentity {
    fn address(&self) -> Address {
        self.address
    }

    fn prove(&mut self, transcript: &Transcript) -> Vec<u8> {
        let signature = self.sign(&transcript.to_bytes());
        let mut out = Vec::with_capacity(2 + self.public_key.len() + signature.len());
        out.push(self.algorithm.code());
        out.push(self.public_key.len() as u8);
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&signature);
        out
    }

    fn verify(
        &mut self,
        peer: Address,
        transcript: &Transcript,
        proof: &[u8],
    ) -> Result<(), IdentityError> {
        KeyProof::parse(proof)?.verify(peer, transcript)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn transcript(role: Role, a: Address, b: Address) -> Transcript {
        Transcript {
            role,
            requester: a,
            responder: b,
            nonce: 7,
            challenge: 9,
            roles: 2,
            requester_endpoint: "192.0.2.1:4000".parse().unwrap(),
        }
    }

    #[test]
    fn key_identity_proves_and_verifies() {
        let mut a = KeyIdentity::ed25519_with_insecure_seed(1);
        let mut b = KeyIdentity::ed25519_with_insecure_seed(2);
        let t = transcript(Role::Request, a.address(), b.address());
        let proof = a.prove(&t);
        assert_eq!(b.verify(a.address(), &t, &proof), Ok(()));
        // Another role, nonce or endpoint: refused.
        let mut t2 = t;
        t2.role = Role::Reply;
        assert_eq!(
            b.verify(a.address(), &t2, &proof),
            Err(IdentityError::BadSignature)
        );
        t2 = t;
        t2.requester_endpoint = "192.0.2.1:4001".parse().unwrap();
        assert_eq!(
            b.verify(a.address(), &t2, &proof),
            Err(IdentityError::BadSignature)
        );
        // Someone else's address: refused.
        assert!(matches!(
            b.verify(b.address(), &t, &proof),
            Err(IdentityError::AddressMismatch { .. })
        ));
        assert_eq!(b.verify(a.address(), &t, &[]), Err(IdentityError::Missing));
        assert_eq!(
            b.verify(a.address(), &t, &[1, 5, 0]),
            Err(IdentityError::Malformed)
        );
    }

    #[test]
    fn ecdsa_keys_work_too() {
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let mut a = KeyIdentity::from_pkcs8(KeyAlgorithm::EcdsaP256, doc.as_ref()).unwrap();
        let mut b = KeyIdentity::generate_ed25519();
        let t = transcript(Role::Reply, b.address(), a.address());
        let proof = a.prove(&t);
        assert_eq!(b.verify(a.address(), &t, &proof), Ok(()));
        assert_eq!(a.address().to_bytes()[19] & 1, 0);
    }
}
