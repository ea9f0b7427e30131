//! A CRL larger than one DHT value spreads through the overlay: a node
//! publishes it (manifest and chunks), another fetches it whole and its
//! security associations accept it (CA signature, CRL number).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipsec_ca::RevocationReason;
use support::{Node, exchange, tick};
use wow_node::core::CoreEvent;

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

#[test]
fn a_crl_of_many_revocations_crosses_the_dht_in_chunks() {
    let base = Instant::now();
    let (mut ca, ca_der) = support::ca("chunked CRL test CA");
    let (mut cores, endpoints) = support::cores(3, base);
    let mut now = base;
    assert!(run_until(
        &mut cores,
        &endpoints,
        &mut now,
        Duration::from_secs(30),
        |c| { c.iter().all(|n| n.overlay().is_joined()) }
    ));
    // The ring settles: every DHT key then has one responsible node.
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(5));

    // Node 2 is certified (so that it can check a CRL); 120 other
    // certificates are revoked.
    let fetcher = support::credentials(&mut ca, &ca_der, Ipv4Addr::new(10, 128, 0, 12));
    cores[2]
        .install_identity(now, SystemTime::now(), &fetcher)
        .unwrap();
    let when = ipsec_ca::time::OffsetDateTime::from(SystemTime::now());
    for i in 0..120u32 {
        let c = support::credentials(&mut ca, &ca_der, Ipv4Addr::from(0x0a80_1000 + i));
        ca.revoke_certificate(&c.certificate, RevocationReason::KeyCompromise, when)
            .unwrap();
    }
    let envelope = ca.issue_crl(when).unwrap().envelope();
    assert!(
        envelope.len() > 3 * overlay_core::wire::MAX_VALUE_LEN,
        "the CRL needs several DHT values ({} bytes)",
        envelope.len()
    );

    assert!(cores[0].publish_crl(now, &envelope));
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(2));
    cores[2].fetch_crl(now);
    let mut fetched = None;
    assert!(
        run_until(
            &mut cores,
            &endpoints,
            &mut now,
            Duration::from_secs(20),
            |c| {
                while let Some(e) = c[2].poll_event() {
                    if let CoreEvent::CrlFetched(envelopes) = e {
                        fetched = envelopes.into_iter().next();
                    }
                }
                fetched.is_some()
            }
        ),
        "no CRL fetched"
    );
    let fetched = fetched.unwrap();
    assert_eq!(
        fetched, envelope,
        "the chunks join into the published envelope"
    );
    assert!(cores[2].handle_crl(now, SystemTime::now(), &fetched));

    // Fetched once: the same manifest is not fetched again.
    cores[2].fetch_crl(now);
    run_for(&mut cores, &endpoints, &mut now, Duration::from_secs(5));
    while let Some(e) = cores[2].poll_event() {
        assert!(!matches!(e, CoreEvent::CrlFetched(_)), "fetched twice");
    }
}
