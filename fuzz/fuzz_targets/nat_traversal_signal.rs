//! Signalling input: the parser and the data-link receiver.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use nat_traversal::link::{Link, PathKind};
use nat_traversal::wire::SignalRepr;

fuzz_target!(|data: &[u8]| {
    if let Ok(repr) = SignalRepr::parse_bytes(data) {
        let bytes = repr.to_bytes().expect("parsed message re-emits");
        assert_eq!(&bytes[..], &data[..bytes.len()]);
        assert_eq!(
            SignalRepr::parse_bytes(&bytes).expect("re-emitted parses"),
            repr
        );
    }
    let mut link = Link::new(Instant::now(), &[3; 32]);
    // A random frame never authenticates.
    assert!(!link.handle_input(Instant::now(), PathKind::Relay, data));
});
