//! Decodes arbitrary bytes as an overlay message; whatever decodes must
//! re-encode to exactly the same bytes (the format is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::wire::{Message, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (p.version(), p.kind());
    }
    if let Ok(m) = Message::parse(data) {
        assert_eq!(m.buffer_len(), data.len());
        assert_eq!(m.to_vec(), data);
    }
});
