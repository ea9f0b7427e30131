//! Certificates and signatures: who the peer is, and proof that it holds
//! its certificate's key.
//!
//! Certificate checking sits behind [`PeerAuthenticator`] so that the
//! endpoint does not care which verifier is used (ipsec-ca's, or a test's).

use core::net::IpAddr;
use std::time::SystemTime;

use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::error::{AuthError, IdentityError};
use crate::wire::{MAX_CERT_LEN, MAX_SIGNATURE_LEN};

/// Signature algorithms a certificate key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// Ed25519 (RFC 8032); the public key is 32 raw bytes.
    Ed25519,
    /// ECDSA over P-256 with SHA-256, ASN.1 DER signatures; the public key
    /// is an uncompressed SEC1 point.
    EcdsaP256Sha256,
}

/// A certificate that a [`PeerAuthenticator`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPeer {
    /// The virtual IP the certificate is bound to (equal to the claimed IP).
    pub ip: IpAddr,
    /// The certificate's serial number (big-endian bytes).
    pub serial: Vec<u8>,
    /// End of the certificate's validity.
    pub not_after: SystemTime,
    /// The certificate's public key (`subjectPublicKey` bit string content).
    pub public_key: Vec<u8>,
    /// Algorithm of `public_key`.
    pub algorithm: SignatureAlgorithm,
}

/// Checks a peer's certificate: chain to the trusted CA, validity at `now`,
/// not revoked, and bound to `claimed_ip`.
///
/// ipsec-ca's verifier implements it; tests may implement it over
/// certificates made directly with rcgen.
pub trait PeerAuthenticator {
    /// Verifies `cert_der` for a peer that claims the virtual IP
    /// `claimed_ip`, at wall-clock time `now`.
    fn authenticate(
        &self,
        cert_der: &[u8],
        claimed_ip: IpAddr,
        now: SystemTime,
    ) -> Result<VerifiedPeer, AuthError>;
}

impl<A: PeerAuthenticator + ?Sized> PeerAuthenticator for &A {
    fn authenticate(
        &self,
        cert_der: &[u8],
        claimed_ip: IpAddr,
        now: SystemTime,
    ) -> Result<VerifiedPeer, AuthError> {
        (**self).authenticate(cert_der, claimed_ip, now)
    }
}

impl<A: PeerAuthenticator + ?Sized> PeerAuthenticator for Box<A> {
    fn authenticate(
        &self,
        cert_der: &[u8],
        claimed_ip: IpAddr,
        now: SystemTime,
    ) -> Result<VerifiedPeer, AuthError> {
        (**self).authenticate(cert_der, claimed_ip, now)
    }
}

enum SigningKey {
    Ed25519(Ed25519KeyPair),
    EcdsaP256(EcdsaKeyPair),
}

/// This node's certificate and the private key that signs handshakes.
pub struct LocalIdentity {
    certificate: Vec<u8>,
    key: SigningKey,
    rng: ring::rand::SystemRandom,
}

impl core::fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("certificate_len", &self.certificate.len())
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl LocalIdentity {
    /// Loads a certificate (DER) and its PKCS#8 private key (DER), Ed25519
    /// or ECDSA P-256.
    ///
    /// The key is not checked against the certificate here; a mismatch
    /// makes every peer reject our handshakes with
    /// [`HandshakeError::BadSignature`](crate::HandshakeError::BadSignature).
    pub fn from_pkcs8(certificate_der: &[u8], key_pkcs8_der: &[u8]) -> Result<Self, IdentityError> {
        if certificate_der.is_empty() || certificate_der.len() > MAX_CERT_LEN {
            return Err(IdentityError::CertificateSize);
        }
        let rng = ring::rand::SystemRandom::new();
        let key = if let Ok(key) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key_pkcs8_der) {
            SigningKey::Ed25519(key)
        } else if let Ok(key) = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            key_pkcs8_der,
            &rng,
        ) {
            SigningKey::EcdsaP256(key)
        } else {
            return Err(IdentityError::UnsupportedKey);
        };
        Ok(LocalIdentity {
            certificate: certificate_der.to_vec(),
            key,
            rng,
        })
    }

    /// The certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        match self.key {
            SigningKey::Ed25519(_) => SignatureAlgorithm::Ed25519,
            SigningKey::EcdsaP256(_) => SignatureAlgorithm::EcdsaP256Sha256,
        }
    }

    /// The public key, in the form [`VerifiedPeer::public_key`] has.
    pub fn public_key(&self) -> &[u8] {
        match &self.key {
            SigningKey::Ed25519(key) => key.public_key().as_ref(),
            SigningKey::EcdsaP256(key) => key.public_key().as_ref(),
        }
    }

    /// Signs `message`. ECDSA needs a per-signature nonce: ring draws it
    /// from the OS (its `SecureRandom` is sealed), mixed with the key and
    /// message. Ed25519 is deterministic.
    pub(crate) fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        let signature = match &self.key {
            SigningKey::Ed25519(key) => key.sign(message).as_ref().to_vec(),
            SigningKey::EcdsaP256(key) => key.sign(&self.rng, message).ok()?.as_ref().to_vec(),
        };
        debug_assert!(signature.len() <= MAX_SIGNATURE_LEN);
        Some(signature)
    }
}

/// Verifies a signature made by a certificate's key.
pub(crate) fn verify_signature(peer: &VerifiedPeer, message: &[u8], sig: &[u8]) -> bool {
    let algorithm: &dyn signature::VerificationAlgorithm = match peer.algorithm {
        SignatureAlgorithm::Ed25519 => &signature::ED25519,
        SignatureAlgorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
    };
    UnparsedPublicKey::new(algorithm, &peer.public_key)
        .verify(message, sig)
        .is_ok()
}
