//! SRV and TXT answers for registered services, locally and through the
//! store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dns_virt::{
    Config, MemoryStore, MemoryStoreConfig, Mode, Server, Service, ServiceError, StoreRequest,
    Transport,
};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV, TXT};
use hickory_proto::rr::{Name, RData, RecordType};

fn client() -> SocketAddr {
    "10.128.0.2:40000".parse().unwrap()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn ask(s: &mut Server, now: Instant, qname: &str, qtype: RecordType) -> Option<Message> {
    let mut m = Message::new(0x5151, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name(qname), qtype));
    s.handle_input(now, client(), Transport::Udp, &m.to_vec().unwrap());
    s.poll_transmit()
        .map(|t| Message::from_vec(&t.payload).unwrap())
}

fn slurm(target: &str) -> Service {
    Service {
        priority: 1,
        weight: 10,
        port: 6817,
        target: target.into(),
        txt: vec![b"cluster=wow".to_vec()],
    }
}

fn local() -> Server {
    let now = Instant::now();
    let mut s = Server::new(Config::default());
    s.register(now, "ctl", Ipv4Addr::new(10, 128, 0, 9), None)
        .unwrap();
    s.register_service("_SlurmCtld._tcp", "ctl", slurm("ctl"), None)
        .unwrap();
    s.register_service(
        "_slurmctld._tcp",
        "backup",
        Service::new("backup", 6818),
        None,
    )
    .unwrap();
    s
}

#[test]
fn srv_and_txt_under_the_host_field_by_field() {
    let now = Instant::now();
    let mut s = local();
    let r = ask(
        &mut s,
        now,
        "_slurmctld._TCP.ctl.wow.internal.",
        RecordType::SRV,
    )
    .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].name, name("_slurmctld._TCP.ctl.wow.internal."));
    assert_eq!(r.answers[0].ttl, 60);
    assert_eq!(
        r.answers[0].data,
        RData::SRV(SRV::new(1, 10, 6817, name("ctl.wow.internal.")))
    );
    // The target's address rides along.
    assert_eq!(r.additionals.len(), 1);
    assert_eq!(r.additionals[0].name, name("ctl.wow.internal."));
    assert_eq!(
        r.additionals[0].data,
        RData::A(A(Ipv4Addr::new(10, 128, 0, 9)))
    );

    let r = ask(
        &mut s,
        now,
        "_slurmctld._tcp.ctl.wow.internal.",
        RecordType::TXT,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);
    assert_eq!(
        r.answers[0].data,
        RData::TXT(TXT::from_bytes(vec![b"cluster=wow"]))
    );
    assert!(r.additionals.is_empty());

    let r = ask(
        &mut s,
        now,
        "_slurmctld._tcp.ctl.wow.internal.",
        RecordType::ANY,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 2);

    // Another type: NODATA with the SOA.
    let r = ask(
        &mut s,
        now,
        "_slurmctld._tcp.ctl.wow.internal.",
        RecordType::A,
    )
    .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    // A host without the service, a service nobody offers: NXDOMAIN.
    for q in [
        "_slurmctld._tcp.web.wow.internal.",
        "_http._tcp.ctl.wow.internal.",
        "_http._tcp.wow.internal.",
    ] {
        let r = ask(&mut s, now, q, RecordType::SRV).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{q}");
    }
    // The host's own name still answers A.
    let r = ask(&mut s, now, "ctl.wow.internal.", RecordType::A).unwrap();
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn the_zone_apex_name_gathers_every_registrant() {
    let now = Instant::now();
    let mut s = local();
    let r = ask(
        &mut s,
        now,
        "_slurmctld._tcp.wow.internal.",
        RecordType::SRV,
    )
    .unwrap();
    let mut srvs: Vec<_> = r
        .answers
        .iter()
        .map(|a| match &a.data {
            RData::SRV(srv) => (srv.target.to_ascii(), srv.port),
            other => panic!("{other:?}"),
        })
        .collect();
    srvs.sort();
    assert_eq!(
        srvs,
        [
            ("backup.wow.internal.".to_string(), 6818),
            ("ctl.wow.internal.".to_string(), 6817)
        ]
    );
    // Only ctl's address is known here.
    assert_eq!(r.additionals.len(), 1);
    // Only ctl has TXT strings.
    let r = ask(
        &mut s,
        now,
        "_slurmctld._tcp.wow.internal.",
        RecordType::TXT,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);

    assert!(s.unregister_service("_slurmctld._tcp", "backup").is_some());
    let r = ask(
        &mut s,
        now,
        "_slurmctld._tcp.wow.internal.",
        RecordType::SRV,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn bad_registrations_are_refused() {
    let mut s = Server::new(Config::default());
    assert_eq!(
        s.register_service("slurmctld._tcp", "ctl", Service::new("ctl", 1), None),
        Err(ServiceError::InvalidServiceName)
    );
    assert_eq!(
        s.register_service("_x._tcp", "ctl.example.", Service::new("ctl", 1), None),
        Err(ServiceError::InvalidHost)
    );
    assert_eq!(
        s.register_service("_x._tcp", "ctl", Service::new("c..tl", 1), None),
        Err(ServiceError::InvalidTarget)
    );
    assert!(s.zone().services().is_empty());
}

/// Two decentralised servers and a shared store: a service registered on
/// one is answered by the other, alone under its host and among every
/// registrant at the zone's name; a withdrawn one goes.
#[test]
fn services_travel_through_the_store() {
    let config = Config {
        mode: Mode::Decentralised,
        lookup_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let mut servers = [Server::new(config.clone()), Server::new(config.clone())];
    let mut store = MemoryStore::new(MemoryStoreConfig::default(), 7);
    let mut now = Instant::now();
    let run = |servers: &mut [Server; 2], store: &mut MemoryStore, now: &mut Instant| {
        for _ in 0..1000 {
            for (i, s) in servers.iter_mut().enumerate() {
                while let Some(req) = s.poll_store_request() {
                    store.handle_request(*now, i, req);
                }
            }
            while let Some((i, id, result)) = store.poll_response(*now) {
                servers[i].handle_store_response(*now, id, result);
            }
            match store.poll_timeout() {
                Some(t) => *now = t.max(*now),
                None => break,
            }
        }
    };
    servers[0]
        .register_service("_slurmctld._tcp", "ctl", slurm("ctl"), None)
        .unwrap();
    servers[1]
        .register_service("_slurmctld._tcp", "ctl2", Service::new("ctl2", 6817), None)
        .unwrap();
    run(&mut servers, &mut store, &mut now);

    let mut m = Message::new(1, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        name("_slurmctld._tcp.ctl.wow.internal."),
        RecordType::SRV,
    ));
    servers[1].handle_input(now, client(), Transport::Udp, &m.to_vec().unwrap());
    let lookup = servers[1].poll_store_request().unwrap();
    assert!(matches!(
        &lookup,
        StoreRequest::LookupService { name, host: Some(h), .. }
            if name == "_slurmctld._tcp" && h == "ctl"
    ));
    store.handle_request(now, 1, lookup);
    run(&mut servers, &mut store, &mut now);
    let r = Message::from_vec(&servers[1].poll_transmit().unwrap().payload).unwrap();
    assert_eq!(
        r.answers.iter().map(|a| a.data.clone()).collect::<Vec<_>>(),
        [RData::SRV(SRV::new(1, 10, 6817, name("ctl.wow.internal.")))]
    );

    // Every registrant, the local one and the stored ones, once each.
    let mut m = Message::new(2, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        name("_slurmctld._tcp.wow.internal."),
        RecordType::SRV,
    ));
    servers[1].handle_input(now, client(), Transport::Udp, &m.to_vec().unwrap());
    run(&mut servers, &mut store, &mut now);
    let r = Message::from_vec(&servers[1].poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.answers.len(), 2, "{r:?}");

    // Withdrawn: the store forgets it.
    servers[0]
        .unregister_service("_slurmctld._tcp", "ctl")
        .unwrap();
    run(&mut servers, &mut store, &mut now);
    servers[1].handle_input(now, client(), Transport::Udp, &m.to_vec().unwrap());
    run(&mut servers, &mut store, &mut now);
    let r = Message::from_vec(&servers[1].poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.answers.len(), 1);
}

/// A store that never answers: at the deadline a service query gets
/// SERVFAIL, or the registrations here if there are any, and nothing waits
/// on.
#[test]
fn an_unanswered_service_lookup_times_out() {
    let now = Instant::now();
    let mut s = Server::new(Config {
        mode: Mode::Decentralised,
        ..Config::default()
    });
    s.register_service("_y._tcp", "here", Service::new("here", 1), None)
        .unwrap();
    while s.poll_store_request().is_some() {}
    assert!(ask(&mut s, now, "_x._tcp.wow.internal.", RecordType::SRV).is_none());
    assert!(ask(&mut s, now, "_y._tcp.wow.internal.", RecordType::SRV).is_none());
    assert_eq!(s.waiting(), 2);
    let deadline = s.poll_timeout().unwrap();
    s.handle_timeout(deadline);
    assert_eq!(s.waiting(), 0);
    let r = Message::from_vec(&s.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // The registration here is answered without the store.
    let r = Message::from_vec(&s.poll_transmit().unwrap().payload).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
}
