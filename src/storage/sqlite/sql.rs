//! The SQL [`SqliteStore`](super::SqliteStore) runs, and the conversion of its rows into merged [`Entry`]s.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::crdt::Entry;

/// Rows per append or upsert statement. 13 parameters a row keep a full chunk (26,624) below SQLite's
/// bound-parameter limit (32,766), and the per-statement overhead (a round trip to sqlx's worker thread, the
/// statement's reset) amortised: an import of 1 M keys ran 6% faster than with chunks of 500 rows.
const CHUNK_ROWS: usize = 2048;

/// The columns in the order every query selects them and `bulk::entry` decodes them.
macro_rules! select {
    ($table:literal, $($rest:literal),+) => {
        concat!(
            "SELECT key, value, content_type, secret, deleted, hlc, node, doc_hlc, doc_node, doc_changes, doc_heads, \
             expires, lease FROM ",
            $table,
            " ",
            $($rest),+
        )
    };
}

/// The restart's load (see `bulk`): every `kv` row in key order, and every `log` row in append order.
pub(super) const LOAD_KV: &str = select!("kv", "ORDER BY key");
pub(super) const LOAD_LOG: &str = select!("log", "ORDER BY seq");
/// The lower half of a split load (see `bulk::load_parts`): keys before `?1`.
pub(super) const LOAD_KV_BELOW: &str = select!("kv", "WHERE key < ?1 ORDER BY key");
pub(super) const LOAD_LOG_BELOW: &str = select!("log", "WHERE key < ?1 ORDER BY seq");
/// The upper half: keys from `?1` on.
pub(super) const LOAD_KV_FROM: &str = select!("kv", "WHERE key >= ?1 ORDER BY key");
pub(super) const LOAD_LOG_FROM: &str = select!("log", "WHERE key >= ?1 ORDER BY seq");
/// Tombstone purge when `before_hlc < 2^63`: only non-negative (bit-cast) HLCs can be below it. The literal
/// `deleted = 1` lets SQLite use the partial index `kv_tombstones_by_hlc`.
pub(in crate::storage) const PURGE_LOW_SQL: &str =
    "DELETE FROM kv WHERE deleted = 1 AND hlc >= 0 AND hlc < ?1 RETURNING key";
/// Tombstone purge when `before_hlc >= 2^63` (negative after the bit cast): every non-negative HLC is below
/// it, and so are the negative ones below it.
pub(in crate::storage) const PURGE_HIGH_SQL: &str =
    "DELETE FROM kv WHERE deleted = 1 AND (hlc >= 0 OR hlc < ?1) RETURNING key";

/// The newest `seq` in the log (NULL if it is empty): the bound of a new sweep.
pub(super) const SWEEP_BOUND_SQL: &str = "SELECT max(seq) FROM log";
/// Keys of every `?1`-th log row, to cut a sweep into key ranges (rebuilt once at open).
pub(super) const SAMPLE_KEYS_SQL: &str = "SELECT key FROM log WHERE seq % ?1 = 0";

/// The `ON CONFLICT` clause of every upsert into `kv`: the incoming row replaces the stored one only if it
/// supersedes it (see [`COMPACT_RANGE_SQL`] for the order it spells out).
macro_rules! upsert_if_supersedes {
    () => {
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, content_type = excluded.content_type, \
         secret = excluded.secret, deleted = excluded.deleted, hlc = excluded.hlc, node = excluded.node, \
         doc_hlc = excluded.doc_hlc, doc_node = excluded.doc_node, doc_changes = excluded.doc_changes, \
         doc_heads = excluded.doc_heads, expires = excluded.expires, lease = excluded.lease \
         WHERE (coalesce(excluded.doc_hlc, excluded.hlc) < 0, coalesce(excluded.doc_hlc, excluded.hlc), \
         coalesce(excluded.doc_node, excluded.node) < 0, coalesce(excluded.doc_node, excluded.node), \
         excluded.hlc < 0, excluded.hlc, excluded.node < 0, excluded.node, excluded.deleted, \
         excluded.doc_changes IS NOT NULL, coalesce(excluded.doc_changes, 0) < 0, \
         coalesce(excluded.doc_changes, 0), coalesce(excluded.doc_heads, 0) < 0, coalesce(excluded.doc_heads, 0), \
         excluded.value, excluded.content_type, excluded.secret, excluded.expires IS NOT NULL, \
         coalesce(excluded.expires, 0) < 0, coalesce(excluded.expires, 0), excluded.lease IS NOT NULL, \
         coalesce(excluded.lease, 0) < 0, coalesce(excluded.lease, 0)) \
         > (coalesce(kv.doc_hlc, kv.hlc) < 0, coalesce(kv.doc_hlc, kv.hlc), \
         coalesce(kv.doc_node, kv.node) < 0, coalesce(kv.doc_node, kv.node), \
         kv.hlc < 0, kv.hlc, kv.node < 0, kv.node, kv.deleted, \
         kv.doc_changes IS NOT NULL, coalesce(kv.doc_changes, 0) < 0, \
         coalesce(kv.doc_changes, 0), coalesce(kv.doc_heads, 0) < 0, coalesce(kv.doc_heads, 0), \
         kv.value, kv.content_type, kv.secret, kv.expires IS NOT NULL, coalesce(kv.expires, 0) < 0, \
         coalesce(kv.expires, 0), kv.lease IS NOT NULL, coalesce(kv.lease, 0) < 0, coalesce(kv.lease, 0))"
    };
}

/// Fold into `kv` the log rows up to `?1` whose keys lie in a range, merging by precedence:
/// `INSERT INTO kv SELECT ... FROM log WHERE seq <= ?1 AND <range> ORDER BY key, seq ON CONFLICT ...`.
///
/// The WHERE of the upsert is `excluded supersedes kv` in the order of `Entry::precedence`, field by field:
/// epoch (the document's creation version, else the version), version (hlc, then node, all unsigned, see the
/// module docs), deleted, the document's (changes, heads) with "no document" lowest, value (BLOBs compare by memcmp,
/// then length: the order of `[u8]`), content_type (TEXT under the BINARY collation compares UTF-8 bytes: the
/// order of `str`), secret, expiry and lease (unsigned, "none" lowest: the order of `Option<u64>`). Row values compare lexicographically, exactly like `Ordering::then_with`.
///
/// The ORDER BY visits `kv` in key order (each leaf page once), and it is also what lets SQLite parse an
/// upsert after a SELECT: without it (or a `WHERE`), `ON CONFLICT` would be read as a join constraint.
macro_rules! compact {
    ($range:literal) => {
        concat!(
            "INSERT INTO kv (key, value, content_type, secret, deleted, hlc, node, doc_hlc, doc_node, doc_changes, \
             doc_heads, expires, lease) ",
            select!("log", "WHERE seq <= ?1 AND ", $range, " ORDER BY key, seq "),
            upsert_if_supersedes!()
        )
    };
}
/// A sweep's range `[?2, ?3)`.
pub(in crate::storage) const COMPACT_RANGE_SQL: &str = compact!("key >= ?2 AND key < ?3");
/// A sweep's last range, `[?2, ∞)`.
pub(in crate::storage) const COMPACT_FROM_SQL: &str = compact!("key >= ?2");
/// Drop the log rows up to `?1`, in the transaction that folds the sweep's last range.
pub(super) const TRIM_LOG_SQL: &str = "DELETE FROM log WHERE seq <= ?1";

/// The statements that write 1, 2, 4, …, 256 and [`CHUNK_ROWS`] rows: `[append to log, upsert into kv]`.
///
/// sqlx caches one prepared statement per distinct SQL text and connection. A batch is cut into full chunks
/// plus a remainder written as a sum of powers of two, so at most ten statements of each kind are ever
/// prepared, and every batch size reuses them instead of preparing (and evicting) a statement per size.
static WRITES: LazyLock<Vec<(usize, [String; 2])>> = LazyLock::new(|| {
    let mut sizes: Vec<usize> = (0..)
        .map(|bit| 1 << bit)
        .take_while(|&rows| rows < CHUNK_ROWS)
        .collect();
    sizes.push(CHUNK_ROWS);
    sizes
        .into_iter()
        .map(|rows| {
            let upsert = format!("{} {}", values_sql("kv", rows), upsert_if_supersedes!());
            (rows, [values_sql("log", rows), upsert])
        })
        .collect()
});

/// `INSERT INTO table (the thirteen columns) VALUES` and `rows` rows of parameters.
fn values_sql(table: &str, rows: usize) -> String {
    let mut sql = format!(
        "INSERT INTO {table} (key, value, content_type, secret, deleted, hlc, node, doc_hlc, doc_node, doc_changes, \
         doc_heads, expires, lease) VALUES "
    );
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql
}

/// Most entries a commit appends in one call to the connection's worker thread (see [`append_in_one_call`]):
/// the commit groups of a few dozen concurrent writers, each its own cached statement.
pub(super) const ONE_CALL_MAX_ROWS: usize = 64;

/// The append of exactly `rows` rows (`1..=ONE_CALL_MAX_ROWS`), with `audit` the audit records' insert,
/// and `COMMIT`, as one SQL text run inside the transaction `BEGIN` opened: two round trips to sqlx's worker
/// thread per commit instead of one per statement. Each round trip wakes that thread and then the writer
/// task again, and on a loaded machine each wake-up waits for a core: a commit group of ~30 entries made six
/// of them (BEGIN, four power-of-two pieces, the audit insert with COMMIT). `BEGIN` stays a call of its own
/// so that a connection left inside a transaction is still recovered before anything is written (see
/// `Writer::begin`). Parameters are unnumbered, so sqlx binds them in order across the statements: the
/// rows' twelve each, then the audit rows' JSON.
pub(super) fn append_in_one_call(rows: usize, audit: bool) -> &'static str {
    static SQL: LazyLock<Vec<[String; 2]>> = LazyLock::new(|| {
        (1..=ONE_CALL_MAX_ROWS)
            .map(|rows| {
                let append = values_sql("log", rows);
                [
                    format!("{append}; COMMIT"),
                    format!("{append}; {}; COMMIT", super::audit::insert_audit_rows!()),
                ]
            })
            .collect()
    });
    &SQL[rows - 1][usize::from(audit)]
}

/// The prepared append to `log` of exactly `rows` rows (one of the sizes in [`WRITES`]).
pub(super) fn append_for(rows: usize) -> &'static str {
    write_for(rows, 0)
}

/// The prepared upsert into `kv` of exactly `rows` rows (one of the sizes in [`WRITES`]), each replacing the
/// stored row of its key only if it supersedes it.
pub(super) fn upsert_for(rows: usize) -> &'static str {
    write_for(rows, 1)
}

fn write_for(rows: usize, kind: usize) -> &'static str {
    WRITES
        .iter()
        .find(|(size, _)| *size == rows)
        .map(|(_, sql)| sql[kind].as_str())
        .expect("batch pieces are always a prepared size")
}

/// How `apply` cuts a batch of `len` entries into statement sizes: full chunks, then the binary digits of the
/// remainder, largest first.
pub(super) fn pieces(len: usize) -> impl Iterator<Item = usize> {
    let full = std::iter::repeat_n(CHUNK_ROWS, len / CHUNK_ROWS);
    let rest = len % CHUNK_ROWS;
    let bits = (0..usize::BITS)
        .rev()
        .map(|bit| 1usize << bit)
        .filter(move |size| rest & size != 0);
    full.chain(bits)
}

/// Merge `kv` (sorted by key, one entry per key) with `log` (any order, several entries per key allowed)
/// into one entry per key, in key order.
pub(super) fn merge_rows(kv: Vec<Entry>, log: Vec<Entry>) -> Vec<Entry> {
    if log.is_empty() {
        return kv;
    }
    let mut newer: HashMap<crate::crdt::Key, Entry> = HashMap::with_capacity(log.len());
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
