//! Chunk manifests (overlay-core feature `chunked`): parsing arbitrary
//! bytes never panics, what parses re-encodes to the same bytes, and an
//! assembly for it takes only matching chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::chunked::{Assembly, CHUNK_LEN, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::parse_body(data) else {
        return;
    };
    assert_eq!(manifest.to_body(), data);
    let mut assembly = Assembly::new(manifest);
    // Arbitrary bytes as every chunk: taken only if the digest matches
    // (never, short of a SHA-256 preimage), so the value never completes.
    for i in 0..usize::from(assembly.manifest().chunks()) + 1 {
        let len = data.len().min(CHUNK_LEN);
        assembly.insert(i, &data[..len]);
    }
    assert!(assembly.finish().is_none() || assembly.is_complete());
});
