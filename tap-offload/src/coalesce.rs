//! Merging TCPv4 segments for the guest into super-frames (GRO).

use crate::checksum;
use crate::{
    ETH_LEN, F_NEEDS_CSUM, GSO_TCPV4, MAX_MERGE, MAX_READ, PROTO_TCP, TCP_ACK, TCP_PSH,
    VNET_HDR_LEN, VnetHdr, be16, be32, ipv4_header, put16,
};

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
    if ihl != 20 || protocol != PROTO_TCP || be16(frame, ETH_LEN + 6) & 0x3fff != 0 {
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
            checksum::fix_ip(frame, run.ihl);
            let (src, dst) = checksum::ip_addrs(frame);
            let tcp_len = (frame.len() - l4) as u32;
            // Partial checksum: the pseudo-header sum, not complemented.
            let pseudo = checksum::pseudo_header_v4(&src, &dst, PROTO_TCP, tcp_len);
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
        self.buf[..VNET_HDR_LEN].copy_from_slice(&hdr.to_bytes());
        // Emptied at the next push, after the caller has written it out.
        self.finished = true;
        &self.buf
    }
}
