//! The file store: journal replay, compaction, torn appends, the crash window
//! between snapshot and journal reset, corruption, and the directory lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ipsec_ca::file_store::{JOURNAL_FILE, STATE_FILE};
use ipsec_ca::{
    Ca, CaIdentity, FileStore, KeyType, NodeKey, NodeRequest, Policy, RevocationReason, Store,
    StoreError,
};
use std::time::{Duration, SystemTime};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn tmpdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ipsec-ca-{tag}-{}",
        wow_test_hosts::unique_name("f")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn init(dir: &Path, compact_every: usize) -> Ca<FileStore> {
    let mut store = FileStore::new(dir).unwrap();
    store.set_compact_every(compact_every);
    let identity = CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "fs",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap();
    store.save_identity(&identity).unwrap();
    Ca::open_with_insecure_seed(identity, Policy::default(), store, [1; 32]).unwrap()
}

fn reopen(dir: &Path) -> Ca<FileStore> {
    let store = FileStore::new(dir).unwrap();
    let identity = store.load_identity().unwrap();
    Ca::open_with_insecure_seed(identity, Policy::default(), store, [2; 32]).unwrap()
}

/// Issues, revokes, queues, rejects and numbers CRLs: every change kind.
fn churn(ca: &mut Ca<impl Store>, key: &NodeKey, base: u32, n: u32) {
    for i in 0..n {
        let ip = Ipv4Addr::from(base + i);
        let csr = key.certificate_request(&NodeRequest::new(ip)).unwrap();
        let issued = ca.sign(t0(), &csr, ip, None).unwrap();
        if i % 3 == 0 {
            ca.revoke(t0(), &issued.serial, RevocationReason::KeyCompromise)
                .unwrap();
        }
        if i % 4 == 0 {
            let ip = Ipv4Addr::from(base + 1000 + i);
            let csr = key.certificate_request(&NodeRequest::new(ip)).unwrap();
            let id = ca.enqueue(t0(), &csr, ip, None, u64::from(i)).unwrap();
            if i % 8 == 0 {
                ca.reject(id).unwrap();
            } else {
                ca.approve(t0(), id).unwrap();
            }
        }
        if i % 5 == 0 {
            ca.issue_crl(t0()).unwrap();
        }
    }
}

#[test]
fn journal_replays_across_compactions() {
    let dir = tmpdir("journal");
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mut ca = init(&dir, 5);
    churn(&mut ca, &key, 0x0a00_0000, 23);
    let journal = std::fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap();
    assert!(
        journal.lines().count() <= 5,
        "compaction keeps the journal short"
    );
    let mode = std::fs::metadata(dir.join(JOURNAL_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let snapshot = ca.issued().to_vec();
    drop(ca);
    let mut again = reopen(&dir);
    assert_eq!(again.issued(), snapshot.as_slice());
    // Keeps working after reopening, and a second reopen agrees.
    churn(&mut again, &key, 0x0a01_0000, 7);
    let expected = again.issued().to_vec();
    let crl = again.crl_number();
    drop(again);
    let third = reopen(&dir);
    assert_eq!(third.issued(), expected.as_slice());
    assert_eq!(third.crl_number(), crl);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn torn_last_line_is_dropped_and_journal_keeps_working() {
    let dir = tmpdir("torn");
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mut ca = init(&dir, 1000);
    churn(&mut ca, &key, 0x0a00_0000, 6);
    let expected = ca.issued().to_vec();
    drop(ca);
    // A crash mid-append: half a line, no newline.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(JOURNAL_FILE))
        .unwrap();
    f.write_all(br#"{"seq":999,"change":{"op":"crl_iss"#)
        .unwrap();
    drop(f);
    let mut ca = reopen(&dir);
    assert_eq!(ca.issued(), expected.as_slice());
    churn(&mut ca, &key, 0x0a02_0000, 4);
    let expected = ca.issued().to_vec();
    drop(ca);
    assert_eq!(reopen(&dir).issued(), expected.as_slice());

    // A garbled complete last line (e.g. zero-filled blocks) is torn too.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(JOURNAL_FILE))
        .unwrap();
    f.write_all(b"\0\0\0\0\n").unwrap();
    drop(f);
    assert_eq!(reopen(&dir).issued(), expected.as_slice());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn crash_between_snapshot_and_journal_reset_replays_nothing_twice() {
    let dir = tmpdir("window");
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mut ca = init(&dir, 4);
    churn(&mut ca, &key, 0x0a00_0000, 2);
    // One change at a time until one of them compacts; then put the journal
    // from just before back: as if the crash hit after the snapshot's rename
    // but before the journal was emptied.
    let journal_before = loop {
        let before = std::fs::read(dir.join(JOURNAL_FILE)).unwrap();
        ca.issue_crl(t0()).unwrap();
        if std::fs::read(dir.join(JOURNAL_FILE)).unwrap().is_empty() {
            break before;
        }
    };
    assert!(!journal_before.is_empty());
    let expected = ca.issued().to_vec();
    let crl = ca.crl_number();
    drop(ca);
    std::fs::write(dir.join(JOURNAL_FILE), &journal_before).unwrap();
    let again = reopen(&dir);
    assert_eq!(again.issued(), expected.as_slice());
    assert_eq!(again.crl_number(), crl);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corruption_is_reported_not_ignored() {
    let dir = tmpdir("corrupt");
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mut ca = init(&dir, 1000);
    churn(&mut ca, &key, 0x0a00_0000, 4);
    drop(ca);
    let journal = std::fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap();
    let mut lines: Vec<&str> = journal.lines().collect();
    assert!(lines.len() >= 3);
    lines[1] = "{garbage}";
    std::fs::write(dir.join(JOURNAL_FILE), lines.join("\n") + "\n").unwrap();
    let mut store = FileStore::new(&dir).unwrap();
    assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
    drop(store);

    // A gap in sequence numbers.
    let mut lines: Vec<&str> = journal.lines().collect();
    lines.remove(1);
    std::fs::write(dir.join(JOURNAL_FILE), lines.join("\n") + "\n").unwrap();
    let mut store = FileStore::new(&dir).unwrap();
    assert!(matches!(store.load(), Err(StoreError::Inconsistent)));
    drop(store);

    std::fs::write(dir.join(STATE_FILE), b"{").unwrap();
    let mut store = FileStore::new(&dir).unwrap();
    assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn directory_is_locked_while_open() {
    let dir = tmpdir("lock");
    let first = FileStore::new(&dir).unwrap();
    assert!(matches!(FileStore::new(&dir), Err(StoreError::Locked(_))));
    drop(first);
    FileStore::new(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn changes_go_to_the_journal_not_the_snapshot() {
    let dir = tmpdir("append");
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let mut ca = init(&dir, 1000);
    let snapshot = std::fs::read(dir.join(STATE_FILE)).unwrap();
    churn(&mut ca, &key, 0x0a00_0000, 5);
    assert_eq!(
        std::fs::read(dir.join(STATE_FILE)).unwrap(),
        snapshot,
        "no snapshot rewrite per change"
    );
    let lines = std::fs::read_to_string(dir.join(JOURNAL_FILE))
        .unwrap()
        .lines()
        .count();
    // 5 issues, 2 revocations, 2 queued (1 approved, 1 rejected), 1 CRL.
    assert_eq!(lines, 5 + 2 + 2 + 2 + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A join token and its use survive a restart, through the journal and
/// through a snapshot alike.
#[test]
fn join_tokens_and_their_use_survive_a_restart() {
    for compact_every in [1000, 1] {
        let dir = tmpdir("tokens");
        let ip = Ipv4Addr::new(10, 128, 0, 7);
        let token = {
            let mut ca = init(&dir, compact_every);
            ca.issue_token(t0(), Some(ip), Duration::from_secs(3600))
                .unwrap()
        };
        let mut ca = reopen(&dir);
        assert_eq!(ca.tokens().len(), 1);
        assert_eq!(ca.tokens()[0].id, token.id);
        assert_eq!(ca.tokens()[0].secret, token.secret.to_vec());
        assert_eq!(ca.tokens()[0].ip, Some(ip));
        let key = NodeKey::generate(KeyType::Ed25519).unwrap();
        let csr = key.certificate_request(&NodeRequest::new(ip)).unwrap();
        let request = ipsec_ca::wire::EnrolmentMessage::TokenRequest {
            request_id: 3,
            token_id: token.id,
            mac: &token.mac(3, &csr),
            csr: &csr,
        }
        .to_bytes();
        ca.handle_enrolment(t0(), ip, &request).unwrap();
        assert_eq!(ca.issued().len(), 1);
        drop(ca);
        let ca = reopen(&dir);
        assert!(ca.tokens()[0].used_at.is_some(), "the use is durable");
        assert_eq!(ca.issued().len(), 1);
        drop(ca);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The write-behind: a CA over a `QueueStore`, its writes made durable in
/// a `FileStore` by a `StoreWriter` (as a node's writer thread does), in
/// batches, across compactions: reopening the directory gives the CA's
/// state, and a `MemStore` fed the same writes agrees.
#[test]
fn queued_writes_replayed_into_a_file_store_give_the_ca_state() {
    use ipsec_ca::store::{Write, write_behind};
    let dir = tmpdir("queue");
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    drop(init(&dir, 1000));
    churn(&mut reopen(&dir), &key, 0x0a00_0000, 3);
    let mut file = FileStore::new(&dir).unwrap();
    let identity = file.load_identity().unwrap();
    file.set_compact_every(4);
    let (store, mut writer) = write_behind(file).unwrap();
    let queue = store.queue();
    let mut ca = Ca::open_with_insecure_seed(identity, Policy::default(), store, [3; 32]).unwrap();
    let (_, mut mem) = write_behind(ipsec_ca::MemStore {
        state: Some(writer.state().clone()),
        fail_next_save: false,
    })
    .unwrap();
    assert_eq!(queue.queued(), 0, "an existing state is not written again");
    for round in 0..4u32 {
        churn(&mut ca, &key, 0x0a10_0000 + round * 0x100, 6);
        ca.issue_token(t0(), None, Duration::from_secs(3600))
            .unwrap();
        assert!(!queue.is_durable());
        let writes = queue.take();
        assert!(writes.iter().all(|w| matches!(w.write, Write::Change(_))));
        assert_eq!(writes.last().unwrap().seq, queue.queued());
        let durable = writer.write(writes.clone()).unwrap();
        assert_eq!(durable, queue.queued());
        assert_eq!(mem.write(writes).unwrap(), durable);
        queue.mark_durable(durable);
        assert!(queue.is_durable());
    }
    assert_eq!(writer.state(), mem.state());
    let expected = ca.issued().to_vec();
    let (crl, tokens) = (ca.crl_number(), ca.tokens().to_vec());
    drop((ca, writer));
    let again = reopen(&dir);
    assert_eq!(again.issued(), expected.as_slice());
    assert_eq!(again.crl_number(), crl);
    assert_eq!(again.tokens(), tokens.as_slice());
    assert_eq!(Some(mem.state().clone()), mem.store_mut().load().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A failed write reports nothing durable; the next batch (or a retry)
/// saves the whole state as one snapshot, and then it is durable.
#[test]
fn a_failed_write_is_redone_as_a_snapshot() {
    use ipsec_ca::store::write_behind;
    let key = NodeKey::generate(KeyType::Ed25519).unwrap();
    let identity = CaIdentity::create_root(
        t0(),
        KeyType::Ed25519,
        "q",
        Duration::from_secs(3650 * 86_400),
    )
    .unwrap();
    let (store, mut writer) = write_behind(ipsec_ca::MemStore::default()).unwrap();
    let queue = store.queue();
    let mut ca = Ca::open_with_insecure_seed(identity, Policy::default(), store, [4; 32]).unwrap();
    // The empty state's first snapshot.
    assert_eq!(queue.queued(), 1);
    let first = writer.write(queue.take()).unwrap();
    queue.mark_durable(first);

    churn(&mut ca, &key, 0x0a00_0000, 3);
    writer.store_mut().fail_next_save = true;
    assert!(writer.write(queue.take()).is_err());
    assert!(writer.is_behind());
    assert_eq!(writer.written(), first);
    assert!(!queue.is_durable());

    // Nothing new: a retry saves the snapshot.
    let durable = writer.retry().unwrap();
    assert_eq!(durable, queue.queued());
    assert!(!writer.is_behind());
    assert_eq!(
        writer.store_mut().load().unwrap().unwrap().issued,
        ca.issued()
    );

    // Failing again, then the next batch makes it all durable.
    churn(&mut ca, &key, 0x0a01_0000, 2);
    writer.store_mut().fail_next_save = true;
    assert!(writer.write(queue.take()).is_err());
    churn(&mut ca, &key, 0x0a02_0000, 2);
    let durable = writer.write(queue.take()).unwrap();
    assert_eq!(durable, queue.queued());
    queue.mark_durable(durable);
    assert!(queue.is_durable());
    let stored = writer.store_mut().load().unwrap().unwrap();
    assert_eq!(stored.issued, ca.issued());
    assert_eq!(stored.crl_number, ca.crl_number());
}
