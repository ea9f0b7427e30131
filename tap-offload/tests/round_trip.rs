//! Segment, then merge: through the public API only, a TCP stream cut by
//! the guest into super-frames, segmented by the [`Segmenter`] and merged
//! again by the [`Coalescer`], gives back the same stream, and the merged
//! super-frames cut again give back the same segments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use proptest::prelude::*;
use support::{
    ETH_LEN, TCP_ACK, TCP_PSH, TIMESTAMPS, assert_valid_tcp, assert_valid_udp, coalesce_all,
    coalesce_all_with, completed, put16, split_all, tcp_frame, tcp6_frame, tso, tso6, udp_frame,
    with_hdr,
};
use tap_offload::{
    Coalescer, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, MAX_MERGE, MAX_READ, Segmenter, VNET_HDR_LEN,
    VnetHdr,
};

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

        let outputs = coalesce_all(segments.iter().map(Vec::as_slice));
        prop_assert_eq!(outputs.len(), segments.len().div_ceil(usize::from(MAX_MERGE)));
        let mut merged_payload = Vec::new();
        for out in &outputs {
            let (hdr, frame) = completed(out);
            if hdr.gso_type == GSO_TCPV4 {
                prop_assert_eq!(hdr.gso_size, mss);
                prop_assert_eq!(usize::from(hdr.hdr_len), ETH_LEN + 20 + 20 + opts.len());
            } else {
                prop_assert_eq!(hdr, VnetHdr::default());
            }
            let (_, _, p) = assert_valid_tcp(&frame);
            merged_payload.extend_from_slice(&p);
        }
        prop_assert_eq!(merged_payload, payload);
    }

    /// A stream of several super-frames of one flow (each with its own
    /// length and PSH): segmented and merged, the TAP writes carry the
    /// stream in order; cut again, they give the very same segments, byte
    /// for byte (IP IDs, flags, checksums).
    #[test]
    fn a_stream_survives_segment_merge_segment(
        lens in proptest::collection::vec(1usize..6000, 1..6),
        pshs in proptest::collection::vec(any::<bool>(), 6),
        mss in 200u16..1460,
        options in any::<bool>(),
        seq in any::<u32>(),
        seed in any::<u8>(),
    ) {
        let total: usize = lens.iter().sum();
        let stream: Vec<u8> = (0..total).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect();
        let opts: &[u8] = if options { &TIMESTAMPS } else { &[] };
        let (mut segments, mut at, mut ip_id) = (Vec::new(), 0usize, 0x1234u16);
        for (len, psh) in lens.iter().zip(&pshs) {
            let flags = TCP_ACK | if *psh { TCP_PSH } else { 0 };
            let mut frame =
                tcp_frame(seq.wrapping_add(at as u32), flags, opts, &stream[at..at + len]);
            // IP IDs run on across super-frames, as a kernel numbers them.
            put16(&mut frame, ETH_LEN + 4, ip_id);
            let cut = split_all(&mut with_hdr(tso(mss, 20 + opts.len()), &frame)).unwrap();
            ip_id = ip_id.wrapping_add(cut.len() as u16);
            segments.extend(cut);
            at += len;
        }

        let writes = coalesce_all(segments.iter().map(Vec::as_slice));
        prop_assert!(writes.len() <= segments.len());
        let (mut merged, mut again) = (Vec::new(), Vec::new());
        for w in &writes {
            let (_, frame) = completed(w);
            let (s, _, p) = assert_valid_tcp(&frame);
            prop_assert_eq!(s, seq.wrapping_add(merged.len() as u32));
            merged.extend_from_slice(&p);
            again.extend(split_all(&mut w.clone()).unwrap());
        }
        prop_assert_eq!(merged, stream);
        prop_assert_eq!(again, segments);
    }

    /// UDP datagrams of a few flows, of any sizes, merged then cut again
    /// (as the guest's kernel cuts a USO write for a socket without GRO):
    /// the same datagrams in the same order, valid, and no more writes
    /// than datagrams.
    #[test]
    fn udp_datagrams_merge_and_cut_back(
        sent in proptest::collection::vec((0u16..3, 1usize..1500), 1..200),
    ) {
        let frames: Vec<Vec<u8>> = sent
            .iter()
            .enumerate()
            .map(|(i, (flow, len))| {
                let payload: Vec<u8> = (0..*len).map(|j| (i + j) as u8).collect();
                udp_frame(40000 + flow, i as u16, &payload)
            })
            .collect();
        let writes = coalesce_all_with(true, frames.iter().map(Vec::as_slice));
        prop_assert!(writes.len() <= frames.len());
        let mut again = Vec::new();
        for w in &writes {
            prop_assert!(w.len() <= MAX_READ);
            let hdr = VnetHdr::parse(w).unwrap();
            prop_assert!(hdr.gso_type == GSO_UDP_L4 || hdr == VnetHdr::default());
            again.extend(split_all(&mut w.clone()).unwrap());
        }
        prop_assert_eq!(again.len(), frames.len());
        for (a, f) in again.iter().zip(&frames) {
            prop_assert_eq!(assert_valid_udp(a), assert_valid_udp(f));
        }
    }

    /// One flow of `n` equal datagrams (and maybe a shorter last one):
    /// one write per [`MAX_MERGE`] datagrams, no fewer merged.
    #[test]
    fn a_udp_flow_takes_one_write_per_64_datagrams(
        n in 1usize..300,
        size in 1usize..1000,
        short_last in any::<bool>(),
    ) {
        let mut frames: Vec<Vec<u8>> =
            (0..n).map(|i| udp_frame(40000, i as u16, &vec![i as u8; size])).collect();
        if short_last && size > 1 {
            frames.push(udp_frame(40000, n as u16, &vec![1; size - 1]));
        }
        let writes = coalesce_all_with(true, frames.iter().map(Vec::as_slice));
        prop_assert_eq!(writes.len(), frames.len().div_ceil(usize::from(MAX_MERGE)));
    }

    /// TCPv6 too: a super-frame cut by TSO6, merged, gives one TSO6 write
    /// per [`MAX_MERGE`] segments that cuts into the very same segments.
    #[test]
    fn tcpv6_segment_then_coalesce_round_trips(
        len in 1usize..20_000,
        mss in 200u16..1440,
        psh in any::<bool>(),
        seq in any::<u32>(),
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7)).collect();
        let read = &mut with_hdr(tso6(mss, 20), &tcp6_frame(seq, psh, &payload));
        let segments = split_all(read).unwrap();
        prop_assert_eq!(segments.len(), len.div_ceil(usize::from(mss)));
        let writes = coalesce_all(segments.iter().map(Vec::as_slice));
        prop_assert_eq!(writes.len(), segments.len().div_ceil(usize::from(MAX_MERGE)));
        let mut again = Vec::new();
        for w in &writes {
            let h = VnetHdr::parse(w).unwrap();
            prop_assert!(h.gso_type == GSO_TCPV6 || h == VnetHdr::default());
            again.extend(split_all(&mut w.clone()).unwrap());
        }
        prop_assert_eq!(again, segments);
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
        let w = gro.finish().to_vec();
        if !w.is_empty() {
            prop_assert!(w.len() > VNET_HDR_LEN);
            // What the coalescer writes, the segmenter takes.
            let again = seg.split(&mut w.clone(), |_| ());
            prop_assert!(again.is_ok(), "{:?}", again);
        }
    }
}
