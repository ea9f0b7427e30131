//! Thirty-two nodes' cores in one simulated network, each with a smoltcp guest
//! running the demo's script (DHCP with its host name, DNS lookup of the
//! next guest, ping, a TCP stream), in simulated time: every guest gets a
//! distinct address from the DHT-backed DHCP servers, every lookup finds
//! the address the other guest leased, and every ping and stream crosses
//! the overlay encrypted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::{exchange, smol, tick};
use wow_core::guest::{Guest, Phase};

mod support;

const NODES: usize = 32;

#[test]
fn thirty_two_guests_lease_resolve_ping_and_stream_across_the_ring() {
    let base = Instant::now();
    let (mut ca, ca_der) = support::ca("ring of guests CA");
    let (mut cores, endpoints) = support::cores(NODES, base);
    let mtu = cores[0].settings().guest_mtu;
    let mut guests: Vec<Option<Guest>> = (0..NODES).map(|_| None).collect();
    let mut buf = vec![0u8; overlay_core::wire::MAX_MESSAGE_LEN];
    let mut lines = Vec::new();
    let mut certified = [None; NODES];
    let mut now = base;
    let deadline = base + Duration::from_secs(90);
    while guests
        .iter()
        .any(|g| !g.as_ref().is_some_and(Guest::finished))
    {
        assert!(
            now < deadline,
            "not finished after 90 simulated seconds: {:?}",
            guests
                .iter()
                .map(|g| g.as_ref().map(|g| g.phase().clone()))
                .collect::<Vec<_>>()
        );
        now += Duration::from_millis(5);
        tick(&mut cores, now);
        for (i, core) in cores.iter_mut().enumerate() {
            if guests[i].is_none()
                && core.overlay().is_joined()
                && now > base + Duration::from_secs(3)
            {
                let mut mac = [0x52, 0x54, 0x00, 0x77, 0x01, 0];
                mac[5] = i as u8 + 1;
                guests[i] = Some(Guest::new(
                    smol(base, now),
                    mac,
                    &format!("host-{i}"),
                    &format!("host-{}.wow.internal", (i + 1) % NODES),
                    16 * 1024,
                    mtu,
                    100 + i as u64,
                ));
            }
            if let Some(g) = guests[i].as_mut() {
                g.exchange(now, core, smol(base, now), &mut lines);
            }
            support::certify_first_lease(core, &mut ca, &ca_der, now, &mut certified[i]);
        }
        exchange(&mut cores, &endpoints, now, &mut buf);
    }

    let guests: Vec<Guest> = guests.into_iter().map(Option::unwrap).collect();
    eprintln!(
        "all {NODES} guests done after {:.2} simulated seconds",
        (now - base).as_secs_f64()
    );
    let addrs: Vec<_> = guests.iter().map(|g| g.report.addr.unwrap()).collect();
    let distinct: HashSet<_> = addrs.iter().collect();
    assert_eq!(distinct.len(), NODES, "duplicate addresses: {addrs:?}");
    for (i, g) in guests.iter().enumerate() {
        assert_eq!(g.phase(), &Phase::Done, "guest {i}: {:?}", g.report);
        assert_eq!(
            g.report.peer_addr,
            Some(addrs[(i + 1) % NODES]),
            "guest {i} resolved its peer's name to another address"
        );
        assert!(g.report.replies > 0, "guest {i}: no echo reply");
        assert!(g.report.receive_done, "guest {i}: stream not received");
    }
    for (i, core) in cores.iter().enumerate() {
        let hops = core.hops_from(addrs[(i + NODES - 1) % NODES]);
        eprintln!(
            "node {i}: guest {} sealed {} opened {} SAs {} hops from its predecessor's guest {hops:?}",
            addrs[i],
            core.counters().sealed,
            core.counters().opened,
            core.sa_count()
        );
        assert!(core.counters().sealed > 0, "node {i} sealed nothing");
        assert!(core.sa_count() >= 2, "node {i}: {} SAs", core.sa_count());
    }

    // `status --network` from node 0: every node once, with its guest's
    // name and address.
    cores[0].start_walk(now, 100).unwrap();
    let walk = loop {
        assert!(
            now < deadline + Duration::from_secs(30),
            "the walk never finished"
        );
        now += Duration::from_millis(5);
        tick(&mut cores, now);
        exchange(&mut cores, &endpoints, now, &mut buf);
        if let Some(w) = cores[0].poll_walk() {
            break w;
        }
    };
    assert!(walk.complete, "{}", walk.to_text());
    assert_eq!(walk.nodes.len(), NODES, "{}", walk.to_text());
    let mut listed: Vec<_> = walk
        .nodes
        .iter()
        .map(|n| (n.name.clone().unwrap(), n.address.unwrap()))
        .collect();
    listed.sort();
    let mut expected: Vec<_> = (0..NODES)
        .map(|i| (format!("host-{i}.wow.internal"), addrs[i]))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    eprintln!("{}", walk.to_text());
}
