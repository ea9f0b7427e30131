//! Error types, one enum per layer.

/// A malformed message on the wire (STUN or our signalling format).
///
/// Network input that yields one of these is dropped and counted; it never
/// changes a machine's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the header or a length field announces.
    #[error("message truncated")]
    Truncated,
    /// The first byte rules out STUN (RFC 8489 §5: top two bits are zero).
    #[error("not a STUN message")]
    NotStun,
    /// A length or layout rule is broken.
    #[error("malformed message")]
    Malformed,
    /// An attribute of this type has an invalid value.
    #[error("malformed attribute 0x{kind:04x}")]
    BadAttribute {
        /// The attribute type.
        kind: u16,
    },
    /// `FINGERPRINT` does not match the message (RFC 8489 §14.7).
    #[error("FINGERPRINT mismatch")]
    BadFingerprint,
    /// `MESSAGE-INTEGRITY` does not match the key (RFC 8489 §14.5).
    #[error("MESSAGE-INTEGRITY mismatch")]
    BadIntegrity,
    /// `MESSAGE-INTEGRITY` was required but is absent.
    #[error("MESSAGE-INTEGRITY missing")]
    MissingIntegrity,
    /// Unknown version or message kind of our signalling format.
    #[error("unknown signalling message kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// The authentication tag of a data frame does not match.
    #[error("data frame authentication failed")]
    BadTag,
    /// The output buffer is smaller than `buffer_len()`.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A field is too long for its length prefix.
    #[error("field too long to encode")]
    TooLong,
    /// A ChannelData channel number outside 0x4000..=0x4FFF (RFC 8656 §12).
    #[error("channel number 0x{number:04x} out of range")]
    BadChannel {
        /// The number found.
        number: u16,
    },
}

/// Caller misuse of a state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration that cannot work (such as no observers).
    #[error("invalid configuration: {what}")]
    InvalidConfig {
        /// Which setting is wrong.
        what: &'static str,
    },
    /// A message could not be encoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Data cannot be sent: the link has no path yet.
    #[error("no path to the peer")]
    NoPath,
    /// Every TURN channel number (0x4000..=0x4FFF) is bound or still
    /// cooling down (RFC 8656 §12).
    #[error("no free TURN channel number")]
    NoFreeChannel,
}

impl From<wow_bytes::Truncated> for WireError {
    fn from(_: wow_bytes::Truncated) -> WireError {
        WireError::Truncated
    }
}
