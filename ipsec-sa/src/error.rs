//! Error types, one enum per layer.
//!
//! A peer's bad bytes surface as [`Rejection`] (drop and count); a peer that
//! fails authentication as [`HandshakeError`]; caller misuse as
//! [`SealError`] or [`IdentityError`].

use core::net::IpAddr;

use crate::wire::Suite;

/// Malformed bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before the field that was being read.
    #[error("truncated packet")]
    Truncated,
    /// Bytes remain after the last field of a fixed-layout message.
    #[error("trailing bytes after message")]
    TrailingBytes,
    /// A data packet uses an SPI from the reserved range 1..=255
    /// (RFC 4303 §2.1).
    #[error("reserved SPI {0}")]
    ReservedSpi(u32),
    /// A handshake message of a kind this implementation does not know.
    #[error("unknown handshake message kind {0}")]
    UnknownKind(u8),
    /// A handshake message of another protocol version.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A cipher suite identifier this implementation does not know.
    #[error("unknown cipher suite {0}")]
    UnknownSuite(u8),
    /// An initiation that offers no cipher suite at all.
    #[error("no cipher suite offered")]
    NoSuiteOffered,
    /// A field is longer than the message allows.
    #[error("field too long")]
    Oversize,
}

/// Why a certificate was not accepted for a peer.
///
/// Returned by [`PeerAuthenticator`](crate::PeerAuthenticator)
/// implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The certificate could not be parsed.
    #[error("malformed certificate")]
    Malformed,
    /// The certificate does not chain to the trusted CA.
    #[error("certificate not issued by the trusted CA")]
    UntrustedIssuer,
    /// The certificate's validity ended before the given time.
    #[error("certificate expired")]
    Expired,
    /// The certificate's validity starts after the given time.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// The certificate's serial is on the current revocation list.
    #[error("certificate revoked")]
    Revoked,
    /// The certificate is valid but bound to another IP than the peer's.
    #[error("certificate is for {certified:?}, peer claims {claimed}")]
    IpMismatch {
        /// The virtual IP the peer claims.
        claimed: IpAddr,
        /// The IP in the certificate, if it had one.
        certified: Option<IpAddr>,
    },
    /// Key usage or extended key usage forbids this use.
    #[error("certificate key usage does not allow authentication")]
    KeyUsage,
    /// The revocation list is past its next update and the verifier
    /// requires a current one.
    #[error("revocation list outdated")]
    CrlOutdated,
    /// The certificate's key algorithm is not Ed25519 or ECDSA P-256.
    #[error("unsupported certificate key algorithm")]
    UnsupportedKey,
    /// The verifier refused the certificate for a reason not listed above.
    #[error("certificate rejected by the verifier")]
    Rejected,
}

/// Why a key exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The handshake message is malformed or truncated.
    #[error("malformed handshake message: {0}")]
    Wire(#[from] WireError),
    /// The Noise layer refused the message: it was tampered with, truncated
    /// inside its ciphertext, or the two sides' transcripts (prologue:
    /// version, addresses, offered suites) differ, as after a downgrade.
    #[error("handshake transcript mismatch or tampered message")]
    Transcript,
    /// None of the offered AEAD suites is allowed by local policy.
    #[error("no common cipher suite")]
    NoCommonSuite,
    /// The responder chose a suite the initiator did not offer.
    #[error("responder chose {0:?}, which was not offered")]
    SuiteNotOffered(Suite),
    /// The peer's certificate was refused.
    #[error("peer certificate refused: {0}")]
    Certificate(#[from] AuthError),
    /// The signature over the handshake hash does not verify with the
    /// certificate's key.
    #[error("bad signature over the handshake")]
    BadSignature,
    /// A session index inside the encrypted payload differs from the one in
    /// the cleartext header.
    #[error("session index mismatch")]
    IndexMismatch,
    /// A response or finish for a handshake that this side does not have.
    #[error("no handshake with index {0}")]
    UnknownSession(u32),
    /// A handshake message arrived from another address than the session's.
    #[error("handshake message from the wrong peer")]
    WrongPeer,
    /// An initiation addressed to an IP outside the private prefix or to a
    /// peer this side will not talk to.
    #[error("handshake not allowed by policy")]
    Policy,
    /// The handshake did not complete in time.
    #[error("handshake timed out")]
    Timeout,
    /// Too many handshakes are pending
    /// ([`Config::max_pending_handshakes`](crate::Config::max_pending_handshakes)).
    #[error("too many pending handshakes")]
    Busy,
    /// An init's `mac1` is wrong: not made for this responder, or damaged.
    #[error("init with a bad mac1")]
    BadMac,
    /// A cookie reply that does not decrypt for our init.
    #[error("cookie reply does not match our init")]
    BadCookie,
    /// The source is over its per-source bounds
    /// ([`Config::max_pending_per_source`](crate::Config::max_pending_per_source),
    /// [`Config::max_inits_per_source_per_second`](crate::Config::max_inits_per_source_per_second)).
    #[error("too many handshakes from this source")]
    RateLimited,
}

/// Why a sealed packet received from a peer was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The packet is malformed.
    #[error("malformed packet: {0}")]
    Wire(#[from] WireError),
    /// No inbound SA has this SPI (never existed, deleted, or expired).
    #[error("unknown SPI {0:#010x}")]
    UnknownSpi(u32),
    /// The SA exists but belongs to another peer than the packet's source.
    #[error("SPI {spi:#010x} belongs to another peer")]
    WrongPeer {
        /// The SPI in the packet.
        spi: u32,
        /// The sender address the caller passed.
        sender: IpAddr,
    },
    /// The sequence number was already received (RFC 4303 §3.4.3).
    #[error("replayed sequence number {0}")]
    Replayed(u64),
    /// The sequence number is left of the anti-replay window.
    #[error("sequence number {0} is older than the replay window")]
    OutsideWindow(u64),
    /// The integrity check failed: tampered ciphertext, header or tag.
    #[error("authentication failed")]
    Authentication,
    /// A handshake message was refused.
    #[error("handshake rejected: {0}")]
    Handshake(#[from] HandshakeError),
}

/// Why an outbound packet could not be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The plaintext is larger than [`MAX_PLAINTEXT_LEN`](crate::wire::MAX_PLAINTEXT_LEN).
    #[error("packet of {0} bytes is too large")]
    TooLarge(usize),
    /// The destination is this node's own address.
    #[error("destination is the local address")]
    LocalDestination,
    /// An in-place buffer is shorter than the header headroom.
    #[error("buffer has no room for the header")]
    NoHeadroom,
    /// The SA's sequence numbers are used up (it must be replaced).
    #[error("sequence numbers exhausted")]
    SequenceExhausted,
}

/// Why a local identity could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The private key is not a PKCS#8 Ed25519 or ECDSA P-256 key.
    #[error("private key is not PKCS#8 Ed25519 or ECDSA P-256")]
    UnsupportedKey,
    /// The certificate is empty or larger than a handshake can carry.
    #[error("certificate size not supported")]
    CertificateSize,
}
