//! Verifying peer certificates: chain, validity, key usage, revocation, and the
//! binding of the certificate to the peer's claimed virtual IP.
//!
//! Load the trust anchor once ([`Verifier::new`]), feed CRLs as they arrive over
//! the overlay ([`Verifier::handle_crl_envelope`] or [`Verifier::set_crl`]), then
//! call [`Verifier::verify`] per handshake. A revocation check is one hash
//! lookup, whatever the CRL size.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use std::time::{Duration, SystemTime};

use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ED25519};
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};
use x509_parser::x509::AlgorithmIdentifier;

use crate::clock;
use crate::csr::spki_key_type;
use crate::error::{CrlError, VerifyError};
use crate::key::{KeyType, OverlayAddress};
use crate::wire::CrlEnvelope;

/// Longest serial number RFC 5280 §4.1.2.2 allows.
const MAX_SERIAL_LEN: usize = 20;

/// A serial number normalised for lookup: leading zero octets stripped,
/// stored inline (no allocation per entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SerialKey {
    len: u8,
    bytes: [u8; MAX_SERIAL_LEN],
}

impl SerialKey {
    fn new(raw: &[u8]) -> Option<Self> {
        let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
        let trimmed = raw.get(start..)?;
        if trimmed.len() > MAX_SERIAL_LEN {
            return None;
        }
        let mut bytes = [0u8; MAX_SERIAL_LEN];
        bytes.get_mut(..trimmed.len())?.copy_from_slice(trimmed);
        Some(SerialKey {
            len: trimmed.len() as u8,
            bytes,
        })
    }
}

/// The revoked serials of one CRL, ready for O(1) lookups.
#[derive(Debug, Clone, Default)]
struct RevocationSet {
    number: u64,
    next_update: Option<SystemTime>,
    serials: HashSet<SerialKey>,
}

/// A trusted CA certificate (root or intermediate), decoded once.
#[derive(Debug, Clone)]
struct TrustedIssuer {
    /// The CA that signed this one (`None` for the root).
    parent: Option<usize>,
    /// This CA certificate's serial, for revocation by its parent's CRL.
    serial: Option<SerialKey>,
    subject_raw: Vec<u8>,
    key_type: KeyType,
    public_key: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
    crl: Option<RevocationSet>,
}

fn signature_fits(alg: &AlgorithmIdentifier<'_>, key_type: KeyType) -> bool {
    match key_type {
        KeyType::Ed25519 => alg.algorithm == OID_SIG_ED25519,
        KeyType::EcdsaP256 => alg.algorithm == OID_SIG_ECDSA_WITH_SHA256,
    }
}

impl TrustedIssuer {
    fn from_cert(cert: &X509Certificate<'_>) -> Result<Self, VerifyError> {
        if !cert.is_ca() {
            return Err(VerifyError::BadCaCertificate);
        }
        if let Ok(Some(ku)) = cert.key_usage()
            && !ku.value.key_cert_sign()
        {
            return Err(VerifyError::BadCaCertificate);
        }
        let spki = cert.public_key();
        let key_type = spki_key_type(spki).ok_or(VerifyError::UnsupportedAlgorithm)?;
        Ok(TrustedIssuer {
            parent: None,
            serial: SerialKey::new(cert.raw_serial()),
            subject_raw: cert.subject().as_raw().to_vec(),
            key_type,
            public_key: spki.subject_public_key.data.to_vec(),
            not_before: clock::system(cert.validity().not_before.to_datetime())
                .ok_or(VerifyError::BadCaCertificate)?,
            not_after: clock::system(cert.validity().not_after.to_datetime())
                .ok_or(VerifyError::BadCaCertificate)?,
            crl: None,
        })
    }

    /// Checks a signature made by this CA's key over `tbs`.
    fn check_signature(
        &self,
        alg: &AlgorithmIdentifier<'_>,
        tbs: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        if !signature_fits(alg, self.key_type) {
            return Err(VerifyError::UnsupportedAlgorithm);
        }
        ring::signature::UnparsedPublicKey::new(
            self.key_type.ring_verification_alg(),
            &self.public_key,
        )
        .verify(tbs, signature)
        .map_err(|_| VerifyError::BadSignature)
    }
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, VerifyError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(VerifyError::Malformed),
    }
}

/// The dNSName SANs of a DER certificate, **without verifying it**: for a
/// CA's own records, or to see what a certificate claims before
/// [`Verifier::verify`] (whose [`VerifiedPeer::dns_names`] are the ones to
/// trust).
pub fn certificate_dns_names(cert_der: &[u8]) -> Result<Vec<String>, VerifyError> {
    let cert = parse_cert(cert_der)?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(name) = name {
                names.push((*name).to_owned());
            }
        }
    }
    Ok(names)
}

/// The groups of a DER certificate (see [`crate::groups`]), **without
/// verifying it**: for a certificate a security association already
/// verified, or a CA's own records.
pub fn certificate_groups(cert_der: &[u8]) -> Result<crate::groups::Groups, VerifyError> {
    let cert = parse_cert(cert_der)?;
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uris.push(*uri);
            }
        }
    }
    crate::groups::Groups::from_uris(uris).map_err(|_| VerifyError::Malformed)
}

/// A peer whose certificate verified. Hand [`VerifiedPeer::public_key`] and
/// [`VerifiedPeer::key_type`] to `ring` (or call [`VerifiedPeer::verify_signature`])
/// to authenticate the peer's handshake signature.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedPeer {
    /// The certified virtual IP (equal to the claimed one).
    pub virtual_ip: Ipv4Addr,
    /// The certified overlay address, if the certificate carries one.
    pub overlay_address: Option<OverlayAddress>,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// The certified host names (dNSName SANs), as issued; a name record
    /// for one of them is the holder's to publish.
    pub dns_names: Vec<String>,
    /// The groups the CA put in the certificate (`wow:group:` URI SANs,
    /// see [`crate::groups`]): what a firewall matches this peer by.
    pub groups: crate::groups::Groups,
    /// Serial number, big-endian, as encoded (DER INTEGER contents).
    pub serial: Vec<u8>,
    /// notAfter: the peer must re-authenticate before this.
    pub not_after: SystemTime,
    /// The peer's key algorithm.
    pub key_type: KeyType,
    /// The raw public key: 32 bytes (Ed25519) or a 65-byte uncompressed point (P-256).
    /// Use with `ring::signature::UnparsedPublicKey::new(key_type.ring_verification_alg(), ..)`.
    pub public_key: Vec<u8>,
    /// The DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

impl VerifiedPeer {
    /// Verifies `signature` over `message` with the peer's certified key
    /// (Ed25519, or ECDSA P-256 SHA-256 with an ASN.1 DER signature).
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        ring::signature::UnparsedPublicKey::new(
            self.key_type.ring_verification_alg(),
            &self.public_key,
        )
        .verify(message, signature)
        .map_err(|_| VerifyError::BadSignature)
    }
}

/// Verifies host certificates against one CA (plus optional intermediates)
/// and its CRLs. Holds no clock: every check takes `now`.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// Index 0 is the root; the rest are intermediates it signed.
    issuers: Vec<TrustedIssuer>,
    /// Refuse certificates when the issuer's CRL is past nextUpdate.
    require_current_crl: bool,
    /// Tolerance after nextUpdate before a CRL counts as outdated.
    crl_grace: Duration,
    /// Without any CRL, certificates are refused after this time.
    first_crl_by: Option<SystemTime>,
}

impl Verifier {
    /// Trusts the CA certificate `ca_cert_der` (DER).
    pub fn new(ca_cert_der: &[u8]) -> Result<Self, VerifyError> {
        let cert = parse_cert(ca_cert_der).map_err(|_| VerifyError::BadCaCertificate)?;
        let root = TrustedIssuer::from_cert(&cert)?;
        // A root must verify its own signature.
        root.check_signature(
            &cert.signature_algorithm,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        )
        .map_err(|_| VerifyError::BadCaCertificate)?;
        Ok(Verifier {
            issuers: vec![root],
            require_current_crl: false,
            crl_grace: Duration::ZERO,
            first_crl_by: None,
        })
    }

    /// Checks a statement signed by one of the trusted CA keys (see
    /// [`crate::wire::statement`]) and returns its body. A statement of
    /// another `label`, a malformed one or a bad signature is refused.
    pub fn verify_statement<'a>(
        &self,
        label: &[u8],
        bytes: &'a [u8],
    ) -> Result<&'a [u8], VerifyError> {
        let statement = crate::wire::Statement::parse(bytes).map_err(VerifyError::Statement)?;
        if statement.label != label {
            return Err(VerifyError::StatementLabel);
        }
        let message = crate::wire::statement::to_be_signed(statement.signed_bytes());
        let signed_by_trusted = self.issuers.iter().any(|issuer| {
            ring::signature::UnparsedPublicKey::new(
                issuer.key_type.ring_verification_alg(),
                &issuer.public_key,
            )
            .verify(&message, statement.signature)
            .is_ok()
        });
        if signed_by_trusted {
            Ok(statement.body)
        } else {
            Err(VerifyError::BadSignature)
        }
    }

    /// Trusts an intermediate CA certificate signed by a CA already trusted,
    /// if it is valid at `now`.
    pub fn add_intermediate(
        &mut self,
        now: SystemTime,
        cert_der: &[u8],
    ) -> Result<(), VerifyError> {
        let cert = parse_cert(cert_der)?;
        let parent_index = self.find_issuer(cert.issuer().as_raw())?;
        let parent = self
            .issuers
            .get(parent_index)
            .ok_or(VerifyError::UnknownIssuer)?;
        parent.check_signature(
            &cert.signature_algorithm,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        )?;
        if now < parent.not_before || now > parent.not_after {
            return Err(VerifyError::IssuerExpired);
        }
        let mut issuer = TrustedIssuer::from_cert(&cert)?;
        issuer.parent = Some(parent_index);
        if self
            .issuers
            .iter()
            .any(|i| i.subject_raw == issuer.subject_raw)
        {
            // Already trusted (or a name clash that would make lookups ambiguous).
            return Ok(());
        }
        if now < issuer.not_before {
            return Err(VerifyError::NotYetValid);
        }
        if now > issuer.not_after {
            return Err(VerifyError::Expired);
        }
        self.issuers.push(issuer);
        Ok(())
    }

    /// When `true`, certificates are refused while their issuer's CRL is past its
    /// nextUpdate (RFC 5280 §5.1.2.5). Off by default: on an overlay a CRL can
    /// arrive late, and a stale CRL still revokes what it lists.
    pub fn set_require_current_crl(&mut self, require: bool) {
        self.require_current_crl = require;
    }

    /// Fails closed on revocation: certificates of the root CA are refused
    /// ([`VerifyError::CrlOutdated`]) once its CRL is more than `grace` past
    /// nextUpdate, or while no CRL at all has been loaded after
    /// `first_crl_by`. Only [`Verifier::verify`] calls made after that
    /// refuse (new key exchanges, rekeys); nothing already verified is
    /// revisited by this alone.
    pub fn require_fresh_crl(&mut self, grace: Duration, first_crl_by: SystemTime) {
        self.require_current_crl = true;
        self.crl_grace = grace;
        self.first_crl_by = Some(first_crl_by);
    }

    /// The nextUpdate of the CRL loaded for the root CA.
    pub fn crl_next_update(&self) -> Option<SystemTime> {
        self.issuers
            .first()
            .and_then(|i| i.crl.as_ref())
            .and_then(|c| c.next_update)
    }

    /// Whether certificates of the root CA are refused at `now` for want of
    /// a current CRL (see [`Verifier::require_fresh_crl`]); always `false`
    /// when no current CRL is required.
    pub fn crl_is_stale(&self, now: SystemTime) -> bool {
        self.issuers
            .first()
            .is_some_and(|i| self.crl_outdated(i.crl.as_ref(), now))
    }

    fn crl_outdated(&self, crl: Option<&RevocationSet>, now: SystemTime) -> bool {
        if !self.require_current_crl {
            return false;
        }
        match crl {
            Some(crl) => crl
                .next_update
                // Past the clock's range: never outdated.
                .and_then(|next| next.checked_add(self.crl_grace))
                .is_some_and(|until| now > until),
            None => self.first_crl_by.is_some_and(|by| now > by),
        }
    }

    fn find_issuer(&self, name_raw: &[u8]) -> Result<usize, VerifyError> {
        self.issuers
            .iter()
            .position(|i| i.subject_raw == name_raw)
            .ok_or(VerifyError::UnknownIssuer)
    }

    /// The number of the CRL loaded for the root CA (0 if none).
    pub fn crl_number(&self) -> u64 {
        self.issuers
            .first()
            .and_then(|i| i.crl.as_ref())
            .map_or(0, |c| c.number)
    }

    /// Number of serials revoked by the loaded CRLs.
    pub fn revoked_count(&self) -> usize {
        self.issuers
            .iter()
            .filter_map(|i| i.crl.as_ref())
            .map(|c| c.serials.len())
            .sum()
    }

    /// Loads a DER CRL (RFC 5280 §5) signed by a trusted CA, replacing the one
    /// held for that CA. Refused, keeping the old one, if it is malformed, badly
    /// signed, past nextUpdate at `now`, or not newer than the loaded one.
    /// Returns the CRL number.
    pub fn set_crl(&mut self, now: SystemTime, crl_der: &[u8]) -> Result<u64, CrlError> {
        self.load_crl(crl_der, None, now)
    }

    /// Loads a CRL from a distribution envelope ([`crate::wire::envelope`]).
    /// The envelope's number must equal the CRL's; a stale number is refused.
    pub fn handle_crl_envelope(&mut self, now: SystemTime, bytes: &[u8]) -> Result<u64, CrlError> {
        let envelope = CrlEnvelope::parse(bytes)?;
        // Cheap early refusal before parsing or verifying (the common replay case).
        if self.issuers.len() == 1 {
            let current = self.crl_number();
            if self.issuers.first().is_some_and(|i| i.crl.is_some())
                && envelope.crl_number <= current
            {
                return Err(CrlError::Stale {
                    offered: envelope.crl_number,
                    current,
                });
            }
        }
        self.load_crl(envelope.crl, Some(envelope.crl_number), now)
    }

    fn load_crl(
        &mut self,
        crl_der: &[u8],
        envelope_number: Option<u64>,
        now: SystemTime,
    ) -> Result<u64, CrlError> {
        let crl = match CertificateRevocationList::from_der(crl_der) {
            Ok(([], crl)) => crl,
            _ => return Err(CrlError::Malformed),
        };
        let number_bytes = crl
            .crl_number()
            .ok_or(CrlError::MissingCrlNumber)?
            .to_bytes_be();
        let trimmed: Vec<u8> = number_bytes
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        if trimmed.len() > 8 {
            return Err(CrlError::CrlNumberOutOfRange);
        }
        let mut be = [0u8; 8];
        be[8 - trimmed.len()..].copy_from_slice(&trimmed);
        let number = u64::from_be_bytes(be);
        if let Some(envelope) = envelope_number
            && envelope != number
        {
            return Err(CrlError::NumberMismatch {
                envelope,
                crl: number,
            });
        }
        let index = self
            .find_issuer(crl.tbs_cert_list.issuer.as_raw())
            .map_err(|_| CrlError::UnknownIssuer)?;
        let issuer = self.issuers.get(index).ok_or(CrlError::UnknownIssuer)?;
        if let Some(current) = issuer.crl.as_ref().map(|c| c.number)
            && number <= current
        {
            return Err(CrlError::Stale {
                offered: number,
                current,
            });
        }
        issuer
            .check_signature(
                &crl.signature_algorithm,
                crl.tbs_cert_list.as_ref(),
                &crl.signature_value.data,
            )
            .map_err(|_| CrlError::BadSignature)?;
        let next_update = crl
            .next_update()
            .map(|t| clock::system(t.to_datetime()).ok_or(CrlError::Malformed))
            .transpose()?;
        if next_update.is_some_and(|next| now > next) {
            return Err(CrlError::Expired);
        }
        let mut serials = HashSet::with_capacity(crl.tbs_cert_list.revoked_certificates.len());
        for revoked in crl.iter_revoked_certificates() {
            let key = SerialKey::new(revoked.raw_serial()).ok_or(CrlError::SerialTooLong)?;
            serials.insert(key);
        }
        if let Some(issuer) = self.issuers.get_mut(index) {
            issuer.crl = Some(RevocationSet {
                number,
                next_update,
                serials,
            });
        }
        Ok(number)
    }

    /// Checks every CA from `index` up to the root: valid at `now`, and not
    /// revoked by its parent's CRL.
    fn check_issuer_path(&self, mut index: usize, now: SystemTime) -> Result<(), VerifyError> {
        // The list only grows by appending children of existing entries, so
        // parents have lower indices and the walk terminates.
        loop {
            let issuer = self.issuers.get(index).ok_or(VerifyError::UnknownIssuer)?;
            if now < issuer.not_before || now > issuer.not_after {
                return Err(VerifyError::IssuerExpired);
            }
            let Some(parent_index) = issuer.parent else {
                return Ok(());
            };
            let parent = self
                .issuers
                .get(parent_index)
                .ok_or(VerifyError::UnknownIssuer)?;
            if let (Some(crl), Some(serial)) = (&parent.crl, &issuer.serial)
                && crl.serials.contains(serial)
            {
                return Err(VerifyError::Revoked);
            }
            debug_assert!(parent_index < index);
            if parent_index >= index {
                return Err(VerifyError::UnknownIssuer);
            }
            index = parent_index;
        }
    }

    /// Verifies a peer's DER certificate at `now` for the virtual IP the peer
    /// claims. Checks, in order: structure, issuer and CA signature, validity of
    /// certificate and issuer, end-entity key usage (digitalSignature, not a CA),
    /// revocation, and that the single IPv4 SAN equals `claimed_ip`.
    pub fn verify(
        &self,
        now: SystemTime,
        cert_der: &[u8],
        claimed_ip: Ipv4Addr,
    ) -> Result<VerifiedPeer, VerifyError> {
        let cert = parse_cert(cert_der)?;
        let index = self.find_issuer(cert.issuer().as_raw())?;
        let issuer = self.issuers.get(index).ok_or(VerifyError::UnknownIssuer)?;
        issuer.check_signature(
            &cert.signature_algorithm,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        )?;
        let validity = cert.validity();
        let not_before =
            clock::system(validity.not_before.to_datetime()).ok_or(VerifyError::Malformed)?;
        let not_after =
            clock::system(validity.not_after.to_datetime()).ok_or(VerifyError::Malformed)?;
        if now < not_before {
            return Err(VerifyError::NotYetValid);
        }
        if now > not_after {
            return Err(VerifyError::Expired);
        }
        self.check_issuer_path(index, now)?;
        if cert.is_ca() {
            return Err(VerifyError::BadKeyUsage);
        }
        match cert.key_usage() {
            Ok(Some(ku)) if ku.value.digital_signature() => {}
            _ => return Err(VerifyError::BadKeyUsage),
        }
        let serial = cert.raw_serial();
        if self.crl_outdated(issuer.crl.as_ref(), now) {
            return Err(VerifyError::CrlOutdated);
        }
        if let Some(crl) = &issuer.crl {
            let key = SerialKey::new(serial).ok_or(VerifyError::Malformed)?;
            if crl.serials.contains(&key) {
                return Err(VerifyError::Revoked);
            }
        }
        let mut ips = Vec::new();
        let mut overlay_address = None;
        let mut dns_names = Vec::new();
        let mut group_uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::IPAddress(bytes) => ips.push(*bytes),
                    GeneralName::DNSName(name) => dns_names.push((*name).to_owned()),
                    GeneralName::URI(uri) => {
                        if let Ok(addr) = OverlayAddress::from_uri(uri) {
                            overlay_address = Some(addr);
                        } else {
                            group_uris.push(*uri);
                        }
                    }
                    _ => {}
                }
            }
        }
        let certified = match ips.as_slice() {
            [one] => <[u8; 4]>::try_from(*one).ok().map(Ipv4Addr::from),
            _ => None,
        };
        if certified != Some(claimed_ip) {
            return Err(VerifyError::IpMismatch {
                certified,
                claimed: claimed_ip,
            });
        }
        // A malformed group, or too many, is a certificate this CA does not
        // issue: refused rather than half-read.
        let groups =
            crate::groups::Groups::from_uris(group_uris).map_err(|_| VerifyError::Malformed)?;
        let spki = cert.public_key();
        let key_type = spki_key_type(spki).ok_or(VerifyError::UnsupportedAlgorithm)?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(VerifiedPeer {
            virtual_ip: claimed_ip,
            overlay_address,
            common_name,
            dns_names,
            groups,
            serial: serial.to_vec(),
            not_after,
            key_type,
            public_key: spki.subject_public_key.data.to_vec(),
            spki_der: spki.raw.to_vec(),
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn serial_key_normalises_leading_zeros() {
        assert_eq!(SerialKey::new(&[0, 0x80, 1]), SerialKey::new(&[0x80, 1]));
        assert_ne!(SerialKey::new(&[0x80, 1]), SerialKey::new(&[0x80, 2]));
        assert!(SerialKey::new(&[1; 21]).is_none());
        assert!(SerialKey::new(&[0; 25]).is_some());
    }
}
