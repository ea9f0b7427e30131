//! Parses arbitrary bytes as wow-node's data header (the payload of every
//! overlay `Data` message), as a punch request's endpoint list, as a CRL
//! manifest body, a CRL message (the CA node's), a ring-walk message, a central-allocation message and a signed CRL manifest
//! (alone, and spliced into a genuine one). (LAN announcements have their
//! own target, `overlay_core_lan`.) What parses must re-emit to the same
//! bytes; a signed manifest verifies only unchanged; nothing may panic.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use ipsec_ca::{CaIdentity, KeyType, Verifier};
use libfuzzer_sys::fuzz_target;
use wow_core::crl_dht::{Manifest, Message, Published, verify_manifest};
use wow_core::wire::{Packet, Repr, emit_endpoints, parse_endpoints};

/// A CA's verifier and a manifest it signed.
fn signed() -> &'static (Verifier, Vec<u8>) {
    static SIGNED: OnceLock<(Verifier, Vec<u8>)> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ca =
            CaIdentity::create_root(now, KeyType::Ed25519, "fuzz", Duration::from_secs(86_400))
                .unwrap();
        let envelope: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let published = Published::new(&ca, 7, envelope).unwrap();
        (Verifier::new(ca.cert_der()).unwrap(), published.signed)
    })
}

fuzz_target!(|data: &[u8]| {
    let (verifier, genuine) = signed();
    let _ = verify_manifest(verifier, data);
    // The genuine statement with its first bytes replaced by `data`.
    let mut spliced = genuine.clone();
    let n = data.len().min(spliced.len());
    spliced[..n].copy_from_slice(&data[..n]);
    if verify_manifest(verifier, &spliced).is_ok() {
        assert_eq!(&spliced, genuine);
    }
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
    // A ring-walk message: what parses re-emits to the same bytes.
    if let Ok(walk) = wow_core::walk::Message::parse(data) {
        assert_eq!(&walk.to_bytes()[..], data);
    }
    // A central-allocation claim or answer: the same.
    if let Ok(alloc) = wow_core::alloc::Message::parse(data) {
        assert_eq!(&alloc.to_bytes()[..], data);
    }
});
