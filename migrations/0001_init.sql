-- One row per key: the winning entry (a value or a tombstone) with the version that wrote it.
--
-- SQLite has no unsigned integers. `hlc` and `node` are Rust u64s stored bit-for-bit as i64 (`x as i64` on the
-- way in, `x as u64` on the way out), so values >= 2^63 are stored as negative numbers. Every comparison of
-- them in SQL must therefore order by (x < 0, x) instead of by x: see `src/storage/sqlite.rs`.
--
-- WITHOUT ROWID: the key is the only way rows are ever reached, so the table is clustered on it. That saves
-- the separate rowid b-tree and makes prefix scans read contiguous pages.
CREATE TABLE kv (
    key          TEXT    NOT NULL PRIMARY KEY,
    value        BLOB    NOT NULL,
    content_type TEXT    NOT NULL,
    secret       INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    hlc          INTEGER NOT NULL, -- u64 bit-cast to i64
    node         INTEGER NOT NULL  -- u64 bit-cast to i64
) WITHOUT ROWID;

-- Tombstone garbage collection finds old tombstones without scanning every live entry. Partial, so that
-- writes of live values (the common case) never touch it; only tombstones pay for the index.
CREATE INDEX kv_tombstones_by_hlc ON kv (hlc) WHERE deleted = 1;
