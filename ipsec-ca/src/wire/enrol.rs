//! Enrolment messages carried over the overlay between a node and the CA.
//!
//! ```text
//!  0       1       2                               10              14
//! +-------+-------+-------------------------------+---------------+---------
//! | ver=1 | type  | request id (u64)              | length (u32)  | payload
//! +-------+-------+-------------------------------+---------------+---------
//! ```
//!
//! | type | message | payload |
//! |---|---|---|
//! | 1 | Request (node → CA) | PKCS#10 CSR, DER |
//! | 2 | Pending (CA → node) | queue id (u64) |
//! | 3 | Issued (CA → node) | X.509 certificate, DER |
//! | 4 | Rejected (CA → node) | reason (u8, [`RejectReason`]) |
//! | 5 | TokenRequest (node → CA) | join token id (u64), HMAC (32 octets, [`crate::JoinToken::mac`]), PKCS#10 CSR |
//!
//! The request id is chosen by the node (from the OS random source) and
//! echoed by the CA. Every message from the CA travels inside a statement
//! signed by the CA key with the label [`REPLY_LABEL`]
//! ([`crate::CaIdentity::sign_statement`]); a node believes no reply that
//! does not verify against its CA certificate.

use crate::error::{CaError, CsrError, PolicyError, WireError};

/// Format version.
pub const VERSION: u8 = 1;
/// The statement label of every CA reply.
pub const REPLY_LABEL: &[u8] = b"wow-enrol-reply/1";
/// Length of a token request's fixed part (token id and MAC).
pub const TOKEN_AUTH_LEN: usize = 8 + 32;
/// Largest payload accepted.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;

mod field {
    use core::ops::Range;
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const REQUEST_ID: Range<usize> = 2..10;
    pub const LENGTH: Range<usize> = 10..14;
    pub const PAYLOAD: usize = 14;
}

/// Header length.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Message type octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    /// A CSR.
    Request,
    /// Queued for an administrator.
    Pending,
    /// Certificate issued.
    Issued,
    /// Refused.
    Rejected,
    /// A CSR authorised by a join token.
    TokenRequest,
}

impl MessageType {
    /// The octet.
    pub fn to_u8(self) -> u8 {
        match self {
            MessageType::Request => 1,
            MessageType::Pending => 2,
            MessageType::Issued => 3,
            MessageType::Rejected => 4,
            MessageType::TokenRequest => 5,
        }
    }

    /// From the octet.
    pub fn from_u8(value: u8) -> Result<Self, WireError> {
        Ok(match value {
            1 => MessageType::Request,
            2 => MessageType::Pending,
            3 => MessageType::Issued,
            4 => MessageType::Rejected,
            5 => MessageType::TokenRequest,
            other => return Err(WireError::MessageType(other)),
        })
    }
}

/// Why the CA refused, as carried in a `Rejected` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The CSR is malformed or its signature is invalid.
    BadRequest,
    /// The CSR's IP is not the requester's virtual IP.
    IpMismatch,
    /// Another key holds a live certificate for the IP.
    IpInUse,
    /// The key type is not allowed.
    KeyTypeNotAllowed,
    /// The requested validity is not allowed.
    Validity,
    /// An administrator rejected the request.
    Administrator,
    /// The CA failed internally (e.g. storage); retry later.
    Internal,
    /// The address is not a host address of the network.
    OutsideNetwork,
    /// A code this version does not know.
    Unknown(u8),
}

impl RejectReason {
    /// The octet.
    pub fn to_u8(self) -> u8 {
        match self {
            RejectReason::BadRequest => 1,
            RejectReason::IpMismatch => 2,
            RejectReason::IpInUse => 3,
            RejectReason::KeyTypeNotAllowed => 4,
            RejectReason::Validity => 5,
            RejectReason::Administrator => 6,
            RejectReason::Internal => 7,
            RejectReason::OutsideNetwork => 8,
            RejectReason::Unknown(v) => v,
        }
    }

    /// From the octet.
    pub fn from_u8(value: u8) -> Self {
        match value {
            1 => RejectReason::BadRequest,
            2 => RejectReason::IpMismatch,
            3 => RejectReason::IpInUse,
            4 => RejectReason::KeyTypeNotAllowed,
            5 => RejectReason::Validity,
            6 => RejectReason::Administrator,
            7 => RejectReason::Internal,
            8 => RejectReason::OutsideNetwork,
            v => RejectReason::Unknown(v),
        }
    }

    /// The reason to send for a CA error.
    pub fn from_error(error: &CaError) -> Self {
        match error {
            CaError::Policy(p) => match p {
                PolicyError::Csr(CsrError::UnsupportedKey) => RejectReason::KeyTypeNotAllowed,
                PolicyError::Csr(_) => RejectReason::BadRequest,
                PolicyError::IpMismatch { .. } => RejectReason::IpMismatch,
                PolicyError::IpInUse { .. } => RejectReason::IpInUse,
                PolicyError::KeyTypeNotAllowed(_) => RejectReason::KeyTypeNotAllowed,
                PolicyError::QueueFull => RejectReason::Internal,
                PolicyError::OutsideNetwork(_) => RejectReason::OutsideNetwork,
                PolicyError::TimeOutOfRange => RejectReason::Internal,
                _ => RejectReason::Validity,
            },
            _ => RejectReason::Internal,
        }
    }
}

/// A read/write view of an enrolment message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and runs [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the header fits and the declared length matches the buffer exactly.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        super::check_framed_len(
            len,
            HEADER_LEN,
            self.payload_len() as usize,
            MAX_PAYLOAD_LEN,
        )
    }

    /// The version octet.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The raw type octet.
    pub fn message_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The request id.
    pub fn request_id(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::REQUEST_ID]);
        u64::from_be_bytes(b)
    }

    /// The declared payload length.
    pub fn payload_len(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buffer.as_ref()[field::LENGTH]);
        u32::from_be_bytes(b)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version octet.
    pub fn set_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::VERSION] = value;
    }

    /// Sets the type octet.
    pub fn set_message_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the request id.
    pub fn set_request_id(&mut self, value: u64) {
        self.buffer.as_mut()[field::REQUEST_ID].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the declared payload length.
    pub fn set_payload_len(&mut self, value: u32) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// The payload area, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A parsed enrolment message (borrows DER payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Node → CA: certify this CSR.
    Request {
        /// Correlation id.
        request_id: u64,
        /// PKCS#10 CSR, DER.
        csr: &'a [u8],
    },
    /// CA → node: queued for approval.
    Pending {
        /// Correlation id.
        request_id: u64,
        /// The CA's queue id.
        queue_id: u64,
    },
    /// CA → node: the certificate.
    Issued {
        /// Correlation id.
        request_id: u64,
        /// X.509 certificate, DER.
        certificate: &'a [u8],
    },
    /// CA → node: refused.
    Rejected {
        /// Correlation id.
        request_id: u64,
        /// Why.
        reason: RejectReason,
    },
    /// Node → CA: certify this CSR, authorised by a join token.
    TokenRequest {
        /// Correlation id.
        request_id: u64,
        /// The token's public id.
        token_id: u64,
        /// [`crate::JoinToken::mac`] of the request id and CSR.
        mac: &'a [u8; 32],
        /// PKCS#10 CSR, DER.
        csr: &'a [u8],
    },
}

impl<'a> Message<'a> {
    /// Parses a message. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let packet = Packet::new_checked(bytes)?;
        if packet.version() != VERSION {
            return Err(WireError::Version(packet.version()));
        }
        let request_id = packet.request_id();
        let payload = packet.payload();
        Ok(match MessageType::from_u8(packet.message_type())? {
            MessageType::Request => Message::Request {
                request_id,
                csr: payload,
            },
            MessageType::Pending => {
                let id: [u8; 8] = payload.try_into().map_err(|_| {
                    if payload.len() < 8 {
                        WireError::Truncated
                    } else {
                        WireError::Trailing
                    }
                })?;
                Message::Pending {
                    request_id,
                    queue_id: u64::from_be_bytes(id),
                }
            }
            MessageType::Issued => Message::Issued {
                request_id,
                certificate: payload,
            },
            MessageType::Rejected => match payload {
                [code] => Message::Rejected {
                    request_id,
                    reason: RejectReason::from_u8(*code),
                },
                [] => return Err(WireError::Truncated),
                _ => return Err(WireError::Trailing),
            },
            MessageType::TokenRequest => {
                if payload.len() < TOKEN_AUTH_LEN {
                    return Err(WireError::Truncated);
                }
                let (id, rest) = payload.split_at(8);
                let (mac, csr) = rest.split_at(32);
                let mut token_id = [0u8; 8];
                token_id.copy_from_slice(id);
                Message::TokenRequest {
                    request_id,
                    token_id: u64::from_be_bytes(token_id),
                    mac: mac.try_into().map_err(|_| WireError::Truncated)?,
                    csr,
                }
            }
        })
    }

    /// The message type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Request { .. } => MessageType::Request,
            Message::Pending { .. } => MessageType::Pending,
            Message::Issued { .. } => MessageType::Issued,
            Message::Rejected { .. } => MessageType::Rejected,
            Message::TokenRequest { .. } => MessageType::TokenRequest,
        }
    }

    /// The correlation id.
    pub fn request_id(&self) -> u64 {
        match *self {
            Message::Request { request_id, .. }
            | Message::Pending { request_id, .. }
            | Message::Issued { request_id, .. }
            | Message::Rejected { request_id, .. }
            | Message::TokenRequest { request_id, .. } => request_id,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Message::Request { csr, .. } => csr.len(),
            Message::Pending { .. } => 8,
            Message::Issued { certificate, .. } => certificate.len(),
            Message::Rejected { .. } => 1,
            Message::TokenRequest { csr, .. } => TOKEN_AUTH_LEN + csr.len(),
        }
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Emits into `packet`, whose buffer must be exactly [`Message::buffer_len`] long.
    ///
    /// # Panics
    /// If the buffer length is wrong or a payload exceeds [`MAX_PAYLOAD_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let len = self.payload_len();
        assert!(len <= MAX_PAYLOAD_LEN);
        packet.set_version(VERSION);
        packet.set_message_type(self.message_type().to_u8());
        packet.set_request_id(self.request_id());
        packet.set_payload_len(len as u32);
        let payload = packet.payload_mut();
        match *self {
            Message::Request { csr: bytes, .. }
            | Message::Issued {
                certificate: bytes, ..
            } => payload.copy_from_slice(bytes),
            Message::Pending { queue_id, .. } => payload.copy_from_slice(&queue_id.to_be_bytes()),
            Message::Rejected { reason, .. } => payload.copy_from_slice(&[reason.to_u8()]),
            Message::TokenRequest {
                token_id, mac, csr, ..
            } => {
                payload[..8].copy_from_slice(&token_id.to_be_bytes());
                payload[8..TOKEN_AUTH_LEN].copy_from_slice(mac);
                payload[TOKEN_AUTH_LEN..].copy_from_slice(csr);
            }
        }
    }

    /// Emits into a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn pending_bytes() {
        let msg = Message::Pending {
            request_id: 0x1122_3344_5566_7788,
            queue_id: 5,
        };
        let mut buf = vec![0xa5u8; msg.buffer_len()];
        msg.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(
            buf,
            [
                1, 2, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0,
                0, 5
            ]
        );
        assert_eq!(Message::parse(&buf), Ok(msg));
    }

    #[test]
    fn refuses_malformed() {
        let rejected = Message::Rejected {
            request_id: 1,
            reason: RejectReason::IpInUse,
        }
        .to_bytes();
        assert_eq!(Message::parse(&rejected[..3]), Err(WireError::Truncated));
        let mut bad = rejected.clone();
        bad[0] = 9;
        assert_eq!(Message::parse(&bad), Err(WireError::Version(9)));
        let mut bad = rejected.clone();
        bad[1] = 77;
        assert_eq!(Message::parse(&bad), Err(WireError::MessageType(77)));
        let mut bad = rejected.clone();
        bad.push(0);
        assert_eq!(Message::parse(&bad), Err(WireError::Trailing));
        // A Rejected with an empty payload.
        let mut bad = rejected[..HEADER_LEN].to_vec();
        bad[13] = 0;
        assert_eq!(Message::parse(&bad), Err(WireError::Truncated));
        // A Pending whose payload is not 8 octets.
        let mut bad = rejected;
        bad[1] = 2;
        assert_eq!(Message::parse(&bad), Err(WireError::Truncated));
    }
}
