//! The server state machine through its message API, by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use dhcp_virt::wire::{ClientMessage, ClientMessageKind, HardwareAddr, Reply, ReplyKind};
use dhcp_virt::{
    ClientKey, Config, Destination, Event, FileStore, FrameError, LeaseStore, MemoryStore,
    MessageError, Pool, Refusal, Reservation, ReservationKey, Server, StoreError,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);
const UNIX_SECS: u64 = 1_700_000_000;

/// The wall time `secs` seconds after the tests' start.
fn unix(secs: u64) -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(UNIX_SECS + secs)
}

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn config() -> Config {
    let mut c = Config::new("10.8.0.0/24".parse().unwrap(), SERVER);
    c.pool = Pool::range(a("10.8.0.100"), a("10.8.0.199"));
    c.lease_duration = Duration::from_secs(100);
    c.interface_mtu = Some(1280);
    c.domain_name = Some("wow.example".into());
    c.domain_search = vec!["wow.example".into()];
    c.classless_routes = vec![("10.9.0.0/16".parse().unwrap(), SERVER)];
    c
}

fn server() -> (Server<MemoryStore>, Instant) {
    let t0 = Instant::now();
    (
        Server::new(t0, unix(0), config(), MemoryStore::new()).unwrap(),
        t0,
    )
}

fn mac(n: u8) -> HardwareAddr {
    HardwareAddr::ethernet([2, 0, 0, 0, 0, n])
}

fn msg(kind: ClientMessageKind, n: u8) -> ClientMessage {
    ClientMessage::new(kind, 0x1000 + u32::from(n), mac(n))
}

fn reply<S: LeaseStore>(s: &mut Server<S>) -> (Destination, Reply) {
    let t = s.poll_transmit().expect("a reply");
    (t.destination, Reply::parse(&t.payload).unwrap())
}

fn send<S: LeaseStore>(s: &mut Server<S>, now: Instant, m: &ClientMessage) -> Result<(), Refusal> {
    s.handle_message(now, &m.emit())
}

/// DISCOVER, OFFER, REQUEST, ACK for client `n`; returns the address.
fn lease<S: LeaseStore>(s: &mut Server<S>, now: Instant, n: u8) -> Ipv4Addr {
    send(s, now, &msg(ClientMessageKind::Discover, n)).unwrap();
    let (_, offer) = reply(s);
    assert_eq!(offer.kind, ReplyKind::Offer);
    let mut req = msg(ClientMessageKind::Request, n);
    req.server_id = Some(SERVER);
    req.requested_addr = Some(offer.your_addr);
    send(s, now, &req).unwrap();
    let (_, ack) = reply(s);
    assert_eq!(ack.kind, ReplyKind::Ack);
    assert_eq!(ack.your_addr, offer.your_addr);
    ack.your_addr
}

#[test]
fn full_exchange_with_options() {
    let (mut s, t0) = server();
    let mut d = msg(ClientMessageKind::Discover, 1);
    d.parameter_request_list = Some(vec![1, 3, 6, 15, 26, 119, 121]);
    d.hostname = Some("guest1".into());
    send(&mut s, t0, &d).unwrap();
    let (dest, offer) = reply(&mut s);
    // No broadcast flag, no ciaddr: unicast to chaddr/yiaddr (RFC 2131 §4.1).
    assert_eq!(
        dest,
        Destination::Hardware {
            addr: offer.your_addr,
            mac: [2, 0, 0, 0, 0, 1]
        }
    );
    // A socket host cannot unicast to an address the client does not hold
    // yet: it broadcasts (RFC 2131 §4.1 allows it).
    assert_eq!(
        dest.socket_addr(),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
    );
    assert!(Pool::range(a("10.8.0.100"), a("10.8.0.199")).is_dynamic(offer.your_addr));
    assert_eq!(offer.server_id, SERVER);
    assert_eq!(offer.subnet_mask, Some(a("255.255.255.0")));
    assert_eq!(offer.routers, vec![SERVER]);
    assert_eq!(offer.dns_servers, vec![SERVER]);
    assert_eq!(offer.interface_mtu, Some(1280));
    assert_eq!(offer.domain_name.as_deref(), Some("wow.example"));
    assert_eq!(offer.domain_search.len(), 1);
    // RFC 3442: the default route rides along in option 121.
    assert_eq!(
        offer.classless_routes,
        vec![
            ("10.9.0.0/16".parse().unwrap(), SERVER),
            ("0.0.0.0/0".parse().unwrap(), SERVER)
        ]
    );
    let times = offer.lease.unwrap();
    assert_eq!(
        (times.lease_secs, times.renewal_secs, times.rebinding_secs),
        (100, 50, 87)
    );

    let mut r = msg(ClientMessageKind::Request, 1);
    r.server_id = Some(SERVER);
    r.requested_addr = Some(offer.your_addr);
    r.broadcast = true;
    r.hostname = Some("guest1".into());
    send(&mut s, t0, &r).unwrap();
    let (dest, ack) = reply(&mut s);
    assert_eq!(dest, Destination::Broadcast);
    assert_eq!(ack.your_addr, offer.your_addr);
    match s.poll_event() {
        Some(Event::Leased {
            addr,
            hostname,
            renewed,
            ..
        }) => {
            assert_eq!(addr, offer.your_addr);
            assert_eq!(hostname.as_deref(), Some("guest1"));
            assert!(!renewed);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.store().leases()[&offer.your_addr].hostname.as_deref(),
        Some("guest1")
    );
}

#[test]
fn client_fqdn_is_captured_and_answered() {
    let (mut s, t0) = server();
    let mut d = msg(ClientMessageKind::Discover, 1);
    let name = dhcproto::Name::from_ascii("guest.wow.example.").unwrap();
    // The client asks to do its own A update (S = 1).
    d.fqdn = Some(dhcp_virt::wire::ClientFqdn {
        flags: 0x05,
        name: name.clone(),
    });
    send(&mut s, t0, &d).unwrap();
    let (_, offer) = reply(&mut s);
    let f = offer.fqdn.unwrap();
    // S set, O clear (no override), E set, N clear.
    assert_eq!((f.flags, f.name.clone()), (0x05, name.clone()));
    let mut r = msg(ClientMessageKind::Request, 1);
    r.server_id = Some(SERVER);
    r.requested_addr = Some(offer.your_addr);
    // Now the client leaves the update to the server (S = 0): O is set.
    r.fqdn = Some(dhcp_virt::wire::ClientFqdn {
        flags: 0x04,
        name: name.clone(),
    });
    send(&mut s, t0, &r).unwrap();
    assert_eq!(reply(&mut s).1.fqdn.unwrap().flags, 0x07);
    match s.poll_event() {
        Some(Event::Leased { fqdn: Some(f), .. }) => assert_eq!(f.name, name),
        other => panic!("{other:?}"),
    }
}

#[test]
fn parameter_request_list_is_respected() {
    let (mut s, t0) = server();
    let mut d = msg(ClientMessageKind::Discover, 1);
    d.parameter_request_list = Some(vec![1, 3]);
    send(&mut s, t0, &d).unwrap();
    let (_, offer) = reply(&mut s);
    assert_eq!(offer.routers, vec![SERVER]);
    assert!(offer.dns_servers.is_empty());
    assert_eq!(offer.interface_mtu, None);
    assert!(offer.classless_routes.is_empty());
    assert!(offer.domain_name.is_none());
}

#[test]
fn retransmissions_get_the_same_answers() {
    let (mut s, t0) = server();
    let d = msg(ClientMessageKind::Discover, 1);
    send(&mut s, t0, &d).unwrap();
    let (_, o1) = reply(&mut s);
    send(&mut s, t0 + Duration::from_secs(2), &d).unwrap();
    let (_, o2) = reply(&mut s);
    assert_eq!(o1.your_addr, o2.your_addr);
    let mut r = msg(ClientMessageKind::Request, 1);
    r.server_id = Some(SERVER);
    r.requested_addr = Some(o1.your_addr);
    send(&mut s, t0 + Duration::from_secs(3), &r).unwrap();
    send(&mut s, t0 + Duration::from_secs(4), &r).unwrap();
    assert_eq!(reply(&mut s).1.your_addr, o1.your_addr);
    assert_eq!(reply(&mut s).1.your_addr, o1.your_addr);
    assert_eq!(s.leases().count(), 1);
}

#[test]
fn clients_get_distinct_addresses_and_client_id_wins_over_mac() {
    let (mut s, t0) = server();
    let x = lease(&mut s, t0, 1);
    let y = lease(&mut s, t0, 2);
    assert_ne!(x, y);
    // Same MAC, different client identifier: a different client.
    let mut d = msg(ClientMessageKind::Discover, 1);
    d.client_id = Some(vec![0xff, 1, 2, 3]);
    send(&mut s, t0, &d).unwrap();
    let (_, offer) = reply(&mut s);
    assert_ne!(offer.your_addr, x);
    assert_eq!(offer.client_id, Some(vec![0xff, 1, 2, 3]));
}

#[test]
fn renewing_rebinding_and_expiry() {
    let (mut s, t0) = server();
    let addr = lease(&mut s, t0, 1);
    while s.poll_event().is_some() {}
    // RENEWING at T1: unicast, ciaddr set, no server id or option 50.
    let t1 = t0 + Duration::from_secs(50);
    let mut r = msg(ClientMessageKind::Request, 1);
    r.client_addr = addr;
    send(&mut s, t1, &r).unwrap();
    let (dest, ack) = reply(&mut s);
    assert_eq!(
        dest,
        Destination::Unicast {
            addr,
            mac: [2, 0, 0, 0, 0, 1]
        }
    );
    // The renewing client holds its address: a socket host unicasts.
    assert_eq!(dest.socket_addr(), SocketAddrV4::new(addr, 68));
    assert!(!dest.is_socket_broadcast());
    assert_eq!(
        (ack.kind, ack.your_addr, ack.client_addr),
        (ReplyKind::Ack, addr, addr)
    );
    assert!(matches!(
        s.poll_event(),
        Some(Event::Leased { renewed: true, .. })
    ));
    // The renewal moved expiry to t1 + 100 s.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(100)));
    s.handle_timeout(t0 + Duration::from_secs(120));
    assert_eq!(s.lease_of(&ClientKey::Hardware(mac(1))), Some(addr));
    s.handle_timeout(t1 + Duration::from_secs(100));
    assert!(matches!(s.poll_event(), Some(Event::Expired { addr: x, .. }) if x == addr));
    assert_eq!(s.lease_of(&ClientKey::Hardware(mac(1))), None);
    // REBINDING after expiry: still free, so the address comes back.
    let t3 = t1 + Duration::from_secs(101);
    send(&mut s, t3, &r).unwrap();
    assert_eq!(reply(&mut s).1.your_addr, addr);
}

#[test]
fn init_reboot_naks_foreign_and_taken_addresses() {
    let (mut s, t0) = server();
    let taken = lease(&mut s, t0, 1);
    let mut r = msg(ClientMessageKind::Request, 2);
    r.requested_addr = Some(a("192.168.1.50"));
    assert!(matches!(
        send(&mut s, t0, &r),
        Err(Refusal::WrongSubnet { requested }) if requested == a("192.168.1.50")
    ));
    let (dest, nak) = reply(&mut s);
    assert_eq!((dest, nak.kind), (Destination::Broadcast, ReplyKind::Nak));
    assert_eq!(nak.your_addr, Ipv4Addr::UNSPECIFIED);
    assert!(nak.lease.is_none());

    r.requested_addr = Some(taken);
    assert!(matches!(
        send(&mut s, t0, &r),
        Err(Refusal::AddressTaken { .. })
    ));
    assert_eq!(reply(&mut s).1.kind, ReplyKind::Nak);

    // Outside the pool but inside the network.
    r.requested_addr = Some(a("10.8.0.20"));
    assert!(matches!(
        send(&mut s, t0, &r),
        Err(Refusal::NotLeasable { .. })
    ));
    assert_eq!(reply(&mut s).1.kind, ReplyKind::Nak);

    // A free pool address: granted (authoritative).
    r.requested_addr = Some(a("10.8.0.150"));
    send(&mut s, t0, &r).unwrap();
    let (_, ack) = reply(&mut s);
    assert_eq!((ack.kind, ack.your_addr), (ReplyKind::Ack, a("10.8.0.150")));
}

#[test]
fn non_authoritative_stays_silent_for_unknown_clients() {
    let t0 = Instant::now();
    let mut c = config();
    c.authoritative = false;
    let mut s = Server::new(t0, unix(0), c, MemoryStore::new()).unwrap();
    let mut r = msg(ClientMessageKind::Request, 2);
    r.requested_addr = Some(a("10.8.0.150"));
    assert!(matches!(send(&mut s, t0, &r), Err(Refusal::NoLease { .. })));
    assert!(s.poll_transmit().is_none());
}

#[test]
fn selecting_another_server_withdraws_the_offer() {
    let (mut s, t0) = server();
    send(&mut s, t0, &msg(ClientMessageKind::Discover, 1)).unwrap();
    let (_, offer) = reply(&mut s);
    let mut r = msg(ClientMessageKind::Request, 1);
    r.server_id = Some(a("10.8.0.2"));
    r.requested_addr = Some(a("10.8.0.99"));
    assert!(matches!(
        send(&mut s, t0, &r),
        Err(Refusal::UnknownServerId { server_id }) if server_id == a("10.8.0.2")
    ));
    assert!(s.poll_transmit().is_none());
    // A REQUEST to us for an address we did not offer: NAK.
    r.server_id = Some(SERVER);
    r.requested_addr = Some(a("10.8.0.123"));
    assert!(matches!(
        send(&mut s, t0, &r),
        Err(Refusal::OfferMismatch { .. })
    ));
    assert_eq!(reply(&mut s).1.kind, ReplyKind::Nak);
    // The withdrawn offer is still preferred for the same client.
    send(&mut s, t0, &msg(ClientMessageKind::Discover, 1)).unwrap();
    assert_eq!(reply(&mut s).1.your_addr, offer.your_addr);
}

#[test]
fn decline_quarantines_the_address() {
    let (mut s, t0) = server();
    let addr = lease(&mut s, t0, 1);
    while s.poll_event().is_some() {}
    let mut d = msg(ClientMessageKind::Decline, 1);
    d.requested_addr = Some(addr);
    d.server_id = Some(SERVER);
    send(&mut s, t0, &d).unwrap();
    assert!(s.poll_transmit().is_none());
    assert!(matches!(s.poll_event(), Some(Event::Declined { addr: x, .. }) if x == addr));
    assert!(s.store().leases().is_empty());
    send(&mut s, t0, &msg(ClientMessageKind::Discover, 1)).unwrap();
    assert_ne!(reply(&mut s).1.your_addr, addr);
    // Another client cannot get it either, even by asking.
    let mut r = msg(ClientMessageKind::Request, 3);
    r.requested_addr = Some(addr);
    assert!(matches!(
        send(&mut s, t0, &r),
        Err(Refusal::NotLeasable { .. })
    ));
    // After the quarantine it can.
    let later = t0 + Duration::from_secs(601);
    while s.poll_transmit().is_some() {}
    send(&mut s, later, &r).unwrap();
    assert_eq!(reply(&mut s).1.your_addr, addr);
}

#[test]
fn release_then_return_gets_the_same_address() {
    let (mut s, t0) = server();
    let addr = lease(&mut s, t0, 1);
    let other = lease(&mut s, t0, 2);
    while s.poll_event().is_some() {}
    let mut rel = msg(ClientMessageKind::Release, 1);
    rel.client_addr = addr;
    rel.server_id = Some(SERVER);
    send(&mut s, t0, &rel).unwrap();
    assert!(s.poll_transmit().is_none());
    assert!(matches!(s.poll_event(), Some(Event::Released { .. })));
    assert_eq!(s.lease_of(&ClientKey::Hardware(mac(1))), None);
    // Releasing someone else's address is ignored.
    rel.client_addr = other;
    assert!(matches!(
        send(&mut s, t0, &rel),
        Err(Refusal::NoLease { .. })
    ));
    assert_eq!(s.lease_of(&ClientKey::Hardware(mac(2))), Some(other));
    assert_eq!(lease(&mut s, t0 + Duration::from_secs(5), 1), addr);
}

#[test]
fn inform_gets_configuration_only() {
    let (mut s, t0) = server();
    let mut m = msg(ClientMessageKind::Inform, 1);
    m.client_addr = a("10.8.0.7");
    send(&mut s, t0, &m).unwrap();
    let (dest, ack) = reply(&mut s);
    assert_eq!(
        dest,
        Destination::Unicast {
            addr: a("10.8.0.7"),
            mac: [2, 0, 0, 0, 0, 1]
        }
    );
    assert_eq!(ack.kind, ReplyKind::Ack);
    assert_eq!(ack.your_addr, Ipv4Addr::UNSPECIFIED);
    assert!(ack.lease.is_none());
    assert_eq!(ack.dns_servers, vec![SERVER]);
    assert_eq!(s.leases().count(), 0);
}

#[test]
fn exhaustion_is_a_refusal_without_offer() {
    let t0 = Instant::now();
    let mut c = config();
    c.pool = Pool::range(a("10.8.0.100"), a("10.8.0.101"));
    let mut s = Server::new(t0, unix(0), c, MemoryStore::new()).unwrap();
    lease(&mut s, t0, 1);
    lease(&mut s, t0, 2);
    assert!(matches!(
        send(&mut s, t0, &msg(ClientMessageKind::Discover, 3)),
        Err(Refusal::PoolExhausted)
    ));
    assert!(s.poll_transmit().is_none());
}

#[test]
fn offers_expire_and_free_the_address() {
    let t0 = Instant::now();
    let mut c = config();
    c.pool = Pool::range(a("10.8.0.100"), a("10.8.0.100"));
    let mut s = Server::new(t0, unix(0), c, MemoryStore::new()).unwrap();
    send(&mut s, t0, &msg(ClientMessageKind::Discover, 1)).unwrap();
    reply(&mut s);
    assert!(send(&mut s, t0, &msg(ClientMessageKind::Discover, 2)).is_err());
    let later = t0 + Duration::from_secs(31);
    send(&mut s, later, &msg(ClientMessageKind::Discover, 2)).unwrap();
    assert_eq!(reply(&mut s).1.your_addr, a("10.8.0.100"));
}

#[test]
fn reservations_by_mac_and_client_id() {
    let t0 = Instant::now();
    let mut c = config();
    c.pool.reservations = vec![
        Reservation {
            key: ReservationKey::Mac([2, 0, 0, 0, 0, 1]),
            addr: a("10.8.0.50"),
        },
        Reservation {
            key: ReservationKey::ClientId(vec![1, 2, 3]),
            addr: a("10.8.0.150"),
        },
    ];
    let mut s = Server::new(t0, unix(0), c, MemoryStore::new()).unwrap();
    // Nobody else may take a reserved address.
    let mut r = msg(ClientMessageKind::Request, 7);
    r.requested_addr = Some(a("10.8.0.150"));
    assert!(matches!(
        send(&mut s, t0, &r),
        Err(Refusal::NotLeasable { .. })
    ));
    assert_eq!(reply(&mut s).1.kind, ReplyKind::Nak);
    assert_eq!(lease(&mut s, t0, 1), a("10.8.0.50"));
    let mut d = msg(ClientMessageKind::Discover, 9);
    d.client_id = Some(vec![1, 2, 3]);
    send(&mut s, t0, &d).unwrap();
    assert_eq!(reply(&mut s).1.your_addr, a("10.8.0.150"));
}

#[test]
fn malformed_input_changes_no_state() {
    let (mut s, t0) = server();
    lease(&mut s, t0, 1);
    let before = format!("{:?}", s.leases().collect::<Vec<_>>());
    let mut bytes = msg(ClientMessageKind::Discover, 2).emit();
    bytes.truncate(100);
    assert!(matches!(
        s.handle_message(t0, &bytes),
        Err(Refusal::Malformed(FrameError::Message(
            MessageError::Truncated { len: 100 }
        )))
    ));
    assert!(matches!(
        s.handle_frame(t0, &[0u8; 10]),
        Err(Refusal::Malformed(FrameError::Headers))
    ));
    assert!(s.poll_transmit().is_none());
    assert_eq!(before, format!("{:?}", s.leases().collect::<Vec<_>>()));
}

#[test]
fn file_store_restart_keeps_addresses() {
    let dir = std::env::temp_dir().join(format!("dhcp-virt-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("leases.json");
    let t0 = Instant::now();
    let mut got = Vec::new();
    {
        let mut s = Server::new(t0, unix(0), config(), FileStore::open(&path).unwrap()).unwrap();
        for n in 1..=5 {
            // Ask for addresses the stable preference would not pick.
            let mut r = msg(ClientMessageKind::Request, n);
            r.requested_addr = Some(Ipv4Addr::new(10, 8, 0, 190 + n));
            send(&mut s, t0, &r).unwrap();
            got.push(reply(&mut s).1.your_addr);
        }
        let mut rel = msg(ClientMessageKind::Release, 5);
        rel.client_addr = got[4];
        send(&mut s, t0, &rel).unwrap();
    }
    // Restarted ten seconds later (wall clock and Instant both moved).
    let t1 = Instant::now();
    let mut s = Server::new(t1, unix(10), config(), FileStore::open(&path).unwrap()).unwrap();
    for n in 1..=5u8 {
        assert_eq!(lease(&mut s, t1, n), got[usize::from(n) - 1], "client {n}");
    }
    // A fresh server (no state) would have chosen differently.
    let (mut fresh, t2) = server();
    assert_ne!(lease(&mut fresh, t2, 1), got[0]);
    // A corrupt state file stops the server instead of starting empty.
    std::fs::write(&path, b"{\"version\":1,\"leases\":[{").unwrap();
    assert!(matches!(
        FileStore::open(&path),
        Err(StoreError::Corrupt { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn leases_expired_while_down_are_remembered_not_bound() {
    let mut store = MemoryStore::new();
    let t0 = Instant::now();
    let addr = {
        let mut s = Server::new(t0, unix(0), config(), MemoryStore::new()).unwrap();
        let mut r = msg(ClientMessageKind::Request, 1);
        r.requested_addr = Some(a("10.8.0.177"));
        send(&mut s, t0, &r).unwrap();
        for l in s.store().leases().values() {
            store.put(l).unwrap();
        }
        reply(&mut s).1.your_addr
    };
    let mut s = Server::new(t0, unix(1000), config(), store).unwrap();
    assert_eq!(s.leases().count(), 0);
    assert_eq!(lease(&mut s, t0, 1), addr);
}

fn directory_server() -> (Server<MemoryStore>, Instant) {
    let t0 = Instant::now();
    let mut c = config();
    c.allocation = dhcp_virt::Allocation::Directory {
        claim_timeout: Duration::from_secs(2),
        max_attempts: 2,
    };
    (Server::new(t0, unix(0), c, MemoryStore::new()).unwrap(), t0)
}

fn complete(
    s: &mut Server<MemoryStore>,
    now: Instant,
    id: dhcp_virt::RequestId,
    result: dhcp_virt::ClaimResult,
) {
    s.handle_directory_completion(now, dhcp_virt::DirectoryCompletion { id, result });
}

#[test]
fn directory_mode_offers_only_claimed_addresses() {
    use dhcp_virt::{ClaimResult, DirectoryOp};
    let (mut s, t0) = directory_server();
    let d = msg(ClientMessageKind::Discover, 1);
    send(&mut s, t0, &d).unwrap();
    assert!(s.poll_transmit().is_none(), "no offer before the claim");
    let claim = s.poll_directory_request().unwrap();
    assert_eq!(claim.op, DirectoryOp::Claim);
    assert_eq!(claim.owner, ClientKey::Hardware(mac(1)));
    // The retransmission is absorbed while the claim is out.
    assert!(matches!(send(&mut s, t0, &d), Err(Refusal::Pending)));
    assert!(s.poll_directory_request().is_none());
    // Lost race: the server claims another address.
    complete(&mut s, t0, claim.id, ClaimResult::Taken);
    assert!(s.poll_transmit().is_none());
    let second = s.poll_directory_request().unwrap();
    assert_ne!(second.addr, claim.addr);
    // A stale completion is ignored.
    complete(&mut s, t0, claim.id, ClaimResult::Granted);
    assert!(s.poll_transmit().is_none());
    complete(&mut s, t0, second.id, ClaimResult::Granted);
    let (_, offer) = reply(&mut s);
    assert_eq!(offer.your_addr, second.addr);
    // SELECTING REQUEST: ACK without another claim.
    let mut r = msg(ClientMessageKind::Request, 1);
    r.server_id = Some(SERVER);
    r.requested_addr = Some(offer.your_addr);
    send(&mut s, t0, &r).unwrap();
    assert_eq!(reply(&mut s).1.kind, ReplyKind::Ack);
    assert!(s.poll_directory_request().is_none());
    // A renewal refreshes the record without waiting for it.
    let mut renew = msg(ClientMessageKind::Request, 1);
    renew.client_addr = offer.your_addr;
    send(&mut s, t0 + Duration::from_secs(50), &renew).unwrap();
    assert_eq!(reply(&mut s).1.kind, ReplyKind::Ack);
    let refresh = s.poll_directory_request().unwrap();
    assert_eq!(
        (refresh.op, refresh.addr),
        (DirectoryOp::Claim, offer.your_addr)
    );
    // Release frees the record.
    let mut rel = msg(ClientMessageKind::Release, 1);
    rel.client_addr = offer.your_addr;
    send(&mut s, t0 + Duration::from_secs(51), &rel).unwrap();
    assert_eq!(s.poll_directory_request().unwrap().op, DirectoryOp::Release);
}

#[test]
fn directory_mode_init_reboot_conflict_naks_and_timeouts_forget() {
    use dhcp_virt::ClaimResult;
    let (mut s, t0) = directory_server();
    let mut r = msg(ClientMessageKind::Request, 2);
    r.requested_addr = Some(a("10.8.0.150"));
    send(&mut s, t0, &r).unwrap();
    let claim = s.poll_directory_request().unwrap();
    assert_eq!(claim.addr, a("10.8.0.150"));
    complete(&mut s, t0, claim.id, ClaimResult::Taken);
    assert_eq!(reply(&mut s).1.kind, ReplyKind::Nak);
    assert!(matches!(
        s.poll_event(),
        Some(Event::Refused {
            reason: Refusal::AddressTaken { .. },
            ..
        })
    ));
    // Both attempts lost: refused as exhausted, no offer.
    send(&mut s, t0, &msg(ClientMessageKind::Discover, 3)).unwrap();
    let c1 = s.poll_directory_request().unwrap();
    complete(&mut s, t0, c1.id, ClaimResult::Taken);
    let c2 = s.poll_directory_request().unwrap();
    complete(&mut s, t0, c2.id, ClaimResult::Taken);
    assert!(s.poll_transmit().is_none());
    assert!(matches!(
        s.poll_event(),
        Some(Event::Refused {
            reason: Refusal::PoolExhausted,
            ..
        })
    ));
    // An unanswered claim is forgotten after the claim timeout; the
    // client's next DISCOVER starts a new one.
    send(&mut s, t0, &msg(ClientMessageKind::Discover, 4)).unwrap();
    let c3 = s.poll_directory_request().unwrap();
    assert_eq!(s.pending_count(), 1);
    s.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(s.pending_count(), 0);
    complete(
        &mut s,
        t0 + Duration::from_secs(3),
        c3.id,
        ClaimResult::Granted,
    );
    assert!(s.poll_transmit().is_none());
    send(
        &mut s,
        t0 + Duration::from_secs(4),
        &msg(ClientMessageKind::Discover, 4),
    )
    .unwrap();
    assert!(s.poll_directory_request().is_some());
}

#[test]
fn renewal_floods_do_not_grow_timers_and_expiry_still_fires() {
    let (mut s, t0) = server();
    let addr = lease(&mut s, t0, 1);
    let mut r = msg(ClientMessageKind::Request, 1);
    r.client_addr = addr;
    // 10,000 renewals over 10 s: the next deadline stays at or before the
    // first expiry (t0 + 100 s); when it fires the lease is re-armed at the
    // last renewal's expiry, not expired.
    for k in 0..10_000u64 {
        send(&mut s, t0 + Duration::from_millis(k), &r).unwrap();
        s.poll_transmit().unwrap();
    }
    assert!(s.queued_timers() <= 2, "{} timers", s.queued_timers());
    assert!(s.poll_timeout().unwrap() <= t0 + Duration::from_secs(100));
    s.handle_timeout(t0 + Duration::from_secs(100));
    assert_eq!(s.lease_of(&ClientKey::Hardware(mac(1))), Some(addr));
    let last = t0 + Duration::from_millis(9_999) + Duration::from_secs(100);
    assert_eq!(s.poll_timeout(), Some(last));
    s.handle_timeout(last);
    assert_eq!(s.lease_of(&ClientKey::Hardware(mac(1))), None);
}

#[test]
fn invalid_configurations_are_refused() {
    use dhcp_virt::{ConfigError, StartError};
    let t0 = Instant::now();
    let cases: Vec<(Config, ConfigError)> = vec![
        (
            Config {
                interface_mtu: Some(60),
                ..config()
            },
            ConfigError::InterfaceMtu(60),
        ),
        (
            Config {
                server_addr: a("10.9.0.1"),
                ..config()
            },
            ConfigError::ServerOutsideNetwork(a("10.9.0.1")),
        ),
        (
            Config {
                pool: Pool::range(a("10.8.0.200"), a("10.8.1.10")),
                ..config()
            },
            ConfigError::RangeOutsideNetwork {
                start: a("10.8.0.200"),
                end: a("10.8.1.10"),
            },
        ),
        (
            Config {
                lease_duration: Duration::ZERO,
                ..config()
            },
            ConfigError::LeaseDuration,
        ),
    ];
    for (c, want) in cases {
        match Server::new(t0, unix(0), c, MemoryStore::new()) {
            Err(StartError::Config(got)) => assert_eq!(got, want),
            other => panic!("{want:?}: {other:?}"),
        }
    }
}
