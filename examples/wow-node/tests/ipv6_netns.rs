//! IPv6 in the virtual network with real kernels in network namespaces:
//! two certified nodes with `ipv6 = true`; each guest's kernel forms its
//! own address by SLAAC from the node's router advertisement (in the /64
//! derived from its DHCP lease), `dig AAAA` and `dig -x` find each other's
//! name and address, then `ping -6` and `iperf3 -6` cross the
//! overlay under the security association; a guest sending from a /64
//! not its own is dropped by its node (`attack`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use wow_test_hosts::{TempDir, require, wait_until};

#[path = "support/host.rs"]
mod host;

use host::{BIN, Host};

const ALPHA: &str = "10.128.0.10";
const BRAVO: &str = "10.128.0.20";
const ULA: &str = "fd12:3456:789a::/48";

const SECURITY: &str =
    "\n[security]\nca_cert = \"ca.pem\"\ncert = \"node.pem\"\nkey = \"node.key\"\n";

/// `wow-node ca issue` for `ip` and host name `name` into `out`.
fn issue(ca: &Path, ip: &str, name: &str, out: &Path) {
    let status = std::process::Command::new(BIN)
        .args(["ca", "issue", "--dir", ca.to_str().unwrap(), "--ip", ip])
        .args(["--name", name])
        .args(["--out", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The guest's global IPv6 addresses on `wow0` (no longer tentative).
fn global_v6(host: &Host) -> Vec<Ipv6Addr> {
    let out = host
        .ns
        .run_ok(
            "ip",
            &["-6", "-o", "addr", "show", "dev", "wow0", "scope", "global"],
        )
        .unwrap_or_default();
    out.lines()
        .filter(|l| !l.contains("tentative"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet6")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The /64 the network gives the guest at `v4`.
fn subnet(v4: &str) -> ipnet::Ipv6Net {
    let plan =
        wow_core::ipv6::Plan::new("10.128.0.0/16".parse().unwrap(), ULA.parse().unwrap()).unwrap();
    plan.subnet_of(v4.parse::<Ipv4Addr>().unwrap()).unwrap()
}

#[test]
fn guests_autoconfigure_ipv6_and_ping_and_iperf_across() {
    if !require(
        "guests_autoconfigure_ipv6_and_ping_and_iperf_across",
        &["dhclient", "ping", "iperf3", "dig"],
    ) {
        return;
    }
    let ca = TempDir::new("v6ca").unwrap();
    let status = std::process::Command::new(BIN)
        .args(["ca", "init", "--dir", ca.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());

    let mut a = Host::new("v6a", "alpha");
    let mut b = Host::new("v6b", "bravo");
    a.ns.veth_to(&b.ns, "l1", "eth0").unwrap();
    a.ns.addr_add("l1", "198.51.1.1/24").unwrap();
    b.ns.addr_add("eth0", "198.51.1.2/24").unwrap();
    for h in [&a, &b] {
        h.ns.link_up("lo").unwrap();
    }
    issue(ca.path(), ALPHA, "alpha", a.state.path());
    issue(ca.path(), BRAVO, "bravo", b.state.path());
    let extra = format!("ipv6 = true\nula = \"{ULA}\"\n{SECURITY}");
    a.write_config(&[], "0.0.0.0:4000", &[], &extra);
    b.write_config(&["198.51.1.1:4000"], "0.0.0.0:4000", &[], &extra);
    a.start(&[]);
    b.start(&[]);
    assert_eq!(a.dhcp(), ALPHA);
    assert_eq!(b.dhcp(), BRAVO);

    // The kernels' own SLAAC, in the /64 of each lease.
    let mut addrs = Vec::new();
    for (host, v4) in [(&a, ALPHA), (&b, BRAVO)] {
        let net = subnet(v4);
        assert!(
            wait_until(Duration::from_secs(20), || global_v6(host)
                .iter()
                .any(|x| net.contains(x))),
            "{} formed no address in {net}: {:?}\n{}",
            host.name,
            host.ns.run_ok("ip", &["-6", "addr", "show", "dev", "wow0"]),
            host.log()
        );
        let addr = *global_v6(host).iter().find(|x| net.contains(*x)).unwrap();
        println!("{} SLAAC address {addr}", host.name);
        addrs.push(addr);
    }
    let (a6, b6) = (addrs[0].to_string(), addrs[1].to_string());
    // The node shows its guest's /64 and the address it took.
    let status = a.status_json();
    assert_eq!(
        status["guest"]["ipv6_subnet"],
        subnet(ALPHA).to_string(),
        "{status}"
    );
    assert!(
        status["guest"]["ipv6"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == &a6),
        "{status}"
    );
    assert!(
        a.status(false)
            .contains(&format!("guest v6  {}", subnet(ALPHA)))
    );

    // AAAA of the other guest's name (its node published the interface
    // id with the name), and ip6.arpa back to the name.
    let dig = |h: &Host, args: &[&str]| {
        let mut all = vec!["+short", "@10.128.0.1"];
        all.extend_from_slice(args);
        h.ns.run_ok("dig", &all)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert!(
        wait_until(Duration::from_secs(20), || dig(
            &a,
            &["AAAA", "bravo.wow.internal"]
        ) == b6),
        "alpha: dig AAAA bravo gave {:?}, not {b6}\n{}",
        dig(&a, &["AAAA", "bravo.wow.internal"]),
        a.log()
    );
    assert_eq!(dig(&b, &["AAAA", "alpha.wow.internal"]), a6);
    assert_eq!(dig(&a, &["-x", &b6]), "bravo.wow.internal.");
    assert_eq!(dig(&b, &["-x", &b6]), "bravo.wow.internal.");

    // ping -6 both ways (the first waits for the route and the SA).
    for (from, to) in [(&a, &b6), (&b, &a6)] {
        assert!(
            wait_until(Duration::from_secs(20), || from
                .ns
                .run("ping", &["-6", "-c", "1", "-W", "1", to])
                .is_ok_and(|o| o.status.success())),
            "{} cannot ping -6 {to}:\n{}\n{}",
            from.name,
            a.log(),
            b.log()
        );
    }
    let out =
        a.ns.run_ok("ping", &["-6", "-c", "5", "-i", "0.2", &b6])
            .unwrap();
    println!("{out}");
    assert!(out.contains(" 0% packet loss"), "{out}");

    // attack: bravo's guest speaks from a /64 that is not its own (that
    // of 10.128.0.99): its node drops it; alpha's guest sees nothing.
    let dropped = |h: &Host| {
        h.status_json()["counters"]["dropped_policy"]
            .as_u64()
            .unwrap()
    };
    let before = dropped(&b);
    let spoofed = subnet("10.128.0.99")
        .network()
        .to_string()
        .replace("::", "::7");
    b.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{spoofed}/128"),
        "dev",
        "wow0",
        "nodad",
    ])
    .unwrap();
    let spoof =
        b.ns.run(
            "ping",
            &["-6", "-c", "3", "-i", "0.2", "-W", "1", "-I", &spoofed, &a6],
        )
        .unwrap();
    assert!(
        !spoof.status.success(),
        "a ping from a spoofed /64 was answered: {}",
        String::from_utf8_lossy(&spoof.stdout)
    );
    assert!(
        dropped(&b) >= before + 3,
        "bravo's node did not drop the spoofed pings"
    );
    b.ns.ip(&[
        "-6",
        "addr",
        "del",
        &format!("{spoofed}/128"),
        "dev",
        "wow0",
    ])
    .unwrap();

    // iperf3 over IPv6: TCP through the SA.
    let _server = b.ns.spawn("iperf3", &["-s", "-B", &b6]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out =
        a.ns.run(
            "timeout",
            &["30", "iperf3", "-6", "-c", &b6, "-t", "3", "-J"],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "iperf3 -6 failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        b.log()
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    println!("iperf3 -6 alpha -> bravo: {:.1} Mbit/s", bps / 1e6);
    assert!(bps > 1e6, "{bps} bit/s");
    // With TAP offloads: the kernel's TCPv6 super-frames were cut, none
    // refused.
    for h in [&a, &b] {
        let log = h.log();
        assert!(log.contains("offload=true"), "{}: {log}", h.name);
        assert!(!log.contains("TAP read dropped"), "{}: {log}", h.name);
    }
    // It went under the SA: the nodes sealed packets.
    let status = a.status_json();
    assert!(
        status["counters"]["sealed"].as_u64().unwrap() > 1000,
        "{status}"
    );

    b.stop();
    a.stop();
}

/// `iperf3` (`-6` for an IPv6 `addr`) from `client` to `addr` port
/// `port` (a server there on `server`): whether a one-second run completes.
fn tcp6_connects(client: &Host, server: &Host, addr: &str, port: &str) -> bool {
    let family = if addr.contains(':') { "-6" } else { "-4" };
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
                family,
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
fn the_firewall_applies_to_ipv6() {
    if !require(
        "the_firewall_applies_to_ipv6",
        &["dhclient", "ping", "iperf3"],
    ) {
        return;
    }
    let ca = TempDir::new("v6fwca").unwrap();
    let status = std::process::Command::new(BIN)
        .args(["ca", "init", "--dir", ca.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut a = Host::new("v6fa", "alpha");
    let mut b = Host::new("v6fb", "bravo");
    a.ns.veth_to(&b.ns, "l1", "eth0").unwrap();
    a.ns.addr_add("l1", "198.51.1.1/24").unwrap();
    b.ns.addr_add("eth0", "198.51.1.2/24").unwrap();
    for h in [&a, &b] {
        h.ns.link_up("lo").unwrap();
    }
    issue(ca.path(), ALPHA, "alpha", a.state.path());
    issue(ca.path(), BRAVO, "bravo", b.state.path());
    let extra = format!("ipv6 = true\nula = \"{ULA}\"\n{SECURITY}");
    // alpha lets in ICMP (v4 and v6), TCP 2222 from bravo's address, TCP
    // 3333 from bravo's /64 (an IPv6 CIDR: it also covers bravo's IPv4
    // packets) and TCP 4444 from another guest's /64.
    let (bravo_net, other_net) = (subnet(BRAVO), subnet("10.128.0.77"));
    let rules = format!(
        "\n[[firewall.inbound]]\nproto = \"icmp\"\n\
         [[firewall.inbound]]\nproto = \"tcp\"\nport = 2222\nhost = \"{BRAVO}\"\n\
         [[firewall.inbound]]\nproto = \"tcp\"\nport = 3333\ncidr = \"{bravo_net}\"\n\
         [[firewall.inbound]]\nproto = \"tcp\"\nport = 4444\ncidr = \"{other_net}\"\n"
    );
    a.write_config(&[], "0.0.0.0:4000", &[], &format!("{extra}{rules}"));
    b.write_config(&["198.51.1.1:4000"], "0.0.0.0:4000", &[], &extra);
    a.start(&[]);
    b.start(&[]);
    assert_eq!(a.dhcp(), ALPHA);
    assert_eq!(b.dhcp(), BRAVO);
    let mut addrs = Vec::new();
    for (host, v4) in [(&a, ALPHA), (&b, BRAVO)] {
        let net = subnet(v4);
        assert!(
            wait_until(Duration::from_secs(20), || global_v6(host)
                .iter()
                .any(|x| net.contains(x))),
            "{} formed no address in {net}",
            host.name
        );
        addrs.push(
            global_v6(host)
                .into_iter()
                .find(|x| net.contains(x))
                .unwrap()
                .to_string(),
        );
    }
    let (a6, b6) = (addrs[0].clone(), addrs[1].clone());

    // ICMPv6 in: allowed.
    assert!(
        wait_until(Duration::from_secs(20), || b
            .ns
            .run("ping", &["-6", "-c", "1", "-W", "1", &a6])
            .is_ok_and(|o| o.status.success())),
        "bravo cannot ping -6 alpha:\n{}",
        a.log()
    );
    // TCP over IPv6 to 2222 from bravo's /64: allowed; to 5201: denied.
    assert!(
        tcp6_connects(&b, &a, &a6, "2222"),
        "bravo cannot reach alpha's port 2222 over IPv6:\n{}",
        a.log()
    );
    assert!(
        !tcp6_connects(&b, &a, &a6, "5201"),
        "bravo reached a port no rule allows over IPv6"
    );
    // By IPv6 CIDR: bravo's /64 passes, over IPv6 and over IPv4; another
    // guest's /64 does not admit bravo.
    assert!(
        tcp6_connects(&b, &a, &a6, "3333"),
        "bravo's /64 does not pass its CIDR rule over IPv6:\n{}",
        a.log()
    );
    assert!(
        tcp6_connects(&b, &a, ALPHA, "3333"),
        "bravo's IPv4 packets do not pass the CIDR rule of its /64:\n{}",
        a.log()
    );
    assert!(
        !tcp6_connects(&b, &a, &a6, "4444"),
        "bravo passed a CIDR rule for another guest's /64"
    );
    // alpha's own connection out over IPv6: the replies are tracked.
    assert!(
        tcp6_connects(&a, &b, &b6, "5201"),
        "replies to alpha's outbound IPv6 connection were dropped:\n{}",
        a.log()
    );
    let counters = &a.status_json()["firewall"]["counters"];
    println!("alpha's firewall: {counters}");
    for key in ["in_rule", "in_tracked", "in_dropped"] {
        assert!(counters[key].as_u64().unwrap() > 0, "{key}: {counters}");
    }
    b.stop();
    a.stop();
}
