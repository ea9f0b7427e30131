//! Round trips and model checks over random input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dns_virt::wire::{Sections, emit_response, frame_tcp};
use dns_virt::{AddressRule, NameTable, Request, TcpFramer, Transport, Zone, ZoneConfig};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use proptest::prelude::*;

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9_-]{0,20}"
}

fn rel_name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
}

fn qtype() -> impl Strategy<Value = RecordType> {
    prop::sample::select(vec![
        RecordType::A,
        RecordType::AAAA,
        RecordType::PTR,
        RecordType::SOA,
        RecordType::NS,
        RecordType::TXT,
        RecordType::ANY,
    ])
}

proptest! {
    /// A query emitted by hickory parses back into the same request.
    #[test]
    fn request_round_trip(
        id: u16,
        rd: bool,
        cd: bool,
        name in rel_name(),
        qtype in qtype(),
        edns in prop::option::of((512u16.., 0u8..3, any::<bool>())),
    ) {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = rd;
        m.metadata.checking_disabled = cd;
        let qname = Name::from_ascii(format!("{name}.")).unwrap();
        m.add_query(Query::query(qname.clone(), qtype));
        if let Some((payload, version, dnssec_ok)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            e.set_version(version);
            e.set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
        }
        let req = Request::parse(&m.to_vec().unwrap()).unwrap();
        prop_assert_eq!(req.id, id);
        prop_assert_eq!(req.recursion_desired, rd);
        prop_assert_eq!(req.checking_disabled, cd);
        prop_assert!(req.query.name().eq_case(&qname));
        prop_assert_eq!(req.query.query_type(), qtype);
        prop_assert_eq!(
            req.edns.map(|e| (e.payload, e.version, e.dnssec_ok)),
            edns
        );
    }

    /// A response parses back with the ID, question (case kept) and records,
    /// and a UDP response never exceeds the query's limit.
    #[test]
    fn response_round_trip_within_limit(
        id: u16,
        name in rel_name(),
        addrs in prop::collection::vec(any::<u32>(), 0..80),
        payload in prop::option::of(0u16..5000),
        server_max in 512u16..4096,
        tcp: bool,
    ) {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        let qname = Name::from_ascii(format!("{name}.")).unwrap();
        m.add_query(Query::query(qname.clone(), RecordType::A));
        if let Some(p) = payload {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        let req = Request::parse(&m.to_vec().unwrap()).unwrap();
        let sections = Sections {
            answers: addrs
                .iter()
                .map(|a| Record::from_rdata(qname.clone(), 60, RData::A(A(Ipv4Addr::from(*a)))))
                .collect(),
            ..Sections::default()
        };
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let limit = req.response_limit(transport, server_max);
        let mut out = Vec::new();
        let truncated = emit_response(&req, ResponseCode::NoError, true, &sections, server_max, limit, &mut out);
        prop_assert!(out.len() <= limit);
        let r = Message::from_vec(&out).unwrap();
        prop_assert_eq!(r.metadata.id, id);
        prop_assert_eq!(r.metadata.truncation, truncated);
        prop_assert!(r.queries[0].name().eq_case(&qname));
        prop_assert_eq!(r.edns.is_some(), payload.is_some());
        if truncated {
            prop_assert!(r.answers.is_empty());
            prop_assert!(!tcp);
        } else {
            prop_assert_eq!(&r.answers, &sections.answers);
        }
    }

    /// Framed messages come back out whatever the read boundaries.
    #[test]
    fn tcp_framing_round_trip(
        messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..8),
        cuts in prop::collection::vec(1usize..64, 1..20),
    ) {
        let mut stream = Vec::new();
        let mut framed = Vec::new();
        for m in &messages {
            frame_tcp(m, &mut framed).unwrap();
            stream.extend_from_slice(&framed);
        }
        let mut f = TcpFramer::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            f.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            while let Some(m) = f.next_message().unwrap() {
                got.push(m.to_vec());
            }
        }
        prop_assert_eq!(got, messages);
        prop_assert_eq!(f.buffered(), 0);
    }

    /// Rule names and addresses map one to one inside any network.
    #[test]
    fn rule_round_trip(base: u32, prefix in 8u8..=32, host: u32) {
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(base), prefix).unwrap().trunc();
        let rule = AddressRule::new(net);
        let size = if prefix == 32 { 1 } else { 1u64 << (32 - prefix) };
        let addr = Ipv4Addr::from(u32::from(net.network()) + (u64::from(host) % size) as u32);
        match rule.name_of(addr) {
            Some(name) => prop_assert_eq!(rule.addr_of(name.as_str().to_uppercase().as_bytes()), Some(addr)),
            None => prop_assert!(prefix <= 30 && (addr == net.network() || addr == net.broadcast())),
        }
    }

    /// The name table behaves as a case-insensitive map.
    #[test]
    fn table_matches_model(ops in prop::collection::vec((any::<bool>(), 0u8..40, 0u8..8), 1..300)) {
        let mut t = NameTable::new(5);
        let mut model = HashMap::new();
        for (insert, n, a) in ops {
            let name = if n % 2 == 0 { format!("Host{n}") } else { format!("host{n}.rack") };
            let addr = Ipv4Addr::new(10, 128, 0, a);
            if insert {
                let prev = t.insert(&name, addr, None).unwrap();
                prop_assert_eq!(prev, model.insert(name.to_lowercase(), addr));
            } else {
                prop_assert_eq!(t.remove(&name.to_uppercase()), model.remove(&name.to_lowercase()));
            }
        }
        prop_assert_eq!(t.len(), model.len());
        for (name, addr) in &model {
            prop_assert_eq!(t.get(name), Some(*addr));
        }
    }

    /// Whatever the bytes, the zone answers or drops without panicking, and
    /// a UDP answer stays within 512 octets unless the query carried EDNS.
    #[test]
    fn zone_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let zone = Zone::new(ZoneConfig::default(), 1);
        let mut out = Vec::new();
        zone.respond(&bytes, Transport::Udp, &mut out);
        prop_assert!(out.len() <= 1232);
    }
}

fn service() -> impl Strategy<Value = dns_virt::Service> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        "[a-z0-9][a-z0-9-]{0,20}(\\.[a-z0-9][a-z0-9-]{0,20}){0,2}",
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..30), 0..10),
    )
        .prop_map(|(priority, weight, port, target, txt)| dns_virt::Service {
            priority,
            weight,
            port,
            target,
            txt,
        })
}

proptest! {
    /// A service value decodes to what was encoded, and any cut of it is
    /// refused.
    #[test]
    fn service_value_round_trip(s in service(), cut in any::<prop::sample::Index>()) {
        let bytes = s.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), s.encoded_len());
        prop_assert_eq!(dns_virt::Service::decode(&bytes), Ok(s));
        let cut = cut.index(bytes.len());
        prop_assert!(dns_virt::Service::decode(&bytes[..cut]).is_err());
    }

    /// Whatever decodes re-encodes to the same bytes.
    #[test]
    fn service_value_decode_encode(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(s) = dns_virt::Service::decode(&bytes) {
            prop_assert_eq!(s.to_bytes().unwrap(), bytes);
        }
    }
}
