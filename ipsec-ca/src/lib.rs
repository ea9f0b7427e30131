//! A certificate authority whose host certificates are bound to virtual IPs.
//!
//! Only nodes an administrator authorised may reach the private part of a WOW
//! virtual network. Each node's X.509 certificate (RFC 5280) carries its
//! virtual IP as a SAN iPAddress and its overlay address as a SAN URI
//! ([`OverlayAddress`]), so a certificate cannot be reused by another node.
//! This crate is the CA ([`Ca`]), node enrolment ([`NodeKey`],
//! [`wire::EnrolmentMessage`]) and verification ([`Verifier`]). It does no I/O
//! besides the optional [`FileStore`], reads no clock (every call takes `now`,
//! a [`std::time::SystemTime`]; durations are [`std::time::Duration`]s),
//! and draws serial numbers from the operating system.
//!
//! Certificates, CSRs and CRLs are issued with `rcgen` and read with
//! `x509-parser`; signatures are checked with `ring`. Keys are Ed25519 or
//! ECDSA P-256 ([`KeyType`]).
//!
//! # Example
//!
//! ```
//! use std::net::Ipv4Addr;
//! use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, NodeKey, NodeRequest, Policy,
//!                RevocationReason, Verifier, VerifyError};
//! use std::time::{Duration, SystemTime};
//!
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! let ten_years = Duration::from_secs(3650 * 86_400);
//! let identity = CaIdentity::create_root(now, KeyType::Ed25519, "wow CA", ten_years)?;
//! let mut ca = Ca::open(identity, Policy::default(), MemStore::default())?;
//!
//! // Node side: a key and a CSR for its virtual IP.
//! let ip = Ipv4Addr::new(10, 128, 0, 5);
//! let node = NodeKey::generate(KeyType::Ed25519)?;
//! let csr = node.certificate_request(&NodeRequest::new(ip))?;
//!
//! // CA side: the request arrived from `ip` over the authenticated overlay.
//! let issued = ca.sign(now, &csr, ip, None)?;
//!
//! // Any node: verify a peer claiming `ip`, then check its handshake signature.
//! let mut verifier = Verifier::new(ca.identity().cert_der())?;
//! let peer = verifier.verify(now, &issued.certificate, ip)?;
//! peer.verify_signature(b"hello", &node.sign(b"hello")?)?;
//! assert!(matches!(
//!     verifier.verify(now, &issued.certificate, Ipv4Addr::new(10, 128, 0, 6)),
//!     Err(VerifyError::IpMismatch { .. })
//! ));
//!
//! // Revocation spreads as a CRL envelope.
//! ca.revoke(now, &issued.serial, RevocationReason::KeyCompromise)?;
//! let crl = ca.issue_crl(now)?;
//! verifier.handle_crl_envelope(now, &crl.envelope())?;
//! assert_eq!(verifier.verify(now, &issued.certificate, ip), Err(VerifyError::Revoked));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - [`key`]: [`KeyType`], [`NodeKey`] (PKCS#8, CSRs), [`OverlayAddress`] (the
//!   `brunet:node:` URI SAN).
//! - [`admin`]: helpers for an administrator's front end (host names,
//!   serials as typed, [`admin::issue_node`], certificate states).
//! - [`ca`]: [`Ca`] with its [`Policy`]: sign, queue/approve/reject, revoke, CRLs,
//!   and the enrolment input [`Ca::handle_enrolment`] / output [`Ca::poll_transmit`].
//! - [`enrol`]: the node's side of enrolment ([`Enrolment`]), with retries;
//!   it believes only replies signed by the CA key.
//! - [`token`]: single-use join tokens ([`JoinToken`], [`Ca::issue_token`]):
//!   a request MAC'd with one is signed at once, others wait for an
//!   administrator.
//! - [`groups`]: [`Groups`] carried in host certificates (SAN URIs
//!   `wow:group:NAME`), granted only by the CA's policy.
//! - [`verify`]: [`Verifier`] and [`VerifiedPeer`].
//! - [`wire`]: the enrolment messages and the CRL distribution envelope.
//! - [`state`], [`store`], [`file_store`]: the index as [`state::Change`]s over a
//!   [`Store`]; [`FileStore`] journals each change with one fsynced append,
//!   snapshots periodically, and survives SIGKILL at any point.
//!   [`QueueStore`] is a write-behind: it queues the writes on a
//!   [`WriteQueue`] for a [`StoreWriter`] elsewhere (a thread of the
//!   caller's), and the caller holds the CA's replies until they are durable.
//!
//! # For the security-association layer
//!
//! - Node key: [`NodeKey::pkcs8_der`] loads into `ring`'s `Ed25519KeyPair::from_pkcs8`
//!   or `EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, ..)`.
//! - Peer: [`Verifier::verify`]`(now, cert_der, claimed_ip)` returns a [`VerifiedPeer`]
//!   with the virtual IP, serial, notAfter, key type and raw public key
//!   (`UnparsedPublicKey::new(peer.key_type.ring_verification_alg(), &peer.public_key)`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod ca;
mod clock;
pub mod csr;
pub mod enrol;
pub mod error;
pub mod file_store;
pub mod groups;
pub mod identity;
pub mod key;
pub mod state;
pub mod store;
pub mod token;
pub mod verify;
pub mod wire;

pub use ca::{Ca, Issued, Policy, SignedCrl, Transmit};
pub use csr::{CsrInfo, parse_csr};
pub use enrol::{Enrolment, EnrolmentConfig, EnrolmentError, EnrolmentEvent};
pub use error::{
    CaError, CrlError, CsrError, KeyError, PolicyError, StoreError, VerifyError, WireError,
};
pub use file_store::FileStore;
pub use groups::{GroupError, Groups};
pub use identity::CaIdentity;
pub use key::{KeyType, NodeKey, NodeRequest, OverlayAddress};
pub use state::{CaState, IssuedRecord, PendingRecord, RevocationReason, TokenRecord};
pub use store::{Barrier, BoxedStore, Gate, MemStore, QueueStore, Store, StoreWriter, WriteQueue};
pub use token::JoinToken;
pub use verify::{VerifiedPeer, Verifier};
