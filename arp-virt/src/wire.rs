//! Ethernet frames carrying Ethernet/IPv4 ARP (RFC 826).
//!
//! A thin adapter over [`smoltcp::wire`]: the byte layout comes from
//! smoltcp's [`EthernetFrame`] and [`ArpPacket`] views; this module converts a
//! frame once, at the edge, into the flat [`Repr`] the responder matches on,
//! and classifies everything else as a typed [`FrameError`].
//!
//! Trailing bytes after the 28-byte ARP payload (Ethernet padding up to the
//! 60-byte minimum frame) are allowed and ignored.

use std::fmt;
use std::net::Ipv4Addr;

use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol,
};

use crate::error::{FrameError, Layer};

/// Length of an Ethernet II header (destination, source, EtherType).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an Ethernet/IPv4 ARP payload (RFC 826: 8-byte fixed part,
/// two 6-byte hardware and two 4-byte protocol addresses).
pub const ARP_LEN: usize = 28;
/// Length of a whole Ethernet frame carrying Ethernet/IPv4 ARP, without padding
/// or frame check sequence.
pub const FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_LEN;
/// The EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// The ARP protocol type of IPv4.
pub const PROTOCOL_IPV4: u16 = 0x0800;
/// The ARP hardware type of Ethernet.
pub const HARDWARE_ETHERNET: u16 = 1;

/// Length of the fixed part of an ARP header (types, lengths, operation).
const ARP_FIXED_LEN: usize = 8;

/// An ARP operation this crate understands (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `ares_op$REQUEST` (1): who-has.
    Request,
    /// `ares_op$REPLY` (2): is-at.
    Reply,
}

impl Operation {
    /// The operation's code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            Operation::Request => 1,
            Operation::Reply => 2,
        }
    }
}

/// An Ethernet frame carrying an Ethernet/IPv4 ARP packet, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Ethernet destination address.
    pub destination: EthernetAddress,
    /// Ethernet source address.
    pub source: EthernetAddress,
    /// ARP operation.
    pub operation: Operation,
    /// Sender hardware address (`ar$sha`).
    pub sender_hardware_addr: EthernetAddress,
    /// Sender protocol address (`ar$spa`).
    pub sender_protocol_addr: Ipv4Addr,
    /// Target hardware address (`ar$tha`).
    pub target_hardware_addr: EthernetAddress,
    /// Target protocol address (`ar$tpa`).
    pub target_protocol_addr: Ipv4Addr,
}

impl Repr {
    /// Parse an Ethernet frame holding Ethernet/IPv4 ARP.
    ///
    /// Frames that are well formed but not Ethernet/IPv4 ARP request or reply
    /// (another EtherType, another ARP hardware or protocol type, an unknown
    /// operation such as RARP) are reported as the matching [`FrameError`]
    /// variant; [`FrameError::is_malformed`] tells them apart from bad bytes.
    #[inline]
    pub fn parse(frame: &[u8]) -> Result<Repr, FrameError> {
        let ethernet = EthernetFrame::new_checked(frame).map_err(|_| FrameError::Truncated {
            layer: Layer::Ethernet,
            len: frame.len(),
            needed: ETHERNET_HEADER_LEN,
        })?;
        let ethertype = u16::from(ethernet.ethertype());
        if ethertype != ETHERTYPE_ARP {
            return Err(FrameError::NotArp { ethertype });
        }
        let payload = ethernet.payload();
        if payload.len() < ARP_FIXED_LEN {
            return Err(FrameError::Truncated {
                layer: Layer::Arp,
                len: payload.len(),
                needed: ARP_FIXED_LEN,
            });
        }
        // The fixed part is there, so the accessors below cannot panic.
        let arp = ArpPacket::new_unchecked(payload);
        let hardware_type = u16::from(arp.hardware_type());
        let protocol_type = u16::from(arp.protocol_type());
        if hardware_type != HARDWARE_ETHERNET || protocol_type != PROTOCOL_IPV4 {
            return Err(FrameError::NotEthernetIpv4 {
                hardware_type,
                protocol_type,
            });
        }
        let (hardware_len, protocol_len) = (arp.hardware_len(), arp.protocol_len());
        if hardware_len != 6 || protocol_len != 4 {
            return Err(FrameError::AddressLength {
                hardware_len,
                protocol_len,
            });
        }
        if payload.len() < ARP_LEN {
            return Err(FrameError::Truncated {
                layer: Layer::Arp,
                len: payload.len(),
                needed: ARP_LEN,
            });
        }
        let operation = match arp.operation() {
            ArpOperation::Request => Operation::Request,
            ArpOperation::Reply => Operation::Reply,
            other => {
                return Err(FrameError::UnknownOperation {
                    operation: u16::from(other),
                });
            }
        };
        Ok(Repr {
            destination: ethernet.dst_addr(),
            source: ethernet.src_addr(),
            operation,
            sender_hardware_addr: mac(arp.source_hardware_addr()),
            sender_protocol_addr: ipv4(arp.source_protocol_addr()),
            target_hardware_addr: mac(arp.target_hardware_addr()),
            target_protocol_addr: ipv4(arp.target_protocol_addr()),
        })
    }

    /// Length of the frame [`emit`](Repr::emit) writes.
    pub const fn buffer_len(&self) -> usize {
        FRAME_LEN
    }

    /// Emit the frame into the first [`buffer_len`](Repr::buffer_len) bytes
    /// of `buffer`.
    ///
    /// # Panics
    /// When `buffer` is shorter than [`FRAME_LEN`].
    #[inline]
    pub fn emit(&self, buffer: &mut [u8]) {
        let mut ethernet = EthernetFrame::new_unchecked(&mut buffer[..FRAME_LEN]);
        ethernet.set_dst_addr(self.destination);
        ethernet.set_src_addr(self.source);
        ethernet.set_ethertype(EthernetProtocol::Arp);
        let mut arp = ArpPacket::new_unchecked(ethernet.payload_mut());
        arp.set_hardware_type(ArpHardware::Ethernet);
        arp.set_protocol_type(EthernetProtocol::Ipv4);
        arp.set_hardware_len(6);
        arp.set_protocol_len(4);
        arp.set_operation(match self.operation {
            Operation::Request => ArpOperation::Request,
            Operation::Reply => ArpOperation::Reply,
        });
        arp.set_source_hardware_addr(self.sender_hardware_addr.as_bytes());
        arp.set_source_protocol_addr(&self.sender_protocol_addr.octets());
        arp.set_target_hardware_addr(self.target_hardware_addr.as_bytes());
        arp.set_target_protocol_addr(&self.target_protocol_addr.octets());
    }

    /// Emit the frame into a fresh fixed-size array.
    #[inline]
    pub fn to_bytes(&self) -> [u8; FRAME_LEN] {
        let mut bytes = [0; FRAME_LEN];
        self.emit(&mut bytes);
        bytes
    }
}

impl fmt::Display for Repr {
    /// As tcpdump prints ARP: `request who-has 10.0.0.1 tell 10.0.0.2
    /// (52-54-00-12-34-56 -> ff-ff-ff-ff-ff-ff)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operation {
            Operation::Request => write!(
                f,
                "request who-has {} tell {}",
                self.target_protocol_addr, self.sender_protocol_addr
            )?,
            Operation::Reply => write!(
                f,
                "reply {} is-at {} to {}",
                self.sender_protocol_addr, self.sender_hardware_addr, self.target_protocol_addr
            )?,
        }
        write!(f, " ({} -> {})", self.source, self.destination)
    }
}

/// Whether `frame` is an Ethernet frame with the ARP EtherType (a cheap
/// dispatch check for callers demultiplexing TAP traffic).
pub fn is_arp(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&ETHERTYPE_ARP.to_be_bytes()[..])
}

#[inline]
fn mac(bytes: &[u8]) -> EthernetAddress {
    match <[u8; 6]>::try_from(bytes) {
        Ok(octets) => EthernetAddress(octets),
        // `parse` checked the hardware length is 6.
        Err(_) => EthernetAddress([0; 6]),
    }
}

#[inline]
fn ipv4(bytes: &[u8]) -> Ipv4Addr {
    match <[u8; 4]>::try_from(bytes) {
        Ok(octets) => Ipv4Addr::from(octets),
        // `parse` checked the protocol length is 4.
        Err(_) => Ipv4Addr::UNSPECIFIED,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    // A who-has 10.0.0.1 tell 10.0.0.2 from 52:54:00:12:34:56, as tcpdump
    // shows Linux sending it (broadcast, 42 bytes).
    const REQUEST_BYTES: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // source
        0x08, 0x06, // EtherType ARP
        0x00, 0x01, // hardware Ethernet
        0x08, 0x00, // protocol IPv4
        0x06, 0x04, // lengths
        0x00, 0x01, // request
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // sha
        10, 0, 0, 2, // spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha
        10, 0, 0, 1, // tpa
    ];

    const REQUEST: Repr = Repr {
        destination: EthernetAddress::BROADCAST,
        source: EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
        operation: Operation::Request,
        sender_hardware_addr: EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
        sender_protocol_addr: Ipv4Addr::new(10, 0, 0, 2),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
    };

    #[test]
    fn parse_request() {
        assert_eq!(Repr::parse(&REQUEST_BYTES), Ok(REQUEST));
    }

    #[test]
    fn parse_ignores_padding() {
        let mut padded = [0u8; 60];
        padded[..42].copy_from_slice(&REQUEST_BYTES);
        assert_eq!(Repr::parse(&padded), Ok(REQUEST));
    }

    #[test]
    fn display() {
        assert_eq!(
            REQUEST.to_string(),
            "request who-has 10.0.0.1 tell 10.0.0.2 (52-54-00-12-34-56 -> ff-ff-ff-ff-ff-ff)"
        );
        let reply = Repr {
            operation: Operation::Reply,
            ..REQUEST
        };
        assert_eq!(
            reply.to_string(),
            "reply 10.0.0.2 is-at 52-54-00-12-34-56 to 10.0.0.1 (52-54-00-12-34-56 -> ff-ff-ff-ff-ff-ff)"
        );
    }

    #[test]
    fn emit_request() {
        let mut buffer = [0xa5; 42];
        REQUEST.emit(&mut buffer);
        assert_eq!(buffer, REQUEST_BYTES);
        assert_eq!(REQUEST.to_bytes(), REQUEST_BYTES);
    }

    #[test]
    fn truncated_frames() {
        for len in 0..ETHERNET_HEADER_LEN {
            assert_eq!(
                Repr::parse(&REQUEST_BYTES[..len]),
                Err(FrameError::Truncated {
                    layer: Layer::Ethernet,
                    len,
                    needed: 14
                })
            );
        }
        for len in ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ARP_FIXED_LEN {
            assert_eq!(
                Repr::parse(&REQUEST_BYTES[..len]),
                Err(FrameError::Truncated {
                    layer: Layer::Arp,
                    len: len - 14,
                    needed: 8
                })
            );
        }
        for len in ETHERNET_HEADER_LEN + ARP_FIXED_LEN..FRAME_LEN {
            assert_eq!(
                Repr::parse(&REQUEST_BYTES[..len]),
                Err(FrameError::Truncated {
                    layer: Layer::Arp,
                    len: len - 14,
                    needed: 28
                })
            );
        }
    }

    #[test]
    fn other_ethertype() {
        let mut frame = REQUEST_BYTES;
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(
            Repr::parse(&frame),
            Err(FrameError::NotArp { ethertype: 0x0800 })
        );
        assert!(!is_arp(&frame));
        assert!(is_arp(&REQUEST_BYTES));
        assert!(!is_arp(&REQUEST_BYTES[..13]));
    }

    #[test]
    fn other_hardware_or_protocol() {
        let mut frame = REQUEST_BYTES;
        frame[14..16].copy_from_slice(&[0x00, 0x06]); // IEEE 802
        assert_eq!(
            Repr::parse(&frame),
            Err(FrameError::NotEthernetIpv4 {
                hardware_type: 6,
                protocol_type: 0x0800
            })
        );
        let mut frame = REQUEST_BYTES;
        frame[16..18].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(
            Repr::parse(&frame),
            Err(FrameError::NotEthernetIpv4 {
                hardware_type: 1,
                protocol_type: 0x86dd
            })
        );
    }

    #[test]
    fn wrong_address_lengths() {
        let mut frame = REQUEST_BYTES;
        frame[19] = 16;
        assert_eq!(
            Repr::parse(&frame),
            Err(FrameError::AddressLength {
                hardware_len: 6,
                protocol_len: 16
            })
        );
    }

    #[test]
    fn unknown_operation() {
        let mut frame = REQUEST_BYTES;
        frame[21] = 3; // RARP request
        assert_eq!(
            Repr::parse(&frame),
            Err(FrameError::UnknownOperation { operation: 3 })
        );
    }

    fn ethernet_addr() -> impl Strategy<Value = EthernetAddress> {
        any::<[u8; 6]>().prop_map(EthernetAddress)
    }

    pub(crate) fn repr() -> impl Strategy<Value = Repr> {
        (
            ethernet_addr(),
            ethernet_addr(),
            prop_oneof![Just(Operation::Request), Just(Operation::Reply)],
            ethernet_addr(),
            any::<u32>().prop_map(Ipv4Addr::from),
            ethernet_addr(),
            any::<u32>().prop_map(Ipv4Addr::from),
        )
            .prop_map(|(d, s, op, sha, spa, tha, tpa)| Repr {
                destination: d,
                source: s,
                operation: op,
                sender_hardware_addr: sha,
                sender_protocol_addr: spa,
                target_hardware_addr: tha,
                target_protocol_addr: tpa,
            })
    }

    proptest! {
        #[test]
        fn round_trip(repr in repr()) {
            let mut buffer = [0xa5; FRAME_LEN];
            repr.emit(&mut buffer);
            prop_assert_eq!(Repr::parse(&buffer), Ok(repr));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(repr) = Repr::parse(&bytes) {
                // What parses re-emits to the same leading bytes.
                prop_assert_eq!(&repr.to_bytes()[..], &bytes[..FRAME_LEN]);
            }
        }
    }
}
