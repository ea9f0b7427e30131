//! The `wow-ca` example binary: every subcommand, and a non-zero exit with a
//! one-line reason on every refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmpdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ipsec-ca-{tag}-{}",
        wow_test_hosts::unique_name("c")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wow_ca(dir: &Path, args: &[&str]) -> Output {
    Command::new(wow_test_hosts::example_bin("wow-ca"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = wow_ca(dir, args);
    assert!(
        out.status.success(),
        "wow-ca {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts a refusal: non-zero exit, exactly one stderr line naming the reason.
fn refused(dir: &Path, args: &[&str], reason: &str) {
    let out = wow_ca(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wow-ca {args:?} succeeded");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("wow-ca: "), "{stderr:?}");
    assert!(stderr.contains(reason), "{stderr:?} lacks {reason:?}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn cli_full_lifecycle_and_refusals() {
    let d = tmpdir("cli");
    let d = d.as_path();
    ok(d, &["init", "--dir", "ca", "--key-type", "p256"]);
    assert!(d.join("ca/ca.pem").is_file());
    assert_eq!(mode(&d.join("ca/ca.key")), 0o600);
    assert_eq!(mode(&d.join("ca/state.json")), 0o600);
    refused(d, &["init", "--dir", "ca"], "already holds a CA");

    let overlay = ok(
        d,
        &[
            "request",
            "--ip",
            "10.128.0.5",
            "--key-out",
            "a.key",
            "--csr-out",
            "a.csr",
            "--name",
            "alpha",
        ],
    );
    assert!(overlay.starts_with("brunet:node:"), "{overlay}");
    assert_eq!(mode(&d.join("a.key")), 0o600);
    ok(
        d,
        &[
            "request",
            "--ip",
            "10.128.0.5",
            "--key-out",
            "b.key",
            "--csr-out",
            "b.csr",
        ],
    );

    // Wrong source IP.
    refused(
        d,
        &[
            "sign",
            "--dir",
            "ca",
            "--csr",
            "a.csr",
            "--source-ip",
            "10.128.0.6",
            "--out",
            "a.pem",
        ],
        "request came from 10.128.0.6",
    );
    // Over-long validity.
    refused(
        d,
        &[
            "sign",
            "--dir",
            "ca",
            "--csr",
            "a.csr",
            "--source-ip",
            "10.128.0.5",
            "--out",
            "a.pem",
            "--days",
            "4000",
        ],
        "exceeds the cap",
    );
    ok(
        d,
        &[
            "sign",
            "--dir",
            "ca",
            "--csr",
            "a.csr",
            "--source-ip",
            "10.128.0.5",
            "--out",
            "a.pem",
        ],
    );
    // Duplicate IP with another key.
    refused(
        d,
        &[
            "sign",
            "--dir",
            "ca",
            "--csr",
            "b.csr",
            "--source-ip",
            "10.128.0.5",
            "--out",
            "b.pem",
        ],
        "already has live certificate",
    );
    let verified = ok(
        d,
        &[
            "verify",
            "--ca",
            "ca/ca.pem",
            "--cert",
            "a.pem",
            "--ip",
            "10.128.0.5",
        ],
    );
    assert!(verified.starts_with("OK 10.128.0.5"), "{verified}");
    refused(
        d,
        &[
            "verify",
            "--ca",
            "ca/ca.pem",
            "--cert",
            "a.pem",
            "--ip",
            "10.128.0.9",
        ],
        "peer claims 10.128.0.9",
    );

    // Queue, list, approve, reject.
    ok(
        d,
        &[
            "request",
            "--ip",
            "10.128.0.7",
            "--key-out",
            "c.key",
            "--csr-out",
            "c.csr",
            "--name",
            "gamma",
        ],
    );
    ok(
        d,
        &[
            "request",
            "--ip",
            "10.128.0.8",
            "--key-out",
            "e.key",
            "--csr-out",
            "e.csr",
        ],
    );
    let queued = ok(
        d,
        &[
            "sign",
            "--dir",
            "ca",
            "--csr",
            "c.csr",
            "--source-ip",
            "10.128.0.7",
            "--queue",
        ],
    );
    let id_c = queued.trim().rsplit(' ').next().unwrap().to_string();
    let queued = ok(
        d,
        &[
            "sign",
            "--dir",
            "ca",
            "--csr",
            "e.csr",
            "--source-ip",
            "10.128.0.8",
            "--queue",
        ],
    );
    let id_e = queued.trim().rsplit(' ').next().unwrap().to_string();
    let list = ok(d, &["list", "--dir", "ca"]);
    assert!(list.contains(&format!("{id_c} 10.128.0.7 gamma")), "{list}");
    assert!(list.contains(&format!("{id_e} 10.128.0.8")), "{list}");
    ok(d, &["approve", &id_c, "--dir", "ca", "--out", "c.pem"]);
    ok(d, &["reject", &id_e, "--dir", "ca"]);
    refused(d, &["approve", &id_e, "--dir", "ca"], "no pending request");
    assert_eq!(ok(d, &["list", "--dir", "ca"]), "");
    let issued = ok(d, &["list", "--dir", "ca", "--issued"]);
    assert_eq!(issued.lines().count(), 2, "{issued}");
    ok(
        d,
        &[
            "verify",
            "--ca",
            "ca/ca.pem",
            "--cert",
            "c.pem",
            "--ip",
            "10.128.0.7",
        ],
    );

    // Revocation and CRLs.
    ok(d, &["crl", "--dir", "ca", "--out", "crl1.pem"]);
    ok(d, &["revoke", "--dir", "ca", "--cert", "a.pem"]);
    refused(
        d,
        &["revoke", "--dir", "ca", "--cert", "a.pem"],
        "already revoked",
    );
    ok(
        d,
        &[
            "crl",
            "--dir",
            "ca",
            "--out",
            "crl2.pem",
            "--envelope-out",
            "crl2.env",
        ],
    );
    assert!(d.join("crl2.env").is_file());
    refused(
        d,
        &[
            "verify",
            "--ca",
            "ca/ca.pem",
            "--crl",
            "crl2.pem",
            "--cert",
            "a.pem",
            "--ip",
            "10.128.0.5",
        ],
        "revoked",
    );
    ok(
        d,
        &[
            "verify",
            "--ca",
            "ca/ca.pem",
            "--crl",
            "crl2.pem",
            "--cert",
            "c.pem",
            "--ip",
            "10.128.0.7",
        ],
    );
    // Once revoked, the IP is free for the other key.
    ok(
        d,
        &[
            "sign",
            "--dir",
            "ca",
            "--csr",
            "b.csr",
            "--source-ip",
            "10.128.0.5",
            "--out",
            "b.pem",
        ],
    );

    // Refusals on bad input files.
    std::fs::write(d.join("junk.csr"), "not pem").unwrap();
    refused(
        d,
        &[
            "sign",
            "--dir",
            "ca",
            "--csr",
            "junk.csr",
            "--source-ip",
            "10.128.0.5",
            "--out",
            "x.pem",
        ],
        "PEM",
    );
    refused(
        d,
        &[
            "sign",
            "--dir",
            "nowhere",
            "--csr",
            "a.csr",
            "--source-ip",
            "10.128.0.5",
            "--out",
            "x.pem",
        ],
        "holds no CA",
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn cli_intermediate_ca() {
    let d = tmpdir("cli-int");
    let d = d.as_path();
    ok(d, &["init", "--dir", "root", "--name", "root"]);
    ok(
        d,
        &[
            "init", "--dir", "site", "--parent", "root", "--name", "site", "--days", "365",
        ],
    );
    assert!(d.join("site/chain.pem").is_file());
    ok(
        d,
        &[
            "request",
            "--ip",
            "10.1.0.2",
            "--key-out",
            "n.key",
            "--csr-out",
            "n.csr",
            "--key-type",
            "p256",
        ],
    );
    ok(
        d,
        &[
            "sign",
            "--dir",
            "site",
            "--csr",
            "n.csr",
            "--source-ip",
            "10.1.0.2",
            "--out",
            "n.pem",
        ],
    );
    refused(
        d,
        &[
            "verify",
            "--ca",
            "root/ca.pem",
            "--cert",
            "n.pem",
            "--ip",
            "10.1.0.2",
        ],
        "not issued by a trusted CA",
    );
    ok(
        d,
        &[
            "verify",
            "--ca",
            "root/ca.pem",
            "--chain",
            "site/ca.pem",
            "--cert",
            "n.pem",
            "--ip",
            "10.1.0.2",
        ],
    );
    // An intermediate may not outlive its parent.
    refused(
        d,
        &[
            "init", "--dir", "long", "--parent", "root", "--days", "4000",
        ],
        "outlived",
    );
    let _ = std::fs::remove_dir_all(d);
}
