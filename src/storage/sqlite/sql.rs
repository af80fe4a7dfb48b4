//! The SQL [`SqliteStore`](super::SqliteStore) runs, and the conversion of its rows into merged [`Entry`]s.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;

use crate::crdt::{Entry, NodeId, Version};

/// Rows per append statement. 7 parameters a row keeps a full chunk (3500) far below SQLite's bound-parameter
/// limit (32766), while big enough that per-statement overhead (a round trip to sqlx's worker thread) is
/// amortised.
const CHUNK_ROWS: usize = 500;

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
pub(super) type Row = (String, Vec<u8>, String, bool, bool, i64, i64);

/// The rows of one key range, in `kv` (in key order) and in `log` (in append order), for
/// [`SqliteStore::read`](super::SqliteStore::read).
pub(super) struct Reads {
    pub(super) kv: &'static str,
    pub(super) log: &'static str,
}

pub(super) const GET: Reads = Reads {
    kv: select!("kv", "WHERE key = ?1"),
    log: select!("log", "WHERE key = ?1 ORDER BY seq"),
};
pub(super) const LOAD: Reads = Reads {
    kv: select!("kv", "ORDER BY key"),
    log: select!("log", "ORDER BY seq"),
};
/// Prefix scans are a primary-key range `[prefix, successor)`, not `LIKE`: `LIKE` is case-insensitive,
/// treats `%`/`_` in keys as wildcards and does not use the index.
pub(in crate::storage) const SCAN_RANGE_SQL: &str = select!("kv", "WHERE key >= ?1 AND key < ?2 ORDER BY key");
/// For prefixes with no successor (empty, or only U+10FFFF characters): everything from the prefix on matches.
pub(in crate::storage) const SCAN_FROM_SQL: &str = select!("kv", "WHERE key >= ?1 ORDER BY key");
pub(super) const SCAN_RANGE: Reads = Reads {
    kv: SCAN_RANGE_SQL,
    log: select!("log", "WHERE key >= ?1 AND key < ?2 ORDER BY seq"),
};
pub(super) const SCAN_FROM: Reads = Reads {
    kv: SCAN_FROM_SQL,
    log: select!("log", "WHERE key >= ?1 ORDER BY seq"),
};

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
pub(in crate::storage) const COMPACT_RANGE_SQL: &str = compact!("key >= ?2 AND key < ?3");
/// A sweep's last range, `[?2, ∞)`.
pub(in crate::storage) const COMPACT_FROM_SQL: &str = compact!("key >= ?2");
/// Drop the log rows up to `?1`, in the transaction that folds the sweep's last range.
pub(super) const TRIM_LOG_SQL: &str = "DELETE FROM log WHERE seq <= ?1";

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
pub(super) fn append_for(rows: usize) -> &'static str {
    APPENDS
        .iter()
        .find(|(size, _)| *size == rows)
        .map(|(_, sql)| sql.as_str())
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

/// The smallest string greater than every string that starts with `prefix`, or `None` if there is none.
///
/// UTF-8 byte order (SQLite's BINARY collation) is code point order, so the successor replaces the last
/// character by the next code point, skipping surrogates, and drops trailing U+10FFFF characters, which
/// have no next code point. Appending `char::MAX` instead would miss keys continuing with U+10FFFF.
pub(in crate::storage) fn prefix_successor(prefix: &str) -> Option<String> {
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

pub(super) fn into_entry((key, value, content_type, secret, deleted, hlc, node): Row) -> Entry {
    Entry {
        key,
        value: Bytes::from(value),
        content_type,
        secret,
        deleted,
        version: Version::new(hlc as u64, NodeId(node as u64)),
    }
}

/// Merge `kv` (sorted by key, one entry per key) with `log` (any order, several entries per key allowed)
/// into one entry per key, in key order.
pub(super) fn merge_rows(kv: Vec<Entry>, log: Vec<Entry>) -> Vec<Entry> {
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
