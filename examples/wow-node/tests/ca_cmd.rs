//! `wow-node ca …` as an administrator runs it: `init` and `issue --name`
//! write a node's credentials with the names certified, and the queue
//! commands go to the running CA node through its control socket, falling
//! back to the CA directory only when no CA node answers. (The rules behind
//! them, names, serials and issuing, are tested in ipsec-ca's `admin`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

use wow_node::ca_cmd::{CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use wow_node::control::SOCKET_FILE;
use wow_test_hosts::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_wow-node");

fn ca(args: &[&str]) -> Output {
    Command::new(BIN).arg("ca").args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = ca(args);
    assert!(
        out.status.success(),
        "wow-node ca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(args: &[&str]) -> String {
    let out = ca(args);
    assert!(!out.status.success(), "wow-node ca {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A node that answers one control line with `answer`; yields the line.
fn fake_node(state: &Path, answer: &'static str) -> std::thread::JoinHandle<String> {
    let listener = std::os::unix::net::UnixListener::bind(state.join(SOCKET_FILE)).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut line = [0u8; 64];
        let n = s.read(&mut line).unwrap();
        s.write_all(answer.as_bytes()).unwrap();
        String::from_utf8_lossy(&line[..n]).into_owned()
    })
}

/// `ca issue --name db` puts the DNS SAN `db.wow.internal` into the host
/// certificate and writes key (0600), certificate and CA certificate; a
/// malformed name is refused naming `--name`.
#[test]
fn init_and_issue_with_names_write_the_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let base = TempDir::new("wow-ca-issue").unwrap();
    let (ca_dir, out) = (base.path().join("ca"), base.path().join("node"));
    ok(&["init", "--dir", path(&ca_dir), "--days", "10"]);
    assert!(refused(&["init", "--dir", path(&ca_dir)]).contains("already holds a CA"));
    let said = ok(&[
        "issue",
        "--dir",
        path(&ca_dir),
        "--ip",
        "10.128.0.7",
        "--out",
        path(&out),
        "--days",
        "1",
        "--name",
        "DB",
        "--name",
        "web.wow.internal",
        "--groups",
        "web,admin",
    ]);
    assert!(said.starts_with("issued 10.128.0.7 serial "), "{said}");
    let pem = std::fs::read_to_string(out.join(NODE_CERT_FILE)).unwrap();
    let der = ipsec_ca::key::from_pem("CERTIFICATE", &pem).unwrap();
    assert_eq!(
        ipsec_ca::verify::certificate_dns_names(&der).unwrap(),
        ["db.wow.internal", "web.wow.internal"]
    );
    let ca_der = ipsec_ca::key::from_pem(
        "CERTIFICATE",
        &std::fs::read_to_string(out.join(CA_CERT_FILE)).unwrap(),
    )
    .unwrap();
    let peer = ipsec_ca::Verifier::new(&ca_der)
        .unwrap()
        .verify(
            std::time::SystemTime::now(),
            &der,
            "10.128.0.7".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(peer.groups.to_string(), "admin,web");
    let key = std::fs::metadata(out.join(NODE_KEY_FILE)).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read(out.join(CA_CERT_FILE)).unwrap(),
        std::fs::read(ca_dir.join("ca.pem")).unwrap()
    );
    // A malformed name or group is refused naming its option.
    let bad_dir = base.path().join("bad");
    for (option, value) in [("--name", "d b"), ("--groups", "Admin")] {
        let bad = refused(&[
            "issue",
            "--dir",
            path(&ca_dir),
            "--ip",
            "10.128.0.8",
            "--out",
            path(&bad_dir),
            option,
            value,
        ]);
        assert!(bad.contains(option), "{bad}");
    }
    // `list` shows the one certificate, live.
    let list = ok(&["list", "--dir", path(&ca_dir)]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.contains("10.128.0.7") && list.contains("live"),
        "{list}"
    );
    // No CA in a directory: the hint names `ca init`.
    let none = refused(&["list", "--dir", path(&base.path().join("empty"))]);
    assert!(
        none.contains("holds no CA (run `wow-node ca init`)"),
        "{none}"
    );
}

#[test]
fn ca_commands_use_the_node_and_fall_back_to_the_directory() {
    let base = TempDir::new("wow-ca-cmd").unwrap();
    let (state, ca_dir) = (base.path().join("state"), base.path().join("ca"));
    std::fs::create_dir_all(&state).unwrap();
    ok(&[
        "init",
        "--dir",
        path(&ca_dir),
        "--name",
        "t",
        "--days",
        "10",
    ]);
    let target = ["--state-dir", path(&state), "--dir", path(&ca_dir)];
    // No node: the directory.
    let pending = ok(&[&["pending"][..], &target].concat());
    assert!(pending.starts_with("id "), "{pending}");
    // A node that is not the CA's: the directory too.
    let t = fake_node(&state, wow_node::enrol::NOT_THE_CA);
    ok(&[&["token", "--ttl", "60"][..], &target].concat());
    assert_eq!(t.join().unwrap(), "ca token - 60\n");
    let ca = ipsec_ca::FileStore::new(&ca_dir)
        .unwrap()
        .open_ca(ipsec_ca::Policy::default())
        .unwrap();
    assert_eq!(ca.tokens().len(), 1);
    drop(ca);
    // The CA node refusing: its error, no fallback (the directory would
    // have said "no pending request with id 4").
    std::fs::remove_file(state.join(SOCKET_FILE)).unwrap();
    let t = fake_node(&state, "error: refused by the CA node\n");
    let err = refused(&[&["approve", "4"][..], &target].concat());
    assert_eq!(err, "wow-node ca: refused by the CA node\n");
    assert_eq!(t.join().unwrap(), "ca approve 4\n");
}
