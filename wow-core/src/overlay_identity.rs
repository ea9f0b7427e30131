//! The overlay identity of a node in a network with a CA.
//!
//! [`CaIdentity`] implements [`overlay_core::Identity`] with the node's
//! own key (its ring address is the hash of the key, which is the
//! certificate's overlay address, see [`overlay_core::identity`]) and, once
//! it has one, its host certificate. Its proof is
//! `cert_len:u16, certificate (DER, may be empty), key proof` where the key
//! proof is [`overlay_core::KeyIdentity`]'s (algorithm, public key,
//! signature over the link transcript).
//!
//! A peer's proof is checked in two steps:
//!
//! 1. always: the signature verifies with the key in the proof, and the
//!    peer's claimed ring address is the hash of that key;
//! 2. when the network is **closed** (`[security] closed = true`): the
//!    peer sent a certificate that chains to the CA, is valid now, is not
//!    revoked by the last CRL loaded ([`CaIdentityHandle::load_crl`]),
//!    certifies that same key, and whose overlay-address SAN equals the
//!    claimed ring address. Anything else is refused with a typed
//!    [`IdentityError`]: the node answers `LinkStatus::IdentityRejected`
//!    and raises `overlay_core::Event::PeerRejected`, which the core logs.
//!
//! In an open network with a CA (`closed = false`), uncertified nodes may
//! link (they still cannot choose their address); certificates then
//! matter only for the end-to-end security associations.
//!
//! The certificate and CRL change at run time (enrolment, renewal, CRL
//! refresh), so they live behind a [`CaIdentityHandle`] the runtime keeps.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use ipsec_ca::{NodeKey, Verifier};
use overlay_core::identity::{IdentityError, KeyProof, Transcript};
use overlay_core::{Address, Identity, KeyAlgorithm, KeyIdentity};

/// Why a [`CaIdentity`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaIdentityError {
    /// The node key is not usable for signing link proofs.
    #[error("node key: {0}")]
    Key(#[from] overlay_core::identity::KeyError),
    /// The CA certificate does not parse.
    #[error("CA certificate: {0}")]
    Ca(#[from] ipsec_ca::VerifyError),
    /// The node key's type has no overlay signature algorithm.
    #[error("unsupported key type {0}")]
    UnsupportedKey(ipsec_ca::KeyType),
    /// A closed network needs a CA certificate to check peers against.
    #[error("a closed network needs a CA certificate")]
    ClosedWithoutCa,
}

#[derive(Debug)]
struct State {
    verifier: Option<Verifier>,
    certificate: Option<Vec<u8>>,
    closed: bool,
    crl: Option<Vec<u8>>,
}

/// The runtime's handle on a [`CaIdentity`]: installs the certificate and
/// CRLs as they change.
#[derive(Debug, Clone)]
pub struct CaIdentityHandle(Arc<Mutex<State>>);

impl CaIdentityHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Presents `certificate` (DER) in link proofs from now on.
    pub fn set_certificate(&self, certificate: Vec<u8>) {
        self.lock().certificate = Some(certificate);
    }

    /// Loads a CRL envelope (signed by the CA) if it differs from the last
    /// one; returns whether it was accepted.
    pub fn load_crl(&self, envelope: Option<&[u8]>, wall: SystemTime) -> bool {
        let Some(envelope) = envelope else {
            return false;
        };
        let mut state = self.lock();
        if state.crl.as_deref() == Some(envelope) {
            return false;
        }
        let ok = state
            .verifier
            .as_mut()
            .is_some_and(|v| v.handle_crl_envelope(wall, envelope).is_ok());
        if ok {
            state.crl = Some(envelope.to_vec());
        }
        ok
    }

    /// Whether only certified peers are admitted.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// A node's overlay identity backed by the network's CA (see the
/// [module docs](self)).
pub struct CaIdentity {
    key: KeyIdentity,
    state: CaIdentityHandle,
    clock: fn() -> SystemTime,
}

impl std::fmt::Debug for CaIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaIdentity")
            .field("address", &self.key.address())
            .finish_non_exhaustive()
    }
}

/// The overlay-core algorithm of an ipsec-ca key type.
pub fn key_algorithm(key_type: ipsec_ca::KeyType) -> Option<KeyAlgorithm> {
    match key_type {
        ipsec_ca::KeyType::Ed25519 => Some(KeyAlgorithm::Ed25519),
        ipsec_ca::KeyType::EcdsaP256 => Some(KeyAlgorithm::EcdsaP256),
        _ => None,
    }
}

impl CaIdentity {
    /// The identity of the node holding `key`, in the network of the CA
    /// certificate `ca_der` (if any); `closed` admits only certified peers.
    /// Certificates are checked against the system clock.
    pub fn new(
        key: &NodeKey,
        ca_der: Option<&[u8]>,
        closed: bool,
    ) -> Result<Self, CaIdentityError> {
        Self::with_clock(key, ca_der, closed, SystemTime::now)
    }

    /// [`CaIdentity::new`] with the wall clock `clock` (for tests).
    pub fn with_clock(
        key: &NodeKey,
        ca_der: Option<&[u8]>,
        closed: bool,
        clock: fn() -> SystemTime,
    ) -> Result<Self, CaIdentityError> {
        let verifier = ca_der.map(Verifier::new).transpose()?;
        if closed && verifier.is_none() {
            return Err(CaIdentityError::ClosedWithoutCa);
        }
        let algorithm =
            key_algorithm(key.key_type()).ok_or(CaIdentityError::UnsupportedKey(key.key_type()))?;
        let key = KeyIdentity::from_pkcs8(algorithm, key.pkcs8_der())?;
        Ok(CaIdentity {
            key,
            state: CaIdentityHandle(Arc::new(Mutex::new(State {
                verifier,
                certificate: None,
                closed,
                crl: None,
            }))),
            clock,
        })
    }

    /// The handle that installs certificates and CRLs.
    pub fn handle(&self) -> CaIdentityHandle {
        self.state.clone()
    }

    fn check_certificate(
        &self,
        state: &State,
        peer: Address,
        cert: &[u8],
        key: &KeyProof<'_>,
    ) -> Result<(), IdentityError> {
        let refuse = |why: &str| IdentityError::Certificate(why.to_string());
        let verifier = state.verifier.as_ref().ok_or_else(|| refuse("no CA"))?;
        let ip = certified_ip(cert).ok_or_else(|| refuse("no IPv4 address"))?;
        let verified = verifier
            .verify((self.clock)(), cert, ip)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        if verified.public_key != key.public_key {
            return Err(refuse("certifies another key"));
        }
        match verified.overlay_address {
            Some(a) if Address::from_bytes(a.0) == peer => Ok(()),
            Some(_) => Err(refuse("overlay address differs from the ring address")),
            None => Err(refuse("no overlay address")),
        }
    }
}

pub(crate) use crate::records::certified_ip;

impl Identity for CaIdentity {
    fn address(&self) -> Address {
        self.key.address()
    }

    fn prove(&mut self, transcript: &Transcript) -> Vec<u8> {
        let key_proof = self.key.prove(transcript);
        let state = self.state.lock();
        let cert = state.certificate.as_deref().unwrap_or_default();
        let len = u16::try_from(cert.len()).unwrap_or(0);
        let cert = &cert[..usize::from(len)];
        let mut out = Vec::with_capacity(2 + cert.len() + key_proof.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(cert);
        out.extend_from_slice(&key_proof);
        out
    }

    fn verify(
        &mut self,
        peer: Address,
        transcript: &Transcript,
        proof: &[u8],
    ) -> Result<(), IdentityError> {
        let (len, rest) = proof.split_at_checked(2).ok_or(IdentityError::Missing)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (cert, key_proof) = rest.split_at_checked(len).ok_or(IdentityError::Malformed)?;
        let key = KeyProof::parse(key_proof)?;
        key.verify(peer, transcript)?;
        let state = self.state.lock();
        if !state.closed {
            return Ok(());
        }
        if cert.is_empty() {
            return Err(IdentityError::Uncertified);
        }
        self.check_certificate(&state, peer, cert, &key)
    }
}
