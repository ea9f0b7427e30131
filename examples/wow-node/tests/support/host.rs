//! A host in a network namespace running `wow-node up`, its guest (the
//! namespace itself) on TAP `wow0`: shared by the namespace tests `netns`
//! and `attack_netns`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use wow_test_hosts::{Netns, Process, TempDir, wait_until};

/// The node binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wow-node");

/// One host running `wow-node up` with its guest (the namespace itself) on
/// TAP `wow0`, whose DHCP client sends host name `name`.
pub struct Host {
    pub ns: Netns,
    pub state: TempDir,
    pub name: &'static str,
    pub node: Option<Process>,
}

impl Host {
    /// A fresh namespace and state directory (both named after `tag`); no
    /// node running yet.
    pub fn new(tag: &str, name: &'static str) -> Host {
        Host {
            ns: Netns::new(tag).unwrap(),
            state: TempDir::new(tag).unwrap(),
            name,
            node: None,
        }
    }

    /// `node.toml` in the state directory.
    pub fn config_path(&self) -> PathBuf {
        self.state.path().join("node.toml")
    }

    /// Writes `node.toml`: `bootstrap`, `listen` and `advertise` in
    /// `[node]`, network `10.128.0.0/16`, then `extra`.
    pub fn write_config(&self, bootstrap: &[&str], listen: &str, advertise: &[&str], extra: &str) {
        self.write_config_with(bootstrap, listen, advertise, "", extra);
    }

    /// [`Host::write_config`] with `node_extra` (lines such as
    /// `lan_discovery = false\n`) added to `[node]`.
    pub fn write_config_with(
        &self,
        bootstrap: &[&str],
        listen: &str,
        advertise: &[&str],
        node_extra: &str,
        extra: &str,
    ) {
        let list = |v: &[&str]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let text = format!(
            "[node]\nstate_dir = \"{}\"\nlisten = \"{listen}\"\nbootstrap = [{}]\nadvertise = [{}]\n{node_extra}\n[network]\ncidr = \"10.128.0.0/16\"\n{extra}",
            self.state.path().display(),
            list(bootstrap),
            list(advertise),
        );
        std::fs::write(self.config_path(), text).unwrap();
        // As packaged: a file that may hold secrets is not world-readable.
        std::fs::set_permissions(
            self.config_path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
    }

    /// Starts `wow-node up --config node.toml EXTRA_ARGS…` and waits until
    /// the TAP is up.
    pub fn start(&mut self, extra_args: &[&str]) {
        let config = self.config_path();
        let mut args = vec!["up", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra_args);
        let mut cmd = self.ns.command(BIN);
        cmd.args(&args).env(
            "RUST_LOG",
            std::env::var("WOW_TEST_LOG").unwrap_or_else(|_| "info,wow_node=debug".into()),
        );
        self.node = Some(Process::spawn(cmd).unwrap());
        let ns = &self.ns;
        assert!(
            wait_until(Duration::from_secs(10), || ns
                .run_ok("ip", &["link", "show", "wow0"])
                .is_ok_and(|s| s.contains("UP"))),
            "TAP never came up:\n{}",
            self.log()
        );
    }

    /// Stops the node with SIGTERM; it must exit cleanly within 5 s.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.node.take() {
            let status = p.terminate(Duration::from_secs(5)).unwrap();
            assert!(
                status.is_some_and(|s| s.success()),
                "unclean exit:\n{}",
                p.log()
            );
        }
    }

    /// The node's output so far.
    pub fn log(&self) -> String {
        self.node.as_ref().map(Process::log).unwrap_or_default()
    }

    /// Runs dhclient once on the TAP, sending the host name; checks that
    /// dhclient-script wrote the node's DNS server and search domain and
    /// returns the leased address.
    pub fn dhcp(&self) -> String {
        let dir = self.state.path();
        let conf = dir.join("dhclient.conf");
        std::fs::write(
            &conf,
            format!("send host-name \"{}\";\nrequest subnet-mask, routers, domain-name, domain-name-servers, domain-search, interface-mtu;\n", self.name),
        )
        .unwrap();
        self.ns.set_resolv_conf("").unwrap();
        let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
        let out = self.ns.run(
            "timeout",
            &[
                "30",
                "dhclient",
                "-v",
                "-1",
                "-4",
                "-cf",
                &p("dhclient.conf"),
                "-lf",
                &p("dhclient.leases"),
                "-pf",
                &p("dhclient.pid"),
                "wow0",
            ],
        );
        // dhclient-script writes the DNS server and search domain it got.
        let resolv = std::fs::read_to_string(self.ns.etc_dir().unwrap().join("resolv.conf"))
            .unwrap_or_default();
        assert!(
            resolv.contains("nameserver 10.128.0.1") && resolv.contains("wow.internal"),
            "resolv.conf from DHCP: {resolv:?}\n{out:?}"
        );
        let addrs = self.ns.ipv4_addrs("wow0").unwrap();
        assert!(
            !addrs.is_empty(),
            "no lease: {out:?}\nnode log:\n{}",
            self.log()
        );
        addrs[0].split('/').next().unwrap().to_string()
    }

    /// Stops the dhclient daemon [`Host::dhcp`] left running, if any.
    pub fn release_dhcp(&self) {
        let pid = self.state.path().join("dhclient.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }

    /// `wow-node status` (with `--json` if `json`).
    pub fn status(&self, json: bool) -> String {
        let mut args = vec!["status", "--state-dir", self.state.path().to_str().unwrap()];
        if json {
            args.push("--json");
        }
        self.ns.run_ok(BIN, &args).unwrap()
    }

    /// `wow-node status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.status(true)).unwrap()
    }

    /// The node's overlay address, from its status.
    pub fn overlay_address(&self) -> String {
        self.status_json()["overlay_address"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The guest's `getent hosts NAME`: the first address, if any.
    pub fn resolve(&self, name: &str) -> Option<String> {
        let out = self.ns.run("getent", &["hosts", name]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().next().map(str::to_string)
    }

    /// One ping from the guest to `addr`, answered within a second.
    pub fn ping(&self, addr: &str) -> bool {
        self.ns
            .run("ping", &["-c", "1", "-W", "1", addr])
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.release_dhcp();
    }
}
