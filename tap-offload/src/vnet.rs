//! `struct virtio_net_hdr` and its constants.

use crate::OffloadError;

/// Bytes of the virtio-net header before each frame (`struct
/// virtio_net_hdr`, the TAP default `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: not a super-frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6 (not cut by this crate).
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO), IPv4 or IPv6.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP super-frame has ECN's CWR to clear after the
/// first segment.
pub const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr` (host byte order, as the TAP uses it without
/// `TUNSETVNETLE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// [`F_NEEDS_CSUM`] or 0.
    pub flags: u8,
    /// [`GSO_NONE`], [`GSO_TCPV4`], … possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (Ethernet, IP, TCP/UDP).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (from the Ethernet header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b: &[u8; VNET_HDR_LEN] = bytes
            .get(..VNET_HDR_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(OffloadError::Truncated { len: bytes.len() })?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `out`;
    /// [`OffloadError::Truncated`] (and nothing written) if `out` is shorter.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), OffloadError> {
        let len = out.len();
        out.get_mut(..VNET_HDR_LEN)
            .ok_or(OffloadError::Truncated { len })?
            .copy_from_slice(&self.to_bytes());
        Ok(())
    }
}
