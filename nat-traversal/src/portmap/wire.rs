//! Wire formats of NAT-PMP (RFC 6886) and PCP (RFC 6887), sans-IO.
//!
//! Every message is a plain value ([`PmpRepr`], [`PcpRepr`]) with
//! `parse_bytes` and `to_bytes`; parsing checks every length and field the
//! RFCs fix and returns a [`PortmapWireError`] for anything else. It never
//! panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wow_bytes::Reader;

/// The UDP port a NAT-PMP or PCP server listens on (RFC 6886 §3, RFC 6887 §19).
pub const SERVER_PORT: u16 = 5351;
/// NAT-PMP's version number.
pub const PMP_VERSION: u8 = 0;
/// PCP's version number (RFC 6887 §9).
pub const PCP_VERSION: u8 = 2;
/// The largest PCP message (RFC 6887 §7).
pub const PCP_MAX_LEN: usize = 1100;
/// IANA protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IANA protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

/// A malformed NAT-PMP or PCP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortmapWireError {
    /// Fewer bytes than the message kind needs.
    #[error("message truncated")]
    Truncated,
    /// The version byte is not this codec's.
    #[error("unexpected version {version}")]
    BadVersion {
        /// The version found.
        version: u8,
    },
    /// An opcode this codec does not know.
    #[error("unknown opcode {opcode}")]
    UnknownOpcode {
        /// The opcode byte.
        opcode: u8,
    },
    /// More bytes than the message kind has.
    #[error("{extra} trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A PCP message whose length is not a multiple of 4, or over 1100 bytes.
    #[error("bad PCP message length {len}")]
    BadLength {
        /// The length.
        len: usize,
    },
    /// A PCP option runs past the end of the message.
    #[error("PCP option {code} truncated")]
    BadOption {
        /// The option code.
        code: u8,
    },
    /// A PCP option's data is longer than its 16-bit length field allows.
    #[error("PCP option too long to encode")]
    TooLong,
}

impl From<wow_bytes::Truncated> for PortmapWireError {
    fn from(_: wow_bytes::Truncated) -> PortmapWireError {
        PortmapWireError::Truncated
    }
}

fn finish(r: &Reader<'_>) -> Result<(), PortmapWireError> {
    match r.remaining() {
        0 => Ok(()),
        extra => Err(PortmapWireError::TrailingBytes { extra }),
    }
}

/// A NAT-PMP result code (RFC 6886 §3.5). Unknown codes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PmpResultCode(pub u16);

impl PmpResultCode {
    /// Success.
    pub const SUCCESS: PmpResultCode = PmpResultCode(0);
    /// Unsupported version.
    pub const UNSUPP_VERSION: PmpResultCode = PmpResultCode(1);
    /// Not authorized / refused.
    pub const NOT_AUTHORIZED: PmpResultCode = PmpResultCode(2);
    /// Network failure (the gateway has no external address).
    pub const NETWORK_FAILURE: PmpResultCode = PmpResultCode(3);
    /// Out of resources.
    pub const OUT_OF_RESOURCES: PmpResultCode = PmpResultCode(4);
    /// Unsupported opcode.
    pub const UNSUPP_OPCODE: PmpResultCode = PmpResultCode(5);
}

/// The transport of a NAT-PMP mapping (its opcode, RFC 6886 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PmpProtocol {
    /// Opcode 1.
    Udp,
    /// Opcode 2.
    Tcp,
}

impl PmpProtocol {
    fn opcode(self) -> u8 {
        match self {
            PmpProtocol::Udp => 1,
            PmpProtocol::Tcp => 2,
        }
    }

    fn from_opcode(opcode: u8) -> Option<PmpProtocol> {
        match opcode {
            1 => Some(PmpProtocol::Udp),
            2 => Some(PmpProtocol::Tcp),
            _ => None,
        }
    }
}

/// A NAT-PMP message (RFC 6886 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmpRepr {
    /// Opcode 0: what is the external address? (2 bytes)
    ExternalAddressRequest,
    /// Opcode 1 or 2: map a port (12 bytes). Lifetime 0 deletes.
    MapRequest {
        /// UDP or TCP.
        protocol: PmpProtocol,
        /// The client's port.
        internal_port: u16,
        /// The external port wanted (0: any).
        suggested_external_port: u16,
        /// Requested lifetime in seconds.
        lifetime: u32,
    },
    /// Opcode 128: the external address (12 bytes).
    ExternalAddressResponse {
        /// Result.
        result: PmpResultCode,
        /// Seconds since the server's epoch.
        epoch: u32,
        /// The gateway's external IPv4 address.
        external: Ipv4Addr,
    },
    /// Opcode 129 or 130: a mapping (16 bytes).
    MapResponse {
        /// UDP or TCP.
        protocol: PmpProtocol,
        /// Result.
        result: PmpResultCode,
        /// Seconds since the server's epoch.
        epoch: u32,
        /// The client's port.
        internal_port: u16,
        /// The mapped external port.
        external_port: u16,
        /// Granted lifetime in seconds.
        lifetime: u32,
    },
    /// A short (8-byte) error response to any request: the header and the
    /// epoch only, as a server sends for an unsupported version or opcode.
    /// Its result is never [`PmpResultCode::SUCCESS`].
    ErrorResponse {
        /// The response opcode (128 + the request's).
        opcode: u8,
        /// Result.
        result: PmpResultCode,
        /// Seconds since the server's epoch.
        epoch: u32,
    },
}

impl PmpRepr {
    /// Parse one NAT-PMP message (version 0) of exactly `bytes.len()` bytes.
    pub fn parse_bytes(bytes: &[u8]) -> Result<PmpRepr, PortmapWireError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PMP_VERSION {
            return Err(PortmapWireError::BadVersion { version });
        }
        let opcode = r.u8()?;
        let repr = if opcode < 128 {
            if opcode == 0 {
                PmpRepr::ExternalAddressRequest
            } else {
                let protocol = PmpProtocol::from_opcode(opcode)
                    .ok_or(PortmapWireError::UnknownOpcode { opcode })?;
                let _reserved = r.u16()?;
                PmpRepr::MapRequest {
                    protocol,
                    internal_port: r.u16()?,
                    suggested_external_port: r.u16()?,
                    lifetime: r.u32()?,
                }
            }
        } else {
            let result = PmpResultCode(r.u16()?);
            let epoch = r.u32()?;
            if r.is_empty() && result != PmpResultCode::SUCCESS {
                PmpRepr::ErrorResponse {
                    opcode,
                    result,
                    epoch,
                }
            } else if opcode == 128 {
                PmpRepr::ExternalAddressResponse {
                    result,
                    epoch,
                    external: Ipv4Addr::from(r.array::<4>()?),
                }
            } else {
                let protocol = PmpProtocol::from_opcode(opcode - 128)
                    .ok_or(PortmapWireError::UnknownOpcode { opcode })?;
                PmpRepr::MapResponse {
                    protocol,
                    result,
                    epoch,
                    internal_port: r.u16()?,
                    external_port: r.u16()?,
                    lifetime: r.u32()?,
                }
            }
        };
        finish(&r)?;
        Ok(repr)
    }

    /// The result code of a response; `None` for a request.
    pub fn result(&self) -> Option<PmpResultCode> {
        match *self {
            PmpRepr::ExternalAddressRequest | PmpRepr::MapRequest { .. } => None,
            PmpRepr::ExternalAddressResponse { result, .. }
            | PmpRepr::MapResponse { result, .. }
            | PmpRepr::ErrorResponse { result, .. } => Some(result),
        }
    }

    /// The encoded message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![PMP_VERSION];
        match *self {
            PmpRepr::ExternalAddressRequest => out.push(0),
            PmpRepr::MapRequest {
                protocol,
                internal_port,
                suggested_external_port,
                lifetime,
            } => {
                out.push(protocol.opcode());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&internal_port.to_be_bytes());
                out.extend_from_slice(&suggested_external_port.to_be_bytes());
                out.extend_from_slice(&lifetime.to_be_bytes());
            }
            PmpRepr::ExternalAddressResponse {
                result,
                epoch,
                external,
            } => {
                out.push(128);
                out.extend_from_slice(&result.0.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&external.octets());
            }
            PmpRepr::MapResponse {
                protocol,
                result,
                epoch,
                internal_port,
                external_port,
                lifetime,
            } => {
                out.push(128 + protocol.opcode());
                out.extend_from_slice(&result.0.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&internal_port.to_be_bytes());
                out.extend_from_slice(&external_port.to_be_bytes());
                out.extend_from_slice(&lifetime.to_be_bytes());
            }
            PmpRepr::ErrorResponse {
                opcode,
                result,
                epoch,
            } => {
                out.push(opcode);
                out.extend_from_slice(&result.0.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
            }
        }
        out
    }
}

/// A PCP result code (RFC 6887 §7.4). Unknown codes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PcpResultCode(pub u8);

impl PcpResultCode {
    /// Success.
    pub const SUCCESS: PcpResultCode = PcpResultCode(0);
    /// The server does not speak this version.
    pub const UNSUPP_VERSION: PcpResultCode = PcpResultCode(1);
    /// Not authorized.
    pub const NOT_AUTHORIZED: PcpResultCode = PcpResultCode(2);
    /// The request could not be parsed.
    pub const MALFORMED_REQUEST: PcpResultCode = PcpResultCode(3);
    /// Unsupported opcode.
    pub const UNSUPP_OPCODE: PcpResultCode = PcpResultCode(4);
    /// A mandatory option is not supported.
    pub const UNSUPP_OPTION: PcpResultCode = PcpResultCode(5);
    /// An option is malformed.
    pub const MALFORMED_OPTION: PcpResultCode = PcpResultCode(6);
    /// The server's network failed.
    pub const NETWORK_FAILURE: PcpResultCode = PcpResultCode(7);
    /// Out of resources.
    pub const NO_RESOURCES: PcpResultCode = PcpResultCode(8);
    /// Unsupported transport protocol.
    pub const UNSUPP_PROTOCOL: PcpResultCode = PcpResultCode(9);
    /// The user's mapping quota is exceeded.
    pub const USER_EX_QUOTA: PcpResultCode = PcpResultCode(10);
    /// The suggested external address or port cannot be provided.
    pub const CANNOT_PROVIDE_EXTERNAL: PcpResultCode = PcpResultCode(11);
    /// The client's address field does not match the packet's source.
    pub const ADDRESS_MISMATCH: PcpResultCode = PcpResultCode(12);
    /// Too many remote peers.
    pub const EXCESSIVE_REMOTE_PEERS: PcpResultCode = PcpResultCode(13);
}

/// The MAP opcode's body (RFC 6887 §11.1), in a request or a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpMap {
    /// The mapping nonce: a response must echo it.
    pub nonce: [u8; 12],
    /// IANA transport protocol ([`PROTO_UDP`]).
    pub protocol: u8,
    /// The client's port.
    pub internal_port: u16,
    /// Suggested (request) or assigned (response) external port.
    pub external_port: u16,
    /// Suggested (request) or assigned (response) external address.
    pub external_ip: IpAddr,
}

/// A PCP option (RFC 6887 §7.3), kept opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcpOption {
    /// The option code.
    pub code: u8,
    /// Its data, without padding.
    pub data: Vec<u8>,
}

/// A PCP opcode and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcpOp {
    /// Opcode 0 (RFC 6887 §14.1): no body.
    Announce,
    /// Opcode 1.
    Map(PcpMap),
    /// Any other opcode, and a MAP error response too short to hold the MAP
    /// body: everything after the header, options included, unparsed.
    Other {
        /// The opcode (7 bits).
        opcode: u8,
        /// The rest of the message.
        body: Vec<u8>,
    },
}

impl PcpOp {
    fn opcode(&self) -> u8 {
        match self {
            PcpOp::Announce => 0,
            PcpOp::Map(_) => 1,
            PcpOp::Other { opcode, .. } => *opcode & 0x7f,
        }
    }
}

/// A PCP request (RFC 6887 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcpRequest {
    /// Requested lifetime in seconds (0 deletes a mapping).
    pub lifetime: u32,
    /// The client's own address, as the server sees the packet's source.
    pub client: IpAddr,
    /// The opcode and its body.
    pub op: PcpOp,
    /// Options (only with [`PcpOp::Announce`] or [`PcpOp::Map`]).
    pub options: Vec<PcpOption>,
}

/// A PCP response (RFC 6887 §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcpResponse {
    /// The result.
    pub result: PcpResultCode,
    /// Granted lifetime in seconds (on errors: how long the error holds).
    pub lifetime: u32,
    /// Seconds since the server's epoch.
    pub epoch: u32,
    /// The opcode and its body.
    pub op: PcpOp,
    /// Options (only with [`PcpOp::Announce`] or [`PcpOp::Map`]).
    pub options: Vec<PcpOption>,
}

/// A PCP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcpRepr {
    /// A request (R bit clear).
    Request(PcpRequest),
    /// A response (R bit set).
    Response(PcpResponse),
}

/// Encode an address as PCP does: IPv4 in the IPv4-mapped IPv6 form
/// (`::ffff:a.b.c.d`, RFC 6887 §5).
pub fn encode_ip(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Decode a PCP address field: an IPv4-mapped address becomes IPv4.
pub fn decode_ip(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn parse_options(r: &mut Reader<'_>) -> Result<Vec<PcpOption>, PortmapWireError> {
    let mut options = Vec::new();
    while !r.is_empty() {
        let code = r.u8()?;
        let _reserved = r.u8()?;
        let len = usize::from(r.u16()?);
        let padded = len.div_ceil(4) * 4;
        let data = r
            .take(padded)
            .map_err(|_| PortmapWireError::BadOption { code })?;
        options.push(PcpOption {
            code,
            data: data.get(..len).unwrap_or_default().to_vec(),
        });
    }
    Ok(options)
}

fn parse_op(r: &mut Reader<'_>, opcode: u8, response: bool) -> Result<PcpOp, PortmapWireError> {
    const MAP_LEN: usize = 36;
    match opcode {
        0 => Ok(PcpOp::Announce),
        1 if r.remaining() >= MAP_LEN || !response => Ok(PcpOp::Map(PcpMap {
            nonce: r.array()?,
            protocol: r.u8()?,
            internal_port: {
                let _reserved = r.take(3)?;
                r.u16()?
            },
            external_port: r.u16()?,
            external_ip: decode_ip(r.array()?),
        })),
        _ => Ok(PcpOp::Other {
            opcode,
            body: r.take(r.remaining())?.to_vec(),
        }),
    }
}

impl PcpRepr {
    /// Parse one PCP message (version 2).
    pub fn parse_bytes(bytes: &[u8]) -> Result<PcpRepr, PortmapWireError> {
        if bytes.len() > PCP_MAX_LEN || !bytes.len().is_multiple_of(4) {
            return Err(PortmapWireError::BadLength { len: bytes.len() });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PCP_VERSION {
            return Err(PortmapWireError::BadVersion { version });
        }
        let byte = r.u8()?;
        let (response, opcode) = (byte & 0x80 != 0, byte & 0x7f);
        if response {
            let _reserved = r.u8()?;
            let result = PcpResultCode(r.u8()?);
            let lifetime = r.u32()?;
            let epoch = r.u32()?;
            let _reserved = r.take(12)?;
            let op = parse_op(&mut r, opcode, true)?;
            let options = match op {
                PcpOp::Other { .. } => Vec::new(),
                _ => parse_options(&mut r)?,
            };
            finish(&r)?;
            Ok(PcpRepr::Response(PcpResponse {
                result,
                lifetime,
                epoch,
                op,
                options,
            }))
        } else {
            let _reserved = r.u16()?;
            let lifetime = r.u32()?;
            let client = decode_ip(r.array()?);
            let op = parse_op(&mut r, opcode, false)?;
            let options = match op {
                PcpOp::Other { .. } => Vec::new(),
                _ => parse_options(&mut r)?,
            };
            finish(&r)?;
            Ok(PcpRepr::Request(PcpRequest {
                lifetime,
                client,
                op,
                options,
            }))
        }
    }

    /// The encoded message. Fails only for an option longer than 65535
    /// bytes; the caller keeps the total under [`PCP_MAX_LEN`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, PortmapWireError> {
        let mut out = vec![PCP_VERSION];
        let (op, options) = match self {
            PcpRepr::Request(req) => {
                out.push(req.op.opcode());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&req.lifetime.to_be_bytes());
                out.extend_from_slice(&encode_ip(req.client));
                (&req.op, &req.options)
            }
            PcpRepr::Response(resp) => {
                out.push(0x80 | resp.op.opcode());
                out.push(0);
                out.push(resp.result.0);
                out.extend_from_slice(&resp.lifetime.to_be_bytes());
                out.extend_from_slice(&resp.epoch.to_be_bytes());
                out.extend_from_slice(&[0; 12]);
                (&resp.op, &resp.options)
            }
        };
        match op {
            PcpOp::Announce => {}
            PcpOp::Map(map) => {
                out.extend_from_slice(&map.nonce);
                out.push(map.protocol);
                out.extend_from_slice(&[0; 3]);
                out.extend_from_slice(&map.internal_port.to_be_bytes());
                out.extend_from_slice(&map.external_port.to_be_bytes());
                out.extend_from_slice(&encode_ip(map.external_ip));
            }
            PcpOp::Other { body, .. } => out.extend_from_slice(body),
        }
        if !matches!(op, PcpOp::Other { .. }) {
            for option in options {
                let len =
                    u16::try_from(option.data.len()).map_err(|_| PortmapWireError::TooLong)?;
                out.push(option.code);
                out.push(0);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&option.data);
                out.resize(out.len().div_ceil(4) * 4, 0);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn pmp_map_request_layout() {
        let bytes = PmpRepr::MapRequest {
            protocol: PmpProtocol::Udp,
            internal_port: 4000,
            suggested_external_port: 4001,
            lifetime: 7200,
        }
        .to_bytes();
        assert_eq!(
            bytes,
            [0, 1, 0, 0, 0x0f, 0xa0, 0x0f, 0xa1, 0, 0, 0x1c, 0x20]
        );
    }

    #[test]
    fn pmp_short_error_response() {
        let repr = PmpRepr::parse_bytes(&[0, 129, 0, 1, 0, 0, 0, 9]).unwrap();
        assert_eq!(
            repr,
            PmpRepr::ErrorResponse {
                opcode: 129,
                result: PmpResultCode::UNSUPP_VERSION,
                epoch: 9
            }
        );
        // A short success is truncated.
        assert_eq!(
            PmpRepr::parse_bytes(&[0, 129, 0, 0, 0, 0, 0, 9]),
            Err(PortmapWireError::Truncated)
        );
    }

    #[test]
    fn pmp_rejects_bad_input() {
        assert_eq!(
            PmpRepr::parse_bytes(&[2, 0]),
            Err(PortmapWireError::BadVersion { version: 2 })
        );
        assert_eq!(
            PmpRepr::parse_bytes(&[0, 3]),
            Err(PortmapWireError::UnknownOpcode { opcode: 3 })
        );
        assert_eq!(
            PmpRepr::parse_bytes(&[0, 0, 0]),
            Err(PortmapWireError::TrailingBytes { extra: 1 })
        );
        assert_eq!(PmpRepr::parse_bytes(&[]), Err(PortmapWireError::Truncated));
    }

    #[test]
    fn pcp_map_request_layout() {
        let req = PcpRepr::Request(PcpRequest {
            lifetime: 3600,
            client: "192.168.1.2".parse().unwrap(),
            op: PcpOp::Map(PcpMap {
                nonce: [7; 12],
                protocol: PROTO_UDP,
                internal_port: 4000,
                external_port: 0,
                external_ip: Ipv4Addr::UNSPECIFIED.into(),
            }),
            options: vec![],
        });
        let bytes = req.to_bytes().unwrap();
        assert_eq!(bytes.len(), 60);
        assert_eq!(&bytes[..8], &[2, 1, 0, 0, 0, 0, 0x0e, 0x10]);
        assert_eq!(
            &bytes[8..24],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 2]
        );
        assert_eq!(&bytes[24..36], &[7; 12]);
        assert_eq!(&bytes[36..40], &[17, 0, 0, 0]);
        assert_eq!(&bytes[52..60], &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(PcpRepr::parse_bytes(&bytes).unwrap(), req);
    }

    #[test]
    fn pcp_options_and_short_error() {
        let resp = PcpRepr::Response(PcpResponse {
            result: PcpResultCode::SUCCESS,
            lifetime: 10,
            epoch: 20,
            op: PcpOp::Announce,
            options: vec![PcpOption {
                code: 130,
                data: vec![1, 2, 3, 4, 5],
            }],
        });
        let bytes = resp.to_bytes().unwrap();
        assert_eq!(bytes.len(), 24 + 4 + 8);
        assert_eq!(PcpRepr::parse_bytes(&bytes).unwrap(), resp);
        // An error response with the header only.
        let mut short = [0u8; 24];
        short[..4].copy_from_slice(&[2, 0x81, 0, 1]);
        assert_eq!(
            PcpRepr::parse_bytes(&short).unwrap(),
            PcpRepr::Response(PcpResponse {
                result: PcpResultCode::UNSUPP_VERSION,
                lifetime: 0,
                epoch: 0,
                op: PcpOp::Other {
                    opcode: 1,
                    body: vec![]
                },
                options: vec![],
            })
        );
    }

    #[test]
    fn pcp_rejects_bad_input() {
        assert_eq!(
            PcpRepr::parse_bytes(&[2, 0, 0]),
            Err(PortmapWireError::BadLength { len: 3 })
        );
        assert_eq!(
            PcpRepr::parse_bytes(&[0; 1104]),
            Err(PortmapWireError::BadLength { len: 1104 })
        );
        assert_eq!(
            PcpRepr::parse_bytes(&[1, 0, 0, 0]),
            Err(PortmapWireError::BadVersion { version: 1 })
        );
        assert_eq!(
            PcpRepr::parse_bytes(&[2, 0, 0, 0]),
            Err(PortmapWireError::Truncated)
        );
        // A MAP request cut short.
        let mut req = [0u8; 28];
        req[..2].copy_from_slice(&[2, 1]);
        assert_eq!(PcpRepr::parse_bytes(&req), Err(PortmapWireError::Truncated));
        // An option that runs past the end.
        let mut opt = [0u8; 28];
        opt[..2].copy_from_slice(&[2, 0]);
        opt[24..28].copy_from_slice(&[1, 0, 0, 8]);
        assert_eq!(
            PcpRepr::parse_bytes(&opt),
            Err(PortmapWireError::BadOption { code: 1 })
        );
    }
}
