-- The write log: every entry `apply` persists is appended here first and folded into `kv` later by compaction
-- (see `src/storage/sqlite.rs`). Reads merge `kv` with the log, so a row here may be older than, newer than or
-- equal to the `kv` row of its key; merging by `Entry::precedence` makes that harmless.
--
-- Why a log: `kv` is clustered on the key, so a commit of N random keys dirties N different b-tree leaf pages,
-- and each dirty page costs a full page write to the WAL (and again when it is checkpointed). `seq` is the rowid
-- (INTEGER PRIMARY KEY without AUTOINCREMENT), so appends always go to the right edge of the b-tree: a commit of N
-- small entries dirties about N * (entry size) / (page size) pages.
--
-- Deliberately NO index on `key`: an index ordered by key would bring the random page writes back. Reads that
-- need the log scan it; it is bounded by the compaction threshold.
--
-- `hlc` and `node` are u64s bit-cast to i64, as in `kv` (see 0001_init.sql).
CREATE TABLE log (
    seq          INTEGER PRIMARY KEY, -- append order; compaction folds and deletes the oldest rows first
    key          TEXT    NOT NULL,
    value        BLOB    NOT NULL,
    content_type TEXT    NOT NULL,
    secret       INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    hlc          INTEGER NOT NULL, -- u64 bit-cast to i64
    node         INTEGER NOT NULL  -- u64 bit-cast to i64
);
