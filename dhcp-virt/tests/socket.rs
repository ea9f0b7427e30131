//! Socket-hosted DHCP: the `dhcp-socket` example (dhcp-virt's message API
//! on an ordinary UDP socket) serves busybox udhcpc across a veth pair
//! between two network namespaces. The OFFER and the first ACK must be
//! broadcast (the client holds no address yet), the renewal's ACK is
//! unicast, and a RELEASE reaches the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{hook_applied, udhcpc_script};
use wow_test_hosts::{Netns, TempDir, example_bin, require, unique_name, wait_until};

#[test]
fn udhcpc_gets_renews_and_releases_a_lease_from_a_socket_hosted_server() {
    if !require(
        "udhcpc_gets_renews_and_releases_a_lease_from_a_socket_hosted_server",
        &["busybox", "timeout"],
    ) {
        return;
    }
    let (server_ns, client_ns) = (Netns::new("ds").unwrap(), Netns::new("dc").unwrap());
    let (server_if, client_if) = (unique_name("ds"), unique_name("dc"));
    server_ns
        .veth_to(&client_ns, &server_if, &client_if)
        .unwrap();
    server_ns.addr_add(&server_if, "10.78.0.1/24").unwrap();
    let dir = TempDir::new("ds").unwrap();
    let script = udhcpc_script(dir.path());

    let server = server_ns
        .spawn(
            example_bin("dhcp-socket"),
            &[
                "--interface",
                &server_if,
                "--network",
                "10.78.0.0/24",
                "--server-addr",
                "10.78.0.1",
                "--lease-secs",
                "30",
                "--pool",
                "10.78.0.100-10.78.0.150",
            ],
        )
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || server.log().contains("serving")),
        "dhcp-socket did not start: {}",
        server.log()
    );

    // A daemon that keeps renewing (udhcpc treats a 30 s lease as T1 = 15 s).
    let mut client = client_ns
        .spawn(
            "busybox",
            &[
                "udhcpc", "-f", "-i", &client_if, "-s", &script, "-t", "5", "-T", "1",
            ],
        )
        .unwrap();
    let addr = || {
        client_ns
            .ipv4_addrs(&client_if)
            .unwrap()
            .first()
            .map(|a| a.split('/').next().unwrap().to_string())
    };
    // The hook has finished, not just set the address.
    assert!(
        wait_until(Duration::from_secs(15), || addr()
            .is_some_and(|a| client.log().contains(&hook_applied("bound", &a)))),
        "no address:\n{}\n{}",
        client.log(),
        server.log()
    );
    let leased = addr().unwrap();
    assert!(leased.starts_with("10.78.0.1"), "{leased}");
    // The server prints the lease just after sending the ACK: the client
    // may have applied it before.
    assert!(
        wait_until(Duration::from_secs(5), || server
            .log()
            .contains(&format!("leased {leased}"))),
        "{}",
        server.log()
    );

    // The renewal is unicast from the client and answered by unicast.
    assert!(
        wait_until(Duration::from_secs(25), || server
            .log()
            .contains(&format!("renewed {leased}"))),
        "no renewal:\n{}\n{}",
        client.log(),
        server.log()
    );
    assert!(
        client.log().contains("lease of") && !client.log().contains("NAK"),
        "{}",
        client.log()
    );

    // SIGUSR2: release.
    client_ns
        .run_ok("kill", &["-USR2", &client.id().to_string()])
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log()
            .contains(&format!("released {leased}"))),
        "no release:\n{}",
        server.log()
    );
    client.kill();
}
