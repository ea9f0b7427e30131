//! Reading certificate signing requests (RFC 2986) with x509-parser.

use std::net::Ipv4Addr;

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::{FromDer, X509CertificationRequest};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::CsrError;
use crate::groups::Groups;
use crate::key::{KeyType, OverlayAddress};

/// The facts a CA needs from a CSR, owned. Only produced after the CSR's
/// self-signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// The requested virtual IP (the single IPv4 iPAddress SAN).
    pub virtual_ip: Ipv4Addr,
    /// The overlay address (the `brunet:node:` URI SAN).
    pub overlay_address: OverlayAddress,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Requested host names (dNSName SANs), each [`is_dns_name`].
    pub dns_names: Vec<String>,
    /// Groups the request asks for (`wow:group:` URI SANs). Only a request:
    /// the CA grants those its policy allows ([`crate::Policy::groups`]).
    pub requested_groups: Groups,
    /// Key type of the requester.
    pub key_type: KeyType,
    /// DER SubjectPublicKeyInfo of the requester.
    pub spki_der: Vec<u8>,
    /// Raw public key (see [`crate::key`] for the format).
    pub public_key_raw: Vec<u8>,
}

/// Identifies the key type of a parsed SubjectPublicKeyInfo.
pub(crate) fn spki_key_type(spki: &SubjectPublicKeyInfo<'_>) -> Option<KeyType> {
    if spki.algorithm.algorithm == OID_SIG_ED25519 {
        return Some(KeyType::Ed25519);
    }
    if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        if curve == OID_EC_P256 {
            return Some(KeyType::EcdsaP256);
        }
    }
    None
}

/// Most dNSName SANs a request may carry.
pub const MAX_DNS_NAMES: usize = 8;

/// A host name the CA certifies: lowercase letters, digits and hyphens in
/// dot-separated labels of 1 to 63 characters, no label starting or ending
/// with a hyphen, at most 253 characters, no trailing dot. One label (a
/// bare name) is allowed; wow-node asks for `<name>.<zone>`.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Parses a DER CSR, checks its self-signature and extracts the SANs.
///
/// Never panics on any input.
pub fn parse_csr(der: &[u8]) -> Result<CsrInfo, CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|_| CsrError::Malformed)?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed);
    }
    let info = &csr.certification_request_info;
    let key_type = spki_key_type(&info.subject_pki).ok_or(CsrError::UnsupportedKey)?;
    let expected_sig = match key_type {
        KeyType::Ed25519 => x509_parser::oid_registry::OID_SIG_ED25519,
        KeyType::EcdsaP256 => x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256,
    };
    if csr.signature_algorithm.algorithm != expected_sig {
        return Err(CsrError::UnsupportedKey);
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    let mut ip: Option<Ipv4Addr> = None;
    let mut ip_count = 0usize;
    let mut overlay: Option<OverlayAddress> = None;
    let mut uri_count = 0usize;
    let mut dns_names: Vec<String> = Vec::new();
    let mut group_uris: Vec<&str> = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    match name {
                        GeneralName::IPAddress(bytes) => {
                            ip_count += 1;
                            if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                                ip = Some(Ipv4Addr::from(octets));
                            }
                        }
                        GeneralName::URI(uri) if uri.starts_with(OverlayAddress::URI_PREFIX) => {
                            uri_count += 1;
                            overlay = OverlayAddress::from_uri(uri).ok();
                        }
                        GeneralName::URI(uri) => group_uris.push(uri),
                        GeneralName::DNSName(name) => {
                            if !is_dns_name(name) || dns_names.len() >= MAX_DNS_NAMES {
                                return Err(CsrError::BadDnsName);
                            }
                            if !dns_names.iter().any(|n| n == name) {
                                dns_names.push((*name).to_owned());
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let virtual_ip = match (ip_count, ip) {
        (0, _) => return Err(CsrError::MissingIp),
        (1, Some(ip)) => ip,
        _ => return Err(CsrError::AmbiguousIp),
    };
    let overlay_address = match (uri_count, overlay) {
        (1, Some(addr)) => addr,
        _ => return Err(CsrError::BadOverlayAddress),
    };
    let requested_groups = Groups::from_uris(group_uris).map_err(|_| CsrError::BadGroups)?;
    let mut common_name = None;
    for attr in info.subject.iter_common_name() {
        let text = attr.as_str().map_err(|_| CsrError::BadCommonName)?;
        common_name = Some(text.to_owned());
    }
    Ok(CsrInfo {
        virtual_ip,
        overlay_address,
        common_name,
        dns_names,
        requested_groups,
        key_type,
        spki_der: info.subject_pki.raw.to_vec(),
        public_key_raw: info.subject_pki.subject_public_key.data.to_vec(),
    })
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::key::{NodeKey, NodeRequest};

    #[test]
    fn csr_round_trip() {
        for key_type in KeyType::ALL {
            let key = NodeKey::generate(key_type).unwrap();
            let mut req = NodeRequest::new(Ipv4Addr::new(10, 128, 0, 7));
            req.common_name = Some("node7".into());
            let der = key.certificate_request(&req).unwrap();
            let info = parse_csr(&der).unwrap();
            assert_eq!(info.virtual_ip, req.virtual_ip);
            assert_eq!(info.common_name.as_deref(), Some("node7"));
            assert_eq!(info.key_type, key_type);
            assert_eq!(info.public_key_raw, key.public_key_raw());
            assert_eq!(info.overlay_address, key.overlay_address());
            assert_eq!(info.spki_der, key.spki_der());
        }
    }

    #[test]
    fn tampered_csr_signature_is_refused() {
        let key = NodeKey::generate(KeyType::Ed25519).unwrap();
        let mut der = key
            .certificate_request(&NodeRequest::new(Ipv4Addr::new(10, 0, 0, 1)))
            .unwrap();
        // Flip a bit in the last byte: part of the signature value.
        let last = der.len() - 1;
        der[last] ^= 1;
        assert_eq!(parse_csr(&der), Err(CsrError::BadSignature));
        assert_eq!(parse_csr(&der[..10]), Err(CsrError::Malformed));
    }
}
