//! Proof of reuse: three processes of `examples/ring.rs` (overlay-core's
//! public API plus std, on real UDP sockets on 127.0.0.1) form a ring; a
//! value put through one is read through another.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The example's binary, next to this test's (`cargo test` builds the
/// examples; a lone `cargo test --test ring_processes` builds it here).
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(format!("ring{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "overlay-core", "--example", "ring"])
            .status()
            .unwrap();
        assert!(status.success(), "building the example failed");
    }
    path
}

/// One running node: its process, its standard input and its output lines.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Lines read while waiting for others, in order.
    seen: Vec<String>,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, bootstrap: Option<&str>) -> Proc {
        let mut cmd = Command::new(example());
        cmd.args(["--listen", "127.0.0.1:0"]);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        Proc {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            name,
        }
    }

    /// The first output line starting with `prefix` not taken yet (waiting
    /// for it at most `within`).
    fn expect(&mut self, prefix: &str, within: Duration) -> Option<String> {
        if let Some(i) = self.seen.iter().position(|l| l.starts_with(prefix)) {
            return Some(self.seen.remove(i));
        }
        let end = Instant::now() + within;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(line) => {
                    eprintln!("{}: {line}", self.name);
                    self.seen.push(line);
                }
                Err(_) => break,
            }
        }
        None
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_processes_form_a_ring_and_share_a_dht_value() {
    let wait = Duration::from_secs(20);
    let mut a = Proc::spawn("a", None);
    let listening = a.expect("listening ", wait).expect("a listens");
    let a_endpoint = listening.split(' ').nth(1).unwrap().to_string();
    let mut b = Proc::spawn("b", Some(&a_endpoint));
    let mut c = Proc::spawn("c", Some(&a_endpoint));
    for p in [&mut a, &mut b, &mut c] {
        assert!(p.expect("joined", wait).is_some(), "{} joined", p.name);
    }
    // A ring of three: every node linked to both others.
    for p in [&mut a, &mut b, &mut c] {
        assert!(
            p.expect("links 2", wait).is_some(),
            "{} has two links",
            p.name
        );
    }

    b.command("put greeting hello from b");
    assert_eq!(
        b.expect("put greeting", wait).as_deref(),
        Some("put greeting ok")
    );
    // Read through another process (retried while the put replicates).
    let mut got = None;
    for _ in 0..10 {
        c.command("get greeting");
        let line = c.expect("get greeting", wait).expect("c answers");
        if line != "get greeting: none" {
            got = Some(line);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(got.as_deref(), Some("get greeting = hello from b"));
}
