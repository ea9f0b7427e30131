//! Service records live while their node does (in simulated time): three
//! certified nodes, one registers a service; the DHT holds it past its
//! TTL because the node refreshes it, and, once the node is gone, it has
//! expired everywhere within the TTL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use support::{bring_up, exchange, smol};
use wow_core::core::{Core, SERVICE_TTL};
use wow_core::guest::Guest;

mod support;

/// Who holds `key` now, among the live cores.
fn holders(cores: &[support::Node], now: Instant, key: &[u8]) -> usize {
    cores
        .iter()
        .filter(|c| c.overlay().dht_store().contains(now, key))
        .count()
}

/// Runs the live cores (and not the first `gone` ones) until `until`.
fn run(
    cores: &mut [support::Node],
    endpoints: &[std::net::SocketAddr],
    gone: usize,
    mut now: Instant,
    until: Instant,
    buf: &mut [u8],
) -> Instant {
    while now < until {
        now += Duration::from_millis(20);
        for core in cores[gone..].iter_mut() {
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now, SystemTime::now());
            }
        }
        for core in cores[..gone].iter_mut() {
            // A stopped node neither sends nor receives.
            while core.poll_udp(buf).is_some() {}
        }
        exchange(cores, endpoints, now, buf);
        for core in cores[..gone].iter_mut() {
            while core.poll_udp(buf).is_some() {}
        }
    }
    now
}

#[test]
fn a_service_is_refreshed_while_its_node_runs_and_expires_after_it_leaves() {
    let base = Instant::now();
    let (mut ca, ca_der) = support::ca("service expiry CA");
    let (mut cores, endpoints) = support::cores(3, base);
    let mtu = cores[0].settings().guest_mtu;
    let mut guests: Vec<Guest> = (0..3)
        .map(|i| {
            Guest::new(
                smol(base, base),
                [0x52, 0x54, 0, 0x7a, 1, i as u8],
                &format!("guest-{i}"),
                &format!("guest-{}.wow.internal", (i + 1) % 3),
                1_000,
                mtu,
                31 + i as u64,
            )
        })
        .collect();
    let mut buf = vec![0u8; overlay_core::wire::MAX_MESSAGE_LEN];
    let (mut now, _) = bring_up(
        &mut cores,
        &endpoints,
        &mut guests,
        &mut ca,
        &ca_der,
        base,
        &mut buf,
    );
    Core::add_service(
        &mut cores[0],
        now,
        "_slurmctld._tcp",
        dns_virt::Service::new("ignored", 6817),
    )
    .unwrap();
    let by_host = b"wow/srv/_slurmctld._tcp/guest-0";
    let all = b"wow/srv/_slurmctld._tcp";
    now = run(
        &mut cores,
        &endpoints,
        0,
        now,
        now + Duration::from_secs(5),
        &mut buf,
    );
    assert!(holders(&cores, now, by_host) > 0, "never stored");
    assert!(holders(&cores, now, all) > 0, "never stored in the list");
    // Past one TTL: still there, refreshed.
    now = run(
        &mut cores,
        &endpoints,
        0,
        now,
        now + SERVICE_TTL + Duration::from_secs(30),
        &mut buf,
    );
    assert!(holders(&cores, now, by_host) > 0, "not refreshed");
    // The node stops: within one TTL, no replica is left.
    let stopped = now;
    now = run(
        &mut cores,
        &endpoints,
        1,
        now,
        stopped + SERVICE_TTL + Duration::from_secs(1),
        &mut buf,
    );
    assert_eq!(holders(&cores[1..], now, by_host), 0, "outlived its node");
    assert_eq!(
        holders(&cores[1..], now, all),
        0,
        "outlived its node in the list"
    );
}
