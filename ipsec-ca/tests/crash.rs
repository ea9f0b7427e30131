//! Crash safety: the `wow-ca sign-loop` example signs certificates in a loop
//! and prints each serial once its index entry is durable; the test kills it
//! with SIGKILL at random moments (in journal appends, snapshots and journal
//! resets alike), reopens the CA directory, and checks that no printed
//! certificate is missing and no serial was issued twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Read;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipsec_ca::{Ca, FileStore, Policy, Store, Verifier};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_during_signing_loses_nothing_and_reuses_no_serial() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {seed}");
    let mut rng = XorShift(seed);
    let bin = wow_test_hosts::example_bin("wow-ca");
    let dir = std::env::temp_dir().join(format!(
        "ipsec-ca-crash-{}",
        wow_test_hosts::unique_name("k")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new(&bin)
        .args(["init", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success());

    let mut acknowledged: Vec<(Vec<u8>, Ipv4Addr)> = Vec::new();
    let rounds = 12;
    let mut killed_mid_run = 0;
    for round in 0..rounds {
        let first_ip = Ipv4Addr::new(10, 100 + round as u8, 0, 1);
        let mut child = Command::new(&bin)
            .args([
                "sign-loop",
                "--dir",
                dir.to_str().unwrap(),
                "--count",
                "60000",
                "--first-ip",
                &first_ip.to_string(),
                // Snapshot often, so kills also land inside compactions.
                "--compact-every",
                "16",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            stdout.read_to_string(&mut text).unwrap();
            text
        });
        // Anywhere from "while opening" to "a few hundred certificates in".
        let delay = rng.next() % 400;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let text = reader.join().unwrap();
        if !status.success() {
            killed_mid_run += 1;
        }
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(
            stderr.is_empty(),
            "round {round} (seed {seed}): signer failed: {stderr}"
        );
        // Only complete lines were acknowledged.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let mut parts = line.split_whitespace();
            let serial = ipsec_ca::state::hex_decode(parts.next().unwrap()).unwrap();
            let ip: Ipv4Addr = parts.next().unwrap().parse().unwrap();
            acknowledged.push((serial, ip));
        }

        // Reopen: the state must decode and hold every acknowledged certificate.
        let mut store = FileStore::new(&dir).unwrap();
        let state = store
            .load()
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): state unreadable: {e}"))
            .expect("state exists after init");
        let mut serials = HashSet::new();
        for rec in &state.issued {
            assert!(
                serials.insert(rec.serial.clone()),
                "round {round} (seed {seed}): serial issued twice"
            );
        }
        for (serial, ip) in &acknowledged {
            let rec = state
                .issued
                .iter()
                .find(|r| &r.serial == serial)
                .unwrap_or_else(|| panic!("round {round} (seed {seed}): acknowledged cert lost"));
            assert_eq!(rec.virtual_ip, *ip);
        }
        // At most one certificate may be recorded but unacknowledged per kill.
        assert!(state.issued.len() <= acknowledged.len() + round + 1);
        // And the directory still opens as a working CA.
        let identity = store.load_identity().unwrap();
        Ca::open_with_insecure_seed(identity, Policy::default(), store, [0; 32]).unwrap();
    }
    assert!(
        killed_mid_run > 0 && !acknowledged.is_empty(),
        "no run was killed mid-way or nothing was signed; the test exercised nothing"
    );

    // Every acknowledged certificate verifies against the CA.
    let store = FileStore::new(&dir).unwrap();
    let identity = store.load_identity().unwrap();
    let verifier = Verifier::new(identity.cert_der()).unwrap();
    let mut store = store;
    let state = store.load().unwrap().unwrap();
    let now = std::time::SystemTime::now();
    for (serial, ip) in &acknowledged {
        let rec = state.issued.iter().find(|r| &r.serial == serial).unwrap();
        verifier.verify(now, &rec.certificate, *ip).unwrap();
    }
    println!(
        "crash test: {} rounds, {} certificates acknowledged, {} recorded",
        rounds,
        acknowledged.len(),
        state.issued.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
