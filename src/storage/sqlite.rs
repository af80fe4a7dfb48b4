//! [`SqliteStore`]: the production [`Store`], one SQLite file per node.
//!
//! # Shape
//! - **One writer connection** behind an async mutex. SQLite allows one writer at a time anyway; holding the
//!   connection ourselves means concurrent `apply` calls queue in Rust instead of spinning on `SQLITE_BUSY`,
//!   and the writer's prepared statements stay cached on that one connection.
//! - **A small read pool.** In WAL mode readers never block the writer nor each other, so `get`/`scan`/`load`
//!   run next to a commit in progress and see the last committed state.
//! - **A checkpointer task** with a connection of its own copies the WAL into the database file in the
//!   background; the writer's commits never checkpoint. See "Checkpoints".
//!
//! # A write log in front of the table (one-level LSM)
//! Entries live in two tables: `kv`, one row per key clustered on the key, and `log`, an append-only table in
//! `seq` (rowid) order with no index on the key (`migrations/0002_log.sql`).
//!
//! - **`apply` appends.** One transaction inserts the batch at the end of `log`, merging nothing. Upserting
//!   random keys straight into `kv` (the first design) dirtied one 4 KiB b-tree leaf page per entry, since
//!   keys arrive in any order, and every dirty page is a full page write to the WAL plus another when it is
//!   checkpointed. Appends fill the rightmost pages of one b-tree: a 32-entry batch of small values dirties
//!   two or three pages.
//! - **Sweeps** fold the log into `kv`. The append that leaves the log at
//!   [`StoreTuning::compact_threshold_rows`] starts one: its bound is the log's newest `seq`, and it cuts the
//!   key space into ranges that each hold about [`StoreTuning::compact_slice_rows`] of the log's rows (at
//!   quantiles of a sample of the appended keys; at most 16 ranges). Each range is one transaction,
//!   `INSERT INTO kv SELECT ... FROM log WHERE seq <= bound AND key in range ORDER BY key, seq ON CONFLICT
//!   (key) DO UPDATE ... WHERE excluded supersedes kv`; the last range's transaction also deletes every log
//!   row up to the bound. The merge happens in SQL with exactly the order of [`Entry::precedence`]; several
//!   log rows of one key merge correctly inside the one statement, because each later row conflicts with the
//!   row the earlier one left (and the merge is a semilattice, so their order does not matter). Rows of
//!   ranges already folded stay in the log until the sweep ends: reads merge them anyway, to the same result.
//! - **Why key ranges.** A transaction that folds S rows of random keys dirties up to S distinct `kv` pages,
//!   each written to the WAL and again by the checkpoint. The previous design folded the *oldest* S rows per
//!   transaction, and those spread over the whole table: at 100k keys (~5k pages) a 16384-row slice rewrote
//!   nearly every page, so a slice short enough not to stall an `apply` for long rewrote the whole table
//!   several times per log's worth of rows. A range of 1/N of the key space touches only its 1/N of the
//!   table, and all of the log's rows in it merge into those pages at once: a sweep writes each page it
//!   touches once, however finely it is cut. The price: with no key index on the log, each range scans the
//!   log up to the bound (about 0.2 µs a row, 7 ms for 32k rows), which is why a sweep has at most 16 ranges.
//! - **When.** The `apply` that starts a sweep folds its first range; after that, one range is due every
//!   quarter of `compact_slice_rows` rows appended, so a sweep ends while the log grows by about a quarter of
//!   what it folds, and an `apply` of a batch smaller than that stalls for at most one range (a larger batch
//!   folds one range per quarter slice of its rows, so that the sweep outpaces the appends). Inline rather
//!   than in a background task: the writer connection is needed either way, so a background fold would stall
//!   the next `apply` on the mutex for the same time, and inline needs no second error path. A fold that
//!   fails is only logged: the batch is already committed, and failing the `apply` would tell the caller a
//!   durable batch was lost. The range stays due, and the next `apply` retries it.
//!   [`SqliteStore::compact`] folds everything; `close` does too (before its WAL checkpoint), so a cleanly
//!   closed store has an empty log, and `purge_tombstones` does before it purges (below).
//! - **Reads merge.** `get`, `scan` and `load` read the `kv` rows *and* the `log` rows of the range in one
//!   read transaction, so in one snapshot (a fold committing between the two queries could otherwise move a
//!   row out of the log after `kv` was read), and merge them in Rust with [`Entry::merge`]. The log part is a
//!   scan of the log (no key index), which holds about 1.25 times the threshold at most (twice while the
//!   checkpointer holds sweeps off, below); these reads are not on the hot path (the database layer serves reads from memory and calls `load` once at start-up).
//! - **Tombstone purge** first compacts fully, under the writer lock. Otherwise a tombstone still in the log
//!   could hide an older live row in `kv`: purging one but not the other would resurrect the value.
//!
//! # Checkpoints
//! In WAL mode a commit appends pages to the WAL; a checkpoint copies them into the database file, and once
//! everything is copied and no reader uses the WAL, the next commit starts the WAL over from its beginning.
//! SQLite's default is to checkpoint on the committing connection once the WAL exceeds 1000 pages, which put
//! a checkpoint of every compaction slice on the `apply` that folded it: about half of the stall (with
//! automatic checkpoints off, a 16384-row slice at 100k keys took ~85 instead of ~195 ms). Now:
//!
//! - **The writer never checkpoints** (`wal_autocheckpoint=0`). The checkpointer runs
//!   `PRAGMA wal_checkpoint(PASSIVE)` every [`StoreTuning::checkpoint_interval`] on its own read-write
//!   connection. A passive checkpoint takes no lock that the writer or a reader waits for.
//! - **Starting the WAL over** needs a moment when everything is copied and no transaction is under way. A
//!   writer that commits back to back never leaves one (each passive checkpoint copies what existed when it
//!   began, while the writer appends more), and the WAL would grow without end. So once the WAL holds
//!   [`StoreTuning::wal_restart_bytes`], the checkpointer catches up: it holds sweeps off (a flag the writer
//!   checks; appends go on), runs passive checkpoints until one finds little that is new, fsyncs the database
//!   file, then takes the writer lock for one last passive checkpoint of the last few pages. The writer waits
//!   for that one only, a few milliseconds. The fsync before matters: SQLite fsyncs the database file only
//!   when a checkpoint reaches the end of the WAL, so under the lock it would flush every page the passive
//!   checkpoints before it copied (~80 ms instead of ~3 at 1M keys). The checkpointer keeps a descriptor of
//!   the database file open for that (see `DatabaseFile` on why it is closed only after the connections).
//!   The hold is short, and past twice the threshold the writer folds anyway.
//! - **Idle.** Once two rounds have seen no commit and the WAL file is larger than `wal_restart_bytes`, a
//!   `TRUNCATE` checkpoint (the writer lock held, nothing left to copy) gives the disk space back. The
//!   checkpointer's connection has no busy timeout: if a reader is in the way it gives up and tries again.
//! - **Hard bound.** A reader can keep the WAL from starting over (its snapshot needs older frames), and the
//!   checkpointer can fall behind. After every `apply` the writer looks at the WAL file's size (a `stat`); at
//!   [`StoreTuning::wal_limit_bytes`] it runs a `TRUNCATE` checkpoint itself, which waits (busy timeout, 5 s)
//!   for such readers: writes stall rather than the WAL growing without bound.
//! - **Lifetime.** The task holds the writer only through a `Weak` and ends when its stop signal fires or the
//!   signal's sender is dropped with the store (a crash, as far as the store knows). `close` stops it and
//!   waits for it first, then folds the log and runs a final `TRUNCATE` checkpoint on the writer connection.
//! - **Durability.** The checkpointer's connection has the writer's `synchronous`. Under
//!   [`Durability::Normal`] (`synchronous=NORMAL`) commits are not fsynced; a checkpoint that has anything to
//!   copy fsyncs the WAL first (and the database file once it has copied everything), so commits reach the
//!   disk at the next checkpoint, within about `checkpoint_interval` unless a reader pins the WAL (before:
//!   whenever the WAL next reached 1000 pages, which at a low write rate could take minutes). Under [`Durability::Fsync`] every commit is fsynced anyway. The WAL starts over only after
//!   a checkpoint has copied and fsynced all of it (and SQLite syncs the new WAL header then), so no frame is
//!   overwritten before its page is durable in the database file.
//!
//! # Crash safety
//! Every step is one SQLite transaction: an append, a range of a sweep, the last range with the trim of the
//! log, a purge. A crash after an append and before its sweep leaves the rows in the log, where the reads
//! merge them; the next sweep folds them. A crash during a sweep leaves some ranges folded and all of its rows
//! still in the log (the trim is in the last transaction): reads merge them, and the next sweep folds them
//! again to the same result. A crash inside a transaction rolls it back whole. Checkpoints are SQLite's own:
//! a crash during one leaves the WAL, from which the next open recovers.
//!
//! # Measurements
//! Release build; batches of 32 random keys with 100-byte values applied back to back for 10-12 s, on a
//! 2-core VM shared with other jobs; throughput counts the final `close` (which folds what is left in the
//! log), so the compaction debt is paid. Absolute figures moved by up to 2x with the machine's state (other
//! jobs' load, and how long an idle vCPU takes to wake: every `apply` hands work to sqlx's worker thread and
//! back, and with the other vCPU kept busy by a spin loop the median `apply` went from 0.22 to 0.05 ms and
//! throughput up by a third to three quarters, old and new design alike); compare within a table.
//!
//! The log against upserting straight into `kv` (the first design), then with 16384-row slices of the oldest
//! rows and SQLite's automatic checkpoints:
//!
//! | keys, durability | upsert into `kv`                  | log, threshold 32768, slice 16384               |
//! |------------------|-----------------------------------|-------------------------------------------------|
//! | 100k, normal     | 59k entries/s; p99 9 ms, max 19   | 125k entries/s; p99 0.3 ms; slice ~90 ms (150)  |
//! | 100k, fsync      | 38k entries/s; p99 9 ms, max 13   | 76k entries/s; p99 0.7 ms; slice ~90 ms (117)   |
//! | 1M, normal       | 33k entries/s; p99 19 ms, max 83  | 46k entries/s; p99 0.3 ms; slice ~305 ms (400)  |
//! | 1M, fsync        | 28k entries/s; p99 16 ms, max 80  | 39k entries/s; p99 0.5 ms; slice ~300 ms (350)  |
//!
//! Those slices were the stall: the one `apply` that compacted waited for one, and so did everything queued
//! behind it. Smaller slices bought little (at 1M keys, 4096 rows still took 175-225 ms in a loaded run, and
//! throughput fell back to the first design's), because of the page arithmetic under "Why key ranges" and
//! because about half of a slice was SQLite's automatic checkpoint right after its commit.
//!
//! Sweeps (threshold 32768, ranges of ~4096 rows) and the checkpointer, against the slices above, run
//! interleaved (old, new, old, ...) three times; medians, max of one `apply` in ms, `>50` = applies over
//! 50 ms in 10 s:
//!
//! | keys, durability | slices of 16384, autocheckpoint              | sweeps of 4096-row ranges, checkpointer     |
//! |------------------|----------------------------------------------|---------------------------------------------|
//! | 100k, normal     | 72k/s; p99 0.7, p99.9 92, max 112; >50: 44   | 90k/s; p99 2.9, p99.9 17, max 35 (37); 0    |
//! | 100k, fsync      | 67k/s; p99 0.8, p99.9 89, max 110; >50: 40   | 68k/s; p99 1.8, p99.9 21, max 33; 0         |
//! | 1M, normal       | 53k/s; p99 0.3, p99.9 267, max 329; >50: 34  | 60k/s; p99 3.9, p99.9 42, max 76 (83); 8    |
//! | 1M, fsync        | 42k/s; p99 0.6, p99.9 271, max 310; >50: 27  | 42k/s; p99 4.9, p99.9 53, max 78 (83); 19   |
//! | 100k, 30k/s paced| p99 92, max 114                               | p99 19, max 38 (51)                         |
//! | 1M, 15k/s paced  | p99 269, max 312                              | p99 38, max 59 (72)                         |
//!
//! (In parentheses the worst of the three runs. Paced: one batch every 32/rate s, latency counted from when
//! it was due, so it includes waiting behind a stall, which is what a replication stream sees.) In an
//! earlier series on a busier machine, 100k keys normal: 73-80k/s, max 150-230 ms (old) against 148-173k/s,
//! max 46-126 ms (new, before the fsync ahead of the catch-up).
//!
//! Where the time goes now: folding one range took ~11 ms at 100k keys (p90 17, max 29), of which ~7 ms is
//! the scan of the log, and ~30 ms at 1M keys (p90 38), where a range of 4096 rows still touches about as
//! many `kv` pages. A catch-up held the writer ~1-2 ms at 100k keys and ~1-8 ms (at worst 27) at 1M. The
//! p99 rises because ~0.8% of the applies fold a range (8 ranges per 1024 applies of 32 entries) instead of
//! 0.2% folding a slice 10-30 times longer. Ranges of 2048 rows (busier machine) cut p99.9 at 100k keys a
//! little (15-19 instead of 19-22 ms) but raised p99 (6 ms at 100k keys, 15-21 ms at 1M) and cost some
//! throughput; larger ranges would trade the other way. The WAL grows to 90-180 MiB under this load (23-60
//! MiB before) and is truncated once writes stop.
//!
//! # Unsigned integers
//! `hlc` and node ids are `u64`; SQLite integers are `i64`. They are stored bit-cast (`as i64`), so everything
//! at or above 2^63 becomes negative. Comparing bit-cast values by `(x < 0, x)` restores the unsigned order:
//! the high-bit values are the large ones, and within each half the signed order already agrees with the
//! unsigned one. (SQLite has no XOR operator, so the usual `x ^ i64::MIN` trick is not available.)

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection, SqlitePool};
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

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
/// Default of [`StoreTuning::compact_slice_rows`]: bounds the stall of the `apply` that folds a range. See the
/// measurements in the module docs.
pub const COMPACT_SLICE_ROWS: usize = 4_096;
/// Default of [`StoreTuning::checkpoint_interval`].
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Default of [`StoreTuning::wal_restart_bytes`].
pub const WAL_RESTART_BYTES: u64 = 64 << 20;
/// Default of [`StoreTuning::wal_limit_bytes`].
pub const WAL_LIMIT_BYTES: u64 = 256 << 20;

/// Keys sampled per slice's worth of appended rows: enough to place the ends of a sweep's key ranges within a
/// few percent of the quantile they aim at.
const SAMPLES_PER_SLICE: usize = 64;
/// Most key ranges one sweep is cut into. See [`Writer::start_sweep`].
const MAX_RANGES: usize = 16;
/// A sweep folds one range every `compact_slice_rows / SLICE_GAP_DIVISOR` rows appended, so it is done while
/// the log grows by about a quarter of what the sweep folds.
const SLICE_GAP_DIVISOR: usize = 4;

/// A catch-up of the checkpointer takes the writer lock once a passive checkpoint finds less than this much
/// appended while the one before it ran, or after this many passes.
const CATCH_UP_BYTES: u64 = 1 << 20;
const CATCH_UP_PASSES: u32 = 4;

/// How long a connection waits for a lock held by another (SQLite's busy handler).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the writer connection, in KiB (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: u64 = 64 * 1024;
/// Bytes of the database file the writer maps into memory for reading.
const MMAP_BYTES: u64 = 1 << 30;

/// When the log is compacted and the WAL checkpointed. [`Default`] is what production uses; tests make the
/// bounds small to exercise them often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTuning {
    /// A sweep (a compaction of everything in the log) starts after the append that leaves the log this long.
    pub compact_threshold_rows: usize,
    /// About how many log rows one transaction of a sweep folds into `kv` (the sweep cuts the key space into
    /// ranges of about this many of its rows, at most 16). Bounds the stall of the `apply` that
    /// folds a range; one range is folded every quarter of this many rows appended. At least 1.
    pub compact_slice_rows: usize,
    /// How often the checkpointer task runs a passive checkpoint of the WAL into the database file. Under
    /// [`Durability::Normal`] that is also when commits reach the disk (the checkpoint fsyncs the WAL first).
    pub checkpoint_interval: Duration,
    /// When the WAL holds at least this many bytes, the checkpointer catches up with it completely, holding
    /// the writer off for the last few pages, so that the next commit starts the WAL over from its beginning.
    /// An idle store's WAL file is also truncated once it is larger than this.
    pub wal_restart_bytes: u64,
    /// Hard bound on the WAL file: an `apply` that leaves it this large runs a `TRUNCATE` checkpoint itself,
    /// which waits for the readers that keep the WAL from starting over.
    pub wal_limit_bytes: u64,
}

impl StoreTuning {
    /// The production settings, usable in constants (`..StoreTuning::DEFAULT`).
    pub const DEFAULT: StoreTuning = StoreTuning {
        compact_threshold_rows: COMPACT_THRESHOLD_ROWS,
        compact_slice_rows: COMPACT_SLICE_ROWS,
        checkpoint_interval: CHECKPOINT_INTERVAL,
        wal_restart_bytes: WAL_RESTART_BYTES,
        wal_limit_bytes: WAL_LIMIT_BYTES,
    };
}

impl Default for StoreTuning {
    fn default() -> StoreTuning {
        StoreTuning::DEFAULT
    }
}

/// The columns in the order every query selects them and [`Row`] decodes them.
macro_rules! select {
    ($table:literal, $($rest:literal),+) => {
        concat!(
            "SELECT key, value, content_type, secret, deleted, hlc, node FROM ",
            $table,
            " ",
            $($rest),+
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

/// The newest `seq` in the log (NULL if it is empty): the bound of a new sweep.
const SWEEP_BOUND_SQL: &str = "SELECT max(seq) FROM log";
/// Keys of every `?1`-th log row, to cut a sweep into key ranges (rebuilt once at open).
const SAMPLE_KEYS_SQL: &str = "SELECT key FROM log WHERE seq % ?1 = 0";

/// Fold into `kv` the log rows up to `?1` whose keys lie in a range, merging by precedence:
/// `INSERT INTO kv SELECT ... FROM log WHERE seq <= ?1 AND <range> ORDER BY key, seq ON CONFLICT ...`.
///
/// The WHERE of the upsert is `excluded supersedes kv` in the order of `Entry::precedence`, field by field:
/// version (hlc, then node, both unsigned, see the module docs), deleted, value (BLOBs compare by memcmp,
/// then length: the order of `[u8]`), content_type (TEXT under the BINARY collation compares UTF-8 bytes: the
/// order of `str`), secret. Row values compare lexicographically, exactly like `Ordering::then_with`.
///
/// The ORDER BY visits `kv` in key order (each leaf page once), and it is also what lets SQLite parse an
/// upsert after a SELECT: without it (or a `WHERE`), `ON CONFLICT` would be read as a join constraint.
macro_rules! compact {
    ($range:literal) => {
        concat!(
            "INSERT INTO kv (key, value, content_type, secret, deleted, hlc, node) ",
            select!("log", "WHERE seq <= ?1 AND ", $range, " ORDER BY key, seq "),
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, content_type = excluded.content_type, \
             secret = excluded.secret, deleted = excluded.deleted, hlc = excluded.hlc, node = excluded.node \
             WHERE (excluded.hlc < 0, excluded.hlc, excluded.node < 0, excluded.node, excluded.deleted, \
             excluded.value, excluded.content_type, excluded.secret) \
             > (kv.hlc < 0, kv.hlc, kv.node < 0, kv.node, kv.deleted, kv.value, kv.content_type, kv.secret)"
        )
    };
}
/// A sweep's range `[?2, ?3)`.
pub(super) const COMPACT_RANGE_SQL: &str = compact!("key >= ?2 AND key < ?3");
/// A sweep's last range, `[?2, ∞)`.
pub(super) const COMPACT_FROM_SQL: &str = compact!("key >= ?2");
/// Drop the log rows up to `?1`, in the transaction that folds the sweep's last range.
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

/// A compaction in progress: folds the log rows up to `bound` into `kv`, one key range per transaction (see
/// "Sweeps" in the module docs).
#[derive(Debug)]
struct Sweep {
    /// The newest `seq` this sweep folds; rows appended since belong to the next sweep.
    bound: i64,
    /// Start of the next range to fold (`""`: from the first key on).
    next: String,
    /// Ends of the ranges after `next`, ascending; past the last of them, the final range is unbounded.
    ends: VecDeque<String>,
}

/// The writer connection and what it knows about the log.
struct Writer {
    conn: SqliteConnection,
    /// Rows in `log`: counted at open, then kept up to date by every append and compaction.
    log_rows: usize,
    /// Every [`Writer::sample_every`]-th key appended since the current sweep started (or the last one ended):
    /// where the next sweep cuts its ranges.
    samples: Vec<String>,
    /// Rows appended so far, to pick the samples.
    appended: u64,
    sample_every: u64,
    sweep: Option<Sweep>,
    /// Rows appended since the sweep's last slice: a slice is due every [`Writer::slice_gap`] of them.
    credit: usize,
    /// Set by the checkpointer while it catches up with the WAL to start it over: slices wait meanwhile, so
    /// that only small appends land in the WAL while it copies.
    hold: Arc<AtomicBool>,
    /// The WAL file, whose size the writer checks against [`StoreTuning::wal_limit_bytes`] after each apply.
    wal: PathBuf,
}

impl Writer {
    /// The writer for `conn`, with the count and key samples of what the log already holds.
    async fn open(mut conn: SqliteConnection, wal: PathBuf, tuning: &StoreTuning) -> Result<Writer> {
        let log_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log")
            .fetch_one(&mut conn)
            .await?;
        let sample_every = (tuning.compact_slice_rows / SAMPLES_PER_SLICE).max(1) as u64;
        let samples: Vec<String> = sqlx::query_scalar(SAMPLE_KEYS_SQL)
            .bind(sample_every as i64)
            .fetch_all(&mut conn)
            .await?;
        Ok(Writer {
            conn,
            log_rows: log_rows as usize,
            samples,
            appended: 0,
            sample_every,
            sweep: None,
            credit: 0,
            hold: Arc::new(AtomicBool::new(false)),
            wal,
        })
    }

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
        for e in entries {
            if self.appended.is_multiple_of(self.sample_every) {
                self.samples.push(e.key.clone());
            }
            self.appended += 1;
        }
        Ok(())
    }

    /// Start a sweep over everything in the log now, cut into about `log_rows / slice_rows` key ranges at
    /// quantiles of the sampled keys. `false` if the log is empty.
    async fn start_sweep(&mut self, tuning: &StoreTuning) -> Result<bool> {
        let bound: Option<i64> = sqlx::query_scalar(SWEEP_BOUND_SQL).fetch_one(&mut self.conn).await?;
        let Some(bound) = bound else {
            self.log_rows = 0;
            self.samples.clear();
            return Ok(false);
        };
        let mut samples = std::mem::take(&mut self.samples);
        samples.sort_unstable();
        // Each range scans the log up to the bound (it has no index on the key), so a sweep costs a scan per
        // range: capped, so that an unusually long log (a huge batch) does not cost a scan per slice's worth.
        let ranges = self.log_rows.div_ceil(tuning.compact_slice_rows).clamp(1, MAX_RANGES);
        let mut ends: VecDeque<String> = VecDeque::with_capacity(ranges);
        for i in 1..ranges {
            let Some(end) = samples.get(i * samples.len() / ranges) else {
                break;
            };
            if ends.back().is_none_or(|last| last < end) && !end.is_empty() {
                ends.push_back(end.clone());
            }
        }
        self.sweep = Some(Sweep {
            bound,
            next: String::new(),
            ends,
        });
        Ok(true)
    }

    /// Fold the next range of the sweep in progress, in one transaction; the last range also drops every log
    /// row the sweep folded. Returns whether the sweep is complete.
    async fn sweep_slice(&mut self) -> Result<bool> {
        let started = Instant::now();
        let Some(sweep) = self.sweep.as_ref() else {
            return Ok(true);
        };
        let mut tx = self.conn.begin().await?;
        let last = match sweep.ends.front() {
            Some(end) => {
                sqlx::query(COMPACT_RANGE_SQL)
                    .bind(sweep.bound)
                    .bind(sweep.next.as_str())
                    .bind(end.as_str())
                    .execute(&mut *tx)
                    .await?;
                None
            }
            None => {
                sqlx::query(COMPACT_FROM_SQL)
                    .bind(sweep.bound)
                    .bind(sweep.next.as_str())
                    .execute(&mut *tx)
                    .await?;
                let trimmed = sqlx::query(TRIM_LOG_SQL)
                    .bind(sweep.bound)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as usize;
                Some(trimmed)
            }
        };
        tx.commit().await?;
        let sweep = self.sweep.as_mut().expect("checked above");
        let done = match last {
            Some(trimmed) => {
                self.log_rows = self.log_rows.saturating_sub(trimmed);
                self.sweep = None;
                true
            }
            None => {
                sweep.next = sweep.ends.pop_front().expect("a range that is not the last has an end");
                false
            }
        };
        tracing::debug!(
            left = self.log_rows,
            done,
            elapsed = ?started.elapsed(),
            "compacted a key range of the storage log"
        );
        Ok(done)
    }

    /// Rows appended between two slices of a sweep.
    fn slice_gap(tuning: &StoreTuning) -> usize {
        (tuning.compact_slice_rows / SLICE_GAP_DIVISOR).max(1)
    }

    /// The compaction an apply of `appended` rows pays for: start a sweep once the log holds
    /// `compact_threshold_rows`, then fold one range every [`Writer::slice_gap`] rows appended. An apply folds
    /// one range per gap of its own rows, at least one: a batch larger than the gap folds several (the sweep
    /// must outpace the appends), and credit saved up while the checkpointer held slices off is spent one
    /// range per apply rather than all at once.
    async fn compact_due(&mut self, tuning: &StoreTuning, appended: usize) -> Result<()> {
        let gap = Writer::slice_gap(tuning);
        // The checkpointer's hold is short; past twice the threshold the log matters more than the WAL.
        if self.hold.load(Ordering::Acquire) && self.log_rows < tuning.compact_threshold_rows.saturating_mul(2) {
            if self.sweep.is_some() {
                self.credit = self.credit.saturating_add(appended).min(2 * gap);
            }
            return Ok(());
        }
        if self.sweep.is_none() {
            if self.log_rows < tuning.compact_threshold_rows || !self.start_sweep(tuning).await? {
                return Ok(());
            }
            // The first range right away.
            self.credit = gap;
        } else {
            self.credit = self.credit.saturating_add(appended);
        }
        let mut slices = appended.div_ceil(gap).max(1);
        while self.credit >= gap && slices > 0 {
            slices -= 1;
            // On an error the credit stays: the next apply retries the same range.
            if self.sweep_slice().await? {
                self.credit = 0;
            } else {
                self.credit -= gap;
            }
        }
        Ok(())
    }

    /// The hard bound on the WAL: once the file holds [`StoreTuning::wal_limit_bytes`] (the checkpointer did
    /// not get it to start over, because readers kept using it or the checkpointer fell behind), a `TRUNCATE`
    /// checkpoint right here, which waits (`busy_timeout`) for those readers.
    async fn bound_wal(&mut self, tuning: &StoreTuning) -> Result<()> {
        // A plain stat: `tokio::fs` would hand it to the blocking pool, a thread switch on every apply for a
        // syscall that takes a microsecond.
        let wal_bytes = match std::fs::metadata(&self.wal) {
            Ok(meta) => meta.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(err.into()),
        };
        if wal_bytes < tuning.wal_limit_bytes {
            return Ok(());
        }
        let started = Instant::now();
        let truncate = loop {
            let truncate = Checkpoint::run(&mut self.conn, CHECKPOINT_TRUNCATE).await?;
            // -1 frames: the checkpointer is in a passive checkpoint, and SQLite does not wait for the
            // checkpoint lock. That one ends soon, and the checkpointer runs at most a few more before it needs
            // the writer lock, which this apply holds.
            if truncate.frames >= 0 || started.elapsed() >= BUSY_TIMEOUT {
                break truncate;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if truncate.busy {
            tracing::warn!(
                wal_bytes,
                elapsed = ?started.elapsed(),
                "the storage WAL is past its limit and readers keep it from being truncated"
            );
        } else {
            tracing::info!(wal_bytes, elapsed = ?started.elapsed(), "truncated the storage WAL at its limit");
        }
        Ok(())
    }

    /// Fold the whole log into `kv`: finish the sweep in progress, then sweep what is left.
    async fn compact_all(&mut self, tuning: &StoreTuning) -> Result<()> {
        loop {
            if self.sweep.is_none() && !self.start_sweep(tuning).await? {
                return Ok(());
            }
            while !self.sweep_slice().await? {}
            self.credit = 0;
        }
    }
}

/// The writer behind its lock, shared with the checkpointer task (which holds it only weakly).
type SharedWriter = Arc<Mutex<Option<Writer>>>;

/// What `PRAGMA wal_checkpoint` reports: whether it gave up on a lock, the frames in the WAL, and how many of
/// them are in the database file now.
#[derive(Debug, Clone, Copy)]
struct Checkpoint {
    busy: bool,
    frames: i64,
    checkpointed: i64,
}

impl Checkpoint {
    async fn run(conn: &mut SqliteConnection, sql: &'static str) -> Result<Checkpoint> {
        let (busy, frames, checkpointed): (i64, i64, i64) = sqlx::query_as(sql).fetch_one(conn).await?;
        Ok(Checkpoint {
            busy: busy != 0,
            frames,
            checkpointed,
        })
    }
}

const CHECKPOINT_PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";
const CHECKPOINT_TRUNCATE: &str = "PRAGMA wal_checkpoint(TRUNCATE)";

/// The handle of the checkpointer task: dropping it (with the store) stops the task too.
struct Checkpointer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The checkpointer task: the writer's connection never checkpoints (`wal_autocheckpoint=0`), this task does,
/// on a connection of its own. See "Checkpoints" in the module docs.
///
/// It holds the writer only weakly and ends when `stop` fires or its sender is dropped (the store dropped
/// without `close`), after the round in progress.
async fn checkpoint_loop(mut round: Round, mut stop: oneshot::Receiver<()>) {
    match sqlx::query_scalar::<_, i64>("PRAGMA page_size")
        .fetch_one(&mut round.conn)
        .await
    {
        // A WAL frame is a page behind a 24-byte header.
        Ok(page) => round.frame_bytes = page as u64 + 24,
        Err(err) => {
            tracing::error!(
                error = %err,
                "the storage checkpointer cannot start; the WAL is checkpointed at its limit and on close only"
            );
            return;
        }
    }
    let mut ticks = tokio::time::interval(round.tuning.checkpoint_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        if let Err(err) = round.run().await {
            tracing::warn!(error = %err, "checkpointing the storage WAL failed; will retry");
        }
    }
    if let Err(err) = round.conn.close().await {
        tracing::debug!(error = %err, "closing the checkpointer connection failed");
    }
}

/// Bytes of a file, 0 if there is none.
async fn file_len(path: &Path) -> Result<u64> {
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(meta.len()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err.into()),
    }
}

/// Clears the compaction hold when a catch-up ends, however it ends.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A descriptor of the database file, which the checkpointer fsyncs before a catch-up takes the writer lock
/// (see [`Round::catch_up`]).
///
/// SQLite locks the database file with POSIX advisory locks, and those belong to the process: closing *any*
/// descriptor of the file drops all of them, the ones SQLite's open connections hold included. So this one is
/// opened after the store's connections and closed only once they all are, at the end of `close`; a store
/// dropped without `close` leaks it rather than close it while its connections may still be open.
struct DatabaseFile(std::fs::File);

/// What the checkpointer works with, and what it remembers between rounds.
struct Round {
    conn: SqliteConnection,
    wal: PathBuf,
    /// The database file, to fsync it before a catch-up takes the writer lock. See [`DatabaseFile`].
    db: Arc<DatabaseFile>,
    writer: Weak<Mutex<Option<Writer>>>,
    hold: Arc<AtomicBool>,
    tuning: StoreTuning,
    frame_bytes: u64,
    /// Frames in the WAL as last seen: at the start of the previous round, or at the end of a catch-up.
    last_frames: i64,
    /// Rounds in a row that saw no commit since the one before.
    quiet: u32,
}

impl Round {
    /// One round: a passive checkpoint, which copies what was committed since the last one into the database
    /// file without ever blocking the writer. Then, if the WAL holds `wal_restart_bytes`, a catch-up so that
    /// the next commit starts it over; or, once nothing has been committed for two rounds and the WAL file is
    /// larger than that, a `TRUNCATE` to give the disk space back.
    async fn run(&mut self) -> Result<()> {
        // The frame count is from when the checkpoint began: the WAL may have grown since, which the next
        // round sees. An unchanged count means nothing was committed since it was last seen, so this
        // checkpoint has copied everything and the next commit starts the WAL over anyway (unless a reader
        // still uses it).
        let passive = Checkpoint::run(&mut self.conn, CHECKPOINT_PASSIVE).await?;
        let unchanged = !passive.busy && passive.checkpointed == passive.frames && passive.frames == self.last_frames;
        self.quiet = if unchanged { self.quiet + 1 } else { 0 };
        self.last_frames = passive.frames;
        if !unchanged && passive.frames.max(0) as u64 * self.frame_bytes >= self.tuning.wal_restart_bytes {
            self.catch_up().await
        } else if self.quiet >= 2 && file_len(&self.wal).await? > self.tuning.wal_restart_bytes {
            self.truncate_idle().await
        } else {
            Ok(())
        }
    }

    /// Catch up with the whole WAL, so that the next commit starts it over from the beginning:
    ///
    /// 1. hold compaction slices off, so that only appends (a few pages a commit) land in the WAL;
    /// 2. passive checkpoints without the writer lock until one finds little new: the first copies what
    ///    compaction wrote, each next one what was appended while the one before ran;
    /// 3. an fsync of the database file (see below);
    /// 4. with the writer lock (between two commits, none starting), one more: it copies the last few pages
    ///    and has then caught up, unless a reader still uses older frames.
    ///
    /// The writer waits for step 4 only, whose cost is mostly its two fsyncs (of the WAL, then of the
    /// database file), of what was written since the steps before.
    async fn catch_up(&mut self) -> Result<()> {
        let started = Instant::now();
        self.hold.store(true, Ordering::Release);
        let _release = Release(&self.hold);
        let mut passes = 0;
        let mut before = Checkpoint::run(&mut self.conn, CHECKPOINT_PASSIVE).await?;
        while passes < CATCH_UP_PASSES {
            passes += 1;
            let next = Checkpoint::run(&mut self.conn, CHECKPOINT_PASSIVE).await?;
            let appended = next.frames - before.frames;
            before = next;
            if appended < 0 || appended as u64 * self.frame_bytes < CATCH_UP_BYTES {
                break;
            }
        }
        // SQLite fsyncs the database file only when a checkpoint reaches the end of the WAL, which none of the
        // passes above does while the writer appends: the last checkpoint, under the writer lock, would flush
        // everything they copied (~80 ms at 1M keys). Flush it now, without the lock.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.0.sync_data())
            .await
            .map_err(|err| Error::Internal(format!("fsync of the database file: {err}")))??;
        let Some(writer) = self.writer.upgrade() else {
            return Ok(());
        };
        let waited = Instant::now();
        let guard = writer.lock().await;
        if guard.is_none() {
            return Ok(()); // closed: `close` checkpoints itself
        }
        let locked = Instant::now();
        let last = Checkpoint::run(&mut self.conn, CHECKPOINT_PASSIVE).await?;
        drop(guard);
        self.last_frames = last.frames;
        tracing::debug!(
            passes,
            frames = ?(before.frames, last.frames),
            caught_up = !last.busy && last.checkpointed == last.frames,
            catching_up = ?waited.duration_since(started),
            lock_wait = ?locked.duration_since(waited),
            writer_held = ?locked.elapsed(),
            "checkpointed the storage WAL so that it starts over"
        );
        Ok(())
    }

    /// Truncate the WAL file of a store that is not being written to. There is nothing left to copy, so the
    /// writer is held only for the truncation.
    async fn truncate_idle(&mut self) -> Result<()> {
        let Some(writer) = self.writer.upgrade() else {
            return Ok(());
        };
        let guard = writer.lock().await;
        if guard.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let truncate = Checkpoint::run(&mut self.conn, CHECKPOINT_TRUNCATE).await?;
        drop(guard);
        tracing::debug!(busy = truncate.busy, writer_held = ?started.elapsed(), "truncated the idle storage WAL");
        Ok(())
    }
}

/// A [`Store`] in one SQLite database file (WAL mode).
pub struct SqliteStore {
    path: PathBuf,
    tuning: StoreTuning,
    readers: SqlitePool,
    /// `None` once closed; the lock also serialises `apply`, compaction, `purge_tombstones`, `close` and the
    /// checkpointer's catch-up checkpoints.
    writer: SharedWriter,
    /// `None` once `close` stopped it.
    checkpointer: std::sync::Mutex<Option<Checkpointer>>,
    /// Shared with the checkpointer; `None` once `close` closed it. See [`DatabaseFile`].
    db_file: std::sync::Mutex<Option<Arc<DatabaseFile>>>,
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

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Dropped without `close`: the connections close on their own threads, maybe after this. Closing the
        // descriptor now could drop their locks (see `DatabaseFile`), so it is leaked instead.
        if let Some(file) = self.db_file.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            std::mem::forget(file);
        }
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
        // shell) holds a lock, and for the writer's checkpoint at the WAL's hard limit, which waits this long
        // for readers; our own connections never wait on each other for long.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(BUSY_TIMEOUT);

        // Compaction updates `kv` leaf pages all over the table. A page cache that holds the working set, plus
        // memory-mapped reads, spares a pread syscall per touched page. SQLite's automatic checkpoints are off:
        // on the commit path they stalled the `apply` that happened to cross their threshold (see
        // "Checkpoints" in the module docs).
        let writer_options = options
            .clone()
            .pragma("cache_size", format!("-{}", WRITER_CACHE_KIB))
            .pragma("mmap_size", MMAP_BYTES.to_string())
            .pragma("wal_autocheckpoint", "0");
        let mut conn = writer_options.create_if_missing(true).connect().await?;
        // `run_direct` on the connection itself rather than `run(&mut conn)` through `Acquire`: the generic
        // path makes the future non-`Send` (sqlx's documented workaround for that rustc limitation).
        MIGRATOR.run_direct(None, &mut conn, false).await?;
        let tuning = StoreTuning {
            compact_slice_rows: tuning.compact_slice_rows.max(1),
            checkpoint_interval: tuning.checkpoint_interval.max(Duration::from_millis(1)),
            ..tuning
        };
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let writer = Writer::open(conn, wal.clone(), &tuning).await?;
        let hold = writer.hold.clone();

        // Readers are opened after the writer so that the file, its WAL mode and its schema exist. They are
        // read-only: a bug that writes through them fails instead of racing the writer.
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.clone().read_only(true))
            .await?;
        // The checkpointer writes the database file, so it cannot be read-only. Its `synchronous` is the
        // writer's: the fsyncs of the WAL and of the database file that a checkpoint does follow it. It never
        // waits for a lock: passive checkpoints take none that could make them wait, and the idle truncation
        // (the only other checkpoint it runs) rather gives up than hold the writer while readers finish.
        let checkpoint_conn = options
            .pragma("wal_autocheckpoint", "0")
            .busy_timeout(Duration::ZERO)
            .connect()
            .await?;

        // Last: once it is open, nothing may fail before the store owns it (see `DatabaseFile`).
        let db_file = Arc::new(DatabaseFile(std::fs::File::open(path)?));

        let writer: SharedWriter = Arc::new(Mutex::new(Some(writer)));
        let (stop, stopped) = oneshot::channel();
        let round = Round {
            conn: checkpoint_conn,
            wal,
            db: db_file.clone(),
            writer: Arc::downgrade(&writer),
            hold,
            tuning,
            frame_bytes: 0,
            last_frames: -1,
            quiet: 0,
        };
        let task = tokio::spawn(checkpoint_loop(round, stopped));
        Ok(SqliteStore {
            path: path.to_owned(),
            tuning,
            readers,
            writer,
            checkpointer: std::sync::Mutex::new(Some(Checkpointer { stop, task })),
            db_file: std::sync::Mutex::new(Some(db_file)),
            closed: AtomicBool::new(false),
        })
    }

    /// Stop the checkpointer task and wait until it has closed its connection.
    async fn stop_checkpointer(&self) {
        let checkpointer = self.checkpointer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(Checkpointer { stop, task }) = checkpointer {
            let _ = stop.send(());
            if let Err(err) = task.await {
                tracing::warn!(error = %err, "the storage checkpointer task failed");
            }
        }
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

    /// `(journal_mode, synchronous, busy_timeout, wal_autocheckpoint)` as the writer connection reports them.
    #[cfg(test)]
    pub(super) async fn writer_settings(&self) -> Result<(String, i64, i64, i64)> {
        let mut writer = self.writer.lock().await;
        let conn = &mut writer.as_mut().ok_or_else(closed)?.conn;
        let journal_mode = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
        let synchronous = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await?;
        let busy_timeout = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut *conn).await?;
        let autocheckpoint = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await?;
        Ok((journal_mode, synchronous, busy_timeout, autocheckpoint))
    }

    /// Ranges the sweep in progress has left to fold, counting the one it folds next (`None`: no sweep).
    #[cfg(test)]
    pub(super) async fn sweep_ranges_left(&self) -> Option<usize> {
        let writer = self.writer.lock().await;
        let sweep = writer.as_ref()?.sweep.as_ref()?;
        Some(sweep.ends.len() + 1)
    }

    /// The checkpointer task, to watch it end (`None` once `close` stopped it).
    #[cfg(test)]
    pub(super) fn checkpointer_task(&self) -> Option<tokio::task::AbortHandle> {
        let checkpointer = self.checkpointer.lock().unwrap();
        checkpointer.as_ref().map(|c| c.task.abort_handle())
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
        if let Err(err) = writer.compact_due(&self.tuning, entries.len()).await {
            tracing::warn!(error = %err, log_rows = writer.log_rows, "compacting the storage log failed; will retry");
        }
        if let Err(err) = writer.bound_wal(&self.tuning).await {
            tracing::warn!(error = %err, "checkpointing the storage WAL at its limit failed; will retry");
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
        // First, and outside the writer lock: a round of the task may be waiting for that lock.
        self.stop_checkpointer().await;
        let mut writer = self.writer.lock().await;
        let mut writer = writer.take().ok_or_else(closed)?;
        self.closed.store(true, Ordering::Release);
        // Leave an empty log behind. If this fails the rows stay in the log, which the next open merges.
        let compaction = writer.compact_all(&self.tuning).await;
        // Readers first: a checkpoint cannot truncate the WAL past a snapshot a reader still uses.
        self.readers.close().await;
        // Fold the WAL into the main file so that the database is a single self-contained file at rest.
        let checkpoint = sqlx::query(CHECKPOINT_TRUNCATE).execute(&mut writer.conn).await;
        let closing = writer.conn.close().await;
        // Every connection of this store is closed now: its descriptor of the file can go too.
        drop(self.db_file.lock().unwrap_or_else(|e| e.into_inner()).take());
        compaction?;
        checkpoint?;
        closing?;
        Ok(())
    }
}
