//! Checks for [`SqliteStore`] only: the checkpointer and the bounds on the WAL.

use std::path::Path;

use sqlx::Connection;

use super::{load_batch, model, open_sqlite, open_sqlite_with, reads_agree, side_connection, v, value, NEVER_COMPACT};
use crate::crdt::Entry;
use crate::storage::{Durability, SqliteStore, Store, StoreTuning};

/// Checkpoints and WAL restarts many times a second, compaction every few batches.
const BUSY_CHECKPOINTS: StoreTuning = StoreTuning {
    compact_threshold_rows: 200,
    compact_threshold_bytes: StoreTuning::DEFAULT.compact_threshold_bytes,
    compact_slice_rows: 64,
    upsert_min_rows: StoreTuning::DEFAULT.upsert_min_rows,
    checkpoint_interval: std::time::Duration::from_millis(5),
    wal_restart_bytes: 64 << 10,
    wal_limit_bytes: 1 << 20,
    load_split_min_rows: StoreTuning::DEFAULT.load_split_min_rows,
};

fn wal_len(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn sqlite_the_checkpointer_stops_at_close_and_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    let task = store.checkpointer_task().expect("running after open");
    store.apply(&load_batch(0)).await.unwrap();
    assert!(!task.is_finished());
    store.close().await.unwrap();
    assert!(task.is_finished(), "close waits for the task");
    assert!(store.checkpointer_task().is_none());

    // Dropped without `close` (a crash, as far as the store knows): the task does not keep running.
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    let task = store.checkpointer_task().unwrap();
    store.apply(&load_batch(1)).await.unwrap();
    drop(store);
    wait_until("the task ends", || task.is_finished()).await;
    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.load().await.unwrap().len(), 64);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_the_checkpointer_moves_the_wal_into_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = open_sqlite_with(dir.path(), NEVER_COMPACT).await;
    let before = std::fs::metadata(&path).unwrap().len();
    let big: Vec<Entry> = (0..16)
        .map(|i| value(&format!("big/{i}"), &[i as u8; 64 * 1024], v(1, 1)))
        .collect();
    store.apply(&big).await.unwrap();
    // The writer never checkpoints; only the task can grow the database file before `close`.
    wait_until("the database file holds the batch", || {
        std::fs::metadata(&path).unwrap().len() >= before + 16 * 64 * 1024
    })
    .await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_data_written_while_checkpointing_survives_close_a_drop_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let crashed = tempfile::tempdir().unwrap();
    let crashed_path = crashed.path().join("cave.db");
    let mut batches = Vec::new();
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    for i in 0..400 {
        batches.push(load_batch(i));
        store.apply(&batches[i as usize]).await.unwrap();
        if i == 300 {
            // What a process crash leaves behind (durability normal: the OS has every write), taken while
            // checkpoints run: the WAL first, then the database file, which the checkpointer may be writing.
            // Everything it copies in is a frame of the WAL copy, which recovery replays on top.
            std::fs::copy(dir.path().join("cave.db-wal"), crashed.path().join("cave.db-wal")).unwrap();
            std::fs::copy(&path, &crashed_path).unwrap();
        }
    }
    let expected = model(batches.iter().flatten());
    reads_agree(&store, &expected).await;
    drop(store);

    // The crash image holds the first 301 batches.
    let image = SqliteStore::open_with(&crashed_path, Durability::Normal, BUSY_CHECKPOINTS)
        .await
        .unwrap();
    reads_agree(&image, &model(batches[..301].iter().flatten())).await;
    image.close().await.unwrap();

    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    reads_agree(&store, &expected).await;
    for i in 400..500 {
        batches.push(load_batch(i));
        store.apply(&batches[i as usize]).await.unwrap();
    }
    store.close().await.unwrap();
    assert_eq!(wal_len(&path), 0, "close truncates the WAL");

    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.log_rows().await.unwrap(), 0);
    reads_agree(&store, &model(batches.iter().flatten())).await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_an_idle_wal_file_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    let mut i = 0;
    while wal_len(&path) <= BUSY_CHECKPOINTS.wal_restart_bytes {
        store.apply(&load_batch(i)).await.unwrap();
        i += 1;
    }
    // No more writes: two rounds later the checkpointer sees nothing new and gives the space back.
    wait_until("the idle WAL file is truncated", || wal_len(&path) == 0).await;
    store.apply(&load_batch(i)).await.unwrap();
    let expected = model((0..=i).flat_map(load_batch).collect::<Vec<_>>().iter());
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}

/// What one apply of [`load_batch`] may add to the WAL past the limit before the writer checks it: the batch
/// and a compaction slice, which rewrites at most every page of `kv` (2000 small entries).
const ONE_APPLY_OF_WAL: u64 = 512 << 10;

#[tokio::test]
async fn sqlite_the_wal_stays_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    let mut largest = 0;
    let mut written = 0;
    let mut i = 0;
    // Far more WAL traffic than the hard limit: every batch rewrites the log's last pages, and compaction
    // rewrites `kv` pages.
    while written < 8 * BUSY_CHECKPOINTS.wal_limit_bytes {
        let batch = load_batch(i);
        store.apply(&batch).await.unwrap();
        written += batch.iter().map(|e| e.size() as u64).sum::<u64>();
        largest = largest.max(wal_len(&path));
        i += 1;
    }
    assert!(
        largest < BUSY_CHECKPOINTS.wal_limit_bytes + ONE_APPLY_OF_WAL,
        "the WAL grew to {largest} bytes, past the limit"
    );
    let expected = model((0..i).flat_map(load_batch).collect::<Vec<_>>().iter());
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_reader_pinning_the_wal_holds_the_writer_at_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = std::sync::Arc::new(open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await);
    store.apply(&load_batch(0)).await.unwrap();

    // A long read transaction (an operator's shell, a backup) keeps every later frame in the WAL.
    let mut reader = side_connection(&path).await;
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log")
        .fetch_one(&mut reader)
        .await
        .unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut i = 1;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                store.apply(&load_batch(i)).await.unwrap();
                i += 1;
            }
            i
        }
    });
    // The WAL reaches the limit; then the writer waits in a TRUNCATE checkpoint for the reader (until its
    // busy timeout, then again on the next apply), so the WAL stops growing.
    let limit = BUSY_CHECKPOINTS.wal_limit_bytes;
    wait_until("the WAL reaches its limit", || wal_len(&path) >= limit).await;
    let mut largest = 0;
    for _ in 0..100 {
        largest = largest.max(wal_len(&path));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        largest < limit + ONE_APPLY_OF_WAL,
        "the WAL grew to {largest} bytes while pinned"
    );
    assert!(!writes.is_finished());

    // The reader goes: the TRUNCATE gets through and empties the WAL file (a WAL that merely starts over
    // would be cut back to `wal_restart_bytes` only), and the writes go on.
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    reader.close().await.unwrap();
    wait_until("the WAL file is truncated", || {
        wal_len(&path) < BUSY_CHECKPOINTS.wal_restart_bytes
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let batches = writes.await.unwrap();
    let expected = model((0..batches).flat_map(load_batch).collect::<Vec<_>>().iter());
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}
