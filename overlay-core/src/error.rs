//! Error types, one enum per layer.

/// The text form of an [`Address`](crate::Address) did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressParseError {
    /// The text is not 40 characters long.
    #[error("address text has {len} characters, expected 40")]
    Length {
        /// Length of the rejected text.
        len: usize,
    },
    /// A character is not a hex digit.
    #[error("invalid hex digit at position {position}")]
    InvalidDigit {
        /// Byte offset of the offending pair.
        position: usize,
    },
}

/// A message failed to decode. Decoding never panics and a failed decode
/// changes no state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ended before a field did.
    #[error("truncated: need {needed} bytes at offset {offset}, have {available}")]
    Truncated {
        /// Offset of the field that did not fit.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// The version byte is not one this crate speaks.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The message kind is unknown.
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    /// The routed payload kind is unknown.
    #[error("unknown payload kind {0:#04x}")]
    UnknownPayload(u8),
    /// A field holds a value outside its domain.
    #[error("invalid value {value} in field {field}")]
    InvalidValue {
        /// Name of the field.
        field: &'static str,
        /// The rejected value.
        value: u32,
    },
    /// A length or count exceeds its limit.
    #[error("{field} is {len}, limit {max}")]
    TooLong {
        /// Name of the field.
        field: &'static str,
        /// The announced length or count.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes remain after the message ended.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// A caller asked the node for something it cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The DHT key is longer than [`MAX_KEY_LEN`](crate::wire::MAX_KEY_LEN).
    #[error("key is {len} bytes, limit {max}")]
    KeyTooLong {
        /// Key length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The DHT value is longer than [`MAX_VALUE_LEN`](crate::wire::MAX_VALUE_LEN).
    #[error("value is {len} bytes, limit {max}")]
    ValueTooLong {
        /// Value length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The record credential is longer than
    /// [`MAX_CREDENTIAL_LEN`](crate::wire::MAX_CREDENTIAL_LEN).
    #[error("credential is {len} bytes, limit {max}")]
    CredentialTooLong {
        /// Credential length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The record signer could not sign.
    #[error("the record signer failed")]
    SignerFailed,
    /// The data payload is longer than [`MAX_DATA_LEN`](crate::wire::MAX_DATA_LEN).
    #[error("payload is {len} bytes, limit {max}")]
    PayloadTooLong {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The node has left the overlay.
    #[error("node has left the overlay")]
    Left,
    /// The node advertises no transport endpoint, so peers could not link
    /// back to it: set [`Config::endpoints`](crate::Config::endpoints) or
    /// call [`Node::set_endpoints`](crate::Node::set_endpoints) with the
    /// address peers reach this node at (for a UDP socket, its bound
    /// address; not `0.0.0.0`).
    #[error(
        "no endpoints: set Config::endpoints or call Node::set_endpoints with the address peers reach this node at"
    )]
    NoEndpoints,
}
