//! The steady state allocates nothing: cutting TCP super-frames into
//! segments and merging those back, counted per thread by
//! `wow_test_hosts::alloc_count`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{TCP_ACK, tcp_frame, tso, with_hdr};
use tap_offload::{Coalescer, Segmenter};
use wow_test_hosts::alloc_count::{CountingAlloc, Region};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn segmenting_and_merging_allocate_nothing() {
    let payload = vec![0x5a; 60_000];
    let reads: Vec<Vec<u8>> = (0..50u32)
        .map(|i| {
            with_hdr(
                tso(1400, 20),
                &tcp_frame(i * 60_000, TCP_ACK, &[], &payload),
            )
        })
        .collect();
    let mut work: Vec<Vec<u8>> = reads.clone();
    let (mut seg, mut gro) = (Segmenter::new(), Coalescer::new());
    let mut run = |work: &mut [Vec<u8>]| {
        let (mut frames, mut writes) = (0, 0);
        for read in work.iter_mut() {
            frames += seg
                .split(read, |frame| {
                    if !gro.push(frame) {
                        writes += usize::from(!gro.finish().is_empty());
                        assert!(gro.push(frame));
                    }
                })
                .unwrap();
        }
        writes += usize::from(!gro.finish().is_empty());
        (frames, writes)
    };
    // Warm-up: the buffers reach their working size.
    run(&mut work);

    work.clone_from(&reads);
    let region = Region::new();
    let (frames, writes) = run(&mut work);
    let stats = region.change();
    assert_eq!(frames, 50 * 60_000usize.div_ceil(1400));
    assert!(writes >= frames / 64, "{writes} writes");
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
}
