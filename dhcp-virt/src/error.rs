//! Error and refusal types.
//!
//! Three cases are kept apart, as in the rest of the workspace: a client's
//! bad bytes ([`MessageError`], [`FrameError`]: dropped, no state changes), a
//! request the server declines to serve ([`Refusal`]: a typed reason for the
//! caller's log), and caller misuse ([`ConfigError`], [`StoreError`]).

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A DHCP payload that is not a well-formed BOOTREQUEST (RFC 2131 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Shorter than the fixed header plus the magic cookie (240 bytes).
    #[error("message is {len} bytes, shorter than the 240-byte header")]
    Truncated {
        /// Length received.
        len: usize,
    },
    /// `op` is not BOOTREQUEST (1).
    #[error("op {op} is not BOOTREQUEST")]
    NotRequest {
        /// The op field.
        op: u8,
    },
    /// `hlen` is larger than the 16-byte `chaddr` field.
    #[error("hardware address length {hlen} exceeds 16")]
    HardwareLength {
        /// The hlen field.
        hlen: u8,
    },
    /// The options field does not start with the magic cookie (RFC 2131 §3).
    #[error("missing DHCP magic cookie")]
    MagicCookie,
    /// An option's length runs past the end of the message.
    #[error("option {code} overruns the message")]
    OptionOverrun {
        /// The option code.
        code: u8,
    },
    /// An option has a length its type does not allow.
    #[error("option {code} has invalid length {len}")]
    OptionLength {
        /// The option code.
        code: u8,
        /// The length found.
        len: usize,
    },
    /// The options could not be decoded.
    #[error("options do not decode")]
    Options,
    /// No DHCP message type (option 53): a plain BOOTP request.
    #[error("no DHCP message type option")]
    NoMessageType,
    /// A message type a server does not accept (OFFER, ACK, unknown, …).
    #[error("message type {kind} is not a client message")]
    UnexpectedType {
        /// The numeric message type.
        kind: u8,
    },
}

/// A frame from the TAP that is not a DHCP request we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The Ethernet, IPv4 or UDP headers do not parse.
    #[error("malformed Ethernet/IPv4/UDP frame")]
    Headers,
    /// The frame is well formed but not UDP to port 67 over IPv4.
    #[error("not a DHCP server-bound datagram")]
    NotDhcp,
    /// The DHCP payload is malformed.
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// Why a request got no positive answer. The caller logs it; when the RFC
/// asks for a DHCPNAK, one is queued as well.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The input did not parse; no state changed.
    #[error("malformed input: {0}")]
    Malformed(#[from] FrameError),
    /// No free address is left in the pool (no OFFER is sent).
    #[error("address pool exhausted")]
    PoolExhausted,
    /// The client asked for an address outside our network (NAK sent).
    #[error("requested address {requested} is not in our network")]
    WrongSubnet {
        /// The requested address.
        requested: Ipv4Addr,
    },
    /// The client addressed another server (server identifier, option 54);
    /// our offer to it was withdrawn (RFC 2131 §4.3.2).
    #[error("client selected server {server_id}, not us")]
    UnknownServerId {
        /// The server identifier in the request.
        server_id: Ipv4Addr,
    },
    /// The requested address is held by another client (NAK sent).
    #[error("address {requested} belongs to another client")]
    AddressTaken {
        /// The requested address.
        requested: Ipv4Addr,
    },
    /// The requested address is not one we may lease (outside the pool,
    /// excluded, declined or reserved for someone else; NAK sent).
    #[error("address {requested} is not available for lease")]
    NotLeasable {
        /// The requested address.
        requested: Ipv4Addr,
    },
    /// A REQUEST in SELECTING state named an address other than our offer
    /// (NAK sent).
    #[error("requested {requested} does not match our offer")]
    OfferMismatch {
        /// The requested address.
        requested: Ipv4Addr,
    },
    /// A REQUEST carried neither a requested address nor `ciaddr`.
    #[error("request names no address")]
    NoAddress,
    /// A DECLINE or RELEASE named no lease this client holds; ignored.
    #[error("no lease of {addr} for this client")]
    NoLease {
        /// The address named.
        addr: Ipv4Addr,
    },
    /// The client is waiting for the decentralised store; the retransmission
    /// is absorbed.
    #[error("allocation pending in the decentralised store")]
    Pending,
    /// The lease could not be made durable, so it was not granted.
    #[error("lease store failed: {0}")]
    Store(#[from] StoreError),
}

/// A lease store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the snapshot or the journal failed.
    #[error("lease file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The snapshot or the journal is corrupt (a snapshot that does not
    /// decode or has an unknown version, a bad journal line before the
    /// last, a gap in the change numbers); both files are left untouched.
    /// A torn last journal line is not an error: it is dropped.
    #[error("lease file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (from the JSON decoder, or the journal check).
        reason: String,
    },
}

/// An invalid server configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A pool range lies (partly) outside the network.
    #[error("pool range {start}-{end} is not inside the network")]
    RangeOutsideNetwork {
        /// First address.
        start: Ipv4Addr,
        /// Last address.
        end: Ipv4Addr,
    },
    /// A pool range ends before it starts.
    #[error("pool range {start}-{end} is empty")]
    EmptyRange {
        /// First address.
        start: Ipv4Addr,
        /// Last address.
        end: Ipv4Addr,
    },
    /// The server identifier is not inside the network.
    #[error("server identifier {0} is not inside the network")]
    ServerOutsideNetwork(Ipv4Addr),
    /// A reservation is outside the network.
    #[error("reserved address {0} is not inside the network")]
    ReservationOutsideNetwork(Ipv4Addr),
    /// The lease duration is zero or longer than the protocol can express.
    #[error("lease duration must be between 1 s and 2^32-2 s")]
    LeaseDuration,
    /// The interface MTU is below 68 (RFC 2132 §5.1).
    #[error("interface MTU {0} is below 68")]
    InterfaceMtu(u16),
    /// A domain name in the configuration is not a valid DNS name.
    #[error("invalid domain name {0:?}")]
    DomainName(String),
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The lease store could not be loaded.
    #[error(transparent)]
    Store(#[from] StoreError),
}
