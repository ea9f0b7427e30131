//! Directory mode: a renewal whose re-claim finds the address held by
//! another owner (a duplicate left by a healed partition) gives the address
//! up, and the client's next REQUEST is NAKed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcp_virt::wire::{ClientMessage, ClientMessageKind, HardwareAddr, Reply, ReplyKind};
use dhcp_virt::{
    AddressDirectory, Allocation, ClaimResult, ClientKey, Config, DirectoryCompletion, DirectoryOp,
    Event, FakeConfig, FakeDirectory, FileStore, LeaseStore, MemoryStore, Pool, Refusal, Server,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);
const UNIX_SECS: u64 = 1_700_000_000;

/// The wall time `secs` seconds after the tests' start.
fn unix(secs: u64) -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(UNIX_SECS + secs)
}
const LEASE: Duration = Duration::from_secs(100);

fn config(authoritative: bool) -> Config {
    let mut c = Config::new("10.8.0.0/24".parse().unwrap(), SERVER);
    c.pool = Pool::range(Ipv4Addr::new(10, 8, 0, 100), Ipv4Addr::new(10, 8, 0, 199));
    c.lease_duration = LEASE;
    // Shorter than the rest of the lost lease: the NAK must not depend on it.
    c.decline_duration = Duration::from_secs(10);
    c.authoritative = authoritative;
    c.allocation = Allocation::Directory {
        claim_timeout: Duration::from_secs(2),
        max_attempts: 4,
    };
    c
}

fn mac(n: u8) -> HardwareAddr {
    HardwareAddr::ethernet([2, 0, 0, 0, 0, n])
}

fn key(n: u8) -> ClientKey {
    ClientKey::Hardware(mac(n))
}

fn msg(kind: ClientMessageKind, n: u8) -> ClientMessage {
    ClientMessage::new(kind, 0x1000 + u32::from(n), mac(n))
}

fn renewing(n: u8, addr: Ipv4Addr) -> ClientMessage {
    let mut m = msg(ClientMessageKind::Request, n);
    m.client_addr = addr;
    m
}

fn reply<S: LeaseStore>(s: &mut Server<S>) -> Reply {
    Reply::parse(&s.poll_transmit().expect("a reply").payload).unwrap()
}

/// Run the server's directory requests through `d` until none is left;
/// returns the time after the last completion.
fn pump<S: LeaseStore>(s: &mut Server<S>, d: &mut FakeDirectory<()>, mut now: Instant) -> Instant {
    loop {
        while let Some(r) = s.poll_directory_request() {
            d.submit(now, (), r);
        }
        let Some(due) = d.poll_timeout() else {
            return now;
        };
        now = now.max(due);
        while let Some(((), done)) = d.poll_completion(now) {
            s.handle_directory_completion(now, done);
        }
    }
}

/// DISCOVER, OFFER, REQUEST, ACK through the directory.
fn lease<S: LeaseStore>(
    s: &mut Server<S>,
    d: &mut FakeDirectory<()>,
    now: Instant,
    n: u8,
) -> Ipv4Addr {
    s.handle_client_message(now, msg(ClientMessageKind::Discover, n))
        .unwrap();
    let now = pump(s, d, now);
    let offer = reply(s);
    assert_eq!(offer.kind, ReplyKind::Offer);
    let mut r = msg(ClientMessageKind::Request, n);
    r.server_id = Some(SERVER);
    r.requested_addr = Some(offer.your_addr);
    s.handle_client_message(now, r).unwrap();
    let ack = reply(s);
    assert_eq!((ack.kind, ack.your_addr), (ReplyKind::Ack, offer.your_addr));
    ack.your_addr
}

fn events<S: LeaseStore>(s: &mut Server<S>) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn renewal_that_finds_its_claim_taken_gives_the_address_up() {
    for authoritative in [true, false] {
        let dir = std::env::temp_dir().join(format!(
            "dhcp-virt-claim-lost-{}-{authoritative}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("leases.json");
        let t0 = Instant::now();
        let fake = FakeConfig::default();

        // Side A: client 1 leases an address from server 1.
        let mut side_a = FakeDirectory::new(fake, 1);
        let store = FileStore::open(&path).unwrap();
        let mut s1 = Server::new(t0, unix(0), config(authoritative), store).unwrap();
        let lost = lease(&mut s1, &mut side_a, t0, 1);
        events(&mut s1);

        // Side B, partitioned from A: server 2 grants the same address to
        // client 0 (INIT-REBOOT), whose owner key is the smaller one.
        let mut side_b = FakeDirectory::new(fake, 2);
        let mut s2 = Server::new(t0, unix(0), config(true), MemoryStore::new()).unwrap();
        let mut reboot = msg(ClientMessageKind::Request, 0);
        reboot.requested_addr = Some(lost);
        s2.handle_client_message(t0, reboot).unwrap();
        pump(&mut s2, &mut side_b, t0);
        assert_eq!(reply(&mut s2).kind, ReplyKind::Ack);
        assert_eq!(s2.lease_of(&key(0)), Some(lost));

        // The partition heals: the smaller owner keeps the address.
        side_a.merge(side_b);
        let mut dht = side_a;
        assert_eq!(dht.owner(lost), Some(&key(0)));

        // At T1 client 1 renews. The ACK goes out at once; the re-claim's
        // answer takes the address away.
        let t1 = t0 + LEASE / 2;
        s1.handle_client_message(t1, renewing(1, lost)).unwrap();
        let ack = reply(&mut s1);
        assert_eq!((ack.kind, ack.your_addr), (ReplyKind::Ack, lost));
        let after = pump(&mut s1, &mut dht, t1);
        let got = events(&mut s1);
        assert!(
            matches!(got.first(), Some(Event::Leased { renewed: true, .. })),
            "{got:?}"
        );
        match got.get(1) {
            Some(Event::ClaimLost { client, addr }) => {
                assert_eq!((client, *addr), (&key(1), lost));
            }
            other => panic!("authoritative {authoritative}: {other:?}"),
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(s1.lease_of(&key(1)), None);
        assert_eq!(s1.leases().count(), 0);
        // Our record does not come back from the directory: nothing is
        // released in another owner's name.
        assert!(s1.poll_directory_request().is_none());
        assert_eq!(dht.owner(lost), Some(&key(0)));

        // The winner's renewal still succeeds.
        s2.handle_client_message(t1, renewing(0, lost)).unwrap();
        assert_eq!(reply(&mut s2).kind, ReplyKind::Ack);
        pump(&mut s2, &mut dht, t1);
        assert!(
            events(&mut s2)
                .iter()
                .all(|e| !matches!(e, Event::ClaimLost { .. }))
        );
        assert_eq!(s2.lease_of(&key(0)), Some(lost));

        // Past the decline quarantine, still within the client's lease:
        // RENEWING, REBINDING and INIT-REBOOT all get a NAK.
        let t2 = after + Duration::from_secs(25);
        let mut rebinding = renewing(1, lost);
        rebinding.broadcast = true;
        let mut init_reboot = msg(ClientMessageKind::Request, 1);
        init_reboot.requested_addr = Some(lost);
        for m in [renewing(1, lost), rebinding, init_reboot] {
            let res = s1.handle_client_message(t2, m);
            assert!(
                matches!(res, Err(Refusal::AddressTaken { requested }) if requested == lost),
                "authoritative {authoritative}: {res:?}"
            );
            assert_eq!(reply(&mut s1).kind, ReplyKind::Nak);
            assert!(s1.poll_directory_request().is_none());
        }

        // The client restarts at DISCOVER and gets another address.
        let fresh = lease(&mut s1, &mut dht, t2, 1);
        assert_ne!(fresh, lost);
        assert_eq!(s1.lease_of(&key(1)), Some(fresh));
        assert_eq!(dht.owner(fresh), Some(&key(1)));

        // Durable: after a restart only the new lease is there.
        drop(s1.into_store());
        let mut store = FileStore::open(&path).unwrap();
        let stored: Vec<_> = store.load().unwrap().iter().map(|l| l.addr).collect();
        assert_eq!(stored, vec![fresh]);
        let s1 = Server::new(t2, unix(75), config(authoritative), store).unwrap();
        assert_eq!(s1.lease_of(&key(1)), Some(fresh));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn complete(s: &mut Server<MemoryStore>, now: Instant, id: dhcp_virt::RequestId, r: ClaimResult) {
    s.handle_directory_completion(now, DirectoryCompletion { id, result: r });
}

fn claims_lost(s: &mut Server<MemoryStore>) -> usize {
    events(s)
        .iter()
        .filter(|e| matches!(e, Event::ClaimLost { .. }))
        .count()
}

#[test]
fn only_the_latest_reclaim_counts_and_failed_or_granted_change_nothing() {
    let t0 = Instant::now();
    let mut s = Server::new(t0, unix(0), config(true), MemoryStore::new()).unwrap();
    let mut r = msg(ClientMessageKind::Request, 1);
    r.requested_addr = Some(Ipv4Addr::new(10, 8, 0, 150));
    s.handle_client_message(t0, r).unwrap();
    let claim = s.poll_directory_request().unwrap();
    assert!(!s.is_renewal_claim(claim.id));
    complete(&mut s, t0, claim.id, ClaimResult::Granted);
    let addr = reply(&mut s).your_addr;
    assert_eq!(addr, Ipv4Addr::new(10, 8, 0, 150));

    let renew = |s: &mut Server<MemoryStore>, at: u64| {
        let now = t0 + Duration::from_secs(at);
        s.handle_client_message(now, renewing(1, addr)).unwrap();
        assert_eq!(reply(s).kind, ReplyKind::Ack);
        let reclaim = s.poll_directory_request().unwrap();
        assert!(s.is_renewal_claim(reclaim.id));
        assert_eq!(
            (reclaim.op, reclaim.addr, &reclaim.owner),
            (DirectoryOp::Claim, addr, &key(1))
        );
        (now, reclaim.id)
    };
    let (_, first) = renew(&mut s, 10);
    let (now, second) = renew(&mut s, 11);
    // Only the latest is awaited: a renewal flood keeps one entry.
    assert!(!s.is_renewal_claim(first));
    // An older re-claim's answer is stale.
    complete(&mut s, now, first, ClaimResult::Taken);
    assert_eq!((claims_lost(&mut s), s.lease_of(&key(1))), (0, Some(addr)));
    // Failed: nothing known, nothing changes; the next renewal retries.
    complete(&mut s, now, second, ClaimResult::Failed);
    assert_eq!((claims_lost(&mut s), s.lease_of(&key(1))), (0, Some(addr)));
    let (now, third) = renew(&mut s, 12);
    complete(&mut s, now, third, ClaimResult::Granted);
    assert!(!s.is_renewal_claim(third));
    assert_eq!((claims_lost(&mut s), s.lease_of(&key(1))), (0, Some(addr)));
    assert_eq!(s.store().leases().len(), 1);
    // Answered twice: the second answer is ignored.
    complete(&mut s, now, third, ClaimResult::Taken);
    assert_eq!((claims_lost(&mut s), s.lease_of(&key(1))), (0, Some(addr)));

    // A released lease no longer awaits its re-claim.
    let (now, fourth) = renew(&mut s, 13);
    let mut rel = msg(ClientMessageKind::Release, 1);
    rel.client_addr = addr;
    s.handle_client_message(now, rel).unwrap();
    assert!(!s.is_renewal_claim(fourth));
    complete(&mut s, now, fourth, ClaimResult::Taken);
    assert_eq!(claims_lost(&mut s), 0);
    let released = events(&mut s);
    assert!(released.is_empty(), "{released:?}");

    // Bound again and lost: the store forgets it, the client is NAKed.
    let mut again = msg(ClientMessageKind::Request, 1);
    again.requested_addr = Some(addr);
    s.handle_client_message(now, again).unwrap();
    while let Some(req) = s.poll_directory_request() {
        if req.op == DirectoryOp::Claim {
            complete(&mut s, now, req.id, ClaimResult::Granted);
        }
    }
    assert_eq!(reply(&mut s).kind, ReplyKind::Ack);
    let (now, fifth) = renew(&mut s, 20);
    complete(&mut s, now, fifth, ClaimResult::Taken);
    assert_eq!(claims_lost(&mut s), 1);
    assert!(s.store().leases().is_empty());
    assert!(s.handle_client_message(now, renewing(1, addr)).is_err());
    assert_eq!(reply(&mut s).kind, ReplyKind::Nak);
}
