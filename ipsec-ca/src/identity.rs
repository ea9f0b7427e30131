//! A CA's own key and certificate: root or intermediate.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::clock;
use crate::error::{CaError, KeyError};
use crate::key::{self, KeyType, NodeKey};

/// A CA's signing key, certificate and the chain above it.
pub struct CaIdentity {
    issuer: Issuer<'static, KeyPair>,
    key_type: KeyType,
    cert_der: Vec<u8>,
    /// Certificates above this one, nearest first, ending with the root.
    chain: Vec<Vec<u8>>,
    not_after: OffsetDateTime,
    /// `not_after` as the public API gives it.
    not_after_wall: SystemTime,
}

impl core::fmt::Debug for CaIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CaIdentity")
            .field("key_type", &self.key_type)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// How far a CA certificate's notBefore precedes its creation time.
pub const CA_BACKDATE: Duration = Duration::from_secs(3600);

fn ca_params(
    common_name: &str,
    is_ca: IsCa,
    spki: &[u8],
    now: OffsetDateTime,
    validity: Duration,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = is_ca;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Backdated like end-entity certificates (`Policy::backdate`), so a
    // certificate issued right away does not start before its issuer.
    params.not_before = clock::sub(now, CA_BACKDATE).unwrap_or(now);
    params.not_after = clock::add(now, validity).ok_or(CaError::TimeOutOfRange)?;
    // CA certificates are rare; a digest of key and time is unique and unguessable
    // enough, and keeps this path free of an RNG argument.
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(spki);
    ctx.update(&now.unix_timestamp_nanos().to_be_bytes());
    let digest = ctx.finish();
    let mut serial = [0u8; 16];
    serial.copy_from_slice(&digest.as_ref()[..16]);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl CaIdentity {
    /// Signs `body` as a statement of kind `label` with this CA's key (see
    /// [`crate::wire::statement`]); [`crate::Verifier::verify_statement`]
    /// checks it against the CA certificate.
    pub fn sign_statement(&self, label: &[u8], body: &[u8]) -> Result<Vec<u8>, CaError> {
        use rcgen::SigningKey as _;
        let signed = crate::wire::statement::signed_part(label, body)
            .map_err(|_| CaError::StatementTooLarge)?;
        let signature = self
            .issuer
            .key()
            .sign(&crate::wire::statement::to_be_signed(&signed))
            .map_err(|e| CaError::Key(KeyError::Sign(e)))?;
        crate::wire::statement::finish(signed, &signature).map_err(|_| CaError::StatementTooLarge)
    }

    /// Creates a self-signed root CA valid from `now` for `validity`.
    pub fn create_root(
        now: SystemTime,
        key_type: KeyType,
        common_name: &str,
        validity: Duration,
    ) -> Result<Self, CaError> {
        let now = clock::offset(now).ok_or(CaError::TimeOutOfRange)?;
        let key = NodeKey::generate(key_type)?;
        let mut params = ca_params(
            common_name,
            IsCa::Ca(BasicConstraints::Unconstrained),
            &key.spki_der(),
            now,
            validity,
        )?;
        params.use_authority_key_identifier_extension = false;
        let cert = params
            .self_signed(key.key_pair())
            .map_err(CaError::Encode)?;
        let cert_der = cert.der().to_vec();
        Self::from_parts(cert_der, key.pkcs8_der(), Vec::new())
    }

    /// Creates an intermediate CA signed by `parent`, allowed to issue end-entity
    /// certificates only (pathLenConstraint 0).
    pub fn create_intermediate(
        now: SystemTime,
        parent: &CaIdentity,
        key_type: KeyType,
        common_name: &str,
        validity: Duration,
    ) -> Result<Self, CaError> {
        let now = clock::offset(now).ok_or(CaError::TimeOutOfRange)?;
        let key = NodeKey::generate(key_type)?;
        let params = ca_params(
            common_name,
            IsCa::Ca(BasicConstraints::Constrained(0)),
            &key.spki_der(),
            now,
            validity,
        )?;
        if params.not_after > parent.not_after {
            return Err(crate::error::PolicyError::BeyondCaValidity.into());
        }
        let cert = params
            .signed_by(key.key_pair(), &parent.issuer)
            .map_err(CaError::Encode)?;
        let mut chain = vec![parent.cert_der.clone()];
        chain.extend(parent.chain.iter().cloned());
        Self::from_parts(cert.der().to_vec(), key.pkcs8_der(), chain)
    }

    /// Assembles an identity from its DER certificate, PKCS#8 key and chain
    /// (nearest issuer first). Checks that the key matches the certificate.
    pub fn from_parts(
        cert_der: Vec<u8>,
        key_pkcs8: &[u8],
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, CaError> {
        let key = NodeKey::from_pkcs8_der(key_pkcs8)?;
        let (rest, cert) =
            X509Certificate::from_der(&cert_der).map_err(|_| CaError::BadCaCertificate)?;
        if !rest.is_empty() || !cert.is_ca() {
            return Err(CaError::BadCaCertificate);
        }
        if cert.public_key().raw != key.spki_der().as_slice() {
            return Err(CaError::BadCaCertificate);
        }
        let not_after = cert.validity().not_after.to_datetime();
        let not_after_wall = clock::system(not_after).ok_or(CaError::BadCaCertificate)?;
        let key_type = key.key_type();
        let key_pair = KeyPair::try_from(key_pkcs8).map_err(|_| KeyError::BadPrivateKey)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key_pair)
            .map_err(CaError::Encode)?;
        Ok(CaIdentity {
            issuer,
            key_type,
            cert_der,
            chain,
            not_after,
            not_after_wall,
        })
    }

    /// Loads from PEM texts: the CA certificate, its `PRIVATE KEY`, and optionally
    /// the chain above it (any number of `CERTIFICATE` blocks, nearest first).
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        chain_pem: Option<&str>,
    ) -> Result<Self, CaError> {
        let cert_der = key::from_pem("CERTIFICATE", cert_pem)?;
        let key = NodeKey::from_pem(key_pem)?;
        let chain = match chain_pem {
            Some(text) => key::all_from_pem("CERTIFICATE", text)?,
            None => Vec::new(),
        };
        Self::from_parts(cert_der, key.pkcs8_der(), chain)
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        key::to_pem("CERTIFICATE", &self.cert_der)
    }

    /// The chain above this CA (nearest first, root last); empty for a root.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The chain above this CA as concatenated PEM.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|der| key::to_pem("CERTIFICATE", der))
            .collect()
    }

    /// The root of trust: the last chain element, or this certificate for a root.
    pub fn root_der(&self) -> &[u8] {
        self.chain.last().map_or(&self.cert_der, Vec::as_slice)
    }

    /// The CA private key, PEM (store it with mode 0600).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The CA certificate's notAfter.
    pub fn not_after(&self) -> SystemTime {
        self.not_after_wall
    }

    pub(crate) fn not_after_offset(&self) -> OffsetDateTime {
        self.not_after
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}
