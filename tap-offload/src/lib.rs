//! Sans-IO offloads for a TAP device: the virtio-net header, segmentation
//! of the guest's super-frames and coalescing of frames for the guest.
//!
//! A TAP opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD` (TSO4/TSO6, CSUM,
//! USO) lets the guest's kernel hand the program TCP "super-frames" of up
//! to 64 KiB, each read prefixed with a [`VnetHdr`] saying how to cut it,
//! and takes such super-frames back. One system call then moves tens of
//! segments instead of one, which is where a user-space data plane spends
//! its time.
//!
//! - [`Segmenter`] turns one read into ordinary Ethernet frames no larger
//!   than the guest MTU, with complete IP, TCP and UDP checksums: TCP
//!   segmentation (TSO) and UDP segmentation (USO) over IPv4 and IPv6
//!   (without extension headers), and completion of partial checksums
//!   ([`F_NEEDS_CSUM`]).
//! - [`Coalescer`] merges consecutive in-order segments of one TCP flow
//!   (IPv4 or IPv6) into one super-frame with a GSO header, which the
//!   guest's stack takes whole, like its own GRO. Only segments that Linux
//!   GRO would merge are merged: same addresses, ports, ACK, window,
//!   options, TTL or hop limit, TOS or traffic class and flow label;
//!   contiguous sequence numbers; flags ACK (and PSH on the last); equal
//!   sizes but for the last; at most [`MAX_MERGE`] of them. With
//!   [`Coalescer::merge_udp`] (a TAP that took USO) it merges consecutive
//!   UDP datagrams of one flow the same way (Linux's UDP GRO rules), so a
//!   burst of answers to one client socket is one write.
//!
//! Merged frames carry a partial checksum (the pseudo-header sum, as the
//! kernel's own GRO leaves it); the caller vouches for the segments they
//! are made of (an authenticated tunnel, or the underlay's checksum).
//! [`complete_checksum`] finishes such a checksum where a frame goes
//! somewhere that cannot take a partial one.
//!
//! The crate does no I/O: bytes in, bytes out. It works on Ethernet frames
//! (a TAP), not on bare IP packets (a TUN: see `tun-rs`'s offload module
//! for that). IPv6 super-frames with extension headers are refused
//! ([`OffloadError::NotIpv6`]) and, like IPv4 frames with options or
//! fragments, never merged. Malformed reads give an [`OffloadError`], never a
//! panic; both types keep their buffer between calls, so the steady state
//! allocates nothing.
//!
//! ```
//! use tap_offload::{Coalescer, Segmenter, VnetHdr, VNET_HDR_LEN};
//!
//! // A frame that needs nothing: an empty header and 60 bytes.
//! let mut read = vec![0u8; VNET_HDR_LEN + 60];
//! read[VNET_HDR_LEN + 12] = 0x08; // EtherType IPv4
//! let mut seg = Segmenter::new();
//! let mut frames = Vec::new();
//! let n = seg.split(&mut read, |frame| frames.push(frame.len()))?;
//! assert_eq!((n, frames), (1, vec![60]));
//!
//! // A lone frame goes back to the TAP with an empty header.
//! let mut gro = Coalescer::new();
//! assert!(gro.push(&read[VNET_HDR_LEN..]));
//! let out = gro.finish();
//! assert_eq!(VnetHdr::parse(out)?, VnetHdr::default());
//! assert_eq!(out.len(), VNET_HDR_LEN + 60);
//! # Ok::<(), tap_offload::OffloadError>(())
//! ```

#![forbid(unsafe_code)]

// The test support names the crate as its users do.
#[cfg(test)]
extern crate self as tap_offload;

mod checksum;
mod coalesce;
mod segment;
#[cfg(test)]
mod tests;
mod vnet;

pub use checksum::complete_checksum;
pub use coalesce::Coalescer;
pub use segment::Segmenter;
pub use vnet::{
    F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VNET_HDR_LEN, VnetHdr,
};

/// Room a read from an offload TAP needs: header, Ethernet, 64 KiB of IP.
pub const MAX_READ: usize = VNET_HDR_LEN + ETH_LEN + 65535;
/// Most segments one merged frame holds (Linux GRO's limit).
pub const MAX_MERGE: u16 = 64;

/// Why a read from the TAP could not be cut into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// Shorter than the virtio-net header, or than the headers it names;
    /// or a buffer too short for the header to be written into.
    #[error("truncated frame ({len} bytes)")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// A GSO type this crate does not cut (TCPv6, UFO).
    #[error("unsupported GSO type {0:#04x}")]
    UnsupportedGso(u8),
    /// A super-frame that is not the IPv4 TCP/UDP its GSO type says; the
    /// IP protocol number it holds.
    #[error("super-frame is not IPv4 TCP/UDP as its GSO type says (protocol {0})")]
    NotIpv4(u8),
    /// A super-frame that is not the IPv6 TCP/UDP its GSO type says (one
    /// with extension headers included); its next header.
    #[error("super-frame is not IPv6 TCP/UDP without extension headers (next header {0})")]
    NotIpv6(u8),
    /// `gso_size` is zero.
    #[error("zero GSO segment size")]
    ZeroSegmentSize,
    /// `csum_start + csum_offset` lies outside the frame.
    #[error("checksum offset {start}+{offset} outside a {len}-byte frame")]
    ChecksumOutside {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// Frame length.
        len: usize,
    },
}

const ETH_LEN: usize = 14;
const IPV6_LEN: usize = 40;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// Big-endian field access; callers check the bounds first.
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The IPv6 header of an Ethernet frame: its length (40: extension
/// headers are not cut) and next header.
fn ipv6_header(frame: &[u8]) -> Result<(usize, u8), OffloadError> {
    if frame.len() < ETH_LEN + IPV6_LEN {
        return Err(OffloadError::Truncated { len: frame.len() });
    }
    let next = frame[ETH_LEN + 6];
    if be16(frame, 12) != 0x86dd || frame[ETH_LEN] >> 4 != 6 {
        return Err(OffloadError::NotIpv6(next));
    }
    Ok((IPV6_LEN, next))
}

/// The IPv4 header of an Ethernet frame: its length and protocol.
fn ipv4_header(frame: &[u8]) -> Result<(usize, u8), OffloadError> {
    let truncated = OffloadError::Truncated { len: frame.len() };
    if frame.len() < ETH_LEN + 20 {
        return Err(truncated);
    }
    let protocol = frame[ETH_LEN + 9];
    if be16(frame, 12) != 0x0800 || frame[ETH_LEN] >> 4 != 4 {
        return Err(OffloadError::NotIpv4(protocol));
    }
    let ihl = usize::from(frame[ETH_LEN] & 0x0f) * 4;
    if ihl < 20 || frame.len() < ETH_LEN + ihl {
        return Err(truncated);
    }
    Ok((ihl, protocol))
}
