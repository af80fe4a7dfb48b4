//! The restart's bulk load: every stored row, read on a blocking thread through its own read-only connection.
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

use super::sql::{merge_rows, LOAD_KV, LOAD_LOG};
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
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.pragma_update(None, "cache_size", format!("-{LOAD_CACHE_KIB}"))?;
    conn.pragma_update(None, "mmap_size", LOAD_MMAP_BYTES.to_string())?;
    conn.execute_batch("BEGIN")?;
    let kv = rows(&conn, LOAD_KV, "kv")?;
    let log = rows(&conn, LOAD_LOG, "log")?;
    conn.execute_batch("COMMIT")?;
    Ok(merge_rows(kv, log))
}

/// The rows of `sql` (the columns of `sql::select!`) from `table`, decoded.
fn rows(conn: &Connection, sql: &str, table: &str) -> Result<Vec<Entry>> {
    // Counted first (from the smallest index, a fraction of the table's pages), so that the entries are
    // written once into a vector of their size: grown by doubling, they were copied about once more and
    // twice their size of fresh pages zeroed by the kernel, which was a fifth of a restart.
    let count: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))?;
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query([])?;
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
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
