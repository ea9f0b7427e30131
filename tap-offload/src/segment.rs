//! Cutting super-frames (TSO, USO) into frames.

use crate::checksum::{self, complete_checksum};
use crate::{
    ETH_LEN, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, OffloadError,
    PROTO_TCP, PROTO_UDP, TCP_CWR, TCP_FIN, TCP_PSH, VNET_HDR_LEN, VnetHdr, be16, be32,
    ipv4_header, ipv6_header, put16,
};

/// Cuts reads from an offload TAP into frames; keeps its scratch buffer
/// between calls, so that steady state allocates nothing.
#[derive(Debug, Default)]
pub struct Segmenter {
    buf: Vec<u8>,
}

impl Segmenter {
    /// A segmenter.
    pub fn new() -> Segmenter {
        Segmenter {
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Cuts `read` (a virtio-net header and a frame, as one TAP read
    /// returns them) into frames, passing each to `each`; returns how many.
    /// A malformed read yields an error and no frame. `read` is changed in
    /// place where a partial checksum is completed.
    pub fn split(
        &mut self,
        read: &mut [u8],
        mut each: impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let hdr = VnetHdr::parse(read)?;
        let frame = &mut read[VNET_HDR_LEN..];
        match hdr.gso_type & !GSO_ECN {
            GSO_NONE => {
                if hdr.flags & F_NEEDS_CSUM != 0 {
                    complete_checksum(frame, hdr.csum_start, hdr.csum_offset)?;
                }
                each(frame);
                Ok(1)
            }
            GSO_TCPV4 => self.split_tcp(frame, hdr.gso_size, false, each),
            GSO_TCPV6 => self.split_tcp(frame, hdr.gso_size, true, each),
            GSO_UDP_L4 => {
                // USO says no family: the frame's EtherType does.
                let v6 = frame.len() >= ETH_LEN && be16(frame, 12) == 0x86dd;
                self.split_udp(frame, hdr.gso_size, v6, each)
            }
            other => Err(OffloadError::UnsupportedGso(other)),
        }
    }

    fn split_tcp(
        &mut self,
        frame: &[u8],
        mss: u16,
        v6: bool,
        each: impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let (ihl, protocol) = ip_header(frame, v6)?;
        if protocol != PROTO_TCP {
            return Err(not_ip(v6, protocol));
        }
        let l4 = ETH_LEN + ihl;
        let truncated = OffloadError::Truncated { len: frame.len() };
        if frame.len() < l4 + 20 {
            return Err(truncated);
        }
        let doff = usize::from(frame[l4 + 12] >> 4) * 4;
        if doff < 20 || frame.len() < l4 + doff {
            return Err(truncated);
        }
        let seq = be32(frame, l4 + 4);
        let flags = frame[l4 + 13];
        let fix = |buf: &mut [u8], i: usize, count: usize| {
            let s = seq.wrapping_add((i * usize::from(mss)) as u32);
            buf[l4 + 4..l4 + 8].copy_from_slice(&s.to_be_bytes());
            let mut f = flags;
            if i + 1 < count {
                f &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                f &= !TCP_CWR;
            }
            buf[l4 + 13] = f;
            checksum::fix_l4(buf, l4, 16, PROTO_TCP);
        };
        self.cut(frame, ihl, l4 + doff, mss, fix, each)
    }

    fn split_udp(
        &mut self,
        frame: &[u8],
        size: u16,
        v6: bool,
        each: impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let (ihl, protocol) = ip_header(frame, v6)?;
        if protocol != PROTO_UDP {
            return Err(not_ip(v6, protocol));
        }
        let l4 = ETH_LEN + ihl;
        if frame.len() < l4 + 8 {
            return Err(OffloadError::Truncated { len: frame.len() });
        }
        let fix = |buf: &mut [u8], _: usize, _: usize| {
            let udp_len = (buf.len() - l4) as u16;
            put16(buf, l4 + 4, udp_len);
            checksum::fix_l4(buf, l4, 6, PROTO_UDP);
        };
        self.cut(frame, ihl, l4 + 8, size, fix, each)
    }

    /// Cuts the payload after the first `headers` bytes of `frame` into
    /// chunks of `size`, each after a copy of the headers with its IPv4
    /// length, ID and checksum (or IPv6 payload length) set;
    /// `fix_l4(segment, i, count)` sets the rest. At least one segment,
    /// even with no payload.
    fn cut(
        &mut self,
        frame: &[u8],
        ihl: usize,
        headers: usize,
        size: u16,
        mut fix_l4: impl FnMut(&mut [u8], usize, usize),
        mut each: impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        if size == 0 {
            return Err(OffloadError::ZeroSegmentSize);
        }
        let size = usize::from(size);
        let id = be16(frame, ETH_LEN + 4);
        let payload = &frame[headers..];
        let count = payload.len().div_ceil(size).max(1);
        for i in 0..count {
            let chunk =
                &payload[(i * size).min(payload.len())..((i + 1) * size).min(payload.len())];
            let buf = &mut self.buf;
            buf.clear();
            buf.extend_from_slice(&frame[..headers]);
            buf.extend_from_slice(chunk);
            if buf[ETH_LEN] >> 4 == 6 {
                let payload_len = (buf.len() - ETH_LEN - ihl) as u16;
                put16(buf, ETH_LEN + 4, payload_len);
            } else {
                let ip_len = (buf.len() - ETH_LEN) as u16;
                put16(buf, ETH_LEN + 2, ip_len);
                put16(buf, ETH_LEN + 4, id.wrapping_add(i as u16));
                checksum::fix_ip(buf, ihl);
            }
            fix_l4(buf, i, count);
            each(buf);
        }
        Ok(count)
    }
}

/// The IP header of a super-frame of the family its GSO type names.
fn ip_header(frame: &[u8], v6: bool) -> Result<(usize, u8), OffloadError> {
    if v6 {
        ipv6_header(frame)
    } else {
        ipv4_header(frame)
    }
}

fn not_ip(v6: bool, protocol: u8) -> OffloadError {
    if v6 {
        OffloadError::NotIpv6(protocol)
    } else {
        OffloadError::NotIpv4(protocol)
    }
}
