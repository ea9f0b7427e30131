//! Error types.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use smoltcp::wire::EthernetAddress;

/// The protocol layer a truncated frame ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The Ethernet II header.
    Ethernet,
    /// The ARP packet.
    Arp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "Ethernet",
            Layer::Arp => "ARP",
        })
    }
}

/// Why a frame is not an Ethernet/IPv4 ARP request or reply.
///
/// Some variants are malformed bytes ([`is_malformed`](FrameError::is_malformed));
/// the others are well-formed frames of another kind, which a responder
/// ignores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame ends before the header of `layer` does.
    #[error("{layer} data of {len} bytes is shorter than the {needed} bytes required")]
    Truncated {
        /// Layer whose header is cut short.
        layer: Layer,
        /// Bytes available for that layer.
        len: usize,
        /// Bytes that layer needs.
        needed: usize,
    },
    /// Ethernet/IPv4 ARP with address lengths other than 6 and 4.
    #[error("ARP address lengths {hardware_len}/{protocol_len} do not match Ethernet/IPv4 (6/4)")]
    AddressLength {
        /// `ar$hln`.
        hardware_len: u8,
        /// `ar$pln`.
        protocol_len: u8,
    },
    /// The ARP sender hardware address is a group (multicast or broadcast)
    /// address (RFC 1812 section 3.3.2) or all zeros: no host has it.
    #[error("ARP sender hardware address {0} is a group or all-zero address")]
    SenderNotUnicast(EthernetAddress),
    /// A well-formed Ethernet frame that does not carry ARP.
    #[error("EtherType {ethertype:#06x} is not ARP")]
    NotArp {
        /// The frame's EtherType.
        ethertype: u16,
    },
    /// ARP for a hardware or protocol other than Ethernet and IPv4.
    #[error(
        "ARP for hardware type {hardware_type}, protocol {protocol_type:#06x} is not Ethernet/IPv4"
    )]
    NotEthernetIpv4 {
        /// `ar$hrd`.
        hardware_type: u16,
        /// `ar$pro`.
        protocol_type: u16,
    },
    /// An ARP operation other than request or reply (RARP, InARP, ...).
    #[error("ARP operation {operation} is neither request nor reply")]
    UnknownOperation {
        /// `ar$op`.
        operation: u16,
    },
}

impl FrameError {
    /// Whether the bytes are broken, as opposed to a well-formed frame that
    /// simply is not Ethernet/IPv4 ARP.
    pub const fn is_malformed(&self) -> bool {
        matches!(
            self,
            FrameError::Truncated { .. }
                | FrameError::AddressLength { .. }
                | FrameError::SenderNotUnicast(_)
        )
    }
}

/// A [`Config`](crate::Config) or guest address the responder cannot work with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The gateway address lies outside the virtual network.
    #[error("gateway {gateway} is outside the virtual network {network}")]
    GatewayOutsideNetwork {
        /// The configured gateway address.
        gateway: Ipv4Addr,
        /// The configured network.
        network: Ipv4Net,
    },
    /// The gateway's hardware address is a group address or all zeros.
    #[error("gateway hardware address {0} is a group or all-zero address")]
    GatewayNotUnicast(EthernetAddress),
    /// The guest address lies outside the virtual network.
    #[error("guest address {guest} is outside the virtual network {network}")]
    GuestOutsideNetwork {
        /// The guest address.
        guest: Ipv4Addr,
        /// The configured network.
        network: Ipv4Net,
    },
    /// The guest address is the gateway's.
    #[error("guest address {0} is the gateway's")]
    GuestIsGateway(Ipv4Addr),
}
