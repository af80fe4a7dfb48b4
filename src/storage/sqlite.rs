//! [`SqliteStore`]: the production [`Store`], one SQLite file per node.
//!
//! # Shape
//! - **One writer connection** behind an async mutex. SQLite allows one writer at a time anyway; holding the
//!   connection ourselves means concurrent `apply` calls queue in Rust instead of spinning on `SQLITE_BUSY`,
//!   and the writer's prepared statements stay cached on that one connection.
//! - **A small read pool.** In WAL mode readers never block the writer nor each other, so `get`/`scan`/`load`
//!   run next to a commit in progress and see the last committed state.
//! - **Merge in SQL.** `apply` is a multi-row upsert whose `DO UPDATE ... WHERE` only fires when the incoming
//!   row supersedes the stored one, with exactly the order of [`Entry::precedence`]. Doing it in SQL rather
//!   than read-compare-write in Rust saves a round trip per key and keeps the merge atomic with the write.
//!
//! # Unsigned integers
//! `hlc` and node ids are `u64`; SQLite integers are `i64`. They are stored bit-cast (`as i64`), so everything
//! at or above 2^63 becomes negative. Comparing bit-cast values by `(x < 0, x)` restores the unsigned order:
//! the high-bit values are the large ones, and within each half the signed order already agrees with the
//! unsigned one. (SQLite has no XOR operator, so the usual `x ^ i64::MIN` trick is not available.)

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

use super::{Durability, Store};
use crate::crdt::{Entry, NodeId, Version};
use crate::error::{Error, Result};

/// Schema migrations, embedded at compile time so the binary carries its own schema.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows per upsert statement. 7 parameters a row keeps a full chunk (3500) far below SQLite's bound-parameter
/// limit (32766), while big enough that per-statement overhead (a round trip to sqlx's worker thread) is
/// amortised.
const CHUNK_ROWS: usize = 500;

/// Page cache of the writer connection, in KiB (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: u64 = 64 * 1024;
/// Bytes of the database file the writer maps into memory for reading.
const MMAP_BYTES: u64 = 1 << 30;

/// The columns in the order every query selects them and [`Row`] decodes them.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT key, value, content_type, secret, deleted, hlc, node FROM kv ",
            $rest
        )
    };
}

/// A stored row as sqlx decodes it, before it becomes an [`Entry`].
type Row = (String, Vec<u8>, String, bool, bool, i64, i64);

const GET_SQL: &str = select!("WHERE key = ?1");
const LOAD_SQL: &str = select!("ORDER BY key");
/// Prefix scans are a primary-key range `[prefix, successor)`, not `LIKE`: `LIKE` is case-insensitive,
/// treats `%`/`_` in keys as wildcards and does not use the index.
pub(super) const SCAN_RANGE_SQL: &str = select!("WHERE key >= ?1 AND key < ?2 ORDER BY key");
/// For prefixes with no successor (empty, or only U+10FFFF characters): everything from the prefix on matches.
pub(super) const SCAN_FROM_SQL: &str = select!("WHERE key >= ?1 ORDER BY key");
/// Tombstone purge when `before_hlc < 2^63`: only non-negative (bit-cast) HLCs can be below it. The literal
/// `deleted = 1` lets SQLite use the partial index `kv_tombstones_by_hlc`.
pub(super) const PURGE_LOW_SQL: &str = "DELETE FROM kv WHERE deleted = 1 AND hlc >= 0 AND hlc < ?1 RETURNING key";
/// Tombstone purge when `before_hlc >= 2^63` (negative after the bit cast): every non-negative HLC is below
/// it, and so are the negative ones below it.
pub(super) const PURGE_HIGH_SQL: &str = "DELETE FROM kv WHERE deleted = 1 AND (hlc >= 0 OR hlc < ?1) RETURNING key";

/// Upsert statements for 1, 2, 4, …, 256 and [`CHUNK_ROWS`] rows.
///
/// sqlx caches one prepared statement per distinct SQL text and connection. A batch is cut into full chunks
/// plus a remainder written as a sum of powers of two, so at most ten statements are ever prepared, and
/// every batch size reuses them instead of preparing (and evicting) a statement per size.
static UPSERTS: LazyLock<Vec<(usize, String)>> = LazyLock::new(|| {
    let mut sizes: Vec<usize> = (0..)
        .map(|bit| 1 << bit)
        .take_while(|&rows| rows < CHUNK_ROWS)
        .collect();
    sizes.push(CHUNK_ROWS);
    sizes.into_iter().map(|rows| (rows, upsert_sql(rows))).collect()
});

fn upsert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO kv (key, value, content_type, secret, deleted, hlc, node) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?)");
    }
    // The WHERE is `excluded supersedes kv` in the order of `Entry::precedence`, field by field: version
    // (hlc, then node, both unsigned, see the module docs), deleted, value (BLOBs compare by memcmp, then
    // length: the order of `[u8]`), content_type (TEXT under the BINARY collation compares UTF-8 bytes: the
    // order of `str`), secret. Row values compare lexicographically, exactly like `Ordering::then_with`.
    sql.push_str(
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, content_type = excluded.content_type, \
         secret = excluded.secret, deleted = excluded.deleted, hlc = excluded.hlc, node = excluded.node \
         WHERE (excluded.hlc < 0, excluded.hlc, excluded.node < 0, excluded.node, excluded.deleted, \
         excluded.value, excluded.content_type, excluded.secret) \
         > (kv.hlc < 0, kv.hlc, kv.node < 0, kv.node, kv.deleted, kv.value, kv.content_type, kv.secret)",
    );
    sql
}

/// The prepared upsert for exactly `rows` rows (one of the sizes in [`UPSERTS`]).
fn upsert_for(rows: usize) -> &'static str {
    UPSERTS
        .iter()
        .find(|(size, _)| *size == rows)
        .map(|(_, sql)| sql.as_str())
        .expect("batch pieces are always a prepared size")
}

/// How `apply` cuts a batch of `len` entries into statement sizes: full chunks, then the binary digits of the
/// remainder, largest first.
fn pieces(len: usize) -> impl Iterator<Item = usize> {
    let full = std::iter::repeat_n(CHUNK_ROWS, len / CHUNK_ROWS);
    let rest = len % CHUNK_ROWS;
    let bits = (0..usize::BITS)
        .rev()
        .map(|bit| 1usize << bit)
        .filter(move |size| rest & size != 0);
    full.chain(bits)
}

/// The smallest string greater than every string that starts with `prefix`, or `None` if there is none.
///
/// UTF-8 byte order (SQLite's BINARY collation) is code point order, so the successor replaces the last
/// character by the next code point, skipping surrogates, and drops trailing U+10FFFF characters, which
/// have no next code point. Appending `char::MAX` instead would miss keys continuing with U+10FFFF.
pub(super) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut successor = prefix.to_owned();
    while let Some(last) = successor.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            char::MAX => None,
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            successor.push(next);
            return Some(successor);
        }
    }
    None
}

fn into_entry((key, value, content_type, secret, deleted, hlc, node): Row) -> Entry {
    Entry {
        key,
        value: Bytes::from(value),
        content_type,
        secret,
        deleted,
        version: Version::new(hlc as u64, NodeId(node as u64)),
    }
}

fn closed() -> Error {
    Error::Unavailable("storage is closed".to_string())
}

/// A [`Store`] in one SQLite database file (WAL mode).
pub struct SqliteStore {
    path: PathBuf,
    readers: SqlitePool,
    /// `None` once closed; the lock also serialises `apply`, `purge_tombstones` and `close`.
    writer: Mutex<Option<SqliteConnection>>,
    /// Checked first by readers so that they fail fast after `close` instead of waiting on a closing pool.
    closed: AtomicBool,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub async fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await?;
        }
        let synchronous = match durability {
            Durability::Normal => SqliteSynchronous::Normal,
            Durability::Fsync => SqliteSynchronous::Full,
        };
        // busy_timeout only matters if something outside this store (a backup tool, an operator's sqlite3
        // shell) holds a lock; our own connections never wait on each other for long.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(5));

        // The writer updates random leaf pages (keys arrive in any order). A page cache that holds the working
        // set, plus memory-mapped reads, spares a pread syscall per touched page on every commit.
        let writer_options = options
            .clone()
            .pragma("cache_size", format!("-{}", WRITER_CACHE_KIB))
            .pragma("mmap_size", MMAP_BYTES.to_string());
        let mut writer = writer_options.create_if_missing(true).connect().await?;
        MIGRATOR.run(&mut writer).await?;

        // Readers are opened after the writer so that the file, its WAL mode and its schema exist. They are
        // read-only: a bug that writes through them fails instead of racing the writer.
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.read_only(true))
            .await?;

        Ok(SqliteStore {
            path: path.to_owned(),
            readers,
            writer: Mutex::new(Some(writer)),
            closed: AtomicBool::new(false),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    /// `(journal_mode, synchronous, busy_timeout)` as the writer connection reports them.
    #[cfg(test)]
    pub(super) async fn writer_settings(&self) -> Result<(String, i64, i64)> {
        let mut writer = self.writer.lock().await;
        let conn = writer.as_mut().ok_or_else(closed)?;
        let journal_mode = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
        let synchronous = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await?;
        let busy_timeout = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut *conn).await?;
        Ok((journal_mode, synchronous, busy_timeout))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Vec<Entry>> {
        self.check_open()?;
        let rows = sqlx::query_as::<_, Row>(LOAD_SQL).fetch(&self.readers);
        Ok(rows.map_ok(into_entry).try_collect().await?)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.check_open()?;
        let row = sqlx::query_as::<_, Row>(GET_SQL)
            .bind(key)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.map(into_entry))
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.check_open()?;
        let query = match prefix_successor(prefix) {
            Some(end) => sqlx::query_as::<_, Row>(SCAN_RANGE_SQL).bind(prefix).bind(end),
            None => sqlx::query_as::<_, Row>(SCAN_FROM_SQL).bind(prefix),
        };
        Ok(query.fetch(&self.readers).map_ok(into_entry).try_collect().await?)
    }

    async fn apply(&self, entries: &[Entry]) -> Result<usize> {
        let mut writer = self.writer.lock().await;
        let conn = writer.as_mut().ok_or_else(closed)?;
        if entries.is_empty() {
            return Ok(0);
        }
        // All pieces in one transaction: a failure anywhere rolls back the whole batch (the transaction
        // rolls back when dropped on the error path).
        let mut tx = conn.begin().await?;
        let mut changed = 0u64;
        let mut rest = entries;
        for size in pieces(entries.len()) {
            let (piece, tail) = rest.split_at(size);
            rest = tail;
            let mut query = sqlx::query(upsert_for(size));
            for e in piece {
                query = query
                    .bind(e.key.as_str())
                    .bind(&e.value[..])
                    .bind(e.content_type.as_str())
                    .bind(e.secret)
                    .bind(e.deleted)
                    .bind(e.version.hlc as i64)
                    .bind(e.version.node.0 as i64);
            }
            changed += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(changed as usize)
    }

    async fn purge_tombstones(&self, before_hlc: u64) -> Result<Vec<String>> {
        let mut writer = self.writer.lock().await;
        let conn = writer.as_mut().ok_or_else(closed)?;
        let sql = if before_hlc <= i64::MAX as u64 {
            PURGE_LOW_SQL
        } else {
            PURGE_HIGH_SQL
        };
        // A single statement is its own transaction: all matching tombstones go, or none.
        let mut keys: Vec<String> = sqlx::query_scalar(sql)
            .bind(before_hlc as i64)
            .fetch_all(&mut *conn)
            .await?;
        keys.sort_unstable();
        Ok(keys)
    }

    async fn size_bytes(&self) -> Result<u64> {
        self.check_open()?;
        let db: i64 = sqlx::query_scalar("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
            .fetch_one(&self.readers)
            .await?;
        // The WAL holds committed data not yet checkpointed into the main file; it is disk the store uses.
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let wal = match tokio::fs::metadata(&wal).await {
            Ok(meta) => meta.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(err.into()),
        };
        Ok(db as u64 + wal)
    }

    async fn close(&self) -> Result<()> {
        let mut writer = self.writer.lock().await;
        let mut conn = writer.take().ok_or_else(closed)?;
        self.closed.store(true, Ordering::Release);
        // Readers first: a checkpoint cannot truncate the WAL past a snapshot a reader still uses.
        self.readers.close().await;
        // Fold the WAL into the main file so that the database is a single self-contained file at rest.
        let checkpoint = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await;
        let closing = conn.close().await;
        checkpoint?;
        closing?;
        Ok(())
    }
}
