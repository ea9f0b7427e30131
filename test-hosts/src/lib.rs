//! Throw-away test hosts made of Linux network namespaces.
//!
//! Tests that exercise the real Linux network stack (TAP devices, veth pairs,
//! real DHCP/DNS clients, nftables NAT) build their topology with this crate.
//! Every object is a drop guard: namespaces (and with them every interface
//! inside), processes and per-namespace `/etc/netns/NAME` files are removed
//! when the guard drops, also when the test panics. Names are unique per
//! process and per call, so tests running in parallel never collide.
//!
//! Tests call [`require`] first: it returns `false` (and prints the reason)
//! when the test cannot run here, for example when not root. With
//! `WOW_REQUIRE_ALL=1` (set by `.ci/run`) every skip, here or through
//! [`skip`], is a failure instead.
//!
//! ```no_run
//! use wow_test_hosts::{require, Netns};
//!
//! if !require("my_test", &["ping"]) {
//!     return;
//! }
//! let a = Netns::new("a").unwrap();
//! let b = Netns::new("b").unwrap();
//! a.veth_to(&b, "va", "vb").unwrap();
//! a.addr_add("va", "10.9.0.1/24").unwrap();
//! b.addr_add("vb", "10.9.0.2/24").unwrap();
//! a.run_ok("ping", &["-c1", "-W1", "10.9.0.2"]).unwrap();
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod alloc_count;
pub mod crowd;
pub mod miniupnpd;
pub mod nat;

pub use nat::{Filtering, Layout, Mapping, NatSpec, SiteSpec, Testbed};

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `wow{tag}{pid}x{n}`.
///
/// Short enough (with a tag of at most 3 characters) to serve as an
/// interface name (15 bytes).
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("w{tag}{}x{n}", std::process::id() % 100_000)
}

/// Whether the effective user is root (read from `/proc/self/status`).
pub fn is_root() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// Whether `program` is found on `PATH` (or is an existing path).
pub fn tool_available(program: &str) -> bool {
    find_tool(program).is_some()
}

/// Full path of `program` on `PATH`, also searching the sbin directories.
pub fn find_tool(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether a skip must fail instead: `WOW_REQUIRE_ALL=1` is set (as CI
/// sets it), or its older name `WOW_REQUIRE_NETNS=1`.
pub fn skips_forbidden() -> bool {
    ["WOW_REQUIRE_ALL", "WOW_REQUIRE_NETNS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| v == "1"))
}

/// Skip `test` (or a part of it) for `reason`: prints `skipping TEST:
/// REASON`, or panics when [`skips_forbidden`], so a machine that silently
/// lost a capability fails loudly. Every skip in the suite goes through here.
pub fn skip(test: &str, reason: &str) {
    if skips_forbidden() {
        panic!("{test}: {reason} (WOW_REQUIRE_ALL=1: nothing may skip)");
    }
    eprintln!("skipping {test}: {reason}");
}

/// Decide whether a namespace test can run here.
///
/// Returns `true` when the process is root, `ip netns` works, and every tool
/// in `tools` is installed. Otherwise [`skip`]s (prints `skipping TEST:
/// REASON`, or panics under `WOW_REQUIRE_ALL=1`) and returns `false`.
pub fn require(test: &str, tools: &[&str]) -> bool {
    let reason = if !is_root() {
        Some("needs root for network namespaces".to_string())
    } else if !tool_available("ip") {
        Some("`ip` (iproute2) is not installed".to_string())
    } else {
        tools
            .iter()
            .find(|t| !tool_available(t))
            .map(|t| format!("`{t}` is not installed"))
    };
    match reason {
        None => true,
        Some(reason) => {
            skip(test, &reason);
            false
        }
    }
}

/// Run a command to completion and return its output, or an error carrying
/// the command line and its stderr when it exits non-zero.
pub fn run_checked(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )))
    }
}

fn ip(args: &[&str]) -> io::Result<Output> {
    run_checked(Command::new("ip").args(args))
}

/// A network namespace, deleted (with every process and interface in it)
/// when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create a fresh namespace whose name starts with `tag` and bring its
    /// loopback up.
    pub fn new(tag: &str) -> io::Result<Self> {
        let name = unique_name(tag);
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A [`Command`] that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Run `program args…` in the namespace and return its output, whatever
    /// its exit status.
    pub fn run(&self, program: impl AsRef<OsStr>, args: &[&str]) -> io::Result<Output> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Run `program args…` in the namespace; an error unless it exits 0.
    /// Returns its standard output as text.
    pub fn run_ok(&self, program: impl AsRef<OsStr>, args: &[&str]) -> io::Result<String> {
        let out = run_checked(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ip ARGS…` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        let out = ip(&full)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Spawn a long-running process in the namespace; it is killed when the
    /// returned guard drops. Its stdout and stderr go to a log file.
    pub fn spawn(&self, program: impl AsRef<OsStr>, args: &[&str]) -> io::Result<Process> {
        let mut cmd = self.command(program);
        cmd.args(args);
        Process::spawn(cmd)
    }

    /// Start coturn's `turnserver` in the namespace, listening and relaying
    /// on `ip` (UDP port 3478, relayed ports 50000–50100), with long-term
    /// credentials `user` (`name:password`, realm `wow.test`), its database
    /// and pid file in `state`; returns once it listens (error after 10 s).
    pub fn spawn_coturn(&self, ip: &str, user: &str, state: &Path) -> io::Result<Process> {
        let db = state.join("turndb");
        let pid = state.join("turnserver.pid");
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let process = self.spawn(
            "turnserver",
            &[
                "-n",
                "--listening-ip",
                ip,
                "--relay-ip",
                ip,
                "--listening-port",
                "3478",
                "--min-port",
                "50000",
                "--max-port",
                "50100",
                "--lt-cred-mech",
                "--user",
                user,
                "--realm",
                "wow.test",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--log-file",
                "stdout",
                "--simple-log",
                "--userdb",
                &path(&db),
                "--pidfile",
                &path(&pid),
            ],
        )?;
        let listen = format!("{ip}:3478");
        let up = wait_until(Duration::from_secs(10), || {
            self.run_ok("ss", &["-Hlun"])
                .is_ok_and(|s| s.contains(&listen))
        });
        if up {
            Ok(process)
        } else {
            Err(io::Error::other(format!(
                "coturn did not listen on {listen}:\n{}",
                process.log()
            )))
        }
    }

    /// Create a veth pair with `local` in this namespace and `remote` in
    /// `other`, both brought up.
    pub fn veth_to(&self, other: &Netns, local: &str, remote: &str) -> io::Result<()> {
        ip(&[
            "link",
            "add",
            local,
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            remote,
            "netns",
            &other.name,
        ])?;
        self.link_up(local)?;
        other.link_up(remote)
    }

    /// Create a persistent TAP device named `dev` in this namespace (down;
    /// the program that attaches to it usually brings it up).
    pub fn add_tap(&self, dev: &str) -> io::Result<()> {
        self.ip(&["tuntap", "add", "dev", dev, "mode", "tap"])
            .map(drop)
    }

    /// Bring `dev` up.
    pub fn link_up(&self, dev: &str) -> io::Result<()> {
        self.ip(&["link", "set", dev, "up"]).map(drop)
    }

    /// Add `cidr` (such as `10.0.0.1/24`) to `dev`.
    pub fn addr_add(&self, dev: &str, cidr: &str) -> io::Result<()> {
        self.ip(&["addr", "add", cidr, "dev", dev]).map(drop)
    }

    /// Add a default route via `gateway`.
    pub fn default_route(&self, gateway: &str) -> io::Result<()> {
        self.ip(&["route", "add", "default", "via", gateway])
            .map(drop)
    }

    /// Enable IPv4 forwarding in this namespace (for routers and NATs).
    pub fn enable_forwarding(&self) -> io::Result<()> {
        self.run_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
            .map(drop)
    }

    /// Load an nftables ruleset (text for `nft -f -`) into this namespace.
    pub fn nft(&self, ruleset: &str) -> io::Result<()> {
        let dir = scratch_dir()?;
        let path = dir.join(format!("{}.nft", unique_name("nf")));
        fs::write(&path, ruleset)?;
        let res = self.run_ok("nft", &["-f", path.to_str().unwrap_or_default()]);
        let _ = fs::remove_file(&path);
        res.map(drop)
    }

    /// Directory `/etc/netns/NAME`: `ip netns exec` bind-mounts its files
    /// over `/etc` (for example `resolv.conf`) for processes in this
    /// namespace. Removed on drop.
    pub fn etc_dir(&self) -> io::Result<PathBuf> {
        let dir = Path::new("/etc/netns").join(&self.name);
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Write `/etc/resolv.conf` as processes in this namespace see it.
    pub fn set_resolv_conf(&self, contents: &str) -> io::Result<()> {
        fs::write(self.etc_dir()?.join("resolv.conf"), contents)
    }

    /// Addresses of `dev` as `ip -4 -o addr` prints them (`a.b.c.d/len`).
    pub fn ipv4_addrs(&self, dev: &str) -> io::Result<Vec<String>> {
        let out = self.ip(&["-4", "-o", "addr", "show", "dev", dev])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                it.position(|w| w == "inet")?;
                it.next().map(str::to_string)
            })
            .collect())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

fn scratch_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join("wow-test-hosts");
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A scratch directory removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Create a new, empty, uniquely named directory under the system temp dir.
    pub fn new(tag: &str) -> io::Result<Self> {
        let path = scratch_dir()?.join(unique_name(tag));
        fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A child process killed (SIGKILL) and reaped when dropped. Its stdout and
/// stderr are captured in a log file readable with [`Process::log`].
#[derive(Debug)]
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawn `cmd` with its output captured.
    pub fn spawn(mut cmd: Command) -> io::Result<Self> {
        let log = scratch_dir()?.join(format!("{}.log", unique_name("lg")));
        let out = fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
        Ok(Process { child, log })
    }

    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status if the process has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send SIGTERM and wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_timeout(timeout)
    }

    /// Kill the process now (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of pid {} ---\n{}", self.child.id(), self.log());
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// Poll `check` every 20 ms until it returns `true` or `timeout` passes.
/// Returns whether it succeeded.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Path of an example binary of the workspace, as `cargo test` builds it
/// (`target/<profile>/examples/NAME`), found relative to the running test
/// executable.
///
/// # Panics
/// When the binary is not there: build it with `cargo test` (which builds
/// examples) or `cargo build --example NAME`.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "example binary {} not built; run `cargo build --example {name}` or `cargo test`",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_interface_names_and_differ() {
        let a = unique_name("tap");
        let b = unique_name("tap");
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a} is too long for an interface name");
    }

    #[test]
    fn finds_tools_on_path() {
        assert!(tool_available("sh"));
        assert!(!tool_available("definitely-not-a-tool-wow"));
    }

    #[test]
    fn namespaces_connect_and_clean_up() {
        if !require("namespaces_connect_and_clean_up", &["ping"]) {
            return;
        }
        let name;
        {
            let a = Netns::new("a").unwrap();
            let b = Netns::new("b").unwrap();
            name = a.name().to_string();
            a.veth_to(&b, "va", "vb").unwrap();
            a.addr_add("va", "10.201.0.1/24").unwrap();
            b.addr_add("vb", "10.201.0.2/24").unwrap();
            assert_eq!(b.ipv4_addrs("vb").unwrap(), vec!["10.201.0.2/24"]);
            a.run_ok("ping", &["-c1", "-W2", "10.201.0.2"]).unwrap();
            // Unreachable from outside the pair.
            assert!(a.run_ok("ping", &["-c1", "-W1", "10.202.0.2"]).is_err());
            b.add_tap("tap0").unwrap();
            assert!(b.ip(&["link", "show", "tap0"]).is_ok());
            b.set_resolv_conf("nameserver 10.201.0.1\n").unwrap();
            let seen = b.run_ok("cat", &["/etc/resolv.conf"]).unwrap();
            assert_eq!(seen, "nameserver 10.201.0.1\n");
            let mut p = b.spawn("sleep", &["30"]).unwrap();
            assert!(p.try_wait().unwrap().is_none());
        }
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains(&name),
            "namespace {name} survived its guard"
        );
        assert!(!Path::new("/etc/netns").join(&name).exists());
    }

    #[test]
    fn guards_clean_up_on_panic() {
        if !require("guards_clean_up_on_panic", &[]) {
            return;
        }
        let name = std::sync::Mutex::new(String::new());
        let res = std::panic::catch_unwind(|| {
            let ns = Netns::new("p").unwrap();
            *name.lock().unwrap() = ns.name().to_string();
            panic!("test panic");
        });
        assert!(res.is_err());
        let name = name.into_inner().unwrap();
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    }
}
