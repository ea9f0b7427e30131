//! Namespace testbed: a public network with a rendezvous and a second
//! observer, and private hosts each behind its own Linux NAT (nftables),
//! on separate private networks. Every case runs `examples/punch.rs` on
//! both hosts and checks the path chosen, the NAT classification, and
//! prints the time to first packet; one runs `examples/punch_agent.rs`
//! (the punch `Agent` over real sockets) instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::{Netns, Process, TempDir, example_bin, require, wait_until};

const RENDEZVOUS: &str = "198.18.0.1:3478";
const OBSERVER: &str = "198.18.0.2:3478";
const PORT: u16 = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// Endpoint-independent mapping (port preserved), address-and-port-
    /// dependent filtering: Linux conntrack as most home routers use it.
    Cone,
    /// Endpoint-independent mapping and filtering: cone plus a forward of
    /// the host's port ("full cone").
    FullCone,
    /// A new random port for every destination.
    Symmetric,
}

fn ruleset(nat: Nat, host: &str) -> String {
    let masquerade = match nat {
        Nat::Cone | Nat::FullCone => "masquerade persistent",
        Nat::Symmetric => "masquerade fully-random",
    };
    let forward = match nat {
        Nat::FullCone => format!(
            "chain prerouting {{ type nat hook prerouting priority dstnat; \
             iifname \"wan\" udp dport {PORT} dnat to {host}; }}"
        ),
        _ => String::new(),
    };
    // Unsolicited packets to the router itself are dropped before conntrack
    // confirms them, so they leave no entry that would steal the port.
    format!(
        "table ip nat {{
            chain postrouting {{ type nat hook postrouting priority srcnat; oifname \"wan\" {masquerade}; }}
            {forward}
        }}
        table inet filter {{
            chain input {{ type filter hook input priority filter; iifname \"wan\" ct state new drop; }}
        }}"
    )
}

struct Site {
    _nat: Netns,
    host: Netns,
}

struct Public {
    ns: Netns,
    _rendezvous: Process,
    _observer: Process,
}

fn public() -> Public {
    let ns = Netns::new("pub").unwrap();
    ns.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    ns.link_up("br0").unwrap();
    ns.addr_add("br0", "198.18.0.1/24").unwrap();
    ns.addr_add("br0", "198.18.0.2/24").unwrap();
    let bin = example_bin("punch");
    let rendezvous = ns
        .spawn(
            &bin,
            &[
                "rendezvous",
                "--listen",
                RENDEZVOUS,
                "--alternate-port",
                "3479",
            ],
        )
        .unwrap();
    let observer = ns
        .spawn(&bin, &["rendezvous", "--listen", OBSERVER])
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        let out = ns.run_ok("ss", &["-Hlun"]).unwrap_or_default();
        out.contains(RENDEZVOUS) && out.contains(OBSERVER)
    }));
    Public {
        ns,
        _rendezvous: rendezvous,
        _observer: observer,
    }
}

fn site(public: &Public, index: u8, nat: Nat) -> Site {
    let router = Netns::new("nat").unwrap();
    let host = Netns::new("h").unwrap();
    let port = format!("p{index}");
    public.ns.veth_to(&router, &port, "wan").unwrap();
    public
        .ns
        .ip(&["link", "set", &port, "master", "br0"])
        .unwrap();
    router
        .addr_add("wan", &format!("198.18.0.{}/24", 10 + index))
        .unwrap();
    router.veth_to(&host, "lan", "eth0").unwrap();
    router
        .addr_add("lan", &format!("10.{index}.0.1/24"))
        .unwrap();
    host.addr_add("eth0", &format!("10.{index}.0.2/24"))
        .unwrap();
    host.default_route(&format!("10.{index}.0.1")).unwrap();
    router.enable_forwarding().unwrap();
    router
        .nft(&ruleset(nat, &format!("10.{index}.0.2")))
        .unwrap();
    Site { _nat: router, host }
}

struct Result {
    path: String,
    stats: String,
    time_ms: u64,
    nat_line: String,
    log: String,
}

fn run_case(public: &Public, index: u8, a: Nat, b: Nat, extra: &[&str]) -> (Result, Result) {
    let sa = site(public, index, a);
    let sb = site(public, index + 1, b);
    let bin = example_bin("punch");
    let connect = |site: &Site, i: u8, id: &str, peer: &str| {
        let bind = format!("10.{i}.0.2:{PORT}");
        let mut args = vec![
            "connect",
            "--bind",
            &bind,
            "--rendezvous",
            RENDEZVOUS,
            "--stun",
            OBSERVER,
            "--id",
            id,
            "--peer",
            peer,
            "--timeout",
            "15",
            "--punch-timeout",
            "2",
        ];
        args.extend_from_slice(extra);
        site.host.spawn(&bin, &args).unwrap()
    };
    let (ida, idb) = (format!("a{index}"), format!("b{index}"));
    let mut pa = connect(&sa, index, &ida, &idb);
    let mut pb = connect(&sb, index + 1, &idb, &ida);
    let finish = |p: &mut Process| -> Result {
        let status = p.wait_timeout(Duration::from_secs(20)).unwrap();
        let log = p.log();
        assert!(
            status.is_some_and(|s| s.success()),
            "connect failed ({status:?}):\n{log}"
        );
        let last = log.lines().last().unwrap_or_default().to_string();
        let mut path = String::new();
        let mut time_ms = 0;
        for field in last.split_whitespace() {
            if let Some(v) = field.strip_prefix("path=") {
                path = v.to_string();
            } else if let Some(v) = field.strip_prefix("time_ms=") {
                time_ms = v.parse().unwrap();
            }
        }
        assert!(!path.is_empty(), "bad last line {last:?}:\n{log}");
        let nat_line = log
            .lines()
            .find(|l| l.starts_with("nat "))
            .unwrap_or_default()
            .to_string();
        let stats = log
            .lines()
            .find(|l| l.starts_with("probes_sent="))
            .unwrap_or_default()
            .to_string();
        Result {
            path,
            stats,
            time_ms,
            nat_line,
            log,
        }
    };
    let ra = finish(&mut pa);
    let rb = finish(&mut pb);
    if std::env::var_os("PUNCH_LOGS").is_some() {
        println!("--- a\n{}--- b\n{}", ra.log, rb.log);
    }
    println!(
        "{a:?} <-> {b:?}: a path={} time_ms={} | b path={} time_ms={}",
        ra.path, ra.time_ms, rb.path, rb.time_ms
    );
    (ra, rb)
}

fn assert_nat(r: &Result, nat: Nat) {
    let (mapping, filtering) = match nat {
        Nat::Cone => ("EndpointIndependent", "AddressAndPortDependent"),
        Nat::FullCone => ("EndpointIndependent", "PortIndependent"),
        Nat::Symmetric => ("EndpointDependent", "AddressAndPortDependent"),
    };
    assert!(
        r.nat_line.contains(&format!("mapping={mapping}"))
            && r.nat_line.contains(&format!("filtering={filtering}")),
        "{nat:?} classified as {:?}:\n{}",
        r.nat_line,
        r.log
    );
}

#[test]
fn punch_through_linux_nats() {
    if !require("punch_through_linux_nats", &["nft", "ss"]) {
        return;
    }
    let public = public();
    let cases = [
        (Nat::Cone, Nat::Cone, "direct"),
        (Nat::FullCone, Nat::Symmetric, "direct"),
        (Nat::Cone, Nat::Symmetric, "relay"),
        (Nat::Symmetric, Nat::Symmetric, "relay"),
    ];
    for (i, (a, b, expected)) in cases.into_iter().enumerate() {
        let index = 1 + 2 * u8::try_from(i).unwrap();
        let (ra, rb) = run_case(&public, index, a, b, &[]);
        assert_nat(&ra, a);
        assert_nat(&rb, b);
        assert_eq!(
            ra.path, expected,
            "{a:?} side of {a:?}<->{b:?}:\n{}",
            ra.log
        );
        assert_eq!(
            rb.path, expected,
            "{b:?} side of {a:?}<->{b:?}:\n{}",
            rb.log
        );
    }
}

/// Relay first, then upgrade to the punched path: frames arrive over both
/// and none is missing.
#[test]
fn relay_then_upgrade_to_direct() {
    if !require("relay_then_upgrade_to_direct", &["nft", "ss"]) {
        return;
    }
    let public = public();
    let (ra, rb) = run_case(
        &public,
        1,
        Nat::Cone,
        Nat::Cone,
        &["--relay-first", "--punch-delay-ms", "400", "--packets", "8"],
    );
    for r in [&ra, &rb] {
        assert_eq!(r.path, "direct", "{}", r.log);
        assert!(r.stats.contains(" gaps=0 "), "{}", r.log);
        let count = |key: &str| -> u64 {
            r.stats
                .split_whitespace()
                .find_map(|f| f.strip_prefix(key))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(count("frames_direct=") > 0, "{}", r.log);
        println!("upgrade: {}", r.stats);
    }
    // At least one side heard the peer through the relay before the upgrade.
    assert!(
        [&ra, &rb]
            .iter()
            .any(|r| !r.stats.contains("frames_relay=0 ")),
        "{}\n{}",
        ra.log,
        rb.log
    );
}

/// Symmetric NATs on both sides and a TURN server (coturn, long-term
/// credentials) configured: the relay path goes through TURN.
#[test]
fn symmetric_pair_relays_through_coturn() {
    if !require(
        "symmetric_pair_relays_through_coturn",
        &["nft", "ss", "turnserver"],
    ) {
        return;
    }
    let public = public();
    public.ns.addr_add("br0", "198.18.0.3/24").unwrap();
    // coturn's database and pid file stay out of /var.
    let scratch = TempDir::new("trn").unwrap();
    let _coturn = public
        .ns
        .spawn_coturn("198.18.0.3", "alice:secret", scratch.path())
        .unwrap();
    let (ra, rb) = run_case(
        &public,
        1,
        Nat::Symmetric,
        Nat::Symmetric,
        &[
            "--turn",
            "198.18.0.3:3478",
            "--turn-user",
            "alice",
            "--turn-password",
            "secret",
        ],
    );
    for r in [&ra, &rb] {
        assert_eq!(r.path, "relay", "{}", r.log);
        assert!(r.stats.contains("relay=turn"), "{}", r.log);
        assert!(r.stats.contains(" gaps=0 "), "{}", r.log);
        assert!(r.log.contains("turn relayed=198.18.0.3:"), "{}", r.log);
    }
}

/// Proof of reuse: two `punch_agent` processes, each behind its own Linux
/// NAT, punch a direct path with `nat_traversal::agent::Agent` and exchange
/// datagrams on it.
#[test]
fn agent_punches_between_two_processes_behind_nats() {
    if !require(
        "agent_punches_between_two_processes_behind_nats",
        &["nft", "ss"],
    ) {
        return;
    }
    let public = public();
    let bin = example_bin("punch_agent");
    for (index, a, b) in [
        (21, Nat::Cone, Nat::Cone),
        (23, Nat::FullCone, Nat::Symmetric),
    ] {
        let sa = site(&public, index, a);
        let sb = site(&public, index + 1, b);
        let spawn = |site: &Site, i: u8, id: &str, peer: &str| {
            let bind = format!("10.{i}.0.2:{PORT}");
            let args = [
                "--bind",
                &bind,
                "--rendezvous",
                RENDEZVOUS,
                "--id",
                id,
                "--peer",
                peer,
                "--timeout",
                "15",
            ];
            site.host.spawn(&bin, &args).unwrap()
        };
        let (ida, idb) = (format!("a{index}"), format!("b{index}"));
        let mut pa = spawn(&sa, index, &ida, &idb);
        let mut pb = spawn(&sb, index + 1, &idb, &ida);
        for (p, nat) in [(&mut pa, a), (&mut pb, b)] {
            let status = p.wait_timeout(Duration::from_secs(20)).unwrap();
            let log = p.log();
            assert!(
                status.is_some_and(|s| s.success()),
                "{a:?}<->{b:?}: {nat:?} side failed ({status:?}):\n{log}"
            );
            let last = log.lines().last().unwrap_or_default();
            assert!(last.starts_with("path=direct "), "{last:?}:\n{log}");
            if std::env::var_os("PUNCH_LOGS").is_some() {
                println!("--- {nat:?}\n{log}");
            }
            println!("{a:?} <-> {b:?}, {nat:?} side: {last}");
        }
    }
}
