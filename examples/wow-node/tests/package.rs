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

use std::os::unix::fs::PermissionsExt;

use wow_node::config::Config;
use wow_test_hosts::{Netns, Process, TempDir, require, wait_until};

#[path = "support/dhclient.rs"]
mod dhclient;

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
        "./lib/systemd/system/wow-node-confine.service",
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
    // The configuration may hold secrets: 0640 in the package, group
    // wow-node (a statoverride the postinst adds, kept on upgrades).
    let listed = contents
        .lines()
        .find(|l| l.ends_with(" ./etc/wow-node/node.toml"))
        .unwrap();
    assert!(listed.starts_with("-rw-r----- root/root"), "{listed}");
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    for line in [
        "dpkg-statoverride --update --add root wow-node 0640 /etc/wow-node/node.toml",
        "adduser --system --group --quiet --home /var/lib/wow-node --no-create-home wow-node",
        "chown -R wow-node:wow-node /var/lib/wow-node",
    ] {
        assert!(
            postinst.contains(line),
            "postinst lacks {line}:\n{postinst}"
        );
    }
    // The postinst never starts the node itself: the unit's conditions do.
    assert!(!postinst.contains("--now"), "{postinst}");
    for script in ["postinst", "prerm", "postrm"] {
        let ok = Command::new("sh")
            .arg("-n")
            .arg(control.path().join(script))
            .status()
            .unwrap();
        assert!(ok.success(), "{script} is not valid sh");
    }

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
    check_hardening(&unit);
    check_start_conditions(&unit);
    // The boot-time confinement unit: the rules alone, as the node's user,
    // before the network.
    let confine_unit =
        std::fs::read_to_string(r.join("lib/systemd/system/wow-node-confine.service")).unwrap();
    verify_unit(&confine_unit, &r.join("usr/bin/wow-node"));
    assert_eq!(
        values(&confine_unit, "ExecStart"),
        ["/usr/bin/wow-node confine --config /etc/wow-node/node.toml"]
    );
    assert_eq!(
        values(&confine_unit, "Before"),
        ["network-pre.target wow-node.service"]
    );
    assert_eq!(values(&confine_unit, "User"), ["wow-node"]);
    assert_eq!(
        values(&confine_unit, "CapabilityBoundingSet"),
        ["CAP_NET_ADMIN"]
    );
    let ifupdown = std::fs::read_to_string(r.join("etc/network/interfaces.d/wow0")).unwrap();
    assert!(ifupdown.contains("iface wow0 inet dhcp"));

    // As shipped, the node joins no stranger found on the LAN.
    let shipped_config = Config::load(&r.join("etc/wow-node/node.toml")).unwrap();
    assert!(!shipped_config.node.lan_discovery);

    // Run it as the unit would, in a namespace: as a user of its own (an
    // unnamed uid standing in for wow-node) holding CAP_NET_ADMIN and no
    // other capability, with no new privileges, on a root:group 0640
    // configuration; `--confine` on, so that nft runs with those rights
    // too. Only the state directory moves (the shipped one is the host's
    // /var/lib/wow-node).
    let state = TempDir::new("debstate").unwrap();
    let shipped = std::fs::read_to_string(r.join("etc/wow-node/node.toml")).unwrap();
    assert!(shipped.contains("state_dir = \"/var/lib/wow-node\""));
    let config = shipped.replace(
        "state_dir = \"/var/lib/wow-node\"",
        &format!("state_dir = \"{}\"", state.path().display()),
    ) + "\n[confine]\nenabled = true\n";
    let config_path = state.path().join("node.toml");
    std::fs::write(&config_path, config).unwrap();
    std::os::unix::fs::chown(state.path(), Some(NODE_UID), Some(NODE_UID)).unwrap();
    std::os::unix::fs::chown(&config_path, Some(0), Some(NODE_UID)).unwrap();
    std::fs::set_permissions(&config_path, PermissionsExt::from_mode(0o640)).unwrap();
    let ns = Netns::new("deb").unwrap();
    ns.link_up("lo").unwrap();
    let uid = NODE_UID.to_string();
    // /dev/net/tun is 0666 on Debian, not in every container: the node
    // gets a 0666 node of the same device, bound over it in the mount
    // namespace of `ip netns exec` (the host's stays as it is).
    let tun = state.path().join("tun");
    let made = Command::new("mknod")
        .args(["-m", "0666", tun.to_str().unwrap(), "c", "10", "200"])
        .status()
        .unwrap();
    assert!(made.success());
    let mut cmd = ns.command("sh");
    cmd.args([
        "-c",
        "mount --bind \"$0\" /dev/net/tun && exec \"$@\"",
        tun.to_str().unwrap(),
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        "--inh-caps=-all,+net_admin",
        "--ambient-caps=-all,+net_admin",
        "--bounding-set=-all,+net_admin",
        "--no-new-privs",
        "--",
    ])
    .arg(r.join(argv[0].trim_start_matches('/')));
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
    let (lease, addrs) = dhclient::lease_on_wow0(&ns, state.path());
    assert!(
        addrs.iter().any(|a| a.starts_with("10.128.")),
        "no lease on wow0: {addrs:?}\n{lease:?}\n{}",
        node.log()
    );
    let resolv = std::fs::read_to_string(ns.etc_dir().unwrap().join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.128.0.1"), "{resolv}");
    // It really runs as that user with that one capability, and its
    // confinement rules went in.
    // (`ip netns exec` and `setpriv` exec the node: one pid.)
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert!(
        field("Uid:").split_whitespace().all(|u| u == uid),
        "{status}"
    );
    assert_eq!(field("CapEff:"), "0000000000001000", "{status}");
    assert_eq!(field("CapBnd:"), "0000000000001000", "{status}");
    assert_eq!(field("NoNewPrivs:"), "1");
    let rules = ns
        .run_ok("nft", &["list", "table", "inet", "wow_confine_wow0"])
        .unwrap();
    assert!(rules.contains(&format!("meta skuid {uid}")), "{rules}");
    let _ = ns.run("nft", &["delete", "table", "inet", "wow_confine_wow0"]);
}

/// The uid (and gid) the packaged node runs as in the test: no name, no
/// home, no group memberships.
const NODE_UID: u32 = 64_917;

/// The unit's values for `key`, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// The unit runs as a dedicated user with CAP_NET_ADMIN only, a system
/// call filter and the kernel, system and namespaces closed to it.
fn check_hardening(unit: &str) {
    for (key, value) in [
        ("User", "wow-node"),
        ("Group", "wow-node"),
        ("CapabilityBoundingSet", "CAP_NET_ADMIN"),
        ("AmbientCapabilities", "CAP_NET_ADMIN"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "wow-node"),
        ("StateDirectoryMode", "0700"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "/dev/net/tun rw"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        ),
        ("MemoryMax", "512M"),
        ("RestartPreventExitStatus", "2"),
    ] {
        assert_eq!(values(unit, key), [value], "{key}");
    }
    let filters = values(unit, "SystemCallFilter");
    assert_eq!(filters[0], "@system-service");
    assert!(
        filters[1].starts_with("~@privileged @resources"),
        "{filters:?}"
    );
}

/// Whether the unit's `Condition*` lines hold when its paths lie under
/// `root` (`systemd-analyze condition`); `None` without systemd-analyze.
fn conditions_hold(unit: &str, root: &Path) -> Option<bool> {
    let conditions: Vec<String> = unit
        .lines()
        .filter(|l| l.starts_with("Condition"))
        .map(|l| l.replace("=|/", &format!("=|{}/", root.display())))
        .collect();
    assert!(!conditions.is_empty());
    let out = Command::new("systemd-analyze")
        .arg("condition")
        .args(&conditions)
        .output()
        .ok()?;
    Some(out.status.success())
}

/// The service does not start until the node is configured: a certificate
/// in the state directory, or the administrator's opt-in file.
fn check_start_conditions(unit: &str) {
    assert_eq!(
        values(unit, "ConditionPathExists"),
        ["|/var/lib/wow-node/node.pem", "|/etc/wow-node/configured"]
    );
    let root = TempDir::new("cond").unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("var/lib/wow-node")).unwrap();
    std::fs::create_dir_all(r.join("etc/wow-node")).unwrap();
    std::fs::write(r.join("etc/wow-node/node.toml"), "").unwrap();
    let Some(fresh) = conditions_hold(unit, r) else {
        eprintln!("skipping the condition check: no systemd-analyze");
        return;
    };
    assert!(!fresh, "a freshly installed node would start");
    std::fs::write(r.join("etc/wow-node/configured"), "").unwrap();
    assert_eq!(conditions_hold(unit, r), Some(true), "opt-in file");
    std::fs::remove_file(r.join("etc/wow-node/configured")).unwrap();
    std::fs::write(r.join("var/lib/wow-node/node.pem"), "").unwrap();
    assert_eq!(conditions_hold(unit, r), Some(true), "certificate");
}

#[test]
fn the_node_refuses_a_world_readable_config_holding_the_turn_password() {
    let dir = TempDir::new("cfgmode").unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!(
            // A listen address that is no host's: were the file accepted,
            // the node would stop at its socket, before any device.
            "[node]\nstate_dir = \"{}\"\nlisten = \"192.0.2.1:9\"\n\
             [turn]\nserver = \"192.0.2.1:3478\"\npassword = \"secret\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["up", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("turn.password"), "{stderr}");
    assert!(stderr.contains("0644"), "{stderr}");
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
