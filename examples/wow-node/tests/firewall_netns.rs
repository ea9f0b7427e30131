//! The firewall with real tools in network namespaces: three certified
//! guests, alpha's `[[firewall.inbound]]` rules let in ICMP from anyone
//! and TCP port 2222 (an SSH-like port) only from group `admin`; `ping`
//! and `iperf3` (whose control connection is a TCP connection to the
//! port) check that allowed traffic passes, denied traffic does not, and
//! replies to alpha's own outbound connections pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use wow_test_hosts::{TempDir, require, wait_until};

#[path = "support/host.rs"]
mod host;

use host::{BIN, Host};

const ALPHA: &str = "10.128.0.10";
const BRAVO: &str = "10.128.0.20";
const CHARLIE: &str = "10.128.0.30";

const SECURITY: &str =
    "\n[security]\nca_cert = \"ca.pem\"\ncert = \"node.pem\"\nkey = \"node.key\"\n";

const RULES: &str = "\n[[firewall.inbound]]\nproto = \"icmp\"\n\
                     [[firewall.inbound]]\nproto = \"tcp\"\nport = 2222\ngroups = [\"admin\"]\n";

/// `wow-node ca issue` for `ip` with `groups` into `out`.
fn issue(ca: &Path, ip: &str, groups: &str, out: &Path) {
    let status = std::process::Command::new(BIN)
        .args(["ca", "issue", "--dir", ca.to_str().unwrap(), "--ip", ip])
        .args(["--out", out.to_str().unwrap(), "--groups", groups])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether a TCP connection from `client`'s guest to `addr:port` (an
/// `iperf3` server there) completes a one-second iperf3 run.
fn tcp_connects(client: &Host, server: &Host, addr: &str, port: &str) -> bool {
    let _server = server
        .ns
        .spawn("iperf3", &["-s", "-B", addr, "-p", port])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    client
        .ns
        .run(
            "timeout",
            &[
                "15",
                "iperf3",
                "-c",
                addr,
                "-p",
                port,
                "-t",
                "1",
                "--connect-timeout",
                "3000",
            ],
        )
        .is_ok_and(|o| o.status.success())
}

#[test]
fn firewall_rules_by_group_port_and_protocol_with_replies_tracked() {
    if !require(
        "firewall_rules_by_group_port_and_protocol_with_replies_tracked",
        &["dhclient", "ping", "iperf3"],
    ) {
        return;
    }
    let ca = TempDir::new("fwca").unwrap();
    let status = std::process::Command::new(BIN)
        .args(["ca", "init", "--dir", ca.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());

    // alpha is the hub (and bootstrap): bravo and charlie hang off it on
    // links of their own, routed through it.
    let mut a = Host::new("fwa", "alpha");
    let mut b = Host::new("fwb", "bravo");
    let mut c = Host::new("fwc", "charlie");
    a.ns.enable_forwarding().unwrap();
    for (host, i) in [(&b, 1u8), (&c, 2u8)] {
        a.ns.veth_to(&host.ns, &format!("l{i}"), "eth0").unwrap();
        a.ns.addr_add(&format!("l{i}"), &format!("198.51.{i}.1/24"))
            .unwrap();
        host.ns
            .addr_add("eth0", &format!("198.51.{i}.2/24"))
            .unwrap();
        host.ns.default_route(&format!("198.51.{i}.1")).unwrap();
        host.ns.link_up("lo").unwrap();
    }
    a.ns.link_up("lo").unwrap();

    issue(ca.path(), ALPHA, "", a.state.path());
    issue(ca.path(), BRAVO, "admin", b.state.path());
    issue(ca.path(), CHARLIE, "web", c.state.path());
    a.write_config(&[], "0.0.0.0:4000", &[], &format!("{SECURITY}{RULES}"));
    b.write_config(&["198.51.1.1:4000"], "0.0.0.0:4000", &[], SECURITY);
    c.write_config(&["198.51.2.1:4000"], "0.0.0.0:4000", &[], SECURITY);
    a.start(&[]);
    b.start(&[]);
    c.start(&[]);
    assert_eq!(a.dhcp(), ALPHA);
    assert_eq!(b.dhcp(), BRAVO);
    assert_eq!(c.dhcp(), CHARLIE);

    // ICMP from any peer passes alpha's rules.
    for peer in [&b, &c] {
        assert!(
            wait_until(Duration::from_secs(20), || peer.ping(ALPHA)),
            "{} cannot ping alpha:\n{}\n{}",
            peer.name,
            peer.log(),
            a.log()
        );
    }
    // TCP 2222: from group admin (bravo) only.
    assert!(
        !tcp_connects(&c, &a, ALPHA, "2222"),
        "charlie (not admin) reached alpha's port 2222"
    );
    assert!(
        tcp_connects(&b, &a, ALPHA, "2222"),
        "bravo (admin) cannot reach alpha's port 2222:\n{}",
        a.log()
    );
    // Another port: nobody.
    assert!(
        !tcp_connects(&b, &a, ALPHA, "5201"),
        "bravo reached a port no rule allows"
    );
    // alpha's own connection out: the replies pass its inbound rules.
    assert!(
        tcp_connects(&a, &c, CHARLIE, "5201"),
        "replies to alpha's outbound connection were dropped:\n{}",
        a.log()
    );
    // And alpha can ping out (the echo replies are tracked too).
    assert!(a.ping(BRAVO));

    let status = a.status_json();
    let counters = &status["firewall"]["counters"];
    assert_eq!(status["firewall"]["inbound_rules"], 2, "{status}");
    for key in ["in_rule", "in_tracked", "in_dropped"] {
        assert!(counters[key].as_u64().unwrap() > 0, "{key}: {status}");
    }
    let text = a.status(false);
    assert!(text.contains("firewall  2 in/0 out rules"), "{text}");
    // Nodes without rules show no firewall.
    assert!(b.status_json()["firewall"].is_null());

    c.stop();
    b.stop();
    a.stop();
}
