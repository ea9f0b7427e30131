//! Merging TCPv4 segments and UDPv4 datagrams for the guest into
//! super-frames (GRO).

use crate::checksum;
use crate::{
    ETH_LEN, F_NEEDS_CSUM, GSO_TCPV4, GSO_UDP_L4, MAX_MERGE, MAX_READ, PROTO_TCP, PROTO_UDP,
    TCP_ACK, TCP_PSH, VNET_HDR_LEN, VnetHdr, be16, be32, ipv4_header, put16,
};

/// The run of segments being merged.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// IPv4 header length.
    ihl: usize,
    /// Transport header length: TCP's data offset, or 8 for UDP.
    doff: usize,
    /// Payload bytes of the first segment: every one but the last has it.
    mss: usize,
    /// TCP: the sequence number the next segment must have. `None`: UDP.
    next_seq: Option<u32>,
    segments: u16,
    /// A short (or, for TCP, PSH) segment ended the run.
    closed: bool,
}

/// Merges frames for the guest into super-frames; keeps its buffer between
/// calls, so that steady state allocates nothing.
///
/// Use: [`Coalescer::push`] frames in order; when it returns `false`, write
/// [`Coalescer::finish`] to the TAP and push the frame again (an empty
/// coalescer takes any frame).
///
/// TCPv4 segments are always merged (every offload TAP takes TSO
/// frames); UDPv4 datagrams only after [`Coalescer::merge_udp`], for a TAP
/// whose kernel took the USO offloads (Linux 6.2 and later: older ones
/// refuse the write).
#[derive(Debug)]
pub struct Coalescer {
    /// The virtio-net header room, then the (merged) frame.
    buf: Vec<u8>,
    /// `None` with a frame in `buf`: a frame that merges with nothing.
    run: Option<Run>,
    /// `buf` was handed out by [`Coalescer::finish`].
    finished: bool,
    /// UDPv4 datagrams are merged too.
    udp: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

/// A TCPv4 segment or (with `udp`) a UDPv4 datagram that may be merged:
/// header lengths, payload length and whether it is TCP.
fn mergeable(frame: &[u8], udp: bool) -> Option<(usize, usize, usize, bool)> {
    let (ihl, protocol) = ipv4_header(frame).ok()?;
    // No IP options (a merged header would repeat them), no fragments.
    if ihl != 20 || be16(frame, ETH_LEN + 6) & 0x3fff != 0 {
        return None;
    }
    let l4 = ETH_LEN + ihl;
    let total = usize::from(be16(frame, ETH_LEN + 2));
    if protocol == PROTO_UDP && udp {
        // Linux's UDP GRO: the UDP length is the IP payload's (no padded
        // datagram), the checksum is not zero, there is a payload.
        if ETH_LEN + total > frame.len() || total < ihl + 8 {
            return None;
        }
        let len = usize::from(be16(frame, l4 + 4));
        let merge = len == total - ihl && be16(frame, l4 + 6) != 0 && len > 8;
        return merge.then_some((ihl, 8, len - 8, false));
    }
    if protocol != PROTO_TCP {
        return None;
    }
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
    (len > 0).then_some((ihl, doff, len, true))
}

impl Coalescer {
    /// An empty coalescer.
    pub fn new() -> Coalescer {
        Coalescer {
            buf: Vec::with_capacity(MAX_READ),
            run: None,
            finished: false,
            udp: false,
        }
    }

    /// Merges UDPv4 datagrams of one flow too (as Linux's UDP GRO: same
    /// addresses, ports, TOS, TTL and DF; equal sizes but the last; a
    /// non-zero checksum; at most [`MAX_MERGE`]), written as USO
    /// super-frames. Only for a TAP that took the USO offloads; the
    /// guest's kernel cuts them again for a socket that does not ask for
    /// GRO. Off by default.
    pub fn merge_udp(&mut self, on: bool) -> &mut Coalescer {
        self.udp = on;
        self
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
            self.run = mergeable(frame, self.udp).map(|(ihl, doff, len, tcp)| {
                let l4 = ETH_LEN + ihl;
                let end = ETH_LEN + ihl + doff + len;
                self.buf.extend_from_slice(&frame[..end]);
                Run {
                    ihl,
                    doff,
                    mss: len,
                    next_seq: tcp.then(|| be32(frame, l4 + 4).wrapping_add(len as u32)),
                    segments: 1,
                    closed: tcp && frame[l4 + 13] & TCP_PSH != 0,
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
        let Some((ihl, doff, len, tcp)) = mergeable(frame, self.udp) else {
            return false;
        };
        let held = &self.buf[VNET_HDR_LEN..];
        let l4 = ETH_LEN + ihl;
        let headers = l4 + doff;
        if ihl != run.ihl
            || doff != run.doff
            || tcp != run.next_seq.is_some()
            || len > run.mss
            || held.len() - ETH_LEN + len > 65535
            // Ethernet header, TOS, DF, TTL, protocol, addresses.
            || frame[..ETH_LEN + 2] != held[..ETH_LEN + 2]
            || frame[ETH_LEN + 6..ETH_LEN + 10] != held[ETH_LEN + 6..ETH_LEN + 10]
            || frame[ETH_LEN + 12..l4] != held[ETH_LEN + 12..l4]
            // Ports.
            || frame[l4..l4 + 4] != held[l4..l4 + 4]
        {
            return false;
        }
        if let Some(next_seq) = run.next_seq {
            // Sequence; ACK number, header length, window; options.
            if be32(frame, l4 + 4) != next_seq
                || frame[l4 + 8..l4 + 13] != held[l4 + 8..l4 + 13]
                || frame[l4 + 14..l4 + 16] != held[l4 + 14..l4 + 16]
                || frame[l4 + 20..headers] != held[l4 + 20..headers]
            {
                return false;
            }
            run.next_seq = Some(next_seq.wrapping_add(len as u32));
        }
        self.buf.extend_from_slice(&frame[headers..headers + len]);
        run.segments += 1;
        let psh = tcp && frame[l4 + 13] & TCP_PSH != 0;
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
            let l4_len = frame.len() - l4;
            let (protocol, gso_type, csum_offset) = match run.next_seq {
                Some(_) => (PROTO_TCP, GSO_TCPV4, 16),
                None => {
                    // The UDP length covers the merged payload, as after
                    // the kernel's own UDP GRO.
                    put16(frame, l4 + 4, l4_len as u16);
                    (PROTO_UDP, GSO_UDP_L4, 6)
                }
            };
            // Partial checksum: the pseudo-header sum, not complemented.
            let pseudo = checksum::pseudo_header_v4(&src, &dst, protocol, l4_len as u32);
            put16(frame, l4 + csum_offset, pseudo);
            hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type,
                hdr_len: (l4 + run.doff) as u16,
                gso_size: run.mss as u16,
                csum_start: l4 as u16,
                csum_offset: csum_offset as u16,
            };
        }
        self.buf[..VNET_HDR_LEN].copy_from_slice(&hdr.to_bytes());
        // Emptied at the next push, after the caller has written it out.
        self.finished = true;
        &self.buf
    }
}
