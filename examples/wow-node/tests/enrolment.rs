//! Enrolment over the overlay in simulated time: a node with a join token
//! is certified at once, a node without waits for the administrator's
//! approval (given through the CA node's core, as the control socket does)
//! and gets the certificate pushed; a fake CA's announcement is ignored;
//! an unenrolled node's private prefix is closed both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use ipsec_ca::{
    Ca, CaIdentity, FileStore, JoinToken, KeyType, NodeKey, NodeRequest, Policy, Store,
    StoreWriter, WriteQueue,
};
use support::{Node, exchange, smol, tick};
use wow_core::core::CoreEvent;
use wow_core::guest::Guest;
use wow_core::membership::{EnrolVia, Membership, MembershipConfig, Output};

mod support;

/// A CA directory under the system's temporary directory, removed on drop.
struct CaDir(PathBuf);

impl Drop for CaDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wall() -> std::time::SystemTime {
    SystemTime::now()
}

/// A CA over a fresh directory, serving 10.128.0.0/16 like the runtime's.
fn file_ca(name: &str) -> (Ca<FileStore>, Vec<u8>, CaDir) {
    let dir = std::env::temp_dir().join(format!(
        "wow-enrol-test-{}",
        wow_core::core::os_random_u64()
    ));
    let store = FileStore::new(&dir).unwrap();
    let identity = CaIdentity::create_root(
        wall(),
        KeyType::Ed25519,
        name,
        std::time::Duration::from_secs(3650 * 86_400),
    )
    .unwrap();
    store.save_identity(&identity).unwrap();
    let der = identity.cert_der().to_vec();
    let policy = Policy {
        network: Some((Ipv4Addr::new(10, 128, 0, 0), 16)),
        ..Policy::default()
    };
    (Ca::open(identity, policy, store).unwrap(), der, CaDir(dir))
}

/// One enrolling node's side of the test: its guest, and the membership
/// `wow-node up` drives beside its core.
struct Enrollee {
    index: usize,
    key: NodeKey,
    token: Option<JoinToken>,
    membership: Option<Membership>,
    guest: Option<Guest>,
    peer_name: String,
    enrolled: Option<Vec<u8>>,
    pending: bool,
}

impl Enrollee {
    fn new(index: usize, token: Option<JoinToken>, peer: usize) -> Enrollee {
        Enrollee {
            index,
            key: NodeKey::generate(KeyType::Ed25519).unwrap(),
            token,
            membership: None,
            guest: None,
            peer_name: format!("host-{peer}.wow.internal"),
            enrolled: None,
            pending: false,
        }
    }

    /// Runs the guest and the node's membership: it enrols on the first
    /// lease and installs the certificate when it arrives.
    fn step(&mut self, core: &mut Node, ca_der: &[u8], base: Instant, now: Instant) {
        let wall = SystemTime::now();
        let m = self.membership.get_or_insert_with(|| {
            let config = MembershipConfig {
                key: NodeKey::from_pkcs8_der(self.key.pkcs8_der()).unwrap(),
                ca_certificate: Some(ca_der.to_vec()),
                certificate: None,
                enrol: Some(EnrolVia::Overlay(self.token.clone())),
                domain: "wow.internal".into(),
                crl_refresh: Duration::from_secs(3600),
                crl_file: false,
                overlay: None,
            };
            let mut m = Membership::new(now, config).unwrap();
            m.start(core, now, wall).unwrap();
            m
        });
        if self.guest.is_none() && core.overlay().is_joined() && now > base + Duration::from_secs(3)
        {
            let mut mac = [0x52, 0x54, 0x00, 0x77, 0x02, 0];
            mac[5] = self.index as u8 + 1;
            self.guest = Some(Guest::new(
                smol(base, now),
                mac,
                &format!("host-{}", self.index),
                &self.peer_name,
                1024,
                core.settings().guest_mtu,
                300 + self.index as u64,
            ));
        }
        if let Some(g) = self.guest.as_mut() {
            g.exchange(now, core, smol(base, now), &mut Vec::new());
        }
        if m.poll_timeout() <= now {
            m.handle_timeout(core, now, wall);
        }
        while let Some(event) = core.poll_event() {
            if matches!(&event, CoreEvent::EnrolmentStatus(s) if s.contains("Pending")) {
                self.pending = true;
            }
            m.handle_event(core, now, wall, &event);
        }
        while let Some(output) = m.poll_output() {
            if let Output::KeepCertificate(certificate) = output {
                self.enrolled = Some(certificate);
            }
        }
    }
}

/// A join token for any address, valid for an hour, from the CA `core` serves.
fn issue_token(core: &mut Node, now: Instant) -> JoinToken {
    core.with_ca(now, |ca| {
        ca.issue_token(wall(), None, std::time::Duration::from_secs(3600))
    })
    .unwrap()
    .unwrap()
}

fn step_all(cores: &mut [Node], endpoints: &[std::net::SocketAddr], now: Instant) {
    let mut buf = vec![0u8; overlay_core::wire::MAX_MESSAGE_LEN];
    tick(cores, now);
    exchange(cores, endpoints, now, &mut buf);
}

#[test]
fn a_token_node_enrols_at_once_and_an_approved_node_gets_its_certificate_pushed() {
    let base = Instant::now();
    let (ca, ca_der, _dir) = file_ca("approval test CA");
    let (mut cores, endpoints) = support::cores(3, base);
    cores[0].set_ca(base, ca);
    let token = issue_token(&mut cores[0], base);
    let mut with_token = Enrollee::new(1, Some(token), 2);
    let mut manual = Enrollee::new(2, None, 1);
    for i in [1, 2] {
        cores[i].set_closed_until_enrolled(true);
    }
    let mut now = base;
    let mut approved_at = None;
    while with_token.enrolled.is_none() || manual.enrolled.is_none() {
        assert!(
            now < base + Duration::from_secs(60),
            "not enrolled after 60 simulated seconds: token {:?}, manual pending {} enrolled {:?}",
            with_token.enrolled.is_some(),
            manual.pending,
            manual.enrolled.is_some()
        );
        now += Duration::from_millis(10);
        step_all(&mut cores, &endpoints, now);
        with_token.step(&mut cores[1], &ca_der, base, now);
        manual.step(&mut cores[2], &ca_der, base, now);
        if manual.pending && approved_at.is_none() {
            assert!(manual.enrolled.is_none(), "signed before approval");
            let issued = cores[0]
                .with_ca(now, |ca| {
                    let id = ca.pending()[0].id;
                    ca.approve(wall(), id)
                })
                .unwrap();
            issued.unwrap();
            approved_at = Some(now);
        }
    }
    // Pushed at once, not found by the node's next poll (10 s later).
    let approved_at = approved_at.unwrap();
    assert!(
        now < approved_at + Duration::from_secs(5),
        "the approval took {:?} to arrive",
        now - approved_at
    );
    assert!(cores[1].is_secure() && cores[2].is_secure());
    assert!(!cores[1].is_closed() && !cores[2].is_closed());
}

/// Writes the CA's queued changes to its directory and tells the CA node,
/// as the node's writer thread and event loop do.
fn make_durable(
    writer: &mut StoreWriter<FileStore>,
    queue: &WriteQueue,
    core: &mut Node,
    now: Instant,
) {
    let seq = writer.write(queue.take()).unwrap();
    queue.mark_durable(seq);
    core.handle_ca_durable(now);
}

/// The CA node (`cores[0]`) and one enrolling node (`cores[1]`) in
/// simulated time.
struct CaAndNode {
    cores: Vec<Node>,
    endpoints: Vec<std::net::SocketAddr>,
    node: Enrollee,
    ca_der: Vec<u8>,
    base: Instant,
    now: Instant,
}

impl CaAndNode {
    /// Runs for `secs` simulated seconds, or until `done`.
    fn run(&mut self, secs: u64, done: impl Fn(&mut CaAndNode) -> bool) {
        let end = self.now + Duration::from_secs(secs);
        while self.now < end && !done(self) {
            self.now += Duration::from_millis(10);
            step_all(&mut self.cores, &self.endpoints, self.now);
            let (base, now) = (self.base, self.now);
            self.node.step(&mut self.cores[1], &self.ca_der, base, now);
        }
    }
}

/// A CA node over a write-behind store (as `wow-node up` runs it): the
/// "pending" answer and the approval's certificate leave the CA node only
/// once the writes before them are durable, so that a crash cannot make
/// the CA forget a certificate it handed out.
#[test]
fn ca_replies_wait_for_durable_writes() {
    let base = Instant::now();
    let (ca, ca_der, dir) = file_ca("write-behind test CA");
    let policy = ca.policy().clone();
    drop(ca);
    let store = FileStore::new(&dir.0).unwrap();
    let identity = store.load_identity().unwrap();
    let (store, mut writer) = ipsec_ca::store::write_behind(store).unwrap();
    let queue = store.queue();
    let (mut cores, endpoints) = support::cores(2, base);
    cores[0].set_ca(base, Ca::open(identity, policy, store).unwrap());
    cores[0].set_ca_queue(queue.clone());
    cores[1].set_closed_until_enrolled(true);
    let mut t = CaAndNode {
        cores,
        endpoints,
        node: Enrollee::new(1, None, 0),
        ca_der,
        base,
        now: base,
    };
    // The request is queued for the administrator; the answer waits.
    t.run(60, |t| {
        t.cores[0].with_ca(t.now, |ca| ca.pending().len()) == Some(1)
    });
    assert!(
        !queue.is_durable(),
        "the request is queued, not yet durable"
    );
    t.run(3, |_| false);
    assert!(
        !t.node.pending,
        "the pending answer left before its write was durable"
    );
    make_durable(&mut writer, &queue, &mut t.cores[0], t.now);
    t.run(3, |t| t.node.pending);
    assert!(
        t.node.pending,
        "the pending answer did not follow its write"
    );

    let issued = t.cores[0]
        .with_ca(t.now, |ca| {
            let id = ca.pending()[0].id;
            ca.approve(wall(), id)
        })
        .unwrap()
        .unwrap();
    // The node asks again meanwhile: every answer waits.
    t.run(15, |_| false);
    assert!(
        t.node.enrolled.is_none(),
        "the certificate left before its issue was durable"
    );
    make_durable(&mut writer, &queue, &mut t.cores[0], t.now);
    t.run(5, |t| t.node.enrolled.is_some());
    assert_eq!(t.node.enrolled.as_deref(), Some(&issued.certificate[..]));
    drop((t, writer));
    let on_disk = FileStore::new(&dir.0).unwrap().load().unwrap().unwrap();
    assert!(on_disk.issued.iter().any(|r| r.serial == issued.serial));
}

#[test]
fn attack_fake_ca_announcement_does_not_end_enrolment() {
    let base = Instant::now();
    let (ca, ca_der, _dir) = file_ca("real CA");
    let (fake, _fake_der, _fake_dir) = file_ca("real CA");
    let (mut cores, endpoints) = support::cores(4, base);
    cores[0].set_ca(base, ca);
    // The fake CA node announces itself later (a newer timestamp) and would
    // answer every request with a Rejected signed by its own key.
    let mut fake = fake;
    fake.set_policy(Policy {
        network: Some((Ipv4Addr::new(192, 168, 0, 0), 24)),
        ..Policy::default()
    });
    let mut now = base;
    while !cores.iter().all(|c| c.overlay().is_joined()) {
        now += Duration::from_millis(10);
        step_all(&mut cores, &endpoints, now);
        assert!(now < base + Duration::from_secs(30), "ring not joined");
    }
    // (The cores start with a wall clock of 1_800_000_000; later than that.)
    cores[3].handle_timeout(
        now,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
    );
    cores[3].set_ca(now, fake);
    let token = issue_token(&mut cores[0], now);
    let mut node = Enrollee::new(1, Some(token), 2);
    cores[1].set_closed_until_enrolled(true);
    while node.enrolled.is_none() {
        assert!(
            now < base + Duration::from_secs(60),
            "not enrolled after 60 simulated seconds"
        );
        now += Duration::from_millis(10);
        step_all(&mut cores, &endpoints, now);
        node.step(&mut cores[1], &ca_der, base, now);
        while cores[3].poll_event().is_some() {}
    }
    assert!(cores[1].is_secure());
}

/// Frames `core` hands its guest whose IPv4 source is `from`.
fn frames_from(core: &mut Node, from: Option<Ipv4Addr>, guest: &mut Guest) -> usize {
    let mut n = 0;
    while let Some(f) = core.poll_tap_frame() {
        if f.len() >= 34
            && f[12..14] == [0x08, 0x00]
            && from.is_some_and(|a| f[26..30] == a.octets())
        {
            n += 1;
        }
        guest.device.rx.push_back(f.to_vec());
    }
    n
}

#[test]
fn attack_plaintext_to_and_from_an_unenrolled_node_is_dropped() {
    for closed in [false, true] {
        let base = Instant::now();
        let (mut cores, endpoints) = support::cores(3, base);
        // Node 1 has a CA but no certificate yet; node 2 runs open.
        cores[1].set_closed_until_enrolled(closed);
        let mtu = cores[0].settings().guest_mtu;
        let mut guests: Vec<Option<Guest>> = vec![None, None, None];
        let mut seen = [0usize; 3];
        let mut now = base;
        while now < base + Duration::from_secs(30) {
            now += Duration::from_millis(10);
            step_all(&mut cores, &endpoints, now);
            for i in [1, 2] {
                if guests[i].is_none()
                    && cores[i].overlay().is_joined()
                    && now > base + Duration::from_secs(3)
                {
                    guests[i] = Some(Guest::new(
                        smol(base, now),
                        [0x52, 0x54, 0x00, 0x77, 0x03, i as u8],
                        &format!("host-{i}"),
                        &format!("host-{}.wow.internal", 3 - i),
                        1024,
                        mtu,
                        400 + i as u64,
                    ));
                }
                let other = guests[3 - i].as_ref().and_then(|g| g.report.addr);
                if let Some(g) = guests[i].as_mut() {
                    // The guest's own exchange, but counting what the node
                    // delivers from the other guest.
                    for _ in 0..8 {
                        g.poll(smol(base, now), &mut Vec::new());
                        let mut moved = false;
                        while let Some(f) = g.device.tx.pop_front() {
                            cores[i].handle_tap_frame(now, &f);
                            moved = true;
                        }
                        let from = other.map(|a| Ipv4Addr::from(a.octets()));
                        let n = frames_from(&mut cores[i], from, g);
                        seen[i] += n;
                        if !moved && n == 0 && g.device.rx.is_empty() {
                            break;
                        }
                    }
                }
                while cores[i].poll_event().is_some() {}
            }
        }
        if closed {
            assert_eq!(seen[1], 0, "plaintext entered the unenrolled node");
            assert_eq!(seen[2], 0, "plaintext left the unenrolled node");
            assert!(cores[1].counters().dropped_policy > 0);
        } else {
            // The control: open nodes do exchange plaintext.
            assert!(seen[1] > 0 && seen[2] > 0, "no traffic at all: {seen:?}");
        }
    }
}

#[test]
fn a_node_renews_its_certificate_with_the_same_key_at_two_thirds() {
    use wow_core::enrol::{Lifetime, LifetimeAction};
    let base = Instant::now();
    let (ca, ca_der, _dir) = file_ca("renewal test CA");
    let (mut cores, endpoints) = support::cores(2, base);
    cores[0].set_ca(base, ca);
    let token = issue_token(&mut cores[0], base);
    let mut node = Enrollee::new(1, Some(token), 0);
    let mut now = base;
    while node.enrolled.is_none() {
        assert!(now < base + Duration::from_secs(60), "not enrolled");
        now += Duration::from_millis(10);
        step_all(&mut cores, &endpoints, now);
        node.step(&mut cores[1], &ca_der, base, now);
    }
    let first = node.enrolled.take().unwrap();
    let lifetime = Lifetime::of(&first);
    let (_, first_not_after) = lifetime.validity.unwrap();

    // 21 days later on every wall clock (two thirds of 30 days is 20).
    let later = SystemTime::now() + Duration::from_secs(21 * 86_400);
    assert_eq!(lifetime.action(later), LifetimeAction::Renew);
    assert!(lifetime.warning(later).is_none());
    let ip = cores[1].identity_ip().unwrap();
    let csr = node.key.certificate_request(&NodeRequest::new(ip)).unwrap();
    cores[1]
        .start_enrolment(
            now,
            &csr,
            node.key.spki_der(),
            &ca_der,
            ip,
            wow_core::core::os_random_u64(),
            None,
        )
        .unwrap();
    let mut buf = vec![0u8; overlay_core::wire::MAX_MESSAGE_LEN];
    while node.enrolled.is_none() {
        assert!(now < base + Duration::from_secs(120), "not renewed");
        now += Duration::from_millis(10);
        for core in cores.iter_mut() {
            core.handle_timeout(now, later);
        }
        exchange(&mut cores, &endpoints, now, &mut buf);
        node.step(&mut cores[1], &ca_der, base, now);
    }
    let renewed = node.enrolled.unwrap();
    let (_, renewed_not_after) = Lifetime::of(&renewed).validity.unwrap();
    assert!(renewed_not_after > first_not_after);
    let verified = ipsec_ca::Verifier::new(&ca_der)
        .unwrap()
        .verify(later, &renewed, ip)
        .unwrap();
    assert_eq!(verified.spki_der, node.key.spki_der(), "the same key");
    // The old certificate stays live until it expires.
    let revoked = cores[0]
        .with_ca(now, |ca| ca.issued().iter().any(|r| r.revoked_at.is_some()))
        .unwrap();
    assert!(!revoked);
}

#[test]
fn a_configured_ca_node_is_used_and_its_replies_still_checked() {
    let base = Instant::now();
    let (ca, ca_der, _dir) = file_ca("configured CA");
    let (fake, _, _fake_dir) = file_ca("configured CA");
    let (mut cores, endpoints) = support::cores(3, base);
    cores[0].set_ca(base, ca);
    cores[2].set_ca(base, fake);
    let token = issue_token(&mut cores[0], base);
    let (real, fake) = (cores[0].overlay().address(), cores[2].overlay().address());
    let mut node = Enrollee::new(1, Some(token), 0);
    // Pointed at the fake CA node: its answers are not believed.
    cores[1].set_ca_node(fake);
    let mut now = base;
    while now < base + Duration::from_secs(20) {
        now += Duration::from_millis(10);
        step_all(&mut cores, &endpoints, now);
        node.step(&mut cores[1], &ca_der, base, now);
        while cores[2].poll_event().is_some() {}
    }
    assert!(node.enrolled.is_none(), "enrolled by the fake CA");
    cores[1].set_ca_node(real);
    while node.enrolled.is_none() {
        assert!(now < base + Duration::from_secs(90), "not enrolled");
        now += Duration::from_millis(10);
        step_all(&mut cores, &endpoints, now);
        node.step(&mut cores[1], &ca_der, base, now);
        while cores[2].poll_event().is_some() {}
    }
}
