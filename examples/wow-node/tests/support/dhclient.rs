//! ISC dhclient on a namespace's `wow0`, as the packaged ifupdown snippet
//! runs it: one attempt, then the addresses the TAP holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use wow_test_hosts::Netns;

/// Runs `dhclient -1 -4 wow0` in `ns` (lease and pid files in `dir`, an
/// empty resolv.conf first), stops it, and returns its output and the
/// IPv4 addresses `wow0` then holds.
pub fn lease_on_wow0(ns: &Netns, dir: &Path) -> (std::io::Result<Output>, Vec<String>) {
    ns.set_resolv_conf("").unwrap();
    let leases = dir.join("dhclient.leases");
    let pid = dir.join("dhclient.pid");
    let out = ns.run(
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
    (out, ns.ipv4_addrs("wow0").unwrap())
}
