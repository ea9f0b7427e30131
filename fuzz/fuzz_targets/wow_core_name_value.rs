//! The value of a `name/<host>` DHT record (an IPv4 address and IPv6
//! interface ids): what parses re-emits to the same bytes, and never more
//! than eight interface ids are read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((v4, iids)) = wow_core::records::name_value(data) {
        let iids: Vec<u64> = iids.collect();
        assert!(iids.len() <= 8);
        let mut again = v4.octets().to_vec();
        for iid in iids {
            again.extend_from_slice(&iid.to_be_bytes());
        }
        assert_eq!(again, data);
    }
});
