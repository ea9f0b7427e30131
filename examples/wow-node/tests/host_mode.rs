//! The node outside the machine it serves (the WOW paper's Fig. 2), in
//! network namespaces: two hosts on one underlay segment, each running a
//! certified `wow-node up` whose TAP is bridged (`scripts/host-mode.sh`)
//! with a veth into a separate guest namespace. The guests take leases with
//! ISC dhclient on their own `eth0`, resolve each other with `dig`, ping and
//! run iperf3 across the security associations; root in a guest that
//! flushes its firewall and routes, takes an underlay address and knows the
//! host bridge's MAC reaches neither host's underlay address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use wow_test_hosts::{Netns, require, wait_until};

#[path = "support/host.rs"]
mod host;

use host::{BIN, Host};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/host-mode.sh");
const UNDERLAY_A: &str = "198.51.100.1";
const UNDERLAY_B: &str = "198.51.100.2";

/// A host with its node, and the guest bridged to the node's TAP.
struct Bridged {
    host: Host,
    guest: Netns,
}

/// Two certified nodes on `198.51.100.0/24`, each with a bridged guest.
fn bridged_pair() -> (Bridged, Bridged) {
    let a = Host::new("hma", "alpha");
    let b = Host::new("hmb", "bravo");
    a.ns.veth_to(&b.ns, "eth0", "eth0").unwrap();
    a.ns.addr_add("eth0", &format!("{UNDERLAY_A}/24")).unwrap();
    b.ns.addr_add("eth0", &format!("{UNDERLAY_B}/24")).unwrap();
    for h in [&a, &b] {
        h.ns.link_up("lo").unwrap();
        // A host that forwards for other reasons (as VM hosts often do):
        // the bridge's guard must hold anyway.
        h.ns.enable_forwarding().unwrap();
    }
    let ca = a.state.path().join("ca");
    let ca = ca.to_str().unwrap();
    run(&[BIN, "ca", "init", "--dir", ca]);
    for (h, ip) in [(&a, "10.128.0.11"), (&b, "10.128.0.12")] {
        run(&[
            BIN,
            "ca",
            "issue",
            "--dir",
            ca,
            "--ip",
            ip,
            "--name",
            h.name,
            "--out",
            h.state.path().to_str().unwrap(),
        ]);
    }
    let security = "[security]\nca_cert = \"ca.pem\"\ncert = \"node.pem\"\nkey = \"node.key\"\n";
    let (mut a, mut b) = (a, b);
    let listen_a = format!("{UNDERLAY_A}:4000");
    a.write_config(&[], &listen_a, &[], security);
    b.write_config(&[&listen_a], &format!("{UNDERLAY_B}:4000"), &[], security);
    a.start(&[]);
    b.start(&[]);
    let bridge = |host: Host, tag: &str| {
        let guest = Netns::new(tag).unwrap();
        host.ns.veth_to(&guest, "gv", "eth0").unwrap();
        guest.link_up("lo").unwrap();
        host.ns
            .run_ok("bash", &[SCRIPT, "up", "wow0", "br0", "gv"])
            .unwrap();
        Bridged { host, guest }
    };
    (bridge(a, "gma"), bridge(b, "gmb"))
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

impl Bridged {
    /// ISC dhclient once on the guest's `eth0`, sending the host's name;
    /// checks the DNS settings it wrote and returns the leased address.
    fn dhcp(&self) -> String {
        let dir = self.host.state.path();
        let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
        std::fs::write(
            dir.join("guest-dhclient.conf"),
            format!(
                "send host-name \"{}\";\nrequest subnet-mask, routers, domain-name, domain-name-servers, domain-search, interface-mtu;\n",
                self.host.name
            ),
        )
        .unwrap();
        self.guest.set_resolv_conf("").unwrap();
        let out = self.guest.run(
            "timeout",
            &[
                "30",
                "dhclient",
                "-1",
                "-4",
                "-cf",
                &p("guest-dhclient.conf"),
                "-lf",
                &p("guest-dhclient.leases"),
                "-pf",
                &p("guest-dhclient.pid"),
                "eth0",
            ],
        );
        let resolv = std::fs::read_to_string(self.guest.etc_dir().unwrap().join("resolv.conf"))
            .unwrap_or_default();
        assert!(
            resolv.contains("nameserver 10.128.0.1") && resolv.contains("wow.internal"),
            "resolv.conf from DHCP: {resolv:?}\n{out:?}\n{}",
            self.host.log()
        );
        let addrs = self.guest.ipv4_addrs("eth0").unwrap();
        assert!(!addrs.is_empty(), "no lease: {out:?}\n{}", self.host.log());
        addrs[0].split('/').next().unwrap().to_string()
    }

    fn ping(&self, addr: &str) -> bool {
        self.guest
            .run("ping", &["-c", "1", "-W", "1", addr])
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Bridged {
    fn drop(&mut self) {
        let pid = self.host.state.path().join("guest-dhclient.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn dig(guest: &Netns, name: &str) -> String {
    let out = guest
        .run_ok("dig", &["+short", "+time=2", "+tries=2", name])
        .unwrap();
    out.trim().to_string()
}

#[test]
fn bridged_guests_get_dhcp_dns_and_talk_through_security_associations() {
    if !require("host_mode", &["dhclient", "dig", "iperf3", "nft", "bash"]) {
        return;
    }
    let (a, b) = bridged_pair();
    let addr_a = a.dhcp();
    let addr_b = b.dhcp();
    // Names from the DHCP host names, through the DHT, with dig.
    for (guest, name, addr) in [(&a, "bravo", &addr_b), (&b, "alpha", &addr_a)] {
        let fqdn = format!("{name}.wow.internal");
        assert!(
            wait_until(Duration::from_secs(10), || dig(&guest.guest, &fqdn)
                == *addr),
            "{fqdn}: {:?}\n{}",
            dig(&guest.guest, &fqdn),
            guest.host.status(false)
        );
    }
    assert!(
        wait_until(Duration::from_secs(15), || a.ping(&addr_b)),
        "no ping alpha -> bravo:\n{}\n{}",
        a.host.log(),
        b.host.log()
    );
    assert!(b.ping(&addr_a));
    let sas = a.host.status_json()["security_associations"]
        .as_u64()
        .unwrap();
    assert!(sas >= 1, "{}", a.host.status(false));

    let _server = b
        .guest
        .spawn("iperf3", &["-s", "-1", "-B", &addr_b])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = a
        .guest
        .run_ok("iperf3", &["-c", &addr_b, "-t", "2", "-J"])
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    assert!(bps > 1e6, "iperf3 across the bridged nodes: {bps} bit/s");
    // The host itself reaches the underlay (the guest's attack below has a
    // target that answers).
    assert!(
        a.host
            .ns
            .run("ping", &["-c", "1", "-W", "1", UNDERLAY_B])
            .is_ok_and(|o| o.status.success())
    );
}

#[test]
fn attack_root_in_bridged_guest_cannot_reach_the_underlay() {
    if !require("host_mode_attack", &["dhclient", "nft", "bash"]) {
        return;
    }
    let (a, b) = bridged_pair();
    let addr_b = b.dhcp();
    a.dhcp();
    assert!(wait_until(Duration::from_secs(15), || a.ping(&addr_b)));
    // The bridge's MAC, given to the attacker (the strongest guest: it
    // guessed or sniffed it).
    let bridge_mac = a
        .host
        .ns
        .run_ok("cat", &["/sys/class/net/br0/address"])
        .unwrap()
        .trim()
        .to_string();
    // Each host counts what arrives from the attacker's address: replies
    // go back over the underlay, not to the guest, so a one-way packet
    // (a spoofed datagram onto the underlay) counts as a breach too.
    let watch = "table inet watch {\n counter attacker {}\n chain input {\n  type filter hook input priority 0;\n  ip saddr 198.51.100.77 counter name \"attacker\"\n }\n}\n";
    for h in [&a.host, &b.host] {
        h.ns.nft(watch).unwrap();
    }
    // Root in the guest drops its firewall and routes, takes an underlay
    // address and points everything at the host's bridge, then at the
    // link itself.
    let attack = format!(
        "nft flush ruleset; ip route flush table main; ip addr flush dev eth0; \
         ip addr add 198.51.100.77/24 dev eth0; \
         ip neigh replace {UNDERLAY_A} lladdr {bridge_mac} dev eth0 nud permanent; \
         ip route add default via {UNDERLAY_A} dev eth0 onlink; \
         for t in {UNDERLAY_A} {UNDERLAY_B}; do \
           if ping -c 2 -W 1 $t >/dev/null; then echo REACHED $t; fi; \
         done; \
         ip neigh flush dev eth0; ip route replace default dev eth0; \
         for t in {UNDERLAY_A} {UNDERLAY_B}; do \
           if ping -c 2 -W 1 $t >/dev/null; then echo REACHED-DIRECT $t; fi; \
         done; echo done"
    );
    let out = a.guest.run_ok("sh", &["-c", &attack]).unwrap();
    assert!(out.contains("done"), "{out}");
    assert!(
        !out.contains("REACHED"),
        "the guest reached the underlay: {out}"
    );
    for h in [&a.host, &b.host] {
        let counter =
            h.ns.run_ok("nft", &["list", "counter", "inet", "watch", "attacker"])
                .unwrap();
        assert!(
            counter.contains("packets 0 "),
            "{}: the guest's packets arrived: {counter}",
            h.name
        );
    }
    // The underlay is there: the host reaches both addresses.
    for t in [UNDERLAY_A, UNDERLAY_B] {
        assert!(
            a.host
                .ns
                .run("ping", &["-c", "1", "-W", "1", t])
                .is_ok_and(|o| o.status.success()),
            "{t}"
        );
    }
    drop(b);
}
