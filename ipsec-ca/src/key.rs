//! Node and CA key pairs, the overlay address, and certificate signing requests.
//!
//! Two key types are supported, both signed and verified with `ring`:
//!
//! | [`KeyType`] | public key ([`NodeKey::public_key_raw`]) | signature format |
//! |---|---|---|
//! | [`KeyType::Ed25519`] | 32 bytes (RFC 8410) | 64 bytes (RFC 8032), ring `ED25519` |
//! | [`KeyType::EcdsaP256`] | 65-byte uncompressed point (SEC 1 §2.3.3) | ASN.1 DER, ring `ECDSA_P256_SHA256_ASN1` |
//!
//! Private keys are PKCS#8 (RFC 5958) DER, as `ring` loads them:
//! `ring::signature::Ed25519KeyPair::from_pkcs8` or
//! `ring::signature::EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, ..)`.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
    SanType, SignatureAlgorithm, SigningKey,
};

use crate::error::KeyError;

/// The key algorithms a node or CA key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyType {
    /// Ed25519 (RFC 8032, RFC 8410).
    Ed25519,
    /// ECDSA on NIST P-256 with SHA-256 (RFC 5480, RFC 5758).
    EcdsaP256,
}

impl KeyType {
    /// Every supported key type.
    pub const ALL: [KeyType; 2] = [KeyType::Ed25519, KeyType::EcdsaP256];

    /// The rcgen signature algorithm for this key type.
    pub(crate) fn rcgen_alg(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::Ed25519 => &PKCS_ED25519,
            KeyType::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
        }
    }

    /// The `ring` algorithm that verifies signatures made by this key type.
    pub fn ring_verification_alg(self) -> &'static dyn ring::signature::VerificationAlgorithm {
        match self {
            KeyType::Ed25519 => &ring::signature::ED25519,
            KeyType::EcdsaP256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        }
    }

    /// Short name used on the command line and in the state file.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "p256",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "ed25519" => Ok(KeyType::Ed25519),
            "p256" | "ecdsa-p256" => Ok(KeyType::EcdsaP256),
            _ => Err(KeyError::UnknownKeyType),
        }
    }
}

/// A 160-bit overlay (Brunet) address, carried in certificates as a URI SAN.
///
/// The URI scheme follows Brunet's `AHAddress` text form: `brunet:node:` then the
/// 20 address bytes in RFC 4648 §6 base32 (upper case, no padding, 32 characters),
/// e.g. `brunet:node:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OverlayAddress(pub [u8; 20]);

impl OverlayAddress {
    /// The URI prefix of the SAN.
    pub const URI_PREFIX: &'static str = "brunet:node:";

    /// The address derived from a public key: the first 20 bytes of SHA-256 over
    /// the DER SubjectPublicKeyInfo, with the lowest bit cleared (a Brunet
    /// "class 0" structured address).
    pub fn from_public_key(spki_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(&digest.as_ref()[..20]);
        bytes[19] &= 0xfe;
        OverlayAddress(bytes)
    }

    /// The `brunet:node:...` URI.
    pub fn to_uri(&self) -> String {
        let mut out = String::with_capacity(Self::URI_PREFIX.len() + 32);
        out.push_str(Self::URI_PREFIX);
        base32_encode(&self.0, &mut out);
        out
    }

    /// Parses a `brunet:node:...` URI.
    pub fn from_uri(uri: &str) -> Result<Self, KeyError> {
        let rest = uri
            .strip_prefix(Self::URI_PREFIX)
            .ok_or(KeyError::BadOverlayUri)?;
        base32_decode_20(rest)
            .map(OverlayAddress)
            .ok_or(KeyError::BadOverlayUri)
    }
}

impl fmt::Display for OverlayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32_encode(bytes: &[u8; 20], out: &mut String) {
    // 20 bytes = 160 bits = exactly 32 five-bit groups: no padding.
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let idx = ((acc >> bits) & 0x1f) as usize;
            out.push(char::from(BASE32[idx]));
        }
    }
}

fn base32_decode_20(s: &str) -> Option<[u8; 20]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 20];
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let mut pos = 0usize;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(pos)? = (acc >> bits) as u8;
            pos += 1;
        }
    }
    (pos == 20).then_some(out)
}

/// A private key: a node's (or a CA's) signing key.
///
/// Generated from the operating system's CSPRNG via `ring` (key material must not
/// come from a seeded generator). [`NodeKey::pkcs8_der`] hands the key to `ring`
/// for signing in other crates.
pub struct NodeKey {
    key_pair: KeyPair,
    key_type: KeyType,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Generates a fresh key pair of the given type.
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let key_pair = KeyPair::generate_for(key_type.rcgen_alg()).map_err(KeyError::Generate)?;
        Ok(NodeKey { key_pair, key_type })
    }

    /// Loads a PKCS#8 DER private key; the key type is detected.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let key_pair = KeyPair::try_from(der).map_err(|_| KeyError::BadPrivateKey)?;
        for key_type in KeyType::ALL {
            if key_pair.algorithm() == key_type.rcgen_alg() {
                return Ok(NodeKey { key_pair, key_type });
            }
        }
        Err(KeyError::BadPrivateKey)
    }

    /// Loads a PEM `PRIVATE KEY` (PKCS#8).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(text).map_err(|_| KeyError::BadPem)?;
        if block.tag() != "PRIVATE KEY" {
            return Err(KeyError::BadPem);
        }
        Self::from_pkcs8_der(block.contents())
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The private key as PKCS#8 DER (load it with `ring`, see the module docs).
    pub fn pkcs8_der(&self) -> &[u8] {
        self.key_pair.serialized_der()
    }

    /// The private key as PEM `PRIVATE KEY`.
    pub fn to_pem(&self) -> String {
        self.key_pair.serialize_pem()
    }

    /// The raw public key (see the module docs for its format).
    pub fn public_key_raw(&self) -> &[u8] {
        self.key_pair.public_key_raw()
    }

    /// The DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7).
    pub fn spki_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.key_pair)
    }

    /// The overlay address derived from this key ([`OverlayAddress::from_public_key`]).
    pub fn overlay_address(&self) -> OverlayAddress {
        OverlayAddress::from_public_key(&self.spki_der())
    }

    /// Signs `message` (format in the module docs); [`crate::VerifiedPeer::verify_signature`]
    /// checks it.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.key_pair.sign(message).map_err(KeyError::Sign)
    }

    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.key_pair
    }

    /// Builds a DER PKCS#10 certificate signing request (RFC 2986) for `request`.
    ///
    /// The CSR carries the virtual IP as a SAN iPAddress, the overlay address as a
    /// SAN URI ([`OverlayAddress::to_uri`]), each DNS name as a SAN dNSName and
    /// the common name in the subject.
    pub fn certificate_request(&self, request: &NodeRequest) -> Result<Vec<u8>, KeyError> {
        if request.dns_names.len() > crate::csr::MAX_DNS_NAMES {
            return Err(KeyError::BadDnsName(request.dns_names.join(",")));
        }
        let mut dns = Vec::new();
        for name in &request.dns_names {
            if !crate::csr::is_dns_name(name) {
                return Err(KeyError::BadDnsName(name.clone()));
            }
            dns.push(SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|_| KeyError::BadDnsName(name.clone()))?,
            ));
        }
        let overlay = request
            .overlay_address
            .unwrap_or_else(|| self.overlay_address());
        let uri = overlay
            .to_uri()
            .try_into()
            .map_err(|_| KeyError::BadOverlayUri)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let name = match &request.common_name {
            Some(name) => name.clone(),
            None => request.virtual_ip.to_string(),
        };
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(request.virtual_ip)),
            SanType::URI(uri),
        ];
        params.subject_alt_names.extend(dns);
        for uri in request.groups.to_uris() {
            params.subject_alt_names.push(SanType::URI(
                uri.as_str()
                    .try_into()
                    .map_err(|_| KeyError::BadGroup(uri.clone()))?,
            ));
        }
        let csr = params
            .serialize_request(&self.key_pair)
            .map_err(KeyError::Sign)?;
        Ok(csr.der().to_vec())
    }
}

/// What a node asks to be certified for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequest {
    /// The node's virtual IP (goes into a SAN iPAddress).
    pub virtual_ip: Ipv4Addr,
    /// The node's overlay address; `None` derives it from the key.
    pub overlay_address: Option<OverlayAddress>,
    /// Subject common name; `None` uses the virtual IP's text form.
    pub common_name: Option<String>,
    /// Host names to certify (dNSName SANs), e.g. `db.wow.internal`: a
    /// name record for them is then believed only from this key.
    pub dns_names: Vec<String>,
    /// Groups to ask the CA for (`wow:group:` URI SANs); the CA's policy
    /// decides which it grants.
    pub groups: crate::groups::Groups,
}

impl NodeRequest {
    /// A request for `virtual_ip` with derived overlay address and default name.
    pub fn new(virtual_ip: Ipv4Addr) -> Self {
        NodeRequest {
            virtual_ip,
            overlay_address: None,
            common_name: None,
            dns_names: Vec::new(),
            groups: crate::groups::Groups::empty(),
        }
    }

    /// This request, also asking for the host name `name` (lowercase,
    /// e.g. `db.wow.internal`).
    pub fn with_dns_name(mut self, name: impl Into<String>) -> Self {
        self.dns_names.push(name.into());
        self
    }
}

/// Wraps DER bytes in PEM with the given tag (`CERTIFICATE`, `CERTIFICATE REQUEST`, `X509 CRL`).
pub fn to_pem(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

/// Extracts the DER contents of the first PEM block with `tag`.
pub fn from_pem(tag: &str, text: &str) -> Result<Vec<u8>, KeyError> {
    let blocks = pem::parse_many(text).map_err(|_| KeyError::BadPem)?;
    blocks
        .into_iter()
        .find(|b| b.tag() == tag)
        .map(pem::Pem::into_contents)
        .ok_or(KeyError::BadPem)
}

/// Extracts the DER contents of every PEM block with `tag`, in order.
pub fn all_from_pem(tag: &str, text: &str) -> Result<Vec<Vec<u8>>, KeyError> {
    let blocks = pem::parse_many(text).map_err(|_| KeyError::BadPem)?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == tag)
        .map(pem::Pem::into_contents)
        .collect())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn base32_round_trip_and_rejects() {
        let addr = OverlayAddress([
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 0xff,
        ]);
        let uri = addr.to_uri();
        assert_eq!(uri.len(), 12 + 32);
        assert_eq!(OverlayAddress::from_uri(&uri).unwrap(), addr);
        assert!(OverlayAddress::from_uri("brunet:node:AAAA").is_err());
        assert!(OverlayAddress::from_uri("http://x").is_err());
        assert!(OverlayAddress::from_uri(&uri.to_lowercase()).is_err());
        // RFC 4648 test vector prefix: "f" -> "MY".
        let mut f = [0u8; 20];
        f[0] = b'f';
        assert!(OverlayAddress(f).to_uri().starts_with("brunet:node:MY"));
    }

    #[test]
    fn pkcs8_round_trip_both_types() {
        for key_type in KeyType::ALL {
            let key = NodeKey::generate(key_type).unwrap();
            let again = NodeKey::from_pkcs8_der(key.pkcs8_der()).unwrap();
            assert_eq!(again.key_type(), key_type);
            assert_eq!(again.public_key_raw(), key.public_key_raw());
            let pem_again = NodeKey::from_pem(&key.to_pem()).unwrap();
            assert_eq!(pem_again.public_key_raw(), key.public_key_raw());
        }
        assert!(NodeKey::from_pkcs8_der(b"not a key").is_err());
    }

    #[test]
    fn pkcs8_loads_in_ring() {
        let rng = ring::rand::SystemRandom::new();
        let ed = NodeKey::generate(KeyType::Ed25519).unwrap();
        let kp = ring::signature::Ed25519KeyPair::from_pkcs8(ed.pkcs8_der()).unwrap();
        use ring::signature::KeyPair as _;
        assert_eq!(kp.public_key().as_ref(), ed.public_key_raw());
        let ec = NodeKey::generate(KeyType::EcdsaP256).unwrap();
        let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            ec.pkcs8_der(),
            &rng,
        )
        .unwrap();
        assert_eq!(kp.public_key().as_ref(), ec.public_key_raw());
    }
}
