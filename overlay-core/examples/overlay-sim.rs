//! Runs the deterministic overlay simulator and prints its figures.
//!
//! ```text
//! cargo run --release -p overlay-core --example overlay-sim -- \
//!     --nodes 10000 --seed 1 --churn 0.1 --duration 600 --json
//! ```
//!
//! Phases: nodes join (at `--join-rate` per second, each through up to
//! three random live nodes); the ring settles (`--settle` seconds); DHT keys
//! are put; for `--duration` seconds the network runs, replacing
//! `--churn` of its nodes (a fraction, spread evenly; half crash, half leave
//! gracefully) while echo routes, DHT gets and concurrent create-if-absent
//! rounds run in the background; then the time for the ring to become
//! consistent again is measured; optionally a 50/50 partition is held for
//! `--partition` seconds and healed; finally `--routes` random exact routes
//! are measured. The last line of output is one JSON object. Same seed,
//! same figures (except `wall_secs` and `rss_per_node_bytes`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use overlay_core::DhtOutcome;
use overlay_core::sim::{Outcome, Sim, SimConfig};
use overlay_core::wire::DhtOp;

struct Args {
    nodes: usize,
    seed: u64,
    churn: f64,
    duration: u64,
    json: bool,
    routes: usize,
    join_rate: f64,
    settle: u64,
    partition: u64,
    loss: f64,
    keys: usize,
    no_lookahead: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        nodes: 1000,
        seed: 1,
        churn: 0.0,
        duration: 60,
        json: false,
        routes: 10_000,
        join_rate: 0.0,
        settle: 60,
        partition: 0,
        loss: 0.0,
        keys: 1000,
        no_lookahead: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().expect("missing value");
        match flag.as_str() {
            "--nodes" => a.nodes = val().parse().unwrap(),
            "--seed" => a.seed = val().parse().unwrap(),
            "--churn" => a.churn = val().parse().unwrap(),
            "--duration" => a.duration = val().parse().unwrap(),
            "--routes" => a.routes = val().parse().unwrap(),
            "--join-rate" => a.join_rate = val().parse().unwrap(),
            "--settle" => a.settle = val().parse().unwrap(),
            "--partition" => a.partition = val().parse().unwrap(),
            "--loss" => a.loss = val().parse().unwrap(),
            "--keys" => a.keys = val().parse().unwrap(),
            "--no-lookahead" => a.no_lookahead = true,
            "--json" => a.json = true,
            "-h" | "--help" => {
                println!(
                    "overlay-sim --nodes N --seed S --churn FRACTION --duration SECS [--json]\n  \
                     [--routes R] [--join-rate PER_SEC] [--settle SECS] [--partition SECS]\n  \
                     [--loss P] [--keys K] [--no-lookahead]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown flag {other}"),
        }
    }
    if a.join_rate <= 0.0 {
        a.join_rate = (a.nodes as f64 / 20.0).max(10.0);
    }
    a
}

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn percentile(sorted: &[u8], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i])
}

/// Runs until the ring is consistent (checked every second); returns the
/// seconds it took, or None after `limit` seconds.
fn until_consistent(sim: &mut Sim, limit: u64) -> Option<f64> {
    let t0 = sim.elapsed();
    loop {
        if sim.ring_consistency() >= 1.0 {
            return Some((sim.elapsed() - t0).as_secs_f64());
        }
        if (sim.elapsed() - t0).as_secs() >= limit {
            return None;
        }
        sim.run_for(Duration::from_secs(1));
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    total: u64,
}

impl Tally {
    fn rate(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.ok as f64 / self.total as f64
        }
    }
}

fn main() {
    let args = parse_args();
    let wall = Instant::now();
    let rss0 = rss_bytes().unwrap_or(0);
    let mut config = SimConfig {
        seed: args.seed,
        loss: args.loss,
        ..SimConfig::default()
    };
    config.node.lookahead = !args.no_lookahead;
    let mut sim = Sim::new(Instant::now(), config);
    let log = |msg: String| {
        if !args.json {
            println!("{msg}");
        } else {
            eprintln!("{msg}");
        }
    };

    // Join.
    let step = Duration::from_secs_f64(1.0 / args.join_rate);
    for _ in 0..args.nodes {
        sim.spawn(3);
        sim.run_for(step);
    }
    let join_phase = sim.elapsed().as_secs_f64();
    let converge = until_consistent(&mut sim, 300);
    let join_secs = join_phase + converge.unwrap_or(f64::NAN);
    let join_durations: Vec<f64> = (0..sim.slots())
        .filter_map(|i| sim.join_duration(i).map(|d| d.as_secs_f64()))
        .collect();
    let node_join_mean = join_durations.iter().sum::<f64>() / join_durations.len().max(1) as f64;
    log(format!(
        "joined {} nodes: ring consistent after {join_secs:.1} s simulated (mean per-node join {node_join_mean:.3} s), wall {:.1} s",
        args.nodes,
        wall.elapsed().as_secs_f64()
    ));
    sim.run_for(Duration::from_secs(args.settle));
    let rss_joined = rss_bytes().unwrap_or(0);
    let consistency_settled = sim.ring_consistency();

    // DHT keys.
    let ttl = Duration::from_secs(3600);
    let mut puts = Vec::new();
    for k in 0..args.keys {
        let from = sim.random_live().unwrap();
        let key = format!("key-{k}");
        if let Some(id) = sim.dht(from, DhtOp::Put, key.as_bytes(), b"value", ttl) {
            puts.push(id);
        }
        if k % 100 == 99 {
            sim.run_for(Duration::from_millis(100));
        }
    }
    sim.run_for(Duration::from_secs(10));
    let mut put_tally = Tally::default();
    for id in puts {
        put_tally.total += 1;
        if matches!(
            sim.take_outcome(id),
            Some(Outcome::Dht(_, DhtOutcome::Ok(_)))
        ) {
            put_tally.ok += 1;
        }
    }

    // Steady phase with churn and background traffic.
    let maint0 = sim.maintenance_sent();
    let lists0 = sim.neighbor_lists_sent();
    let live0 = sim.live().len();
    let replacements = (args.churn * args.nodes as f64).round() as u64;
    let mut bg_routes = Tally::default();
    let mut bg_gets = Tally::default();
    let mut creates = Tally::default();
    let mut create_conflicts = 0u64;
    let mut pending_routes = Vec::new();
    let mut pending_gets = Vec::new();
    let mut pending_creates: Vec<Vec<(u32, u64)>> = Vec::new();
    let mut replaced = 0u64;
    let secs = args.duration.max(1);
    let mut crashed_maint = 0u64;
    let mut crashed_lists = 0u64;
    for s in 0..secs {
        // Churn evenly spread over the phase.
        let due = replacements * (s + 1) / secs;
        while replaced < due {
            let victim = sim.random_live().unwrap();
            crashed_maint += sim.node(victim).map_or(0, |n| n.stats().maintenance_sent);
            crashed_lists += sim
                .node(victim)
                .map_or(0, |n| n.stats().neighbor_lists_sent);
            if sim.random() & 1 == 0 {
                sim.crash(victim);
            } else {
                sim.leave(victim);
            }
            sim.spawn(3);
            replaced += 1;
        }
        // Background: 20 routes, 10 gets, one create round per second.
        for _ in 0..20 {
            let a = sim.random_live().unwrap();
            let b = sim.random_live().unwrap();
            if let Some(id) = sim.echo(a, b) {
                pending_routes.push((id, b));
            }
        }
        for _ in 0..10 {
            let a = sim.random_live().unwrap();
            let k = (sim.random() % args.keys.max(1) as u64) as usize;
            if let Some(id) = sim.dht(a, DhtOp::Get, format!("key-{k}").as_bytes(), &[], ttl) {
                pending_gets.push(id);
            }
        }
        let key = format!("create-{s}");
        let mut round = Vec::new();
        for c in 0..3u8 {
            let a = sim.random_live().unwrap();
            if let Some(id) = sim.dht(a, DhtOp::Create, key.as_bytes(), &[c], ttl) {
                round.push(id);
            }
        }
        pending_creates.push(round);
        sim.run_for(Duration::from_secs(1));
        // Collect finished requests (requests finish within 3 attempts).
        pending_routes.retain(|&(id, dest)| match sim.take_outcome(id) {
            Some(Outcome::Echo(_)) => {
                bg_routes.ok += 1;
                bg_routes.total += 1;
                false
            }
            Some(_) => {
                // A route to a node that died meanwhile is not a failure.
                if sim.node(dest).is_some() {
                    bg_routes.total += 1;
                }
                false
            }
            None => true,
        });
        pending_gets.retain(|&id| match sim.take_outcome(id) {
            Some(Outcome::Dht(_, DhtOutcome::Ok(v))) => {
                bg_gets.total += 1;
                if !v.is_empty() {
                    bg_gets.ok += 1;
                }
                false
            }
            Some(_) => {
                bg_gets.total += 1;
                false
            }
            None => true,
        });
    }
    sim.run_for(Duration::from_secs(10));
    for id in pending_routes.drain(..) {
        match sim.take_outcome(id.0) {
            Some(Outcome::Echo(_)) => {
                bg_routes.ok += 1;
                bg_routes.total += 1;
            }
            _ if sim.node(id.1).is_some() => bg_routes.total += 1,
            _ => {}
        }
    }
    for id in pending_gets.drain(..) {
        bg_gets.total += 1;
        if let Some(Outcome::Dht(_, DhtOutcome::Ok(v))) = sim.take_outcome(id)
            && !v.is_empty()
        {
            bg_gets.ok += 1;
        }
    }
    for round in pending_creates {
        let mut winners = 0;
        let mut answered = 0;
        for id in round.iter() {
            match sim.take_outcome(*id) {
                Some(Outcome::Dht(_, DhtOutcome::Ok(_))) => {
                    winners += 1;
                    answered += 1;
                }
                Some(Outcome::Dht(_, DhtOutcome::Exists(_))) => answered += 1,
                _ => {}
            }
        }
        creates.total += 1;
        if winners == 1 && answered == round.len() {
            creates.ok += 1;
        }
        if winners > 1 {
            create_conflicts += 1;
        }
    }
    let steady_secs = sim.elapsed().as_secs_f64();
    let maint = (sim.maintenance_sent() + crashed_maint).saturating_sub(maint0);
    let maint_per_node_sec = maint as f64 / (live0 as f64 * (secs + 10) as f64);
    let lists = (sim.neighbor_lists_sent() + crashed_lists).saturating_sub(lists0);
    let lists_per_node_sec = lists as f64 / (live0 as f64 * (secs + 10) as f64);
    let recovery = until_consistent(&mut sim, 300);
    log(format!(
        "steady phase: {replaced} replaced, routes {:.5}, gets {:.5}, creates {:.5} ({create_conflicts} conflicts), ring recovery {recovery:?} s, wall {:.1} s",
        bg_routes.rate(),
        bg_gets.rate(),
        creates.rate(),
        wall.elapsed().as_secs_f64()
    ));

    // Partition and heal.
    let mut merge_secs = None;
    if args.partition > 0 {
        sim.partition();
        sim.run_for(Duration::from_secs(args.partition));
        let split = sim.ring_consistency();
        sim.heal();
        merge_secs = until_consistent(&mut sim, 300);
        log(format!(
            "partition {} s: consistency while split {split:.3}, merged after {merge_secs:?} s",
            args.partition
        ));
    }

    // Final measured routes.
    let t_routes = Instant::now();
    let mut hops = Vec::with_capacity(args.routes);
    let mut pending = Vec::new();
    let mut failed = 0usize;
    let per_batch = 10_000usize;
    let mut issued = 0;
    while issued < args.routes {
        let n = per_batch.min(args.routes - issued);
        for _ in 0..n {
            let a = sim.random_live().unwrap();
            let b = sim.random_live().unwrap();
            if let Some(id) = sim.echo(a, b) {
                pending.push(id);
            }
        }
        issued += n;
        sim.run_for(Duration::from_secs(1));
    }
    sim.run_for(Duration::from_secs(8));
    for id in pending {
        match sim.take_outcome(id) {
            Some(Outcome::Echo(h)) => hops.push(h),
            _ => failed += 1,
        }
    }
    let routes_wall = t_routes.elapsed().as_secs_f64();
    hops.sort_unstable();
    let mean = hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len().max(1) as f64;
    let (conn_mean, conn_max) = sim.connection_counts();
    let n_live = sim.live().len();
    let log2n = (n_live as f64).log2();
    let stats = sim.stats();
    let dht_get = bg_gets;
    let json = format!(
        concat!(
            "{{\"nodes\":{},\"seed\":{},\"churn\":{},\"duration_secs\":{},",
            "\"join_secs\":{:.3},\"node_join_mean_secs\":{:.3},\"ring_consistency\":{:.6},",
            "\"ring_consistency_settled\":{:.6},\"ring_recovery_secs\":{},\"partition_merge_secs\":{},",
            "\"routes\":{},\"delivery_rate\":{:.6},\"hops_mean\":{:.3},\"hops_p50\":{},\"hops_p99\":{},",
            "\"log2_n\":{:.3},\"hops_mean_over_log2n\":{:.3},\"hops_p99_over_log2n\":{:.3},",
            "\"connections_mean\":{:.3},\"connections_max\":{},\"connections_limit_log2n_plus_4\":{:.2},",
            "\"background_route_success\":{:.6},\"dht_put_success\":{:.6},\"dht_get_success\":{:.6},",
            "\"dht_create_success\":{:.6},\"dht_create_conflicts\":{},",
            "\"maintenance_msgs_per_node_sec\":{:.3},\"lookahead_lists_per_node_sec\":{:.3},\"memory_per_node_bytes\":{:.0},\"rss_per_node_bytes\":{:.0},",
            "\"messages_sent\":{},\"wire_checked\":{},\"wire_mismatches\":{},",
            "\"sim_secs\":{:.1},\"routes_wall_secs\":{:.3},\"wall_secs\":{:.3}}}"
        ),
        args.nodes,
        args.seed,
        args.churn,
        args.duration,
        join_secs,
        node_join_mean,
        sim.ring_consistency(),
        consistency_settled,
        recovery.map_or("null".into(), |r| format!("{r:.1}")),
        merge_secs.map_or("null".into(), |r| format!("{r:.1}")),
        args.routes,
        hops.len() as f64 / (hops.len() + failed).max(1) as f64,
        mean,
        percentile(&hops, 0.5),
        percentile(&hops, 0.99),
        log2n,
        mean / log2n,
        percentile(&hops, 0.99) / log2n,
        conn_mean,
        conn_max,
        log2n + 4.0,
        bg_routes.rate(),
        put_tally.rate(),
        dht_get.rate(),
        creates.rate(),
        create_conflicts,
        maint_per_node_sec,
        lists_per_node_sec,
        sim.memory_per_node(),
        rss_joined.saturating_sub(rss0) as f64 / args.nodes as f64,
        stats.sent,
        stats.wire_checked,
        stats.wire_mismatches,
        steady_secs,
        routes_wall,
        wall.elapsed().as_secs_f64(),
    );
    println!("{json}");
}
