//! Arbitrary bytes as a service value from the overlay store: decoding
//! never panics, and what decodes encodes back to the same bytes.
#![no_main]

use dns_virt::Service;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(service) = Service::decode(data) {
        assert_eq!(service.to_bytes().ok().as_deref(), Some(data));
    }
});
