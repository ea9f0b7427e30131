//! Twenty-four real `wow-node` processes, each in its own network
//! namespace with its own TAP and a dhclient guest, on one underlay bridge
//! (wow_test_hosts::crowd; the hundred-node runner is
//! `test-hosts/scripts/hundred.sh`): all join and the ring converges (every
//! node's status lists its successor and predecessor among the live nodes),
//! a quarter of the nodes are SIGKILLed and restarted at once, the ring
//! converges again, and random guests ping each other by address and by
//! name and look names up through their node's DNS (a DHT lookup).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::crowd::{Crowd, CrowdOptions, Pick, Snapshot};
use wow_test_hosts::require;

const BIN: &str = env!("CARGO_BIN_EXE_wow-node");
const NODES: usize = 24;

/// Waits for convergence; on failure, panics with the inconsistent nodes'
/// statuses and log tails.
fn converge(crowd: &mut Crowd, timeout: Duration, what: &str) -> Duration {
    let mut crashes = Vec::new();
    let (took, snap) = crowd.wait_converged(timeout, |s: &Snapshot, _| {
        crashes.extend(s.crashed.iter().cloned());
    });
    assert!(crashes.is_empty(), "{what}: nodes exited: {crashes:#?}");
    match took {
        Some(t) => {
            eprintln!("{what}: converged in {:.1} s", t.as_secs_f64());
            t
        }
        None => {
            let detail: Vec<String> = snap
                .inconsistent
                .iter()
                .take(4)
                .map(|&i| {
                    format!(
                        "node {i} status {}\nlog:\n{}",
                        crowd.members[i]
                            .status()
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                        crowd.log_tail(i, 30)
                    )
                })
                .collect();
            panic!(
                "{what}: not converged in {timeout:?}: {}/{} consistent, {} joined, leased {}\n{}",
                snap.consistent,
                snap.live,
                snap.joined,
                crowd.members.iter().filter(|m| m.guest.is_some()).count(),
                detail.join("\n")
            );
        }
    }
}

/// Probes `pairs` random guest pairs; each must answer a ping by address,
/// a ping by name and a DNS lookup within three tries.
fn probe_pairs(crowd: &Crowd, pick: &mut Pick, pairs: usize) {
    let all: Vec<usize> = (0..NODES).collect();
    for _ in 0..pairs {
        let p = pick.sample(&all, 2);
        let (from, to) = (p[0], p[1]);
        let mut last = None;
        let ok = (0..3).any(|_| {
            let r = crowd.probe(from, to);
            last = Some(r);
            r.by_ip && r.by_name && r.lookup
        });
        assert!(
            ok,
            "g{from} -> g{to} ({:?}): {last:?}\nstatus of {from}: {}",
            crowd.members[to].guest,
            crowd.members[from]
                .status()
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
    }
}

#[test]
fn a_crowd_of_nodes_joins_survives_churn_and_routes_between_guests() {
    if !require(
        "a_crowd_of_nodes_joins_survives_churn_and_routes_between_guests",
        &["dhclient", "ping", "dig", "nft", "timeout"],
    ) {
        return;
    }
    let mut crowd = Crowd::new(CrowdOptions {
        nodes: NODES,
        bin: BIN.into(),
        rust_log: "info".into(),
        out_dir: None,
        advertise: false,
    })
    .unwrap();
    let mut pick = Pick::new(0x5eed);
    for wave in [0..1, 1..9, 9..17, 17..NODES] {
        crowd.start(wave.clone()).unwrap();
        let leased = crowd.wait_leases(wave.clone(), Duration::from_secs(60));
        assert_eq!(leased, wave.len(), "wave {wave:?}: not every guest leased");
    }
    converge(&mut crowd, Duration::from_secs(60), "join");
    let addrs: std::collections::HashSet<_> = crowd.members.iter().map(|m| m.guest).collect();
    assert_eq!(addrs.len(), NODES, "guests share addresses");
    probe_pairs(&crowd, &mut pick, 6);

    // One churn round: a quarter of the nodes (not the bootstrap node)
    // SIGKILLed and started again on their state.
    let before: Vec<_> = crowd.members.iter().map(|m| m.guest).collect();
    let victims = pick.sample(&(1..NODES).collect::<Vec<_>>(), NODES / 4);
    for &v in &victims {
        crowd.kill(v);
        crowd.restart(v).unwrap();
    }
    let snap = crowd.snapshot();
    assert!(
        !snap.converged(),
        "the ring cannot be whole right after the kills"
    );
    converge(&mut crowd, Duration::from_secs(90), "after churn");
    let after: Vec<_> = crowd.members.iter().map(|m| m.guest).collect();
    assert_eq!(
        before, after,
        "a restarted node gave its guest another address"
    );
    // Pairs with a restarted end first, then random ones.
    for &v in &victims[..3] {
        let other = (v + NODES / 2) % NODES;
        for (from, to) in [(v, other), (other, v)] {
            let r = (0..3)
                .map(|_| crowd.probe(from, to))
                .find(|r| r.by_ip && r.by_name && r.lookup);
            assert!(r.is_some(), "g{from} -> g{to} after churn");
        }
    }
    probe_pairs(&crowd, &mut pick, 6);
    crowd.stop_all();
}
