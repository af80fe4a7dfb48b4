//! [`StoreTuning`]: when the log is folded and the WAL checkpointed, with the production defaults.

use std::time::Duration;

/// Default of [`StoreTuning::compact_threshold_rows`]: bounds the log that reads scan and `close` folds. See the
/// measurements in the docs of [`super`].
pub const COMPACT_THRESHOLD_ROWS: usize = 32_768;
/// Default of [`StoreTuning::compact_threshold_bytes`]: about the log's bytes at the row threshold with keys
/// and values of ~128 bytes, so that small values (the measurements' 100 bytes) still fold by rows, while
/// large ones cannot grow the log, and the file, to many times the live data: the log holds at most about
/// twice this (while the checkpointer holds sweeps off).
pub const COMPACT_THRESHOLD_BYTES: u64 = 4 << 20;
/// Default of [`StoreTuning::compact_slice_rows`]: bounds the stall of the `apply` that folds a range. See the
/// measurements in the docs of [`super`].
pub const COMPACT_SLICE_ROWS: usize = 4_096;
/// Default of [`StoreTuning::upsert_min_rows`]: a batch of a sweep's slice or more is written into `kv` straight
/// away, since folding it from the log would rewrite at least as many pages of `kv` a second time.
pub const UPSERT_MIN_ROWS: usize = COMPACT_SLICE_ROWS;
/// Default of [`StoreTuning::checkpoint_interval`].
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Default of [`StoreTuning::wal_restart_bytes`].
pub const WAL_RESTART_BYTES: u64 = 64 << 20;
/// Default of [`StoreTuning::wal_limit_bytes`].
pub const WAL_LIMIT_BYTES: u64 = 256 << 20;
/// Rows from which a restart reads the table in two halves at once: below, the second connection and the
/// split point cost more than the halved read saves.
pub const LOAD_SPLIT_MIN_ROWS: usize = 200_000;

/// When the log is compacted and the WAL checkpointed. [`Default`] is what production uses; tests make the
/// bounds small to exercise them often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTuning {
    /// A sweep (a compaction of everything in the log) starts after the append that leaves the log this long.
    pub compact_threshold_rows: usize,
    /// A sweep also starts after the append that leaves this many bytes of keys and values in the log; past
    /// twice this, every apply folds a range.
    pub compact_threshold_bytes: u64,
    /// About how many log rows one transaction of a sweep folds into `kv` (the sweep cuts the key space into
    /// ranges of about this many of its rows, at most 16). Bounds the stall of the `apply` that
    /// folds a range; one range is folded every quarter of this many rows appended. At least 1.
    pub compact_slice_rows: usize,
    /// A batch of at least this many entries skips the log: it is upserted into `kv` in key order, in its own
    /// transaction, merging by precedence as a sweep does. The log exists for small batches of scattered keys
    /// (each would dirty a page of `kv` of its own); a large batch written in key order dirties each page it
    /// touches once, which a sweep folding it later would do again after writing the log rows and deleting
    /// them. At least 1.
    pub upsert_min_rows: usize,
    /// How often the checkpointer task runs a passive checkpoint of the WAL into the database file. Under
    /// [`Durability::Normal`](crate::storage::Durability::Normal) that is also when commits reach the disk (the checkpoint fsyncs the WAL first).
    pub checkpoint_interval: Duration,
    /// When the WAL holds at least this many bytes, the checkpointer catches up with it completely, holding
    /// the writer off for the last few pages, so that the next commit starts the WAL over from its beginning.
    /// An idle store's WAL file is also truncated once it is larger than this.
    pub wal_restart_bytes: u64,
    /// Hard bound on the WAL file: an `apply` that leaves it this large runs a `TRUNCATE` checkpoint itself,
    /// which waits for the readers that keep the WAL from starting over.
    pub wal_limit_bytes: u64,
    /// A restart loads `kv` in two halves read at once on two threads (each with its own connection) from
    /// this many rows on ([`Store::load_parts`](crate::storage::Store::load_parts)). At least 1.
    pub load_split_min_rows: usize,
}

impl StoreTuning {
    /// The production settings, usable in constants (`..StoreTuning::DEFAULT`).
    pub const DEFAULT: StoreTuning = StoreTuning {
        compact_threshold_rows: COMPACT_THRESHOLD_ROWS,
        compact_threshold_bytes: COMPACT_THRESHOLD_BYTES,
        compact_slice_rows: COMPACT_SLICE_ROWS,
        upsert_min_rows: UPSERT_MIN_ROWS,
        checkpoint_interval: CHECKPOINT_INTERVAL,
        wal_restart_bytes: WAL_RESTART_BYTES,
        wal_limit_bytes: WAL_LIMIT_BYTES,
        load_split_min_rows: LOAD_SPLIT_MIN_ROWS,
    };
}

impl Default for StoreTuning {
    fn default() -> StoreTuning {
        StoreTuning::DEFAULT
    }
}
