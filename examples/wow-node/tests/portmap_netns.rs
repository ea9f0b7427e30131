//! Port mapping in the node: a node behind a router running miniupnpd
//! (Debian `miniupnpd-nftables`, [`wow_test_hosts::miniupnpd`]) asks its
//! default gateway at start-up, advertises the mapped public endpoint (the
//! status's underlay endpoints), and the router holds the DNAT rule for
//! its port. With `port_mapping = false` it asks nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::miniupnpd::{HOST, PortMapRouter, ROUTER_WAN};
use wow_test_hosts::{require, wait_until};

#[path = "support/host.rs"]
mod host;

use host::Host;

fn endpoints(host: &Host) -> Vec<String> {
    host.status_json()["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn node_advertises_the_endpoint_its_router_maps() {
    if !require(
        "node_advertises_the_endpoint_its_router_maps",
        &["miniupnpd", "nft"],
    ) {
        return;
    }
    let mut host = Host::new("pn", "mapped");
    let router = PortMapRouter::new(&host.ns).unwrap();
    let mapped = format!("{ROUTER_WAN}:4000");

    // Off: no request, nothing mapped.
    host.write_config_with(
        &[],
        "0.0.0.0:4000",
        &[],
        "lan_discovery = false\nport_mapping = false\n",
        "",
    );
    host.start(&[]);
    assert!(wait_until(Duration::from_secs(10), || !host
        .status(false)
        .is_empty()));
    assert!(
        !endpoints(&host).contains(&mapped),
        "{:?}",
        endpoints(&host)
    );
    assert!(!router.dnat_rules().unwrap().contains("dnat"));
    host.stop();

    // On (the default).
    host.write_config_with(&[], "0.0.0.0:4000", &[], "lan_discovery = false\n", "");
    host.start(&[]);
    assert!(
        wait_until(Duration::from_secs(10), || endpoints(&host)
            .contains(&mapped)),
        "{mapped} not advertised: {:?}\n{}",
        endpoints(&host),
        host.log()
    );
    // Advertised first: the one endpoint peers anywhere can reach.
    assert_eq!(endpoints(&host)[0], mapped);
    let rules = router.dnat_rules().unwrap();
    assert!(
        rules.contains(&format!("dnat ip to {HOST}:4000")),
        "{rules}"
    );
    host.stop();
}
