//! The CA node's writer thread (`ca_writer`): the CA's changes reach its
//! directory, and a control-socket answer waits until they have.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ipsec_ca::{CaError, CaIdentity, FileStore, KeyType, Policy, StoreError};
use std::time::{Duration, SystemTime};
use wow_node::ca_writer::{self, CaWriter};
use wow_test_hosts::TempDir;

#[tokio::test(flavor = "current_thread")]
async fn the_writer_thread_makes_changes_durable_before_the_answer() {
    let dir = TempDir::new("caw").unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let identity = CaIdentity::create_root(
        now,
        KeyType::Ed25519,
        "writer",
        Duration::from_secs(30 * 86_400),
    )
    .unwrap();
    drop(
        FileStore::new(dir.path())
            .unwrap()
            .init_ca(identity, Policy::default())
            .unwrap(),
    );

    let (mut ca, mut writer) = ca_writer::open(dir.path(), Policy::default()).unwrap();
    let queue = writer.queue();
    let token = ca
        .issue_token(now, None, Duration::from_secs(3600))
        .unwrap();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    writer.answer(tx, token.to_text());
    assert!(
        rx.try_recv().is_err(),
        "answered before the token was written"
    );
    writer.flush();
    CaWriter::durable(Some(&mut writer)).await;
    assert!(queue.is_durable());
    assert_eq!(rx.await.unwrap(), token.to_text());
    // In the journal as the answer leaves (the writer still holds the
    // directory's lock; reading needs none).
    let journal =
        std::fs::read_to_string(dir.path().join(ipsec_ca::file_store::JOURNAL_FILE)).unwrap();
    assert!(journal.contains("token_issued"), "{journal}");
    drop(writer);
    drop(ca);
    let ca = FileStore::new(dir.path())
        .unwrap()
        .open_ca(Policy::default())
        .unwrap();
    assert_eq!(ca.tokens().len(), 1);
    assert_eq!(ca.tokens()[0].id, token.id);
}

#[test]
fn a_directory_without_a_ca_is_refused() {
    let dir = TempDir::new("caw-none").unwrap();
    assert!(matches!(
        ca_writer::open(dir.path(), Policy::default()),
        Err(CaError::Store(StoreError::NoCa(_)))
    ));
}
