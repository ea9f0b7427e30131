//! Unit tests: what needs the crate's private checksum helpers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use smoltcp::wire::{IpAddress, Ipv4Packet, UdpPacket};

#[path = "../tests/support/mod.rs"]
mod support;

use super::*;
use support::{
    DST, SRC, TCP_SYN, assert_valid_tcp, assert_valid_udp, gso, split_all, tcp_frame, tso,
    udp_frame, with_hdr,
};

#[test]
fn header_round_trips() {
    let hdr = tso(1400, 32);
    let mut b = [0u8; VNET_HDR_LEN];
    hdr.emit(&mut b).unwrap();
    assert_eq!(VnetHdr::parse(&b), Ok(hdr));
    assert_eq!(
        VnetHdr::parse(&b[..9]),
        Err(OffloadError::Truncated { len: 9 })
    );
    assert_eq!(
        hdr.emit(&mut [0u8; 9]),
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
        checksum::pseudo_header_v4(&SRC, &DST, PROTO_TCP, tcp_len),
    );
    checksum::fix_ip(&mut partial, 20);
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
    let hdr = gso(GSO_UDP_L4, 20, 8, 1200, 6);
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
    // An IPv4 frame under a TCPv6 GSO type.
    assert_eq!(
        split_all(&mut with_hdr(v6, &frame)),
        Err(OffloadError::NotIpv6(frame[ETH_LEN + 6]))
    );
    assert!(matches!(
        split_all(&mut with_hdr(tso(1000, 20), &frame[..40])),
        Err(OffloadError::Truncated { .. })
    ));
    let mut udp = frame.clone();
    udp[ETH_LEN + 9] = 17;
    assert_eq!(
        split_all(&mut with_hdr(tso(1000, 20), &udp)),
        Err(OffloadError::NotIpv4(PROTO_UDP))
    );
}

#[test]
fn only_what_gro_would_merge_is_merged() {
    let seg = |seq: u32, flags: u8, len: usize| {
        let mut f = tcp_frame(seq, flags, &[], &vec![7u8; len]);
        checksum::fix_ip(&mut f, 20);
        checksum::fix_l4(&mut f, ETH_LEN + 20, 16, PROTO_TCP);
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

#[test]
fn udp_merges_only_where_linux_udp_gro_would() {
    let d = |id: u16, len: usize| udp_frame(40000, id, &vec![id as u8; len]);
    // Off by default: a TAP without USO refuses such writes.
    let mut gro = Coalescer::new();
    assert!(gro.push(&d(1, 100)));
    assert!(!gro.push(&d(2, 100)));
    assert_eq!(VnetHdr::parse(gro.finish()).unwrap(), VnetHdr::default());

    gro.merge_udp(true);
    let sent = [d(1, 100), d(2, 100), d(3, 100), d(4, 50)];
    for f in &sent {
        assert!(gro.push(f));
    }
    // After a shorter one the run is closed.
    assert!(!gro.push(&d(5, 100)));
    let mut out = gro.finish().to_vec();
    let hdr = VnetHdr::parse(&out).unwrap();
    assert_eq!(hdr, gso(GSO_UDP_L4, 20, 8, 100, 6));
    assert_eq!(out.len(), VNET_HDR_LEN + ETH_LEN + 28 + 350);
    let l4 = VNET_HDR_LEN + ETH_LEN + 20;
    assert_eq!(be16(&out, l4 + 4), 8 + 350, "the UDP length covers all");
    // Cut again (as the guest's kernel does): the datagrams, valid.
    let again = split_all(&mut out).unwrap();
    assert_eq!(again.len(), 4);
    for (a, s) in again.iter().zip(&sent) {
        assert_eq!(assert_valid_udp(a), assert_valid_udp(s));
    }

    // Larger than the first, another port, another TTL: not merged.
    assert!(gro.push(&d(1, 100)));
    assert!(!gro.push(&d(2, 101)));
    assert!(!gro.push(&udp_frame(40001, 2, &[2; 100])));
    let mut ttl = d(2, 100);
    ttl[ETH_LEN + 8] = 63;
    checksum::fix_ip(&mut ttl, 20);
    assert!(!gro.push(&ttl));
    // A TCP segment does not join a UDP run.
    let mut tcp = tcp_frame(1, TCP_ACK, &[], &[2; 100]);
    checksum::fix_ip(&mut tcp, 20);
    assert!(!gro.push(&tcp));
    // A zero checksum, a padded datagram, a fragment: not merged.
    let mut zero = d(2, 100);
    put16(&mut zero, ETH_LEN + 26, 0);
    assert!(!gro.push(&zero));
    let mut padded = d(2, 100);
    put16(&mut padded, ETH_LEN + 24, 100);
    assert!(!gro.push(&padded));
    let mut fragment = d(2, 100);
    put16(&mut fragment, ETH_LEN + 6, 0x2000);
    assert!(!gro.push(&fragment));
    let _ = gro.finish();
    // DHCP replies (read through packet sockets) are never merged.
    let _ = gro.finish();
    let mut offer = d(1, 300);
    put16(&mut offer, ETH_LEN + 20, 67);
    put16(&mut offer, ETH_LEN + 22, 68);
    checksum::fix_l4(&mut offer, ETH_LEN + 20, 6, PROTO_UDP);
    assert!(gro.push(&offer));
    assert!(!gro.push(&offer));
    let _ = gro.finish();
    // A lone datagram that cannot merge stands alone, unchanged.
    assert!(gro.push(&zero));
    assert!(!gro.push(&zero));
    let out = gro.finish();
    assert_eq!(VnetHdr::parse(out).unwrap(), VnetHdr::default());
    assert_eq!(&out[VNET_HDR_LEN..], &zero[..]);

    // At most MAX_MERGE datagrams, and never more than 64 KiB of IP.
    assert!(gro.push(&d(0, 10)));
    for i in 1..MAX_MERGE {
        assert!(gro.push(&d(i, 10)));
    }
    assert!(!gro.push(&d(99, 10)));
    let _ = gro.finish();
    assert!(gro.push(&d(0, 30_000)));
    assert!(gro.push(&d(1, 30_000)));
    assert!(!gro.push(&d(2, 30_000)));
}

/// An Ethernet frame with IPv6 `next` (TCP or UDP) and `payload` from
/// fd00::11 to fd00::12, checksums left as the builder wrote them.
fn v6_frame(tcp: bool, payload: &[u8]) -> Vec<u8> {
    let src = "fd00::11".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let dst = "fd00::12".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(src, dst, 64);
    let mut out = Vec::new();
    if tcp {
        b.tcp(40000, 5201, 1000, 65535)
            .ack(77)
            .psh()
            .write(&mut out, payload)
            .unwrap();
    } else {
        b.udp(40000, 5201).write(&mut out, payload).unwrap();
    }
    out
}

/// The header of an IPv6 super-frame of `gso_type` whose L4 header is
/// `l4_len` bytes, cut into `size`, its checksum field at `csum_offset`.
fn gso6(gso_type: u8, l4_len: usize, size: u16, csum_offset: u16) -> VnetHdr {
    gso(gso_type, 40, l4_len, size, csum_offset)
}

fn v6_addrs() -> (IpAddress, IpAddress) {
    (
        IpAddress::Ipv6("fd00::11".parse().unwrap()),
        IpAddress::Ipv6("fd00::12".parse().unwrap()),
    )
}

#[test]
fn tcpv6_super_frames_are_cut_with_valid_checksums() {
    let payload: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
    let frame = v6_frame(true, &payload);
    let hdr = gso6(GSO_TCPV6, 20, 1000, 16);
    let out = split_all(&mut with_hdr(hdr, &frame)).unwrap();
    assert_eq!(out.len(), 4);
    let (src, dst) = v6_addrs();
    let mut joined = Vec::new();
    for (i, seg) in out.iter().enumerate() {
        let ip = smoltcp::wire::Ipv6Packet::new_checked(&seg[ETH_LEN..]).unwrap();
        assert_eq!(usize::from(ip.payload_len()), seg.len() - ETH_LEN - 40);
        let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(&src, &dst), "segment {i}");
        assert_eq!(tcp.seq_number().0 as u32, 1000 + 1000 * i as u32);
        // PSH only on the last.
        assert_eq!(tcp.psh(), i == 3);
        joined.extend_from_slice(tcp.payload());
    }
    assert_eq!(joined, payload);
    // Extension headers (here: next header 0, hop-by-hop) are refused.
    let mut ext = frame.clone();
    ext[ETH_LEN + 6] = 0;
    assert_eq!(
        split_all(&mut with_hdr(hdr, &ext)),
        Err(OffloadError::NotIpv6(0))
    );
}

#[test]
fn udpv6_super_frames_are_cut_with_valid_checksums() {
    let payload = vec![9u8; 2500];
    let frame = v6_frame(false, &payload);
    let hdr = gso6(GSO_UDP_L4, 8, 1200, 6);
    let out = split_all(&mut with_hdr(hdr, &frame)).unwrap();
    assert_eq!(out.len(), 3);
    let (src, dst) = v6_addrs();
    for seg in &out {
        let ip = smoltcp::wire::Ipv6Packet::new_checked(&seg[ETH_LEN..]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(usize::from(udp.len()), ip.payload().len());
        assert!(udp.verify_checksum(&src, &dst));
    }
}

/// The frames a TSO/USO read of `frame` is cut into, merged back by a
/// coalescer (UDP merging on): its TAP writes.
fn cut_and_merge(hdr: VnetHdr, frame: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let segments = split_all(&mut with_hdr(hdr, frame)).unwrap();
    let mut gro = Coalescer::new();
    gro.merge_udp(true);
    let mut writes = Vec::new();
    for s in &segments {
        if !gro.push(s) {
            writes.push(gro.finish().to_vec());
            assert!(gro.push(s));
        }
    }
    writes.push(gro.finish().to_vec());
    (segments, writes)
}

#[test]
fn ipv6_tcp_segments_and_udp_datagrams_are_merged() {
    // TCPv6: four segments (PSH on the last) become one TSO6 write that
    // cuts into the very same segments.
    let payload: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
    let (segments, writes) =
        cut_and_merge(gso6(GSO_TCPV6, 20, 1000, 16), &v6_frame(true, &payload));
    assert_eq!((segments.len(), writes.len()), (4, 1));
    let hdr = VnetHdr::parse(&writes[0]).unwrap();
    assert_eq!(hdr, gso6(GSO_TCPV6, 20, 1000, 16));
    assert_eq!(writes[0].len(), VNET_HDR_LEN + ETH_LEN + 40 + 20 + 3500);
    assert_eq!(be16(&writes[0], VNET_HDR_LEN + ETH_LEN + 4), 20 + 3500);
    assert_eq!(split_all(&mut writes[0].clone()).unwrap(), segments);

    // UDPv6: three datagrams become one USO write, and back.
    let (segments, writes) =
        cut_and_merge(gso6(GSO_UDP_L4, 8, 1200, 6), &v6_frame(false, &[9; 2500]));
    assert_eq!((segments.len(), writes.len()), (3, 1));
    assert_eq!(
        VnetHdr::parse(&writes[0]).unwrap(),
        gso6(GSO_UDP_L4, 8, 1200, 6)
    );
    assert_eq!(split_all(&mut writes[0].clone()).unwrap(), segments);

    // Another hop limit, flow label or address: not merged.
    let one = |f: &dyn Fn(&mut Vec<u8>)| {
        let (mut segments, _) =
            cut_and_merge(gso6(GSO_UDP_L4, 8, 1200, 6), &v6_frame(false, &[9; 2400]));
        f(&mut segments[1]);
        let mut gro = Coalescer::new();
        gro.merge_udp(true);
        assert!(gro.push(&segments[0]));
        gro.push(&segments[1])
    };
    assert!(one(&|_| ()));
    assert!(!one(&|s| s[ETH_LEN + 7] = 63));
    assert!(!one(&|s| s[ETH_LEN + 3] ^= 1));
    assert!(!one(&|s| s[ETH_LEN + 39] ^= 1));
    // An IPv4 datagram does not join an IPv6 run.
    assert!(!one(&|s| *s = udp_frame(40000, 1, &[9; 1200])));
}

proptest::proptest! {
    /// The vectorised sum is RFC 1071's: 16-bit big-endian words, an odd
    /// last byte padded with zero, carries folded back in.
    #[test]
    fn data_sum_is_rfc_1071(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        proptest::prop_assert_eq!(checksum::data(&bytes), sum as u16);
    }
}
