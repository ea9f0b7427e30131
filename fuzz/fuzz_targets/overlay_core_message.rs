//! Decodes arbitrary bytes as an overlay message; whatever decodes must
//! re-encode to exactly the same bytes (the format is canonical). The
//! pooled decoder must agree with the plain one on every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::BufferPool;
use overlay_core::wire::{Message, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (p.version(), p.kind());
    }
    let parsed = Message::parse(data);
    let mut pool = BufferPool::new(1);
    assert_eq!(Message::parse_with(data, &mut pool), parsed);
    assert!(pool.len() <= 1);
    if let Ok(m) = parsed {
        assert_eq!(m.buffer_len(), data.len());
        assert_eq!(m.to_vec(), data);
    }
});
