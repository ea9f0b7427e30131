//! Property tests: wire round trips, parsers that never panic, state
//! encoding, and CA invariants under random operation sequences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use ipsec_ca::wire::{CrlEnvelope, EnrolmentMessage, RejectReason};
use ipsec_ca::{
    Ca, CaIdentity, CaState, IssuedRecord, KeyType, MemStore, NodeKey, NodeRequest, OverlayAddress,
    PendingRecord, Policy, RevocationReason, Verifier,
};
use proptest::prelude::*;
use std::time::{Duration, SystemTime};

fn reason() -> impl Strategy<Value = RejectReason> {
    any::<u8>().prop_map(RejectReason::from_u8)
}

fn message_parts() -> impl Strategy<Value = (u8, u64, u64, Vec<u8>, RejectReason)> {
    (
        0u8..4,
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        reason(),
    )
}

fn build(parts: &(u8, u64, u64, Vec<u8>, RejectReason)) -> EnrolmentMessage<'_> {
    let (kind, request_id, queue_id, bytes, reason) = parts;
    match kind {
        0 => EnrolmentMessage::Request {
            request_id: *request_id,
            csr: bytes,
        },
        1 => EnrolmentMessage::Pending {
            request_id: *request_id,
            queue_id: *queue_id,
        },
        2 => EnrolmentMessage::Issued {
            request_id: *request_id,
            certificate: bytes,
        },
        _ => EnrolmentMessage::Rejected {
            request_id: *request_id,
            reason: *reason,
        },
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

struct Fixture {
    ca_pem: (String, String),
    /// csrs[key][ip]
    csrs: Vec<Vec<Vec<u8>>>,
}

const IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 0, 1),
    Ipv4Addr::new(10, 0, 0, 2),
    Ipv4Addr::new(10, 0, 0, 3),
];

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let id = CaIdentity::create_root(
            t0(),
            KeyType::Ed25519,
            "p",
            Duration::from_secs(3650 * 86_400),
        )
        .unwrap();
        let csrs = (0..3)
            .map(|_| {
                let key = NodeKey::generate(KeyType::Ed25519).unwrap();
                IPS.iter()
                    .map(|ip| key.certificate_request(&NodeRequest::new(*ip)).unwrap())
                    .collect()
            })
            .collect();
        Fixture {
            ca_pem: (id.cert_pem(), id.key_pem()),
            csrs,
        }
    })
}

#[derive(Debug, Clone)]
enum Op {
    Sign { key: usize, ip: usize },
    Revoke { nth: usize },
    Advance { days: u64 },
    Crl,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3, 0usize..3).prop_map(|(key, ip)| Op::Sign { key, ip }),
        1 => any::<usize>().prop_map(|nth| Op::Revoke { nth }),
        1 => (1u64..40).prop_map(|days| Op::Advance { days }),
        1 => Just(Op::Crl),
    ]
}

proptest! {
    #[test]
    fn enrolment_round_trip(parts in message_parts()) {
        let msg = build(&parts);
        let bytes = msg.to_bytes();
        prop_assert_eq!(bytes.len(), msg.buffer_len());
        prop_assert_eq!(EnrolmentMessage::parse(&bytes), Ok(msg));
    }

    #[test]
    fn envelope_round_trip(number in any::<u64>(), crl in proptest::collection::vec(any::<u8>(), 0..500)) {
        let env = CrlEnvelope { crl_number: number, crl: &crl };
        let bytes = env.to_bytes();
        prop_assert_eq!(CrlEnvelope::parse(&bytes), Ok(env));
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = EnrolmentMessage::parse(&bytes);
        let _ = CrlEnvelope::parse(&bytes);
        let _ = ipsec_ca::parse_csr(&bytes);
        let f = fixture();
        let id = CaIdentity::from_pem(&f.ca_pem.0, &f.ca_pem.1, None).unwrap();
        let mut v = Verifier::new(id.cert_der()).unwrap();
        let _ = v.verify(t0(), &bytes, IPS[0]);
        let _ = v.set_crl(t0(), &bytes);
        prop_assert_eq!(v.crl_number(), 0);
    }

    #[test]
    fn overlay_uri_round_trip(bytes in any::<[u8; 20]>()) {
        let addr = OverlayAddress(bytes);
        prop_assert_eq!(OverlayAddress::from_uri(&addr.to_uri()).ok(), Some(addr));
    }

    #[test]
    fn state_round_trip(
        serials in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..5),
        crl_number in any::<u64>(),
        revoked in any::<bool>(),
    ) {
        let state = CaState {
            crl_number,
            next_pending_id: 3,
            issued: serials.iter().map(|s| IssuedRecord {
                serial: s.clone(),
                virtual_ip: Ipv4Addr::new(10, 0, 0, s[0]),
                spki: s.clone(),
                issued_at: -5,
                not_after: i64::MAX,
                certificate: s.clone(),
                revoked_at: revoked.then_some(7),
                revocation_reason: revoked.then_some(RevocationReason::Superseded),
            }).collect(),
            pending: vec![PendingRecord {
                id: 2,
                source_ip: Ipv4Addr::new(1, 2, 3, 4),
                request_id: u64::MAX,
                received_at: 0,
                validity_secs: 10,
                csr: vec![0, 255],
            }],
            ..CaState::default()
        };
        prop_assert_eq!(CaState::decode(&state.encode()).unwrap(), state);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the sequence: at most one live certificate per IP, serials
    /// unique, the verifier agrees with the index, CRL numbers increase.
    #[test]
    fn ca_invariants(ops in proptest::collection::vec(op(), 1..25), seed in any::<[u8; 32]>()) {
        let f = fixture();
        let id = CaIdentity::from_pem(&f.ca_pem.0, &f.ca_pem.1, None).unwrap();
        let mut ca = Ca::open_with_insecure_seed(id, Policy::default(), MemStore::default(), seed).unwrap();
        let mut verifier = Verifier::new(ca.identity().cert_der()).unwrap();
        let mut now = t0();
        let mut last_crl = 0;
        for op in ops {
            match op {
                Op::Sign { key, ip } => {
                    let _ = ca.sign(now, &f.csrs[key][ip], IPS[ip], None);
                }
                Op::Revoke { nth } => {
                    if !ca.issued().is_empty() {
                        let serial = ca.issued()[nth % ca.issued().len()].serial.clone();
                        let _ = ca.revoke(now, &serial, RevocationReason::KeyCompromise);
                    }
                }
                Op::Advance { days } => now += Duration::from_secs(days * 86_400),
                Op::Crl => {
                    let crl = ca.issue_crl(now).unwrap();
                    prop_assert!(crl.number > last_crl);
                    last_crl = crl.number;
                    verifier.handle_crl_envelope(now, &crl.envelope()).unwrap();
                }
            }
            let mut serials = HashSet::new();
            for rec in ca.issued() {
                prop_assert!(serials.insert(rec.serial.clone()));
            }
            for ip in IPS {
                let live = ca.issued().iter().filter(|r| r.virtual_ip == ip && r.is_live(now)).count();
                prop_assert!(live <= 1, "{} live certificates for {}", live, ip);
            }
        }
        // With a CRL issued now, the verifier accepts exactly the live certificates
        // (ignoring superseded-but-unlisted ones, which the CRL does list).
        let crl = ca.issue_crl(now).unwrap();
        verifier.handle_crl_envelope(now, &crl.envelope()).unwrap();
        let now_s = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        for rec in ca.issued() {
            let ok = verifier.verify(now, &rec.certificate, rec.virtual_ip).is_ok();
            prop_assert_eq!(ok, rec.is_live(now) && now_s >= rec.issued_at);
        }
    }
}
