//! Enrolment messages: parse/emit round trip, and the CA state machine fed
//! arbitrary messages from an arbitrary source.
//!
//! The first input byte picks the source IP's last octet (bit 7 of it also
//! switches automatic approval); the rest is the message.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use ipsec_ca::wire::EnrolmentMessage;
use ipsec_ca::{Ca, CaIdentity, KeyType, MemStore, Policy};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ca_pem() -> &'static (String, String) {
    static PEM: OnceLock<(String, String)> = OnceLock::new();
    PEM.get_or_init(|| {
        let id = CaIdentity::create_root(
            now(),
            KeyType::Ed25519,
            "fuzz",
            Duration::from_secs(3650 * 86_400),
        )
        .unwrap();
        (id.cert_pem(), id.key_pem())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    if let Ok(msg) = EnrolmentMessage::parse(bytes) {
        assert_eq!(msg.to_bytes(), bytes);
    }
    let (cert, key) = ca_pem();
    let identity = CaIdentity::from_pem(cert, key, None).unwrap();
    let policy = Policy {
        auto_approve: knobs & 0x80 != 0,
        ..Policy::default()
    };
    let mut ca =
        Ca::open_with_insecure_seed(identity, policy, MemStore::default(), [0; 32]).unwrap();
    let source = Ipv4Addr::new(10, 0, 0, knobs & 0x7f);
    match ca.handle_enrolment(now(), source, bytes) {
        Ok(()) => {
            let reply = ca.poll_transmit().unwrap();
            assert_eq!(reply.destination, source);
            let verifier = ipsec_ca::Verifier::new(ca.identity().cert_der()).unwrap();
            let body = verifier
                .verify_statement(ipsec_ca::wire::enrol::REPLY_LABEL, &reply.payload)
                .unwrap();
            let reply = EnrolmentMessage::parse(body).unwrap();
            assert_eq!(
                reply.request_id(),
                EnrolmentMessage::parse(bytes).unwrap().request_id()
            );
            match reply {
                EnrolmentMessage::Issued { .. } => assert_eq!(ca.issued().len(), 1),
                EnrolmentMessage::Pending { .. } => assert_eq!(ca.pending().len(), 1),
                EnrolmentMessage::Rejected { .. } => {
                    assert!(ca.issued().is_empty() && ca.pending().is_empty())
                }
                EnrolmentMessage::Request { .. } | EnrolmentMessage::TokenRequest { .. } => {
                    panic!("CA sent a request")
                }
            }
        }
        Err(_) => {
            assert!(ca.issued().is_empty() && ca.pending().is_empty());
            assert!(ca.poll_transmit().is_none());
        }
    }
    assert!(ca.poll_transmit().is_none());
});
