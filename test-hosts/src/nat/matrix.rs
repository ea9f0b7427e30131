//! The NAT matrix: for each pair of NAT kinds, trials of a hole-punching
//! program between two hosts of a fresh [`Testbed`], and a table of how
//! often it got a direct path and how fast.
//!
//! The program is one of nat-traversal's examples ([`Program`]); both sides
//! start at the same moment, each prints its path on its last line. A trial
//! is *direct* when both sides report `path=direct`, *relayed* when both
//! finished but at least one relays, *failed* otherwise. The time of a
//! direct trial is the slower side's `time_ms`.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::{Layout, Mapping, NatSpec, SERVER_A, SERVER_B, SiteSpec, Testbed};
use crate::{Netns, Process, wait_until};

/// The UDP port both hosts bind.
const PORT: u16 = 4000;

/// The program run on both hosts.
#[derive(Debug, Clone)]
pub enum Program {
    /// `nat-traversal/examples/punch.rs` (`connect` mode, with the
    /// rendezvous relay as fallback): its binary. Its `time_ms` runs from
    /// the peer's offer to the first frame.
    Punch(PathBuf),
    /// [`Program::Punch`] with more `connect` arguments (such as
    /// `--birthday`).
    PunchWith(PathBuf, Vec<String>),
    /// `nat-traversal/examples/punch_agent.rs` (the `Agent`, no relay): its
    /// binary. Its `time_ms` runs from its start to the punched path.
    Agent(PathBuf),
}

impl Program {
    /// The program's name, for the table.
    pub fn name(&self) -> &'static str {
        match self {
            Program::Punch(_) | Program::PunchWith(..) => "punch",
            Program::Agent(_) => "punch_agent",
        }
    }
}

/// Where the two hosts of a pair are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairKind {
    /// How the sites are attached.
    pub layout: Layout,
    /// The first host's site.
    pub a: SiteSpec,
    /// The second host's site; `None`: the second host is on `a`'s LAN
    /// (`a.hosts` is raised to 2).
    pub b: Option<SiteSpec>,
}

impl PairKind {
    /// Hosts behind `a` and `b`, routed.
    pub const fn new(a: SiteSpec, b: SiteSpec) -> Self {
        PairKind {
            layout: Layout::Routed,
            a,
            b: Some(b),
        }
    }

    /// Two hosts on one LAN behind `nat`.
    pub const fn same_nat(nat: NatSpec) -> Self {
        PairKind {
            layout: Layout::Routed,
            a: SiteSpec::behind(nat).hosts(2),
            b: None,
        }
    }

    /// This pair with `layout`.
    pub const fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Whether issue 17's target is a direct path in every trial: every NAT
    /// on both sides maps endpoint-independently (or both hosts share a
    /// LAN). Elsewhere the target is connectivity (relay).
    pub fn direct_expected(&self) -> bool {
        if self.b.is_none() {
            // One LAN: host candidates reach each other without any NAT.
            return true;
        }
        let eim = |s: &SiteSpec| {
            s.nat.mapping == Mapping::EndpointIndependent
                && s.carrier
                    .is_none_or(|c| c.mapping == Mapping::EndpointIndependent)
        };
        eim(&self.a) && self.b.as_ref().is_none_or(eim)
    }

    /// A fresh testbed with this pair's sites.
    pub fn testbed(&self) -> io::Result<Testbed> {
        let builder = Testbed::builder().layout(self.layout);
        match self.b {
            Some(b) => builder.site(self.a).site(b),
            None => builder.site(self.a.hosts(self.a.hosts.max(2))),
        }
        .build()
    }
}

impl std::fmt::Display for PairKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.b {
            Some(b) => write!(f, "{} <-> {b}", self.a)?,
            None => write!(f, "2 hosts behind {}", self.a.nat)?,
        }
        if self.layout == Layout::Shared {
            f.write_str(" (shared)")?;
        }
        Ok(())
    }
}

/// The pair kinds of the standard matrix: issue 17's cases.
pub fn standard_kinds() -> Vec<PairKind> {
    use super::Filtering as F;
    use super::Mapping as M;
    let cone = NatSpec::cone();
    let guarded = cone.with_input_drop(true);
    let adf = NatSpec::new(M::EndpointIndependent, F::AddressDependent);
    let eif = NatSpec::new(M::EndpointIndependent, F::EndpointIndependent);
    let sym = NatSpec::symmetric().with_input_drop(true);
    let pair = |a: NatSpec, b: NatSpec| PairKind::new(SiteSpec::behind(a), SiteSpec::behind(b));
    let nested = |home: NatSpec, cgn: NatSpec| SiteSpec::behind(home).carrier(cgn);
    vec![
        pair(guarded, guarded),
        pair(cone, cone),
        pair(adf, adf),
        pair(eif, eif),
        pair(eif, cone),
        PairKind::new(nested(cone, cone), nested(cone, cone)),
        PairKind::new(nested(guarded, guarded), nested(guarded, guarded)),
        PairKind::new(nested(cone, cone), SiteSpec::behind(cone)),
        pair(cone, cone).layout(Layout::Shared),
        pair(guarded, guarded).layout(Layout::Shared),
        PairKind::same_nat(cone),
        PairKind::same_nat(cone.with_hairpin(true)),
        pair(eif, sym),
        pair(guarded, sym),
        pair(sym, sym),
    ]
}

/// One side's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `path=direct time_ms=N`.
    Direct(u64),
    /// `path=relay time_ms=N`.
    Relay(u64),
    /// Anything else: the reason, and the side's log.
    Failed(String),
}

/// Parse a program's log: its last line `path=direct|relay ... time_ms=N`.
pub fn parse_outcome(log: &str) -> Outcome {
    let last = log.lines().last().unwrap_or_default();
    let mut path = None;
    let mut ms = None;
    for field in last.split_whitespace() {
        if let Some(v) = field.strip_prefix("path=") {
            path = Some(v);
        } else if let Some(v) = field.strip_prefix("time_ms=") {
            ms = v.parse().ok();
        }
    }
    match (path, ms) {
        (Some("direct"), Some(ms)) => Outcome::Direct(ms),
        (Some("relay"), Some(ms)) => Outcome::Relay(ms),
        _ => Outcome::Failed(format!("last line {last:?}")),
    }
}

/// One trial: both sides' outcomes and logs.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Side a's outcome.
    pub a: Outcome,
    /// Side b's outcome.
    pub b: Outcome,
    /// Side a's log.
    pub log_a: String,
    /// Side b's log.
    pub log_b: String,
}

impl Trial {
    /// Both sides direct: the slower side's time.
    pub fn direct_ms(&self) -> Option<u64> {
        match (&self.a, &self.b) {
            (Outcome::Direct(a), Outcome::Direct(b)) => Some(*a.max(b)),
            _ => None,
        }
    }

    /// Both finished, at least one over the relay.
    pub fn relayed(&self) -> bool {
        let done = |o: &Outcome| !matches!(o, Outcome::Failed(_));
        done(&self.a) && done(&self.b) && self.direct_ms().is_none()
    }
}

/// Run one trial of `program` on a fresh testbed of `kind`; `timeout` is
/// each side's overall limit.
pub fn run_trial(program: &Program, kind: &PairKind, timeout: Duration) -> io::Result<Trial> {
    let t = kind.testbed()?;
    let _servers = start_rendezvous(&t.internet, program)?;
    let (ha, hb) = match kind.b {
        Some(_) => (t.site(0).host(), t.site(1).host()),
        None => (&t.site(0).hosts[0], &t.site(0).hosts[1]),
    };
    let rendezvous = format!("{SERVER_A}:3478");
    let stun = format!("{SERVER_B}:3478");
    let secs = format!("{}", timeout.as_secs_f64());
    let spawn = |ns: &Netns, addr: &str, id: &str, peer: &str| -> io::Result<Process> {
        let bind = format!("{addr}:{PORT}");
        let common = [
            "--bind",
            &bind,
            "--rendezvous",
            &rendezvous,
            "--id",
            id,
            "--peer",
            peer,
            "--timeout",
            &secs,
        ];
        match program {
            Program::Punch(bin) => {
                let mut args = vec!["connect", "--stun", &stun];
                args.extend(common);
                ns.spawn(bin, &args)
            }
            Program::PunchWith(bin, more) => {
                let mut args = vec!["connect", "--stun", &stun];
                args.extend(common);
                args.extend(more.iter().map(String::as_str));
                ns.spawn(bin, &args)
            }
            Program::Agent(bin) => ns.spawn(bin, &common),
        }
    };
    let mut pa = spawn(&ha.ns, &ha.addr.to_string(), "a", "b")?;
    let mut pb = spawn(&hb.ns, &hb.addr.to_string(), "b", "a")?;
    let finish = |p: &mut Process| -> io::Result<(Outcome, String)> {
        let status = p.wait_timeout(timeout + Duration::from_secs(5))?;
        let log = p.log();
        let outcome = match status {
            None => Outcome::Failed("did not exit".into()),
            Some(_) => parse_outcome(&log),
        };
        Ok((outcome, log))
    };
    let (a, log_a) = finish(&mut pa)?;
    let (b, log_b) = finish(&mut pb)?;
    Ok(Trial { a, b, log_a, log_b })
}

/// The punch example's rendezvous on SERVER_A:3478 (alternate port 3479)
/// and a second one on SERVER_B:3478 (an observer for the mapping test).
fn start_rendezvous(internet: &Netns, program: &Program) -> io::Result<[Process; 2]> {
    let rendezvous_bin = match program {
        Program::Punch(p) | Program::PunchWith(p, _) => p.clone(),
        // The agent talks to the punch example's rendezvous, built next to it.
        Program::Agent(p) => p.with_file_name("punch"),
    };
    let a = format!("{SERVER_A}:3478");
    let b = format!("{SERVER_B}:3478");
    let pa = internet.spawn(
        &rendezvous_bin,
        &["rendezvous", "--listen", &a, "--alternate-port", "3479"],
    )?;
    let pb = internet.spawn(&rendezvous_bin, &["rendezvous", "--listen", &b])?;
    let up = wait_until(Duration::from_secs(5), || {
        let out = internet.run_ok("ss", &["-Hlun"]).unwrap_or_default();
        out.contains(&a) && out.contains(&b)
    });
    if !up {
        return Err(io::Error::other(format!(
            "rendezvous did not listen:\n{}\n{}",
            pa.log(),
            pb.log()
        )));
    }
    Ok([pa, pb])
}

/// A pair kind's figures over its trials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The pair kind, as text.
    pub kind: String,
    /// Whether the target is 100 % direct ([`PairKind::direct_expected`]).
    pub direct_expected: bool,
    /// Trials run.
    pub trials: usize,
    /// Trials direct on both sides.
    pub direct: usize,
    /// Median time to direct (ms), over the direct trials.
    pub median_ms: Option<u64>,
    /// 90th percentile time to direct (ms, nearest rank).
    pub p90_ms: Option<u64>,
    /// Trials relayed.
    pub relayed: usize,
    /// Trials in which a side failed.
    pub failed: usize,
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of sorted `values`.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

impl Row {
    /// Summarise `trials` of `kind`.
    pub fn new(kind: &PairKind, trials: &[Trial]) -> Self {
        let mut times: Vec<u64> = trials.iter().filter_map(Trial::direct_ms).collect();
        times.sort_unstable();
        let relayed = trials.iter().filter(|t| t.relayed()).count();
        Row {
            kind: kind.to_string(),
            direct_expected: kind.direct_expected(),
            trials: trials.len(),
            direct: times.len(),
            median_ms: percentile(&times, 50),
            p90_ms: percentile(&times, 90),
            relayed,
            failed: trials.len() - times.len() - relayed,
        }
    }

    /// Whether the row meets issue 17's target: every trial direct where
    /// direct is expected, every trial connected (direct or relayed)
    /// elsewhere.
    pub fn meets_target(&self) -> bool {
        if self.direct_expected {
            self.direct == self.trials
        } else {
            self.failed == 0
        }
    }
}

/// The table of `rows`: pair kind, target, direct/trials, median and p90
/// time to direct, relayed and failed counts, and whether the target is
/// met.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.kind.len()).max().unwrap_or(0).max(9);
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut out = format!(
        "{:width$}  {:7}  {:>7}  {:>9}  {:>6}  {:>7}  {:>6}  {}\n",
        "pair kind", "target", "direct", "median_ms", "p90_ms", "relayed", "failed", "met"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:width$}  {:7}  {:>7}  {:>9}  {:>6}  {:>7}  {:>6}  {}",
            r.kind,
            if r.direct_expected {
                "direct"
            } else {
                "connect"
            },
            format!("{}/{}", r.direct, r.trials),
            ms(r.median_ms),
            ms(r.p90_ms),
            r.relayed,
            r.failed,
            if r.meets_target() { "yes" } else { "NO" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(a: Outcome, b: Outcome) -> Trial {
        Trial {
            a,
            b,
            log_a: String::new(),
            log_b: String::new(),
        }
    }

    #[test]
    fn outcomes_come_from_the_last_line() {
        assert_eq!(
            parse_outcome("nat mapping=X\nprobes_sent=3\npath=direct time_ms=42\n"),
            Outcome::Direct(42)
        );
        assert_eq!(
            parse_outcome("path=direct remote=1.2.3.4:5 time_ms=7"),
            Outcome::Direct(7)
        );
        assert_eq!(
            parse_outcome("path=relay time_ms=3001"),
            Outcome::Relay(3001)
        );
        assert!(matches!(
            parse_outcome("path=direct time_ms=1\nfailed: no offer"),
            Outcome::Failed(_)
        ));
        assert!(matches!(parse_outcome(""), Outcome::Failed(_)));
    }

    #[test]
    fn rows_count_direct_relayed_and_failed_trials() {
        let kind = PairKind::new(
            SiteSpec::behind(NatSpec::cone()),
            SiteSpec::behind(NatSpec::cone()),
        );
        let trials = [
            trial(Outcome::Direct(10), Outcome::Direct(30)),
            trial(Outcome::Direct(20), Outcome::Direct(5)),
            trial(Outcome::Direct(50), Outcome::Relay(3000)),
            trial(Outcome::Failed("x".into()), Outcome::Direct(1)),
        ];
        let row = Row::new(&kind, &trials);
        assert_eq!(row.trials, 4);
        assert_eq!(row.direct, 2);
        assert_eq!(row.median_ms, Some(20));
        assert_eq!(row.p90_ms, Some(30));
        assert_eq!(row.relayed, 1);
        assert_eq!(row.failed, 1);
        assert!(row.direct_expected);
        assert!(!row.meets_target());
        let text = table(&[row]);
        assert!(
            text.contains("eim-apdf <-> eim-apdf  direct       2/4"),
            "{text}"
        );
    }

    #[test]
    fn direct_is_expected_only_where_every_nat_maps_independently() {
        let cone = SiteSpec::behind(NatSpec::cone());
        let sym = SiteSpec::behind(NatSpec::symmetric());
        assert!(PairKind::new(cone, cone.carrier(NatSpec::cone())).direct_expected());
        assert!(!PairKind::new(cone, sym).direct_expected());
        assert!(!PairKind::new(cone, cone.carrier(NatSpec::symmetric())).direct_expected());
        assert!(PairKind::same_nat(NatSpec::symmetric()).direct_expected());
        let relayed = Row::new(
            &PairKind::new(sym, sym),
            &[trial(Outcome::Relay(1), Outcome::Relay(2))],
        );
        assert!(relayed.meets_target());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50), Some(10));
        assert_eq!(percentile(&v, 90), Some(18));
        assert_eq!(percentile(&[7], 90), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn standard_kinds_have_distinct_names() {
        let names: std::collections::BTreeSet<String> =
            standard_kinds().iter().map(|k| k.to_string()).collect();
        assert_eq!(names.len(), standard_kinds().len());
    }
}
