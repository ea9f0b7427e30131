//! The server state machine, query bytes in and response bytes out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dns_virt::{
    Config, Event, MemoryStore, MemoryStoreConfig, Mode, Server, StoreRequest, StoreResult,
    Transport, ZoneConfig,
};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

const CLIENT: &str = "10.128.0.2:40000";

fn client() -> SocketAddr {
    CLIENT.parse().unwrap()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn query(qname: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m
}

fn server() -> Server {
    let mut s = Server::new(Config::default());
    let now = Instant::now();
    s.register(now, "web", Ipv4Addr::new(10, 128, 0, 9), None)
        .unwrap();
    s.register(
        now,
        "db.rack1.wow.internal.",
        Ipv4Addr::new(10, 128, 1, 7),
        None,
    )
    .unwrap();
    s
}

fn ask_bytes(s: &mut Server, transport: Transport, bytes: &[u8]) -> Option<Vec<u8>> {
    s.handle_input(Instant::now(), client(), transport, bytes);
    let t = s.poll_transmit()?;
    assert_eq!(t.destination, client());
    assert_eq!(t.transport, transport);
    assert!(s.poll_transmit().is_none());
    Some(match transport {
        Transport::Udp => t.payload,
        Transport::Tcp => {
            let len = usize::from(u16::from_be_bytes([t.payload[0], t.payload[1]]));
            assert_eq!(len, t.payload.len() - 2);
            t.payload[2..].to_vec()
        }
    })
}

fn ask(s: &mut Server, q: &Message) -> Message {
    let bytes = ask_bytes(s, Transport::Udp, &q.to_vec().unwrap()).unwrap();
    let r = Message::from_vec(&bytes).unwrap();
    assert_eq!(r.metadata.id, q.metadata.id);
    assert_eq!(r.metadata.message_type, MessageType::Response);
    assert_eq!(r.metadata.recursion_desired, q.metadata.recursion_desired);
    assert!(!r.metadata.recursion_available);
    r
}

fn soa_serial_owner(r: &Message) -> String {
    assert_eq!(r.authorities.len(), 1, "{r:?}");
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    r.authorities[0].name.to_ascii()
}

#[test]
fn a_record_with_case_preserved() {
    let mut s = server();
    let r = ask(&mut s, &query("WeB.Wow.Internal.", RecordType::A, None));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(r.queries[0].name().to_ascii(), "WeB.Wow.Internal.");
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].name.to_ascii(), "WeB.Wow.Internal.");
    assert_eq!(r.answers[0].ttl, 60);
    assert_eq!(r.answers[0].data, RData::A(A::new(10, 128, 0, 9)));
    let r = ask(
        &mut s,
        &query("db.rack1.wow.internal.", RecordType::A, None),
    );
    assert_eq!(r.answers[0].data, RData::A(A::new(10, 128, 1, 7)));
}

#[test]
fn rule_names_resolve_both_ways() {
    let mut s = server();
    let r = ask(
        &mut s,
        &query("c010200003004.wow.internal.", RecordType::A, None),
    );
    assert_eq!(r.answers[0].data, RData::A(A::new(10, 200, 3, 4)));
    let r = ask(
        &mut s,
        &query("4.3.200.10.in-addr.arpa.", RecordType::PTR, None),
    );
    assert!(r.metadata.authoritative);
    assert_eq!(
        r.answers[0].data,
        RData::PTR(PTR(name("c010200003004.wow.internal.")))
    );
    // A registered name wins the PTR.
    let r = ask(
        &mut s,
        &query("9.0.128.10.in-addr.arpa.", RecordType::PTR, None),
    );
    assert_eq!(
        r.answers[0].data,
        RData::PTR(PTR(name("web.wow.internal.")))
    );
    // Outside the network but inside the reverse apex (10.in-addr.arpa.).
    let r = ask(
        &mut s,
        &query("4.3.2.10.in-addr.arpa.", RecordType::PTR, None),
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(soa_serial_owner(&r), "10.in-addr.arpa.");
    // An empty non-terminal of the network.
    let r = ask(
        &mut s,
        &query("200.10.in-addr.arpa.", RecordType::PTR, None),
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
}

#[test]
fn soa_and_ns_at_the_apex() {
    let mut s = server();
    let r = ask(&mut s, &query("wow.internal.", RecordType::SOA, None));
    assert_eq!(r.answers.len(), 1);
    let RData::SOA(soa) = &r.answers[0].data else {
        panic!("{r:?}")
    };
    assert_eq!(soa.mname.to_ascii(), "ns.wow.internal.");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.wow.internal.");
    assert_eq!(soa.minimum, 30);
    assert_eq!(soa.serial, s.zone().serial());
    let r = ask(&mut s, &query("wow.internal.", RecordType::NS, None));
    let RData::NS(ns) = &r.answers[0].data else {
        panic!("{r:?}")
    };
    assert_eq!(ns.0.to_ascii(), "ns.wow.internal.");
    let r = ask(&mut s, &query("10.in-addr.arpa.", RecordType::SOA, None));
    assert_eq!(r.answers[0].name.to_ascii(), "10.in-addr.arpa.");
}

#[test]
fn nxdomain_and_nodata_carry_the_soa() {
    let mut s = server();
    let r = ask(&mut s, &query("nope.wow.internal.", RecordType::A, None));
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.metadata.authoritative);
    assert!(r.answers.is_empty());
    assert_eq!(soa_serial_owner(&r), "wow.internal.");
    assert_eq!(r.authorities[0].ttl, 30);
    let r = ask(&mut s, &query("web.wow.internal.", RecordType::AAAA, None));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(soa_serial_owner(&r), "wow.internal.");
    let r = ask(&mut s, &query("wow.internal.", RecordType::A, None));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
}

#[test]
fn refuses_outside_names_and_other_classes() {
    let mut s = server();
    let r = ask(&mut s, &query("example.com.", RecordType::A, None));
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!r.metadata.authoritative);
    assert!(r.answers.is_empty() && r.authorities.is_empty());
    assert_eq!(r.queries[0].name().to_ascii(), "example.com.");
    let mut q = query("web.wow.internal.", RecordType::A, None);
    q.queries[0].set_query_class(DNSClass::CH);
    let r = ask(&mut s, &q);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn formerr_notimp_and_drops() {
    let mut s = server();
    let good = query("web.wow.internal.", RecordType::A, None)
        .to_vec()
        .unwrap();
    // Truncated question: FORMERR with the ID echoed.
    let r = ask_bytes(&mut s, Transport::Udp, &good[..good.len() - 2]).unwrap();
    let r = Message::from_vec(&r).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(r.metadata.id, 0xbeef);
    assert!(matches!(s.poll_event(), Some(Event::BadQuery(_))));
    // Opcode STATUS: NOTIMP.
    let mut b = good.clone();
    b[2] = (b[2] & 0x87) | (2 << 3);
    let r = Message::from_vec(&ask_bytes(&mut s, Transport::Udp, &b).unwrap()).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(r.metadata.op_code, OpCode::Status);
    // Responses and runts are never answered.
    let mut b = good.clone();
    b[2] |= 0x80;
    assert_eq!(ask_bytes(&mut s, Transport::Udp, &b), None);
    assert_eq!(ask_bytes(&mut s, Transport::Udp, &good[..11]), None);
    // The table did not change.
    assert_eq!(s.zone().table().len(), 2);
}

#[test]
fn edns_is_echoed_and_badvers_answered() {
    let mut s = server();
    let r = ask(
        &mut s,
        &query("web.wow.internal.", RecordType::A, Some(4096)),
    );
    let edns = r.edns.as_ref().expect("OPT in response");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
    let r = ask(&mut s, &query("web.wow.internal.", RecordType::A, None));
    assert!(r.edns.is_none());
    let mut q = query("web.wow.internal.", RecordType::A, Some(1232));
    q.edns.as_mut().unwrap().set_version(1);
    let r = ask(&mut s, &q);
    // BADVERS is 16 (RFC 6891 §9); hickory reads 16 back as BADSIG.
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert!(r.answers.is_empty());
}

#[test]
fn truncates_over_udp_but_not_tcp() {
    let config = Config {
        zone: ZoneConfig {
            max_udp_payload: 50,
            ..ZoneConfig::default()
        },
        ..Config::default()
    };
    let mut s = Server::new(config);
    s.register(Instant::now(), "web", Ipv4Addr::new(10, 128, 0, 9), None)
        .unwrap();
    let q = query("web.wow.internal.", RecordType::A, Some(4096));
    let bytes = q.to_vec().unwrap();
    let udp = ask_bytes(&mut s, Transport::Udp, &bytes).unwrap();
    let r = Message::from_vec(&udp).unwrap();
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    assert_eq!(r.queries.len(), 1);
    assert!(udp.len() <= 50, "{} octets", udp.len());
    let tcp = ask_bytes(&mut s, Transport::Tcp, &bytes).unwrap();
    let r = Message::from_vec(&tcp).unwrap();
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn registered_names_expire() {
    let t0 = Instant::now();
    let mut s = Server::new(Config::default());
    s.register(
        t0,
        "lease",
        Ipv4Addr::new(10, 128, 0, 50),
        Some(Duration::from_secs(30)),
    )
    .unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    s.handle_timeout(t0 + Duration::from_secs(29));
    assert_eq!(s.zone().table().len(), 1);
    s.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(s.zone().table().len(), 0);
    assert_eq!(s.poll_event(), Some(Event::Expired { count: 1 }));
    let r = ask(&mut s, &query("lease.wow.internal.", RecordType::A, None));
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        s.register(t0, "x", Ipv4Addr::new(192, 0, 2, 1), None)
            .is_err()
    );
}

/// Several decentralised servers sharing one fake DHT.
struct Net {
    now: Instant,
    servers: Vec<Server>,
    store: MemoryStore,
}

impl Net {
    fn new(n: usize, store: MemoryStoreConfig, seed: u64) -> Net {
        let config = Config {
            mode: Mode::Decentralised,
            lookup_timeout: Duration::from_millis(500),
            ..Config::default()
        };
        Net {
            now: Instant::now(),
            servers: (0..n).map(|_| Server::new(config.clone())).collect(),
            store: MemoryStore::new(store, seed),
        }
    }

    /// Moves store requests to the store, delivers due results and timeouts,
    /// until `until`.
    fn run(&mut self, until: Instant) {
        loop {
            for (i, s) in self.servers.iter_mut().enumerate() {
                while let Some(req) = s.poll_store_request() {
                    self.store.handle_request(self.now, i, req);
                }
            }
            while let Some((i, id, result)) = self.store.poll_response(self.now) {
                self.servers[i].handle_store_response(self.now, id, result);
            }
            let next = self
                .servers
                .iter()
                .filter_map(Server::poll_timeout)
                .chain(self.store.poll_timeout())
                .filter(|t| *t > self.now)
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = t;
                    for s in &mut self.servers {
                        if s.poll_timeout().is_some_and(|d| d <= t) {
                            s.handle_timeout(t);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn query(&mut self, server: usize, qname: &str) {
        let bytes = query(qname, RecordType::A, None).to_vec().unwrap();
        self.servers[server].handle_input(self.now, client(), Transport::Udp, &bytes);
    }

    fn replies(&mut self, server: usize) -> Vec<Message> {
        std::iter::from_fn(|| self.servers[server].poll_transmit())
            .map(|t| Message::from_vec(&t.payload).unwrap())
            .collect()
    }
}

fn delays(min: u64, max: u64, loss: f64) -> MemoryStoreConfig {
    MemoryStoreConfig {
        min_delay: Duration::from_millis(min),
        max_delay: Duration::from_millis(max),
        loss,
    }
}

#[test]
fn decentralised_lookup_answers_when_the_store_does() {
    let mut net = Net::new(2, delays(10, 100, 0.0), 7);
    let t0 = net.now;
    net.servers[0]
        .register(t0, "alpha", Ipv4Addr::new(10, 128, 5, 5), None)
        .unwrap();
    net.run(t0 + Duration::from_millis(150));
    assert_eq!(
        net.store.get(net.now, "alpha"),
        Some(Ipv4Addr::new(10, 128, 5, 5))
    );
    // Three queries for one name at server 1: one lookup, answered later.
    for _ in 0..3 {
        net.query(1, "ALPHA.wow.internal.");
    }
    net.query(1, "ghost.wow.internal.");
    assert!(net.replies(1).is_empty());
    assert_eq!(net.servers[1].waiting(), 4);
    assert_eq!(net.servers[1].stats().lookups, 2);
    net.run(net.now + Duration::from_millis(150));
    let replies = net.replies(1);
    assert_eq!(replies.len(), 4);
    let found: Vec<_> = replies
        .iter()
        .filter(|r| r.metadata.response_code == ResponseCode::NoError)
        .collect();
    assert_eq!(found.len(), 3);
    for r in found {
        assert_eq!(r.answers[0].name.to_ascii(), "ALPHA.wow.internal.");
        assert_eq!(r.answers[0].data, RData::A(A::new(10, 128, 5, 5)));
    }
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.metadata.response_code == ResponseCode::NXDomain)
            .count(),
        1
    );
    // Cached now: answered at once.
    net.query(1, "alpha.wow.internal.");
    assert_eq!(net.replies(1).len(), 1);
    assert_eq!(net.servers[1].waiting(), 0);
}

#[test]
fn decentralised_reverse_lookup_finds_remote_names() {
    let mut net = Net::new(2, delays(10, 100, 0.0), 11);
    let t0 = net.now;
    net.servers[0]
        .register(t0, "alpha", Ipv4Addr::new(10, 128, 5, 5), None)
        .unwrap();
    net.run(t0 + Duration::from_millis(150));
    let ptr = |net: &mut Net, qname: &str| {
        let bytes = query(qname, RecordType::PTR, None).to_vec().unwrap();
        net.servers[1].handle_input(net.now, client(), Transport::Udp, &bytes);
    };
    ptr(&mut net, "5.5.128.10.in-addr.arpa.");
    ptr(&mut net, "6.5.128.10.in-addr.arpa.");
    assert!(net.replies(1).is_empty());
    net.run(net.now + Duration::from_millis(150));
    let mut replies = net.replies(1);
    replies.sort_by_key(|r| r.queries[0].name().to_ascii());
    assert_eq!(replies.len(), 2);
    assert_eq!(
        replies[0].answers[0].data,
        RData::PTR(PTR(name("alpha.wow.internal.")))
    );
    // Unknown in the store: the rule name.
    assert_eq!(
        replies[1].answers[0].data,
        RData::PTR(PTR(name("c010128005006.wow.internal.")))
    );
    // Cached: answered at once, forward too.
    ptr(&mut net, "5.5.128.10.in-addr.arpa.");
    net.query(1, "alpha.wow.internal.");
    assert_eq!(net.replies(1).len(), 2);
    // Local mode never waits: the rule name straight away.
    let mut local = server();
    let r = ask(
        &mut local,
        &query("6.5.128.10.in-addr.arpa.", RecordType::PTR, None),
    );
    assert_eq!(
        r.answers[0].data,
        RData::PTR(PTR(name("c010128005006.wow.internal.")))
    );
}

#[test]
fn lost_lookups_get_servfail_at_the_deadline_and_late_results_are_ignored() {
    let mut net = Net::new(1, delays(10, 20, 1.0), 9);
    let t0 = net.now;
    net.query(0, "lost.wow.internal.");
    let req = net.servers[0].poll_store_request().unwrap();
    let StoreRequest::Lookup { id, name } = req else {
        panic!("{req:?}")
    };
    assert_eq!(name, "lost");
    assert_eq!(
        net.servers[0].poll_timeout(),
        Some(t0 + Duration::from_millis(500))
    );
    net.servers[0].handle_timeout(t0 + Duration::from_millis(499));
    assert!(net.replies(0).is_empty());
    net.servers[0].handle_timeout(t0 + Duration::from_millis(500));
    let r = net.replies(0);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].metadata.response_code, ResponseCode::ServFail);
    assert!(matches!(
        net.servers[0].poll_event(),
        Some(Event::TimedOut { .. })
    ));
    net.servers[0].handle_store_response(
        t0 + Duration::from_secs(1),
        id,
        StoreResult::Found {
            addr: Ipv4Addr::new(10, 128, 0, 1),
            ttl: Duration::from_secs(60),
        },
    );
    assert!(net.replies(0).is_empty());
    assert_eq!(net.servers[0].zone().table().len(), 0);
}

#[test]
fn every_query_gets_exactly_one_reply_under_random_delays_and_loss() {
    for seed in 0..5 {
        let mut net = Net::new(4, delays(1, 800, 0.2), seed);
        let t0 = net.now;
        for i in 0..40u8 {
            net.servers[usize::from(i % 4)]
                .register(t0, &format!("h{i}"), Ipv4Addr::new(10, 128, 9, i + 1), None)
                .unwrap();
        }
        net.run(t0 + Duration::from_secs(2));
        let mut asked = [0usize; 4];
        for i in 0..200u32 {
            let s = (i % 4) as usize;
            net.query(s, &format!("h{}.wow.internal.", i % 50));
            asked[s] += 1;
        }
        net.run(net.now + Duration::from_secs(2));
        for (s, asked) in asked.iter().enumerate() {
            let replies = net.replies(s);
            assert_eq!(replies.len(), *asked, "seed {seed} server {s}");
            for r in &replies {
                let n: u32 = r.queries[0].name().to_ascii()[1..]
                    .split('.')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                match r.metadata.response_code {
                    ResponseCode::NoError => {
                        assert!(n < 40, "seed {seed}: h{n} answered");
                        assert_eq!(r.answers[0].data, RData::A(A::new(10, 128, 9, n as u8 + 1)));
                    }
                    // Names never published, or whose publish was lost.
                    ResponseCode::NXDomain | ResponseCode::ServFail => {}
                    other => panic!("seed {seed}: {other:?}"),
                }
            }
            assert_eq!(net.servers[s].waiting(), 0);
        }
    }
}
