//! An independent oracle: tun-rs's GSO split (written for a TUN, so bare
//! IP packets) must cut the IP part of each super-frame into the very
//! bytes the [`Segmenter`] cuts the Ethernet frame into, for TCPv4 (with
//! ECN's CWR, PSH and FIN) and UDPv4 super-frames.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use proptest::prelude::*;
use support::{ETH_LEN, TCP_ACK, TCP_PSH, TIMESTAMPS, put16, split_all, tcp_frame, tso, with_hdr};
use tap_offload::{F_NEEDS_CSUM, GSO_ECN, GSO_UDP_L4, VnetHdr};

const TCP_FIN: u8 = 0x01;
const TCP_CWR: u8 = 0x80;

/// tun-rs's segments of the IP packet inside `frame`, cut as `hdr` says
/// (offsets taken from the Ethernet frame, as a TAP gives them).
fn oracle(frame: &[u8], hdr: VnetHdr) -> Vec<Vec<u8>> {
    let hdr = tun_rs::VirtioNetHdr {
        flags: hdr.flags,
        gso_type: hdr.gso_type,
        hdr_len: hdr.hdr_len - ETH_LEN as u16,
        gso_size: hdr.gso_size,
        csum_start: hdr.csum_start - ETH_LEN as u16,
        csum_offset: hdr.csum_offset,
    };
    let mut input = frame[ETH_LEN..].to_vec();
    let count = (input.len() - usize::from(hdr.hdr_len)).div_ceil(usize::from(hdr.gso_size));
    let mut bufs = vec![vec![0u8; 65535]; count];
    let mut sizes = vec![0usize; count];
    let n = tun_rs::gso_split(&mut input, hdr, &mut bufs, &mut sizes, 0, false).unwrap();
    bufs.iter()
        .zip(&sizes)
        .take(n)
        .map(|(b, &len)| b[..len].to_vec())
        .collect()
}

/// Our segments, the Ethernet header taken off.
fn ours(frame: &[u8], hdr: VnetHdr) -> Vec<Vec<u8>> {
    let segments = split_all(&mut with_hdr(hdr, frame)).unwrap();
    for s in &segments {
        assert_eq!(s[..ETH_LEN], frame[..ETH_LEN]);
    }
    segments
        .into_iter()
        .map(|s| s[ETH_LEN..].to_vec())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tcp_segments_match_tun_rs(
        len in 1usize..20_000,
        mss in 88u16..9000,
        flag_bits in 0u8..8,
        options in any::<bool>(),
        seq in any::<u32>(),
        ip_id in any::<u16>(),
        seed in any::<u8>(),
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        let opts: &[u8] = if options { &TIMESTAMPS } else { &[] };
        let mut flags = TCP_ACK;
        for (bit, flag) in [TCP_PSH, TCP_FIN, TCP_CWR].into_iter().enumerate() {
            if flag_bits & (1 << bit) != 0 {
                flags |= flag;
            }
        }
        let mut frame = tcp_frame(seq, flags, opts, &payload);
        put16(&mut frame, ETH_LEN + 4, ip_id);
        let mut hdr = tso(mss, 20 + opts.len());
        if flags & TCP_CWR != 0 {
            hdr.gso_type |= GSO_ECN;
        }
        prop_assert_eq!(ours(&frame, hdr), oracle(&frame, hdr));
    }

    #[test]
    fn udp_segments_match_tun_rs(
        len in 1usize..20_000,
        size in 1u16..9000,
        ip_id in any::<u16>(),
        seed in any::<u8>(),
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(5) ^ seed).collect();
        let mut frame = tcp_frame(0, 0, &[], &[]);
        frame.truncate(ETH_LEN + 20);
        frame[ETH_LEN + 9] = 17;
        put16(&mut frame, ETH_LEN + 4, ip_id);
        frame.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 0]);
        frame.extend_from_slice(&payload);
        put16(&mut frame, ETH_LEN + 2, (20 + 8 + len).min(65535) as u16);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (ETH_LEN + 28) as u16,
            gso_size: size,
            csum_start: (ETH_LEN + 20) as u16,
            csum_offset: 6,
        };
        prop_assert_eq!(ours(&frame, hdr), oracle(&frame, hdr));
    }
}
