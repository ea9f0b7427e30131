//! Port mapping against a real miniupnpd (Debian `miniupnpd-nftables`) in a
//! router namespace: `examples/portmap.rs` on a LAN host asks for a
//! mapping with PCP, and once more with NAT-PMP only; the router's WAN
//! address and a port come back, a host on the WAN side sends to that
//! endpoint and the LAN host receives it (the DNAT rule is real), and
//! closing the mapper removes the rule.
//!
//! The topology and miniupnpd's configuration are
//! [`wow_test_hosts::miniupnpd`]'s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::miniupnpd::{HOST, PEER, PortMapRouter, ROUTER_LAN, ROUTER_WAN};
use wow_test_hosts::{Netns, example_bin, require, wait_until};

struct Net {
    host: Netns,
    router: PortMapRouter,
}

fn dnat_rules(router: &PortMapRouter) -> String {
    router.dnat_rules().unwrap()
}

/// Map `port` (with NAT-PMP only if `nat_pmp`), prove the mapping carries
/// WAN traffic to the host, and that closing removes it.
fn map_receive_close(net: &Net, port: u16, nat_pmp: bool) {
    let bin = example_bin("portmap");
    let bind = format!("0.0.0.0:{port}");
    let mut args = vec!["--gateway", ROUTER_LAN, "--bind", &bind, "--hold-secs", "5"];
    if nat_pmp {
        args.push("--nat-pmp");
    }
    let mut client = net.host.spawn(&bin, &args).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || client
            .log()
            .contains("protocol=")),
        "no mapping:\n{}",
        client.log()
    );
    let log = client.log();
    let external = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("external="))
        .expect("external endpoint printed");
    let (ip, external_port) = external.split_once(':').unwrap();
    assert_eq!(ip, ROUTER_WAN, "{log}");
    let external_port: u16 = external_port.parse().unwrap();
    assert_ne!(external_port, 0);
    let protocol = if nat_pmp {
        "protocol=NatPmp"
    } else {
        "protocol=Pcp"
    };
    assert!(log.contains(protocol), "{log}");
    let rule = format!("dnat ip to {HOST}:{port}");
    assert!(
        dnat_rules(&net.router).contains(&rule),
        "{}",
        dnat_rules(&net.router)
    );
    println!("mapped {HOST}:{port} -> {external} ({protocol})");

    // The WAN side reaches the host through the mapping.
    let send = format!("echo hello-{port} > /dev/udp/{ROUTER_WAN}/{external_port}");
    let expected = format!("received from={PEER}:");
    assert!(
        wait_until(Duration::from_secs(4), || {
            net.router.peer.run_ok("bash", &["-c", &send]).unwrap();
            client.log().contains(&expected)
        }),
        "nothing arrived through {external}:\n{}",
        client.log()
    );
    assert!(client.log().contains(&format!("text=hello-{port}")));

    // close(): miniupnpd confirms the deletion and the rule is gone.
    let status = client.wait_timeout(Duration::from_secs(15)).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{}", client.log());
    assert!(client.log().contains("closed"), "{}", client.log());
    assert!(
        !dnat_rules(&net.router).contains(&rule),
        "{}",
        dnat_rules(&net.router)
    );
}

#[test]
fn miniupnpd_maps_over_pcp_and_nat_pmp_and_close_removes_the_mapping() {
    if !require(
        "miniupnpd_maps_over_pcp_and_nat_pmp_and_close_removes_the_mapping",
        &["miniupnpd", "nft", "bash"],
    ) {
        return;
    }
    let host = Netns::new("ph").unwrap();
    let router = PortMapRouter::new(&host).unwrap();
    let net = Net { host, router };
    map_receive_close(&net, 4000, false);
    map_receive_close(&net, 4001, true);
}
