//! TAP offloads: the virtio-net header, segmentation of the guest's
//! super-frames and coalescing of frames for the guest.
//!
//! A TAP opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD` (TSO4/TSO6, CSUM,
//! USO) lets the guest's kernel hand the node TCP "super-frames" of up to
//! 64 KiB, each read prefixed with a [`VnetHdr`] saying how to cut it, and
//! takes such super-frames back. One system call then moves tens of
//! segments instead of one, which is where a user-space data plane spends
//! its time (the peers in `../shared/anchors.md` stop at ≈0.5–0.6 Gbit/s for
//! that reason).
//!
//! - [`Segmenter`] turns one read into ordinary frames no larger than the
//!   guest MTU, with complete IP, TCP and UDP checksums, as the overlay
//!   carries them: TCPv4 segmentation (TSO), UDPv4 segmentation (USO), and
//!   completion of partial checksums (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
//! - [`Coalescer`] merges consecutive in-order segments of one TCPv4 flow
//!   (the frames one batch of datagrams produced) into one super-frame with
//!   a GSO header, which the guest's stack takes whole, like its own GRO.
//!   Only segments that Linux GRO would merge are merged: same addresses,
//!   ports, ACK, window, options, TTL and TOS; contiguous sequence numbers;
//!   flags ACK (and PSH on the last); equal sizes but for the last.
//!
//! Merged frames carry a partial checksum (the pseudo-header sum, as the
//! kernel's own GRO leaves it); the segments they are made of were
//! authenticated by the security association (or checked by the underlay's
//! UDP checksum in the unprotected mode).
//!
//! ```
//! use wow_node::offload::{Coalescer, Segmenter, VnetHdr, VNET_HDR_LEN};
//!
//! // A frame that needs nothing: an empty header and 60 bytes.
//! let mut read = vec![0u8; VNET_HDR_LEN + 60];
//! read[VNET_HDR_LEN + 12] = 0x08; // EtherType IPv4
//! let mut seg = Segmenter::new();
//! let mut frames = 0;
//! seg.split(&mut read, |frame| { frames += 1; assert_eq!(frame.len(), 60) }).unwrap();
//! assert_eq!(frames, 1);
//!
//! // A lone frame goes back to the TAP with an empty header.
//! let mut gro = Coalescer::new();
//! assert!(gro.push(&read[VNET_HDR_LEN..]));
//! let out = gro.finish();
//! assert_eq!(VnetHdr::parse(out).unwrap(), VnetHdr::default());
//! assert_eq!(out.len(), VNET_HDR_LEN + 60);
//! ```

use etherparse::checksum::u64_16bit_word;
use smoltcp::wire::IpProtocol;
use std::net::Ipv4Addr;

/// RFC 1071 checksums, as big-endian numbers, folded, not complemented.
mod checksum {
    use super::*;

    /// The sum of `bytes` as 16-bit words (8 bytes at a time).
    pub fn data(bytes: &[u8]) -> u16 {
        let native = !u64_16bit_word::ones_complement(u64_16bit_word::add_slice(0, bytes));
        // Summed in native order: the folded sum's bytes are the big-endian sum.
        u16::from_be_bytes(native.to_ne_bytes())
    }

    /// The ones'-complement sum of sums.
    pub fn combine(sums: &[u16]) -> u16 {
        let mut acc: u32 = sums.iter().map(|&s| u32::from(s)).sum();
        while acc > 0xffff {
            acc = (acc >> 16) + (acc & 0xffff);
        }
        acc as u16
    }

    /// The IPv4 pseudo-header's sum (RFC 793 §3.1, RFC 768).
    pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, protocol: IpProtocol, len: u32) -> u16 {
        let (s, d) = (src.octets(), dst.octets());
        combine(&[
            u16::from_be_bytes([s[0], s[1]]),
            u16::from_be_bytes([s[2], s[3]]),
            u16::from_be_bytes([d[0], d[1]]),
            u16::from_be_bytes([d[2], d[3]]),
            u16::from(u8::from(protocol)),
            len as u16,
        ])
    }
}

/// Bytes of the virtio-net header before each frame (`struct
/// virtio_net_hdr`, the TAP default `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;
/// Room a read from an offload TAP needs: header, Ethernet, 64 KiB of IP.
pub const MAX_READ: usize = VNET_HDR_LEN + 14 + 65535;

/// `flags`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: not a super-frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6 (not carried: the virtual network is IPv4).
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO), IPv4 or IPv6.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP super-frame has ECN's CWR to clear after the
/// first segment.
pub const GSO_ECN: u8 = 0x80;

const ETH_LEN: usize = 14;
/// Most segments one merged frame holds (Linux GRO's limit is 64).
const MAX_MERGE: u16 = 64;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// Why a read from the TAP could not be cut into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// Shorter than the virtio-net header, or than the headers it names.
    #[error("truncated frame ({len} bytes)")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// A GSO type the node does not carry (TCPv6, UFO).
    #[error("unsupported GSO type {0:#04x}")]
    UnsupportedGso(u8),
    /// A super-frame that is not the IPv4 TCP/UDP its GSO type says.
    #[error("super-frame is not IPv4 {0:?}")]
    NotIpv4(IpProtocol),
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

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `out`
    /// (which must be that long).
    pub fn emit(&self, out: &mut [u8]) {
        if let Some(b) = out.get_mut(..VNET_HDR_LEN) {
            b[0] = self.flags;
            b[1] = self.gso_type;
            b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
            b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
            b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
            b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        }
    }
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn ip_addrs(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let a = |i: usize| Ipv4Addr::new(frame[i], frame[i + 1], frame[i + 2], frame[i + 3]);
    (a(ETH_LEN + 12), a(ETH_LEN + 16))
}

/// Rewrites the IPv4 header checksum of `frame` (header at [`ETH_LEN`]).
fn fix_ip_checksum(frame: &mut [u8], ihl: usize) {
    put16(frame, ETH_LEN + 10, 0);
    let sum = !checksum::data(&frame[ETH_LEN..ETH_LEN + ihl]);
    put16(frame, ETH_LEN + 10, sum);
}

/// Rewrites the TCP or UDP checksum of `frame`, whose L4 header starts at
/// `l4` and whose checksum field is at `l4 + field`.
fn fix_l4_checksum(frame: &mut [u8], l4: usize, field: usize, protocol: IpProtocol) {
    let (src, dst) = ip_addrs(frame);
    put16(frame, l4 + field, 0);
    let len = frame.len() - l4;
    let pseudo = checksum::pseudo_header_v4(&src, &dst, protocol, len as u32);
    let mut sum = !checksum::combine(&[pseudo, checksum::data(&frame[l4..])]);
    if sum == 0 && protocol == IpProtocol::Udp {
        sum = 0xffff;
    }
    put16(frame, l4 + field, sum);
}

/// The IPv4 header of an Ethernet frame: its length and protocol.
fn ipv4_header(frame: &[u8]) -> Result<(usize, IpProtocol), OffloadError> {
    let truncated = OffloadError::Truncated { len: frame.len() };
    if frame.len() < ETH_LEN + 20 {
        return Err(truncated);
    }
    let protocol = IpProtocol::from(frame[ETH_LEN + 9]);
    if be16(frame, 12) != 0x0800 || frame[ETH_LEN] >> 4 != 4 {
        return Err(OffloadError::NotIpv4(protocol));
    }
    let ihl = usize::from(frame[ETH_LEN] & 0x0f) * 4;
    if ihl < 20 || frame.len() < ETH_LEN + ihl {
        return Err(truncated);
    }
    Ok((ihl, protocol))
}

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
    /// A malformed read yields an error and no frame.
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
            GSO_TCPV4 => self.split_tcp4(frame, hdr.gso_size, each),
            GSO_UDP_L4 => self.split_udp4(frame, hdr.gso_size, each),
            other => Err(OffloadError::UnsupportedGso(other)),
        }
    }

    fn split_tcp4(
        &mut self,
        frame: &[u8],
        mss: u16,
        mut each: impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let (ihl, protocol) = ipv4_header(frame)?;
        if protocol != IpProtocol::Tcp {
            return Err(OffloadError::NotIpv4(protocol));
        }
        let l4 = ETH_LEN + ihl;
        let truncated = OffloadError::Truncated { len: frame.len() };
        if frame.len() < l4 + 20 {
            return Err(truncated);
        }
        let doff = usize::from(frame[l4 + 12] >> 4) * 4;
        let headers = l4 + doff;
        if doff < 20 || frame.len() < headers {
            return Err(truncated);
        }
        if mss == 0 {
            return Err(OffloadError::ZeroSegmentSize);
        }
        let mss = usize::from(mss);
        let seq = be32(frame, l4 + 4);
        let id = be16(frame, ETH_LEN + 4);
        let flags = frame[l4 + 13];
        let payload = &frame[headers..];
        let count = payload.len().div_ceil(mss).max(1);
        for i in 0..count {
            let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
            let buf = &mut self.buf;
            buf.clear();
            buf.extend_from_slice(&frame[..headers]);
            buf.extend_from_slice(chunk);
            put16(buf, ETH_LEN + 2, (ihl + doff + chunk.len()) as u16);
            put16(buf, ETH_LEN + 4, id.wrapping_add(i as u16));
            fix_ip_checksum(buf, ihl);
            let s = seq.wrapping_add((i * mss) as u32);
            buf[l4 + 4..l4 + 8].copy_from_slice(&s.to_be_bytes());
            let mut f = flags;
            if i + 1 < count {
                f &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                f &= !TCP_CWR;
            }
            buf[l4 + 13] = f;
            fix_l4_checksum(buf, l4, 16, IpProtocol::Tcp);
            each(buf);
        }
        Ok(count)
    }

    fn split_udp4(
        &mut self,
        frame: &[u8],
        size: u16,
        mut each: impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let (ihl, protocol) = ipv4_header(frame)?;
        if protocol != IpProtocol::Udp {
            return Err(OffloadError::NotIpv4(protocol));
        }
        let l4 = ETH_LEN + ihl;
        let headers = l4 + 8;
        if frame.len() < headers {
            return Err(OffloadError::Truncated { len: frame.len() });
        }
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
            put16(buf, ETH_LEN + 2, (ihl + 8 + chunk.len()) as u16);
            put16(buf, ETH_LEN + 4, id.wrapping_add(i as u16));
            fix_ip_checksum(buf, ihl);
            put16(buf, l4 + 4, (8 + chunk.len()) as u16);
            fix_l4_checksum(buf, l4, 6, IpProtocol::Udp);
            each(buf);
        }
        Ok(count)
    }
}

/// Completes a partial checksum in place: the field at `start + offset`
/// holds the pseudo-header sum; the checksum covers `start..`.
fn complete_checksum(frame: &mut [u8], start: u16, offset: u16) -> Result<(), OffloadError> {
    let (s, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    if at + 2 > frame.len() || s > frame.len() {
        return Err(OffloadError::ChecksumOutside {
            start,
            offset,
            len: frame.len(),
        });
    }
    let mut sum = !checksum::data(&frame[s..]);
    if sum == 0 && offset == 6 {
        // UDP: a computed zero is sent as all ones (RFC 768).
        sum = 0xffff;
    }
    put16(frame, at, sum);
    Ok(())
}

/// The run of segments being merged.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// IPv4 header length.
    ihl: usize,
    /// TCP header length.
    doff: usize,
    /// Payload bytes of the first segment: every one but the last has it.
    mss: usize,
    /// Sequence number the next segment must have.
    next_seq: u32,
    segments: u16,
    /// A short or PSH segment ended the run.
    closed: bool,
}

/// Merges frames for the guest into super-frames; keeps its buffer between
/// calls, so that steady state allocates nothing.
///
/// Use: [`Coalescer::push`] frames in order; when it returns `false`, write
/// [`Coalescer::finish`] to the TAP and push the frame again (an empty
/// coalescer takes any frame).
#[derive(Debug)]
pub struct Coalescer {
    /// The virtio-net header room, then the (merged) frame.
    buf: Vec<u8>,
    /// `None` with a frame in `buf`: a frame that merges with nothing.
    run: Option<Run>,
    /// `buf` was handed out by [`Coalescer::finish`].
    finished: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

/// A TCPv4 segment that may be merged: header lengths and payload length.
fn mergeable(frame: &[u8]) -> Option<(usize, usize, usize)> {
    let (ihl, protocol) = ipv4_header(frame).ok()?;
    // No IP options (a merged header would repeat them), no fragments.
    if ihl != 20 || protocol != IpProtocol::Tcp || be16(frame, ETH_LEN + 6) & 0x3fff != 0 {
        return None;
    }
    let l4 = ETH_LEN + ihl;
    let total = usize::from(be16(frame, ETH_LEN + 2));
    if frame.len() < l4 + 20 || total < ihl + 20 || ETH_LEN + total > frame.len() {
        return None;
    }
    let doff = usize::from(frame[l4 + 12] >> 4) * 4;
    let flags = frame[l4 + 13];
    if doff < 20 || ihl + doff > total || flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0
    {
        return None;
    }
    let len = total - ihl - doff;
    (len > 0).then_some((ihl, doff, len))
}

impl Coalescer {
    /// An empty coalescer.
    pub fn new() -> Coalescer {
        Coalescer {
            buf: Vec::with_capacity(MAX_READ),
            run: None,
            finished: false,
        }
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.finished || self.buf.is_empty()
    }

    /// Offers the next frame for the guest; `false` if it cannot join the
    /// frame held (write [`Coalescer::finish`] out, then push it again).
    pub fn push(&mut self, frame: &[u8]) -> bool {
        if self.finished {
            self.buf.clear();
            self.finished = false;
        }
        if self.buf.is_empty() {
            self.buf.resize(VNET_HDR_LEN, 0);
            self.run = mergeable(frame).map(|(ihl, doff, len)| {
                let l4 = ETH_LEN + ihl;
                let end = ETH_LEN + ihl + doff + len;
                self.buf.extend_from_slice(&frame[..end]);
                Run {
                    ihl,
                    doff,
                    mss: len,
                    next_seq: be32(frame, l4 + 4).wrapping_add(len as u32),
                    segments: 1,
                    closed: frame[l4 + 13] & TCP_PSH != 0,
                }
            });
            if self.run.is_none() {
                self.buf.extend_from_slice(frame);
            }
            return true;
        }
        let Some(run) = self.run.as_mut() else {
            return false;
        };
        if run.closed || run.segments >= MAX_MERGE {
            return false;
        }
        let Some((ihl, doff, len)) = mergeable(frame) else {
            return false;
        };
        let held = &self.buf[VNET_HDR_LEN..];
        let l4 = ETH_LEN + ihl;
        let headers = l4 + doff;
        if ihl != run.ihl
            || doff != run.doff
            || len > run.mss
            || held.len() - ETH_LEN + len > 65535
            || be32(frame, l4 + 4) != run.next_seq
            // Ethernet header, TOS, DF, TTL, protocol, addresses.
            || frame[..ETH_LEN + 2] != held[..ETH_LEN + 2]
            || frame[ETH_LEN + 6..ETH_LEN + 10] != held[ETH_LEN + 6..ETH_LEN + 10]
            || frame[ETH_LEN + 12..l4] != held[ETH_LEN + 12..l4]
            // Ports; then ACK number, header length, window; then options.
            || frame[l4..l4 + 4] != held[l4..l4 + 4]
            || frame[l4 + 8..l4 + 13] != held[l4 + 8..l4 + 13]
            || frame[l4 + 14..l4 + 16] != held[l4 + 14..l4 + 16]
            || frame[l4 + 20..headers] != held[l4 + 20..headers]
        {
            return false;
        }
        self.buf.extend_from_slice(&frame[headers..headers + len]);
        run.next_seq = run.next_seq.wrapping_add(len as u32);
        run.segments += 1;
        let psh = frame[l4 + 13] & TCP_PSH != 0;
        if psh {
            let at = VNET_HDR_LEN + l4 + 13;
            self.buf[at] |= TCP_PSH;
        }
        run.closed = psh || len < run.mss;
        true
    }

    /// The frame held, with its virtio-net header, ready for one TAP write;
    /// empties the coalescer. Empty if nothing is held.
    pub fn finish(&mut self) -> &[u8] {
        let run = self.run.take();
        if self.is_empty() {
            self.buf.clear();
            self.finished = false;
            return &[];
        }
        let mut hdr = VnetHdr::default();
        if let Some(run) = run.filter(|r| r.segments > 1) {
            let frame = &mut self.buf[VNET_HDR_LEN..];
            let l4 = ETH_LEN + run.ihl;
            put16(frame, ETH_LEN + 2, (frame.len() - ETH_LEN) as u16);
            fix_ip_checksum(frame, run.ihl);
            let (src, dst) = ip_addrs(frame);
            let tcp_len = (frame.len() - l4) as u32;
            // Partial checksum: the pseudo-header sum, not complemented.
            let pseudo = checksum::pseudo_header_v4(&src, &dst, IpProtocol::Tcp, tcp_len);
            put16(frame, l4 + 16, pseudo);
            hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: (l4 + run.doff) as u16,
                gso_size: run.mss as u16,
                csum_start: l4 as u16,
                csum_offset: 16,
            };
        }
        hdr.emit(&mut self.buf);
        // Emptied at the next push, after the caller has written it out.
        self.finished = true;
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket, UdpPacket};

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 11);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 12);

    /// An Ethernet+IPv4+TCP frame with `options` and `payload`; checksums
    /// are left zero (a super-frame's are partial anyway).
    fn tcp_frame(seq: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let doff = 20 + options.len();
        let mut f = vec![0u8; ETH_LEN + 20 + doff];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        put16(&mut f, 12, 0x0800);
        let ip = ETH_LEN;
        f[ip] = 0x45;
        put16(&mut f, ip + 2, (20 + doff + payload.len()) as u16);
        put16(&mut f, ip + 4, 0x1234);
        put16(&mut f, ip + 6, 0x4000); // DF
        f[ip + 8] = 64;
        f[ip + 9] = 6;
        f[ip + 12..ip + 16].copy_from_slice(&SRC.octets());
        f[ip + 16..ip + 20].copy_from_slice(&DST.octets());
        let t = ip + 20;
        put16(&mut f, t, 40000);
        put16(&mut f, t + 2, 5201);
        f[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        f[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
        f[t + 12] = ((doff / 4) as u8) << 4;
        f[t + 13] = flags;
        put16(&mut f, t + 14, 512);
        f[t + 20..t + doff].copy_from_slice(options);
        f.extend_from_slice(payload);
        f
    }

    fn with_hdr(hdr: VnetHdr, frame: &[u8]) -> Vec<u8> {
        let mut read = vec![0u8; VNET_HDR_LEN];
        hdr.emit(&mut read);
        read.extend_from_slice(frame);
        read
    }

    fn tso(mss: u16, doff: usize) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: (ETH_LEN + 20 + doff) as u16,
            gso_size: mss,
            csum_start: (ETH_LEN + 20) as u16,
            csum_offset: 16,
        }
    }

    /// Checks that a frame's IPv4 and TCP checksums are right.
    fn assert_valid_tcp(frame: &[u8]) -> (u32, u8, Vec<u8>) {
        let ip = Ipv4Packet::new_checked(&frame[ETH_LEN..]).unwrap();
        assert!(ip.verify_checksum(), "IPv4 checksum");
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(
            tcp.verify_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST)),
            "TCP checksum"
        );
        (
            tcp.seq_number().0 as u32,
            frame[ETH_LEN + 20 + 13],
            tcp.payload().to_vec(),
        )
    }

    fn split_all(read: &mut [u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut seg = Segmenter::new();
        let mut out = Vec::new();
        seg.split(read, |f| out.push(f.to_vec()))?;
        Ok(out)
    }

    const TCP_SYN: u8 = 0x02;
    const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// TSO then GRO: segments are valid, in order, no larger than the
        /// MSS, flags placed right; merged back they give the super-frame.
        #[test]
        fn segment_then_coalesce_round_trips(
            len in 1usize..20_000,
            mss in 200u16..1460,
            psh in any::<bool>(),
            options in any::<bool>(),
            seq in any::<u32>(),
            seed in any::<u8>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let opts: &[u8] = if options { &TIMESTAMPS } else { &[] };
            let flags = TCP_ACK | if psh { TCP_PSH } else { 0 };
            let frame = tcp_frame(seq, flags, opts, &payload);
            let mut read = with_hdr(tso(mss, 20 + opts.len()), &frame);
            let segments = split_all(&mut read).unwrap();
            prop_assert_eq!(segments.len(), len.div_ceil(usize::from(mss)));
            let mut joined = Vec::new();
            for (i, s) in segments.iter().enumerate() {
                let (sseq, f, p) = assert_valid_tcp(s);
                prop_assert!(p.len() <= usize::from(mss));
                prop_assert_eq!(sseq, seq.wrapping_add(joined.len() as u32));
                let last = i + 1 == segments.len();
                prop_assert_eq!(f & TCP_PSH != 0, psh && last);
                joined.extend_from_slice(&p);
            }
            prop_assert_eq!(&joined, &payload);

            let mut gro = Coalescer::new();
            let mut outputs = Vec::new();
            for s in &segments {
                if !gro.push(s) {
                    outputs.push(gro.finish().to_vec());
                    prop_assert!(gro.push(s));
                }
            }
            outputs.push(gro.finish().to_vec());
            prop_assert_eq!(outputs.len(), segments.len().div_ceil(usize::from(MAX_MERGE)));
            let mut merged_payload = Vec::new();
            for out in &outputs {
                let hdr = VnetHdr::parse(out).unwrap();
                let mut frame = out[VNET_HDR_LEN..].to_vec();
                if hdr.gso_type == GSO_TCPV4 {
                    prop_assert_eq!(hdr.gso_size, mss);
                    prop_assert_eq!(usize::from(hdr.hdr_len), ETH_LEN + 20 + 20 + opts.len());
                    complete_checksum(&mut frame, hdr.csum_start, hdr.csum_offset).unwrap();
                } else {
                    prop_assert_eq!(hdr, VnetHdr::default());
                }
                let (_, _, p) = assert_valid_tcp(&frame);
                merged_payload.extend_from_slice(&p);
            }
            prop_assert_eq!(merged_payload, payload);
        }

        /// Arbitrary reads never panic the segmenter or the coalescer.
        #[test]
        fn arbitrary_reads_are_handled(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut read = bytes.clone();
            let mut gro = Coalescer::new();
            let mut seg = Segmenter::new();
            let _ = seg.split(&mut read, |f| {
                if !gro.push(f) {
                    let _ = gro.finish();
                    assert!(gro.push(f));
                }
            });
            let _ = gro.finish();
        }
    }

    #[test]
    fn header_round_trips() {
        let hdr = tso(1400, 32);
        let mut b = [0u8; VNET_HDR_LEN];
        hdr.emit(&mut b);
        assert_eq!(VnetHdr::parse(&b), Ok(hdr));
        assert_eq!(
            VnetHdr::parse(&b[..9]),
            Err(OffloadError::Truncated { len: 9 })
        );
    }

    #[test]
    fn partial_checksums_are_completed() {
        let frame = tcp_frame(5, TCP_ACK | TCP_PSH, &[], b"hello, partial checksum");
        let mut partial = frame.clone();
        let l4 = ETH_LEN + 20;
        let tcp_len = (frame.len() - l4) as u32;
        put16(
            &mut partial,
            l4 + 16,
            checksum::pseudo_header_v4(&SRC, &DST, IpProtocol::Tcp, tcp_len),
        );
        fix_ip_checksum(&mut partial, 20);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: l4 as u16,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let out = split_all(&mut with_hdr(hdr, &partial)).unwrap();
        assert_eq!(out.len(), 1);
        assert_valid_tcp(&out[0]);

        let bad = VnetHdr {
            csum_start: 60,
            csum_offset: 200,
            ..hdr
        };
        assert!(matches!(
            split_all(&mut with_hdr(bad, &partial)),
            Err(OffloadError::ChecksumOutside { .. })
        ));
    }

    #[test]
    fn udp_super_frames_are_cut() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut f = tcp_frame(0, 0, &[], &[]);
        f.truncate(ETH_LEN + 20);
        f[ETH_LEN + 9] = 17;
        f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 0]);
        f.extend_from_slice(&payload);
        put16(&mut f, ETH_LEN + 2, (20 + 8 + payload.len()) as u16);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (ETH_LEN + 28) as u16,
            gso_size: 1200,
            csum_start: (ETH_LEN + 20) as u16,
            csum_offset: 6,
        };
        let out = split_all(&mut with_hdr(hdr, &f)).unwrap();
        assert_eq!(out.len(), 3);
        let mut joined = Vec::new();
        for s in &out {
            let ip = Ipv4Packet::new_checked(&s[ETH_LEN..]).unwrap();
            assert!(ip.verify_checksum());
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(udp.verify_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST)));
            assert_eq!(usize::from(udp.len()), 8 + udp.payload().len());
            joined.extend_from_slice(udp.payload());
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn bad_super_frames_are_refused() {
        let frame = tcp_frame(1, TCP_ACK, &[], &[0; 3000]);
        let zero = VnetHdr {
            gso_size: 0,
            ..tso(0, 20)
        };
        assert_eq!(
            split_all(&mut with_hdr(zero, &frame)),
            Err(OffloadError::ZeroSegmentSize)
        );
        let v6 = VnetHdr {
            gso_type: GSO_TCPV6,
            ..tso(1000, 20)
        };
        assert_eq!(
            split_all(&mut with_hdr(v6, &frame)),
            Err(OffloadError::UnsupportedGso(GSO_TCPV6))
        );
        assert!(matches!(
            split_all(&mut with_hdr(tso(1000, 20), &frame[..40])),
            Err(OffloadError::Truncated { .. })
        ));
        let mut udp = frame.clone();
        udp[ETH_LEN + 9] = 17;
        assert_eq!(
            split_all(&mut with_hdr(tso(1000, 20), &udp)),
            Err(OffloadError::NotIpv4(IpProtocol::Udp))
        );
    }

    #[test]
    fn only_what_gro_would_merge_is_merged() {
        let seg = |seq: u32, flags: u8, len: usize| {
            let mut f = tcp_frame(seq, flags, &[], &vec![7u8; len]);
            fix_ip_checksum(&mut f, 20);
            fix_l4_checksum(&mut f, ETH_LEN + 20, 16, IpProtocol::Tcp);
            f
        };
        let mut gro = Coalescer::new();
        assert!(gro.push(&seg(1000, TCP_ACK, 100)));
        // A gap in the sequence.
        assert!(!gro.push(&seg(1200, TCP_ACK, 100)));
        // Contiguous: merged; a shorter one closes the run.
        assert!(gro.push(&seg(1100, TCP_ACK, 100)));
        assert!(gro.push(&seg(1200, TCP_ACK, 50)));
        assert!(!gro.push(&seg(1250, TCP_ACK, 100)));
        let out = gro.finish().to_vec();
        let hdr = VnetHdr::parse(&out).unwrap();
        assert_eq!((hdr.gso_type, hdr.gso_size), (GSO_TCPV4, 100));
        assert_eq!(out.len(), VNET_HDR_LEN + ETH_LEN + 40 + 250);

        // Another flow, a SYN, a different ACK number: not merged.
        assert!(gro.push(&seg(1, TCP_ACK, 100)));
        let mut other_port = seg(101, TCP_ACK, 100);
        put16(&mut other_port, ETH_LEN + 22, 5202);
        assert!(!gro.push(&other_port));
        assert!(!gro.push(&seg(101, TCP_SYN | TCP_ACK, 100)));
        let mut other_ack = seg(101, TCP_ACK, 100);
        other_ack[ETH_LEN + 20 + 11] ^= 1;
        assert!(!gro.push(&other_ack));
        // A PSH segment is merged and ends the run.
        assert!(gro.push(&seg(101, TCP_ACK | TCP_PSH, 100)));
        assert!(!gro.push(&seg(201, TCP_ACK, 100)));
        let out = gro.finish().to_vec();
        assert_eq!(out[VNET_HDR_LEN + ETH_LEN + 20 + 13], TCP_ACK | TCP_PSH);

        // Anything that is not TCP data stands alone.
        assert!(gro.push(&seg(1, TCP_ACK, 0)));
        assert!(!gro.push(&seg(1, TCP_ACK, 0)));
        assert_eq!(VnetHdr::parse(gro.finish()).unwrap(), VnetHdr::default());
        assert!(gro.is_empty());
        assert!(gro.finish().is_empty());
    }
}
