//! DNS never answers an address outside the virtual network: a ring member
//! publishes name records pointing outside it (at a resolver, a bank, the
//! LAN) and the guests of other nodes look them up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use overlay_core::Address;
use support::smol;
use wow_core::guest::{Guest, Phase};

mod support;

const ATTACKER_EP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 10099);

fn name_key(name: &str) -> Vec<u8> {
    [b"wow/name/".as_slice(), name.as_bytes()].concat()
}

#[test]
fn attack_name_outside_network() {
    let base = Instant::now();
    let (mut cores, endpoints) = support::cores(2, base);
    let mut attacker = overlay_core::Node::new_with_insecure_seed(
        base,
        wow_core::demo::overlay_config(ATTACKER_EP),
        Address::from_key(b"name attacker"),
        5,
    );
    attacker.join(base, &endpoints[..1]).unwrap();
    let mtu = cores[0].settings().guest_mtu;
    // Guest 0 looks up a name the attacker points outside the network,
    // guest 1 one it points inside (the control: the path works).
    let targets = ["bank.wow.internal", "inside.wow.internal"];
    let mut guests: Vec<Guest> = (0..2)
        .map(|i| {
            Guest::new(
                smol(base, base),
                [0x52, 0x54, 0, 0x78, 1, i as u8],
                &format!("guest-{i}"),
                targets[i],
                1_000,
                mtu,
                21 + i as u64,
            )
        })
        .collect();
    let mut buf = vec![0u8; 16384];
    let mut lines = Vec::new();
    let mut now = base;
    let mut published = false;
    while now < base + Duration::from_secs(30) {
        now += Duration::from_millis(5);
        if !published && now > base + Duration::from_secs(3) {
            published = true;
            for (name, addr) in [
                ("bank", Ipv4Addr::new(203, 0, 113, 7)),
                ("inside", Ipv4Addr::new(10, 128, 77, 7)),
            ] {
                attacker
                    .dht_put(
                        now,
                        &name_key(name),
                        &addr.octets(),
                        Duration::from_secs(600),
                    )
                    .unwrap();
            }
        }
        if attacker.poll_timeout().is_some_and(|t| t <= now) {
            attacker.handle_timeout(now);
        }
        for (i, core) in cores.iter_mut().enumerate() {
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now, SystemTime::now());
            }
            guests[i].exchange(now, core, smol(base, now), &mut lines);
            while core.poll_event().is_some() {}
        }
        support::exchange_with(
            &mut cores,
            &endpoints,
            &mut attacker,
            ATTACKER_EP,
            now,
            &mut buf,
        );
        if guests[1].report.peer_addr.is_some() && now > base + Duration::from_secs(15) {
            break;
        }
    }
    let inside = guests[1]
        .report
        .peer_addr
        .map(|a| Ipv4Addr::from(a.octets()));
    assert_eq!(
        inside,
        Some(Ipv4Addr::new(10, 128, 77, 7)),
        "the control lookup failed: {lines:#?}"
    );
    let outside = guests[0]
        .report
        .peer_addr
        .map(|a| Ipv4Addr::from(a.octets()));
    assert_eq!(
        outside, None,
        "the guest was answered an address outside 10.128.0.0/16"
    );
    assert!(
        matches!(guests[0].phase(), Phase::Resolve),
        "{:?}",
        guests[0].phase()
    );
}
