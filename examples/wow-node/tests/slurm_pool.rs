//! A Slurm pool that builds itself over the virtual network (root,
//! network namespaces; Debian's slurmctld, slurmd, slurm-client and munge):
//! `scripts/slurm-pool.sh` with a controller and four workers, each behind
//! its own node with only its DHCP address and DNS name. The workers'
//! slurmd, given no configuration and no server, find the controller by
//! the `_slurmctld._tcp` SRV record the controller's node publishes, join
//! as dynamic nodes; `sinfo` lists each by its wow name, idle; a 100-task
//! job array and `srun -N4 hostname` complete, over wow and over the plain
//! veths. The script prints the join time and both makespans.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use wow_test_hosts::require;

#[test]
fn a_slurm_pool_finds_its_controller_by_srv_and_runs_jobs() {
    if !require(
        "a_slurm_pool_finds_its_controller_by_srv_and_runs_jobs",
        &[
            "dhclient",
            "dig",
            "munged",
            "slurmctld",
            "slurmd",
            "sinfo",
            "sbatch",
            "srun",
            "unshare",
        ],
    ) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-pool.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("WOW_BIN", env!("CARGO_BIN_EXE_wow-node"))
        .env("WORKERS", "4")
        .env("TASKS", "100")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The worker's resolver found the controller by SRV.
    assert!(
        stdout.contains("_slurmctld._tcp SRV 0 0 6817 ctl.wow.internal."),
        "{stdout}"
    );
    // By their wow names, at their guests' virtual addresses (then, in
    // the plain run, at the underlay's).
    for w in ["w1", "w2", "w3", "w4"] {
        for net in ["10.128.", "192.168.70."] {
            assert!(
                stdout.contains(&format!("\n{w} idle 2 {net}")),
                "{w} {net}: {stdout}"
            );
        }
    }
    for run in ["wow", "plain"] {
        assert!(
            stdout.contains(&format!("{run}: srun -N4 hostname: w1 w2 w3 w4")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("{run}: 100 tasks on w1 w2 w3 w4 in")),
            "{stdout}"
        );
    }
    // The figures, for the log.
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("join:") || l.starts_with("array makespan:"))
    {
        eprintln!("{line}");
    }
}
