//! Parses arbitrary bytes as an appliance module's manifest and signature
//! member and as a clean list, and checks the signature policy on them:
//! what parses must re-emit and parse to the same value; a genuine signed
//! manifest verifies only unchanged (the input is spliced into it);
//! nothing may panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wow_node::appliance::manifest::{
    FORMAT, Manifest, ModuleKey, ModuleSignature, check_signature, parse_clean_list,
    pattern_matches,
};

/// A key and a manifest it signed.
fn signed() -> &'static (ModuleKey, Vec<u8>, ModuleSignature) {
    static SIGNED: OnceLock<(ModuleKey, Vec<u8>, ModuleSignature)> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let (key, _) = ModuleKey::generate().unwrap();
        let manifest = Manifest {
            format: FORMAT.into(),
            name: "web".into(),
            created_unix: 1,
            payload_sha256: "00".repeat(32),
            payload_bytes: 10240,
            files: 1,
            whiteouts: vec!["etc/motd".into()],
            opaque_dirs: vec![],
        }
        .emit();
        let sig = key.sign(&manifest);
        (key, manifest, sig)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(Manifest::parse(&m.emit()).unwrap(), m);
    }
    if let Ok(s) = ModuleSignature::parse(data) {
        assert_eq!(ModuleSignature::parse(&s.emit()).unwrap(), s);
    }
    let (key, manifest, sig) = signed();
    let trusted = [key.public_key_hex()];
    // Splice the input into the genuine manifest: it verifies only unchanged.
    let at = data.first().map_or(0, |&b| b as usize % manifest.len());
    let mut spliced = manifest.clone();
    spliced.splice(
        at..(at + data.len().min(8)).min(manifest.len()),
        data.iter().copied().skip(1),
    );
    let verdict = check_signature(&spliced, Some(sig), &trusted);
    assert_eq!(verdict.is_ok(), &spliced == manifest);
    if let Ok(s) = ModuleSignature::parse(data) {
        let _ = check_signature(manifest, Some(&s), &trusted);
    }
    let text = String::from_utf8_lossy(data);
    for pattern in parse_clean_list(&text) {
        let _ = pattern_matches(&pattern, "var/log/syslog");
        let _ = pattern_matches(&pattern, &text);
    }
});
