//! Parses arbitrary bytes as wow-node's data header (the payload of every
//! overlay `Data` message), as a punch request's endpoint list, as a CRL
//! manifest body and a CRL message (the CA node's). (LAN announcements
//! have their own target, `overlay_core_lan`.) What parses must re-emit to
//! the same bytes;
//! nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wow_core::crl_dht::{Manifest, Message};
use wow_core::wire::{Packet, Repr, emit_endpoints, parse_endpoints};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::new_checked(data) {
        let _ = (packet.kind(), packet.source(), packet.destination());
        if let Ok(repr) = Repr::parse(&packet) {
            let mut out = Vec::new();
            repr.emit_with_body(packet.body(), &mut out);
            assert_eq!(out, data);
            let again = Packet::new_checked(&out[..]).unwrap();
            assert_eq!(Repr::parse(&again).unwrap(), repr);
        }
    }
    let endpoints = parse_endpoints(data);
    let mut out = Vec::new();
    emit_endpoints(&endpoints, &mut out);
    assert_eq!(parse_endpoints(&out), endpoints);
    if let Ok(manifest) = Manifest::parse_body(data) {
        assert_eq!(&manifest.to_body()[..], data);
    }
    if let Some(message) = Message::parse(data) {
        assert_eq!(&message.to_bytes()[..], data);
    }
});
