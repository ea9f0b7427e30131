//! Release manifests (wow-core `update`): parsing arbitrary bytes as a
//! signed manifest or a body never panics, a body that parses re-encodes
//! to the same bytes, and a download for it takes no arbitrary chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wow_core::update::{Download, Manifest, Offer, split_signed, verify};

fuzz_target!(|data: &[u8]| {
    let _ = split_signed(data);
    let _ = verify(data, &[[7u8; 32]]);
    let Ok(manifest) = Manifest::parse_body(data) else {
        return;
    };
    assert_eq!(manifest.to_body(), data);
    let mut download = Download::new(manifest);
    // Arbitrary bytes as chunks: refused unless they hash to the link.
    for index in download.wanted(4) {
        let offer = download.offer_chunk(index, [data]);
        assert!(!matches!(offer, Ok(Offer::Complete(_))));
    }
});
