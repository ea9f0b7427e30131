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
    let mut expected = vec![2u8, 0x03];
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
    // Version 1 (before authenticated links and signed records) and any
    // later version are refused with a typed error, whatever follows.
    for version in [0u8, 1, VERSION + 1, 0xff] {
        assert_eq!(
            Message::parse(&[version, 0x04, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::UnsupportedVersion(version))
        );
    }
    assert_eq!(
        Message::parse(&[VERSION, 0x7f]),
        Err(WireError::UnknownKind(0x7f))
    );
    // Close with an unknown reason.
    assert!(matches!(
        Message::parse(&[VERSION, 0x05, 9]),
        Err(WireError::InvalidValue {
            field: "reason",
            ..
        })
    ));
    // A neighbour list announcing more entries than allowed.
    assert!(matches!(
        Message::parse(&[VERSION, 0x06, 0, 0, 0, 0, 200]),
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
    // The unsigned DhtStore of the first DHT (kind 0x07), even with the
    // current version byte.
    assert_eq!(
        Message::parse(&[VERSION, 0x07, 0]),
        Err(WireError::UnknownKind(0x07))
    );
    let routed = |kind: u8, body: &[u8]| {
        let mut v = vec![VERSION, 0x10];
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

/// Every message two real nodes exchange (the link handshake with key
/// proofs, neighbour lists, replication, DHT requests and replies, echo,
/// data) carries [`VERSION`] and round-trips. With `OVERLAY_FUZZ_SEEDS`
/// set to the fuzz corpus folder, the messages are also written there as
/// seeds: one per message shape for `overlay_core_message`, and the
/// short ones as one datagram sequence for `overlay_core_node`.
#[test]
fn exchanged_messages_carry_the_version_and_make_fuzz_seeds() {
    use std::time::{Duration, Instant};

    use overlay_core::{Config, KeyIdentity, Node};

    let ep = |i: u8| SocketAddr::new(IpAddr::from([10, 0, 0, i]), 7000);
    let mut now = Instant::now();
    let mut nodes: Vec<Node<KeyIdentity>> = (1..=2u8)
        .map(|i| {
            let config = Config {
                endpoints: vec![ep(i)],
                ..Config::default()
            };
            let id = KeyIdentity::ed25519_with_insecure_seed(u64::from(i));
            Node::with_identity_and_insecure_seed(now, config, id, u64::from(i))
        })
        .collect();
    nodes[1].join(now, &[]).unwrap();
    nodes[0].join(now, &[ep(2)]).unwrap();
    let mut seen: Vec<Message> = Vec::new();
    for step in 0..400u32 {
        match step {
            // Both nodes write, so that one of each request is routed
            // to the other (the key's node answers its own locally).
            100 => {
                for n in nodes.iter_mut() {
                    n.dht_put(now, b"seed key", b"value", Duration::from_secs(60))
                        .unwrap();
                }
            }
            150 => {
                for n in nodes.iter_mut() {
                    n.dht_get(now, b"seed key").unwrap();
                    n.dht_create(now, b"seed key", b"other", Duration::from_secs(60))
                        .unwrap();
                }
            }
            200 => {
                let b = nodes[1].address();
                nodes[0].echo(now, b).unwrap();
                nodes[0].send(now, b, b"data".to_vec()).unwrap();
            }
            390 => nodes[0].leave(now),
            _ => {}
        }
        let mut in_flight = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            while let Some(t) = n.poll_transmit() {
                in_flight.push((i, t));
            }
            while n.poll_event().is_some() {}
        }
        for (i, t) in in_flight {
            let bytes = t.message.to_vec();
            assert_eq!(bytes[0], VERSION);
            assert_eq!(Message::parse(&bytes).as_ref(), Ok(&t.message));
            if let Some(to) = nodes.get_mut(1 - i) {
                to.handle_input(now, ep(i as u8 + 1), &bytes).unwrap();
            }
            seen.push(t.message);
        }
        now += Duration::from_millis(50);
        for n in nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
    }
    // One of each shape: kind, then the link status, routed payload kind
    // or DHT operation and status.
    let shape = |m: &Message| -> (u8, u8, u8) {
        let b = m.to_vec();
        match m {
            Message::LinkRequest(r) => (b[1], u8::from(r.challenge != 0), 0),
            Message::LinkReply(r) => (b[1], r.status as u8, 0),
            Message::Routed(r) => match &r.payload {
                Payload::DhtRequest { request, .. } => (b[1], b[45], request.op() as u8),
                Payload::DhtReply { status, .. } => (b[1], b[45], *status as u8),
                _ => (b[1], b[45], 0),
            },
            _ => (b[1], 0, 0),
        }
    };
    let mut shapes: Vec<((u8, u8, u8), &Message)> = Vec::new();
    for m in &seen {
        let s = shape(m);
        if !shapes.iter().any(|(t, _)| *t == s) {
            shapes.push((s, m));
        }
    }
    let kinds: Vec<u8> = shapes.iter().map(|((k, _, _), _)| *k).collect();
    for k in [
        kind::LINK_REQUEST,
        kind::LINK_REPLY,
        kind::NEIGHBORS,
        kind::DHT_STORE,
        kind::ROUTED,
        kind::PING,
        kind::PONG,
        kind::CLOSE,
    ] {
        assert!(kinds.contains(&k), "no message of kind {k:#x} in {kinds:?}");
    }
    let routed: Vec<u8> = shapes
        .iter()
        .filter(|((k, _, _), _)| *k == kind::ROUTED)
        .map(|((_, p, _), _)| *p)
        .collect();
    for p in [0x01, 0x03, 0x04, 0x07, 0x08] {
        assert!(
            routed.contains(&p),
            "no routed payload {p:#x} in {routed:?}"
        );
    }
    for op in [DhtOp::Put, DhtOp::Get, DhtOp::Create] {
        assert!(
            shapes
                .iter()
                .any(|(s, _)| *s == (kind::ROUTED, 0x07, op as u8)),
            "no routed {op:?}"
        );
    }
    let Some(dir) = std::env::var_os("OVERLAY_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    for ((k, a, b), m) in &shapes {
        let path = dir
            .join("overlay_core_message")
            .join(format!("seed-v{VERSION}-{k:02x}-{a:02x}-{b:02x}"));
        std::fs::write(path, m.to_vec()).unwrap();
    }
    // The node target: op 0 (a datagram from its bootstrap peer), a length
    // byte, the datagram; op 5 (time passes) between them.
    let mut node_seed = Vec::new();
    for (_, m) in &shapes {
        let b = m.to_vec();
        if let Ok(len) = u8::try_from(b.len()) {
            node_seed.extend([0, len]);
            node_seed.extend(b);
            node_seed.push(5);
        }
    }
    std::fs::write(
        dir.join("overlay_core_node")
            .join(format!("seed-v{VERSION}-messages")),
        node_seed,
    )
    .unwrap();
}
