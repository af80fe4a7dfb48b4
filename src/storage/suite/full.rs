//! A full disk: a batch that cannot be stored fails as [`Error::StorageFull`], leaves nothing behind, and
//! the store takes writes again (durably) once there is room.

use super::{holds_the_merge, model, open_sqlite, reads_agree, v, value};
use crate::crdt::Entry;
use crate::error::Error;
use crate::storage::{MemoryStore, Store};

/// Batch `i`: 8 keys with 4 KiB values, so that a few of them fill a small page budget.
fn big_batch(i: u64) -> Vec<Entry> {
    (0..8u64)
        .map(|j| value(&format!("full/{j}"), &[i as u8; 4096], v(i + 1, 1)))
        .collect()
}

/// Fill the disk under `store` (`true`) or make room again (`false`).
type Fill<'a> = &'a dyn Fn(bool) -> futures::future::BoxFuture<'a, ()>;

/// Batches that do not fit fail with [`Error::StorageFull`] and leave no trace; the store keeps answering
/// reads with exactly what was acknowledged, and takes writes again once there is room.
async fn a_full_disk_fails_batches_and_loses_none_acknowledged(store: &dyn Store, fill: Fill<'_>) -> Vec<Entry> {
    let mut acked = big_batch(0);
    store.apply(&acked).await.unwrap();
    fill(true).await;
    let mut failed = 0;
    for i in 1..40 {
        match store.apply(&big_batch(i)).await {
            Ok(_) => acked.extend(big_batch(i)),
            Err(Error::StorageFull(_)) => failed += 1,
            Err(other) => panic!("batch {i}: {other:?}"),
        }
    }
    assert!(failed > 0, "the disk never filled up");
    let result = holds_the_merge(store, &model(&acked)).await;
    assert!(result.is_ok(), "while full: {result:?}");
    fill(false).await;
    for i in 40..45 {
        store.apply(&big_batch(i)).await.unwrap();
        acked.extend(big_batch(i));
    }
    let result = holds_the_merge(store, &model(&acked)).await;
    assert!(result.is_ok(), "with room again: {result:?}");
    acked
}

#[tokio::test]
async fn memory_a_full_disk_fails_batches_and_loses_none_acknowledged() {
    let store = MemoryStore::new();
    let fill = |full: bool| -> futures::future::BoxFuture<'_, ()> {
        store.set_full(full);
        Box::pin(async {})
    };
    let acked = a_full_disk_fails_batches_and_loses_none_acknowledged(&store, &fill).await;
    let result = holds_the_merge(&store.reopen(), &model(&acked)).await;
    assert!(result.is_ok(), "after a restart: {result:?}");
}

#[tokio::test]
async fn sqlite_a_full_disk_fails_batches_and_loses_none_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(dir.path()).await;
    // A few pages of room: some batches fit, then none does.
    let open = &store;
    let fill = |full: bool| -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            let pages = if full {
                open.page_count().await.unwrap() + 30
            } else {
                1 << 30
            };
            open.set_max_page_count(pages).await.unwrap();
        })
    };
    let acked = a_full_disk_fails_batches_and_loses_none_acknowledged(&store, &fill).await;
    // A crash, then the acknowledged state.
    drop(store);
    let store = open_sqlite(dir.path()).await;
    reads_agree(&store, &model(&acked)).await;
    store.close().await.unwrap();
}

/// A COMMIT that fails after SQLite rolled the transaction back (as it may on `SQLITE_FULL`): the writer
/// must not think it is still in a transaction, or every later "commit" nests inside one that never ends.
#[tokio::test]
async fn sqlite_commits_after_a_failed_commit_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(dir.path()).await;
    store.apply(&big_batch(0)).await.unwrap();
    store.fail_commits(1).await.unwrap();
    assert!(store.apply(&big_batch(1)).await.is_err());
    // A batch whose statement fails inside the transaction, after the failed commit.
    store
        .set_max_page_count(store.page_count().await.unwrap())
        .await
        .unwrap();
    assert!(store.apply(&big_batch(2)).await.is_err());
    store.set_max_page_count(1 << 30).await.unwrap();
    let mut acked = big_batch(0);
    for i in 3..6 {
        store.apply(&big_batch(i)).await.unwrap();
        acked.extend(big_batch(i));
    }
    // Another connection (another process) sees the commits: they are in the file, not in an open transaction.
    let mut side = super::side_connection(&dir.path().join("cave.db")).await;
    let newest: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT value FROM log WHERE key = 'full/0' ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut side)
            .await
            .unwrap();
    assert_eq!(
        newest.map(|value| value[0]),
        Some(5),
        "the last acknowledged batch is not visible to other connections"
    );
    drop(side);
    drop(store);
    let store = open_sqlite(dir.path()).await;
    reads_agree(&store, &model(&acked)).await;
    store.close().await.unwrap();
}
