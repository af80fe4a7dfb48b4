//! [`SqliteStore`]: the production [`Store`], one SQLite file per node.
//!
//! # Shape
//! - **One writer connection** behind an async mutex. SQLite allows one writer at a time anyway; holding the
//!   connection ourselves means concurrent `apply` calls queue in Rust instead of spinning on `SQLITE_BUSY`,
//!   and the writer's prepared statements stay cached on that one connection.
//! - **A small read pool.** In WAL mode readers never block the writer nor each other, so `get`/`scan`/`load`
//!   run next to a commit in progress and see the last committed state.
//!
//! # A write log in front of the table (one-level LSM)
//! Entries live in two tables: `kv`, one row per key clustered on the key, and `log`, an append-only table in
//! `seq` (rowid) order with no index on the key (`migrations/0002_log.sql`).
//!
//! - **`apply` appends.** One transaction inserts the batch at the end of `log`, merging nothing. Upserting
//!   random keys straight into `kv` (the previous design) dirtied one 4 KiB b-tree leaf page per entry, since
//!   keys arrive in any order, and every dirty page is a full page write to the WAL plus another when it is
//!   checkpointed. Appends fill the rightmost pages of one b-tree: a 32-entry batch of small values dirties
//!   two or three pages. See "Measurements" below.
//! - **Compaction** folds the oldest rows of `log` into `kv` in *slices*: one transaction runs
//!   `INSERT INTO kv SELECT ... FROM log WHERE seq <= bound ORDER BY key, seq ON CONFLICT (key) DO UPDATE ...
//!   WHERE excluded supersedes kv` and deletes the folded rows. The merge happens in SQL with exactly the
//!   order of [`Entry::precedence`]; several log rows of one key merge correctly inside the one statement,
//!   because each later row conflicts with the row the earlier one left (and the merge is a semilattice, so
//!   their order does not matter). Sorting the slice by key visits `kv` in key order, and a page that several
//!   entries of the slice share is written once instead of once per commit.
//! - **When.** The writer counts the log's rows (`COUNT(*)` at open, then in memory). After an append
//!   commits, while the log holds at least [`StoreTuning::compact_threshold_rows`], `apply` folds slices of
//!   [`StoreTuning::compact_slice_rows`] before returning. Inline rather than in a background task: the
//!   writer connection is needed either way, so a background compaction would stall the next `apply` on the
//!   mutex for the same time, and inline needs no task, no shutdown handshake and no second error path. The
//!   stall is paid by the one group that crossed the threshold and is one slice as long as batches are
//!   smaller than a slice (the database layer's groups are); a bigger batch folds about as many rows as it
//!   appended, so the log stays bounded. A compaction that fails is only logged: the batch is already
//!   committed, and failing the `apply` would tell the caller a durable batch was lost. The rows stay in the
//!   log, and the next `apply` retries.
//!   [`SqliteStore::compact`] folds everything; `close` does too (before its WAL checkpoint), so a cleanly
//!   closed store has an empty log, and `purge_tombstones` does before it purges (below).
//! - **Reads merge.** `get`, `scan` and `load` read the `kv` rows *and* the `log` rows of the range in one
//!   read transaction, so in one snapshot (a compaction committing between the two queries could otherwise
//!   move a row out of the log after `kv` was read), and merge them in Rust with [`Entry::merge`]. The log
//!   part is a scan of the log (no key index), bounded by the threshold; these reads are not on the hot path
//!   (the database layer serves reads from memory and calls `load` once at start-up).
//! - **Tombstone purge** first compacts fully, under the writer lock. Otherwise a tombstone still in the log
//!   could hide an older live row in `kv`: purging one but not the other would resurrect the value.
//!
//! # Crash safety
//! Every step is one SQLite transaction: an append, a compaction slice (fold + delete), a purge. A crash after
//! an append and before its compaction leaves the rows in the log, where the reads merge them; the next
//! compaction folds them. A crash inside a slice rolls it back whole: the rows are still in the log and `kv`
//! is unchanged. A row folded twice (impossible, but harmless) would merge to the same result.
//!
//! # Measurements
//! Release build; batches of 32 random keys with 100-byte values applied back to back for 12 s; throughput
//! counts the final `close` (which folds what is left in the log), so the compaction debt is paid. A 2-core VM
//! that other jobs shared: under heavier load every figure was up to 2-3 times worse, the ratios similar.
//!
//! | keys, durability | upsert into `kv` (before)         | log, threshold 32768, slice 16384               |
//! |------------------|-----------------------------------|-------------------------------------------------|
//! | 100k, normal     | 59k entries/s; p99 9 ms, max 19   | 125k entries/s; p99 0.3 ms; slice ~90 ms (150)  |
//! | 100k, fsync      | 38k entries/s; p99 9 ms, max 13   | 76k entries/s; p99 0.7 ms; slice ~90 ms (117)   |
//! | 1M, normal       | 33k entries/s; p99 19 ms, max 83  | 46k entries/s; p99 0.3 ms; slice ~305 ms (400)  |
//! | 1M, fsync        | 28k entries/s; p99 16 ms, max 80  | 39k entries/s; p99 0.5 ms; slice ~300 ms (350)  |
//!
//! (p99 and max of one `apply`; slice: median time of one compaction slice, in parentheses the longest.)
//!
//! The median apply drops from 0.2-0.35 ms to 0.05 ms (normal) and from 0.55-0.6 ms to 0.2 ms (fsync). The
//! price is the slice: the one apply that compacts stalls for it, and everything queued behind it waits. A
//! slice of S rows dirties up to S distinct `kv` pages (all ~5k of them at 100k keys; nearly one per row at 1M
//! keys), so smaller slices buy less than they cost: at 1M keys 8192-row slices took ~180 ms for 40k
//! entries/s, and in a loaded run 4096-row slices took ~175-225 ms and 2048-row ones ~100 ms while
//! throughput fell back to the old design's. About half of a slice is the WAL checkpoint SQLite runs on the
//! writer connection right after the commit: with automatic checkpoints turned off (a measurement only, the
//! WAL then grows without bound) a 16384-row slice at 100k keys took ~85 instead of ~195 ms, and a 4096-row
//! slice at 1M keys ~75 instead of ~225 ms (loaded run). A larger threshold with the same slice changed
//! little (47k entries/s at 1M keys with 65536) and only grows the log that reads scan and `close` folds.
//!
//! # Unsigned integers
//! `hlc` and node ids are `u64`; SQLite integers are `i64`. They are stored bit-cast (`as i64`), so everything
//! at or above 2^63 becomes negative. Comparing bit-cast values by `(x < 0, x)` restores the unsigned order:
//! the high-bit values are the large ones, and within each half the signed order already agrees with the
//! unsigned one. (SQLite has no XOR operator, so the usual `x ^ i64::MIN` trick is not available.)

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

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

/// Rows per append statement. 7 parameters a row keeps a full chunk (3500) far below SQLite's bound-parameter
/// limit (32766), while big enough that per-statement overhead (a round trip to sqlx's worker thread) is
/// amortised.
const CHUNK_ROWS: usize = 500;

/// Default of [`StoreTuning::compact_threshold_rows`]: bounds the log that reads scan and `close` folds. See the
/// measurements in the module docs.
pub const COMPACT_THRESHOLD_ROWS: usize = 32_768;
/// Default of [`StoreTuning::compact_slice_rows`]: bounds the stall of the `apply` that compacts. See the
/// measurements in the module docs.
pub const COMPACT_SLICE_ROWS: usize = 16_384;

/// Page cache of the writer connection, in KiB (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: u64 = 64 * 1024;
/// Bytes of the database file the writer maps into memory for reading.
const MMAP_BYTES: u64 = 1 << 30;

/// When the log is compacted. [`Default`] is what production uses; tests make it small to compact often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTuning {
    /// After an append commits, compaction runs while the log holds at least this many rows.
    pub compact_threshold_rows: usize,
    /// Rows (the oldest first) one compaction transaction folds into `kv`. Bounds the stall of the `apply`
    /// that compacts; at least 1.
    pub compact_slice_rows: usize,
}

impl Default for StoreTuning {
    fn default() -> StoreTuning {
        StoreTuning {
            compact_threshold_rows: COMPACT_THRESHOLD_ROWS,
            compact_slice_rows: COMPACT_SLICE_ROWS,
        }
    }
}

/// The columns in the order every query selects them and [`Row`] decodes them.
macro_rules! select {
    ($table:literal, $rest:literal) => {
        concat!(
            "SELECT key, value, content_type, secret, deleted, hlc, node FROM ",
            $table,
            " ",
            $rest
        )
    };
}

/// A stored row as sqlx decodes it, before it becomes an [`Entry`].
type Row = (String, Vec<u8>, String, bool, bool, i64, i64);

/// The rows of one key range, in `kv` (in key order) and in `log` (in append order), for [`SqliteStore::read`].
struct Reads {
    kv: &'static str,
    log: &'static str,
}

const GET: Reads = Reads {
    kv: select!("kv", "WHERE key = ?1"),
    log: select!("log", "WHERE key = ?1 ORDER BY seq"),
};
const LOAD: Reads = Reads {
    kv: select!("kv", "ORDER BY key"),
    log: select!("log", "ORDER BY seq"),
};
/// Prefix scans are a primary-key range `[prefix, successor)`, not `LIKE`: `LIKE` is case-insensitive,
/// treats `%`/`_` in keys as wildcards and does not use the index.
pub(super) const SCAN_RANGE_SQL: &str = select!("kv", "WHERE key >= ?1 AND key < ?2 ORDER BY key");
/// For prefixes with no successor (empty, or only U+10FFFF characters): everything from the prefix on matches.
pub(super) const SCAN_FROM_SQL: &str = select!("kv", "WHERE key >= ?1 ORDER BY key");
const SCAN_RANGE: Reads = Reads {
    kv: SCAN_RANGE_SQL,
    log: select!("log", "WHERE key >= ?1 AND key < ?2 ORDER BY seq"),
};
const SCAN_FROM: Reads = Reads {
    kv: SCAN_FROM_SQL,
    log: select!("log", "WHERE key >= ?1 ORDER BY seq"),
};

/// Tombstone purge when `before_hlc < 2^63`: only non-negative (bit-cast) HLCs can be below it. The literal
/// `deleted = 1` lets SQLite use the partial index `kv_tombstones_by_hlc`.
pub(super) const PURGE_LOW_SQL: &str = "DELETE FROM kv WHERE deleted = 1 AND hlc >= 0 AND hlc < ?1 RETURNING key";
/// Tombstone purge when `before_hlc >= 2^63` (negative after the bit cast): every non-negative HLC is below
/// it, and so are the negative ones below it.
pub(super) const PURGE_HIGH_SQL: &str = "DELETE FROM kv WHERE deleted = 1 AND (hlc >= 0 OR hlc < ?1) RETURNING key";

/// The last `seq` of the oldest `?1` log rows (NULL if the log is empty): the bound of one compaction slice.
const SLICE_BOUND_SQL: &str = "SELECT max(seq) FROM (SELECT seq FROM log ORDER BY seq LIMIT ?1)";
/// Fold the log rows up to `?1` into `kv`, merging by precedence.
///
/// The WHERE is `excluded supersedes kv` in the order of `Entry::precedence`, field by field: version (hlc,
/// then node, both unsigned, see the module docs), deleted, value (BLOBs compare by memcmp, then length: the
/// order of `[u8]`), content_type (TEXT under the BINARY collation compares UTF-8 bytes: the order of `str`),
/// secret. Row values compare lexicographically, exactly like `Ordering::then_with`.
///
/// The ORDER BY visits `kv` in key order (each leaf page once), and it is also what lets SQLite parse an
/// upsert after a SELECT: without it (or a `WHERE`), `ON CONFLICT` would be read as a join constraint.
pub(super) const COMPACT_SQL: &str = concat!(
    "INSERT INTO kv (key, value, content_type, secret, deleted, hlc, node) ",
    select!("log", "WHERE seq <= ?1 ORDER BY key, seq "),
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, content_type = excluded.content_type, \
     secret = excluded.secret, deleted = excluded.deleted, hlc = excluded.hlc, node = excluded.node \
     WHERE (excluded.hlc < 0, excluded.hlc, excluded.node < 0, excluded.node, excluded.deleted, \
     excluded.value, excluded.content_type, excluded.secret) \
     > (kv.hlc < 0, kv.hlc, kv.node < 0, kv.node, kv.deleted, kv.value, kv.content_type, kv.secret)"
);
/// Drop the log rows up to `?1`, in the transaction that folded them.
const TRIM_LOG_SQL: &str = "DELETE FROM log WHERE seq <= ?1";

/// Append statements for 1, 2, 4, …, 256 and [`CHUNK_ROWS`] rows.
///
/// sqlx caches one prepared statement per distinct SQL text and connection. A batch is cut into full chunks
/// plus a remainder written as a sum of powers of two, so at most ten statements are ever prepared, and
/// every batch size reuses them instead of preparing (and evicting) a statement per size.
static APPENDS: LazyLock<Vec<(usize, String)>> = LazyLock::new(|| {
    let mut sizes: Vec<usize> = (0..)
        .map(|bit| 1 << bit)
        .take_while(|&rows| rows < CHUNK_ROWS)
        .collect();
    sizes.push(CHUNK_ROWS);
    sizes.into_iter().map(|rows| (rows, append_sql(rows))).collect()
});

fn append_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO log (key, value, content_type, secret, deleted, hlc, node) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?)");
    }
    sql
}

/// The prepared append for exactly `rows` rows (one of the sizes in [`APPENDS`]).
fn append_for(rows: usize) -> &'static str {
    APPENDS
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

/// Merge `kv` (sorted by key, one entry per key) with `log` (any order, several entries per key allowed)
/// into one entry per key, in key order.
fn merge_rows(kv: Vec<Entry>, log: Vec<Entry>) -> Vec<Entry> {
    if log.is_empty() {
        return kv;
    }
    let mut newer: HashMap<String, Entry> = HashMap::with_capacity(log.len());
    for entry in log {
        let merged = match newer.remove(&entry.key) {
            Some(current) => current.merge(entry),
            None => entry,
        };
        newer.insert(merged.key.clone(), merged);
    }
    let mut merged = Vec::with_capacity(kv.len() + newer.len());
    for entry in kv {
        match newer.remove(&entry.key) {
            Some(logged) => merged.push(entry.merge(logged)),
            None => merged.push(entry),
        }
    }
    if newer.is_empty() {
        return merged;
    }
    // Keys only in the log: interleave them with the kv keys (two sorted runs with disjoint keys).
    let mut only_logged: Vec<Entry> = newer.into_values().collect();
    only_logged.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let mut out = Vec::with_capacity(merged.len() + only_logged.len());
    let mut kv = merged.into_iter().peekable();
    let mut logged = only_logged.into_iter().peekable();
    loop {
        let take_kv = match (kv.peek(), logged.peek()) {
            (Some(a), Some(b)) => a.key < b.key,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_kv { kv.next() } else { logged.next() });
    }
}

/// The writer connection and what it knows about the log.
struct Writer {
    conn: SqliteConnection,
    /// Rows in `log`: counted at open, then kept up to date by every append and compaction.
    log_rows: usize,
}

impl Writer {
    /// Append `entries` to the log in one transaction.
    async fn append(&mut self, entries: &[Entry]) -> Result<()> {
        // All pieces in one transaction: a failure anywhere rolls back the whole batch (the transaction
        // rolls back when dropped on the error path).
        let mut tx = self.conn.begin().await?;
        let mut rest = entries;
        for size in pieces(entries.len()) {
            let (piece, tail) = rest.split_at(size);
            rest = tail;
            let mut query = sqlx::query(append_for(size));
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
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.log_rows += entries.len();
        Ok(())
    }

    /// Fold the oldest `rows` log rows into `kv` and delete them from the log, in one transaction. Returns
    /// how many rows were folded (0 once the log is empty).
    async fn compact_slice(&mut self, rows: usize) -> Result<usize> {
        let started = Instant::now();
        let mut tx = self.conn.begin().await?;
        let bound: Option<i64> = sqlx::query_scalar(SLICE_BOUND_SQL)
            .bind(rows.max(1) as i64)
            .fetch_one(&mut *tx)
            .await?;
        let Some(bound) = bound else {
            tx.rollback().await?;
            self.log_rows = 0;
            return Ok(0);
        };
        sqlx::query(COMPACT_SQL).bind(bound).execute(&mut *tx).await?;
        let folded = sqlx::query(TRIM_LOG_SQL)
            .bind(bound)
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize;
        tx.commit().await?;
        self.log_rows = self.log_rows.saturating_sub(folded);
        tracing::debug!(folded, left = self.log_rows, elapsed = ?started.elapsed(), "compacted the storage log");
        Ok(folded)
    }

    /// Compact slices while the log holds at least `tuning.compact_threshold_rows`.
    async fn compact_over_threshold(&mut self, tuning: &StoreTuning) -> Result<()> {
        while self.log_rows >= tuning.compact_threshold_rows {
            if self.compact_slice(tuning.compact_slice_rows).await? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Fold the whole log into `kv`, slice by slice.
    async fn compact_all(&mut self, tuning: &StoreTuning) -> Result<()> {
        while self.compact_slice(tuning.compact_slice_rows).await? > 0 {}
        Ok(())
    }
}

/// A [`Store`] in one SQLite database file (WAL mode).
pub struct SqliteStore {
    path: PathBuf,
    tuning: StoreTuning,
    readers: SqlitePool,
    /// `None` once closed; the lock also serialises `apply`, compaction, `purge_tombstones` and `close`.
    writer: Mutex<Option<Writer>>,
    /// Checked first by readers so that they fail fast after `close` instead of waiting on a closing pool.
    closed: AtomicBool,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("tuning", &self.tuning)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub async fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        SqliteStore::open_with(path, durability, StoreTuning::default()).await
    }

    /// [`SqliteStore::open`] with non-default compaction settings.
    pub async fn open_with(path: &Path, durability: Durability, tuning: StoreTuning) -> Result<SqliteStore> {
        // Owned copies across the awaits below keep this future `Send` (a borrowed `&Path` held across an
        // await trips rustc's higher-ranked lifetime check when the future is spawned).
        if let Some(parent) = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
        {
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

        // Compaction updates `kv` leaf pages all over the table. A page cache that holds the working set, plus
        // memory-mapped reads, spares a pread syscall per touched page.
        let writer_options = options
            .clone()
            .pragma("cache_size", format!("-{}", WRITER_CACHE_KIB))
            .pragma("mmap_size", MMAP_BYTES.to_string());
        let mut conn = writer_options.create_if_missing(true).connect().await?;
        // `run_direct` on the connection itself rather than `run(&mut conn)` through `Acquire`: the generic
        // path makes the future non-`Send` (sqlx's documented workaround for that rustc limitation).
        MIGRATOR.run_direct(None, &mut conn, false).await?;
        let log_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log")
            .fetch_one(&mut conn)
            .await?;

        // Readers are opened after the writer so that the file, its WAL mode and its schema exist. They are
        // read-only: a bug that writes through them fails instead of racing the writer.
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.read_only(true))
            .await?;

        Ok(SqliteStore {
            path: path.to_owned(),
            tuning: StoreTuning {
                compact_slice_rows: tuning.compact_slice_rows.max(1),
                ..tuning
            },
            readers,
            writer: Mutex::new(Some(Writer {
                conn,
                log_rows: log_rows as usize,
            })),
            closed: AtomicBool::new(false),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fold the whole write log into the key table now (see the module docs). Reads merge the log anyway;
    /// this only moves work forward.
    pub async fn compact(&self) -> Result<()> {
        let mut writer = self.writer.lock().await;
        writer.as_mut().ok_or_else(closed)?.compact_all(&self.tuning).await
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    /// The rows of `reads` in `kv` and in `log`, bound to `binds`, merged; in key order.
    ///
    /// Both queries run in one read transaction, so they see the same snapshot: a compaction committing
    /// between them would otherwise move rows out of the log after `kv` was read and lose them from the result.
    async fn read(&self, reads: &Reads, binds: &[&str]) -> Result<Vec<Entry>> {
        self.check_open()?;
        let mut tx = self.readers.begin().await?;
        let mut kv = sqlx::query_as::<_, Row>(reads.kv);
        let mut log = sqlx::query_as::<_, Row>(reads.log);
        for bind in binds {
            kv = kv.bind(*bind);
            log = log.bind(*bind);
        }
        let kv: Vec<Entry> = kv.fetch(&mut *tx).map_ok(into_entry).try_collect().await?;
        let log: Vec<Entry> = log.fetch(&mut *tx).map_ok(into_entry).try_collect().await?;
        tx.commit().await?;
        Ok(merge_rows(kv, log))
    }

    /// `(journal_mode, synchronous, busy_timeout)` as the writer connection reports them.
    #[cfg(test)]
    pub(super) async fn writer_settings(&self) -> Result<(String, i64, i64)> {
        let mut writer = self.writer.lock().await;
        let conn = &mut writer.as_mut().ok_or_else(closed)?.conn;
        let journal_mode = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
        let synchronous = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await?;
        let busy_timeout = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut *conn).await?;
        Ok((journal_mode, synchronous, busy_timeout))
    }

    /// Rows in the log, counted in SQL; checks that the writer's running count agrees.
    #[cfg(test)]
    pub(super) async fn log_rows(&self) -> Result<usize> {
        let mut writer = self.writer.lock().await;
        let writer = writer.as_mut().ok_or_else(closed)?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log")
            .fetch_one(&mut writer.conn)
            .await?;
        assert_eq!(rows as usize, writer.log_rows, "the running count of log rows drifted");
        Ok(rows as usize)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Vec<Entry>> {
        self.read(&LOAD, &[]).await
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.read(&GET, &[key]).await?.pop())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<Entry>> {
        match prefix_successor(prefix) {
            Some(end) => self.read(&SCAN_RANGE, &[prefix, &end]).await,
            None => self.read(&SCAN_FROM, &[prefix]).await,
        }
    }

    async fn apply(&self, entries: &[Entry]) -> Result<usize> {
        let mut writer = self.writer.lock().await;
        let writer = writer.as_mut().ok_or_else(closed)?;
        if entries.is_empty() {
            return Ok(0);
        }
        writer.append(entries).await?;
        // The batch is committed: from here on nothing may turn this call into an error.
        if let Err(err) = writer.compact_over_threshold(&self.tuning).await {
            tracing::warn!(error = %err, log_rows = writer.log_rows, "compacting the storage log failed; will retry");
        }
        Ok(entries.len())
    }

    async fn purge_tombstones(&self, before_hlc: u64) -> Result<Vec<String>> {
        let mut writer = self.writer.lock().await;
        let writer = writer.as_mut().ok_or_else(closed)?;
        // With the log empty, `kv` holds the merged state of every key: a tombstone there is the key's
        // winner, and no older live row of its key is waiting in the log to come back once it is gone.
        writer.compact_all(&self.tuning).await?;
        let sql = if before_hlc <= i64::MAX as u64 {
            PURGE_LOW_SQL
        } else {
            PURGE_HIGH_SQL
        };
        // A single statement is its own transaction: all matching tombstones go, or none.
        let mut keys: Vec<String> = sqlx::query_scalar(sql)
            .bind(before_hlc as i64)
            .fetch_all(&mut writer.conn)
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
        let mut writer = writer.take().ok_or_else(closed)?;
        self.closed.store(true, Ordering::Release);
        // Leave an empty log behind. If this fails the rows stay in the log, which the next open merges.
        let compaction = writer.compact_all(&self.tuning).await;
        // Readers first: a checkpoint cannot truncate the WAL past a snapshot a reader still uses.
        self.readers.close().await;
        // Fold the WAL into the main file so that the database is a single self-contained file at rest.
        let checkpoint = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut writer.conn)
            .await;
        let closing = writer.conn.close().await;
        compaction?;
        checkpoint?;
        closing?;
        Ok(())
    }
}
