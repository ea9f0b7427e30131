//! Wire format: round trips for every message and rejection of bad input.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use core::net::{IpAddr, SocketAddr};

use overlay_core::WireError;
use overlay_core::record::{KeyType, WriterKey};
use overlay_core::wire::*;
use overlay_core::{Address, BufferPool};
use proptest::collection::vec;
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = Address> {
    any::<[u8; 20]>().prop_map(Address::from_bytes)
}

fn endpoint() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::from(a), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::from(a), p)),
    ]
}

fn roles() -> impl Strategy<Value = Roles> {
    (0u8..16).prop_map(Roles)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn record() -> impl Strategy<Value = Record> {
    (
        bytes(MAX_KEY_LEN),
        bytes(64),
        any::<u32>(),
        any::<u64>(),
        prop_oneof![
            vec(any::<u8>(), 32).prop_map(|k| (KeyType::Ed25519, k)),
            vec(any::<u8>(), 65).prop_map(|k| (KeyType::EcdsaP256, k)),
        ],
        bytes(80),
        bytes(MAX_SIGNATURE_LEN),
    )
        .prop_map(
            |(
                key,
                value,
                lifetime_secs,
                version,
                (key_type, public_key),
                credential,
                signature,
            )| {
                Record {
                    key,
                    value,
                    lifetime_secs,
                    version,
                    writer: WriterKey {
                        key_type,
                        public_key,
                    },
                    credential,
                    signature,
                }
            },
        )
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        bytes(64).prop_map(Payload::Data),
        (roles(), any::<u64>(), vec(endpoint(), 0..=MAX_ENDPOINTS)).prop_map(
            |(roles, nonce, endpoints)| Payload::ConnectToMe {
                roles,
                nonce,
                endpoints
            }
        ),
        any::<u64>().prop_map(|id| Payload::EchoRequest { id }),
        (any::<u64>(), any::<u8>())
            .prop_map(|(id, request_hops)| Payload::EchoReply { id, request_hops }),
        (
            any::<u64>(),
            prop_oneof![
                bytes(MAX_KEY_LEN).prop_map(|key| DhtRequest::Get { key }),
                record().prop_map(DhtRequest::Put),
                record().prop_map(DhtRequest::Create),
            ]
        )
            .prop_map(|(id, request)| Payload::DhtRequest {
                id,
                request: Box::new(request)
            }),
        (
            any::<u64>(),
            prop_oneof![
                Just(DhtStatus::Ok),
                Just(DhtStatus::Exists),
                Just(DhtStatus::Full),
                Just(DhtStatus::Rejected),
                Just(DhtStatus::Stale),
                Just(DhtStatus::QuotaExceeded)
            ],
            vec(record(), 0..=4)
        )
            .prop_map(|(id, status, records)| Payload::DhtReply {
                id,
                status,
                records
            }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            addr(),
            addr(),
            roles(),
            vec(endpoint(), 0..=MAX_ENDPOINTS),
            bytes(64)
        )
            .prop_map(|(nonce, sender, target, roles, endpoints, identity)| {
                Message::LinkRequest(LinkRequest {
                    nonce,
                    challenge: nonce.rotate_left(7),
                    sender,
                    target,
                    roles,
                    endpoints,
                    identity,
                })
            }),
        (
            any::<u64>(),
            addr(),
            prop_oneof![
                Just(LinkStatus::Accepted),
                Just(LinkStatus::Full),
                Just(LinkStatus::IdentityRejected),
                Just(LinkStatus::WrongTarget),
                Just(LinkStatus::Challenge)
            ],
            roles(),
            endpoint(),
            vec(endpoint(), 0..=MAX_ENDPOINTS),
            bytes(64)
        )
            .prop_map(
                |(nonce, sender, status, roles, observed, endpoints, identity)| {
                    Message::LinkReply(LinkReply {
                        nonce,
                        challenge: nonce ^ 0x5a5a,
                        sender,
                        status,
                        roles,
                        observed,
                        endpoints,
                        identity,
                    })
                }
            ),
        (addr(), any::<u64>()).prop_map(|(sender, nonce)| Message::Ping { sender, nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        prop_oneof![
            Just(CloseReason::Leaving),
            Just(CloseReason::Unneeded),
            Just(CloseReason::Full)
        ]
        .prop_map(|reason| Message::Close { reason }),
        (
            any::<u32>(),
            vec(
                (addr(), roles()).prop_map(|(address, roles)| Neighbor { address, roles }),
                0..=MAX_NEIGHBORS
            )
        )
            .prop_map(|(size_estimate, neighbors)| Message::Neighbors {
                size_estimate,
                neighbors
            }),
        vec(
            (record(), any::<u32>()).prop_map(|(record, remaining_secs)| Replica {
                record,
                remaining_secs
            }),
            0..=4
        )
        .prop_map(Message::DhtStore),
        (
            addr(),
            addr(),
            prop_oneof![
                Just(Mode::Exact),
                Just(Mode::Closest),
                Just(Mode::ClosestOther)
            ],
            any::<u8>(),
            any::<u8>(),
            payload()
        )
            .prop_map(|(source, destination, mode, a, b, payload)| {
                Message::Routed(Routed {
                    source,
                    destination,
                    mode,
                    hops: a.min(b),
                    hop_limit: a.max(b),
                    payload,
                })
            }),
    ]
}

proptest! {
    #[test]
    fn round_trip(m in message()) {
        let len = m.buffer_len();
        // Pre-fill so that a field emit misses shows up.
        let mut buf = vec![0xa5u8; len];
        prop_assert_eq!(m.emit(&mut buf), len);
        prop_assert_eq!(Message::parse(&buf), Ok(m.clone()));
        // Every strict prefix is rejected, never accepted or panicking.
        for cut in [0, 1, len / 2, len - 1] {
            if cut < len {
                prop_assert!(Message::parse(&buf[..cut]).is_err());
            }
        }
        // Trailing garbage is rejected.
        let mut longer = buf.clone();
        longer.push(0);
        prop_assert_eq!(Message::parse(&longer), Err(WireError::TrailingBytes(1)));
        prop_assert!(len <= MAX_MESSAGE_LEN);
    }

    #[test]
    fn parse_with_equals_parse(m in message(), cut in any::<prop::sample::Index>()) {
        let mut pool = BufferPool::new(2);
        let buf = m.to_vec();
        prop_assert_eq!(Message::parse_with(&buf, &mut pool), Message::parse(&buf));
        // A data message given back is reused for the next parse.
        Message::parse_with(&buf, &mut pool).unwrap().recycle_into(&mut pool);
        let data = matches!(&m, Message::Routed(Routed { payload: Payload::Data(_), .. }));
        prop_assert_eq!(pool.len(), usize::from(data));
        prop_assert_eq!(Message::parse_with(&buf, &mut pool), Ok(m.clone()));
        // Bad input: the same error, and any buffer taken goes back.
        let mut pool = BufferPool::new(2);
        let cut = cut.index(buf.len());
        prop_assert_eq!(Message::parse_with(&buf[..cut], &mut pool), Message::parse(&buf[..cut]));
        let mut longer = buf.clone();
        longer.push(0);
        prop_assert_eq!(
            Message::parse_with(&longer, &mut pool),
            Err(WireError::TrailingBytes(1))
        );
        prop_assert_eq!(pool.len(), usize::from(data));
    }

    #[test]
    fn parse_never_panics(data in vec(any::<u8>(), 0..200)) {
        let mut pool = BufferPool::new(1);
        prop_assert_eq!(Message::parse_with(&data, &mut pool), Message::parse(&data));
    }

    #[test]
    fn header_view_matches_repr(m in message()) {
        let buf = m.to_vec();
        let p = Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(p.version(), VERSION);
        prop_assert_eq!(p.kind(), m.kind());
        if let Message::Routed(r) = &m {
            prop_assert_eq!(p.source(), r.source);
            prop_assert_eq!(p.destination(), r.destination);
            prop_assert_eq!(p.hops(), r.hops);
            prop_assert_eq!(p.hop_limit(), r.hop_limit);
        }
    }
}

#[test]
fn longest_messages_fit_the_documented_buffers() {
    let routed = |payload| {
        Message::Routed(Routed {
            source: Address::ZERO,
            destination: Address::ZERO,
            mode: Mode::Exact,
            hops: 0,
            hop_limit: 64,
            payload,
        })
    };
    let data = routed(Payload::Data(vec![7; MAX_DATA_LEN]));
    assert_eq!(data.buffer_len(), MAX_DATA_MESSAGE_LEN);
    let record = Record {
        key: vec![1; MAX_KEY_LEN],
        value: vec![2; MAX_VALUE_LEN],
        lifetime_secs: 1,
        version: 2,
        writer: WriterKey {
            key_type: KeyType::EcdsaP256,
            public_key: vec![4; MAX_PUBLIC_KEY_LEN],
        },
        credential: vec![5; MAX_CREDENTIAL_LEN],
        signature: vec![6; MAX_SIGNATURE_LEN],
    };
    assert_eq!(record.buffer_len(), MAX_RECORD_LEN);
    let reply = routed(Payload::DhtReply {
        id: 1,
        status: DhtStatus::Ok,
        records: vec![record.clone(); MAX_VALUES_PER_KEY],
    });
    assert_eq!(reply.buffer_len(), MAX_DHT_REPLY_LEN);
    assert!(reply.buffer_len() <= MAX_MESSAGE_LEN);
    // The node cuts a DhtStore at MAX_DHT_STORE_LEN: as many longest
    // records as fit.
    let replica = Replica {
        record,
        remaining_secs: 1,
    };
    let n = (MAX_DHT_STORE_LEN - 3) / (MAX_RECORD_LEN + 4);
    let store = Message::DhtStore(vec![replica; n]);
    assert!(store.buffer_len() <= MAX_DHT_STORE_LEN);
    const { assert!(MAX_DHT_STORE_LEN <= MAX_MESSAGE_LEN && MAX_MESSAGE_LEN <= 65_507) };
    for m in [data, store, reply] {
        assert_eq!(Message::parse(&m.to_vec()), Ok(m));
    }
}

#[test]
fn ping_fixture() {
    let m = Message::Ping {
        sender: Address::from_bytes([0x11; 20]),
        nonce: 0x0102_0304_0506_0708,
    };
    let mut expected = vec![1u8, 0x03];
    expected.extend([0x11; 20]);
    expected.extend([1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(m.to_vec(), expected);
}

#[test]
fn rejects_bad_input() {
    assert!(matches!(
        Message::parse(&[]),
        Err(WireError::Truncated { .. })
    ));
    assert_eq!(
        Message::parse(&[2, 0x04, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(WireError::UnsupportedVersion(2))
    );
    assert_eq!(
        Message::parse(&[1, 0x7f]),
        Err(WireError::UnknownKind(0x7f))
    );
    // Close with an unknown reason.
    assert!(matches!(
        Message::parse(&[1, 0x05, 9]),
        Err(WireError::InvalidValue {
            field: "reason",
            ..
        })
    ));
    // A neighbour list announcing more entries than allowed.
    assert!(matches!(
        Message::parse(&[1, 0x06, 0, 0, 0, 0, 200]),
        Err(WireError::TooLong {
            field: "neighbors",
            ..
        })
    ));
    // A routed header with hops beyond the hop limit.
    let m = Message::Routed(Routed {
        source: Address::ZERO,
        destination: Address::ZERO,
        mode: Mode::Exact,
        hops: 3,
        hop_limit: 3,
        payload: Payload::EchoRequest { id: 1 },
    });
    let mut b = m.to_vec();
    let mut p = Packet::new_checked(&mut b[..]).unwrap();
    p.set_hops(4);
    assert!(matches!(
        Message::parse(&b),
        Err(WireError::InvalidValue { field: "hops", .. })
    ));
    // A data payload longer than the limit.
    let mut b = Message::Routed(Routed {
        source: Address::ZERO,
        destination: Address::ZERO,
        mode: Mode::Exact,
        hops: 0,
        hop_limit: 3,
        payload: Payload::Data(vec![0; 4]),
    })
    .to_vec();
    let n = b.len();
    b[n - 6] = 0xff;
    b[n - 5] = 0xff;
    assert!(matches!(
        Message::parse(&b),
        Err(WireError::TooLong { field: "data", .. })
    ));
}

#[test]
fn retired_unsigned_dht_codes_and_bad_writer_keys_are_rejected() {
    // The unsigned DhtStore of wire version 1's first DHT.
    assert_eq!(
        Message::parse(&[1, 0x07, 0]),
        Err(WireError::UnknownKind(0x07))
    );
    let routed = |kind: u8, body: &[u8]| {
        let mut v = vec![1u8, 0x10];
        v.extend([0; 40]);
        v.extend([0, 0, 64, kind]);
        v.extend(body);
        v
    };
    assert_eq!(
        Message::parse(&routed(0x05, &[0; 8])),
        Err(WireError::UnknownPayload(0x05))
    );
    let record = Record {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lifetime_secs: 1,
        version: 1,
        writer: WriterKey {
            key_type: KeyType::Ed25519,
            public_key: vec![9; 32],
        },
        credential: Vec::new(),
        signature: vec![1; 64],
    };
    let good = Message::DhtStore(vec![Replica {
        record: record.clone(),
        remaining_secs: 1,
    }]);
    assert!(Message::parse(&good.to_vec()).is_ok());
    // An Ed25519 key of P-256 length.
    let mut bad = record.clone();
    bad.writer.public_key = vec![9; 65];
    let bad = Message::DhtStore(vec![Replica {
        record: bad,
        remaining_secs: 1,
    }]);
    assert!(matches!(
        Message::parse(&bad.to_vec()),
        Err(WireError::InvalidValue { .. })
    ));
    // An unknown key type (the byte after key, value, lifetime, version).
    let mut bytes = good.to_vec();
    let at = 3 + 2 + 3 + 4 + 8;
    assert_eq!(bytes[at], 1);
    bytes[at] = 7;
    assert!(matches!(
        Message::parse(&bytes),
        Err(WireError::InvalidValue { .. })
    ));
}
