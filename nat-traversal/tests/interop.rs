//! Interoperability with STUN and TURN implementations nobody here wrote:
//! our STUN and TURN clients against coturn's `turnserver`, and Debian's
//! `stun` client against our server, each from behind a Linux NAT so the
//! reflexive address differs from the local one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::{Netns, TempDir, example_bin, require, wait_until};

/// A public namespace at `198.18.{net}.1` and a host at `10.{net}.0.2`
/// behind a cone NAT whose public address is `198.18.{net}.10`.
struct Topology {
    public: Netns,
    nat: Netns,
    host: Netns,
}

fn topology(net: u8) -> Topology {
    let public = Netns::new("pub").unwrap();
    let nat = Netns::new("nat").unwrap();
    let host = Netns::new("h").unwrap();
    public.veth_to(&nat, "p0", "wan").unwrap();
    public
        .addr_add("p0", &format!("198.18.{net}.1/24"))
        .unwrap();
    nat.addr_add("wan", &format!("198.18.{net}.10/24")).unwrap();
    nat.veth_to(&host, "lan", "eth0").unwrap();
    nat.addr_add("lan", &format!("10.{net}.0.1/24")).unwrap();
    host.addr_add("eth0", &format!("10.{net}.0.2/24")).unwrap();
    host.default_route(&format!("10.{net}.0.1")).unwrap();
    nat.enable_forwarding().unwrap();
    nat.nft(
        "table ip nat {\n  chain postrouting {\n    type nat hook postrouting priority srcnat;\n    \
         oifname \"wan\" masquerade persistent\n  }\n}\n",
    )
    .unwrap();
    Topology { public, nat, host }
}

fn listening(ns: &Netns, addr: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        ns.run_ok("ss", &["-Hlun"])
            .unwrap_or_default()
            .contains(addr)
    })
}

/// Our STUN client, then our TURN client: allocation, Send/Data
/// indications to an echo peer, then a channel (ChannelBind) and
/// ChannelData both ways.
#[test]
fn our_client_against_coturn() {
    if !require("our_client_against_coturn", &["turnserver", "nft", "ss"]) {
        return;
    }
    let t = topology(61);
    // The peer has its own public address.
    t.public.addr_add("p0", "198.18.61.2/24").unwrap();
    // coturn's database and pid file stay out of /var.
    let scratch = TempDir::new("trn").unwrap();
    let _coturn = t
        .public
        .spawn_coturn("198.18.61.1", "alice:secret", scratch.path())
        .unwrap();
    let out = t
        .host
        .run_ok(
            example_bin("stun"),
            &["--bind", "10.61.0.2:5000", "198.18.61.1:3478"],
        )
        .unwrap();
    println!("{out}");
    // The NAT's public address; `persistent` masquerade keeps the free port.
    assert!(
        out.contains("observer=198.18.61.1:3478 mapped=198.18.61.10:5000 "),
        "{out}"
    );
    assert!(out.contains("reflexive=198.18.61.10:5000"), "{out}");

    let echo = t
        .public
        .spawn(example_bin("turn"), &["echo", "--bind", "198.18.61.2:6000"])
        .unwrap();
    assert!(listening(&t.public, "198.18.61.2:6000"), "echo peer");
    let out = t
        .host
        .run(
            example_bin("turn"),
            &[
                "relay",
                "--bind",
                "10.61.0.2:5001",
                "--server",
                "198.18.61.1:3478",
                "--user",
                "alice",
                "--password",
                "secret",
                "--peer",
                "198.18.61.2:6000",
                "--count",
                "200",
            ],
        )
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}\n--- echo peer ---\n{}", echo.log());
    assert!(out.status.success(), "{text}\n{}", _coturn.log());
    let relayed = text
        .lines()
        .find_map(|l| l.strip_prefix("relayed="))
        .unwrap();
    assert!(relayed.starts_with("198.18.61.1:50"), "{text}");
    assert!(text.contains("indication sent=1 received=1"), "{text}");
    assert!(text.contains("channel=0x4000"), "{text}");
    assert!(
        text.contains("channel sent=200 received=200 via_indication=0 "),
        "{text}"
    );
    // The peer saw every message, and from the relayed address only.
    let log = echo.log();
    let from: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("from="))
        .collect();
    assert!(from.len() >= 201, "{log}");
    let expected = format!("{relayed} ");
    assert!(from.iter().all(|l| l.starts_with(&expected)), "{log}");
}

#[test]
fn debian_stun_client_against_our_server() {
    if !require(
        "debian_stun_client_against_our_server",
        &["stun", "nft", "ss"],
    ) {
        return;
    }
    let t = topology(62);
    let _server = t
        .public
        .spawn(
            example_bin("punch"),
            &[
                "rendezvous",
                "--listen",
                "198.18.62.1:3478",
                "--alternate-port",
                "3479",
            ],
        )
        .unwrap();
    assert!(listening(&t.public, "198.18.62.1:3478"));
    // The client always talks to port 3478 and exits 0 whatever it found.
    let out = t
        .host
        .run("stun", &["198.18.62.1", "-v", "-p", "40000"])
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(
        text.contains("MappedAddress = 198.18.62.10:40000"),
        "no valid answer:\n{text}"
    );
    assert!(text.contains("test I = 1"), "{text}");
}

/// The adaptive keep-alive against a real NAT whose UDP bindings expire
/// after 3 s (conntrack timeouts set in the NAT's namespace), with random
/// ports so an expired binding shows as a new mapped address.
#[test]
fn keepalive_learns_a_real_binding_lifetime() {
    if !require(
        "keepalive_learns_a_real_binding_lifetime",
        &["nft", "ss", "sysctl"],
    ) {
        return;
    }
    let t = topology(63);
    t.nat
        .nft(
            "flush ruleset\ntable ip nat {\n  chain postrouting {\n    type nat hook postrouting priority srcnat;\n    \
             oifname \"wan\" masquerade fully-random\n  }\n}\n",
        )
        .unwrap();
    for key in [
        "nf_conntrack_udp_timeout",
        "nf_conntrack_udp_timeout_stream",
    ] {
        t.nat
            .run_ok("sysctl", &["-qw", &format!("net.netfilter.{key}=3")])
            .unwrap();
    }
    let _server = t
        .public
        .spawn(
            example_bin("punch"),
            &["rendezvous", "--listen", "198.18.63.1:3478"],
        )
        .unwrap();
    assert!(listening(&t.public, "198.18.63.1:3478"));
    let out = t
        .host
        .run_ok(
            example_bin("stun"),
            &[
                "--bind",
                "10.63.0.2:5000",
                "198.18.63.1:3478",
                "--keepalive-secs",
                "18",
                "--keepalive-initial-ms",
                "1000",
                "--keepalive-min-ms",
                "500",
                "--keepalive-resolution-ms",
                "400",
            ],
        )
        .unwrap();
    println!("{out}");
    let last = out.lines().last().unwrap();
    let field = |key: &str| -> u64 {
        last.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    // It saw the binding expire, and settled on an interval that keeps it.
    assert!(field("changes=") >= 1, "{out}");
    let interval = field("interval_ms=");
    assert!((1000..3000).contains(&interval), "{out}");
    assert!(field("proven_ms=") < 3200, "{out}");
}
