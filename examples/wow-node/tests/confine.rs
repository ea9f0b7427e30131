//! `wow-node up --confine` in network namespaces: a host running a node
//! (its guest: the namespace itself, on TAP `wow0`) beside an "outside"
//! namespace standing in for the Internet, joined by a veth with IPv4 and
//! IPv6 addresses. Both run a TCP service on port 22 (busybox httpd, so
//! that a request gets a recognisable answer).
//!
//! Confined, the host may answer connections to its listed port (22) but
//! opens none to the outside, over IPv4 or IPv6; its guest still gets a
//! lease on the TAP. The rules outlive the node (fail-closed), also across
//! a restart without `--confine`, until `wow-node unconfine`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::{Netns, Process, TempDir, require, wait_until};

#[path = "support/dhclient.rs"]
mod dhclient;

const BIN: &str = env!("CARGO_BIN_EXE_wow-node");
const HOST_V4: &str = "198.51.100.1";
const HOST_V6: &str = "fd00:77::1";
const OUTSIDE_V4: &str = "198.51.100.2";
const OUTSIDE_V6: &str = "fd00:77::2";
const TABLE: &str = "wow_confine_wow0";

/// The confined host and the outside, each with a port-22 service.
struct Net {
    host: Netns,
    outside: Netns,
    state: TempDir,
    _www: (TempDir, TempDir),
    _servers: (Process, Process),
}

fn serve(ns: &Netns, dir: &TempDir, body: &str) -> Process {
    std::fs::write(dir.path().join("index.html"), body).unwrap();
    let p = ns
        .spawn(
            "busybox",
            &[
                "httpd",
                "-f",
                "-p",
                "22",
                "-h",
                dir.path().to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || ns
            .run_ok("ss", &["-Htln", "sport = :22"])
            .is_ok_and(|s| !s.trim().is_empty())),
        "httpd never listened:\n{}",
        p.log()
    );
    p
}

fn net(tag: &str) -> Net {
    let host = Netns::new(&format!("{tag}h")).unwrap();
    let outside = Netns::new(&format!("{tag}o")).unwrap();
    host.veth_to(&outside, "eth0", "eth0").unwrap();
    for (ns, v4, v6) in [
        (&host, HOST_V4, HOST_V6),
        (&outside, OUTSIDE_V4, OUTSIDE_V6),
    ] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])
            .unwrap();
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])
            .unwrap();
        ns.link_up("eth0").unwrap();
    }
    let www = (TempDir::new("wwwh").unwrap(), TempDir::new("wwwo").unwrap());
    let servers = (
        serve(&host, &www.0, "host-service\n"),
        serve(&outside, &www.1, "outside-service\n"),
    );
    let state = TempDir::new(tag).unwrap();
    let config = format!(
        "[node]\nstate_dir = \"{}\"\nlisten = \"0.0.0.0:4000\"\nlan_discovery = false\n\n\
         [network]\ncidr = \"10.128.0.0/16\"\n\n[confine]\nallow_tcp_ports = [22]\n",
        state.path().display()
    );
    std::fs::write(state.path().join("node.toml"), config).unwrap();
    Net {
        host,
        outside,
        state,
        _www: www,
        _servers: servers,
    }
}

impl Net {
    fn config(&self) -> String {
        self.state
            .path()
            .join("node.toml")
            .to_str()
            .unwrap()
            .to_string()
    }

    fn start(&self, extra: &[&str]) -> Process {
        let config = self.config();
        let mut cmd = self.host.command(BIN);
        cmd.args(["up", "--config", &config]).args(extra);
        let node = Process::spawn(cmd).unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || self
                .host
                .run_ok("ip", &["link", "show", "wow0"])
                .is_ok_and(|s| s.contains("UP"))),
            "TAP never came up:\n{}",
            node.log()
        );
        node
    }

    fn table_present(&self) -> bool {
        self.host
            .run("nft", &["list", "table", "inet", TABLE])
            .unwrap()
            .status
            .success()
    }
}

fn stop(mut node: Process) -> String {
    let status = node.terminate(Duration::from_secs(5)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "unclean exit:\n{}",
        node.log()
    );
    node.log()
}

/// An HTTP request from `from` to `addr`:22; the answer's body if one came.
fn fetch(from: &Netns, addr: &str) -> Option<String> {
    let script =
        format!("exec 3<>/dev/tcp/{addr}/22 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3");
    let out = from.run("timeout", &["3", "bash", "-c", &script]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && text.contains("-service")).then_some(text)
}

/// Whether the host reaches the outside's port 22 over IPv4 and over IPv6
/// (one attempt each).
fn reaches_outside(net: &Net) -> (bool, bool) {
    (
        fetch(&net.host, OUTSIDE_V4).is_some(),
        fetch(&net.host, OUTSIDE_V6).is_some(),
    )
}

/// Whether the host reaches the outside both ways within 10 s (on a
/// loaded machine a first attempt may time out).
fn reaches_outside_soon(net: &Net) -> bool {
    wait_until(Duration::from_secs(10), || {
        reaches_outside(net) == (true, true)
    })
}

#[test]
fn attack_guest_reaches_internet_ssh_through_confined_host() {
    if !require(
        "attack_guest_reaches_internet_ssh_through_confined_host",
        &["nft", "busybox", "bash", "timeout", "ss", "dhclient"],
    ) {
        return;
    }
    let net = net("cfa");
    // Unconfined, the host reaches the outside's port 22 both ways.
    assert!(reaches_outside_soon(&net), "the test net is broken");

    let node = net.start(&["--confine"]);
    assert!(net.table_present());
    // The listed port, 22, passes only as replies: the host opens nothing
    // to the outside's SSH port, over IPv4 or IPv6...
    assert_eq!(
        reaches_outside(&net),
        (false, false),
        "the confined host opened TCP/22 to the outside (v4, v6):\n{}",
        net.host.run_ok("nft", &["list", "ruleset"]).unwrap()
    );
    // ...while the host's own service on port 22 answers the outside.
    for addr in [HOST_V4, HOST_V6] {
        assert!(
            wait_until(Duration::from_secs(10), || fetch(&net.outside, addr)
                .is_some_and(|t| t.contains("host-service"))),
            "the listed host port does not answer on {addr}"
        );
    }
    // The virtual network (the TAP) stays open: the guest takes a lease.
    let (lease, addrs) = dhclient::lease_on_wow0(&net.host, net.state.path());
    assert!(
        addrs.iter().any(|a| a.starts_with("10.128.")),
        "no lease on the confined host's TAP: {addrs:?}\n{lease:?}\n{}",
        node.log()
    );
    stop(node);
}

#[test]
fn attack_confinement_fails_open_after_the_node_stops() {
    if !require(
        "attack_confinement_fails_open_after_the_node_stops",
        &["nft", "busybox", "bash", "timeout", "ss"],
    ) {
        return;
    }
    let net = net("cfs");
    assert!(reaches_outside_soon(&net), "the test net is broken");
    stop(net.start(&["--confine"]));
    // Stopped: the table is still there, and still blocks.
    assert!(net.table_present(), "the rules left with the node");
    assert_eq!(
        reaches_outside(&net),
        (false, false),
        "the stopped node's host reaches the outside (v4, v6)"
    );
    // Started again without --confine: the rules stay, and it says so.
    let log = stop(net.start(&[]));
    assert!(log.contains("still in place"), "{log}");
    assert!(net.table_present());
    assert_eq!(reaches_outside(&net), (false, false));
    // Only an explicit unconfine removes them.
    let config = net.config();
    let out = net
        .host
        .run_ok(BIN, &["unconfine", "--config", &config])
        .unwrap();
    assert!(out.contains(TABLE), "{out}");
    assert!(!net.table_present());
    assert!(reaches_outside_soon(&net), "still blocked after unconfine");
    // A second unconfine finds nothing and still succeeds.
    let out = net
        .host
        .run_ok(BIN, &["unconfine", "--tap", "wow0"])
        .unwrap();
    assert!(out.contains("nothing to remove"), "{out}");
    // `wow-node confine` (at boot, before any node) puts them back alone.
    net.host
        .run_ok(BIN, &["confine", "--config", &config])
        .unwrap();
    assert!(net.table_present());
    assert_eq!(reaches_outside(&net), (false, false));
    net.host
        .run_ok(BIN, &["unconfine", "--tap", "wow0"])
        .unwrap();
}

/// Datagrams the outside received from source port 4000 (an nftables
/// counter in its input chain).
fn outside_saw_port_4000(net: &Net) -> u64 {
    let rules = net
        .outside
        .run_ok("nft", &["list", "chain", "inet", "seen", "input"])
        .unwrap();
    rules
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// A DNS query from `HOST_V4:4000` to the outside, as `uid`.
fn send_from_port_4000(net: &Net, uid: u32) {
    let uid = uid.to_string();
    let source = format!("-b{HOST_V4}#4000");
    let server = format!("@{OUTSIDE_V4}");
    let _ = net.host.run(
        "setpriv",
        &[
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
            "--",
            "dig",
            "+tries=1",
            "+time=1",
            &source,
            &server,
            "wow.test",
        ],
    );
}

#[test]
fn attack_local_user_sends_from_the_node_port_while_it_is_stopped() {
    if !require(
        "attack_local_user_sends_from_the_node_port_while_it_is_stopped",
        &["nft", "busybox", "bash", "timeout", "ss", "dig", "setpriv"],
    ) {
        return;
    }
    let net = net("cfu");
    net.outside
        .nft("table inet seen {\n chain input {\n  type filter hook input priority filter;\n  udp sport 4000 counter\n }\n}\n")
        .unwrap();
    // The node's underlay port is open to the node's own sockets only (here
    // root's: the node ran as root); once it has stopped, another user
    // binding that port sends nothing out.
    stop(net.start(&["--confine"]));
    send_from_port_4000(&net, 64_918);
    assert_eq!(
        outside_saw_port_4000(&net),
        0,
        "another user sent through the stopped node's port"
    );
    // The node's uid still may (the test sees what passes).
    send_from_port_4000(&net, 0);
    assert!(outside_saw_port_4000(&net) > 0, "the probe never passes");
}
