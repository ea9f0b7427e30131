//! RFC 1071 checksums, as big-endian numbers, folded, not complemented;
//! and the rewriting of a frame's IPv4, TCP and UDP checksums.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{ETH_LEN, OffloadError, PROTO_UDP, put16};

/// The sum of `bytes` as 16-bit words.
///
/// Summed as native-order 32-bit words into a `u64` (no carry is lost
/// below 2^32 words), a loop without a carry chain that the compiler
/// vectorises, then folded: RFC 1071 §2's sum does not depend on the
/// word width nor the byte order. It runs for every segment the node
/// cuts, over every byte of it.
pub(crate) fn data(bytes: &[u8]) -> u16 {
    let mut words = bytes.chunks_exact(4);
    let mut sum: u64 = (&mut words)
        .map(|w| u64::from(w.try_into().map(u32::from_ne_bytes).unwrap_or(0)))
        .sum();
    // The last 1 to 3 bytes, padded with zeros (an odd last byte is the
    // high half of a word, RFC 1071).
    let mut tail = [0u8; 4];
    for (t, b) in tail.iter_mut().zip(words.remainder()) {
        *t = *b;
    }
    sum += u64::from(u32::from_ne_bytes(tail));
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Summed in native order: the folded sum's bytes are the big-endian sum.
    u16::from_be_bytes((sum as u16).to_ne_bytes())
}

/// The ones'-complement sum of sums.
pub(crate) fn combine(sums: &[u16]) -> u16 {
    let mut acc: u32 = sums.iter().map(|&s| u32::from(s)).sum();
    while acc > 0xffff {
        acc = (acc >> 16) + (acc & 0xffff);
    }
    acc as u16
}

/// The IPv4 pseudo-header's sum (RFC 793 §3.1, RFC 768).
pub(crate) fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, protocol: u8, len: u32) -> u16 {
    let (s, d) = (src.octets(), dst.octets());
    combine(&[
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(protocol),
        len as u16,
    ])
}

/// The IPv6 pseudo-header's sum (RFC 8200 section 8.1).
pub(crate) fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, protocol: u8, len: u32) -> u16 {
    let mut words = [0u16; 20];
    for (i, w) in src
        .segments()
        .iter()
        .chain(dst.segments().iter())
        .enumerate()
    {
        words[i] = *w;
    }
    words[16] = (len >> 16) as u16;
    words[17] = len as u16;
    words[18] = u16::from(protocol);
    combine(&words)
}

/// The IPv4 source and destination of an Ethernet frame (bounds checked
/// by the caller).
pub(crate) fn ip_addrs(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let a = |i: usize| Ipv4Addr::new(frame[i], frame[i + 1], frame[i + 2], frame[i + 3]);
    (a(ETH_LEN + 12), a(ETH_LEN + 16))
}

/// The IPv6 source and destination of an Ethernet frame (bounds checked
/// by the caller).
pub(crate) fn ip6_addrs(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
    let a = |i: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&frame[i..i + 16]);
        Ipv6Addr::from(o)
    };
    (a(ETH_LEN + 8), a(ETH_LEN + 24))
}

/// Rewrites the IPv4 header checksum of `frame` (header at [`ETH_LEN`]).
pub(crate) fn fix_ip(frame: &mut [u8], ihl: usize) {
    put16(frame, ETH_LEN + 10, 0);
    let sum = !data(&frame[ETH_LEN..ETH_LEN + ihl]);
    put16(frame, ETH_LEN + 10, sum);
}

/// Rewrites the TCP or UDP checksum of `frame`, whose L4 header starts at
/// `l4` and whose checksum field is at `l4 + field`.
pub(crate) fn fix_l4(frame: &mut [u8], l4: usize, field: usize, protocol: u8) {
    put16(frame, l4 + field, 0);
    let len = frame.len() - l4;
    let pseudo = if frame[ETH_LEN] >> 4 == 6 {
        let (src, dst) = ip6_addrs(frame);
        pseudo_header_v6(&src, &dst, protocol, len as u32)
    } else {
        let (src, dst) = ip_addrs(frame);
        pseudo_header_v4(&src, &dst, protocol, len as u32)
    };
    let mut sum = !combine(&[pseudo, data(&frame[l4..])]);
    if sum == 0 && protocol == PROTO_UDP {
        sum = 0xffff;
    }
    put16(frame, l4 + field, sum);
}

/// Completes a partial checksum in place (what [`F_NEEDS_CSUM`] asks
/// for): the 16-bit field at `start + offset` of the Ethernet `frame` holds
/// the pseudo-header sum, and the checksum covers `start..`. Pass a
/// [`VnetHdr`]'s `csum_start` and `csum_offset`.
///
/// [`F_NEEDS_CSUM`]: crate::F_NEEDS_CSUM
/// [`VnetHdr`]: crate::VnetHdr
pub fn complete_checksum(frame: &mut [u8], start: u16, offset: u16) -> Result<(), OffloadError> {
    let (s, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    if at + 2 > frame.len() || s > frame.len() {
        return Err(OffloadError::ChecksumOutside {
            start,
            offset,
            len: frame.len(),
        });
    }
    let mut sum = !data(&frame[s..]);
    if sum == 0 && offset == 6 {
        // UDP: a computed zero is sent as all ones (RFC 768).
        sum = 0xffff;
    }
    put16(frame, at, sum);
    Ok(())
}
