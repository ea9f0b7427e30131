//! Runs `wow-node demo` as a user would and checks its verdict and table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run_demo(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wow-node"))
        .arg("demo")
        .args(args)
        .output()
        .expect("run wow-node demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

/// Rows of the final table: one per node, after the header line.
fn table_rows(stdout: &str, nodes: usize) -> Vec<Vec<String>> {
    let header = stdout
        .lines()
        .position(|l| l.starts_with("node ") && l.contains("result"))
        .expect("table header");
    stdout
        .lines()
        .skip(header + 1)
        .take(nodes)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn encrypted_demo_succeeds_with_a_green_table() {
    let (ok, stdout) = run_demo(&["--nodes", "3", "--bytes", "262144"]);
    assert!(ok, "demo failed");
    assert!(stdout.contains("all 3 guests"));
    let rows = table_rows(&stdout, 3);
    assert_eq!(rows.len(), 3);
    let mut addrs = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        // node ring guest name peer hops rtt mbit sa result
        assert_eq!(row[0], (i + 1).to_string());
        assert!(row[2].starts_with("10.128."), "{row:?}");
        assert_eq!(row[3], format!("guest-{}.wow.internal", i + 1));
        assert!(row[5].parse::<u8>().unwrap() >= 1);
        assert!(row[6].parse::<f64>().unwrap() > 0.0);
        assert!(row[7].parse::<f64>().unwrap() > 0.0);
        assert!(row[8].parse::<usize>().unwrap() >= 1, "no SA: {row:?}");
        assert_eq!(row.last().unwrap(), "ok");
        addrs.push(row[2].clone());
    }
    // Each guest resolved the next one's DHCP address by name.
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[4], addrs[(i + 1) % 3]);
    }
    // Addresses are unique: the DHT claims kept the nodes' pools apart.
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3);
}

#[test]
fn plaintext_demo_succeeds_without_security_associations() {
    let (ok, stdout) = run_demo(&["--nodes", "2", "--bytes", "65536", "--insecure"]);
    assert!(ok, "demo failed");
    let rows = table_rows(&stdout, 2);
    for row in rows {
        assert_eq!(row[8], "0");
        assert_eq!(row.last().unwrap(), "ok");
    }
}

#[test]
fn a_single_node_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_wow-node"))
        .args(["demo", "--nodes", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
