//! The Debian package: `scripts/package-deb.sh` builds it from this
//! binary; its contents, metadata and conffiles are what the script
//! promises; and the node it installs, started with the shipped unit's
//! command line and the shipped configuration, gives the host's own ISC
//! dhclient (what the shipped ifupdown snippet runs on `wow0`) a lease and
//! a resolver, in a network namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wow_test_hosts::{Netns, Process, TempDir, require, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_wow-node");

fn dpkg_deb(args: &[&str]) -> String {
    let out = Command::new("dpkg-deb").args(args).output().unwrap();
    assert!(out.status.success(), "dpkg-deb {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_package_installs_a_node_that_leases_an_address_to_its_host() {
    if !require(
        "the_package_installs_a_node_that_leases_an_address_to_its_host",
        &["dpkg-deb", "dhclient"],
    ) {
        return;
    }
    let out = TempDir::new("deb").unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package-deb.sh");
    let built = Command::new("bash")
        .arg(&script)
        .arg(out.path())
        .env("BIN", BIN)
        .env("COMPRESS", "none")
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let deb = String::from_utf8(built.stdout).unwrap().trim().to_string();
    let deb = deb.lines().last().unwrap();
    assert!(deb.ends_with(".deb"), "{deb}");

    assert_eq!(dpkg_deb(&["-f", deb, "Package"]).trim(), "wow-node");
    assert_eq!(
        dpkg_deb(&["-f", deb, "Version"]).trim(),
        env!("CARGO_PKG_VERSION")
    );
    let contents = dpkg_deb(&["-c", deb]);
    for path in [
        "./usr/bin/wow-node",
        "./lib/systemd/system/wow-node.service",
        "./etc/wow-node/node.toml",
        "./etc/network/interfaces.d/wow0",
        "./etc/systemd/network/60-wow0.network",
        "./usr/share/doc/wow-node/copyright",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }
    let root = TempDir::new("debroot").unwrap();
    let r = root.path();
    dpkg_deb(&["-x", deb, r.to_str().unwrap()]);
    let control = TempDir::new("debctl").unwrap();
    dpkg_deb(&["-e", deb, control.path().to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert!(conffiles.lines().any(|l| l == "/etc/wow-node/node.toml"));

    // The unit starts the packaged binary on the packaged configuration.
    let unit = std::fs::read_to_string(r.join("lib/systemd/system/wow-node.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/bin/wow-node");
    let config_at = argv.iter().position(|a| *a == "--config").unwrap() + 1;
    assert_eq!(argv[config_at], "/etc/wow-node/node.toml");
    verify_unit(&unit, &r.join("usr/bin/wow-node"));
    let ifupdown = std::fs::read_to_string(r.join("etc/network/interfaces.d/wow0")).unwrap();
    assert!(ifupdown.contains("iface wow0 inet dhcp"));

    // Run it as the unit would, in a namespace; only the state directory
    // moves (the shipped one is the host's /var/lib/wow-node).
    let state = TempDir::new("debstate").unwrap();
    let shipped = std::fs::read_to_string(r.join("etc/wow-node/node.toml")).unwrap();
    assert!(shipped.contains("state_dir = \"/var/lib/wow-node\""));
    let config = shipped.replace(
        "state_dir = \"/var/lib/wow-node\"",
        &format!("state_dir = \"{}\"", state.path().display()),
    );
    let config_path = state.path().join("node.toml");
    std::fs::write(&config_path, config).unwrap();
    let ns = Netns::new("deb").unwrap();
    ns.link_up("lo").unwrap();
    let mut cmd = ns.command(r.join(argv[0].trim_start_matches('/')));
    for (i, a) in argv[1..].iter().enumerate() {
        cmd.arg(if i + 1 == config_at {
            config_path.to_str().unwrap()
        } else {
            a
        });
    }
    let node = Process::spawn(cmd).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || ns
            .run_ok("ip", &["link", "show", "wow0"])
            .is_ok_and(|s| s.contains("UP"))),
        "TAP never came up:\n{}",
        node.log()
    );
    ns.set_resolv_conf("").unwrap();
    let leases = state.path().join("dhclient.leases");
    let pid = state.path().join("dhclient.pid");
    let lease = ns.run(
        "timeout",
        &[
            "30",
            "dhclient",
            "-1",
            "-4",
            "-lf",
            leases.to_str().unwrap(),
            "-pf",
            pid.to_str().unwrap(),
            "wow0",
        ],
    );
    if let Ok(p) = std::fs::read_to_string(&pid) {
        let _ = Command::new("kill").arg(p.trim()).status();
    }
    let addrs = ns.ipv4_addrs("wow0").unwrap();
    assert!(
        addrs.iter().any(|a| a.starts_with("10.128.")),
        "no lease on wow0: {addrs:?}\n{lease:?}\n{}",
        node.log()
    );
    let resolv = std::fs::read_to_string(ns.etc_dir().unwrap().join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.128.0.1"), "{resolv}");
}

/// `systemd-analyze verify` on the unit, pointed at the extracted binary:
/// every directive known to this systemd, the command executable.
fn verify_unit(unit: &str, binary: &Path) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        wow_test_hosts::skip("the unit check", "`systemd-analyze` is not installed");
        return;
    }
    let dir = TempDir::new("unit").unwrap();
    let path = dir.path().join("wow-node.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/wow-node", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Unknown"), "{text}");
}
