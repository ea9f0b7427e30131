//! A crowd of real `wow-node` processes, each in its own namespace with its
//! own TAP and guest, on one shared underlay bridge (root only).
//!
//! A hub namespace holds bridge `br0`; member `i` has a veth `eth0` on the
//! bridge (port `v{i}` in the hub) with underlay address `172.20.x.y/16`,
//! runs `wow-node up` (TAP `wow0`), and its namespace is the guest: ISC
//! dhclient on `wow0` with host name `g{i}`. Member 0 starts the ring and
//! is every other member's bootstrap node.
//!
//! The crowd reads each node's `status --json` straight from its control
//! socket and judges the ring with [`Crowd::snapshot`]: a live node is
//! *consistent* when it is joined and its ring neighbours include its
//! successor and its predecessor in the sorted set of live nodes' ring
//! addresses. [`Crowd::kill`] and [`Crowd::restart`] churn nodes (SIGKILL,
//! then the same state directory, so the same ring address and guest
//! address); [`Crowd::probe`] pings between guests by address and by name
//! and looks names up through the node's DNS (a DHT lookup on a miss).
//! CPU time and peak RSS of every incarnation are read from `/proc` before
//! it dies. Used by `src/bin/crowd.rs` (`scripts/hundred.sh`) and the
//! node's `tests/crowd.rs`.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Netns, Process, TempDir, wait_until};

/// How a crowd is made.
#[derive(Debug, Clone)]
pub struct CrowdOptions {
    /// Number of nodes (member 0 is the bootstrap node).
    pub nodes: usize,
    /// The `wow-node` binary.
    pub bin: PathBuf,
    /// `RUST_LOG` for the nodes.
    pub rust_log: String,
    /// Where logs of crashed nodes, and of every incarnation of every
    /// node, are copied (none: not kept).
    pub out_dir: Option<PathBuf>,
    /// Configure each node's underlay address as `advertise`d, so that it
    /// advertises an endpoint even when its STUN discovery at start gets
    /// no answer (else, bound to `0.0.0.0`, it advertises only what the
    /// bootstrap node's STUN answer told it).
    pub advertise: bool,
}

/// One node, its namespace and its guest.
#[derive(Debug)]
pub struct Member {
    /// Index in the crowd.
    pub index: usize,
    /// The namespace (host of the node and guest on `wow0`).
    pub ns: Netns,
    /// State directory (config, key, leases, control socket).
    pub state: TempDir,
    /// Underlay address on the bridge.
    pub underlay: Ipv4Addr,
    /// The running node, if any.
    pub node: Option<Process>,
    /// Its ring address (known after its first status answer; stable
    /// across restarts).
    pub overlay: Option<String>,
    /// The guest's leased address, once known.
    pub guest: Option<Ipv4Addr>,
    /// When the current incarnation started.
    pub started: Option<Instant>,
    /// CPU time (clock ticks) of incarnations that are gone.
    pub cpu_ticks_dead: u64,
    /// Largest VmHWM (KiB) of any incarnation seen so far.
    pub peak_rss_kb: u64,
    /// Restarts by churn.
    pub restarts: u32,
    /// Incarnations that exited on their own.
    pub crashes: u32,
    dhcp: Option<JoinHandle<Option<Ipv4Addr>>>,
}

/// The guest's host name of member `i`.
pub fn guest_name(i: usize) -> String {
    format!("g{i}")
}

/// Underlay address of member `i`.
pub fn underlay_addr(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 20, 0, 0)) + n)
}

impl Member {
    fn config(&self, bootstrap: Option<Ipv4Addr>, advertise: bool) -> String {
        let bootstrap = bootstrap
            .map(|b| format!("\"{b}:4000\""))
            .unwrap_or_default();
        let advertise = if advertise {
            format!("\"{}:4000\"", self.underlay)
        } else {
            String::new()
        };
        format!(
            "[node]\nstate_dir = \"{}\"\nlisten = \"0.0.0.0:4000\"\nbootstrap = [{bootstrap}]\nadvertise = [{advertise}]\nlan_discovery = false\n\n[network]\ncidr = \"10.128.0.0/16\"\n",
            self.state.path().display()
        )
    }

    fn spawn_node(&mut self, opts: &CrowdOptions) -> io::Result<()> {
        let config = self.state.path().join("node.toml");
        let mut cmd = self.ns.command(&opts.bin);
        cmd.arg("up")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", &opts.rust_log);
        self.node = Some(Process::spawn(cmd)?);
        self.started = Some(Instant::now());
        Ok(())
    }

    /// Whether the node process runs.
    pub fn is_live(&mut self) -> bool {
        self.node
            .as_mut()
            .is_some_and(|p| p.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// The node's status from its control socket, parsed.
    pub fn status(&self) -> Option<serde_json::Value> {
        status_at(self.state.path())
    }

    /// CPU ticks and VmHWM/VmRSS (KiB) of the current incarnation.
    pub fn usage(&self) -> Option<(u64, u64, u64)> {
        let pid = self.node.as_ref()?.id();
        proc_usage(pid)
    }

    /// Whether the DHCP client of the current incarnation has finished.
    pub fn leased(&self) -> bool {
        self.dhcp.is_none()
    }

    fn collect_dhcp(&mut self) {
        if self.dhcp.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(h) = self.dhcp.take()
            && let Ok(Some(addr)) = h.join()
        {
            self.guest = Some(addr);
        }
    }

    /// Record the usage of the current incarnation, then SIGKILL it and
    /// stop its guest's DHCP client.
    fn kill(&mut self) {
        if let Some((ticks, hwm, _)) = self.usage() {
            self.cpu_ticks_dead += ticks;
            self.peak_rss_kb = self.peak_rss_kb.max(hwm);
        }
        if let Some(mut p) = self.node.take() {
            p.kill();
        }
        kill_dhclient(self.state.path());
        if let Some(h) = self.dhcp.take() {
            let _ = h.join();
        }
    }
}

/// The kernel's IPv4 neighbour (ARP) table is one table for every network
/// namespace, limited by the initial namespace's `gc_thresh3` (1,024 by
/// default): a crowd of N nodes on one bridge needs up to N × (N + 1)
/// entries (every underlay peer, and each guest's gateway). Past the limit
/// no new entry can be made ("neighbor table overflow!" in the kernel
/// log): sends to a host not yet resolved fail with ENOBUFS, so new nodes
/// get no answer from the bootstrap node and guests cannot reach their
/// gateway. Raises `gc_thresh1..3` (never lowers them) to fit `nodes`,
/// saying so on stderr; the setting is machine-wide and stays.
pub fn raise_neighbour_limits(nodes: usize) -> io::Result<()> {
    let need = nodes * (nodes + 1);
    for (name, want) in [
        ("gc_thresh1", need / 2),
        ("gc_thresh2", need),
        ("gc_thresh3", 2 * need),
    ] {
        let path = format!("/proc/sys/net/ipv4/neigh/default/{name}");
        let now: usize = std::fs::read_to_string(&path)?.trim().parse().unwrap_or(0);
        if now < want {
            std::fs::write(&path, want.to_string())?;
            eprintln!(
                "net.ipv4.neigh.default.{name}: {now} -> {want} (one ARP table for all namespaces)"
            );
        }
    }
    Ok(())
}

/// `/proc/PID`: CPU ticks (user + system), VmHWM and VmRSS in KiB.
pub fn proc_usage(pid: u32) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based): 12 and 13 here.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((ticks, kb("VmHWM:"), kb("VmRSS:")))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub const CLOCK_TICKS: u64 = 100;

/// A node's `status --json` from the control socket in `state_dir`.
pub fn status_at(state_dir: &Path) -> Option<serde_json::Value> {
    let mut s = std::os::unix::net::UnixStream::connect(state_dir.join("control.sock")).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"json\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(&out).ok()
}

fn kill_dhclient(state: &Path) {
    if let Ok(pid) = std::fs::read_to_string(state.join("dhclient.pid")) {
        let _ = Command::new("kill")
            .args(["-9", pid.trim()])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(state.join("dhclient.pid"));
    }
}

/// Waits for TAP `wow0` in namespace `ns` (up to 15 s), then runs ISC
/// dhclient once on it with host name `host` (it stays as a daemon, its
/// pid in `state/dhclient.pid`); the leased address.
fn dhcp(ns: &str, state: &Path, host: &str) -> Option<Ipv4Addr> {
    let in_ns = |program: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let up = wait_until(Duration::from_secs(15), || {
        in_ns("ip")
            .args(["-o", "link", "show", "wow0"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("UP"))
    });
    if !up {
        return None;
    }
    let conf = state.join("dhclient.conf");
    std::fs::write(
        &conf,
        format!("send host-name \"{host}\";\nrequest subnet-mask, routers, domain-name, domain-name-servers, domain-search, interface-mtu;\ntimeout 40;\n"),
    )
    .ok()?;
    let p = |f: &str| state.join(f).to_string_lossy().into_owned();
    let _ = in_ns("timeout")
        .args([
            "45",
            "dhclient",
            "-1",
            "-4",
            "-cf",
            &p("dhclient.conf"),
            "-lf",
            &p("dhclient.leases"),
            "-pf",
            &p("dhclient.pid"),
            "wow0",
        ])
        .stdout(Stdio::null())
        .status();
    let out = in_ns("ip")
        .args(["-4", "-o", "addr", "show", "dev", "wow0"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.position(|w| w == "inet")?;
    words.next()?.split('/').next()?.parse().ok()
}

/// The ring as the nodes' statuses describe it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Nodes whose process runs.
    pub live: usize,
    /// Live nodes that answered their status.
    pub answered: usize,
    /// Live nodes that say they joined.
    pub joined: usize,
    /// Live nodes whose ring neighbours include their successor and their
    /// predecessor among the live nodes.
    pub consistent: usize,
    /// Indices of live nodes that are not consistent.
    pub inconsistent: Vec<usize>,
    /// Nodes found dead that were meant to run (crashed), with the tail of
    /// their log.
    pub crashed: Vec<(usize, String)>,
}

impl Snapshot {
    /// Every live node consistent (and at least one live).
    pub fn converged(&self) -> bool {
        self.live > 0 && self.consistent == self.live
    }

    /// Consistent share of live nodes.
    pub fn fraction(&self) -> f64 {
        if self.live == 0 {
            0.0
        } else {
            self.consistent as f64 / self.live as f64
        }
    }
}

/// One probe between two guests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Probe {
    /// One ping by virtual IP answered within 1 s.
    pub by_ip: bool,
    /// The target answered by virtual IP within 3 s: the first ping, or
    /// one of up to two more (one echo, 1 s timeout, each); a second
    /// figure beside [`by_ip`](Self::by_ip), which counts the first echo
    /// only.
    pub by_ip_3s: bool,
    /// One ping by name (`gJ.wow.internal`, resolved through the node's
    /// DNS) answered.
    pub by_name: bool,
    /// `dig @gateway gJ.wow.internal` answered the target's address.
    pub lookup: bool,
    /// dig's query time, ms.
    pub lookup_ms: Option<u64>,
}

/// The crowd: a hub with the underlay bridge and the members.
#[derive(Debug)]
pub struct Crowd {
    /// The options it was made with.
    pub opts: CrowdOptions,
    /// Members, index 0 the bootstrap node.
    pub members: Vec<Member>,
    hub: Netns,
}

impl Crowd {
    /// Makes the hub, its bridge and every member's namespace, veth and
    /// state directory with its `node.toml`; starts nothing.
    pub fn new(opts: CrowdOptions) -> io::Result<Crowd> {
        raise_neighbour_limits(opts.nodes)?;
        let hub = Netns::new("hub")?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.link_up("br0")?;
        let mut members = Vec::with_capacity(opts.nodes);
        for i in 0..opts.nodes {
            let ns = Netns::new("c")?;
            let port = format!("v{i}");
            ns.veth_to(&hub, "eth0", &port)?;
            hub.ip(&["link", "set", &port, "master", "br0"])?;
            let underlay = underlay_addr(i);
            ns.addr_add("eth0", &format!("{underlay}/16"))?;
            ns.set_resolv_conf("")?;
            let m = Member {
                index: i,
                ns,
                state: TempDir::new("cs")?,
                underlay,
                node: None,
                overlay: None,
                guest: None,
                started: None,
                cpu_ticks_dead: 0,
                peak_rss_kb: 0,
                restarts: 0,
                crashes: 0,
                dhcp: None,
            };
            let bootstrap = (i > 0).then(|| underlay_addr(0));
            std::fs::write(
                m.state.path().join("node.toml"),
                m.config(bootstrap, opts.advertise),
            )?;
            members.push(m);
        }
        Ok(Crowd { opts, members, hub })
    }

    /// Starts members `range` at once (each node, then its guest's DHCP
    /// client in the background).
    pub fn start(&mut self, range: std::ops::Range<usize>) -> io::Result<()> {
        for i in range {
            self.launch(i)?;
        }
        Ok(())
    }

    fn launch(&mut self, i: usize) -> io::Result<()> {
        let opts = self.opts.clone();
        let m = &mut self.members[i];
        m.spawn_node(&opts)?;
        let ns = m.ns.name().to_string();
        let state = m.state.path().to_path_buf();
        let host = guest_name(i);
        m.dhcp = Some(std::thread::spawn(move || dhcp(&ns, &state, &host)));
        Ok(())
    }

    /// Waits until the guests of `range` have their leases (or their DHCP
    /// client gave up) or `timeout` passes; how many are leased.
    pub fn wait_leases(&mut self, range: std::ops::Range<usize>, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            for m in &mut self.members[range.clone()] {
                m.collect_dhcp();
            }
            if self.members[range.clone()].iter().all(Member::leased) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.members[range]
            .iter()
            .filter(|m| m.leased() && m.guest.is_some())
            .count()
    }

    /// SIGKILLs member `i`'s node (its usage recorded first).
    pub fn kill(&mut self, i: usize) {
        self.keep_log(i);
        self.members[i].kill();
    }

    /// With [`CrowdOptions::out_dir`], writes the log of member `i`'s
    /// current incarnation there (`node<i>-<namespace>-<restarts>.log`), so that a
    /// failed probe can be followed through every node it crossed.
    fn keep_log(&self, i: usize) {
        let (Some(dir), Some(node)) = (&self.opts.out_dir, self.members[i].node.as_ref()) else {
            return;
        };
        let _ = std::fs::create_dir_all(dir);
        let m = &self.members[i];
        let name = format!("node{i}-{}-{}.log", m.ns.name(), m.restarts);
        let _ = std::fs::write(dir.join(name), node.log());
    }

    /// Starts member `i` again on its state directory; its guest's DHCP
    /// client runs in the background.
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        self.members[i].restarts += 1;
        self.launch(i)
    }

    /// Reads every live node's status and judges the ring. Nodes found
    /// dead are counted as crashes, their logs kept, and started again.
    pub fn snapshot(&mut self) -> Snapshot {
        let mut snap = Snapshot::default();
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            m.collect_dhcp();
            if m.node.is_some() && !m.is_live() {
                m.crashes += 1;
                let log = m.node.as_ref().map(Process::log).unwrap_or_default();
                let tail = tail(&log, 40);
                if let Some(dir) = &self.opts.out_dir {
                    let _ = std::fs::create_dir_all(dir);
                    let _ =
                        std::fs::write(dir.join(format!("crash-node{i}-{}.log", m.crashes)), &log);
                }
                snap.crashed.push((i, tail));
                m.kill();
                let _ = self.launch(i);
            }
        }
        let states: Vec<Option<PathBuf>> = self
            .members
            .iter_mut()
            .map(|m| m.is_live().then(|| m.state.path().to_path_buf()))
            .collect();
        let statuses = fetch_all(&states);
        let mut live_addrs = Vec::new();
        for (i, st) in statuses.iter().enumerate() {
            if states[i].is_none() {
                continue;
            }
            snap.live += 1;
            if let Some(st) = st {
                snap.answered += 1;
                if let Some(a) = st["overlay_address"].as_str() {
                    self.members[i].overlay = Some(a.to_string());
                }
                if let Some(g) = st["guest"]["address"].as_str().and_then(|g| g.parse().ok()) {
                    self.members[i].guest = Some(g);
                }
            }
            if let Some(a) = &self.members[i].overlay {
                live_addrs.push(a.clone());
            }
        }
        live_addrs.sort();
        live_addrs.dedup();
        for (i, st) in statuses.iter().enumerate() {
            if states[i].is_none() {
                continue;
            }
            let ok = st.as_ref().is_some_and(|st| {
                let joined = st["joined"].as_bool() == Some(true);
                if joined {
                    snap.joined += 1;
                }
                let Some(me) = st["overlay_address"].as_str() else {
                    return false;
                };
                let near: HashSet<&str> = st["ring_neighbours"]
                    .as_array()
                    .map(|v| v.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                joined && ring_ok(&live_addrs, me, &near)
            });
            if ok {
                snap.consistent += 1;
            } else {
                snap.inconsistent.push(i);
            }
        }
        snap
    }

    /// Takes a [`Crowd::snapshot`] every second until the ring has
    /// converged and every guest's DHCP client has finished, or `timeout`
    /// passes; `each` sees every snapshot and the time since the start.
    /// Returns the time it took (`None`: not in time) and the last
    /// snapshot.
    pub fn wait_converged(
        &mut self,
        timeout: Duration,
        mut each: impl FnMut(&Snapshot, Duration),
    ) -> (Option<Duration>, Snapshot) {
        let start = Instant::now();
        loop {
            let snap = self.snapshot();
            each(&snap, start.elapsed());
            if snap.converged() && self.members.iter().all(Member::leased) {
                return (Some(start.elapsed()), snap);
            }
            if start.elapsed() > timeout {
                return (None, snap);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The last `lines` lines of member `i`'s node log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let log = self.members[i]
            .node
            .as_ref()
            .map(Process::log)
            .unwrap_or_default();
        tail(&log, lines)
    }

    /// Members whose guest's address is known.
    pub fn leased(&self) -> Vec<usize> {
        self.members
            .iter()
            .filter(|m| m.guest.is_some())
            .map(|m| m.index)
            .collect()
    }

    /// Pings from member `from`'s guest to member `to`'s by address and by
    /// name, and looks the name up with dig at the node's DNS.
    pub fn probe(&self, from: usize, to: usize) -> Probe {
        probe(self.members[from].ns.name(), to, self.members[to].guest)
    }

    /// Everything [`Crowd::probe`] needs, so that probes can run on other
    /// threads: (namespace, target index, target address).
    pub fn probe_args(&self, from: usize, to: usize) -> (String, usize, Option<Ipv4Addr>) {
        (
            self.members[from].ns.name().to_string(),
            to,
            self.members[to].guest,
        )
    }

    /// Splits the underlay in two: the bridge drops every frame between
    /// the members of `side` and the others.
    pub fn partition(&self, side: &[usize]) -> io::Result<()> {
        let a: Vec<String> = side.iter().map(|i| format!("\"v{i}\"")).collect();
        let b: Vec<String> = (0..self.members.len())
            .filter(|i| !side.contains(i))
            .map(|i| format!("\"v{i}\""))
            .collect();
        let (a, b) = (a.join(", "), b.join(", "));
        self.hub.nft(&format!(
            "table bridge crowd_partition {{\n chain forward {{\n  type filter hook forward priority 0;\n  iifname {{ {a} }} oifname {{ {b} }} drop\n  iifname {{ {b} }} oifname {{ {a} }} drop\n }}\n}}\n"
        ))
    }

    /// Removes the partition.
    pub fn heal(&self) -> io::Result<()> {
        self.hub
            .run_ok("nft", &["delete", "table", "bridge", "crowd_partition"])
            .map(drop)
    }

    /// Total CPU seconds of every incarnation so far and each member's
    /// peak RSS (KiB) and current RSS (KiB, 0 when not running).
    pub fn usage(&mut self) -> (f64, Vec<u64>, Vec<u64>) {
        let mut ticks = 0;
        let mut peaks = Vec::new();
        let mut now = Vec::new();
        for m in &mut self.members {
            ticks += m.cpu_ticks_dead;
            let (t, hwm, rss) = m.usage().unwrap_or((0, 0, 0));
            ticks += t;
            m.peak_rss_kb = m.peak_rss_kb.max(hwm);
            peaks.push(m.peak_rss_kb);
            now.push(rss);
        }
        (ticks as f64 / CLOCK_TICKS as f64, peaks, now)
    }

    /// Stops every node (SIGKILL: a graceful leave of a hundred nodes on
    /// an overloaded machine takes minutes) after recording its usage.
    pub fn stop_all(&mut self) {
        let _ = self.usage();
        for i in 0..self.members.len() {
            self.keep_log(i);
        }
        for m in &mut self.members {
            if let Some(mut p) = m.node.take() {
                p.kill();
            }
            kill_dhclient(m.state.path());
            if let Some(h) = m.dhcp.take() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        for m in &mut self.members {
            kill_dhclient(m.state.path());
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Whether `me`'s ring neighbours `near` include its successor and its
/// predecessor in `sorted` (the live nodes' ring addresses, sorted).
pub fn ring_ok(sorted: &[String], me: &str, near: &HashSet<&str>) -> bool {
    let Some(pos) = sorted.iter().position(|a| a == me) else {
        return false;
    };
    if sorted.len() < 2 {
        return true;
    }
    let succ = &sorted[(pos + 1) % sorted.len()];
    let pred = &sorted[(pos + sorted.len() - 1) % sorted.len()];
    near.contains(succ.as_str()) && near.contains(pred.as_str())
}

/// Statuses of the nodes whose state directories are given, read by eight
/// threads.
fn fetch_all(states: &[Option<PathBuf>]) -> Vec<Option<serde_json::Value>> {
    let out = Arc::new(Mutex::new(vec![None; states.len()]));
    let next = Arc::new(Mutex::new(0usize));
    std::thread::scope(|s| {
        for _ in 0..8 {
            let out = Arc::clone(&out);
            let next = Arc::clone(&next);
            s.spawn(move || {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        let i = *n;
                        *n += 1;
                        i
                    };
                    if i >= states.len() {
                        return;
                    }
                    if let Some(dir) = &states[i] {
                        let st = status_at(dir);
                        out.lock().unwrap()[i] = st;
                    }
                }
            });
        }
    });
    Arc::try_unwrap(out)
        .map(|m| m.into_inner().unwrap_or_default())
        .unwrap_or_default()
}

/// [`Crowd::probe`] from namespace `ns` to member `to` whose guest has
/// address `addr`.
pub fn probe(ns: &str, to: usize, addr: Option<Ipv4Addr>) -> Probe {
    let run = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
    };
    let name = format!("{}.wow.internal", guest_name(to));
    let mut p = Probe::default();
    if let Some(addr) = addr {
        let a = addr.to_string();
        p.by_ip = run(&["ping", "-n", "-c1", "-W1", &a]).is_ok_and(|o| o.status.success());
        p.by_ip_3s = p.by_ip
            || (0..2)
                .any(|_| run(&["ping", "-n", "-c1", "-W1", &a]).is_ok_and(|o| o.status.success()));
        if let Ok(o) = run(&[
            "dig",
            "+noall",
            "+answer",
            "+stats",
            "+time=2",
            "+tries=1",
            "@10.128.0.1",
            &name,
        ]) {
            let text = String::from_utf8_lossy(&o.stdout);
            p.lookup = text
                .lines()
                .any(|l| !l.starts_with(';') && l.split_whitespace().last() == Some(a.as_str()));
            p.lookup_ms = text
                .lines()
                .find_map(|l| l.strip_prefix(";; Query time: "))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok());
        }
    }
    p.by_name =
        run(&["timeout", "4", "ping", "-c1", "-W1", &name]).is_ok_and(|o| o.status.success());
    p
}

/// A small deterministic generator (xorshift64*) to pick nodes; not for
/// anything secret.
#[derive(Debug, Clone)]
pub struct Pick(u64);

impl Pick {
    /// Seeded with `seed` (0 is replaced).
    pub fn new(seed: u64) -> Pick {
        Pick(seed.max(1))
    }

    /// The next number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }

    /// `k` distinct members of `from`, in random order.
    pub fn sample(&mut self, from: &[usize], k: usize) -> Vec<usize> {
        let mut v = from.to_vec();
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
        v.truncate(k);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_ok_needs_both_neighbours() {
        let sorted: Vec<String> = ["a1", "b2", "c3", "d4"].map(String::from).to_vec();
        let near: HashSet<&str> = ["b2", "d4"].into_iter().collect();
        assert!(ring_ok(&sorted, "c3", &near));
        assert!(!ring_ok(&sorted, "b2", &near));
        // Wrap-around: a1's predecessor is d4.
        let near: HashSet<&str> = ["b2", "c3"].into_iter().collect();
        assert!(!ring_ok(&sorted, "a1", &near));
        let near: HashSet<&str> = ["b2", "d4"].into_iter().collect();
        assert!(ring_ok(&sorted, "a1", &near));
        assert!(!ring_ok(&sorted, "zz", &near));
    }

    #[test]
    fn underlay_addresses_are_distinct_hosts() {
        assert_eq!(underlay_addr(0), Ipv4Addr::new(172, 20, 0, 1));
        assert_eq!(underlay_addr(255), Ipv4Addr::new(172, 20, 1, 0));
        assert_ne!(underlay_addr(254), underlay_addr(255));
    }

    #[test]
    fn sample_is_distinct() {
        let mut p = Pick::new(7);
        let s = p.sample(&(0..100).collect::<Vec<_>>(), 10);
        let set: HashSet<_> = s.iter().collect();
        assert_eq!(set.len(), 10);
    }
}
