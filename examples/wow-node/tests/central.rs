//! `[network] allocation = "central"` (root, network namespaces): one
//! designated node grants every address of the network through the
//! overlay, so nodes whose pools overlap never lease one address twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::{require, wait_until};

#[path = "support/host.rs"]
mod host;

use host::{BIN, Host};

/// busybox udhcpc on the node's TAP with client identifier `client_id`
/// (hex), not configuring the interface: the address it was offered and
/// acknowledged, if any.
fn udhcpc(h: &Host, client_id: &str) -> Option<String> {
    let out =
        h.ns.run(
            "timeout",
            &[
                "30",
                "busybox",
                "udhcpc",
                "-i",
                "wow0",
                "-f",
                "-q",
                "-n",
                "-t",
                "4",
                "-T",
                "2",
                "-s",
                "/bin/true",
                "-x",
                &format!("0x3d:{client_id}"),
            ],
        )
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lease = text
        .split("lease of ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string);
    assert_eq!(
        lease.is_some(),
        out.status.success(),
        "udhcpc's exit and output disagree: {text}"
    );
    lease
}

#[test]
fn the_allocator_grants_each_address_once_across_the_network() {
    if !require(
        "the_allocator_grants_each_address_once_across_the_network",
        &["dhclient", "busybox"],
    ) {
        return;
    }
    let mut a = Host::new("central-a", "alpha");
    let mut b = Host::new("central-b", "beta");
    a.ns.veth_to(&b.ns, "eth0", "eth0").unwrap();
    a.ns.addr_add("eth0", "10.9.0.1/24").unwrap();
    b.ns.addr_add("eth0", "10.9.0.2/24").unwrap();
    for h in [&a, &b] {
        h.ns.link_up("lo").unwrap();
    }
    // The allocator's own guest may take only .10; B's guests .10 or .11.
    a.write_config(
        &[],
        "10.9.0.1:4000",
        &[],
        "allocation = \"central\"\nallocator = \"self\"\npool = [\"10.128.9.10\", \"10.128.9.10\"]\n",
    );
    a.start(&[]);
    let allocator = a.overlay_address();
    b.write_config(
        &["10.9.0.1:4000"],
        "10.9.0.2:4000",
        &[],
        &format!(
            "allocation = \"central\"\nallocator = \"{allocator}\"\npool = [\"10.128.9.10\", \"10.128.9.11\"]\n"
        ),
    );
    b.start(&[]);
    assert!(
        wait_until(Duration::from_secs(20), || b.status_json()["joined"]
            .as_bool()
            .unwrap_or(false)),
        "B never joined:\n{}",
        b.log()
    );
    assert_eq!(a.dhcp(), "10.128.9.10");

    // Two clients behind B: the first gets the one address the allocator
    // has not granted; the second gets nothing (B's pool is spent), where
    // without the allocator one of them would have been given .10 again.
    let first = udhcpc(&b, "01aa0000000001");
    let second = udhcpc(&b, "01aa0000000002");
    assert_eq!(
        first.as_deref(),
        Some("10.128.9.11"),
        "first client behind B: {first:?}\nB:\n{}\nA:\n{}",
        b.log(),
        a.log()
    );
    assert_eq!(
        second,
        None,
        "second client behind B leased an address already granted:\n{}",
        b.log()
    );

    let status = a.status_json();
    assert_eq!(status["central_leases"], 2, "{status}");
    assert_eq!(status["allocator"], allocator.as_str(), "{status}");
    let status = b.status_json();
    assert_eq!(status["allocator"], allocator.as_str(), "{status}");
    assert!(status["central_leases"].is_null(), "{status}");
    assert!(b.status(false).contains("central allocation"));

    // The allocator crashes (SIGKILL) and restarts: the grants it answered
    // were on disk before the answers left, so a new client behind B still
    // gets nothing, and the table holds both addresses.
    a.node.take().unwrap().kill();
    a.start(&[]);
    assert_eq!(a.status_json()["central_leases"], 2, "{}", a.log());
    assert!(
        wait_until(Duration::from_secs(20), || b.status_json()["joined"]
            .as_bool()
            .unwrap_or(false)),
        "B lost the ring:\n{}",
        b.log()
    );
    assert_eq!(
        udhcpc(&b, "01aa0000000003"),
        None,
        "after the restart:\n{}",
        a.log()
    );

    a.release_dhcp();
    b.stop();
    a.stop();
}

#[test]
fn central_allocation_without_an_allocator_is_refused() {
    if !require("central_allocation_without_an_allocator_is_refused", &[]) {
        return;
    }
    let h = Host::new("central-bad", "alpha");
    for (extra, expect) in [
        ("allocation = \"central\"\n", "allocator"),
        (
            "allocation = \"central\"\nallocator = \"nobody\"\n",
            "nobody",
        ),
        (
            "allocation = \"dht\"\nallocator = \"self\"\n",
            "not \"central\"",
        ),
    ] {
        h.write_config(&[], "127.0.0.1:4000", &[], extra);
        let config = h.config_path();
        let mut cmd = h.ns.command("timeout");
        cmd.args(["10", BIN, "up", "--config", config.to_str().unwrap()]);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: started");
        assert_ne!(
            out.status.code(),
            Some(124),
            "{extra}: still running: {stderr}"
        );
        assert!(stderr.contains(expect), "{extra}: {stderr}");
    }
}
