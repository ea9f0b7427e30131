//! The node's benchmark scripts in their short mode, so that CI keeps them
//! working: `scripts/bench-dns.sh` (the node's own DNS on the TAP beside
//! dnsmasq on a veth, answers per server CPU-second).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use wow_test_hosts::require;

/// `SHORT=1 DUR=1 scripts/bench-dns.sh` with this build's node: the guest
/// leases a name, both servers answer it under dnsperf (at most 1 % of
/// queries lost), and each line (queries per second, answers, CPU
/// seconds, answers per CPU-second) and the ratio line come out with
/// figures above zero.
#[test]
fn bench_dns_script_short_mode_measures_both_servers() {
    if !require(
        "bench_dns_script_short_mode_measures_both_servers",
        &["dhclient", "dnsmasq", "dnsperf", "dig", "jq"],
    ) {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench-dns.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("SHORT", "1")
        .env("DUR", "1")
        .env("WOW_BIN", env!("CARGO_BIN_EXE_wow-node"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for server in ["wow-node(TAP)\t", "dnsmasq(veth)\t"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(server))
            .unwrap_or_else(|| panic!("no line for {server}:\n{stdout}\n{stderr}"));
        let answers: u64 = line
            .split('\t')
            .find_map(|f| f.strip_suffix(" answers")?.parse().ok())
            .unwrap_or_else(|| panic!("no answer count: {line}"));
        assert!(answers > 0, "{line}");
        let per_cpu: f64 = line
            .split('\t')
            .find_map(|f| f.strip_suffix(" answers/CPU-s")?.parse().ok())
            .unwrap_or_else(|| panic!("no answers per CPU-second: {line}"));
        assert!(per_cpu > 0.0, "{line}");
        // Every query is answered (dnsperf waits for stragglers): the
        // node's answers reach the guest's socket, one by one or merged
        // into USO writes the guest's kernel cuts again.
        let lost: u64 = line
            .split('\t')
            .find_map(|f| f.strip_suffix(" lost")?.parse().ok())
            .unwrap_or_else(|| panic!("no lost count: {line}"));
        assert!(lost * 100 <= answers + lost, "over 1 % lost: {line}");
    }
    let ratio = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("round 1: answers per server CPU-second wow-node/dnsmasq = ")?
                .split(',')
                .next()?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no ratio line:\n{stdout}"));
    assert!(ratio > 0.0, "{stdout}");
}
