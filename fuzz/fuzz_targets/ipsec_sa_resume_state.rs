//! The SA state blob handed to the next process of a self-update
//! (`ipsec_sa::resume::State`): parsing never panics, and what parses
//! emits the same bytes again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((state, signed, signature)) = ipsec_sa::resume::State::parse(data) {
        let signature = signature.to_vec();
        assert_eq!(state.emit_unsigned().unwrap(), signed);
        assert_eq!(state.emit(|_| Some(signature)).unwrap(), data);
    }
});
