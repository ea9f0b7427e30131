//! The NAT matrix for nat-traversal's punch examples (needs root).
//!
//! ```text
//! nat-matrix --bin target/debug/examples/punch [--program punch|agent|node]
//!            [--trials N] [--timeout SECS] [--only TEXT]... [--list] [--verbose]
//!            [--arg ARG]... [--logs]
//! ```
//!
//! For every pair kind of [`standard_kinds`] (those whose name contains one
//! of the `--only` texts, if given) runs N trials (default 20), each on a
//! fresh testbed, and prints the table of
//! [`wow_test_hosts::nat::matrix::table`]. `--program agent` runs
//! `punch_agent` (give its path with `--bin`; the rendezvous is the `punch`
//! binary next to it); `--program node` runs two `wow-node`s and a public
//! bootstrap node (give `--bin target/debug/wow-node`; see
//! [`wow_test_hosts::nat::node`]). `--verbose` prints every trial (with the
//! `punch` example's `probes_sent=` line of each side), and both logs of
//! each trial that was not direct where direct was expected. Exit 1 when a
//! row misses its target. `--arg` passes one more argument to the `punch`
//! example's `connect` (for example `--arg --birthday`); `--logs` prints
//! both logs of every trial. Neighbour NATs (the `(shared)` kinds) are
//! direct only through the patient attempt after a failed punch: their
//! trials get at least 110 s, and the `punch` example `--patience 35`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wow_test_hosts::nat::Layout;
use wow_test_hosts::nat::matrix::{Program, Row, run_trial, standard_kinds, table};

/// The least trial timeout for neighbour NATs (see `main`).
const NEIGHBOUR_TIMEOUT: Duration = Duration::from_secs(110);
/// The punch example's quiet periods for them: Linux's 30 s UDP timeout
/// and some (nat-traversal's `DEFAULT_PATIENCE`).
const PATIENCE_SECS: u64 = 35;

struct Args {
    bin: PathBuf,
    agent: bool,
    node: bool,
    trials: usize,
    timeout: Duration,
    only: Vec<String>,
    list: bool,
    verbose: bool,
    extra: Vec<String>,
    logs: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bin: PathBuf::from("target/debug/examples/punch"),
        agent: false,
        node: false,
        trials: 20,
        timeout: Duration::from_secs(12),
        only: vec![],
        list: false,
        verbose: false,
        extra: vec![],
        logs: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => args.bin = PathBuf::from(value()?),
            "--program" => match value()?.as_str() {
                "punch" => args.agent = false,
                "agent" => args.agent = true,
                "node" => args.node = true,
                other => return Err(format!("--program: punch, agent or node, not {other}")),
            },
            "--trials" => args.trials = value()?.parse().map_err(|e| format!("--trials: {e}"))?,
            "--timeout" => {
                args.timeout = Duration::from_secs_f64(
                    value()?.parse().map_err(|e| format!("--timeout: {e}"))?,
                )
            }
            "--only" => args.only.push(value()?),
            "--list" => args.list = true,
            "--verbose" => args.verbose = true,
            "--arg" => args.extra.push(value()?),
            "--logs" => args.logs = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nat-matrix: {e}");
            return ExitCode::from(2);
        }
    };
    let kinds: Vec<_> = standard_kinds()
        .into_iter()
        .filter(|k| {
            let name = k.to_string();
            args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    if args.list {
        for k in &kinds {
            println!("{k}");
        }
        return ExitCode::SUCCESS;
    }
    if !wow_test_hosts::is_root() {
        eprintln!("nat-matrix: needs root (network namespaces)");
        return ExitCode::from(2);
    }
    if !args.bin.is_file() {
        eprintln!("nat-matrix: no binary at {}", args.bin.display());
        return ExitCode::from(2);
    }
    let program = if args.agent {
        Program::Agent(args.bin.clone())
    } else {
        Program::PunchWith(args.bin.clone(), args.extra.clone())
    };
    println!(
        "program={} trials={} timeout={:?}",
        if args.node {
            "wow-node"
        } else {
            program.name()
        },
        args.trials,
        args.timeout
    );
    let mut rows = vec![];
    for kind in &kinds {
        // Neighbour NATs get a direct path only from the patient attempt
        // after the first one fails (about 75 s with Linux's 30 s UDP
        // timeout): they get the time, and the punch example its
        // `--patience` (the Agent and the node have it by default).
        let neighbour = kind.layout == Layout::Shared;
        let timeout = if neighbour {
            args.timeout.max(NEIGHBOUR_TIMEOUT)
        } else {
            args.timeout
        };
        let program = match &program {
            Program::PunchWith(bin, extra)
                if neighbour && !extra.iter().any(|a| a == "--patience") =>
            {
                let mut extra = extra.clone();
                extra.extend(["--patience".to_string(), PATIENCE_SECS.to_string()]);
                Program::PunchWith(bin.clone(), extra)
            }
            other => other.clone(),
        };
        if neighbour {
            println!("{kind}: timeout {timeout:?}, patient attempt after the first");
        }
        let mut trials = vec![];
        for i in 0..args.trials {
            let trial = if args.node {
                wow_test_hosts::nat::node::run_node_trial(&args.bin, kind, timeout)
            } else {
                run_trial(&program, kind, timeout)
            };
            match trial {
                Ok(t) => {
                    if args.verbose {
                        println!("{kind} #{i}: a={:?} b={:?}", t.a, t.b);
                        // The punch example's counters (probes sent).
                        for (side, log) in [("a", &t.log_a), ("b", &t.log_b)] {
                            if let Some(line) = log.lines().find(|l| l.starts_with("probes_sent="))
                            {
                                println!("  {side}: {line}");
                            }
                        }
                        if kind.direct_expected() && t.direct_ms().is_none() {
                            println!("--- a\n{}--- b\n{}---", t.log_a, t.log_b);
                        }
                    }
                    if args.logs {
                        println!("{kind} #{i}\n--- a\n{}--- b\n{}---", t.log_a, t.log_b);
                    }
                    trials.push(t);
                }
                Err(e) => {
                    eprintln!("nat-matrix: {kind} #{i}: testbed: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let row = Row::new(kind, &trials);
        eprint!("{}", table(std::slice::from_ref(&row)));
        rows.push(row);
    }
    print!("{}", table(&rows));
    if rows.iter().all(Row::meets_target) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
