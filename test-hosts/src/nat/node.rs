//! The NAT matrix for the node: two `wow-node` processes behind a pair of
//! NAT kinds and a public bootstrap node in the internet namespace; a trial
//! is *direct* when each node holds an overlay link to the other (a
//! punched path, or their LAN addresses), *relayed* when both joined the
//! ring but reach each other only through the bootstrap node.
//!
//! Each trial starts both nodes at the same moment; its time is from then
//! until both hold the link. The nodes run without a CA (the matrix is
//! about paths, not trust), without LAN discovery, split DNS or port
//! mapping.

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::SERVER_A;
use super::matrix::{Outcome, PairKind, Trial};
use crate::{Netns, Process, TempDir, wait_until};

/// The port every node listens on.
const PORT: u16 = 4000;

/// A node of a trial: its state directory and process.
struct Node {
    state: TempDir,
    process: Process,
}

impl Node {
    fn start(
        bin: &Path,
        ns: &Netns,
        tag: &str,
        listen: &str,
        bootstrap: &[String],
    ) -> io::Result<Node> {
        let state = TempDir::new(tag)?;
        let list = bootstrap
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "[node]\nstate_dir = \"{}\"\nlisten = \"{listen}\"\nbootstrap = [{list}]\n\
             lan_discovery = false\nport_mapping = false\n\n[network]\ncidr = \"10.128.0.0/16\"\n\n\
             [dns]\nforward = false\n",
            state.path().display()
        );
        let path = state.path().join("node.toml");
        std::fs::write(&path, config)?;
        let path = path
            .to_str()
            .ok_or_else(|| io::Error::other("state path not UTF-8"))?;
        let mut cmd = ns.command(bin);
        cmd.args(["up", "--config", path]).env(
            "RUST_LOG",
            std::env::var("WOW_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        let process = Process::spawn(cmd)?;
        Ok(Node { state, process })
    }

    /// `wow-node status --json`, or empty while the node cannot answer.
    fn status(&self, bin: &Path) -> String {
        let state = self.state.path().to_string_lossy().into_owned();
        Command::new(bin)
            .args(["status", "--json", "--state-dir", &state])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// The value of `"key": "…"` in a status JSON text.
fn string_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\": \""))? + key.len() + 5;
    let len = json.get(start..)?.find('"')?;
    json.get(start..start + len)
}

/// Runs one trial of the node `bin` on a fresh testbed of `kind`: `timeout`
/// for the direct link.
pub fn run_node_trial(bin: &Path, kind: &PairKind, timeout: Duration) -> io::Result<Trial> {
    let t = kind.testbed()?;
    let public = format!("{SERVER_A}:{PORT}");
    let _bootstrap = Node::start(bin, &t.internet, "nm-boot", &public, &[])?;
    let (ha, hb) = match kind.b {
        Some(_) => (t.site(0).host(), t.site(1).host()),
        None => (&t.site(0).hosts[0], &t.site(0).hosts[1]),
    };
    let any = format!("0.0.0.0:{PORT}");
    let t0 = Instant::now();
    let a = Node::start(bin, &ha.ns, "nm-a", &any, std::slice::from_ref(&public))?;
    let b = Node::start(bin, &hb.ns, "nm-b", &any, std::slice::from_ref(&public))?;

    let mut addrs: [Option<String>; 2] = [None, None];
    let mut joined = [false, false];
    let mut direct_at = None;
    wait_until(timeout, || {
        let statuses = [a.status(bin), b.status(bin)];
        for (i, s) in statuses.iter().enumerate() {
            if addrs[i].is_none() {
                addrs[i] = string_field(s, "overlay_address").map(str::to_string);
            }
            joined[i] = s.contains("\"joined\": true");
        }
        let linked = |s: &str, peer: &Option<String>| {
            peer.as_ref()
                .is_some_and(|p| s.contains(&format!("\"peer\": \"{p}\"")))
        };
        if linked(&statuses[0], &addrs[1]) && linked(&statuses[1], &addrs[0]) {
            direct_at = Some(t0.elapsed());
            return true;
        }
        false
    });
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let outcome = |i: usize| match direct_at {
        Some(d) => Outcome::Direct(ms(d)),
        None if joined[i] => Outcome::Relay(ms(t0.elapsed())),
        None => Outcome::Failed("never joined the ring".into()),
    };
    let (oa, ob) = (outcome(0), outcome(1));
    let log = |n: &Node| format!("{}\n--- status ---\n{}", n.process.log(), n.status(bin));
    Ok(Trial {
        a: oa,
        b: ob,
        log_a: log(&a),
        log_b: log(&b),
    })
}
