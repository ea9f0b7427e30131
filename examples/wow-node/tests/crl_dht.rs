//! CRLs through the overlay, and the attacks on them: a CRL larger than one
//! DHT value crosses the DHT in chunks under a manifest the CA signed; a
//! forged manifest, a stale one, a corrupted chunk, a flooded DHT key and a
//! rollback do not keep a node from the newest CRL or make it take an older
//! one; a CRL past nextUpdate (after the grace) stops new security
//! associations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipsec_ca::{Ca, MemStore, RevocationReason};
use support::{Node, exchange, smol, tick};
use wow_core::core::CoreEvent;
use wow_core::crl_dht::Published;
use wow_core::guest::Guest;

mod support;

/// Runs the cores in simulated time until `done` or `limit`; returns
/// whether `done` became true.
fn run_until(
    cores: &mut [Node],
    endpoints: &[SocketAddr],
    now: &mut Instant,
    limit: Duration,
    mut done: impl FnMut(&mut [Node]) -> bool,
) -> bool {
    let mut buf = vec![0u8; overlay_core::wire::MAX_MESSAGE_LEN];
    let end = *now + limit;
    while *now < end {
        if done(cores) {
            return true;
        }
        *now += Duration::from_millis(10);
        tick(cores, *now);
        exchange(cores, endpoints, *now, &mut buf);
    }
    done(cores)
}

/// Runs the cores in simulated time for `d`.
fn run_for(cores: &mut [Node], endpoints: &[SocketAddr], now: &mut Instant, d: Duration) {
    run_until(cores, endpoints, now, d, |_| false);
}

/// `n` joined cores on a settled ring.
fn ring(n: usize) -> (Vec<Node>, Vec<SocketAddr>, Instant) {
    let base = Instant::now();
    let (mut cores, endpoints) = support::cores(n, base);
    let mut now = base;
    assert!(run_until(
        &mut cores,
        &endpoints,
        &mut now,
        Duration::from_secs(30),
        |c| c.iter().all(|n| n.overlay().is_joined())
    ));
    // The ring settles: every DHT key then has one responsible node.
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(5));
    (cores, endpoints, now)
}

fn wall() -> std::time::SystemTime {
    SystemTime::now()
}

/// Revokes `n` fresh certificates of `ca`, so that its next CRL is large.
fn revoke_many(ca: &mut Ca<MemStore>, ca_der: &[u8], n: u32) {
    for i in 0..n {
        let c = support::credentials(ca, ca_der, Ipv4Addr::from(0x0a80_1000 + i));
        ca.revoke_certificate(wall(), &c.certificate, RevocationReason::KeyCompromise)
            .unwrap();
    }
}

/// Issues a CRL and signs its manifest.
fn issue(ca: &mut Ca<MemStore>) -> Published {
    let crl = ca.issue_crl(wall()).unwrap();
    Published::new(ca.identity(), crl.number, crl.envelope()).unwrap()
}

/// Asks `cores[node]` to fetch every 2 s until it reports a CRL; returns
/// the envelopes it reported.
fn fetch(
    cores: &mut [Node],
    endpoints: &[SocketAddr],
    now: &mut Instant,
    node: usize,
    limit: Duration,
) -> Vec<Vec<u8>> {
    let mut fetched = Vec::new();
    let end = *now + limit;
    while *now < end && fetched.is_empty() {
        cores[node].fetch_crl(*now);
        run_until(cores, endpoints, now, Duration::from_secs(2), |c| {
            while let Some(e) = c[node].poll_event() {
                if let CoreEvent::CrlFetched(envelopes) = e {
                    fetched.extend(envelopes);
                }
            }
            !fetched.is_empty()
        });
    }
    fetched
}

#[test]
fn a_crl_of_many_revocations_crosses_the_dht_in_chunks() {
    let (mut ca, ca_der) = support::ca("chunked CRL test CA");
    let (mut cores, endpoints, mut now) = ring(3);
    // Node 2 is certified (so that it can check a CRL); 120 other
    // certificates are revoked.
    let fetcher = support::credentials(&mut ca, &ca_der, Ipv4Addr::new(10, 128, 0, 12));
    cores[2]
        .install_identity(now, SystemTime::now(), &fetcher)
        .unwrap();
    revoke_many(&mut ca, &ca_der, 120);
    let published = issue(&mut ca);
    assert!(
        published.envelope.len() > 3 * overlay_core::wire::MAX_VALUE_LEN,
        "the CRL needs several DHT values ({} bytes)",
        published.envelope.len()
    );

    cores[0].serve_crl(now, published.clone());
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    let fetched = fetch(&mut cores, &endpoints, &mut now, 2, Duration::from_secs(20));
    assert_eq!(
        fetched,
        vec![published.envelope.clone()],
        "the chunks join into the published envelope"
    );
    assert!(cores[2].handle_crl(now, SystemTime::now(), &fetched[0]));
    let status = cores[2].crl_status(SystemTime::now()).unwrap();
    assert_eq!(status.number, published.manifest.number);
    assert!(status.next_update.is_some() && !status.stale);

    // Fetched once: the same manifest is not fetched again.
    cores[2].fetch_crl(now);
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(5));
    while let Some(e) = cores[2].poll_event() {
        assert!(!matches!(e, CoreEvent::CrlFetched(_)), "fetched twice");
    }
}

#[test]
fn attack_forged_manifest_is_ignored() {
    let (mut ca, ca_der) = support::ca("real CA");
    let (mut impostor, _) = support::ca("impostor CA");
    let (mut cores, endpoints, mut now) = ring(3);
    let fetcher = support::credentials(&mut ca, &ca_der, Ipv4Addr::new(10, 128, 0, 12));
    cores[2]
        .install_identity(now, SystemTime::now(), &fetcher)
        .unwrap();
    // The impostor publishes a CRL under a manifest of its own key with a
    // number far above any real one.
    let crl = impostor.issue_crl(wall()).unwrap();
    let forged = Published::new(impostor.identity(), 1_000_000, crl.envelope()).unwrap();
    cores[1].serve_crl(now, forged.clone());
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    let fetched = fetch(&mut cores, &endpoints, &mut now, 2, Duration::from_secs(10));
    assert!(fetched.is_empty(), "a forged manifest was followed");
    // The real CA's CRL, published next to it, is fetched.
    let real = issue(&mut ca);
    cores[0].serve_crl(now, real.clone());
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    let fetched = fetch(&mut cores, &endpoints, &mut now, 2, Duration::from_secs(20));
    assert_eq!(fetched, vec![real.envelope]);
}

#[test]
fn attack_stale_manifest_does_not_censor_a_newer_one() {
    let (mut ca, ca_der) = support::ca("censorship test CA");
    let (mut cores, endpoints, mut now) = ring(4);
    let fetcher = support::credentials(&mut ca, &ca_der, Ipv4Addr::new(10, 128, 0, 12));
    cores[2]
        .install_identity(now, SystemTime::now(), &fetcher)
        .unwrap();
    let old = issue(&mut ca);
    revoke_many(&mut ca, &ca_der, 3);
    let new = issue(&mut ca);
    assert!(new.manifest.number > old.manifest.number);
    // Insiders replay the old CRL (genuinely signed) into the DHT first,
    // then the new one is published.
    cores[1].serve_crl(now, old.clone());
    cores[3].serve_crl(now, old.clone());
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    cores[0].serve_crl(now, new.clone());
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    let fetched = fetch(&mut cores, &endpoints, &mut now, 2, Duration::from_secs(20));
    assert_eq!(fetched, vec![new.envelope.clone()], "the newest CRL wins");
    assert!(cores[2].handle_crl(now, SystemTime::now(), &fetched[0]));
    assert_eq!(
        cores[2].crl_status(SystemTime::now()).unwrap().number,
        new.manifest.number
    );
}

#[test]
fn attack_one_corrupted_chunk_does_not_block_assembly() {
    let (mut ca, ca_der) = support::ca("corrupted chunk test CA");
    let (mut cores, endpoints, mut now) = ring(3);
    let fetcher = support::credentials(&mut ca, &ca_der, Ipv4Addr::new(10, 128, 0, 12));
    cores[2]
        .install_identity(now, SystemTime::now(), &fetcher)
        .unwrap();
    revoke_many(&mut ca, &ca_der, 60);
    let good = issue(&mut ca);
    assert!(good.manifest.chunks() >= 2);
    // An insider stores, first, a copy of the CRL whose second chunk has
    // one byte changed, under the genuine signed manifest.
    let mut bad = good.clone();
    bad.envelope[overlay_core::wire::MAX_VALUE_LEN + 10] ^= 0xff;
    cores[1].serve_crl(now, bad);
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    cores[0].serve_crl(now, good.clone());
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    let fetched = fetch(&mut cores, &endpoints, &mut now, 2, Duration::from_secs(20));
    assert_eq!(
        fetched,
        vec![good.envelope],
        "the good copy of the chunk is used"
    );
}

#[test]
fn attack_rollback_to_an_older_crl_is_refused() {
    let (mut ca, ca_der) = support::ca("rollback test CA");
    let (mut cores, endpoints, mut now) = ring(3);
    let fetcher = support::credentials(&mut ca, &ca_der, Ipv4Addr::new(10, 128, 0, 12));
    cores[2]
        .install_identity(now, SystemTime::now(), &fetcher)
        .unwrap();
    let old = issue(&mut ca);
    let new = issue(&mut ca);
    assert!(cores[2].handle_crl(now, SystemTime::now(), &new.envelope));
    // Only the older CRL is in the DHT: it is not fetched.
    cores[1].serve_crl(now, old.clone());
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    let fetched = fetch(&mut cores, &endpoints, &mut now, 2, Duration::from_secs(10));
    assert!(fetched.is_empty(), "an older CRL was fetched");
    // Nor installed by hand, even after a new identity (a renewal) is
    // installed.
    cores[2]
        .install_identity(now, SystemTime::now(), &fetcher)
        .unwrap();
    assert!(!cores[2].handle_crl(now, SystemTime::now(), &old.envelope));
    assert_eq!(
        cores[2].crl_status(SystemTime::now()).unwrap().number,
        new.manifest.number
    );
}

#[test]
fn attack_flooded_crl_key_still_delivers_from_the_ca_node() {
    let (mut cores, endpoints, mut now) = ring(3);
    // Node 0 is the CA's node, its CA in a directory.
    let dir = wow_test_hosts::TempDir::new("crl-ca").unwrap();
    let identity = ipsec_ca::CaIdentity::create_root(
        wall(),
        ipsec_ca::KeyType::Ed25519,
        "CA node",
        std::time::Duration::from_secs(86_400),
    )
    .unwrap();
    let store = ipsec_ca::FileStore::new(dir.path()).unwrap();
    store.save_identity(&identity).unwrap();
    let mut ca = Ca::open(identity, ipsec_ca::Policy::default(), store).unwrap();
    let fetcher_ip = Ipv4Addr::new(10, 128, 0, 12);
    let key = ipsec_ca::NodeKey::generate(ipsec_ca::KeyType::Ed25519).unwrap();
    let csr = key
        .certificate_request(&ipsec_ca::NodeRequest::new(fetcher_ip))
        .unwrap();
    let certificate = ca.sign(wall(), &csr, fetcher_ip, None).unwrap().certificate;
    let credentials = wow_core::core::Credentials {
        certificate: certificate.clone(),
        key: key.pkcs8_der().to_vec(),
        ca_certificate: ca.identity().cert_der().to_vec(),
        virtual_ip: fetcher_ip,
    };
    cores[2]
        .install_identity(now, SystemTime::now(), &credentials)
        .unwrap();

    // An insider fills `wow/crl` with junk values before the CA publishes.
    for i in 1..=overlay_core::wire::MAX_VALUES_PER_KEY as u64 {
        let mut junk = Published::new(ca.identity(), i, vec![i as u8; 10]).unwrap();
        junk.signed = vec![i as u8; 64];
        cores[1].serve_crl(now, junk);
        run_for(&mut cores, &endpoints, &mut now, Duration::from_millis(200));
    }
    ca.revoke_certificate(wall(), &certificate, RevocationReason::KeyCompromise)
        .unwrap();
    cores[0].set_ca(now, ca);
    let number = cores[0].refresh_crl(now, SystemTime::now()).unwrap();
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    // The CA's manifest did not fit in the DHT, but the node asks the CA
    // node itself.
    let fetched = fetch(&mut cores, &endpoints, &mut now, 2, Duration::from_secs(20));
    assert_eq!(fetched.len(), 1, "nothing fetched from the CA node");
    assert_eq!(
        ipsec_ca::wire::CrlEnvelope::parse(&fetched[0])
            .unwrap()
            .crl_number,
        number
    );
    assert!(cores[2].handle_crl(now, SystemTime::now(), &fetched[0]));
    // Not re-issued before half its validity.
    assert_eq!(cores[0].refresh_crl(now, SystemTime::now()), None);
    let later = SystemTime::now() + Duration::from_secs(4 * 24 * 3600);
    assert_eq!(cores[0].refresh_crl(now, later), Some(number + 1));
    assert_eq!(cores[0].refresh_crl(now, later), None);
    // After a revocation, at once.
    cores[0].reissue_crl_soon();
    assert_eq!(cores[0].refresh_crl(now, later), Some(number + 2));
}

/// Two guests try to ping each other through certified nodes that loaded a
/// CRL whose nextUpdate passed ten seconds ago; returns the echo replies.
fn ping_with_an_expired_crl(grace: Duration) -> (u16, bool) {
    let base = Instant::now();
    let (mut ca, ca_der) = support::ca("expired CRL test CA");
    ca.set_policy(ipsec_ca::Policy {
        crl_validity: std::time::Duration::from_secs(10),
        ..ipsec_ca::Policy::default()
    });
    let issued_at = SystemTime::now() - Duration::from_secs(20);
    let envelope = ca.issue_crl(issued_at).unwrap().envelope();
    let (mut cores, endpoints) = support::cores(2, base);
    for core in &mut cores {
        core.set_crl_grace(grace);
    }
    let mtu = cores[0].settings().guest_mtu;
    let mut guests: Vec<Option<Guest>> = vec![None, None];
    let mut certified = [None; 2];
    let mut buf = vec![0u8; overlay_core::wire::MAX_MESSAGE_LEN];
    let mut lines = Vec::new();
    let mut now = base;
    while now < base + Duration::from_secs(40)
        && !guests
            .iter()
            .all(|g| g.as_ref().is_some_and(|g| g.report.replies > 0))
    {
        now += Duration::from_millis(5);
        tick(&mut cores, now);
        for (i, core) in cores.iter_mut().enumerate() {
            if guests[i].is_none()
                && core.overlay().is_joined()
                && now > base + Duration::from_secs(3)
            {
                guests[i] = Some(Guest::new(
                    smol(base, now),
                    [0x52, 0x54, 0x00, 0x77, 0x02, i as u8 + 1],
                    &format!("host-{i}"),
                    &format!("host-{}.wow.internal", 1 - i),
                    1024,
                    mtu,
                    200 + i as u64,
                ));
            }
            if let Some(g) = guests[i].as_mut() {
                g.exchange(now, core, smol(base, now), &mut lines);
            }
            let was = certified[i];
            support::certify_first_lease(core, &mut ca, &ca_der, now, &mut certified[i]);
            if was.is_none() && certified[i].is_some() {
                // Loaded while it was current (ten seconds after issue).
                assert!(core.handle_crl(now, issued_at + Duration::from_secs(1), &envelope));
            }
        }
        exchange(&mut cores, &endpoints, now, &mut buf);
    }
    let replies = guests
        .iter()
        .map(|g| g.as_ref().map_or(0, |g| g.report.replies))
        .min()
        .unwrap_or(0);
    let stale = cores[0]
        .crl_status(SystemTime::now())
        .is_some_and(|s| s.stale);
    (replies, stale)
}

#[test]
fn attack_expired_crl_blocks_new_sas_after_grace() {
    // Within the grace the CRL still counts: the guests talk.
    let (replies, stale) = ping_with_an_expired_crl(Duration::from_secs(3600));
    assert!(replies > 0 && !stale, "within the grace: {replies} replies");
    // After it, no new security association comes up.
    let (replies, stale) = ping_with_an_expired_crl(Duration::from_secs(5));
    assert!(stale, "status does not show the CRL as stale");
    assert_eq!(replies, 0, "an SA came up with an expired CRL");
}
