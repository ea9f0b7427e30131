//! Error types, one enum per layer.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::key::KeyType;

/// A key or PEM handling failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Key generation failed in the crypto backend.
    #[error("key generation failed: {0}")]
    Generate(#[source] rcgen::Error),
    /// Signing failed in the crypto backend.
    #[error("signing failed: {0}")]
    Sign(#[source] rcgen::Error),
    /// The bytes are not a PKCS#8 Ed25519 or P-256 private key.
    #[error("not a PKCS#8 Ed25519 or ECDSA P-256 private key")]
    BadPrivateKey,
    /// The text is not PEM, or lacks the expected block.
    #[error("malformed PEM or missing PEM block")]
    BadPem,
    /// Unknown key type name.
    #[error("unknown key type (expected ed25519 or p256)")]
    UnknownKeyType,
    /// The overlay address URI is not `brunet:node:<32 base32 chars>`.
    #[error("malformed overlay address URI")]
    BadOverlayUri,
    /// A requested group does not fit in a URI SAN.
    #[error("group cannot be encoded: {0}")]
    BadGroup(String),
    /// A requested DNS name is not a lowercase host name (see
    /// [`crate::csr::is_dns_name`]), or there are more than
    /// [`crate::csr::MAX_DNS_NAMES`].
    #[error("DNS name {0:?} is not a lowercase host name, or too many names")]
    BadDnsName(String),
}

/// Why a certificate signing request is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not DER PKCS#10, or trailing bytes.
    #[error("malformed certificate signing request")]
    Malformed,
    /// The CSR's self-signature does not verify (RFC 2986 §3).
    #[error("certificate signing request signature is invalid")]
    BadSignature,
    /// The public key is neither Ed25519 nor P-256, or the signature algorithm does not fit it.
    #[error("unsupported key or signature algorithm in CSR")]
    UnsupportedKey,
    /// No SAN iPAddress with an IPv4 address.
    #[error("CSR carries no IPv4 iPAddress SAN")]
    MissingIp,
    /// More than one iPAddress SAN, or an IPv6 one.
    #[error("CSR must carry exactly one IPv4 iPAddress SAN")]
    AmbiguousIp,
    /// The overlay URI SAN is missing, duplicated or malformed.
    #[error("CSR overlay address URI SAN is missing or malformed")]
    BadOverlayAddress,
    /// The subject common name is not valid text.
    #[error("CSR subject common name is not a string")]
    BadCommonName,
    /// A dNSName SAN is not a lowercase host name, or there are more than
    /// [`crate::csr::MAX_DNS_NAMES`].
    #[error("CSR dNSName SAN is malformed, or too many")]
    BadDnsName,
    /// A `wow:group:` URI SAN is not a valid group name, or there are more
    /// than [`crate::groups::MAX_GROUPS`].
    #[error("CSR group URI SAN is malformed, or too many")]
    BadGroups,
}

/// A refusal by the signing policy. Every refusal is its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The CSR itself is unusable.
    #[error("bad CSR: {0}")]
    Csr(#[from] CsrError),
    /// The CSR's IP differs from the authenticated source of the request.
    #[error("CSR asks for {requested} but the request came from {source_ip}")]
    IpMismatch {
        /// IP in the CSR.
        requested: Ipv4Addr,
        /// Authenticated source IP.
        source_ip: Ipv4Addr,
    },
    /// Another key holds a live (unrevoked, unexpired) certificate for this IP.
    #[error("{ip} already has live certificate {serial_hex} for another key")]
    IpInUse {
        /// The contested IP.
        ip: Ipv4Addr,
        /// Serial of the live certificate, hex.
        serial_hex: String,
    },
    /// The key type is not allowed by the policy.
    #[error("key type {0} is not allowed by policy")]
    KeyTypeNotAllowed(KeyType),
    /// The requested validity exceeds the policy cap.
    #[error("requested validity {requested_secs} s exceeds the cap of {max_secs} s")]
    ValidityTooLong {
        /// Requested, seconds.
        requested_secs: i64,
        /// Cap, seconds.
        max_secs: i64,
    },
    /// The validity is zero or negative.
    #[error("requested validity must be positive")]
    ValidityNotPositive,
    /// The pending queue is full.
    #[error("the pending queue is full")]
    QueueFull,
    /// The address lies outside the network the CA serves, or is its
    /// network or broadcast address.
    #[error("{0} is not a host address of the network")]
    OutsideNetwork(Ipv4Addr),
    /// The issuing CA certificate has expired (or a sub-CA would outlive its parent).
    #[error("the CA certificate has expired or would be outlived")]
    BeyondCaValidity,
    /// A requested DNS name is not one label under [`crate::Policy::dns_zone`].
    #[error("{0} is not a name in the CA's DNS zone")]
    NameOutsideZone(String),
    /// Another key holds a live certificate for this DNS name.
    #[error("{name} already has live certificate {serial_hex} for another key")]
    NameInUse {
        /// The contested name.
        name: String,
        /// Serial of the live certificate, hex.
        serial_hex: String,
    },
    /// The time given is before the Unix epoch, or beyond what a
    /// certificate can carry (year 9999).
    #[error("time before 1970 or out of range")]
    TimeOutOfRange,
}

/// A CA operation failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The policy refused the request.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The store failed; the in-memory state was left unchanged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No pending request has this id.
    #[error("no pending request with id {0}")]
    UnknownRequest(u64),
    /// No issued certificate matches.
    #[error("certificate is not in this CA's index")]
    UnknownCertificate,
    /// The certificate is already revoked.
    #[error("certificate is already revoked")]
    AlreadyRevoked,
    /// rcgen refused to build the certificate or CRL.
    #[error("certificate encoding failed: {0}")]
    Encode(#[source] rcgen::Error),
    /// The CA key or certificate is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The CA certificate is not a valid CA certificate.
    #[error("CA certificate is malformed or not a CA")]
    BadCaCertificate,
    /// A time is before the Unix epoch, or a time computation overflowed.
    #[error("time out of range")]
    TimeOutOfRange,
    /// The operating system's random source failed (no serial number).
    #[error("the operating system's random source failed")]
    Random,
    /// A statement's label (over 255 octets) or body is too large to sign.
    #[error("statement too large to sign")]
    StatementTooLarge,
}

/// A persistence failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O operation on `path` failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The stored state does not decode.
    #[error("stored CA state is corrupt: {0}")]
    Corrupt(#[source] serde_json::Error),
    /// The stored state has an unknown format version.
    #[error("stored CA state has unsupported version {0}")]
    UnsupportedVersion(u32),
    /// The stored state is internally inconsistent (duplicate serials, a
    /// journal gap, a change that does not fit).
    #[error("stored CA state is inconsistent")]
    Inconsistent,
    /// Another process (or store) has this CA directory open.
    #[error("CA directory {0} is in use by another process")]
    Locked(PathBuf),
    /// The CA directory holds no CA (it was never initialised).
    #[error("{0} holds no CA")]
    NoCa(PathBuf),
    /// The CA directory already holds a CA (initialising again would lose it).
    #[error("{0} already holds a CA")]
    AlreadyCa(PathBuf),
}

/// Why a peer certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a DER X.509 certificate, or trailing bytes.
    #[error("malformed certificate")]
    Malformed,
    /// The issuer is not the trusted CA or a known intermediate.
    #[error("certificate is not issued by a trusted CA")]
    UnknownIssuer,
    /// The CA signature does not verify.
    #[error("certificate signature is invalid")]
    BadSignature,
    /// Unsupported key or signature algorithm.
    #[error("unsupported key or signature algorithm")]
    UnsupportedAlgorithm,
    /// `now` is before notBefore.
    #[error("certificate is not valid yet")]
    NotYetValid,
    /// `now` is after notAfter.
    #[error("certificate has expired")]
    Expired,
    /// The issuing CA certificate is outside its validity at `now`.
    #[error("issuing CA certificate is not valid at this time")]
    IssuerExpired,
    /// The certificate is a CA certificate, or lacks the digitalSignature key usage.
    #[error("certificate is not an end-entity certificate for signing")]
    BadKeyUsage,
    /// Revoked by the loaded CRL.
    #[error("certificate is revoked")]
    Revoked,
    /// The issuer's CRL is past nextUpdate (plus the grace), or none was
    /// loaded in time, and the verifier requires a current one.
    #[error("no current CRL (past its next update, or none loaded)")]
    CrlOutdated,
    /// The certificate's IP is not the peer's claimed virtual IP.
    #[error("certificate is for {certified:?}, peer claims {claimed}")]
    IpMismatch {
        /// IPv4 in the certificate, if exactly one.
        certified: Option<Ipv4Addr>,
        /// The claimed IP.
        claimed: Ipv4Addr,
    },
    /// The CA certificate is malformed or not a CA.
    #[error("trust anchor is not a usable CA certificate")]
    BadCaCertificate,
    /// A signed statement is malformed.
    #[error("malformed signed statement: {0}")]
    Statement(WireError),
    /// A signed statement is of another kind than expected.
    #[error("signed statement has another label")]
    StatementLabel,
}

/// Why a CRL or CRL envelope was refused. The verifier keeps its previous CRL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// Not a DER X.509 v2 CRL.
    #[error("malformed CRL")]
    Malformed,
    /// The envelope bytes are malformed.
    #[error("malformed CRL envelope: {0}")]
    Envelope(#[from] WireError),
    /// The CRL has no CRL number extension (RFC 5280 §5.2.3).
    #[error("CRL has no CRL number")]
    MissingCrlNumber,
    /// The CRL number does not fit 64 bits.
    #[error("CRL number out of range")]
    CrlNumberOutOfRange,
    /// The envelope's number disagrees with the CRL's.
    #[error("envelope CRL number {envelope} differs from the CRL's {crl}")]
    NumberMismatch {
        /// In the envelope.
        envelope: u64,
        /// In the CRL.
        crl: u64,
    },
    /// Not newer than the CRL already loaded.
    #[error("stale CRL number {offered}, have {current}")]
    Stale {
        /// Offered number.
        offered: u64,
        /// Loaded number.
        current: u64,
    },
    /// The issuer is not a trusted CA.
    #[error("CRL issuer is not a trusted CA")]
    UnknownIssuer,
    /// The CRL signature does not verify.
    #[error("CRL signature is invalid")]
    BadSignature,
    /// `now` is past the CRL's nextUpdate.
    #[error("CRL is past its next update")]
    Expired,
    /// A revoked serial is longer than 20 octets (RFC 5280 §4.1.2.2).
    #[error("revoked serial number too long")]
    SerialTooLong,
}

/// A malformed wire message (enrolment message or CRL envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the header or declared length needs.
    #[error("truncated message")]
    Truncated,
    /// Bytes left after the declared length.
    #[error("trailing bytes after message")]
    Trailing,
    /// Unknown format version.
    #[error("unsupported version {0}")]
    Version(u8),
    /// Unknown message type.
    #[error("unknown message type {0}")]
    MessageType(u8),
    /// Wrong magic bytes.
    #[error("bad magic")]
    Magic,
    /// A payload exceeds the size limit.
    #[error("payload too large")]
    TooLarge,
    /// A well-formed message of a type not accepted here (a reply sent to the CA).
    #[error("unexpected message type")]
    Unexpected,
}
