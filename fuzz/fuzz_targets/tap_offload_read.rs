//! Feeds arbitrary bytes to tap-offload as a read from an offload TAP
//! (virtio-net header + frame): the segmenter cuts it, the coalescer
//! merges the pieces back (TCP segments and UDP datagrams). Nothing may panic; every piece fits the
//! input's frame; what the coalescer writes starts with a header that
//! round-trips, never exceeds one TAP write, and is cut again without
//! error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tap_offload::{Coalescer, MAX_READ, Segmenter, VNET_HDR_LEN, VnetHdr};

fuzz_target!(|data: &[u8]| {
    let mut read = data.to_vec();
    let mut seg = Segmenter::new();
    let mut gro = Coalescer::new();
    gro.merge_udp(true);
    let mut writes = Vec::new();
    let frame_len = data.len().saturating_sub(VNET_HDR_LEN);
    let _ = seg.split(&mut read, |frame| {
        assert!(frame.len() <= frame_len);
        if !gro.push(frame) {
            writes.push(gro.finish().to_vec());
            assert!(gro.push(frame));
        }
    });
    writes.push(gro.finish().to_vec());
    for w in writes.iter_mut().filter(|w| !w.is_empty()) {
        assert!(w.len() <= MAX_READ);
        let hdr = VnetHdr::parse(w).unwrap();
        assert_eq!(hdr.to_bytes()[..], w[..VNET_HDR_LEN]);
        seg.split(w, |_| {}).unwrap();
    }
});
