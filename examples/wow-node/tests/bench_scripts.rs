//! The node's benchmark scripts in their short mode, so that CI keeps them
//! working: `scripts/bench-dns.sh` (the node's own DNS on the TAP beside
//! dnsmasq on a veth, answers per server CPU-second) and `scripts/bench.sh`
//! (the data plane beside the raw veth).
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
    let (stdout, stderr) = short_run("bench-dns.sh", &[], &[]);
    for server in ["wow-node(TAP)\t", "dnsmasq(veth)\t"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(server))
            .unwrap_or_else(|| panic!("no line for {server}:\n{stdout}\n{stderr}"));
        let answers: u64 = suffixed(line, " answers");
        assert!(answers > 0, "{line}");
        assert!(suffixed::<f64>(line, " answers/CPU-s") > 0.0, "{line}");
        // Every query is answered (dnsperf waits for stragglers): the
        // node's answers reach the guest's socket, one by one or merged
        // into USO writes the guest's kernel cuts again.
        let lost: u64 = suffixed(line, " lost");
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

/// Runs `scripts/NAME ARGS` with `SHORT=1 DUR=1`, this build's node and
/// `envs`; asserts it succeeded; its standard output and error.
fn short_run(name: &str, args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
    let script = format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .env("SHORT", "1")
        .env("DUR", "1")
        .env("WOW_BIN", env!("CARGO_BIN_EXE_wow-node"))
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{name}: {stdout}\n{stderr}");
    (stdout, stderr)
}

/// The figure of the tab-separated field of `line` that ends in `suffix`.
fn suffixed<T: std::str::FromStr>(line: &str, suffix: &str) -> T {
    line.split('\t')
        .find_map(|f| f.strip_suffix(suffix)?.parse().ok())
        .unwrap_or_else(|| panic!("no {suffix:?} field in {line:?}"))
}

/// The figure after `prefix` in one of `line`'s tab-separated fields,
/// up to the first character that is not part of a number.
fn field(line: &str, prefix: &str) -> f64 {
    line.split('\t')
        .find_map(|f| {
            let rest = f.strip_prefix(prefix)?;
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .unwrap_or_else(|| panic!("no {prefix:?} in {line:?}"))
}

/// `SHORT=1 DUR=1 scripts/bench.sh raw` with this build's node and no
/// peers' script (so the raw veth is measured over the script's own veth
/// pair, as on a machine without `../shared`): two certified nodes carry
/// iperf3 between their guests with 1 and 4 streams, and every figure
/// (throughput, the nodes' CPU, the machine's busy share, the share of the
/// raw veth) comes out above zero.
#[test]
fn bench_script_short_mode_measures_wow_node_and_the_raw_veth() {
    if !require(
        "bench_script_short_mode_measures_wow_node_and_the_raw_veth",
        &["dhclient", "iperf3", "jq", "ping"],
    ) {
        return;
    }
    let (stdout, stderr) = short_run(
        "bench.sh",
        &["raw"],
        &[("PEERS_DIR", "/nonexistent/wow-peers")],
    );
    for p in ["P=1", "P=4"] {
        let wow = stdout
            .lines()
            .find(|l| l.starts_with(&format!("wow-node\t{p}\t")))
            .unwrap_or_else(|| panic!("no wow-node {p} line:\n{stdout}\n{stderr}"));
        assert!(suffixed::<f64>(wow, " Mbit/s") > 0.0, "{wow}");
        assert!(field(wow, "nodes_cpu=") > 0.0, "{wow}");
        assert!(field(wow, "machine_busy=") > 0.0, "{wow}");
        let raw = stdout
            .lines()
            .find(|l| l.contains(&format!("\traw\t{p}\t")))
            .unwrap_or_else(|| panic!("no raw {p} line:\n{stdout}"));
        assert!(suffixed::<f64>(raw, " Mbit/s") > 0.0, "{raw}");
        let share = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{p}: wow-node ")))
            .unwrap_or_else(|| panic!("no {p} summary:\n{stdout}"));
        assert!(
            share.contains("raw veth") && share.contains("% of it"),
            "{share}"
        );
    }
}
