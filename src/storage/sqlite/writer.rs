//! The writer connection: appends to the log, sweeps that fold it into `kv` by key range, and the hard bound
//! on the WAL. See "A write log in front of the table" in the module docs of [`super`].

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection as _, SqliteConnection};
use tokio::sync::Mutex;

use super::audit::{rows_json, INSERT_AND_COMMIT_SQL};
use super::checkpoint::{Checkpoint, CHECKPOINT_TRUNCATE};
use super::sql::{
    append_for, append_in_one_call, pieces, upsert_for, COMPACT_FROM_SQL, COMPACT_RANGE_SQL, ONE_CALL_MAX_ROWS,
    SAMPLE_KEYS_SQL, SWEEP_BOUND_SQL, TRIM_LOG_SQL,
};
use super::{StoreTuning, BUSY_TIMEOUT};
use crate::crdt::Entry;
use crate::error::Result;
use crate::storage::AuditRecord;

/// Keys sampled per slice's worth of appended rows: enough to place the ends of a sweep's key ranges within a
/// few percent of the quantile they aim at.
const SAMPLES_PER_SLICE: usize = 64;
/// Most key ranges one sweep is cut into. See [`Writer::start_sweep`].
const MAX_RANGES: usize = 16;
/// A sweep folds one range every `compact_slice_rows / SLICE_GAP_DIVISOR` rows appended, so it is done while
/// the log grows by about a quarter of what the sweep folds.
const SLICE_GAP_DIVISOR: usize = 4;
/// Most free pages one step of reclaiming gives back to the file system (4 MiB of 4 KiB pages): moving a page
/// writes it to the WAL, so this bounds the stall of the `apply` that takes the step.
const VACUUM_STEP_PAGES: u64 = 1024;
/// Free space is given back once free pages are more than `1 / RECLAIM_FRACTION` of the file: below that,
/// the next appends reuse them anyway, and shrinking only to grow again would cost writes for nothing.
const RECLAIM_FRACTION: u64 = 8;

/// A compaction in progress: folds the log rows up to `bound` into `kv`, one key range per transaction (see
/// "Sweeps" in the module docs).
#[derive(Debug)]
pub(super) struct Sweep {
    /// The newest `seq` this sweep folds; rows appended since belong to the next sweep.
    bound: i64,
    /// Bytes of the rows up to `bound` (the log's bytes when the sweep started): dropped with them.
    bytes: u64,
    /// Start of the next range to fold (`""`: from the first key on).
    next: String,
    /// Ends of the ranges after `next`, ascending; past the last of them, the final range is unbounded.
    pub(super) ends: VecDeque<String>,
}

/// `query` with the thirteen columns of each of `entries` bound, in the order of the append and upsert
/// statements.
fn bind_rows<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    entries: impl IntoIterator<Item = &'q Entry>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for e in entries {
        query = query
            .bind(e.key.as_str())
            .bind(&e.value[..])
            .bind(e.content_type.as_str())
            .bind(e.secret)
            .bind(e.deleted)
            .bind(e.version.hlc as i64)
            .bind(e.version.node.0 as i64)
            .bind(e.doc_meta().map(|d| d.created.hlc as i64))
            .bind(e.doc_meta().map(|d| d.created.node.0 as i64))
            .bind(e.doc_meta().map(|d| d.changes as i64))
            .bind(e.doc_meta().map(|d| d.heads as i64))
            .bind(e.expires.map(|at| at.get() as i64))
            .bind(e.lease.map(|id| id.get() as i64));
    }
    query
}

/// The writer connection and what it knows about the log.
pub(super) struct Writer {
    pub(super) conn: SqliteConnection,
    /// Rows in `log`: counted at open, then kept up to date by every append and compaction.
    pub(super) log_rows: usize,
    /// Bytes of the keys and values in `log`, kept like `log_rows`.
    pub(super) log_bytes: u64,
    /// A sweep or a purge freed pages since the last check: see [`Writer::reclaim`].
    reclaim_due: bool,
    /// Every [`Writer::sample_every`]-th key appended since the current sweep started (or the last one ended):
    /// where the next sweep cuts its ranges.
    samples: Vec<String>,
    /// Rows appended so far, to pick the samples.
    appended: u64,
    sample_every: u64,
    pub(super) sweep: Option<Sweep>,
    /// Rows appended since the sweep's last slice: a slice is due every [`Writer::slice_gap`] of them.
    credit: usize,
    /// Set by the checkpointer while it catches up with the WAL to start it over: slices wait meanwhile, so
    /// that only small appends land in the WAL while it copies.
    pub(super) hold: Arc<AtomicBool>,
    /// The WAL file, whose size the writer checks against [`StoreTuning::wal_limit_bytes`] after each apply.
    wal: PathBuf,
}

impl Writer {
    /// The writer for `conn`, with the count and key samples of what the log already holds.
    pub(super) async fn open(mut conn: SqliteConnection, wal: PathBuf, tuning: &StoreTuning) -> Result<Writer> {
        let (log_rows, log_bytes): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(length(CAST(key AS BLOB)) + length(value)), 0) FROM log")
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
            log_bytes: log_bytes as u64,
            reclaim_due: true,
            samples,
            appended: 0,
            sample_every,
            sweep: None,
            credit: 0,
            hold: Arc::new(AtomicBool::new(false)),
            wal,
        })
    }

    /// Start a write transaction with a plain `BEGIN`, never a savepoint: if the connection were still inside
    /// a transaction, `BEGIN` fails instead of nesting this one in it (where its COMMIT would commit nothing).
    /// That can only be one whose ROLLBACK failed, or one whose step was cancelled (its future dropped) half
    /// way; it is rolled back, and `BEGIN` tried once more.
    async fn begin(&mut self) -> Result<()> {
        if sqlx::query("BEGIN").execute(&mut self.conn).await.is_ok() {
            return Ok(());
        }
        self.rollback().await;
        sqlx::query("BEGIN").execute(&mut self.conn).await?;
        Ok(())
    }

    /// End the transaction of a failed step. SQLite may have rolled it back already (it may on `SQLITE_FULL`
    /// or `SQLITE_IOERR`, and always when a COMMIT fails); then `ROLLBACK` fails harmlessly, which is why its
    /// error is only logged. We do not use sqlx's `Transaction` for this: it counts the depth itself, and a
    /// ROLLBACK that fails because SQLite already rolled back leaves its count at one, so that every later
    /// `begin` opens a savepoint instead of a transaction and, after the next failure, a savepoint inside a
    /// transaction that never ends: commits acknowledged that no other connection sees and a restart loses.
    async fn rollback(&mut self) {
        if let Err(err) = sqlx::query("ROLLBACK").execute(&mut self.conn).await {
            tracing::debug!(error = %err, "rollback after a failed storage transaction");
        }
    }

    /// `COMMIT`, or on failure roll back, so that nothing of the transaction stays open.
    async fn commit_or_rollback(&mut self, body: Result<()>) -> Result<()> {
        let committed = match body {
            Ok(()) => sqlx::query("COMMIT")
                .execute(&mut self.conn)
                .await
                .map(drop)
                .map_err(Into::into),
            Err(err) => Err(err),
        };
        if committed.is_err() {
            self.rollback().await;
        }
        committed
    }

    /// Append `entries` to the log and `audit` to the audit table in one transaction: all of them or, on any
    /// failure, none.
    pub(super) async fn append(&mut self, entries: &[Entry], audit: &[AuditRecord]) -> Result<()> {
        self.begin().await?;
        if (1..=ONE_CALL_MAX_ROWS).contains(&entries.len()) {
            // The rows, the records and the COMMIT in one call (see `append_in_one_call`); a failure of any
            // of them rolls the whole transaction back, as below.
            let rows = if audit.is_empty() { None } else { Some(rows_json(audit)) }.transpose();
            let committed = match rows {
                Ok(rows) => {
                    let query = bind_rows(sqlx::query(append_in_one_call(entries.len(), rows.is_some())), entries);
                    let query = match rows {
                        Some(rows) => query.bind(rows),
                        None => query,
                    };
                    query.execute(&mut self.conn).await.map(drop).map_err(Into::into)
                }
                Err(err) => Err(err),
            };
            if let Err(err) = committed {
                self.rollback().await;
                return Err(err);
            }
            self.appended(entries);
            return Ok(());
        }
        let appended = self.write_pieces(entries, append_for).await;
        self.commit_with_audit(appended, audit).await?;
        self.appended(entries);
        Ok(())
    }

    /// Write `entries` straight into `kv`, each replacing the stored row of its key only if it supersedes it,
    /// and `audit` into the audit table, in one transaction: all of them or, on any failure, none. In key
    /// order, so that each page of `kv` is visited once (see [`StoreTuning::upsert_min_rows`]). The log may
    /// still hold rows of the same keys, older or newer: reads and sweeps merge them by precedence, to the
    /// same result whichever side holds which.
    pub(super) async fn upsert(&mut self, entries: &[Entry], audit: &[AuditRecord]) -> Result<()> {
        let mut rows: Vec<&Entry> = entries.iter().collect();
        if !rows.is_sorted_by(|a, b| a.key <= b.key) {
            rows.sort_by(|a, b| a.key.cmp(&b.key));
        }
        self.begin().await?;
        let written = self.write_pieces(&rows, upsert_for).await;
        self.commit_with_audit(written, audit).await
    }

    /// Free the pages the writer connection's cache holds and nothing uses (all of them between
    /// transactions): `PRAGMA shrink_memory`; and the prepared statements it caches. A large batch's upserts
    /// are statements of thousands of rows (their programs ~1 MB each, one per chunk size the batch ended
    /// with): after an import of 1 M keys SQLite held 5 MB, against 0.2 MB after a restart. The next large
    /// batch prepares them again, a millisecond against the batch's hundreds.
    pub(super) async fn release_cache(&mut self) -> Result<()> {
        self.conn.clear_cached_statements().await?;
        sqlx::query("PRAGMA shrink_memory").execute(&mut self.conn).await?;
        Ok(())
    }

    /// End the transaction `written` the rows in: insert `audit` and commit if they were, roll back if not or
    /// if the audit insert or the commit fails.
    async fn commit_with_audit(&mut self, written: Result<()>, audit: &[AuditRecord]) -> Result<()> {
        if audit.is_empty() || written.is_err() {
            self.commit_or_rollback(written).await?;
        } else {
            // The records and the COMMIT in one call (see `INSERT_AND_COMMIT_SQL`); a failure of either rolls
            // the whole transaction back.
            let committed = match rows_json(audit) {
                Ok(rows) => sqlx::query(INSERT_AND_COMMIT_SQL)
                    .bind(rows)
                    .execute(&mut self.conn)
                    .await
                    .map_err(Into::into),
                Err(err) => Err(err),
            };
            if let Err(err) = committed {
                self.rollback().await;
                return Err(err);
            }
        }
        Ok(())
    }

    /// Count `entries`, just committed to the log, and sample their keys.
    fn appended(&mut self, entries: &[Entry]) {
        self.log_rows += entries.len();
        self.log_bytes += entries
            .iter()
            .map(|e| (e.key.len() + e.value.len()) as u64)
            .sum::<u64>();
        for e in entries {
            if self.appended.is_multiple_of(self.sample_every) {
                self.samples.push(e.key.to_string());
            }
            self.appended += 1;
        }
    }

    /// The inserts of [`Writer::append`] or [`Writer::upsert`] inside its transaction: `rows` in pieces of the
    /// prepared sizes, each the statement `statement` gives for its size.
    async fn write_pieces<E: Borrow<Entry> + Sync>(
        &mut self,
        rows: &[E],
        statement: fn(usize) -> &'static str,
    ) -> Result<()> {
        let mut rest = rows;
        for size in pieces(rows.len()) {
            let (piece, tail) = rest.split_at(size);
            rest = tail;
            bind_rows(sqlx::query(statement(size)), piece.iter().map(Borrow::borrow))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Start a sweep over everything in the log now, cut into about `log_rows / slice_rows` key ranges at
    /// quantiles of the sampled keys. `false` if the log is empty.
    async fn start_sweep(&mut self, tuning: &StoreTuning) -> Result<bool> {
        let bound: Option<i64> = sqlx::query_scalar(SWEEP_BOUND_SQL).fetch_one(&mut self.conn).await?;
        let Some(bound) = bound else {
            self.log_rows = 0;
            self.log_bytes = 0;
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
            bytes: self.log_bytes,
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
        let (bound, next, end) = (sweep.bound, sweep.next.clone(), sweep.ends.front().cloned());
        self.begin().await?;
        let folded = self.fold_range(bound, &next, end.as_deref()).await;
        let last = match folded {
            Ok(last) => last,
            Err(err) => {
                self.rollback().await;
                return Err(err);
            }
        };
        self.commit_or_rollback(Ok(())).await?;
        let sweep = self.sweep.as_mut().expect("checked above");
        let done = match last {
            Some(trimmed) => {
                self.log_rows = self.log_rows.saturating_sub(trimmed);
                self.log_bytes = self.log_bytes.saturating_sub(sweep.bytes);
                self.sweep = None;
                self.reclaim_due = true;
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

    /// The statements of one range of a sweep, inside its transaction: fold the log rows up to `bound` with
    /// keys from `next` to `end` into `kv`; for the last range (`end` is `None`), also drop every log row up to
    /// `bound`, and return how many.
    async fn fold_range(&mut self, bound: i64, next: &str, end: Option<&str>) -> Result<Option<usize>> {
        match end {
            Some(end) => {
                sqlx::query(COMPACT_RANGE_SQL)
                    .bind(bound)
                    .bind(next)
                    .bind(end)
                    .execute(&mut self.conn)
                    .await?;
                Ok(None)
            }
            None => {
                sqlx::query(COMPACT_FROM_SQL)
                    .bind(bound)
                    .bind(next)
                    .execute(&mut self.conn)
                    .await?;
                let trimmed = sqlx::query(TRIM_LOG_SQL)
                    .bind(bound)
                    .execute(&mut self.conn)
                    .await?
                    .rows_affected() as usize;
                Ok(Some(trimmed))
            }
        }
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
    ///
    /// The log is bounded in bytes too: a sweep also starts once it holds
    /// [`StoreTuning::compact_threshold_bytes`], and past twice that a range is folded on every apply, whatever
    /// the credit (large values make few rows, which would otherwise pace the sweep far too slowly).
    pub(super) async fn compact_due(&mut self, tuning: &StoreTuning, appended: usize) -> Result<()> {
        let gap = Writer::slice_gap(tuning);
        let over_bytes = self.log_bytes >= tuning.compact_threshold_bytes.saturating_mul(2);
        // The checkpointer's hold is short; past twice the threshold the log matters more than the WAL.
        if self.hold.load(Ordering::Acquire)
            && self.log_rows < tuning.compact_threshold_rows.saturating_mul(2)
            && !over_bytes
        {
            if self.sweep.is_some() {
                self.credit = self.credit.saturating_add(appended).min(2 * gap);
            }
            return Ok(());
        }
        if self.sweep.is_none() {
            let due =
                self.log_rows >= tuning.compact_threshold_rows || self.log_bytes >= tuning.compact_threshold_bytes;
            if !due || !self.start_sweep(tuning).await? {
                return Ok(());
            }
            // The first range right away.
            self.credit = gap;
        } else {
            self.credit = self.credit.saturating_add(appended);
            if over_bytes {
                self.credit = self.credit.max(gap);
            }
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
    pub(super) async fn bound_wal(&mut self, tuning: &StoreTuning) -> Result<()> {
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

    /// Note that pages may have been freed (a purge deleted rows), for the next [`Writer::reclaim`].
    pub(super) fn freed_pages(&mut self) {
        self.reclaim_due = true;
    }

    /// Give free pages back to the file system (`auto_vacuum=INCREMENTAL`, set at open): once a sweep or a
    /// purge has freed more than `1 / RECLAIM_FRACTION` of the file, at most `max_pages` per call (`None`:
    /// all). Without it the file keeps its largest size for good: pages freed by folding the log are reused
    /// by later appends, but never returned. Not held off by the checkpointer's catch-up, unlike sweeps: under
    /// a steady load of large values the catch-up runs much of the time, and the file matters more than the
    /// one step's pages in the WAL.
    pub(super) async fn reclaim(&mut self, max_pages: Option<u64>) -> Result<()> {
        if !self.reclaim_due {
            return Ok(());
        }
        let (free, total): (i64, i64) =
            sqlx::query_as("SELECT freelist_count, page_count FROM pragma_freelist_count(), pragma_page_count()")
                .fetch_one(&mut self.conn)
                .await?;
        let (free, total) = (free as u64, total as u64);
        if free == 0 || (max_pages.is_some() && free * RECLAIM_FRACTION <= total) {
            self.reclaim_due = false;
            return Ok(());
        }
        let pages = max_pages.map_or(free, |max| free.min(max));
        let started = Instant::now();
        // An integer formatted into the statement: PRAGMA arguments cannot be bound.
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA incremental_vacuum({pages})")))
            .execute(&mut self.conn)
            .await?;
        tracing::debug!(pages, free, total, elapsed = ?started.elapsed(), "gave free storage pages back");
        Ok(())
    }

    /// The pages-per-step bound of [`Writer::reclaim`] on the write path.
    pub(super) const VACUUM_STEP: Option<u64> = Some(VACUUM_STEP_PAGES);

    /// Fold the whole log into `kv`: finish the sweep in progress, then sweep what is left.
    pub(super) async fn compact_all(&mut self, tuning: &StoreTuning) -> Result<()> {
        loop {
            if self.sweep.is_none() && !self.start_sweep(tuning).await? {
                return Ok(());
            }
            while !self.sweep_slice().await? {}
            self.credit = 0;
        }
    }
}

/// Switch the database to `auto_vacuum=INCREMENTAL`, so that [`Writer::reclaim`] can give free pages back. A
/// new database takes the mode at once; one created before needs a `VACUUM`, a rebuild of the whole file
/// (which briefly needs room for a second copy). If that fails, for want of space say, the store works on
/// without reclaiming, and the next open tries again.
pub(super) async fn enable_incremental_vacuum(conn: &mut sqlx::SqliteConnection) {
    const INCREMENTAL: i64 = 2;
    let result: Result<()> = async {
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(&mut *conn).await?;
        if mode == INCREMENTAL {
            return Ok(());
        }
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .execute(&mut *conn)
            .await?;
        let tables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master")
            .fetch_one(&mut *conn)
            .await?;
        let started = std::time::Instant::now();
        if tables > 0 {
            tracing::info!("rebuilding the database once (VACUUM) so that it can give free space back");
        }
        // Even a new, empty database needs it in WAL mode: setting the journal mode has written its header.
        sqlx::query("VACUUM").execute(&mut *conn).await?;
        if tables > 0 {
            tracing::info!(elapsed = ?started.elapsed(), "rebuilt the database");
        }
        Ok(())
    }
    .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "cannot switch the database to incremental vacuum; free space stays in the file");
    }
}

/// The writer behind its lock, shared with the checkpointer task (which holds it only weakly).
pub(super) type SharedWriter = Arc<Mutex<Option<Writer>>>;
