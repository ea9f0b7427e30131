//! Frames for the tests (shared by the unit tests, through `#[path]`, and
//! the integration tests): only the crate's public API.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket, UdpPacket};
use tap_offload::{
    Coalescer, F_NEEDS_CSUM, GSO_TCPV4, OffloadError, Segmenter, VNET_HDR_LEN, VnetHdr,
};

pub const ETH_LEN: usize = 14;
pub const SRC: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 11);
pub const DST: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 12);
pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
/// A TCP timestamps option, padded.
pub const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7];

pub fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

/// An Ethernet+IPv4+TCP frame with `options` and `payload`; checksums
/// are left zero (a super-frame's are partial anyway).
pub fn tcp_frame(seq: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
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

/// An Ethernet+IPv4+UDP datagram from `SRC:sport` to `DST:53` with IP ID
/// `id` and complete checksums.
pub fn udp_frame(sport: u16, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = tcp_frame(0, 0, &[], &[]);
    f.truncate(ETH_LEN + 20);
    f[ETH_LEN + 9] = 17;
    put16(&mut f, ETH_LEN + 2, (28 + payload.len()) as u16);
    put16(&mut f, ETH_LEN + 4, id);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    Ipv4Packet::new_unchecked(&mut f[ETH_LEN..]).fill_checksum();
    UdpPacket::new_unchecked(&mut f[ETH_LEN + 20..])
        .fill_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST));
    f
}

/// An Ethernet+IPv6+TCP frame (ACK, PSH if `psh`) with `payload` from
/// fd00::11 to fd00::12; checksum left as the builder wrote it.
pub fn tcp6_frame(seq: u32, psh: bool, payload: &[u8]) -> Vec<u8> {
    let src = "fd00::11".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let dst = "fd00::12".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(src, dst, 64)
        .tcp(40000, 5201, seq, 65535)
        .ack(77);
    let b = if psh { b.psh() } else { b };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// Checks a UDPv4 frame's lengths and checksums; its source port and
/// payload.
pub fn assert_valid_udp(frame: &[u8]) -> (u16, Vec<u8>) {
    let ip = Ipv4Packet::new_checked(&frame[ETH_LEN..]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    assert_eq!(usize::from(ip.total_len()), frame.len() - ETH_LEN);
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_ne!(udp.checksum(), 0, "a UDP checksum");
    assert!(
        udp.verify_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST)),
        "UDP checksum"
    );
    assert_eq!(usize::from(udp.len()), 8 + udp.payload().len());
    (udp.src_port(), udp.payload().to_vec())
}

/// One TAP read: `hdr`, then `frame`.
pub fn with_hdr(hdr: VnetHdr, frame: &[u8]) -> Vec<u8> {
    let mut read = hdr.to_bytes().to_vec();
    read.extend_from_slice(frame);
    read
}

/// The header of a TCPv4 super-frame with a TCP header of `doff` bytes.
pub fn tso(mss: u16, doff: usize) -> VnetHdr {
    gso(GSO_TCPV4, 20, doff, mss, 16)
}

/// A TSO6 header for a frame whose TCP header is `doff` bytes.
pub fn tso6(mss: u16, doff: usize) -> VnetHdr {
    gso(tap_offload::GSO_TCPV6, 40, doff, mss, 16)
}

/// The header of a super-frame of `gso_type` with an IP header of `ip_len`
/// bytes and an L4 header of `l4_len`, cut into `size`, its partial
/// checksum at `csum_offset` from the L4 header.
pub fn gso(gso_type: u8, ip_len: usize, l4_len: usize, size: u16, csum_offset: u16) -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: (ETH_LEN + ip_len + l4_len) as u16,
        gso_size: size,
        csum_start: (ETH_LEN + ip_len) as u16,
        csum_offset,
    }
}

/// Checks that a frame's IPv4 and TCP checksums are right; its sequence
/// number, TCP flags and payload.
pub fn assert_valid_tcp(frame: &[u8]) -> (u32, u8, Vec<u8>) {
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

/// Every frame one read is cut into.
pub fn split_all(read: &mut [u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut seg = Segmenter::new();
    let mut out = Vec::new();
    seg.split(read, |f| out.push(f.to_vec()))?;
    Ok(out)
}

/// Every TAP write the coalescer makes of `frames`, in order.
pub fn coalesce_all<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    coalesce_all_with(false, frames)
}

/// [`coalesce_all`], merging UDP datagrams too if `udp`.
pub fn coalesce_all_with<'a>(
    udp: bool,
    frames: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Vec<u8>> {
    let mut gro = Coalescer::new();
    gro.merge_udp(udp);
    let mut writes = Vec::new();
    for f in frames {
        if !gro.push(f) {
            writes.push(gro.finish().to_vec());
            assert!(gro.push(f), "an empty coalescer takes any frame");
        }
    }
    if !gro.is_empty() {
        writes.push(gro.finish().to_vec());
    }
    writes
}

/// The frame of a TAP write, its partial checksum (if any) completed.
pub fn completed(write: &[u8]) -> (VnetHdr, Vec<u8>) {
    let hdr = VnetHdr::parse(write).unwrap();
    let mut frame = write[VNET_HDR_LEN..].to_vec();
    if hdr.flags & F_NEEDS_CSUM != 0 {
        tap_offload::complete_checksum(&mut frame, hdr.csum_start, hdr.csum_offset).unwrap();
    }
    (hdr, frame)
}
