//! The responder against the real Linux ARP stack: a TAP device in a network
//! namespace, `examples/arp-tap` attached to it inside the namespace, and the
//! kernel (ping, `ip neigh`) and iputils `arping` as the guest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::{Netns, Process, example_bin, require, wait_until};

const TAP: &str = "tap0";
const NETWORK: &str = "10.77.0.0/16";
const GUEST: &str = "10.77.0.2";
const GATEWAY: &str = "10.77.0.1";
const GATEWAY_MAC: &str = "02:77:6f:77:00:01";
const HELD: &str = "10.77.0.9";

/// A namespace whose TAP has the guest address, served by `arp-tap`.
struct Guest {
    // Field order: the process dies before its namespace.
    arp_tap: Process,
    ns: Netns,
}

impl Guest {
    fn new(arp_accept: bool) -> Guest {
        let ns = Netns::new("arp").unwrap();
        ns.add_tap(TAP).unwrap();
        ns.addr_add(TAP, &format!("{GUEST}/16")).unwrap();
        // With arp_accept=1 a gratuitous ARP creates a neighbour entry;
        // otherwise Linux ignores it for unknown addresses. Set it either
        // way: a new namespace inherits the host's IPv4 defaults.
        ns.run_ok(
            "sysctl",
            &[
                "-qw",
                &format!("net.ipv4.conf.{TAP}.arp_accept={}", u8::from(arp_accept)),
            ],
        )
        .unwrap();
        let arp_tap = ns
            .spawn(
                example_bin("arp-tap"),
                &[
                    "--tap",
                    TAP,
                    "--network",
                    NETWORK,
                    "--gateway-mac",
                    GATEWAY_MAC,
                    "--guest",
                    GUEST,
                    "--held",
                    HELD,
                    "--verbose",
                ],
            )
            .unwrap();
        let guest = Guest { arp_tap, ns };
        assert!(
            wait_until(Duration::from_secs(15), || guest
                .arp_tap
                .log()
                .contains("ready")),
            "arp-tap did not start:\n{}",
            guest.arp_tap.log()
        );
        guest
    }

    /// The link-layer address the kernel has for `addr` on the TAP, if any.
    fn neighbour(&self, addr: &str) -> Option<String> {
        let out = self
            .ns
            .ip(&["neigh", "show", "to", addr, "dev", TAP])
            .unwrap();
        let mut words = out.split_whitespace();
        words.position(|w| w == "lladdr")?;
        words.next().map(str::to_string)
    }

    /// `arping` the address from the TAP; returns (exit success, output).
    fn arping(&self, args: &[&str]) -> (bool, String) {
        let mut full = vec!["-I", TAP];
        full.extend_from_slice(args);
        let out = self.ns.run("arping", &full).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

fn replies(arping_output: &str) -> u32 {
    arping_output
        .lines()
        .find_map(|l| l.strip_prefix("Received "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn kernel_resolves_virtual_addresses_to_gateway_mac() {
    if !require(
        "kernel_resolves_virtual_addresses_to_gateway_mac",
        &["ping", "sysctl"],
    ) {
        return;
    }
    let guest = Guest::new(false);
    // Route an outside network onto the TAP too, so the kernel does ask for
    // it (and must get no answer).
    guest
        .ns
        .ip(&["route", "add", "192.168.77.0/24", "dev", TAP])
        .unwrap();

    let virtual_addrs = [GATEWAY, "10.77.3.4", "10.77.200.17", "10.77.255.254"];
    for addr in virtual_addrs {
        assert_eq!(
            guest.neighbour(addr),
            None,
            "{addr} resolved before traffic"
        );
        // Nobody answers the echo; the ping only makes the kernel resolve.
        guest.ns.run("ping", &["-c1", "-W1", addr]).unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || guest.neighbour(addr).as_deref()
                == Some(GATEWAY_MAC)),
            "{addr} not resolved to the gateway MAC: {:?}\n{}",
            guest.ns.ip(&["neigh"]).unwrap(),
            guest.arp_tap.log()
        );
    }

    let outside = "192.168.77.5";
    guest.ns.run("ping", &["-c1", "-W2", outside]).unwrap();
    // The kernel gives up after its probes (INCOMPLETE, then FAILED); it never
    // learns a link-layer address.
    assert_eq!(guest.neighbour(outside), None);
    let log = guest.arp_tap.log();
    assert!(
        log.contains(&format!("OutsideNetwork({outside})")),
        "arp-tap never saw the request for {outside}:\n{log}"
    );
}

#[test]
fn arping_gets_replies_inside_the_network_only() {
    if !require(
        "arping_gets_replies_inside_the_network_only",
        &["arping", "sysctl"],
    ) {
        return;
    }
    let guest = Guest::new(false);

    for addr in ["10.77.42.42", GATEWAY] {
        let (ok, out) = guest.arping(&["-c2", "-w5", addr]);
        assert!(ok, "arping {addr} failed:\n{out}");
        assert!(replies(&out) >= 1, "no replies for {addr}:\n{out}");
        assert!(
            out.to_lowercase().contains(GATEWAY_MAC),
            "{addr} not answered with the gateway MAC:\n{out}"
        );
    }

    // Outside the network: no reply at all.
    let (ok, out) = guest.arping(&["-c2", "-w2", "192.168.9.9"]);
    assert!(!ok, "arping outside the network succeeded:\n{out}");
    assert_eq!(replies(&out), 0, "{out}");
}

#[test]
fn duplicate_address_detection_sees_held_addresses_only() {
    if !require(
        "duplicate_address_detection_sees_held_addresses_only",
        &["arping", "sysctl"],
    ) {
        return;
    }
    let guest = Guest::new(false);

    // RFC 5227 probe (arping -D: sender 0.0.0.0) for an address another
    // virtual host holds: answered, so arping reports a duplicate (exit 1).
    let (ok, out) = guest.arping(&["-D", "-c2", "-w3", HELD]);
    assert!(!ok, "probe for held {HELD} got no answer:\n{out}");
    assert!(replies(&out) >= 1, "{out}");
    assert!(
        wait_until(Duration::from_secs(5), || guest
            .arp_tap
            .log()
            .contains(&format!("claims {HELD} (Probe)"))),
        "no conflict reported:\n{}",
        guest.arp_tap.log()
    );

    // A free address: silence, so the guest may take it (exit 0).
    let (ok, out) = guest.arping(&["-D", "-c2", "-w2", "10.77.0.10"]);
    assert!(ok, "probe for a free address was answered:\n{out}");
    assert_eq!(replies(&out), 0, "{out}");
}

#[test]
fn gateway_announced_on_start() {
    if !require("gateway_announced_on_start", &["sysctl"]) {
        return;
    }
    let guest = Guest::new(true);
    // No traffic from the guest: the entry comes from the gratuitous ARP.
    assert!(
        wait_until(Duration::from_secs(5), || guest
            .neighbour(GATEWAY)
            .as_deref()
            == Some(GATEWAY_MAC)),
        "gateway not announced: {:?}\n{}",
        guest.ns.ip(&["neigh"]).unwrap(),
        guest.arp_tap.log()
    );
    assert_eq!(guest.neighbour("10.77.3.4"), None);
}
