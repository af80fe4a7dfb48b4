//! The restart's bulk load: every stored row, read on a blocking thread through its own read-only connection
//! (two threads and two connections, a half of the keys each, for a large table: [`load_parts`]).
//!
//! sqlx streams a query's rows from its worker thread to the awaiting task one at a time, and copies every
//! column of every row (`sqlite3_value_dup`, under SQLite's allocator mutex) before the row crosses over: for
//! a million rows of thirteen columns that took most of a restart, in futex wake-ups and lock contention
//! rather than in SQLite. Here the rows are stepped where they are decoded, and each column is read in place
//! (`rusqlite`'s borrowed values) and copied once, into the [`Entry`] it becomes. `rusqlite` links the same
//! `libsqlite3-sys` build as sqlx, so there is one SQLite in the process and its POSIX-lock bookkeeping is
//! shared by every connection to the file.

use std::path::Path;

use bytes::Bytes;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::sql::{merge_rows, LOAD_KV, LOAD_KV_BELOW, LOAD_KV_FROM, LOAD_LOG, LOAD_LOG_BELOW, LOAD_LOG_FROM};
use crate::crdt::{expiry, DocMeta, Entry, LeaseId, NodeId, Version};
use crate::error::{Error, Result};

/// Page cache of the load's connection, in KiB: the scan reads each page once, in order.
const LOAD_CACHE_KIB: u64 = 2 * 1024;
/// Bytes of the file the load maps instead of copying its pages into the cache (unmapped when it is done).
const LOAD_MMAP_BYTES: u64 = 1 << 40;

/// Every stored entry, the log merged into `kv`, in key order: what [`super::SqliteStore::load`] returns.
/// Blocking; both tables are read in one read transaction, so a compaction committing meanwhile cannot move
/// rows from the log into `kv` between the two reads.
pub(super) fn load(path: &Path) -> Result<Vec<Entry>> {
    let conn = connect(path)?;
    let total = count(&conn, "kv")?;
    part(&conn, LOAD_KV, LOAD_LOG, None, total)
}

/// [`load`] in two parts read at once, the keys below the middle one on this thread and the rest on another,
/// each through its own connection, when `kv` holds at least twice `split_min_rows`; else in one part.
///
/// Each part reads its keys' rows of both tables in one read transaction of its own, so each key's state
/// is one the store held (a compaction between the two transactions moves rows of one part or the other,
/// never half of a key); the two parts may be a moment apart, as two loads would be.
pub(super) fn load_parts(path: &Path, split_min_rows: usize) -> Result<Vec<Vec<Entry>>> {
    let conn = connect(path)?;
    conn.execute_batch("BEGIN")?;
    let total = count(&conn, "kv")?;
    if total < split_min_rows.saturating_mul(2) {
        conn.execute_batch("COMMIT")?;
        return Ok(vec![part(&conn, LOAD_KV, LOAD_LOG, None, total)?]);
    }
    let lower_rows = total / 2;
    let middle: String = conn.query_row(
        "SELECT key FROM kv ORDER BY key LIMIT 1 OFFSET ?1",
        [lower_rows as i64],
        |row| row.get(0),
    )?;
    conn.execute_batch("COMMIT")?;
    std::thread::scope(|scope| {
        let upper = std::thread::Builder::new()
            .name("cave-load".into())
            .spawn_scoped(scope, || {
                part(
                    &connect(path)?,
                    LOAD_KV_FROM,
                    LOAD_LOG_FROM,
                    Some(&middle),
                    total - lower_rows,
                )
            })
            .map_err(|err| Error::Internal(format!("cannot start the second load thread: {err}")))?;
        let lower = part(&conn, LOAD_KV_BELOW, LOAD_LOG_BELOW, Some(&middle), lower_rows);
        // A panic on the other thread is a bug, not an outcome: it goes on here as it was.
        let upper = upper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok(vec![lower?, upper?])
    })
}

/// The entries of the keys `kv_sql` and `log_sql` select (against `bound` if they take one), both tables read
/// in one read transaction, the log merged in; `expected` rows of `kv` (a vector's size, not a rule).
fn part(conn: &Connection, kv_sql: &str, log_sql: &str, bound: Option<&str>, expected: usize) -> Result<Vec<Entry>> {
    conn.execute_batch("BEGIN")?;
    let kv = rows(conn, kv_sql, bound, expected)?;
    let log = rows(conn, log_sql, bound, count(conn, "log")?)?;
    conn.execute_batch("COMMIT")?;
    Ok(merge_rows(kv, log))
}

/// A read-only connection for a load.
fn connect(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.pragma_update(None, "cache_size", format!("-{LOAD_CACHE_KIB}"))?;
    conn.pragma_update(None, "mmap_size", LOAD_MMAP_BYTES.to_string())?;
    Ok(conn)
}

/// The rows of `table`. Counted before a load (a pass over the table's pages without decoding them: 60 ms of
/// the ~700 ms a million rows take) so that the entries are written once into a vector of their size: grown
/// by doubling, they were copied about once more and twice their size of fresh pages zeroed by the kernel.
fn count(conn: &Connection, table: &str) -> Result<usize> {
    let count: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// The rows of `sql` (the columns of `sql::select!`, with `bound` as its one parameter if it has one),
/// decoded into a vector made for `expected` of them.
fn rows(conn: &Connection, sql: &str, bound: Option<&str>, expected: usize) -> Result<Vec<Entry>> {
    let mut statement = conn.prepare(sql)?;
    let mut rows = match bound {
        Some(bound) => statement.query([bound])?,
        None => statement.query([])?,
    };
    let mut out = Vec::with_capacity(expected);
    while let Some(row) = rows.next()? {
        out.push(entry(row)?);
    }
    Ok(out)
}

/// One row (the columns of `sql::select!`, in order) as an entry.
fn entry(row: &rusqlite::Row<'_>) -> Result<Entry> {
    // Borrowed from the row: a short key is copied straight into the entry, with no allocation.
    fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r str> {
        match row.get_ref(i)? {
            ValueRef::Text(bytes) => {
                std::str::from_utf8(bytes).map_err(|_| Error::Corrupt(format!("stored column {i} is not UTF-8")))
            }
            other => Err(column_type(i, other)),
        }
    }
    let int = |i: usize| -> Result<Option<i64>> {
        match row.get_ref(i)? {
            ValueRef::Integer(n) => Ok(Some(n)),
            ValueRef::Null => Ok(None),
            other => Err(column_type(i, other)),
        }
    };
    let required = |i: usize| int(i)?.ok_or_else(|| Error::Corrupt(format!("stored column {i} is NULL")));
    let value = match row.get_ref(1)? {
        // As sqlx's `Vec<u8>` decodes it: a BLOB, or the bytes of a TEXT.
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Bytes::copy_from_slice(bytes),
        other => return Err(column_type(1, other)),
    };
    let doc = match (int(7)?, int(8)?, int(9)?, int(10)?) {
        (Some(hlc), Some(node), Some(changes), Some(heads)) => Some(DocMeta {
            created: Version::new(hlc as u64, NodeId(node as u64)),
            changes: changes as u64,
            heads: heads as u64,
            delta: false,
        }),
        _ => None,
    };
    Ok(Entry {
        key: text(row, 0)?.into(),
        value,
        content_type: text(row, 2)?.into(),
        secret: required(3)? != 0,
        deleted: required(4)? != 0,
        version: Version::new(required(5)? as u64, NodeId(required(6)? as u64)),
        doc: doc.map(Box::new),
        expires: int(11)?.map(|at| expiry::at(at as u64)),
        lease: int(12)?.and_then(|id| LeaseId::new(id as u64)),
    })
}

fn column_type(i: usize, value: ValueRef<'_>) -> Error {
    Error::Corrupt(format!("stored column {i} has type {}", value.data_type()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Durability, SqliteStore, Store};

    /// A store at `dir` holding one value, closed; then `sql` run on the file through a writable connection.
    async fn stored_then(dir: &Path, sql: &str) -> std::path::PathBuf {
        let path = dir.join("cave.db");
        let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
        let entry = Entry::value("a/b", &b"v"[..], Version::new(7, NodeId(1)));
        store.apply_with_audit(&[entry], &[]).await.unwrap();
        store.close().await.unwrap();
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        path
    }

    #[tokio::test]
    async fn the_log_is_merged_into_the_table_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        // After `close` the value is in `kv`; a newer version of it and a new key go into the log by hand.
        let path = stored_then(
            dir.path(),
            "INSERT INTO log (key, value, content_type, secret, deleted, hlc, node) \
             VALUES ('a/b', x'77', 'text/plain', 0, 0, 9, 2), ('a/a', x'', 'text/plain', 0, 1, 3, 1)",
        )
        .await;
        let loaded = load(&path).unwrap();
        let keys: Vec<_> = loaded
            .iter()
            .map(|e| (e.key.as_str(), e.version.hlc, e.deleted))
            .collect();
        assert_eq!(keys, [("a/a", 3, true), ("a/b", 9, false)]);
        assert_eq!(&loaded[1].value[..], b"w");
        assert_eq!(loaded[1].content_type, "text/plain");
    }

    #[tokio::test]
    async fn a_split_load_is_the_whole_load_in_two_parts() {
        let dir = tempfile::tempdir().unwrap();
        // Ten keys in `kv` ("a/b" and k/0..k/8), then by hand in the log: a newer version of a key of each
        // half, a key only in the log, and a tombstone.
        let path = stored_then(dir.path(), "").await;
        let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
        let batch: Vec<Entry> = (0..9)
            .map(|i| Entry::value(format!("k/{i}"), &b"v"[..], Version::new(5, NodeId(1))))
            .collect();
        store.apply_with_audit(&batch, &[]).await.unwrap();
        store.close().await.unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "INSERT INTO log (key, value, content_type, secret, deleted, hlc, node) \
                 VALUES ('a/b', x'77', '', 0, 0, 9, 2), ('k/7', x'78', '', 0, 0, 9, 2), \
                 ('k/45', x'79', '', 0, 0, 9, 2), ('k/2', x'', '', 0, 1, 9, 2)",
            )
            .unwrap();
        let whole = load(&path).unwrap();
        assert_eq!(whole.len(), 11);
        // Below twice the threshold: one part.
        assert_eq!(load_parts(&path, 6).unwrap(), vec![whole.clone()]);
        let parts = load_parts(&path, 5).unwrap();
        assert_eq!(parts.len(), 2);
        // The middle of the ten rows of `kv` splits them five and five; "k/45" (log only) falls in the upper.
        assert_eq!(parts[0].last().map(|e| e.key.as_str()), Some("k/3"));
        assert_eq!(parts.concat(), whole);
        let map = crate::crdt::LwwMap::from_parts(parts);
        assert!(map.iter().eq(whole.iter()));
    }

    #[tokio::test]
    async fn a_row_of_the_wrong_shape_is_a_corruption_not_a_panic() {
        for sql in [
            "UPDATE kv SET content_type = x'00'",
            "UPDATE kv SET key = CAST(x'ff2f61' AS TEXT)",
            "UPDATE kv SET hlc = 'soon'",
            "UPDATE kv SET value = 1.5",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = stored_then(dir.path(), sql).await;
            let err = load(&path).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{sql}: {err:?}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(&dir.path().join("none.db")), Err(Error::Internal(_))));
    }
}
