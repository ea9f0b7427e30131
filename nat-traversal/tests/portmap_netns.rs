//! Port mapping against a real miniupnpd (Debian `miniupnpd-nftables`) in a
//! router namespace: `examples/portmap.rs` on a LAN host asks for a
//! mapping with PCP, and once more with NAT-PMP only; the router's WAN
//! address and a port come back, a host on the WAN side sends to that
//! endpoint and the LAN host receives it (the DNAT rule is real), and
//! closing the mapper removes the rule.
//!
//! ```text
//!   host 192.168.77.2 ── lan0 router (miniupnpd) wan0 100.200.0.1 ── peer 100.200.0.2
//! ```
//!
//! The WAN network is a public-looking range: miniupnpd refuses to map
//! when its external address is private or reserved (TEST-NETs included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::{Netns, Process, TempDir, example_bin, require, wait_until};

const ROUTER_LAN: &str = "192.168.77.1";
const HOST: &str = "192.168.77.2";
const ROUTER_WAN: &str = "100.200.0.1";
const PEER: &str = "100.200.0.2";

/// The tables and chains miniupnpd's nftables backend fills (the layout of
/// its `nft_init.sh`, named in the configuration below), plus the
/// router's masquerade. Forwarding is open; what reaches the host from the
/// WAN side is only what a DNAT rule sends there.
const RULESET: &str = r#"table inet wowpmp {
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "wan0" masquerade
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
"#;

/// miniupnpd with NAT-PMP and PCP (`enable_natpmp` serves both), without
/// UPnP IGD, mapping only for the LAN, in the tables above.
const CONFIG: &str = "ext_ifname=wan0
listening_ip=lan0
enable_natpmp=yes
enable_upnp=no
secure_mode=yes
min_lifetime=60
max_lifetime=86400
upnp_table_name=wowpmp
upnp_nat_table_name=wowpmp
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 192.168.77.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
";

struct Net {
    host: Netns,
    router: Netns,
    peer: Netns,
    _state: TempDir,
    _miniupnpd: Process,
}

fn setup() -> Net {
    let host = Netns::new("ph").unwrap();
    let router = Netns::new("pr").unwrap();
    let peer = Netns::new("pp").unwrap();
    host.veth_to(&router, "eth0", "lan0").unwrap();
    router.veth_to(&peer, "wan0", "eth0").unwrap();
    host.addr_add("eth0", &format!("{HOST}/24")).unwrap();
    host.default_route(ROUTER_LAN).unwrap();
    router
        .addr_add("lan0", &format!("{ROUTER_LAN}/24"))
        .unwrap();
    router
        .addr_add("wan0", &format!("{ROUTER_WAN}/24"))
        .unwrap();
    router.enable_forwarding().unwrap();
    router.nft(RULESET).unwrap();
    peer.addr_add("eth0", &format!("{PEER}/24")).unwrap();

    let state = TempDir::new("pmp").unwrap();
    let conf = state.path().join("miniupnpd.conf");
    std::fs::write(&conf, CONFIG).unwrap();
    let pid = state.path().join("miniupnpd.pid");
    let miniupnpd = router
        .spawn(
            "miniupnpd",
            &[
                "-f",
                conf.to_str().unwrap(),
                "-d",
                "-P",
                pid.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || miniupnpd
            .log()
            .contains("Listening for NAT-PMP/PCP")),
        "miniupnpd did not start:\n{}",
        miniupnpd.log()
    );
    Net {
        host,
        router,
        peer,
        _state: state,
        _miniupnpd: miniupnpd,
    }
}

/// The DNAT rules miniupnpd holds.
fn dnat_rules(router: &Netns) -> String {
    router
        .run_ok(
            "nft",
            &["list", "chain", "inet", "wowpmp", "prerouting_miniupnpd"],
        )
        .unwrap()
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
            net.peer.run_ok("bash", &["-c", &send]).unwrap();
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
    let net = setup();
    map_receive_close(&net, 4000, false);
    map_receive_close(&net, 4001, true);
}
