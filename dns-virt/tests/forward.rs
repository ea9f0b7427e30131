//! Split DNS: queries outside the zones forwarded upstream, checked and
//! cached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dns_virt::{Config, Event, Forward, ForwardError, Server, Transport};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

fn client(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 128, 0, 2], port))
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn query(id: u16, qname: &str, qtype: RecordType) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    m
}

fn forwarding() -> Server {
    Server::new(Config {
        forward: true,
        ..Config::default()
    })
}

/// What the upstream answers to `fwd`: an A record with `ttl`.
fn upstream_a(fwd: &Forward, ttl: u32) -> Message {
    let q = Message::from_vec(&fwd.query).unwrap();
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = true;
    r.metadata.recursion_available = true;
    r.add_query(q.queries[0].clone());
    r.add_answer(Record::from_rdata(
        q.queries[0].name().clone(),
        ttl,
        RData::A(A::new(192, 0, 2, 1)),
    ));
    r
}

/// Client `port` asks `qname` `qtype` under message ID `id`, over UDP.
fn ask(s: &mut Server, now: Instant, port: u16, id: u16, qname: &str, qtype: RecordType) {
    let q = query(id, qname, qtype);
    s.handle_input(now, client(port), Transport::Udp, &q.to_vec().unwrap());
}

fn answer(s: &mut Server) -> (SocketAddr, Message) {
    let t = s.poll_transmit().expect("an answer");
    (t.destination, Message::from_vec(&t.payload).unwrap())
}

#[test]
fn forwarded_under_a_fresh_id_answered_under_the_clients_and_cached() {
    let mut s = forwarding();
    let t0 = Instant::now();
    ask(&mut s, t0, 1, 0xbeef, "Example.COM.", RecordType::A);
    assert!(s.poll_transmit().is_none());
    let fwd = s.poll_forward().unwrap();
    assert_eq!(fwd.transport, Transport::Udp);
    let sent = Message::from_vec(&fwd.query).unwrap();
    assert_eq!(sent.queries[0].name().to_ascii(), "Example.COM.");
    s.handle_forward_response(t0, fwd.id, &upstream_a(&fwd, 300).to_vec().unwrap());
    let (to, r) = answer(&mut s);
    assert_eq!((to, r.metadata.id), (client(1), 0xbeef));
    assert_eq!(r.answers[0].ttl, 300);
    assert_eq!(s.waiting(), 0);

    // Another client, another case, 100 s later: from the cache, with its
    // own ID and question, the TTL aged.
    let later = t0 + Duration::from_secs(100);
    ask(&mut s, later, 2, 7, "example.com.", RecordType::A);
    assert!(s.poll_forward().is_none(), "asked upstream again");
    let (to, r) = answer(&mut s);
    assert_eq!((to, r.metadata.id), (client(2), 7));
    assert_eq!(r.queries[0].name().to_ascii(), "example.com.");
    assert_eq!(r.answers[0].ttl, 200);
    assert_eq!(s.stats().forward_cache_hits, 1);

    // Past the TTL: upstream again.
    ask(
        &mut s,
        t0 + Duration::from_secs(301),
        3,
        8,
        "example.com.",
        RecordType::A,
    );
    assert!(s.poll_forward().is_some());
    assert_eq!(s.stats().forwards, 2);
}

/// The client picks its message ID; the upstream must not see it, or a
/// guest (or anyone who sees its queries) knows the ID a forgery needs.
#[test]
fn attack_upstream_ids_are_not_the_clients() {
    let mut s = forwarding();
    let t0 = Instant::now();
    let mut ids = std::collections::HashSet::new();
    for i in 0..64 {
        ask(
            &mut s,
            t0,
            1,
            0x1234,
            &format!("n{i}.example."),
            RecordType::A,
        );
        let fwd = s.poll_forward().unwrap();
        ids.insert(u16::from_be_bytes([fwd.query[0], fwd.query[1]]));
    }
    ids.remove(&0x1234);
    assert!(ids.len() >= 60, "upstream ids {ids:?}");
}

/// A forged reply (wrong ID) or one for another question neither answers
/// the client, nor is cached, nor ends the wait: the real reply still
/// counts.
#[test]
fn attack_forged_upstream_replies_are_dropped() {
    let mut s = forwarding();
    let t0 = Instant::now();
    ask(&mut s, t0, 1, 0xbeef, "bank.example.", RecordType::A);
    let fwd = s.poll_forward().unwrap();
    let real = upstream_a(&fwd, 300);

    let mut forged = real.clone();
    forged.metadata.id = real.metadata.id.wrapping_add(1);
    s.handle_forward_response(t0, fwd.id, &forged.to_vec().unwrap());
    let mut other = real.clone();
    other.queries = vec![Query::query(name("evil.example."), RecordType::A)];
    s.handle_forward_response(t0, fwd.id, &other.to_vec().unwrap());
    s.handle_forward_response(
        t0,
        fwd.id,
        &query(1, "bank.example.", RecordType::A).to_vec().unwrap(),
    );
    s.handle_forward_response(t0, fwd.id, b"\x00\x01junk");
    assert!(s.poll_transmit().is_none(), "a forgery was relayed");
    let mut errors = Vec::new();
    while let Some(e) = s.poll_event() {
        if let Event::ForwardRejected { error, .. } = e {
            errors.push(error);
        }
    }
    assert!(
        matches!(errors[0], ForwardError::WrongId { .. }),
        "{errors:?}"
    );
    assert_eq!(errors[1], ForwardError::OtherQuestion);
    assert_eq!(errors[2], ForwardError::NotAResponse);
    assert!(matches!(errors[3], ForwardError::Malformed { .. }));
    assert_eq!(s.forward_cache(), (0, 0));
    assert_eq!(s.waiting(), 1);

    s.handle_forward_response(t0, fwd.id, &real.to_vec().unwrap());
    let (_, r) = answer(&mut s);
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn identical_queries_in_flight_share_one_forward() {
    let mut s = forwarding();
    let t0 = Instant::now();
    ask(&mut s, t0, 1, 1, "a.example.", RecordType::A);
    ask(&mut s, t0, 2, 2, "A.example.", RecordType::A);
    let fwd = s.poll_forward().unwrap();
    assert!(s.poll_forward().is_none());
    assert_eq!(s.waiting(), 2);
    s.handle_forward_response(t0, fwd.id, &upstream_a(&fwd, 60).to_vec().unwrap());
    let (to1, r1) = answer(&mut s);
    let (to2, r2) = answer(&mut s);
    assert_eq!((to1, r1.metadata.id), (client(1), 1));
    assert_eq!((to2, r2.metadata.id), (client(2), 2));
    assert_eq!(r2.queries[0].name().to_ascii(), "A.example.");
}

#[test]
fn truncated_answers_are_asked_again_over_tcp() {
    let mut s = forwarding();
    let t0 = Instant::now();
    ask(&mut s, t0, 1, 1, "big.example.", RecordType::TXT);
    let fwd = s.poll_forward().unwrap();
    let mut tc = upstream_a(&fwd, 60);
    tc.answers.clear();
    tc.metadata.truncation = true;
    s.handle_forward_response(t0, fwd.id, &tc.to_vec().unwrap());
    assert!(s.poll_transmit().is_none());
    let again = s.poll_forward().unwrap();
    assert_eq!((again.id, again.transport), (fwd.id, Transport::Tcp));
    assert_eq!(again.query, fwd.query);

    // The full answer over TCP; the client asked over UDP without EDNS, so
    // it gets TC in turn (and asks us over TCP).
    let mut full = upstream_a(&fwd, 60);
    full.answers = (0..40)
        .map(|i| {
            Record::from_rdata(
                name("big.example."),
                60,
                RData::TXT(TXT::new(vec![format!("{i:0>40}")])),
            )
        })
        .collect();
    s.handle_forward_response(t0, fwd.id, &full.to_vec().unwrap());
    let (_, r) = answer(&mut s);
    assert!(r.metadata.truncation);
    let q = query(2, "big.example.", RecordType::TXT);
    s.handle_input(t0, client(1), Transport::Tcp, &q.to_vec().unwrap());
    let t = s.poll_transmit().unwrap();
    let r = Message::from_vec(&t.payload[2..]).unwrap();
    assert_eq!(r.answers.len(), 40, "from the cache, whole, over TCP");
}

#[test]
fn a_client_over_tcp_is_forwarded_over_tcp() {
    let mut s = forwarding();
    let q = query(1, "x.example.", RecordType::A);
    s.handle_input(
        Instant::now(),
        client(1),
        Transport::Tcp,
        &q.to_vec().unwrap(),
    );
    assert_eq!(s.poll_forward().unwrap().transport, Transport::Tcp);
}

#[test]
fn negative_answers_are_cached_for_the_soas_minimum() {
    let mut s = forwarding();
    let t0 = Instant::now();
    ask(&mut s, t0, 1, 1, "nope.example.", RecordType::A);
    let fwd = s.poll_forward().unwrap();
    let mut r = upstream_a(&fwd, 60);
    r.answers.clear();
    r.metadata.response_code = ResponseCode::NXDomain;
    r.add_authority(Record::from_rdata(
        name("example."),
        3600,
        RData::SOA(SOA::new(
            name("ns.example."),
            name("h.example."),
            1,
            7200,
            900,
            86400,
            30,
        )),
    ));
    s.handle_forward_response(t0, fwd.id, &r.to_vec().unwrap());
    let _ = answer(&mut s);
    ask(
        &mut s,
        t0 + Duration::from_secs(29),
        1,
        2,
        "nope.example.",
        RecordType::A,
    );
    let (_, r) = answer(&mut s);
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    ask(
        &mut s,
        t0 + Duration::from_secs(31),
        1,
        3,
        "nope.example.",
        RecordType::A,
    );
    assert!(s.poll_forward().is_some(), "cached past the SOA minimum");
}

#[test]
fn a_forward_that_never_returns_gets_servfail_at_the_deadline() {
    let mut s = forwarding();
    let t0 = Instant::now();
    ask(&mut s, t0, 1, 1, "slow.example.", RecordType::A);
    ask(&mut s, t0, 2, 2, "slow.example.", RecordType::A);
    let fwd = s.poll_forward().unwrap();
    s.handle_timeout(t0 + Duration::from_secs(2));
    for _ in 0..2 {
        let (_, r) = answer(&mut s);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    }
    assert_eq!(s.waiting(), 0);
    // A late reply is ignored.
    s.handle_forward_response(t0, fwd.id, &upstream_a(&fwd, 60).to_vec().unwrap());
    assert!(s.poll_transmit().is_none());
}

/// Distinct names with large answers cannot grow the cache past its bound.
#[test]
fn attack_the_forward_cache_stays_bounded() {
    let mut s = Server::new(Config {
        forward: true,
        forward_cache_bytes: 64 << 10,
        ..Config::default()
    });
    let t0 = Instant::now();
    for i in 0..5000 {
        ask(
            &mut s,
            t0,
            1,
            1,
            &format!("n{i}.flood.example."),
            RecordType::TXT,
        );
        let fwd = s.poll_forward().unwrap();
        let mut r = upstream_a(&fwd, 3600);
        r.answers = vec![Record::from_rdata(
            r.queries[0].name().clone(),
            3600,
            RData::TXT(TXT::new(vec!["x".repeat(200); 4])),
        )];
        s.handle_forward_response(t0, fwd.id, &r.to_vec().unwrap());
        let _ = s.poll_transmit();
    }
    let (bytes, entries) = s.forward_cache();
    assert!(bytes <= 64 << 10, "{bytes} bytes in {entries} entries");
    assert!(entries > 10, "the cache keeps the newest: {entries}");
}
