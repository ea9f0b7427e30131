//! Merging TCP segments and UDP datagrams for the guest into super-frames
//! (GRO), over IPv4 and IPv6.

use crate::checksum;
use crate::{
    ETH_LEN, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, IPV6_LEN, MAX_MERGE, MAX_READ,
    PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_PSH, VNET_HDR_LEN, VnetHdr, be16, be32, ipv4_header,
    ipv6_header, put16,
};

/// What [`mergeable`] found in a frame that may be merged.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// IP header length: 20 (IPv4 without options) or 40 (IPv6 without
    /// extension headers).
    ip_len: usize,
    /// Transport header length: TCP's data offset, or 8 for UDP.
    doff: usize,
    /// Payload bytes.
    len: usize,
    tcp: bool,
}

impl Segment {
    fn v6(&self) -> bool {
        self.ip_len == IPV6_LEN
    }
}

/// The run of segments being merged.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// The first segment's shape (its `len` is the run's segment size:
    /// every one but the last has it).
    first: Segment,
    /// TCP: the sequence number the next segment must have.
    next_seq: u32,
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
/// TCP segments (IPv4 and IPv6) are always merged (every offload TAP takes
/// TSO frames); UDP datagrams only after [`Coalescer::merge_udp`], for a
/// TAP whose kernel took the USO offloads (Linux 6.2 and later: older ones
/// refuse the write).
#[derive(Debug)]
pub struct Coalescer {
    /// The virtio-net header room, then the (merged) frame.
    buf: Vec<u8>,
    /// `None` with a frame in `buf`: a frame that merges with nothing.
    run: Option<Run>,
    /// `buf` was handed out by [`Coalescer::finish`].
    finished: bool,
    /// UDP datagrams are merged too.
    udp: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

/// DHCP and DHCPv6 ports: their clients read through packet sockets,
/// which see a merged frame whole, so their datagrams are never merged.
const DHCP_PORTS: [u16; 4] = [67, 68, 546, 547];

/// A TCP segment or (with `udp`) a UDP datagram, over IPv4 without
/// options or IPv6 without extension headers, that may be merged.
fn mergeable(frame: &[u8], udp: bool) -> Option<Segment> {
    let (ip_len, protocol, total) = if frame.len() >= ETH_LEN + 2 && be16(frame, 12) == 0x86dd {
        let (ip_len, next) = ipv6_header(frame).ok()?;
        (ip_len, next, ip_len + usize::from(be16(frame, ETH_LEN + 4)))
    } else {
        let (ihl, protocol) = ipv4_header(frame).ok()?;
        // No IP options (a merged header would repeat them), no fragments.
        if ihl != 20 || be16(frame, ETH_LEN + 6) & 0x3fff != 0 {
            return None;
        }
        (ihl, protocol, usize::from(be16(frame, ETH_LEN + 2)))
    };
    let l4 = ETH_LEN + ip_len;
    if ETH_LEN + total > frame.len() {
        return None;
    }
    if protocol == PROTO_UDP && udp {
        // Linux's UDP GRO: the UDP length is the IP payload's (no padded
        // datagram), the checksum is not zero, there is a payload.
        if total < ip_len + 8 {
            return None;
        }
        let len = usize::from(be16(frame, l4 + 4));
        let dhcp = [be16(frame, l4), be16(frame, l4 + 2)]
            .iter()
            .any(|p| DHCP_PORTS.contains(p));
        let merge = len == total - ip_len && be16(frame, l4 + 6) != 0 && len > 8 && !dhcp;
        return merge.then_some(Segment {
            ip_len,
            doff: 8,
            len: len - 8,
            tcp: false,
        });
    }
    if protocol != PROTO_TCP || total < ip_len + 20 {
        return None;
    }
    let doff = usize::from(frame[l4 + 12] >> 4) * 4;
    let flags = frame[l4 + 13];
    if doff < 20
        || ip_len + doff > total
        || flags & !(TCP_ACK | TCP_PSH) != 0
        || flags & TCP_ACK == 0
    {
        return None;
    }
    let len = total - ip_len - doff;
    (len > 0).then_some(Segment {
        ip_len,
        doff,
        len,
        tcp: true,
    })
}

/// Whether two frames' Ethernet and IP headers allow a merge: the same but
/// for the lengths, IPv4's ID and header checksum (so the same TOS or
/// traffic class, DF, TTL or hop limit, flow label, protocol, addresses).
fn same_ip(frame: &[u8], held: &[u8], v6: bool) -> bool {
    if v6 {
        frame[..ETH_LEN + 4] == held[..ETH_LEN + 4]
            && frame[ETH_LEN + 6..ETH_LEN + IPV6_LEN] == held[ETH_LEN + 6..ETH_LEN + IPV6_LEN]
    } else {
        frame[..ETH_LEN + 2] == held[..ETH_LEN + 2]
            && frame[ETH_LEN + 6..ETH_LEN + 10] == held[ETH_LEN + 6..ETH_LEN + 10]
            && frame[ETH_LEN + 12..ETH_LEN + 20] == held[ETH_LEN + 12..ETH_LEN + 20]
    }
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

    /// Merges UDP datagrams of one flow too (as Linux's UDP GRO: same
    /// addresses, ports, TOS or traffic class, TTL or hop limit, DF or flow
    /// label; equal sizes but the last; a non-zero checksum; at most
    /// [`MAX_MERGE`]), written as USO super-frames. Only for a TAP that
    /// took the USO offloads; the guest's kernel cuts them again for a
    /// socket that does not ask for GRO. DHCP datagrams (ports 67, 68,
    /// 546, 547) are never merged: DHCP clients read through packet
    /// sockets, which would see the merged frame whole. Off by default.
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
            self.run = mergeable(frame, self.udp).map(|first| {
                let l4 = ETH_LEN + first.ip_len;
                self.buf
                    .extend_from_slice(&frame[..l4 + first.doff + first.len]);
                Run {
                    first,
                    next_seq: if first.tcp {
                        be32(frame, l4 + 4).wrapping_add(first.len as u32)
                    } else {
                        0
                    },
                    segments: 1,
                    closed: first.tcp && frame[l4 + 13] & TCP_PSH != 0,
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
        let Some(seg) = mergeable(frame, self.udp) else {
            return false;
        };
        let first = run.first;
        let held = &self.buf[VNET_HDR_LEN..];
        let l4 = ETH_LEN + seg.ip_len;
        let headers = l4 + seg.doff;
        if seg.ip_len != first.ip_len
            || seg.doff != first.doff
            || seg.tcp != first.tcp
            || seg.len > first.len
            // At most 64 KiB of IP in all (one TAP read's worth).
            || held.len() - ETH_LEN + seg.len > 65535
            || !same_ip(frame, held, seg.v6())
            // Ports.
            || frame[l4..l4 + 4] != held[l4..l4 + 4]
        {
            return false;
        }
        if seg.tcp {
            // Sequence; ACK number, header length, window; options.
            if be32(frame, l4 + 4) != run.next_seq
                || frame[l4 + 8..l4 + 13] != held[l4 + 8..l4 + 13]
                || frame[l4 + 14..l4 + 16] != held[l4 + 14..l4 + 16]
                || frame[l4 + 20..headers] != held[l4 + 20..headers]
            {
                return false;
            }
            run.next_seq = run.next_seq.wrapping_add(seg.len as u32);
        }
        self.buf
            .extend_from_slice(&frame[headers..headers + seg.len]);
        run.segments += 1;
        let psh = seg.tcp && frame[l4 + 13] & TCP_PSH != 0;
        if psh {
            let at = VNET_HDR_LEN + l4 + 13;
            self.buf[at] |= TCP_PSH;
        }
        run.closed = psh || seg.len < first.len;
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
            let first = run.first;
            let frame = &mut self.buf[VNET_HDR_LEN..];
            let l4 = ETH_LEN + first.ip_len;
            let l4_len = frame.len() - l4;
            let (protocol, csum_offset) = if first.tcp {
                (PROTO_TCP, 16)
            } else {
                // The UDP length covers the merged payload, as after the
                // kernel's own UDP GRO.
                put16(frame, l4 + 4, l4_len as u16);
                (PROTO_UDP, 6)
            };
            // Partial checksum: the pseudo-header sum, not complemented.
            let (pseudo, gso_type) = if first.v6() {
                put16(frame, ETH_LEN + 4, l4_len as u16);
                let (src, dst) = checksum::ip6_addrs(frame);
                let pseudo = checksum::pseudo_header_v6(&src, &dst, protocol, l4_len as u32);
                (pseudo, if first.tcp { GSO_TCPV6 } else { GSO_UDP_L4 })
            } else {
                put16(frame, ETH_LEN + 2, (frame.len() - ETH_LEN) as u16);
                checksum::fix_ip(frame, first.ip_len);
                let (src, dst) = checksum::ip_addrs(frame);
                let pseudo = checksum::pseudo_header_v4(&src, &dst, protocol, l4_len as u32);
                (pseudo, if first.tcp { GSO_TCPV4 } else { GSO_UDP_L4 })
            };
            put16(frame, l4 + csum_offset, pseudo);
            hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type,
                hdr_len: (l4 + first.doff) as u16,
                gso_size: first.len as u16,
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
