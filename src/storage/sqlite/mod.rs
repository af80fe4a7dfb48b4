//! [`SqliteStore`]: the production [`Store`], one SQLite file per node.
//!
//! # Shape
//! - **One writer connection** behind an async mutex. SQLite allows one writer at a time anyway; holding the
//!   connection ourselves means concurrent `apply` calls queue in Rust instead of spinning on `SQLITE_BUSY`,
//!   and the writer's prepared statements stay cached on that one connection.
//! - **A small read pool.** In WAL mode readers never block the writer nor each other, so `get` and `scan`
//!   run next to a commit in progress and see the last committed state. A restart's `load` of everything
//!   reads through a connection of its own on a blocking thread instead (`bulk`): sqlx's row-by-row handoff
//!   between threads cost more than SQLite's reading.
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
//! - **A large batch skips the log.** A batch of at least [`StoreTuning::upsert_min_rows`] entries (an
//!   import's, a bulk merge's) is upserted into `kv` in key order, with the sweep's merge by precedence, in
//!   one transaction with its audit records. In key order it dirties each page it touches once, which is what
//!   folding it from the log would cost on top of writing and deleting its log rows: an import of 1 M keys
//!   in batches of 100,000 ran 1.6 times as fast. Rows of its keys already in the log, older or newer, are
//!   merged by reads and by the next sweep, as rows of ranges already folded are.
//! - **Sweeps** fold the log into `kv`. The append that leaves the log at
//!   [`StoreTuning::compact_threshold_rows`] or [`StoreTuning::compact_threshold_bytes`] (of keys and values:
//!   large values make few rows, and 2,800 overwrites of 700 KiB values to 10 keys once left a 2 GB log)
//!   starts one: its bound is the log's newest `seq`, and it cuts the
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
//! - **Reads merge.** `load` (in `bulk`) reads the `kv` rows *and* the `log` rows in one
//!   read transaction, so in one snapshot (a fold committing between the two queries could otherwise move a
//!   row out of the log after `kv` was read), and merge them in Rust with [`Entry::merge`]. The log part is a
//!   scan of the log (no key index), which holds about 1.25 times the threshold at most (twice while the
//!   checkpointer holds sweeps off, below); these reads are not on the hot path (the database layer serves
//!   reads from memory and calls `load` once at start-up).
//! - **Tombstone purge** first compacts fully, under the writer lock. Otherwise a tombstone still in the log
//!   could hide an older live row in `kv`: purging one but not the other would resurrect the value.
//!
//! # Transactions and failures
//! The writer runs its transactions with plain `BEGIN` / `COMMIT` and, after any failure inside one, an
//! explicit `ROLLBACK`, rather than through sqlx's `Transaction`. SQLite may roll a transaction back by itself
//! on an error (it may on `SQLITE_FULL` or `SQLITE_IOERR`, and does when a COMMIT fails); sqlx's own count of
//! open transactions then stays at one after its ROLLBACK fails, every later `begin` opens a savepoint instead,
//! and after the next failure everything runs inside a transaction that never commits: "committed" batches
//! that no other connection sees and a restart loses. Here a `BEGIN` inside a transaction fails rather than
//! nests, so the next step rolls back whatever a failed ROLLBACK left and starts afresh. `SQLITE_FULL` becomes
//! [`Error::StorageFull`]: the batch is not stored, and once there is room again the next one is. The inline
//! compaction, reclaiming and WAL checks after a committed batch only log their failures (see "When" above),
//! and `close` only logs a failed final fold or checkpoint: what was committed stays in the log or the WAL,
//! from which the next open reads or recovers it, so a node can shut down cleanly on a full disk.
//!
//! # Free space
//! Folding the log frees its pages; SQLite reuses free pages for later writes but never returns them unless
//! `auto_vacuum` says so. The store sets `auto_vacuum=INCREMENTAL` at open (a database made without it is
//! rebuilt once with `VACUUM`; if that fails, for want of room, it works on without, and the next open tries
//! again). After a sweep or a purge, once free pages exceed an eighth of the file, each `apply` gives back at
//! most 1024 of them (`PRAGMA incremental_vacuum`, 4 MiB: moving a page writes it to the WAL, so the step
//! bounds the stall), and `close` gives back all. 300 overwrites of 700 KiB values to 10 keys end with about
//! 1.6 times the live data in pages (30 times before).
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
//!   whenever the WAL next reached 1000 pages, which at a low write rate could take minutes). Under
//!   [`Durability::Fsync`] every commit is fsynced anyway. The WAL starts over only after a checkpoint has
//!   copied and fsynced all of it (and SQLite syncs the new WAL header then), so no frame is
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

mod audit;
mod bulk;
mod checkpoint;
mod sql;
#[cfg(test)]
mod testing;
mod tuning;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqlitePool};
use tokio::sync::{oneshot, Mutex};

use super::{AuditRecord, Durability, Store};
use crate::crdt::Entry;
use crate::error::{Error, Result};
use checkpoint::{checkpoint_loop, Checkpointer, DatabaseFile, Round, CHECKPOINT_TRUNCATE};
#[cfg(test)]
pub(super) use sql::{COMPACT_FROM_SQL, COMPACT_RANGE_SQL};
pub(super) use sql::{PURGE_HIGH_SQL, PURGE_LOW_SQL};
pub use tuning::StoreTuning;
use writer::{enable_incremental_vacuum, SharedWriter, Writer};

/// Schema migrations, embedded at compile time so the binary carries its own schema.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a connection waits for a lock held by another (SQLite's busy handler).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements the writer connection keeps: the one-call appends of every commit size up to
/// `sql::ONE_CALL_MAX_ROWS`, with and without audit records, the power-of-two pieces of larger batches (appends
/// and upserts) and
/// the compaction and maintenance statements, with room to spare (sqlx's default of 100 would evict and
/// re-prepare them as group sizes vary).
const WRITER_STATEMENT_CACHE: usize = 2 * sql::ONE_CALL_MAX_ROWS + 64;
/// Page cache of the writer connection, in KiB (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: u64 = 64 * 1024;
/// Bytes of the database file the writer maps into memory for reading.
const MMAP_BYTES: u64 = 1 << 30;

fn closed() -> Error {
    Error::Unavailable("storage is closed".to_string())
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
            .pragma("wal_autocheckpoint", "0")
            .statement_cache_capacity(WRITER_STATEMENT_CACHE);
        let mut conn = writer_options.create_if_missing(true).connect().await?;
        enable_incremental_vacuum(&mut conn).await;
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
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Vec<Entry>> {
        self.check_open()?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || bulk::load(&path))
            .await
            .map_err(|err| Error::Internal(format!("the storage load stopped: {err}")))?
    }

    async fn load_parts(&self) -> Result<Vec<Vec<Entry>>> {
        self.check_open()?;
        let path = self.path.clone();
        let split_min_rows = self.tuning.load_split_min_rows.max(1);
        tokio::task::spawn_blocking(move || bulk::load_parts(&path, split_min_rows))
            .await
            .map_err(|err| Error::Internal(format!("the storage load stopped: {err}")))?
    }

    async fn apply_with_audit(&self, entries: &[Entry], audit: &[AuditRecord]) -> Result<usize> {
        let mut writer = self.writer.lock().await;
        let writer = writer.as_mut().ok_or_else(closed)?;
        if entries.is_empty() && audit.is_empty() {
            return Ok(0);
        }
        if entries.len() >= self.tuning.upsert_min_rows.max(1) {
            // A large batch skips the log (it would only be folded again): nothing appended, nothing due.
            writer.upsert(entries, audit).await?;
            // Its pages filled the writer's cache, and an import's next batch writes other pages: give the
            // cache back (it is SQLite's own, ~64 MiB held after an import of 1 M keys) rather than keep it for
            // sweeps that are not due. A failure only costs the memory.
            if let Err(err) = writer.release_cache().await {
                tracing::warn!(error = %err, "releasing the storage page cache failed");
            }
        } else {
            writer.append(entries, audit).await?;
            // The batch is committed: from here on nothing may turn this call into an error.
            if let Err(err) = writer.compact_due(&self.tuning, entries.len()).await {
                tracing::warn!(error = %err, log_rows = writer.log_rows, "compacting the storage log failed; will retry");
            }
        }
        if let Err(err) = writer.reclaim(Writer::VACUUM_STEP).await {
            tracing::warn!(error = %err, "giving free storage pages back failed; will retry");
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
        writer.freed_pages();
        keys.sort_unstable();
        Ok(keys)
    }

    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.check_open()?;
        audit::scan(&self.readers, after, limit).await
    }

    async fn audit_time_at(&self, id: u64) -> Result<Option<u64>> {
        self.check_open()?;
        audit::time_at(&self.readers, id).await
    }

    async fn audit_purge(&self, before_ms: u64, max_rows: usize) -> Result<usize> {
        let mut writer = self.writer.lock().await;
        let writer = writer.as_mut().ok_or_else(closed)?;
        let purged = audit::purge(&mut writer.conn, before_ms, max_rows).await?;
        if purged > 0 {
            writer.freed_pages();
        }
        Ok(purged)
    }

    async fn audit_last_id(&self) -> Result<u64> {
        let mut writer = self.writer.lock().await;
        audit::last_id(&mut writer.as_mut().ok_or_else(closed)?.conn).await
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
        // Leave an empty log behind. If this fails (a full disk) the rows stay in the log, which the next open
        // merges: everything committed is safe either way, so the failure does not fail the close.
        if let Err(err) = writer.compact_all(&self.tuning).await {
            tracing::warn!(error = %err, "compacting the storage log on close failed; the next open merges it");
        }
        // And no free pages: a cleanly closed file holds the live data only.
        if let Err(err) = writer.reclaim(None).await {
            tracing::warn!(error = %err, "giving free storage pages back on close failed");
        }
        // Readers first: a checkpoint cannot truncate the WAL past a snapshot a reader still uses.
        self.readers.close().await;
        // Fold the WAL into the main file so that the database is a single self-contained file at rest. If it
        // fails, the committed frames stay in the WAL, from which the next open recovers them.
        if let Err(err) = sqlx::query(CHECKPOINT_TRUNCATE).execute(&mut writer.conn).await {
            tracing::warn!(error = %err, "checkpointing the storage WAL on close failed; the next open recovers it");
        }
        let closing = writer.conn.close().await;
        // Every connection of this store is closed now: its descriptor of the file can go too.
        drop(self.db_file.lock().unwrap_or_else(|e| e.into_inner()).take());
        closing?;
        Ok(())
    }
}
