//! [`PeerAuthenticator`] for ipsec-ca's [`Verifier`]: chain, validity, key
//! usage, revocation (the loaded CRL) and the certificate's IPv4 equal to
//! the peer's virtual IP.
//!
//! Load a newer CRL through [`Endpoint::update_authenticator`] so that
//! peers whose certificates it revokes are torn down at once:
//!
//! ```text
//! endpoint.update_authenticator(now, |verifier| verifier.handle_crl_envelope(&bytes, wall))?;
//! ```
//!
//! [`Endpoint::update_authenticator`]: crate::Endpoint::update_authenticator

use core::net::IpAddr;
use std::time::SystemTime;

use ipsec_ca::{KeyType, Verifier, VerifyError};

use crate::auth::{PeerAuthenticator, SignatureAlgorithm, VerifiedPeer};
use crate::error::AuthError;

/// Maps ipsec-ca's refusal to this crate's.
pub fn auth_error(error: &VerifyError) -> AuthError {
    match error {
        VerifyError::Malformed => AuthError::Malformed,
        VerifyError::UnknownIssuer
        | VerifyError::BadSignature
        | VerifyError::IssuerExpired
        | VerifyError::BadCaCertificate => AuthError::UntrustedIssuer,
        VerifyError::UnsupportedAlgorithm => AuthError::UnsupportedKey,
        VerifyError::NotYetValid => AuthError::NotYetValid,
        VerifyError::Expired => AuthError::Expired,
        VerifyError::BadKeyUsage => AuthError::KeyUsage,
        VerifyError::Revoked => AuthError::Revoked,
        VerifyError::CrlOutdated => AuthError::CrlOutdated,
        VerifyError::IpMismatch { certified, claimed } => AuthError::IpMismatch {
            claimed: IpAddr::V4(*claimed),
            certified: certified.map(IpAddr::V4),
        },
        _ => AuthError::Rejected,
    }
}

impl PeerAuthenticator for Verifier {
    fn authenticate(
        &self,
        cert_der: &[u8],
        claimed_ip: IpAddr,
        now: SystemTime,
    ) -> Result<VerifiedPeer, AuthError> {
        let IpAddr::V4(claimed_v4) = claimed_ip else {
            // ipsec-ca binds certificates to IPv4 virtual addresses.
            return Err(AuthError::IpMismatch {
                claimed: claimed_ip,
                certified: None,
            });
        };
        let peer = self
            .verify(now, cert_der, claimed_v4)
            .map_err(|e| auth_error(&e))?;
        let algorithm = match peer.key_type {
            KeyType::Ed25519 => SignatureAlgorithm::Ed25519,
            KeyType::EcdsaP256 => SignatureAlgorithm::EcdsaP256Sha256,
            _ => return Err(AuthError::UnsupportedKey),
        };
        Ok(VerifiedPeer {
            ip: IpAddr::V4(peer.virtual_ip),
            serial: peer.serial,
            not_after: peer.not_after,
            public_key: peer.public_key,
            algorithm,
        })
    }
}
