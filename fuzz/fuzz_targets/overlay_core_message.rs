//! Decodes arbitrary bytes as an overlay message; whatever decodes must
//! re-encode to exactly the same bytes (the format is canonical). The
//! pooled decoder must agree with the plain one on every input. The
//! identity proof of a link message is checked by a [`KeyIdentity`] (it
//! must refuse, never panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::BufferPool;
use overlay_core::identity::{Role, Transcript};
use overlay_core::wire::{Message, Packet};
use overlay_core::{Identity, KeyIdentity};

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
        let proof = match &m {
            Message::LinkRequest(r) => Some((r.sender, r.nonce, r.challenge, &r.identity)),
            Message::LinkReply(r) => Some((r.sender, r.nonce, r.challenge, &r.identity)),
            _ => None,
        };
        if let Some((sender, nonce, challenge, identity)) = proof {
            let mut me = KeyIdentity::ed25519_with_insecure_seed(1);
            let transcript = Transcript {
                role: Role::Request,
                requester: sender,
                responder: me.address(),
                nonce,
                challenge,
                roles: 0,
                requester_endpoint: "10.0.0.1:1".parse().unwrap(),
            };
            assert!(me.verify(sender, &transcript, identity).is_err());
        }
    }
});
