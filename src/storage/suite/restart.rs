//! Checks for [`SqliteStore`] only: opening, durability, failed batches, restarts and crashes.

use sqlx::Connection;

use super::{model, open_sqlite, open_sqlite_with, reads_agree, side_connection, v, value, HIGH, NEVER_COMPACT};
use crate::crdt::Entry;
use crate::error::Error;
use crate::storage::{Durability, SqliteStore, Store};

#[tokio::test]
async fn sqlite_data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let entries: Vec<Entry> = (0..700u64)
        .map(|i| value(&format!("k/{i:04}"), &i.to_le_bytes(), v(i, HIGH)))
        .collect();
    let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    store.apply(&entries).await.unwrap();
    store.apply(&[Entry::tombstone("k/0001", v(HIGH, 1))]).await.unwrap();
    assert_eq!(
        store.log_rows().await.unwrap(),
        701,
        "below the threshold, everything is still in the log"
    );
    store.close().await.unwrap();
    assert!(matches!(store.compact().await, Err(Error::Unavailable(_))));

    // The checkpoint folded the WAL into the main file.
    let wal = dir.path().join("cave.db-wal");
    assert!(
        std::fs::metadata(&wal).map(|m| m.len() == 0).unwrap_or(true),
        "WAL left behind"
    );
    // And close compacted the log into `kv` first.
    let mut side = side_connection(&path).await;
    let counts: (i64, i64) = sqlx::query_as("SELECT (SELECT COUNT(*) FROM log), (SELECT COUNT(*) FROM kv)")
        .fetch_one(&mut side)
        .await
        .unwrap();
    assert_eq!(counts, (0, 700));
    side.close().await.unwrap();

    let store = SqliteStore::open(&path, Durability::Fsync).await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.len(), 700);
    assert_eq!(loaded[0], entries[0]);
    assert!(loaded[1].deleted);
    assert_eq!(loaded[2..], entries[2..]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_pragmas_follow_the_durability() {
    let dir = tempfile::tempdir().unwrap();
    for (durability, synchronous) in [(Durability::Normal, 1), (Durability::Fsync, 2)] {
        let store = SqliteStore::open(&dir.path().join(format!("{durability:?}.db")), durability)
            .await
            .unwrap();
        let (journal_mode, sync, busy_timeout, autocheckpoint) = store.writer_settings().await.unwrap();
        assert_eq!(journal_mode, "wal");
        assert_eq!(sync, synchronous, "{durability:?}");
        assert!(busy_timeout > 0);
        assert_eq!(autocheckpoint, 0, "the writer never checkpoints on its commit path");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn sqlite_open_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/node-1/cave.db");
    let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    store.apply(&[value("k", b"v", v(1, 1))]).await.unwrap();
    assert!(path.exists());
    assert_eq!(store.path(), path);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_a_failed_batch_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(dir.path()).await;
    store.apply(&[value("before", b"1", v(1, 1))]).await.unwrap();

    // Make the 700th row of a batch fail, in the second statement of the transaction.
    let mut side = side_connection(&dir.path().join("cave.db")).await;
    sqlx::query(
        "CREATE TRIGGER boom BEFORE INSERT ON log WHEN NEW.key = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END",
    )
    .execute(&mut side)
    .await
    .unwrap();
    let mut batch: Vec<Entry> = (0..1000).map(|i| value(&format!("k/{i:04}"), b"x", v(1, 1))).collect();
    batch[699].key = "boom".into();
    batch.push(value("before", b"2", v(2, 1)));
    assert!(store.apply(&batch).await.is_err());
    assert_eq!(store.load().await.unwrap(), [value("before", b"1", v(1, 1))]);
    assert_eq!(
        store.log_rows().await.unwrap(),
        1,
        "the running count of log rows survives a rollback"
    );

    // The writer is usable afterwards.
    sqlx::query("DROP TRIGGER boom").execute(&mut side).await.unwrap();
    side.close().await.unwrap();
    assert_eq!(store.apply(&batch).await.unwrap(), 1001);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_logged_entries_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let compacted: Vec<Entry> = (0..300u64)
        .map(|i| value(&format!("k/{i:03}"), b"compacted", v(10, 1)))
        .collect();
    // Newer and older versions of compacted keys, and new keys, left in the log.
    let logged: Vec<Entry> = (0..300u64)
        .map(|i| match i % 3 {
            0 => value(&format!("k/{i:03}"), b"newer", v(11, 1)),
            1 => value(&format!("k/{i:03}"), b"older", v(9, 1)),
            _ => Entry::tombstone(format!("new/{i:03}"), v(HIGH, 1)),
        })
        .collect();
    let expected = model(compacted.iter().chain(&logged));

    let store = open_sqlite_with(dir.path(), NEVER_COMPACT).await;
    store.apply(&compacted).await.unwrap();
    store.compact().await.unwrap();
    store.apply(&logged).await.unwrap();
    // A crash: no `close`, so no compaction and no checkpoint.
    drop(store);

    let store = open_sqlite(dir.path()).await;
    assert_eq!(
        store.log_rows().await.unwrap(),
        logged.len(),
        "the rows are still in the log"
    );
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();

    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.log_rows().await.unwrap(), 0, "close compacted");
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}
