//! End-to-end tests of `wow-node up` in network namespaces, with the
//! guests' real tools: ISC dhclient on the TAP, `getent hosts` through the
//! node's DNS, `ping`, `iperf3`; nftables NATs between the hosts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use wow_test_hosts::{Netns, TempDir, require, wait_until};

#[path = "support/host.rs"]
mod host;

use host::{BIN, Host};

/// A public bootstrap host and two hosts behind their own masquerading
/// nftables NATs.
struct Topology {
    public: Host,
    a: Host,
    b: Host,
    _nats: Vec<Netns>,
}

/// How a test NAT is configured. Both are masquerading NATs as home routers
/// behave (Linux conntrack, the nat-traversal testbed's "cone"): address-and-
/// port-dependent filtering, no port forward.
#[derive(Clone, Copy)]
enum NatKind {
    /// Endpoint-independent mapping that keeps the host's port (`masquerade
    /// persistent`). Unsolicited packets to the router itself are dropped
    /// before conntrack confirms them, so a peer's early probe leaves no
    /// entry that would make the NAT remap our outgoing port.
    Guarded,
    /// `masquerade`, with `persistent` or not, nothing dropped: a peer's
    /// packet that arrives before ours left leaves a conntrack entry that
    /// makes the NAT remap our port toward that peer.
    Accepting {
        /// `masquerade persistent`.
        persistent: bool,
    },
    /// `masquerade random`: every new destination gets a new random port
    /// (address-and-port-dependent mapping, a "symmetric" NAT), no
    /// unsolicited packet in. No hole can be punched between two of them.
    Symmetric,
}

/// A NAT of `kind` between the public host and `192.168.i.0/24`.
fn nat_with(public: &Netns, tag: &str, i: u8, kind: NatKind) -> Netns {
    let nat = Netns::new(tag).unwrap();
    let (pub_if, nat_if) = (format!("p{i}"), format!("o{i}"));
    public.veth_to(&nat, &pub_if, &nat_if).unwrap();
    public
        .addr_add(&pub_if, &format!("198.51.{i}.1/24"))
        .unwrap();
    nat.addr_add(&nat_if, &format!("198.51.{i}.2/24")).unwrap();
    nat.default_route(&format!("198.51.{i}.1")).unwrap();
    nat.enable_forwarding().unwrap();
    let ruleset = match kind {
        NatKind::Guarded => format!(
            "table ip nat {{\n chain postrouting {{\n  type nat hook postrouting priority srcnat;\n  oifname \"{nat_if}\" masquerade persistent\n }}\n}}\n\
             table inet filter {{\n chain input {{\n  type filter hook input priority filter;\n  iifname \"{nat_if}\" ct state new drop\n }}\n}}\n"
        ),
        NatKind::Symmetric => format!(
            "table ip nat {{\n chain postrouting {{\n  type nat hook postrouting priority srcnat;\n  oifname \"{nat_if}\" masquerade random\n }}\n}}\n\
             table inet filter {{\n chain input {{\n  type filter hook input priority filter;\n  iifname \"{nat_if}\" ct state new drop\n }}\n}}\n"
        ),
        NatKind::Accepting { persistent } => format!(
            "table ip nat {{\n chain postrouting {{\n  type nat hook postrouting priority srcnat;\n  oifname \"{nat_if}\" masquerade{}\n }}\n}}\n",
            if persistent { " persistent" } else { "" }
        ),
    };
    nat.nft(&ruleset).unwrap();
    nat
}

fn topology() -> Topology {
    topology_with(NatKind::Guarded)
}

fn topology_with(kind: NatKind) -> Topology {
    let public = Host::new("pub", "public");
    public.ns.enable_forwarding().unwrap();
    let a = Host::new("ha", "alpha");
    let b = Host::new("hb", "bravo");
    let nat_a = nat_with(&public.ns, "na", 1, kind);
    let nat_b = nat_with(&public.ns, "nb", 2, kind);
    for (host, nat, i) in [(&a, &nat_a, 1u8), (&b, &nat_b, 2u8)] {
        nat.veth_to(&host.ns, "lan", "eth0").unwrap();
        nat.addr_add("lan", &format!("192.168.{i}.1/24")).unwrap();
        host.ns
            .addr_add("eth0", &format!("192.168.{i}.2/24"))
            .unwrap();
        host.ns.default_route(&format!("192.168.{i}.1")).unwrap();
        host.ns.link_up("lo").unwrap();
    }
    public.ns.link_up("lo").unwrap();
    Topology {
        public,
        a,
        b,
        _nats: vec![nat_a, nat_b],
    }
}

/// A public bootstrap host and two hosts on one LAN segment (a bridge in
/// the NAT) behind one `Guarded` masquerading NAT with no hairpin rule: a
/// host's datagram to the NAT's public address ends at the NAT, so the
/// hosts reach each other only at their LAN addresses (A `192.168.1.2`, B
/// `192.168.1.3`).
fn one_nat_topology() -> Topology {
    let public = Host::new("pub", "public");
    public.ns.enable_forwarding().unwrap();
    let a = Host::new("ha", "alpha");
    let b = Host::new("hb", "bravo");
    let nat = nat_with(&public.ns, "na", 1, NatKind::Guarded);
    nat.ip(&["link", "add", "lan", "type", "bridge"]).unwrap();
    nat.link_up("lan").unwrap();
    for (host, i) in [(&a, 2u8), (&b, 3u8)] {
        let port = format!("lan{i}");
        nat.veth_to(&host.ns, &port, "eth0").unwrap();
        nat.ip(&["link", "set", &port, "master", "lan"]).unwrap();
        host.ns
            .addr_add("eth0", &format!("192.168.1.{i}/24"))
            .unwrap();
        host.ns.default_route("192.168.1.1").unwrap();
        host.ns.link_up("lo").unwrap();
    }
    nat.addr_add("lan", "192.168.1.1/24").unwrap();
    public.ns.link_up("lo").unwrap();
    Topology {
        public,
        a,
        b,
        _nats: vec![nat],
    }
}

/// The public node and two nodes behind NATs of `kind`, started; both
/// guests leased (dhclient) and pinging each other. Returns the guests'
/// addresses.
fn leased_pair(kind: NatKind) -> (Topology, String, String) {
    leased_pair_with(kind, "")
}

/// [`leased_pair`] with `b_extra` appended to node B's configuration.
fn leased_pair_with(kind: NatKind, b_extra: &str) -> (Topology, String, String) {
    leased_pair_on(topology_with(kind), "", b_extra)
}

/// [`leased_pair`] on topology `t`, with `a_extra` and `b_extra` appended
/// to nodes A's and B's configurations.
fn leased_pair_on(mut t: Topology, a_extra: &str, b_extra: &str) -> (Topology, String, String) {
    t.public.write_config(&[], PUBLIC, &[], "");
    t.public.start(&[]);
    t.a.write_config(bootstrap(), ANY, &[], a_extra);
    t.b.write_config(bootstrap(), ANY, &[], b_extra);
    t.a.start(&[]);
    t.b.start(&[]);
    let addr_a = t.a.dhcp();
    let addr_b = t.b.dhcp();
    let (a, b) = (&t.a, &t.b);
    assert!(
        wait_until(Duration::from_secs(15), || a.ping(&addr_b)),
        "no ping alpha -> bravo:\n{}\n{}",
        a.log(),
        b.log()
    );
    assert!(b.ping(&addr_a));
    (t, addr_a, addr_b)
}

/// An iperf3 run from `client`'s guest to the server's guest at
/// `server_addr` with the client's `args` (after `-c`); its JSON report.
fn iperf_json(client: &Host, server: &Host, server_addr: &str, args: &[&str]) -> serde_json::Value {
    let _server = server
        .ns
        .spawn("iperf3", &["-s", "-1", "-B", server_addr])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut all = vec!["-c", server_addr, "-J"];
    all.extend_from_slice(args);
    let out = client.ns.run_ok("iperf3", &all).unwrap();
    serde_json::from_str(&out).unwrap()
}

/// An iperf3 TCP run of `secs` seconds from `client`'s guest to the
/// server's guest at `server_addr`; the bits per second received.
fn iperf(client: &Host, server: &Host, server_addr: &str, secs: u32) -> f64 {
    let json = iperf_json(client, server, server_addr, &["-t", &secs.to_string()]);
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
}

/// An iperf3 UDP run (`-b 50M -l 1200`, `secs` seconds: well within a
/// debug build's rate on a loaded machine) from `client`'s guest to the
/// server's guest: datagrams sent and lost, as the receiver counted them.
fn iperf_udp(client: &Host, server: &Host, server_addr: &str, secs: u32) -> (u64, u64) {
    let secs = secs.to_string();
    let args = ["-u", "-b", "50M", "-l", "1200", "-t", &secs];
    let json = iperf_json(client, server, server_addr, &args);
    let sum = &json["end"]["sum_received"];
    (
        sum["packets"].as_u64().unwrap(),
        sum["lost_packets"].as_u64().unwrap(),
    )
}

fn bootstrap() -> &'static [&'static str] {
    &[PUBLIC]
}

/// The public host is multi-homed (one link per NAT): it binds its public
/// address so that its answers leave from the address the NATs map.
const PUBLIC: &str = "198.51.1.1:4000";
/// The CA certificate in a `wow-node ca init` directory.
const CA_CERT: &str = "ca.pem";
const ANY: &str = "0.0.0.0:4000";

#[test]
fn guests_behind_nats_get_leases_names_ping_and_iperf() {
    if !require(
        "guests_behind_nats_get_leases_names_ping_and_iperf",
        &["dhclient", "getent", "ping", "iperf3", "nft", "dig"],
    ) {
        return;
    }
    // Leases from dhclient; ping across the overlay.
    let (mut t, addr_a, addr_b) = leased_pair(NatKind::Guarded);
    assert_ne!(addr_a, addr_b);
    assert!(addr_a.starts_with("10.128.") && addr_b.starts_with("10.128."));

    // Names registered from the DHCP host names, resolved through the DHT.
    let (a, b) = (&t.a, &t.b);
    assert!(
        wait_until(Duration::from_secs(10), || a
            .resolve("bravo.wow.internal")
            .as_deref()
            == Some(addr_b.as_str())),
        "alpha cannot resolve bravo: {:?}\n{}\n{}\n{}",
        a.ns.run(
            "dig",
            &["+time=3", "+tries=1", "@10.128.0.1", "bravo.wow.internal"]
        ),
        a.status(false),
        b.status(false),
        t.public.status(false),
    );
    assert!(
        wait_until(Duration::from_secs(10), || b.resolve("alpha").as_deref()
            == Some(addr_a.as_str())),
        "bravo cannot resolve alpha through its search domain: {:?}\n{:?}\n{}\n{}\n{}",
        b.ns.run(
            "dig",
            &["+time=3", "+tries=1", "@10.128.0.1", "alpha.wow.internal"]
        ),
        std::fs::read_to_string(b.ns.etc_dir().unwrap().join("resolv.conf")),
        a.status(false),
        b.status(false),
        t.public.status(false),
    );

    // DNS over TCP at the gateway, two queries on one connection (dig's
    // +keepopen): the other guest's name (a DHT lookup, answered later) and
    // this guest's own.
    let tcp =
        a.ns.run_ok(
            "dig",
            &[
                "+tcp",
                "+keepopen",
                "+short",
                "+time=5",
                "+tries=1",
                "@10.128.0.1",
                "bravo.wow.internal",
                "alpha.wow.internal",
            ],
        )
        .unwrap();
    assert_eq!(
        tcp.split_whitespace().collect::<Vec<_>>(),
        [addr_b.as_str(), addr_a.as_str()],
        "dig +tcp"
    );

    // TCP across the overlay.
    let bps = iperf(a, b, &addr_b, 10);
    eprintln!("iperf3 over wow-node: {:.1} Mbit/s", bps / 1e6);
    assert!(bps > 1e6, "{bps} bit/s");
    // UDP across the overlay: the far node hands a burst of one flow's
    // datagrams to its guest as USO writes (where the kernel has USO),
    // which the guest's kernel cuts again for iperf3's socket.
    let (sent, lost) = iperf_udp(a, b, &addr_b, 3);
    eprintln!("iperf3 -u over wow-node: {sent} datagrams, {lost} lost");
    assert!(sent > 1000 && lost * 2 < sent, "{sent} sent, {lost} lost");

    // Neither NAT forwards a port: each node learned its reflexive endpoint
    // by STUN from the bootstrap node, the overlay advertises it, and the
    // punch exchange through the overlay opens both NATs, so the path
    // between the guests is direct, not relayed through the public node.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let _ = a.ping(&addr_b);
            a.status(false).contains("direct (1 hops)")
        }),
        "{}",
        a.status(false)
    );
    // Status through the control socket.
    let status: serde_json::Value = serde_json::from_str(&a.status(true)).unwrap();
    assert_eq!(status["guest"]["address"], addr_a.as_str());
    assert_eq!(status["joined"], true);
    assert!(status["counters"]["packets_delivered"].as_u64().unwrap() > 0);
    // nat-traversal's authenticated punch sessions found direct paths.
    assert!(
        status["counters"]["punched"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(a.status(false).contains(&addr_b));

    // Restart bravo's node: same address, same name.
    t.b.release_dhcp();
    t.b.stop();
    t.b.ns.run_ok("ip", &["addr", "flush", "dev", "wow0"]).ok();
    t.b.start(&[]);
    let again = t.b.dhcp();
    assert_eq!(again, addr_b, "address changed across a restart");
    let a = &t.a;
    assert!(
        wait_until(Duration::from_secs(15), || a.ping(&addr_b)),
        "no ping after restart:\n{}",
        t.b.log()
    );
    assert_eq!(a.resolve("bravo").as_deref(), Some(addr_b.as_str()));
    t.a.stop();
    t.b.stop();
    t.public.stop();
}

/// Issues credentials for `ip` into `out`; returns the serial (hex).
fn issue(ca: &Path, ip: &str, out: &Path) -> String {
    let output = std::process::Command::new(BIN)
        .args([
            "ca",
            "issue",
            "--dir",
            ca.to_str().unwrap(),
            "--ip",
            ip,
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    // "issued IP serial HEX into DIR"
    let text = String::from_utf8(output.stdout).unwrap();
    text.split_whitespace().nth(3).unwrap().to_string()
}

const SECURITY: &str = "\n[security]\nca_cert = \"ca.pem\"\ncert = \"node.pem\"\nkey = \"node.key\"\ncrl_refresh_secs = 1\n";

#[test]
fn only_certified_nodes_reach_private_addresses_and_confine_blocks_the_outside() {
    if !require(
        "only_certified_nodes_reach_private_addresses_and_confine_blocks_the_outside",
        &["dhclient", "ping", "nft"],
    ) {
        return;
    }
    let ca = TempDir::new("ca").unwrap();
    let run = |args: &[&str]| {
        let s = std::process::Command::new(BIN).args(args).status().unwrap();
        assert!(s.success(), "{args:?}");
    };
    run(&["ca", "init", "--dir", ca.path().to_str().unwrap()]);

    let mut t = topology();
    // The public node (uncertified) is where the administrator drops CRLs:
    // it publishes them in the DHT.
    t.public.write_config(
        &[],
        PUBLIC,
        &[],
        "\n[security]\ncrl = \"ca.crl\"\ncrl_refresh_secs = 1\n",
    );
    t.public.start(&[]);
    // alpha and bravo are certified for fixed addresses; charlie (in the
    // public host's place as a guest) is not.
    issue(ca.path(), "10.128.0.10", t.a.state.path());
    let bravo_serial = issue(ca.path(), "10.128.0.20", t.b.state.path());
    t.a.write_config(bootstrap(), ANY, &[], SECURITY);
    t.b.write_config(bootstrap(), ANY, &[], SECURITY);
    t.a.start(&["--confine"]);
    t.b.start(&[]);
    assert_eq!(t.a.dhcp(), "10.128.0.10");
    assert_eq!(t.b.dhcp(), "10.128.0.20");
    let (a, b) = (&t.a, &t.b);
    assert!(
        wait_until(Duration::from_secs(15), || a.ping("10.128.0.20")),
        "certified peers cannot talk:\n{}\n{}",
        a.log(),
        b.log()
    );
    let status: serde_json::Value = serde_json::from_str(&a.status(true)).unwrap();
    assert!(status["security_associations"].as_u64().unwrap() >= 1);

    // --confine: alpha's guest reaches the virtual network but not the
    // public host's underlay address (outside the virtual network).
    assert!(!a.ping("198.51.1.1"), "confined guest reached the outside");
    assert!(
        b.ping("198.51.2.1"),
        "unconfined host must reach its NAT's peer"
    );

    // The public host's guest has no certificate: it gets an address but
    // cannot reach certified peers.
    let c = &t.public;
    let addr_c = c.dhcp();
    assert!(addr_c.starts_with("10.128."));
    assert!(
        !c.ping("10.128.0.20"),
        "uncertified node reached a private address"
    );
    assert!(b.status(true).contains("\"sa_rejected\""));

    // Revoking bravo: the CRL spreads through the DHT and alpha drops it.
    run(&[
        "ca",
        "revoke",
        "--dir",
        ca.path().to_str().unwrap(),
        "--serial",
        bravo_serial.as_str(),
        "--out",
        c.state.path().join("ca.crl").to_str().unwrap(),
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || !a.ping("10.128.0.20")),
        "alpha still reaches revoked bravo:\n{}",
        a.log()
    );
    assert!(
        a.log().contains("newer CRL loaded from the overlay"),
        "{}",
        a.log()
    );
    let status: serde_json::Value = serde_json::from_str(&a.status(true)).unwrap();
    assert!(status["crl"]["number"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["crl"]["stale"], false, "{status}");
    assert!(status["crl"]["next_update_in_secs"].as_i64().unwrap() > 0);
    assert!(
        a.status(false).contains("crl       #"),
        "{}",
        a.status(false)
    );

    // Alpha's confinement rules outlive it (fail-closed) until
    // `wow-node unconfine` (tests/confine.rs checks they still block).
    t.a.stop();
    let rules = t.a.ns.run_ok("nft", &["list", "ruleset"]).unwrap();
    assert!(rules.contains("wow_confine_wow0"), "rules gone:\n{rules}");
    let config = t.a.config_path();
    t.a.ns
        .run_ok(BIN, &["unconfine", "--config", config.to_str().unwrap()])
        .unwrap();
    let rules = t.a.ns.run_ok("nft", &["list", "ruleset"]).unwrap();
    assert!(
        !rules.contains("wow_confine"),
        "rules left behind:\n{rules}"
    );
    t.b.stop();
    t.public.stop();
}

#[test]
fn nodes_enrol_with_the_ca_node_over_the_overlay() {
    if !require(
        "nodes_enrol_with_the_ca_node_over_the_overlay",
        &["dhclient", "ping", "nft"],
    ) {
        return;
    }
    let ca = TempDir::new("ce").unwrap();
    let ca_dir = ca.path().to_str().unwrap().to_string();
    let s = std::process::Command::new(BIN)
        .args(["ca", "init", "--dir", &ca_dir])
        .status()
        .unwrap();
    assert!(s.success());
    let ca_cert = ca.path().join(CA_CERT);

    // A join token for alpha, issued offline before the CA node starts;
    // bravo has none and waits for the administrator.
    let out = std::process::Command::new(BIN)
        .args([
            "ca",
            "token",
            "--dir",
            &ca_dir,
            "--state-dir",
            &ca_dir,
            "--ttl",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token_a = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let mut t = topology();
    // The public node serves the CA; alpha and bravo hold only the CA's
    // certificate, and enrol for the address DHCP gives their guests.
    t.public
        .write_config(&[], PUBLIC, &[], &format!("\n[ca]\ndir = \"{ca_dir}\"\n"));
    t.public.start(&[]);
    let enrol = format!(
        "\n[security]\nca_cert = \"{}\"\nenrol = true\n",
        ca_cert.display()
    );
    t.a.write_config(
        bootstrap(),
        ANY,
        &[],
        &format!("{enrol}join_token = \"{token_a}\"\n"),
    );
    t.b.write_config(bootstrap(), ANY, &[], &enrol);
    t.a.start(&[]);
    t.b.start(&[]);
    let addr_a = t.a.dhcp();
    let addr_b = t.b.dhcp();
    // The administrator, on the CA node's host while it runs: bravo's
    // request waits in the queue; approving it sends bravo its certificate.
    let public_state = t.public.state.path().to_str().unwrap().to_string();
    let ca = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["ca"])
            .args(args)
            .args(["--state-dir", &public_state])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let mut pending_id = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            let (ok, text) = ca(&["pending"]);
            pending_id = text
                .lines()
                .skip(1)
                .find(|l| l.contains(&addr_b))
                .and_then(|l| l.split_whitespace().next().map(str::to_string));
            ok && pending_id.is_some()
        }),
        "bravo's request is not pending: {:?}\n{}\n{}",
        ca(&["pending"]),
        t.b.log(),
        t.public.log()
    );
    assert!(!t.b.status(false).contains("protected (certificate loaded)"));
    assert!(t.b.status(false).contains("closed until enrolled"));
    let (ok, text) = ca(&["approve", pending_id.as_deref().unwrap()]);
    assert!(ok, "approve failed: {text}");
    // A token through the running node too.
    let (ok, text) = ca(&["token", "--ttl", "10m"]);
    assert!(ok && text.starts_with("wowjoin1."), "{text}");
    let (a, b) = (&t.a, &t.b);
    assert!(
        wait_until(Duration::from_secs(15), || a.ping(&addr_b)
            && a.status(false).contains("(1 SAs)")),
        "no protected traffic after enrolment:\n{}\n{}\n{}",
        a.log(),
        b.log(),
        t.public.log()
    );
    assert!(a.log().contains("enrolled: private traffic is protected"));
    assert!(b.log().contains("enrolled: private traffic is protected"));
    assert!(b.status(true).contains("\"certificate_expires\""));
    assert!(b.status(false).contains("cert      expires"));
    // The certificate is kept for the next start.
    assert!(a.state.path().join("node.pem").exists());
    assert!(b.state.path().join("node.pem").exists());
    // SIGKILL the CA node: the certificates it handed out were written
    // (it writes on a thread of its own, and replies once they are on
    // disk), and it starts again from its directory.
    if let Some(mut p) = t.public.node.take() {
        p.kill();
    }
    let out = std::process::Command::new(BIN)
        .args(["ca", "list", "--dir", &ca_dir])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && list.contains(&addr_a) && list.contains(&addr_b),
        "issued certificates missing after SIGKILL:\n{list}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.public.start(&[]);
    t.a.stop();
    t.b.stop();
    t.public.stop();
}

/// Behind `masquerade` NATs (with and without `persistent`) that accept
/// unsolicited packets into conntrack, the first packet between the hosts must not reach the other
/// NAT before that NAT's host has sent toward us: the overlay holds its link
/// requests until the punch exchange, whose datagrams only open our own NAT.
#[test]
fn guests_behind_plain_masquerade_nats_get_a_direct_path() {
    if !require(
        "guests_behind_plain_masquerade_nats_get_a_direct_path",
        &["dhclient", "ping", "nft"],
    ) {
        return;
    }
    for persistent in [false, true] {
        let (mut t, _, addr_b) = leased_pair(NatKind::Accepting { persistent });
        let (a, b) = (&t.a, &t.b);
        assert!(
            wait_until(Duration::from_secs(15), || {
                let _ = a.ping(&addr_b);
                a.status(false).contains("direct (1 hops)")
            }),
            "persistent: {persistent}\n{}\n{}\n{}",
            a.status(false),
            b.status(false),
            a.log()
        );
        t.a.stop();
        t.b.stop();
        t.public.stop();
    }
}

/// Two hosts behind one NAT that does not hairpin: each node, bound to
/// `0.0.0.0`, offers its interfaces' addresses as host candidates besides
/// its reflexive endpoint (which the other cannot reach from inside), so the
/// guests get a one-hop link over the LAN.
#[test]
fn guests_behind_one_nat_link_directly_over_their_lan() {
    if !require(
        "guests_behind_one_nat_link_directly_over_their_lan",
        &["dhclient", "ping", "nft"],
    ) {
        return;
    }
    let (mut t, addr_a, addr_b) = leased_pair_on(one_nat_topology(), "", "");
    let (a, b) = (&t.a, &t.b);
    assert!(
        wait_until(Duration::from_secs(15), || {
            let _ = a.ping(&addr_b);
            a.status(false).contains("direct (1 hops)")
        }),
        "{}\n{}\n{}",
        a.status(false),
        b.status(false),
        a.log()
    );
    assert!(b.ping(&addr_a));
    // Each advertises its LAN address, never its guest's (virtual) one.
    for (h, lan) in [(a, "192.168.1.2:4000"), (b, "192.168.1.3:4000")] {
        let status = h.status_json();
        let advertised: Vec<&str> = status["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.as_str())
            .collect();
        assert!(advertised.contains(&lan), "{status}");
        assert!(
            !advertised.iter().any(|e| e.starts_with("10.128.")),
            "{status}"
        );
    }
    // The link between them runs over the LAN, not through the NAT.
    let status = a.status_json();
    let b_node = b.overlay_address();
    let link = status["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["peer"].as_str() == Some(b_node.as_str()))
        .unwrap_or_else(|| panic!("no link to bravo: {status}"))
        .clone();
    assert_eq!(link["endpoint"], "192.168.1.3:4000", "{status}");
    // A new interface address is offered once the interfaces are read
    // again (every 30 s).
    t.a.ns.addr_add("eth0", "192.168.1.12/24").unwrap();
    let a = &t.a;
    assert!(
        wait_until(Duration::from_secs(35), || a
            .status(false)
            .contains("192.168.1.12:4000")),
        "{}",
        a.status(false)
    );
    t.a.stop();
    t.b.stop();
    t.public.stop();
}

#[test]
fn guests_behind_symmetric_nats_are_relayed_through_the_overlay() {
    if !require(
        "guests_behind_symmetric_nats_are_relayed_through_the_overlay",
        &["dhclient", "ping", "nft", "iperf3"],
    ) {
        return;
    }
    // No hole between two symmetric NATs: the guests' packets go through
    // the public node, which both nodes are linked to. Node B runs its TAP
    // without offloads: A's segments reach B's guest one by one, and B's
    // guest's packets are merged for A's.
    let (t, addr_a, addr_b) = leased_pair_with(NatKind::Symmetric, "\n[tap]\noffload = false\n");
    let (a, b) = (&t.a, &t.b);
    for _ in 0..5 {
        assert!(a.ping(&addr_b));
    }
    let status = a.status(false);
    assert!(
        status.contains("relayed (2 hops)") && !status.contains("direct (1 hops)"),
        "{status}\n{}",
        b.status(false)
    );
    // TCP streams through the relay, both ways.
    assert!(b.log().contains("offload=false"), "{}", b.log());
    let back = iperf(b, a, &addr_a, 3);
    assert!(back > 1e6, "{back} bit/s");
    let bps = iperf(a, b, &addr_b, 3);
    eprintln!(
        "iperf3 relayed through the public node: {:.1} Mbit/s",
        bps / 1e6
    );
    assert!(bps > 1e6, "{bps} bit/s");
}

#[test]
fn nodes_on_one_lan_find_each_other_without_bootstrap() {
    if !require(
        "nodes_on_one_lan_find_each_other_without_bootstrap",
        &["dhclient", "ping"],
    ) {
        return;
    }
    // Two hosts on one link, nothing configured but their own address:
    // each starts a ring of its own, hears the other's multicast
    // announcement, and one joins the other.
    let mut a = Host::new("la", "alpha");
    let mut b = Host::new("lb", "bravo");
    a.ns.veth_to(&b.ns, "eth0", "eth0").unwrap();
    a.ns.addr_add("eth0", "192.168.50.1/24").unwrap();
    b.ns.addr_add("eth0", "192.168.50.2/24").unwrap();
    for h in [&a, &b] {
        h.ns.link_up("lo").unwrap();
    }
    // Announcements are authenticated: both share a network secret.
    for h in [&a, &b] {
        h.write_config(&[], ANY, &[], "");
        let text = std::fs::read_to_string(h.config_path()).unwrap().replacen(
            "[node]\n",
            "[node]\nlan_secret = \"one LAN, one network\"\n",
            1,
        );
        std::fs::write(h.config_path(), text).unwrap();
    }
    a.start(&[]);
    b.start(&[]);
    let addr_a = a.dhcp();
    let addr_b = b.dhcp();
    assert_ne!(addr_a, addr_b, "one ring, one address space");
    assert!(
        wait_until(Duration::from_secs(15), || a.ping(&addr_b)),
        "no ping alpha -> bravo:\n{}\n{}",
        a.log(),
        b.log()
    );
    assert!(b.ping(&addr_a));
    assert!(
        a.log().contains("found on the LAN") || b.log().contains("found on the LAN"),
        "{}\n{}",
        a.log(),
        b.log()
    );
}

#[test]
fn guests_behind_symmetric_nats_link_through_a_turn_server() {
    if !require(
        "guests_behind_symmetric_nats_link_through_a_turn_server",
        &["dhclient", "ping", "nft", "iperf3", "turnserver", "ss"],
    ) {
        return;
    }
    // coturn on the public host (long-term credentials); both nodes use it
    // as the relay of last resort. No hole between two symmetric NATs; once
    // punching fails, each offers the other its relayed address: a one-hop
    // overlay link through the TURN server instead of two hops through the
    // public node (which reaches both directly and never uses the relay).
    let t = topology_with(NatKind::Symmetric);
    let scratch = TempDir::new("trn").unwrap();
    let _coturn = t
        .public
        .ns
        .spawn_coturn("198.51.1.1", "wow:secret", scratch.path())
        .unwrap();
    let turn =
        "\n[turn]\nserver = \"198.51.1.1:3478\"\nusername = \"wow\"\npassword = \"secret\"\n";
    let (t, addr_a, addr_b) = leased_pair_on(t, turn, turn);
    let (a, b) = (&t.a, &t.b);
    assert!(a.log().contains("TURN allocation"), "{}", a.log());
    for h in [a, b] {
        let status: serde_json::Value = serde_json::from_str(&h.status(true)).unwrap();
        let relayed = status["turn_relayed"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(relayed.starts_with("198.51.1.1:50"), "{status}");
        // Not advertised to everyone: offered only to peers no hole could
        // be punched to.
        let advertised = status["endpoints"].as_array().unwrap();
        assert!(
            !advertised
                .iter()
                .any(|e| e.as_str() == Some(relayed.as_str())),
            "{status}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(20), || {
            let _ = a.ping(&addr_b);
            let _ = b.ping(&addr_a);
            a.status(false).contains("direct (1 hops)")
        }),
        "no one-hop path through the relay:\n{}\n{}\n{}",
        a.status(false),
        b.status(false),
        b.log()
    );
    // The link between them goes through the TURN server: to the other's
    // relayed address, or to the other's NAT mapping heard through our own
    // allocation and answered through it. (At least one side holds it.)
    let mut links = 0;
    for (h, other) in [(a, b), (b, a)] {
        let status: serde_json::Value = serde_json::from_str(&h.status(true)).unwrap();
        let other_node = other.overlay_address();
        let Some(link) = status["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["peer"].as_str() == Some(other_node.as_str()))
        else {
            continue;
        };
        links += 1;
        let endpoint = link["endpoint"].as_str().unwrap().to_string();
        let through_ours = status["turn_peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str() == Some(endpoint.as_str()));
        assert!(
            endpoint.starts_with("198.51.1.1:50") || through_ours,
            "{status}"
        );
    }
    assert!(
        links > 0,
        "no link between A and B:\n{}\n{}",
        a.status(false),
        b.status(false)
    );
    let bps = iperf(a, b, &addr_b, 3);
    eprintln!("iperf3 through the TURN relay: {:.1} Mbit/s", bps / 1e6);
    assert!(bps > 1e6, "{bps} bit/s");
}

/// Streams between the guests across an underlay event: `ping -i 0.1`
/// from A's guest to B's (each reply stamped with its arrival, Unix
/// seconds) and an iperf3 TCP run from A's guest to B's through the TAPs.
struct Streams {
    ping: wow_test_hosts::Process,
    iperf: wow_test_hosts::Process,
    iperf_json: std::path::PathBuf,
    _server: wow_test_hosts::Process,
}

/// How the guests' streams went across the event.
struct Across {
    /// Longest silence in the ping stream around the event (s).
    gap: f64,
    /// First reply after the event (s after it).
    first: f64,
    /// iperf3's received rate over the whole run (bit/s).
    bps: f64,
    /// Its slowest one-second interval (bit/s).
    worst_interval: f64,
    /// Whether iperf3 exited 0 (its TCP connection survived).
    iperf_ok: bool,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl Streams {
    /// Starts both streams (iperf3 for `secs` seconds) and waits until the
    /// ping stream runs.
    fn start(a: &Host, b: &Host, addr_b: &str, secs: u32) -> Streams {
        let server = b.ns.spawn("iperf3", &["-s", "-1", "-B", addr_b]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let iperf_json =
            std::env::temp_dir().join(format!("{}.json", wow_test_hosts::unique_name("ip")));
        let iperf =
            a.ns.spawn(
                "iperf3",
                &[
                    "-c",
                    addr_b,
                    "-t",
                    &secs.to_string(),
                    "-J",
                    "--logfile",
                    iperf_json.to_str().unwrap(),
                ],
            )
            .unwrap();
        let ping =
            a.ns.spawn("stdbuf", &["-oL", "ping", "-D", "-i", "0.1", addr_b])
                .unwrap();
        let streams = Streams {
            ping,
            iperf,
            iperf_json,
            _server: server,
        };
        assert!(
            wait_until(Duration::from_secs(5), || streams.replies().len() >= 20),
            "the stream never ran:\n{}",
            streams.ping.log()
        );
        streams
    }

    /// Arrival times of the ping replies so far.
    fn replies(&self) -> Vec<f64> {
        self.ping
            .log()
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
            .collect()
    }

    /// Whether a reply arrived after `event` (Unix seconds).
    fn resumed(&self, event: f64) -> bool {
        self.replies().iter().any(|&r| r > event + 0.05)
    }

    /// Waits for iperf3 to end and sums both streams up around `event`.
    fn finish(mut self, event: f64) -> Across {
        let status = self.iperf.wait_timeout(Duration::from_secs(60)).unwrap();
        let replies = self.replies();
        let gap = replies
            .windows(2)
            .filter(|w| w[1] > event - 1.0)
            .map(|w| w[1] - w[0])
            .fold(0.0, f64::max);
        let first = replies
            .iter()
            .find(|&&r| r > event + 0.05)
            .map_or(f64::INFINITY, |r| r - event);
        let text = std::fs::read_to_string(&self.iperf_json).unwrap_or_default();
        let _ = std::fs::remove_file(&self.iperf_json);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let bps = json["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        let worst_interval = json["intervals"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                    .fold(f64::INFINITY, f64::min)
            })
            .unwrap_or(0.0);
        Across {
            gap,
            first,
            bps,
            worst_interval,
            iperf_ok: status.is_some_and(|s| s.success()) && json["error"].is_null(),
        }
    }
}

impl Across {
    /// Prints the figures under `what`.
    fn print(&self, what: &str) {
        eprintln!(
            "{what} gap: {:.2} s (longest silence in the ping -i 0.1 stream; first reply {:.2} s after the event); iperf3 TCP across it: {:.1} Mbit/s, slowest second {:.1} Mbit/s, exit {}",
            self.gap,
            self.first,
            self.bps / 1e6,
            self.worst_interval / 1e6,
            if self.iperf_ok { "0" } else { "FAILED" }
        );
    }
}

/// Writes the nodes' logs to `$WOW_TEST_DUMP` (with the event's Unix
/// time), for reading a timeline (`WOW_TEST_LOG` sets their levels).
fn dump_logs(t: &Topology, event: f64) {
    if let Ok(dir) = std::env::var("WOW_TEST_DUMP") {
        for (n, h) in [("a", &t.a), ("b", &t.b), ("pub", &t.public)] {
            std::fs::write(format!("{dir}/{n}.log"), h.log()).unwrap();
        }
        std::fs::write(format!("{dir}/event"), format!("{event}")).unwrap();
    }
}

/// Waits until A's node reports a one-hop path to B's guest.
fn wait_direct(a: &Host, b: &Host, addr_b: &str) {
    assert!(
        wait_until(Duration::from_secs(15), || {
            let _ = a.ping(addr_b);
            a.status(false).contains("direct (1 hops)")
        }),
        "no direct path before the event:\n{}\n{}",
        a.status(false),
        b.status(false)
    );
}

/// NAT rebinding mid-stream: once the guests have a one-hop path through
/// two `Guarded` NATs, NAT A is made to map anew (its UDP masquerade now
/// picks ports 20000–30000) and its conntrack table is flushed, so node A's
/// datagrams leave from a new public endpoint and every old mapping is gone.
/// A running `ping -i 0.1` between the guests must get answers again without
/// a restart (silence under 2 s), an iperf3 TCP run across the event must
/// end well, and a one-hop path must exist again at A's new endpoint;
/// the longest silence, the throughput and the time to that path are
/// printed.
#[test]
fn a_nat_rebinding_mid_stream_is_survived() {
    if !require(
        "a_nat_rebinding_mid_stream_is_survived",
        &["dhclient", "ping", "nft", "conntrack", "stdbuf", "iperf3"],
    ) {
        return;
    }
    let (mut t, _, addr_b) = leased_pair(NatKind::Guarded);
    let (a, b) = (&t.a, &t.b);
    wait_direct(a, b, &addr_b);
    let a_node = a.overlay_address();
    // B's link to A at a public endpoint of NAT A in the new port range.
    let rebound_link = || {
        b.status_json()["links"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["peer"].as_str() == Some(a_node.as_str()))
            .filter_map(|l| l["endpoint"].as_str()?.strip_prefix("198.51.1.2:"))
            .filter_map(|port| port.parse::<u16>().ok())
            .any(|port| (20000..=30000).contains(&port))
    };
    assert!(!rebound_link(), "{}", b.status(false));
    let streams = Streams::start(a, b, &addr_b, 8);
    std::thread::sleep(Duration::from_secs(1));
    // The rebinding, in one nft transaction, then the flush.
    let nat_a = &t._nats[0];
    nat_a
        .nft(
            "flush chain ip nat postrouting\n\
             add rule ip nat postrouting oifname \"o1\" meta l4proto udp masquerade to :20000-30000 persistent\n\
             add rule ip nat postrouting oifname \"o1\" masquerade persistent\n",
        )
        .unwrap();
    nat_a.run_ok("conntrack", &["-F"]).unwrap();
    let event = unix_now();
    let started = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || streams.resumed(event)),
        "no reply within 30 s of the rebinding:\n{}\n{}\n{}\n{}",
        a.status(false),
        b.status(false),
        t.public.status(false),
        a.log()
    );
    // A one-hop path again, at A's new endpoint (A learns it from the
    // bootstrap node's report and offers it in its punch exchange).
    let direct = wait_until(Duration::from_secs(30), &rebound_link)
        && wait_until(Duration::from_secs(5), || {
            a.status(false).contains("direct (1 hops)")
        });
    let direct_after = started.elapsed();
    let across = streams.finish(event);
    across.print("rebinding");
    eprintln!(
        "rebinding: one-hop path at the new endpoint {} {:.2} s after the flush",
        if direct { "found" } else { "NOT found" },
        direct_after.as_secs_f64()
    );
    dump_logs(&t, event);
    assert!(across.gap < 2.0, "gap {} s", across.gap);
    assert!(across.iperf_ok, "iperf3 did not survive the rebinding");
    assert!(
        direct,
        "no one-hop path at A's new endpoint:\n{}\n{}",
        a.status(false),
        b.status(false)
    );
    t.a.stop();
    t.b.stop();
    t.public.stop();
}

/// Roaming mid-stream: once the guests have a one-hop path through two
/// `Guarded` NATs, host A's underlay address changes (192.168.1.2 ->
/// 192.168.1.3 on its veth, 300 ms without an address in between, the
/// default route added again), so node A's socket (bound to 0.0.0.0) sends
/// from a new address and NAT A maps it to a new public endpoint; the old
/// conntrack entries stay and point at an address that is gone. The ping
/// and iperf3 streams must survive without a restart (silence under 2 s,
/// iperf3 exits 0), and a one-hop path must exist again.
#[test]
fn the_host_under_a_node_roams_to_a_new_address_mid_stream() {
    if !require(
        "the_host_under_a_node_roams_to_a_new_address_mid_stream",
        &["dhclient", "ping", "nft", "stdbuf", "iperf3"],
    ) {
        return;
    }
    let (mut t, _, addr_b) = leased_pair(NatKind::Guarded);
    let (a, b) = (&t.a, &t.b);
    wait_direct(a, b, &addr_b);
    let a_node = a.overlay_address();
    let streams = Streams::start(a, b, &addr_b, 8);
    std::thread::sleep(Duration::from_secs(1));
    let event = unix_now();
    a.ns.ip(&["addr", "del", "192.168.1.2/24", "dev", "eth0"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    a.ns.addr_add("eth0", "192.168.1.3/24").unwrap();
    a.ns.default_route("192.168.1.1").unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || streams.resumed(event)),
        "no reply within 30 s of the move:\n{}\n{}\n{}\n{}",
        a.status(false),
        b.status(false),
        t.public.status(false),
        a.log()
    );
    // B links to A again at a NAT A endpoint other than the old one.
    let direct = wait_until(Duration::from_secs(30), || {
        b.status_json()["links"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["peer"].as_str() == Some(a_node.as_str()))
            .filter_map(|l| l["endpoint"].as_str())
            .any(|e| e.starts_with("198.51.1.2:") && e != "198.51.1.2:4000")
    }) && wait_until(Duration::from_secs(5), || {
        a.status(false).contains("direct (1 hops)")
    });
    let across = streams.finish(event);
    across.print("roaming");
    eprintln!(
        "roaming: one-hop path at A's new endpoint {}",
        if direct { "found" } else { "NOT found" }
    );
    dump_logs(&t, event);
    assert!(across.gap < 2.0, "gap {} s", across.gap);
    assert!(across.iperf_ok, "iperf3 did not survive the move");
    assert!(
        direct,
        "no one-hop path after the move:\n{}\n{}",
        a.status(false),
        b.status(false)
    );
    t.a.stop();
    t.b.stop();
    t.public.stop();
}
