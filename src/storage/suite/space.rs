//! Checks for [`SqliteStore`](crate::storage::SqliteStore) only: the database file tracks the live data, however
//! much is overwritten.

use sqlx::Connection;

use super::{open_sqlite, side_connection, v, value};
use crate::crdt::Entry;
use crate::storage::{Durability, SqliteStore, Store};

const VALUE_BYTES: usize = 700 << 10;
const KEYS: u64 = 10;
const LIVE_BYTES: u64 = KEYS * VALUE_BYTES as u64;

/// Bytes of the database proper (its pages, wherever they are right now: the file or the WAL).
async fn database_bytes(store: &SqliteStore) -> u64 {
    store.page_count().await.unwrap() * 4096
}

/// The report's workload, smaller: 300 overwrites of 700 KiB values spread over 10 keys.
#[tokio::test]
async fn sqlite_the_file_tracks_the_live_data_under_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = open_sqlite(dir.path()).await;
    let mut expected = Vec::new();
    for i in 0..300u64 {
        let entry = value(&format!("big/{}", i % KEYS), &[i as u8; VALUE_BYTES], v(i + 1, 1));
        store.apply(std::slice::from_ref(&entry)).await.unwrap();
        if i >= 300 - KEYS {
            expected.push(entry);
        }
    }
    let bytes = database_bytes(&store).await;
    assert!(
        bytes <= 3 * LIVE_BYTES,
        "{bytes} bytes of pages for {LIVE_BYTES} of live data"
    );
    store.close().await.unwrap();
    let file = std::fs::metadata(&path).unwrap().len();
    assert!(
        file <= 3 * LIVE_BYTES,
        "after close, a {file}-byte file for {LIVE_BYTES} of live data"
    );

    let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    expected.sort_by(|a: &Entry, b: &Entry| a.key.cmp(&b.key));
    assert_eq!(store.load().await.unwrap(), expected);
    store.close().await.unwrap();
}

/// `PRAGMA auto_vacuum` of the file at `path`, through a connection of its own.
async fn auto_vacuum(path: &std::path::Path) -> i64 {
    let mut side = side_connection(path).await;
    let mode = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&mut side)
        .await
        .unwrap();
    side.close().await.unwrap();
    mode
}

/// A database made before incremental vacuum (`auto_vacuum=NONE`) is rebuilt once at open, keeping its data.
#[tokio::test]
async fn sqlite_an_older_database_switches_to_incremental_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = open_sqlite(dir.path()).await;
    let entries: Vec<Entry> = (0..50u64)
        .map(|i| value(&format!("k/{i:02}"), &[1; 5000], v(i + 1, 1)))
        .collect();
    store.apply(&entries).await.unwrap();
    store.close().await.unwrap();
    assert_eq!(auto_vacuum(&path).await, 2, "a new database is INCREMENTAL");

    let mut side = side_connection(&path).await;
    sqlx::query("PRAGMA auto_vacuum = NONE")
        .execute(&mut side)
        .await
        .unwrap();
    sqlx::query("VACUUM").execute(&mut side).await.unwrap();
    side.close().await.unwrap();
    assert_eq!(auto_vacuum(&path).await, 0);

    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.load().await.unwrap(), entries);
    store.close().await.unwrap();
    assert_eq!(auto_vacuum(&path).await, 2);
}
