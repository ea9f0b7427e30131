//! A crowd of real `wow-node` processes under churn (needs root).
//!
//! ```text
//! crowd --bin target/debug/wow-node [--nodes 100] [--wave 10]
//!       [--churn 0.1] [--period 20] [--duration 300] [--partition SECS]
//!       [--probes 4] [--final-probes 60] [--grace 10] [--seed N]
//!       [--join-timeout 600] [--converge-timeout 300] [--log RUST_LOG]
//!       [--churn-bootstrap] [--advertise] [--out DIR] [--json]
//! ```
//!
//! Builds [`wow_test_hosts::crowd::Crowd`]: N namespaces on one bridge,
//! each with a node, its TAP and its guest (dhclient, host name `gI`).
//! Starts the nodes in waves of `--wave` (each wave waits for its guests'
//! leases), then waits for the ring to converge (every node joined, its
//! ring neighbours holding its successor and predecessor among the live
//! nodes) and probes `--final-probes` random guest pairs (ping by address,
//! ping by name, dig at the node's DNS). Then churn for `--duration`
//! seconds: every `--period` seconds a random `--churn` share of the nodes
//! (never the bootstrap node unless `--churn-bootstrap`) is SIGKILLed and
//! started again on its state; every second the ring is judged from every
//! node's status and `--probes` random pairs are probed. After the churn:
//! time to re-converge and another probe round. `--partition SECS` then
//! splits the bridge in two halves for SECS, heals it and measures the
//! same. Prints progress on stderr and a summary table on stdout (`--json`:
//! the summary as JSON instead). Exit 1 when the ring did not converge,
//! or re-converge, in time. `--advertise` configures each node's underlay
//! address as `advertise` (see [`CrowdOptions::advertise`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use wow_test_hosts::crowd::{Crowd, CrowdOptions, Pick, Probe, Snapshot, probe};

struct Args {
    bin: PathBuf,
    nodes: usize,
    wave: usize,
    churn: f64,
    period: u64,
    duration: u64,
    partition: u64,
    probes: usize,
    final_probes: usize,
    grace: u64,
    seed: u64,
    join_timeout: u64,
    converge_timeout: u64,
    log: String,
    churn_bootstrap: bool,
    advertise: bool,
    out: Option<PathBuf>,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bin: PathBuf::from("target/debug/wow-node"),
        nodes: 100,
        wave: 10,
        churn: 0.1,
        period: 20,
        duration: 300,
        partition: 0,
        probes: 4,
        final_probes: 60,
        grace: 10,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
        join_timeout: 600,
        converge_timeout: 300,
        log: "info".into(),
        churn_bootstrap: false,
        advertise: false,
        out: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--bin" => a.bin = PathBuf::from(val()?),
            "--nodes" => a.nodes = num(val()?)? as usize,
            "--wave" => a.wave = num(val()?)?.max(1) as usize,
            "--churn" => a.churn = val()?.parse().map_err(|e| format!("--churn: {e}"))?,
            "--period" => a.period = num(val()?)?.max(1),
            "--duration" => a.duration = num(val()?)?,
            "--partition" => a.partition = num(val()?)?,
            "--probes" => a.probes = num(val()?)? as usize,
            "--final-probes" => a.final_probes = num(val()?)? as usize,
            "--grace" => a.grace = num(val()?)?,
            "--seed" => a.seed = num(val()?)?,
            "--join-timeout" => a.join_timeout = num(val()?)?,
            "--converge-timeout" => a.converge_timeout = num(val()?)?,
            "--log" => a.log = val()?,
            "--churn-bootstrap" => a.churn_bootstrap = true,
            "--advertise" => a.advertise = true,
            "--out" => a.out = Some(PathBuf::from(val()?)),
            "--json" => a.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.nodes < 2 {
        return Err("--nodes: at least 2".into());
    }
    Ok(a)
}

/// A probe running on its own thread: (namespace, target, result).
type InFlight = JoinHandle<(String, usize, Probe)>;

/// Success counts of a set of probes.
#[derive(Default, Clone)]
struct Tally {
    n: usize,
    by_ip: usize,
    by_ip_3s: usize,
    by_name: usize,
    lookup: usize,
    lookup_ms: Vec<u64>,
}

impl Tally {
    fn add(&mut self, p: &Probe) {
        self.n += 1;
        self.by_ip += usize::from(p.by_ip);
        self.by_ip_3s += usize::from(p.by_ip_3s);
        self.by_name += usize::from(p.by_name);
        self.lookup += usize::from(p.lookup);
        if let Some(ms) = p.lookup_ms {
            self.lookup_ms.push(ms);
        }
    }

    fn pct(k: usize, n: usize) -> String {
        if n == 0 {
            "-".into()
        } else {
            format!("{k}/{n} ({:.1} %)", 100.0 * k as f64 / n as f64)
        }
    }

    fn row(&self) -> String {
        format!(
            "ping by IP {} (within 3 s: {}), by name {}, DNS/DHT lookup {} (median {} ms, p90 {} ms, max {} ms)",
            Self::pct(self.by_ip, self.n),
            Self::pct(self.by_ip_3s, self.n),
            Self::pct(self.by_name, self.n),
            Self::pct(self.lookup, self.n),
            quantile(&self.lookup_ms, 0.5),
            quantile(&self.lookup_ms, 0.9),
            quantile(&self.lookup_ms, 1.0),
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "probes": self.n, "ping_ip_ok": self.by_ip, "ping_ip_3s_ok": self.by_ip_3s, "ping_name_ok": self.by_name,
            "lookup_ok": self.lookup,
            "lookup_ms_median": quantile(&self.lookup_ms, 0.5),
            "lookup_ms_p90": quantile(&self.lookup_ms, 0.9),
            "lookup_ms_max": quantile(&self.lookup_ms, 1.0),
        })
    }
}

fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((s.len() - 1) as f64 * q).round() as usize;
    s[i.min(s.len() - 1)]
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// Probes `k` random pairs of leased guests among `eligible`, 8 at a
/// time.
fn probe_round(
    crowd: &Crowd,
    pick: &mut Pick,
    eligible: &[usize],
    k: usize,
) -> (Tally, Vec<String>) {
    let mut jobs = Vec::new();
    for _ in 0..k {
        let pair = pick.sample(eligible, 2);
        if pair.len() == 2 {
            jobs.push(crowd.probe_args(pair[0], pair[1]));
        }
    }
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for chunk in jobs.chunks(8) {
        let handles: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(ns, to, addr)| {
                std::thread::spawn(move || (ns.clone(), to, probe(&ns, to, addr)))
            })
            .collect();
        for h in handles {
            let (ns, to, p) = h.join().unwrap();
            if !(p.by_ip && p.by_name && p.lookup) {
                failures.push(format!("{ns} -> g{to}: {p:?}"));
            }
            tally.add(&p);
        }
    }
    (tally, failures)
}

/// [`probe_round`] over every leased guest, printed with its first
/// failures.
fn probe_and_print(crowd: &Crowd, pick: &mut Pick, k: usize, label: &str) -> Tally {
    let (tally, fails) = probe_round(crowd, pick, &crowd.leased(), k);
    eprintln!("{label}: {}", tally.row());
    for f in fails.iter().take(10) {
        eprintln!("  failed: {f}");
    }
    tally
}

/// [`Crowd::wait_converged`] with progress every 5 s.
fn wait_converged(
    crowd: &mut Crowd,
    timeout: Duration,
    label: &str,
) -> (Option<Duration>, Snapshot) {
    let mut last_print: Option<Duration> = None;
    let (took, snap) = crowd.wait_converged(timeout, |snap, t| {
        report_crashes(snap);
        if last_print.is_none_or(|p| t >= p + Duration::from_secs(5)) {
            eprintln!(
                "{label}: {:>5.1} s  live {} answered {} joined {} consistent {}",
                t.as_secs_f64(),
                snap.live,
                snap.answered,
                snap.joined,
                snap.consistent,
            );
            last_print = Some(t);
        }
    });
    match took {
        Some(t) => eprintln!(
            "{label}: converged after {:.1} s ({} live, all consistent)",
            t.as_secs_f64(),
            snap.live
        ),
        None => eprintln!(
            "{label}: NOT converged after {:.0} s: {}/{} consistent, {} joined; inconsistent {:?}",
            timeout.as_secs_f64(),
            snap.consistent,
            snap.live,
            snap.joined,
            snap.inconsistent
        ),
    }
    (took, snap)
}

fn report_crashes(snap: &Snapshot) {
    for (i, tail) in &snap.crashed {
        eprintln!("!!! node {i} exited on its own (restarted); last log lines:\n{tail}");
    }
}

/// Ring-consistency figures of a phase sampled every second.
#[derive(Default)]
struct Timeline {
    samples: usize,
    converged: usize,
    fraction_sum: f64,
    min_fraction: f64,
}

impl Timeline {
    fn add(&mut self, s: &Snapshot) {
        if self.samples == 0 {
            self.min_fraction = 1.0;
        }
        self.samples += 1;
        self.converged += usize::from(s.converged());
        self.fraction_sum += s.fraction();
        self.min_fraction = self.min_fraction.min(s.fraction());
    }

    fn mean(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.fraction_sum / self.samples as f64
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: see the doc comment of test-hosts/src/bin/crowd.rs");
            return ExitCode::from(2);
        }
    };
    if !wow_test_hosts::require("crowd", &["dhclient", "ping", "dig", "nft", "timeout"]) {
        return ExitCode::from(2);
    }
    let mut ok = true;
    let mut pick = Pick::new(args.seed);
    let t_setup = Instant::now();
    let mut crowd = Crowd::new(CrowdOptions {
        nodes: args.nodes,
        bin: args.bin.clone(),
        rust_log: args.log.clone(),
        out_dir: args.out.clone(),
        advertise: args.advertise,
    })
    .expect("build the namespaces");
    eprintln!(
        "{} namespaces with a veth each on one bridge in {:.1} s (seed {})",
        args.nodes,
        t_setup.elapsed().as_secs_f64(),
        args.seed
    );

    // Join in waves.
    let t0 = Instant::now();
    let mut start = 0;
    while start < args.nodes {
        let end = (start + if start == 0 { 1 } else { args.wave }).min(args.nodes);
        crowd.start(start..end).expect("start nodes");
        let leased = crowd.wait_leases(start..end, Duration::from_secs(90));
        let snap = crowd.snapshot();
        report_crashes(&snap);
        eprintln!(
            "wave: nodes {start}..{} started, leased {leased}/{}, t={:.1} s, ring consistent {}/{} (joined {})",
            end - 1,
            end - start,
            t0.elapsed().as_secs_f64(),
            snap.consistent,
            snap.live,
            snap.joined
        );
        start = end;
    }
    let started_all = t0.elapsed();
    let (join_converge, _) =
        wait_converged(&mut crowd, Duration::from_secs(args.join_timeout), "join");
    let join_time = join_converge.map(|_| t0.elapsed());
    ok &= join_time.is_some();
    let all: Vec<usize> = (0..args.nodes).collect();
    let steady = probe_and_print(&crowd, &mut pick, args.final_probes, "after join");
    let (_, _, rss_before) = crowd.usage();

    // Churn.
    let churnable: Vec<usize> = if args.churn_bootstrap {
        all.clone()
    } else {
        all[1..].to_vec()
    };
    let per_round = ((args.nodes as f64 * args.churn).round() as usize).min(churnable.len());
    let mut churn_line = Timeline::default();
    let mut churn_settled = Tally::default();
    let mut churn_fresh = Tally::default();
    let mut churn_fails = Vec::new();
    let mut restarted_at: Vec<Option<Instant>> = vec![None; args.nodes];
    let mut rounds = 0;
    let mut crashes = 0;
    if args.duration > 0 && per_round > 0 {
        eprintln!(
            "churn: {per_round} nodes SIGKILLed and restarted every {} s for {} s",
            args.period, args.duration
        );
        let c0 = Instant::now();
        let mut next_round = c0;
        let mut inflight: Vec<(bool, InFlight)> = Vec::new();
        let mut last_print = Instant::now() - Duration::from_secs(10);
        while c0.elapsed() < Duration::from_secs(args.duration) {
            let tick = Instant::now();
            if tick >= next_round {
                let victims = pick.sample(&churnable, per_round);
                for &v in &victims {
                    crowd.kill(v);
                    crowd.restart(v).expect("restart");
                    restarted_at[v] = Some(Instant::now());
                }
                rounds += 1;
                eprintln!(
                    "churn round {rounds} at {:.0} s: restarted {:?}",
                    c0.elapsed().as_secs_f64(),
                    victims
                );
                next_round += Duration::from_secs(args.period);
            }
            let snap = crowd.snapshot();
            crashes += snap.crashed.len();
            report_crashes(&snap);
            for (i, _) in &snap.crashed {
                restarted_at[*i] = Some(Instant::now());
            }
            churn_line.add(&snap);
            // Finished probes.
            let (done, pending): (Vec<_>, Vec<_>) =
                inflight.into_iter().partition(|(_, h)| h.is_finished());
            inflight = pending;
            for (fresh, h) in done {
                let (ns, to, p) = h.join().unwrap();
                if fresh {
                    churn_fresh.add(&p);
                } else {
                    churn_settled.add(&p);
                    if !(p.by_ip && p.by_name && p.lookup) {
                        churn_fails.push(format!(
                            "{:.0} s {ns} -> g{to}: {p:?}",
                            c0.elapsed().as_secs_f64()
                        ));
                    }
                }
            }
            // New probes between leased guests.
            let leased = crowd.leased();
            for _ in 0..args.probes {
                let pair = pick.sample(&leased, 2);
                if pair.len() < 2 {
                    break;
                }
                let fresh = pair.iter().any(|&i| {
                    restarted_at[i].is_some_and(|t| t.elapsed() < Duration::from_secs(args.grace))
                });
                let (ns, to, addr) = crowd.probe_args(pair[0], pair[1]);
                inflight.push((
                    fresh,
                    std::thread::spawn(move || {
                        let p = probe(&ns, to, addr);
                        (ns, to, p)
                    }),
                ));
            }
            if last_print.elapsed() >= Duration::from_secs(5) {
                eprintln!(
                    "churn {:>5.1} s: live {} joined {} consistent {} ({:.0} %); probes settled: {} ok by IP of {}, fresh: {} of {}",
                    c0.elapsed().as_secs_f64(),
                    snap.live,
                    snap.joined,
                    snap.consistent,
                    100.0 * snap.fraction(),
                    churn_settled.by_ip,
                    churn_settled.n,
                    churn_fresh.by_ip,
                    churn_fresh.n
                );
                last_print = Instant::now();
            }
            let spent = tick.elapsed();
            if spent < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_secs(1) - spent);
            }
        }
        for (fresh, h) in inflight {
            let (_, _, p) = h.join().unwrap();
            if fresh {
                churn_fresh.add(&p);
            } else {
                churn_settled.add(&p);
            }
        }
    }
    let (reconverge, _) = wait_converged(
        &mut crowd,
        Duration::from_secs(args.converge_timeout),
        "after churn",
    );
    ok &= reconverge.is_some();
    let after = probe_and_print(&crowd, &mut pick, args.final_probes, "after churn");

    // Partition.
    let mut part = json!(null);
    let mut part_row = None;
    if args.partition > 0 {
        let side: Vec<usize> = (0..args.nodes / 2).collect();
        crowd.partition(&side).expect("partition");
        eprintln!(
            "partition: nodes 0..{} cut from the rest for {} s",
            args.nodes / 2 - 1,
            args.partition
        );
        let p0 = Instant::now();
        let mut line = Timeline::default();
        while p0.elapsed() < Duration::from_secs(args.partition) {
            let snap = crowd.snapshot();
            report_crashes(&snap);
            line.add(&snap);
            std::thread::sleep(Duration::from_secs(1));
        }
        crowd.heal().expect("heal");
        let (healed, _) = wait_converged(
            &mut crowd,
            Duration::from_secs(args.converge_timeout),
            "after partition",
        );
        ok &= healed.is_some();
        let tally = probe_and_print(&crowd, &mut pick, args.final_probes, "after partition");
        part_row = Some((line.mean(), healed, tally.clone()));
        part = json!({
            "secs": args.partition,
            "mean_consistent_during": line.mean(),
            "reconverge_secs": healed.map(secs),
            "probes_after": tally.json(),
        });
    }

    // Usage, then stop.
    let total = t0.elapsed();
    let (cpu, peaks, rss_after) = crowd.usage();
    let restarts: u32 = crowd.members.iter().map(|m| m.restarts).sum();
    let never: Vec<usize> = crowd
        .members
        .iter()
        .filter(|m| m.restarts == 0 && m.crashes == 0)
        .map(|m| m.index)
        .collect();
    let growth: Vec<i64> = never
        .iter()
        .map(|&i| rss_after[i] as i64 - rss_before[i] as i64)
        .collect();
    crowd.stop_all();
    let mut peak_sorted = peaks.clone();
    peak_sorted.sort_unstable();
    let peak_median = quantile(&peak_sorted, 0.5);
    let peak_max = quantile(&peak_sorted, 1.0);
    let node_secs = args.nodes as f64 * total.as_secs_f64();
    let growth_max = growth.iter().copied().max().unwrap_or(0);
    let mut growth_sorted = growth.clone();
    growth_sorted.sort_unstable();
    let growth_median = growth_sorted
        .get(growth_sorted.len() / 2)
        .copied()
        .unwrap_or(0);

    let summary = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "nodes": args.nodes, "advertise": args.advertise, "wave": args.wave, "churn": args.churn, "period": args.period,
        "duration": args.duration, "seed": args.seed,
        "all_started_secs": secs(started_all),
        "join_secs": join_time.map(secs),
        "probes_after_join": steady.json(),
        "churn_rounds": rounds, "restarts": restarts, "crashes": crashes,
        "churn_mean_consistent": churn_line.mean(),
        "churn_min_consistent": churn_line.min_fraction,
        "churn_samples_converged": churn_line.converged, "churn_samples": churn_line.samples,
        "churn_probes_settled": churn_settled.json(),
        "churn_probes_fresh": churn_fresh.json(),
        "reconverge_secs": reconverge.map(secs),
        "probes_after_churn": after.json(),
        "partition": part,
        "cpu_secs_total": (cpu * 10.0).round() / 10.0,
        "cpu_share_per_node": cpu / node_secs,
        "peak_rss_kb_median": peak_median, "peak_rss_kb_max": peak_max,
        "rss_growth_kb_never_restarted_median": growth_median,
        "rss_growth_kb_never_restarted_max": growth_max,
        "never_restarted": never.len(),
        "wall_secs": secs(total),
        "ok": ok,
    });
    let opt = |d: Option<Duration>| {
        d.map_or("NOT REACHED".to_string(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        })
    };
    let table = [
        (
            "nodes (real wow-node processes, one namespace + TAP + guest each)",
            args.nodes.to_string(),
        ),
        ("waves", format!("1 + waves of {}", args.wave)),
        (
            "all started (last wave leased)",
            format!("{:.1} s", started_all.as_secs_f64()),
        ),
        (
            "join: all joined, ring consistent, all leased",
            opt(join_time),
        ),
        ("probes after join", steady.row()),
        (
            "churn",
            format!(
                "{rounds} rounds of {per_round} SIGKILL+restart every {} s over {} s ({restarts} restarts, {crashes} crashes)",
                args.period, args.duration
            ),
        ),
        (
            "ring consistency during churn (mean / min of live nodes)",
            format!(
                "{:.1} % / {:.1} %",
                100.0 * churn_line.mean(),
                100.0 * churn_line.min_fraction
            ),
        ),
        (
            "samples with the whole ring consistent",
            format!("{}/{}", churn_line.converged, churn_line.samples),
        ),
        (
            &*format!("probes during churn, both ends up > {} s", args.grace),
            churn_settled.row(),
        ),
        (
            "probes during churn, an end restarted < grace",
            churn_fresh.row(),
        ),
        ("re-converge after churn stopped", opt(reconverge)),
        ("probes after re-convergence", after.row()),
        (
            "CPU total (all incarnations)",
            format!(
                "{cpu:.1} s over {:.0} s wall = {:.2} cores; {:.2} % of a core per node",
                total.as_secs_f64(),
                cpu / total.as_secs_f64(),
                100.0 * cpu / node_secs
            ),
        ),
        (
            "peak RSS per node (VmHWM, median / max)",
            format!(
                "{:.1} / {:.1} MB",
                peak_median as f64 / 1024.0,
                peak_max as f64 / 1024.0
            ),
        ),
        (
            "RSS growth during churn, never-restarted nodes (median / max)",
            format!(
                "{:.2} / {:.2} MB over {} nodes",
                growth_median as f64 / 1024.0,
                growth_max as f64 / 1024.0,
                never.len()
            ),
        ),
    ];
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    } else {
        println!(
            "\ncommand: {}",
            summary["command"].as_str().unwrap_or_default()
        );
        for (k, v) in table {
            println!("{k:<62} {v}");
        }
        if let Some((mean, healed, tally)) = part_row {
            println!(
                "{:<62} {:.1} % consistent during; healed ring in {}",
                format!("partition in halves for {} s", args.partition),
                100.0 * mean,
                opt(healed)
            );
            println!("{:<62} {}", "probes after healing", tally.row());
        }
        if !churn_fails.is_empty() {
            println!(
                "failed settled probes during churn (first 10 of {}):",
                churn_fails.len()
            );
            for f in churn_fails.iter().take(10) {
                println!("  {f}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
