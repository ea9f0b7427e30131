//! Split DNS through real tools (root, network namespaces): a guest gets
//! its lease from its node by ISC dhclient, then `dig` and glibc's
//! `getent hosts` resolve names of the virtual zone locally and every other
//! name through the node from a dnsmasq upstream on the underlay, over UDP
//! and TCP; the node's cache answers while the upstream is gone; a
//! confined host gets REFUSED instead (no way out through DNS).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::{Netns, Process, require, wait_until};

#[path = "support/host.rs"]
mod host;

use host::Host;

const UPSTREAM: &str = "192.0.2.53";

/// dnsmasq in `ns` on UPSTREAM: `www.example.test` A 192.0.2.80 (TTL
/// 300), a TXT record too large for a 512-octet UDP answer, nothing else
/// (no /etc/hosts, no upstream of its own).
fn dnsmasq(ns: &Netns) -> Process {
    let mut txt = String::from("big.example.test");
    for i in 0..12 {
        txt += &format!(",{i:0>60}");
    }
    let args = [
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        &format!("--listen-address={UPSTREAM}"),
        "--local-ttl=300",
        "--local=/example.test/",
        "--address=/www.example.test/192.0.2.80",
        &format!("--txt-record={txt}"),
        "--log-queries",
        "--log-facility=-",
        "--pid-file=",
        "--user=root",
    ];
    ns.spawn("dnsmasq", &args).unwrap()
}

fn dig(h: &Host, args: &[&str]) -> String {
    let mut all = vec!["+time=3", "+tries=1", "@10.128.0.1"];
    all.extend_from_slice(args);
    h.ns.run("dig", &all)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A node alone in `h`, reaching the upstream's namespace over a veth;
/// `dns` is its `[dns]`/`[confine]` configuration.
fn node(tag: &str, name: &'static str, upstream: &Netns, extra: &str) -> Host {
    let mut h = Host::new(tag, name);
    h.ns.veth_to(upstream, "up0", "dn0").unwrap();
    h.ns.addr_add("up0", "192.0.2.2/24").unwrap();
    h.ns.link_up("up0").unwrap();
    h.write_config(&[], "192.0.2.2:4000", &[], extra);
    h.start(&[]);
    h
}

#[test]
fn names_outside_the_zone_resolve_through_the_upstream() {
    if !require(
        "names_outside_the_zone_resolve_through_the_upstream",
        &["dhclient", "getent", "dig", "dnsmasq", "nft"],
    ) {
        return;
    }
    let up = Netns::new("sdns-up").unwrap();
    let mut h = node(
        "sdns-a",
        "alpha",
        &up,
        &format!("[dns]\nupstream = [\"{UPSTREAM}:53\"]\n"),
    );
    up.addr_add("dn0", &format!("{UPSTREAM}/24")).unwrap();
    up.link_up("dn0").unwrap();
    let mut upstream = dnsmasq(&up);
    let addr = h.dhcp();

    // The zone, locally; the rest, upstream — by dig and through glibc.
    let own = dig(&h, &["+short", "alpha.wow.internal"]);
    assert_eq!(own.trim(), addr, "the zone: {own}");
    let www = dig(&h, &["+short", "www.example.test"]);
    assert_eq!(
        www.trim(),
        "192.0.2.80",
        "dig through the node: {www}\n{}\nnode log:\n{}",
        upstream.log(),
        h.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || h
            .resolve("www.example.test")
            .as_deref()
            == Some("192.0.2.80")),
        "getent through the node"
    );
    // Not there upstream either: NXDOMAIN passed on, not REFUSED.
    let none = dig(&h, &["nothere.example.test"]);
    assert!(none.contains("status: NXDOMAIN"), "{none}");

    // Too large for UDP: dig gets TC from the node and asks over TCP; the
    // node asks dnsmasq over TCP.
    let big = dig(&h, &["+short", "+ignore", "big.example.test", "TXT"]);
    assert!(
        big.is_empty() || big.lines().count() <= 1,
        "TC expected: {big}"
    );
    let big = dig(&h, &["+short", "+tcp", "big.example.test", "TXT"]);
    assert!(
        big.contains(&format!("{:0>60}", 11)),
        "TXT over TCP: {big}\n{}",
        upstream.log()
    );

    // The upstream goes away: the cached answer still comes, its TTL aged.
    upstream.kill();
    let cached = dig(&h, &["+noall", "+answer", "www.example.test"]);
    let ttl: u32 = cached
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("from the cache: {cached:?}"));
    assert!(ttl <= 300 && cached.contains("192.0.2.80"), "{cached}");
    // And an uncached name: SERVFAIL after the node's deadline.
    let gone = dig(&h, &["other.example.test"]);
    assert!(gone.contains("status: SERVFAIL"), "{gone}");

    let status = h.status_json();
    assert!(status["dns_forwards"].as_u64().unwrap() >= 3, "{status}");
    assert!(
        status["dns_forward_cache_hits"].as_u64().unwrap() >= 1,
        "{status}"
    );
    h.release_dhcp();
    h.stop();
}

#[test]
fn attack_a_confined_host_gets_no_way_out_through_dns() {
    if !require(
        "attack_a_confined_host_gets_no_way_out_through_dns",
        &["dhclient", "dig", "dnsmasq", "nft"],
    ) {
        return;
    }
    let up = Netns::new("sdns-cup").unwrap();
    let mut h = node(
        "sdns-c",
        "alpha",
        &up,
        &format!("[dns]\nupstream = [\"{UPSTREAM}:53\"]\n[confine]\nenabled = true\n"),
    );
    up.addr_add("dn0", &format!("{UPSTREAM}/24")).unwrap();
    up.link_up("dn0").unwrap();
    let mut upstream = dnsmasq(&up);
    let _ = h.dhcp();
    let www = dig(&h, &["www.example.test"]);
    assert!(www.contains("status: REFUSED"), "{www}");
    assert!(
        !upstream.log().contains("www.example.test"),
        "the query left: {}",
        upstream.log()
    );
    assert!(h.log().contains("split DNS off"), "{}", h.log());
    upstream.kill();
    h.release_dhcp();
    h.stop();
    let _ =
        h.ns.run("nft", &["delete", "table", "inet", "wow_confine_wow0"]);
}
