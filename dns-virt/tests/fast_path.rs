//! The pre-encoded answer path of [`Zone::respond`] gives the same bytes as
//! the general path ([`Zone::respond_general`]: hickory-proto decoding, zone
//! logic, hickory-proto encoding) for every query: registered, missing,
//! service, rule, apex and outside names, in any case; every type and class;
//! random header bits; EDNS versions, flags and options; trailing bytes;
//! UDP and TCP; a server payload that forces truncation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use std::time::Instant;

use dns_virt::{Config, Mode, Outcome, Server, Transport, Zone, ZoneConfig};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use proptest::prelude::*;

/// A registered name whose answer exceeds 100 octets: a server payload of
/// 100 truncates it.
const LONG: &str = "llllllllllllllllllllllllllllllllllllllllllllllllllllllllllll.long";

fn zone(max_udp_payload: u16) -> Zone {
    let mut zone = Zone::new(
        ZoneConfig {
            zone: "wow.internal.".parse().unwrap(),
            ns_addr: Some(Ipv4Addr::new(10, 128, 0, 1)),
            max_udp_payload,
            ..ZoneConfig::default()
        },
        9,
    );
    for (i, name) in ["alpha", "bravo", "c.d", "x-1", "_sip._udp", LONG]
        .iter()
        .enumerate()
    {
        zone.insert(name, Ipv4Addr::new(10, 128, 1, i as u8 + 2), None)
            .unwrap();
    }
    zone
}

/// A wire name from dot-separated labels (the empty string is the root).
fn wire_name(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in text.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

fn names() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "alpha.wow.internal",
        "bravo.wow.internal",
        "c.d.wow.internal",
        "llllllllllllllllllllllllllllllllllllllllllllllllllllllllllll.long.wow.internal",
        "d.wow.internal",
        "x-1.wow.internal",
        "missing.wow.internal",
        "ns.wow.internal",
        "c010128000005.wow.internal",
        "_sip._udp.wow.internal",
        "_sip._udp.alpha.wow.internal",
        "wow.internal",
        "internal",
        "alpha.wow",
        "alpha.wow.internal.evil",
        "alpha.other.internal",
        "5.0.128.10.in-addr.arpa",
        "",
    ])
    .prop_map(String::from)
}

/// Each ASCII letter's case flipped where `mask` has a bit set.
fn mixed_case(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
struct Shape {
    id: u16,
    flags: [u8; 2],
    counts: Option<[u8; 8]>,
    name: String,
    case: u64,
    qtype: u16,
    qclass: u16,
    /// payload, extended RCODE, version, flags, options.
    opt: Option<(u16, u8, u8, u16, Vec<u8>)>,
    trailing: Vec<u8>,
}

fn shapes() -> impl Strategy<Value = Shape> {
    // Common flag bytes, with one bit flipped one time in two: QR, opcode,
    // AA, TC, Z and RCODE bits each get their turn.
    let flags = (
        prop::sample::select(vec![
            [0x01u8, 0x00],
            [0x00, 0x00],
            [0x01, 0x20],
            [0x01, 0x10],
        ]),
        prop::option::of(0u16..16),
    )
        .prop_map(|(base, bit)| {
            let f = u16::from_be_bytes(base) ^ bit.map_or(0, |b| 1 << b);
            f.to_be_bytes()
        });
    let opt = prop::option::of((
        prop_oneof![
            Just(512u16),
            Just(1232),
            Just(4096),
            Just(100),
            any::<u16>()
        ],
        prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
        prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
        prop_oneof![Just(0u16), Just(0x8000), any::<u16>()],
        prop_oneof![
            3 => Just(Vec::new()),
            1 => Just(vec![0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
            1 => prop::collection::vec(any::<u8>(), 0..12),
        ],
    ));
    (
        any::<u16>(),
        flags,
        prop_oneof![8 => Just(None), 1 => any::<[u8; 8]>().prop_map(Some)],
        names(),
        any::<u64>(),
        prop_oneof![4 => Just(1u16), 1 => prop::sample::select(vec![28u16, 255, 12, 6, 2, 16, 33])],
        prop_oneof![4 => Just(1u16), 1 => prop::sample::select(vec![3u16, 255, 254, 4])],
        opt,
        prop_oneof![8 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 1..4)],
    )
        .prop_map(
            |(id, flags, counts, name, case, qtype, qclass, opt, trailing)| Shape {
                id,
                flags,
                counts,
                name,
                case,
                qtype,
                qclass,
                opt,
                trailing,
            },
        )
}

fn encode(s: &Shape) -> Vec<u8> {
    let mut q = s.id.to_be_bytes().to_vec();
    q.extend_from_slice(&s.flags);
    match s.counts {
        Some(c) => q.extend_from_slice(&c),
        None => q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(s.opt.is_some())]),
    }
    q.extend_from_slice(&wire_name(&mixed_case(&s.name, s.case)));
    q.extend_from_slice(&s.qtype.to_be_bytes());
    q.extend_from_slice(&s.qclass.to_be_bytes());
    if let Some((payload, ext_rcode, version, flags, options)) = &s.opt {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&payload.to_be_bytes());
        q.extend_from_slice(&[*ext_rcode, *version]);
        q.extend_from_slice(&flags.to_be_bytes());
        q.extend_from_slice(&(options.len() as u16).to_be_bytes());
        q.extend_from_slice(options);
    }
    q.extend_from_slice(&s.trailing);
    q
}

fn both(zone: &Zone, query: &[u8], transport: Transport) -> (Vec<u8>, Outcome, Outcome) {
    let mut fast = Vec::new();
    let mut general = vec![0xaa; 3];
    let o_fast = zone.respond(query, transport, &mut fast);
    let o_general = zone.respond_general(query, transport, &mut general);
    assert_eq!(
        fast, general,
        "query {query:02x?} on {transport:?}: respond and respond_general differ"
    );
    (fast, o_fast, o_general)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn fast_path_answers_as_the_general_path(shape in shapes()) {
        let query = encode(&shape);
        for zone in [zone(1232), zone(100), zone(4096)] {
            for transport in [Transport::Udp, Transport::Tcp] {
                let (_, fast, general) = both(&zone, &query, transport);
                prop_assert_eq!(fast, general);
            }
        }
    }

    /// The server state machine takes the same path: whatever it answers
    /// at once to a query the fast path takes is the general path's answer.
    #[test]
    fn server_fast_answers_as_the_general_path(shape in shapes(), decentralised: bool) {
        let query = encode(&shape);
        let reference = zone(1232);
        let now = Instant::now();
        let mut server = Server::new(Config {
            zone: reference.config().clone(),
            mode: if decentralised { Mode::Decentralised } else { Mode::Local },
            ..Config::default()
        });
        for (name, addr) in reference.table().iter() {
            server.register(now, name, addr, None).unwrap();
        }
        let mut out = Vec::new();
        let fast = server.zone().respond_fast(&query, Transport::Udp, &mut out);
        let mut general = Vec::new();
        server.zone().respond_general(&query, Transport::Udp, &mut general);
        server.handle_input(now, "10.128.0.2:5353".parse().unwrap(), Transport::Udp, &query);
        if fast {
            prop_assert_eq!(&out, &general);
            let sent = server.poll_transmit().unwrap();
            prop_assert_eq!(&sent.payload, &general);
            prop_assert!(server.poll_transmit().is_none());
        }
    }

    /// Arbitrary bytes, and the common query with one byte changed.
    #[test]
    fn fast_path_agrees_on_garbage(
        bytes in prop::collection::vec(any::<u8>(), 0..80),
        at: prop::sample::Index,
        byte: u8,
    ) {
        let zone = zone(1232);
        both(&zone, &bytes, Transport::Udp);
        let mut common = encode(&Shape {
            id: 7,
            flags: [1, 0],
            counts: None,
            name: "alpha.wow.internal".into(),
            case: 0,
            qtype: 1,
            qclass: 1,
            opt: Some((1232, 0, 0, 0, Vec::new())),
            trailing: Vec::new(),
        });
        let i = at.index(common.len());
        common[i] = byte;
        both(&zone, &common, Transport::Udp);
    }
}

/// The equality above is not vacuous: the common query is answered, with
/// the address, the question's case and the OPT.
#[test]
fn common_query_is_answered_with_case_and_edns() {
    let zone = zone(1232);
    let query = encode(&Shape {
        id: 0xbeef,
        flags: [0x01, 0x10],
        counts: None,
        name: "AlPhA.WOW.internal".into(),
        case: 0,
        qtype: 1,
        qclass: 1,
        opt: Some((4096, 0, 0, 0x8000, Vec::new())),
        trailing: Vec::new(),
    });
    let (bytes, outcome, _) = both(&zone, &query, Transport::Udp);
    assert_eq!(
        outcome,
        Outcome::Answered {
            rcode: ResponseCode::NoError,
            truncated: false
        }
    );
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(m.metadata.id, 0xbeef);
    assert!(m.metadata.authoritative && m.metadata.recursion_desired);
    assert!(m.metadata.checking_disabled);
    assert_eq!(m.queries[0].name().to_ascii(), "AlPhA.WOW.internal.");
    assert_eq!(m.answers[0].name.to_ascii(), "AlPhA.WOW.internal.");
    assert_eq!(
        m.answers[0].data,
        RData::A(Ipv4Addr::new(10, 128, 1, 2).into())
    );
    assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
}

/// A wire label holding a dot is one label: `c.d` as a single label under
/// the zone is not the registered two-label name `c.d`, on either path.
#[test]
fn a_label_with_a_dot_is_not_two_labels() {
    let zone = zone(1232);
    let name_at = 12;
    let mut query = encode(&Shape {
        id: 0x1234,
        flags: [0x01, 0x00],
        counts: None,
        name: "c.d.wow.internal".into(),
        case: 0,
        qtype: 1,
        qclass: 1,
        opt: None,
        trailing: Vec::new(),
    });
    // The two labels as sent by `encode` are answered …
    let (bytes, _, _) = both(&zone, &query, Transport::Udp);
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(
        m.answers[0].data,
        RData::A(Ipv4Addr::new(10, 128, 1, 4).into())
    );
    // … the one label `c.d` (length 3, then `c`, `.`, `d`) is not.
    assert_eq!(&query[name_at..name_at + 4], b"\x01c\x01d");
    query.splice(name_at..name_at + 4, *b"\x03c.d");
    let (bytes, outcome, _) = both(&zone, &query, Transport::Udp);
    assert_eq!(
        outcome,
        Outcome::Answered {
            rcode: ResponseCode::NXDomain,
            truncated: false
        }
    );
    assert!(Message::from_vec(&bytes).unwrap().answers.is_empty());
}

/// Nor does a decentralised server take such a label to its store, or
/// read it as a service's host: it answers NXDOMAIN at once.
#[test]
fn a_label_with_a_dot_never_reaches_the_store() {
    let now = Instant::now();
    let mut server = Server::new(Config {
        zone: zone(1232).config().clone(),
        mode: Mode::Decentralised,
        ..Config::default()
    });
    for (wire, qtype) in [
        (&b"\x03c.d\x03wow\x08internal\x00"[..], 1u16),
        (b"\x04_sip\x04_udp\x03c.d\x03wow\x08internal\x00", 33),
    ] {
        let mut query = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(wire);
        query.extend_from_slice(&qtype.to_be_bytes());
        query.extend_from_slice(&1u16.to_be_bytes());
        server.handle_input(
            now,
            "10.128.0.2:5353".parse().unwrap(),
            Transport::Udp,
            &query,
        );
        assert!(server.poll_store_request().is_none(), "{wire:02x?}");
        let sent = server.poll_transmit().expect("an answer at once");
        let m = Message::from_vec(&sent.payload).unwrap();
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{wire:02x?}"
        );
        assert!(m.answers.is_empty());
    }
}
