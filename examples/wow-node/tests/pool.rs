//! `[network] pool` (root, network namespaces): the guest's lease comes
//! from the node's range, whatever the allocation mode; a range outside
//! the network stops the node with an error that names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wow_test_hosts::require;

#[path = "support/host.rs"]
mod host;

use host::{BIN, Host};

#[test]
fn the_guest_is_leased_from_the_nodes_pool() {
    if !require("the_guest_is_leased_from_the_nodes_pool", &["dhclient"]) {
        return;
    }
    for allocation in ["local", "dht"] {
        let mut h = Host::new(&format!("pool-{allocation}"), "alpha");
        h.ns.link_up("lo").unwrap();
        h.write_config(
            &[],
            "127.0.0.1:4000",
            &[],
            &format!("allocation = \"{allocation}\"\npool = [\"10.128.9.10\", \"10.128.9.11\"]\n"),
        );
        h.start(&[]);
        let addr = h.dhcp();
        assert!(
            addr == "10.128.9.10" || addr == "10.128.9.11",
            "{allocation}: leased {addr}"
        );
        h.release_dhcp();
        h.stop();
    }
}

#[test]
fn a_pool_outside_the_network_is_refused() {
    if !require("a_pool_outside_the_network_is_refused", &[]) {
        return;
    }
    let h = Host::new("pool-bad", "alpha");
    h.write_config(
        &[],
        "127.0.0.1:4000",
        &[],
        "pool = [\"10.128.9.10\", \"10.129.0.1\"]\n",
    );
    let config = h.config_path();
    let mut cmd = h.ns.command("timeout");
    cmd.args(["10", BIN, "up", "--config", config.to_str().unwrap()]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a pool outside the network"
    );
    assert_ne!(
        out.status.code(),
        Some(124),
        "still running after 10 s: {stderr}"
    );
    assert!(
        stderr.contains("10.129.0.1"),
        "the error does not name the range: {stderr}"
    );
}
