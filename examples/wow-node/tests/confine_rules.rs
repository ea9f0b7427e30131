//! The nftables script `wow-node up --confine` installs, checked as text
//! (no root, no nft): what it lets out, what it drops, and that a TAP name
//! cannot break out of its string. `tests/confine.rs` runs it for real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wow_node::config::Config;
use wow_node::confine::ruleset;

fn config(text: &str) -> Config {
    toml::from_str(text).unwrap()
}

#[test]
fn listed_ports_pass_only_as_replies() {
    let r = ruleset(&config("[confine]\nallow_tcp_ports = [22, 8080]\n"), 999);
    assert!(r.contains("tcp sport { 22, 8080 } ct direction reply accept"));
    // No rule lets the host open a connection to a listed port.
    assert!(!r.contains("dport { 22"), "{r}");
    assert!(!r.contains("ct direction original"), "{r}");
    assert!(r.contains("meta skuid 999 udp sport 4000 accept"), "{r}");
    assert!(r.contains("policy drop;"), "{r}");
}

#[test]
fn one_inet_table_replaced_in_one_transaction() {
    let r = ruleset(&config("[tap]\nname = \"wow-1\"\n"), 0);
    let t = "wow_confine_wow_1";
    assert!(r.starts_with(&format!(
        "table inet {t} {{\n}}\ndelete table inet {t}\ntable inet {t} {{"
    )));
    assert!(!r.contains("table ip "), "{r}");
    assert!(r.contains("iifname \"wow-1\" counter drop"), "{r}");
    assert!(r.contains("oifname \"wow-1\" counter drop"), "{r}");
    // Forwarding from the TAP is dropped whatever the address family.
    assert!(!r.contains("ip daddr != "), "{r}");
}

#[test]
fn lan_discovery_only_when_used() {
    let off = ruleset(&config("[node]\nlan_discovery = false\n"), 5);
    assert!(!off.contains("239.255.77.119"), "{off}");
    let on = ruleset(&config("[node]\nlan_discovery = true\n"), 5);
    assert!(on.contains("meta skuid 5 ip daddr 239.255.77.119 udp dport 4099 accept"));
}

#[test]
fn interface_names_cannot_escape_the_string() {
    let r = ruleset(&config("[tap]\nname = \"a\\\"b\\\\c\\n\"\n"), 0);
    assert!(r.contains("oifname \"a_b_c_\" accept"), "{r}");
    assert!(r.contains("table inet wow_confine_a_b_c_ {"), "{r}");
}
