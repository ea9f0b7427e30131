//! Error types of the crate.

use hickory_proto::op::OpCode;

/// Why a name could not be put in the [`crate::NameTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Not a host name: labels of 1–63 letters, digits, `-` or `_`, at most
    /// 253 octets in all.
    #[error("invalid host name ({len} octets)")]
    InvalidName {
        /// Length of the rejected name.
        len: usize,
    },
    /// The table reached its 4 GiB arena or 2³² entry limit.
    #[error("name table full")]
    Full,
}

/// Why a line of a names file was rejected by [`crate::Zone::load_names`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The line is not `name address` (or hosts-style `address name`).
    #[error("line {line}: expected `name address`")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// The name is absolute but outside the zone.
    #[error("line {line}: name outside the zone")]
    OutsideZone {
        /// 1-based line number.
        line: usize,
    },
    /// The table refused the name.
    #[error("line {line}: {source}")]
    Table {
        /// 1-based line number.
        line: usize,
        /// What the table said.
        source: TableError,
    },
}

/// Why a query got no normal answer: the input side of the server.
///
/// Malformed input never changes state; the server answers FORMERR or NOTIMP
/// when it can echo an ID, and drops the packet otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Shorter than a DNS header (RFC 1035 §4.1.1): dropped.
    #[error("packet shorter than a DNS header ({len} octets)")]
    TooShort {
        /// Length received.
        len: usize,
    },
    /// The QR bit says response: dropped, never answered (no loops).
    #[error("message is a response")]
    NotAQuery,
    /// The message does not decode, or has not exactly one question
    /// (RFC 9619): FORMERR.
    #[error("malformed query {id:#06x}")]
    Malformed {
        /// The query's ID.
        id: u16,
    },
    /// An opcode other than QUERY: NOTIMP.
    #[error("opcode {opcode} not implemented")]
    NotImplemented {
        /// The query's ID.
        id: u16,
        /// The opcode.
        opcode: OpCode,
    },
}

/// Why a name could not be registered with the [`crate::Server`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The table refused the name.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The address is outside the virtual network.
    #[error("address {0} outside the virtual network")]
    OutsideNetwork(std::net::Ipv4Addr),
}

/// Errors of the TCP framing (RFC 1035 §4.2.2, RFC 7766 §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A zero length prefix: no DNS message is empty.
    #[error("zero-length DNS message on TCP")]
    EmptyMessage,
    /// A message longer than 65,535 octets cannot be framed.
    #[error("message of {len} octets too long for TCP framing")]
    TooLong {
        /// Length of the message.
        len: usize,
    },
}

/// Why an upstream reply to a forwarded query was dropped (the query keeps
/// waiting for the real one, or its deadline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// Not a DNS message.
    #[error("upstream reply does not decode ({len} octets)")]
    Malformed {
        /// Length received.
        len: usize,
    },
    /// A query, or another opcode than QUERY.
    #[error("upstream sent something other than a response to a query")]
    NotAResponse,
    /// Not the message ID the query went out with: a forgery, or a stale
    /// reply.
    #[error("upstream reply with message ID {got}, expected {expected}")]
    WrongId {
        /// The ID the query was sent with.
        expected: u16,
        /// The ID received.
        got: u16,
    },
    /// The question section is not the question asked.
    #[error("upstream reply answers another question")]
    OtherQuestion,
}

/// Why a service registration or its encoded value was refused
/// ([`crate::service`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Not `_service._proto` (RFC 2782).
    #[error("service name is not `_service._proto`")]
    InvalidServiceName,
    /// The host registering it is not a host name of the zone.
    #[error("invalid host name")]
    InvalidHost,
    /// The target is not a lowercase host name of the zone.
    #[error("invalid target name")]
    InvalidTarget,
    /// Too many TXT strings, or too many octets of them.
    #[error("too much TXT data")]
    TooMuchText,
    /// The value ends inside a field.
    #[error("service value truncated")]
    Truncated,
    /// Octets after the last field.
    #[error("octets after the service value")]
    Trailing,
    /// An encoding version this crate does not know.
    #[error("unknown service value version")]
    Version,
}
