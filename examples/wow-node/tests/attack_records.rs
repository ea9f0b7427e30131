//! Records nobody else can overwrite (issue #16): in a network with a CA,
//! a DHT record moves a name, a route, a lease or the CA's location only
//! when the writer's certificate binds it. The attackers here are an
//! uncertified node and a certified insider (Mallory, certified for her
//! own address and name), each signing its records correctly with its own
//! key: the overlay's signatures stop forgery, these rules stop
//! everything else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipsec_ca::{CaIdentity, KeyType as CaKeyType, Verifier};
use overlay_core::record::{self, PolicyStage};
use overlay_core::wire::Record;
use overlay_core::{Address, KeySigner, KeyType, RecordPolicy};
use support::smol;
use wow_core::core::Credentials;
use wow_core::guest::Guest;
use wow_core::records::{NodePolicy, Standing, claim_rank};

mod support;

const ALICE_IP: Ipv4Addr = Ipv4Addr::new(10, 128, 1, 1);
const MALLORY_IP: Ipv4Addr = Ipv4Addr::new(10, 128, 6, 6);

fn key(kind: &str, suffix: &[u8]) -> Vec<u8> {
    [b"wow/", kind.as_bytes(), b"/", suffix].concat()
}

fn signer(c: &Credentials) -> KeySigner {
    KeySigner::from_pkcs8(KeyType::Ed25519, &c.key, 1).unwrap()
}

fn signed(s: &mut KeySigner, key: &[u8], value: &[u8], credential: &[u8]) -> Record {
    record::sign(s, key, value, 600, credential).unwrap()
}

struct World {
    policy: NodePolicy,
    alice: Credentials,
    mallory: Credentials,
    ca: ipsec_ca::Ca<ipsec_ca::MemStore>,
    now: Instant,
}

fn world() -> World {
    let (mut ca, ca_der) = support::ca("records test CA");
    let alice = support::credentials_named(&mut ca, &ca_der, ALICE_IP, Some("alice"));
    let mallory = support::credentials_named(&mut ca, &ca_der, MALLORY_IP, Some("mallory"));
    let settings = wow_core::demo::settings();
    let now = Instant::now();
    let policy = NodePolicy::new(
        now,
        SystemTime::now(),
        settings.network,
        settings.gateway_addr,
        &settings.domain,
        Some(Verifier::new(&ca_der).unwrap()),
    );
    World {
        policy,
        alice,
        mallory,
        ca,
        now,
    }
}

/// Whether both a storing node and a reader would take `r`.
fn taken(w: &mut World, r: &Record) -> bool {
    let stored = w.policy.accept(w.now, PolicyStage::Store, r);
    let read = w.policy.accept(w.now, PolicyStage::Read, r);
    assert_eq!(stored, read, "storing nodes and readers disagree");
    stored && record::verify(r).is_ok()
}

#[test]
fn attack_name_takeover_by_an_insider_or_an_outsider_is_refused() {
    let mut w = world();
    let (mut a, mut m) = (signer(&w.alice), signer(&w.mallory));
    let name = key("name", b"alice");
    // Control: Alice's own name record, with her certificate.
    let own = signed(&mut a, &name, &ALICE_IP.octets(), &w.alice.certificate);
    assert!(taken(&mut w, &own));
    // Mallory, certified, claims Alice's name for her address…
    let r = signed(&mut m, &name, &MALLORY_IP.octets(), &w.mallory.certificate);
    assert!(!taken(&mut w, &r), "an insider took over another's name");
    // … or attaches Alice's (public) certificate to her own key.
    let r = signed(&mut m, &name, &MALLORY_IP.octets(), &w.alice.certificate);
    assert!(
        !taken(&mut w, &r),
        "a copied certificate vouched for another key"
    );
    // Her own name, but pointing at Alice's address.
    let r = signed(
        &mut m,
        &key("name", b"mallory"),
        &ALICE_IP.octets(),
        &w.mallory.certificate,
    );
    assert!(
        !taken(&mut w, &r),
        "a certified name pointed at another's address"
    );
    // An uncertified writer, with no credential at all.
    let mut outsider = KeySigner::ed25519_from_seed(&[7; 32], 1);
    let r = signed(&mut outsider, &name, &MALLORY_IP.octets(), &[]);
    assert!(!taken(&mut w, &r), "an uncertified writer published a name");
}

#[test]
fn attack_route_poisoning_is_refused() {
    let mut w = world();
    let (mut a, mut m) = (signer(&w.alice), signer(&w.mallory));
    let route = key("ip", &ALICE_IP.octets());
    let own = signed(
        &mut a,
        &route,
        &Address::from_key(b"alice").to_bytes(),
        &w.alice.certificate,
    );
    assert!(taken(&mut w, &own));
    let r = signed(
        &mut m,
        &route,
        &Address::from_key(b"mallory").to_bytes(),
        &w.mallory.certificate,
    );
    assert!(
        !taken(&mut w, &r),
        "an insider routed another's address to herself"
    );
    // Routes for addresses outside the guests' (the gateway, the network).
    let settings = wow_core::demo::settings();
    for ip in [
        settings.gateway_addr,
        settings.network.network(),
        Ipv4Addr::new(192, 0, 2, 1),
    ] {
        let r = signed(
            &mut m,
            &key("ip", &ip.octets()),
            &[0; 20],
            &w.mallory.certificate,
        );
        assert!(!taken(&mut w, &r), "a route for {ip} was taken");
    }
}

#[test]
fn attack_revoked_certificate_no_longer_vouches() {
    let mut w = world();
    let mut m = signer(&w.mallory);
    let own = key("name", b"mallory");
    let r = signed(&mut m, &own, &MALLORY_IP.octets(), &w.mallory.certificate);
    assert!(taken(&mut w, &r));
    let wall = SystemTime::now();
    w.ca.revoke_certificate(
        wall,
        &w.mallory.certificate,
        ipsec_ca::RevocationReason::KeyCompromise,
    )
    .unwrap();
    let crl = w.ca.issue_crl(wall).unwrap();
    let mut verifier = Verifier::new(&w.alice.ca_certificate).unwrap();
    verifier.handle_crl_envelope(wall, &crl.envelope()).unwrap();
    let settings = wow_core::demo::settings();
    w.policy = NodePolicy::new(
        w.now,
        SystemTime::now(),
        settings.network,
        settings.gateway_addr,
        &settings.domain,
        Some(verifier),
    );
    assert!(
        !taken(&mut w, &r),
        "a revoked certificate still vouched for its name"
    );
}

#[test]
fn attack_fake_ca_location_is_refused() {
    let mut w = world();
    let mut m = signer(&w.mallory);
    let writer = overlay_core::RecordSigner::writer(&m).public_key;
    let fake = CaIdentity::create_root(
        SystemTime::now(),
        CaKeyType::Ed25519,
        "records test CA",
        std::time::Duration::from_secs(86_400),
    )
    .unwrap();
    let unix = 1_900_000_000;
    let forged =
        wow_core::enrol::announcement(&fake, Address::from_key(b"evil"), unix, &writer).unwrap();
    let r = signed(&mut m, &key("ca", b""), &forged, &[]);
    assert!(!taken(&mut w, &r), "a fake CA's announcement was taken");
    // The real CA's announcement of another node, replayed by Mallory.
    let real = wow_core::enrol::announcement(
        w.ca.identity(),
        Address::from_key(b"ca node"),
        unix,
        b"the CA node's record key",
    )
    .unwrap();
    let r = signed(&mut m, &key("ca", b""), &real, &[]);
    assert!(!taken(&mut w, &r), "a replayed announcement was taken");
    // Control: the real CA's announcement naming the writer's key.
    let own =
        wow_core::enrol::announcement(w.ca.identity(), Address::from_key(b"ca"), unix, &writer)
            .unwrap();
    let r = signed(&mut m, &key("ca", b""), &own, &[]);
    assert!(taken(&mut w, &r));
}

#[test]
fn attack_lease_eviction_of_a_certified_guest_fails() {
    let mut w = world();
    let (mut a, mut m) = (signer(&w.alice), signer(&w.mallory));
    let lease = key("lease", &ALICE_IP.octets());
    // A certified insider cannot claim another's certified address.
    let r = signed(&mut m, &lease, &[0], &w.mallory.certificate);
    assert!(!taken(&mut w, &r), "an insider claimed another's address");
    // An uncertified claim (an enrolling node's) is stored, but ranks
    // below the claim of the guest certified for the address.
    let mut outsider = KeySigner::ed25519_from_seed(&[0; 32], 1);
    let theirs = signed(&mut outsider, &lease, &[0], &[]);
    assert!(taken(&mut w, &theirs));
    let own = signed(&mut a, &lease, &[1], &w.alice.certificate);
    assert!(taken(&mut w, &own));
    let (now, rank) = (w.now, |s: &Standing| claim_rank(s, ALICE_IP));
    let (theirs_rank, own_rank) = (
        rank(&w.policy.standing(now, &theirs)),
        rank(&w.policy.standing(now, &own)),
    );
    assert!(
        own_rank > theirs_rank,
        "an uncertified claim ranks with a certified one"
    );
    // Claims outside the guests' addresses.
    let r = signed(&mut outsider, &key("lease", &[10, 128, 0, 1]), &[0], &[]);
    assert!(!taken(&mut w, &r), "the gateway's address was claimed");
}

#[test]
fn names_outside_the_network_are_refused_even_without_a_ca() {
    let settings = wow_core::demo::settings();
    let now = Instant::now();
    let mut policy = NodePolicy::new(
        now,
        SystemTime::now(),
        settings.network,
        settings.gateway_addr,
        &settings.domain,
        None,
    );
    let mut s = KeySigner::ed25519_from_seed(&[3; 32], 1);
    let out = signed(&mut s, &key("name", b"bank"), &[203, 0, 113, 7], &[]);
    assert!(!policy.accept(now, PolicyStage::Store, &out));
    let inside = signed(&mut s, &key("name", b"bank"), &[10, 128, 3, 3], &[]);
    assert!(policy.accept(now, PolicyStage::Store, &inside));
}

fn service(target: &str) -> Vec<u8> {
    dns_virt::Service::new(target, 6817).to_bytes().unwrap()
}

#[test]
fn attack_service_registered_under_anothers_name_is_refused() {
    let mut w = world();
    let (mut a, mut m) = (signer(&w.alice), signer(&w.mallory));
    let under_alice = key("srv", b"_slurmctld._tcp/alice");
    // Control: Alice's own registration under her name.
    let own = signed(
        &mut a,
        &under_alice,
        &service("alice"),
        &w.alice.certificate,
    );
    assert!(taken(&mut w, &own));
    // Mallory, certified, registers under Alice's name, pointing at
    // herself: clients of Alice's service would go to her.
    let r = signed(
        &mut m,
        &under_alice,
        &service("mallory"),
        &w.mallory.certificate,
    );
    assert!(
        !taken(&mut w, &r),
        "an insider registered a service under another's name"
    );
    // With Alice's certificate copied onto her own key.
    let r = signed(
        &mut m,
        &under_alice,
        &service("alice"),
        &w.alice.certificate,
    );
    assert!(
        !taken(&mut w, &r),
        "a copied certificate vouched for a service"
    );
    // An uncertified writer.
    let mut outsider = KeySigner::ed25519_from_seed(&[7; 32], 1);
    let r = signed(&mut outsider, &under_alice, &service("alice"), &[]);
    assert!(
        !taken(&mut w, &r),
        "an uncertified writer registered a service"
    );
}

#[test]
fn attack_service_pointing_at_anothers_name_is_refused() {
    let mut w = world();
    let (mut a, mut m) = (signer(&w.alice), signer(&w.mallory));
    let all = key("srv", b"_slurmctld._tcp");
    let own = signed(&mut a, &all, &service("alice"), &w.alice.certificate);
    assert!(taken(&mut w, &own));
    let own = signed(&mut m, &all, &service("mallory"), &w.mallory.certificate);
    assert!(taken(&mut w, &own));
    // Mallory adds an SRV to the service's list naming Alice as target
    // (clients sent to a host that never offered it), under the list…
    let r = signed(&mut m, &all, &service("alice"), &w.mallory.certificate);
    assert!(
        !taken(&mut w, &r),
        "an insider pointed a service at another's name"
    );
    // … or under her own name.
    let r = signed(
        &mut m,
        &key("srv", b"_slurmctld._tcp/mallory"),
        &service("alice"),
        &w.mallory.certificate,
    );
    assert!(
        !taken(&mut w, &r),
        "an insider pointed her own service at another's name"
    );
}

#[test]
fn service_records_must_be_well_formed_even_without_a_ca() {
    let settings = wow_core::demo::settings();
    let now = Instant::now();
    let mut policy = NodePolicy::new(
        now,
        SystemTime::now(),
        settings.network,
        settings.gateway_addr,
        &settings.domain,
        None,
    );
    let mut s = KeySigner::ed25519_from_seed(&[3; 32], 1);
    let good = signed(&mut s, &key("srv", b"_x._tcp/h1"), &service("h1"), &[]);
    assert!(policy.accept(now, PolicyStage::Store, &good));
    for (k, v) in [
        (key("srv", b"_x._tcp/h1"), b"junk".to_vec()),
        (key("srv", b"x._tcp/h1"), service("h1")),
        (key("srv", b"_X._tcp"), service("h1")),
        (key("srv", b"_x._tcp/H1"), service("h1")),
        (key("srv", b"_x._tcp/a..b"), service("h1")),
    ] {
        let r = signed(&mut s, &k, &v, &[]);
        assert!(!policy.accept(now, PolicyStage::Store, &r), "{k:?}");
    }
}

// ----- end to end: a certified insider publishes another guest's name -----

const MALLORY_EP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 10199);

#[test]
fn attack_name_takeover_end_to_end_the_other_guest_still_resolves_the_owner() {
    let base = Instant::now();
    let (mut cores, endpoints) = support::cores(2, base);
    let (mut ca, ca_der) = support::ca("end-to-end records CA");
    // Mallory: a ring member certified for her own address and name, who
    // keeps publishing guest-0's name for her address.
    let creds = support::credentials_named(&mut ca, &ca_der, MALLORY_IP, Some("mallory"));
    let mut mallory = overlay_core::Node::new_with_insecure_seed(
        base,
        wow_core::demo::overlay_config(MALLORY_EP),
        Address::from_key(b"mallory"),
        9,
    );
    mallory.set_record_signer(Box::new(signer(&creds)));
    mallory
        .set_record_credential(creds.certificate.clone())
        .unwrap();
    mallory.join(base, &endpoints[..1]).unwrap();
    let mtu = cores[0].settings().guest_mtu;
    // Guest 1 looks guest-0 up once the first publications are out.
    let mut guests = [
        Guest::new(
            smol(base, base),
            [0x52, 0x54, 0, 0x79, 1, 0],
            "guest-0",
            "guest-1.wow.internal",
            1_000,
            mtu,
            31,
        ),
        Guest::new(
            smol(base, base),
            [0x52, 0x54, 0, 0x79, 1, 1],
            "guest-1",
            "guest-0.wow.internal",
            1_000,
            mtu,
            32,
        ),
    ];
    let mut certified: [Option<Ipv4Addr>; 2] = [None, None];
    let mut buf = vec![0u8; 16384];
    let mut lines = Vec::new();
    let mut now = base;
    // Mallory writes after guest 0 has published (so that a reader taking
    // the newest value would take hers), and guest 1 starts after that.
    let mut certified_at = None;
    let mut next_put = None;
    while now < base + Duration::from_secs(60) && !guests.iter().all(Guest::finished) {
        now += Duration::from_millis(5);
        if certified_at.is_none() && certified[0].is_some() {
            certified_at = Some(now);
            next_put = Some(now + Duration::from_secs(1));
        }
        if let Some(at) = next_put.filter(|at| now >= *at) {
            next_put = Some(at + Duration::from_secs(1));
            let _ = mallory.dht_put(
                now,
                &key("name", b"guest-0"),
                &MALLORY_IP.octets(),
                Duration::from_secs(600),
            );
        }
        if mallory.poll_timeout().is_some_and(|t| t <= now) {
            mallory.handle_timeout(now);
        }
        let guest1_starts = certified_at.map(|at| at + Duration::from_secs(3));
        for (i, core) in cores.iter_mut().enumerate() {
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now, SystemTime::now());
            }
            if i == 0 || guest1_starts.is_some_and(|at| now >= at) {
                guests[i].exchange(now, core, smol(base, now), &mut lines);
            }
            support::certify_first_lease(core, &mut ca, &ca_der, now, &mut certified[i]);
            while core.poll_event().is_some() {}
        }
        support::exchange_with(
            &mut cores,
            &endpoints,
            &mut mallory,
            MALLORY_EP,
            now,
            &mut buf,
        );
    }
    let resolved = guests[1]
        .report
        .peer_addr
        .map(|a| Ipv4Addr::from(a.octets()));
    assert!(
        certified[0].is_some(),
        "guest 0 was never certified: {lines:#?}"
    );
    assert_eq!(
        resolved, certified[0],
        "guest-0's name resolved to {resolved:?}, not to guest 0 ({:?}); Mallory has {MALLORY_IP}",
        certified[0]
    );
}

/// A node of a CA network without `[update] keys` may be the home of
/// `wow/release/<channel>`: it stores a well-formed manifest of that
/// channel from a certified writer (readers with keys check the signature),
/// so it does not cut the fleet off from releases; an outsider's, junk, or
/// another channel's manifest it refuses.
#[test]
fn attack_release_record_on_a_node_without_release_keys() {
    let mut w = world();
    let release = wow_core::update::ReleaseKey::generate().unwrap();
    let v = "2.0.0".parse().unwrap();
    let publication =
        wow_core::update::Publication::new(&release, "stable", v, &[1u8; 3000], None).unwrap();
    let mut a = signer(&w.alice);
    let stable = key("release", b"stable");
    let r = signed(&mut a, &stable, &publication.signed, &w.alice.certificate);
    assert!(
        taken(&mut w, &r),
        "a certified writer's release was refused by a node without keys"
    );
    let r = signed(
        &mut a,
        &key("release", b"testing"),
        &publication.signed,
        &w.alice.certificate,
    );
    assert!(
        !taken(&mut w, &r),
        "a manifest stored under another channel"
    );
    let r = signed(&mut a, &stable, b"junk", &w.alice.certificate);
    assert!(!taken(&mut w, &r), "junk stored as a release");
    let mut outsider = KeySigner::ed25519_from_seed(&[7; 32], 1);
    let r = signed(&mut outsider, &stable, &publication.signed, &[]);
    assert!(
        !taken(&mut w, &r),
        "an uncertified writer published a release"
    );
}
