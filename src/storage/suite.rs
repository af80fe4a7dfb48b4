//! The one test suite every [`Store`] must pass.
//!
//! Each check is an async function over `&dyn Store`; [`for_each_store!`] instantiates it as a test for
//! [`MemoryStore`] (module `memory`) and for [`SqliteStore`] in a temporary directory, twice: with the default
//! tuning (module `sqlite`: in these small tests every entry stays in the write log, so reads merge it) and
//! compacting after nearly every apply in tiny key ranges (module `sqlite_compacting`: entries move into `kv`
//! part way, a batch's keys split between ranges). So the stores cannot drift apart, and neither can the
//! SQLite store's two places for an entry. Checks that only make sense for one store follow at the end.
//!
//! Versions deliberately include values at and above 2^63: SQLite stores the `u64`s as bit-cast `i64`s, and
//! a signed comparison would order those before small versions.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use sqlx::{ConnectOptions, Connection};

use super::sqlite::{
    prefix_successor, COMPACT_FROM_SQL, COMPACT_RANGE_SQL, PURGE_HIGH_SQL, PURGE_LOW_SQL, SCAN_FROM_SQL, SCAN_RANGE_SQL,
};
use super::{Durability, MemoryStore, SqliteStore, Store, StoreTuning};
use crate::crdt::{Entry, NodeId, Version};
use crate::error::Error;

const HIGH: u64 = 1 << 63;

fn v(hlc: u64, node: u64) -> Version {
    Version::new(hlc, NodeId(node))
}

fn value(key: &str, value: &[u8], version: Version) -> Entry {
    Entry::value(key, value.to_vec(), version)
}

/// The state a store must end in after `batches`: every entry folded in with [`Entry::merge`].
fn model<'a>(batches: impl IntoIterator<Item = &'a Entry>) -> BTreeMap<String, Entry> {
    let mut state: BTreeMap<String, Entry> = BTreeMap::new();
    for entry in batches {
        let merged = match state.remove(&entry.key) {
            Some(current) => current.merge(entry.clone()),
            None => entry.clone(),
        };
        state.insert(entry.key.clone(), merged);
    }
    state
}

async fn open_sqlite(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join("cave.db"), Durability::Normal)
        .await
        .unwrap()
}

/// Compaction only when asked for (`compact`, `purge_tombstones`, `close`): the log keeps what is applied.
const NEVER_COMPACT: StoreTuning = StoreTuning {
    compact_threshold_rows: usize::MAX,
    compact_slice_rows: 3,
    ..StoreTuning::DEFAULT
};

/// Compaction after almost every apply, in key ranges that cut batches apart.
const ALWAYS_COMPACT: StoreTuning = StoreTuning {
    compact_threshold_rows: 4,
    compact_slice_rows: 3,
    ..StoreTuning::DEFAULT
};

async fn open_sqlite_with(dir: &Path, tuning: StoreTuning) -> SqliteStore {
    SqliteStore::open_with(&dir.join("cave.db"), Durability::Normal, tuning)
        .await
        .unwrap()
}

/// Apply `batch` and check the count `apply` returns: at least the `changes` the batch makes, at most its
/// size (see [`Store::apply`]).
async fn apply_changing(store: &dyn Store, batch: &[Entry], changes: usize) {
    let written = store.apply(batch).await.unwrap();
    assert!(
        (changes..=batch.len()).contains(&written),
        "{written} written, {changes} changes expected: {batch:?}"
    );
}

macro_rules! for_each_store {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&crate::storage::MemoryStore::new()).await;
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$check(&super::open_sqlite(dir.path()).await).await;
                }
            )*
        }

        mod sqlite_compacting {
            $(
                #[tokio::test]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::open_sqlite_with(dir.path(), super::ALWAYS_COMPACT).await;
                    super::$check(&store).await;
                }
            )*
        }
    };
}

for_each_store!(
    round_trip,
    an_empty_batch_changes_nothing,
    an_older_version_never_overwrites_a_newer_one,
    equal_versions_resolve_like_precedence,
    versions_with_the_high_bit_set_order_as_unsigned,
    duplicate_keys_in_one_batch_merge_in_order,
    a_batch_larger_than_a_chunk_merges_like_the_model,
    scan_matches_exactly_the_prefix,
    purge_removes_only_old_tombstones,
    size_grows_with_the_data,
    concurrent_batches_all_persist,
    close_makes_every_call_unavailable,
);

async fn round_trip(store: &dyn Store) {
    let entries = vec![
        Entry {
            content_type: "text/plain; charset=utf-8".into(),
            ..value("app/greeting", "grüß dich".as_bytes(), v(10, 1))
        },
        value("app/binary", &[0x00, 0xff, 0xfe, 0x80, 0x7f, 0x00], v(11, 2)),
        value("app/empty", b"", v(12, 3)),
        Entry {
            secret: true,
            content_type: "application/x-cave-sealed".into(),
            ..value("app/db/password", b"\x01sealed\xc3\x28", v(13, 4))
        },
        Entry::tombstone("app/deleted", v(14, 5)),
        value("zz/last", b"z", v(HIGH + 7, u64::MAX)),
    ];
    assert_eq!(store.apply(&entries).await.unwrap(), entries.len());

    for entry in &entries {
        assert_eq!(
            store.get(&entry.key).await.unwrap().as_ref(),
            Some(entry),
            "get {}",
            entry.key
        );
    }
    assert_eq!(store.get("app/missing").await.unwrap(), None);
    assert_eq!(store.get("app").await.unwrap(), None);

    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(store.load().await.unwrap(), sorted);
    assert_eq!(store.scan("app/").await.unwrap(), sorted[..5].to_vec());
    let empty = store.get("app/empty").await.unwrap().unwrap();
    assert_eq!(empty.value, Bytes::new());
    assert!(!empty.deleted);
}

async fn an_empty_batch_changes_nothing(store: &dyn Store) {
    assert_eq!(store.apply(&[]).await.unwrap(), 0);
    assert_eq!(store.load().await.unwrap(), vec![]);
}

async fn an_older_version_never_overwrites_a_newer_one(store: &dyn Store) {
    let newer = value("k", b"new", v(20, 1));
    apply_changing(store, std::slice::from_ref(&newer), 1).await;

    let older = [
        value("k", b"old", v(19, 9)),
        value("k", b"old", v(20, 0)),
        Entry::tombstone("k", v(3, u64::MAX)),
        Entry {
            secret: true,
            ..value("k", b"\xff\xff", v(19, u64::MAX))
        },
    ];
    for entry in &older {
        apply_changing(store, std::slice::from_ref(entry), 0).await;
        assert_eq!(store.get("k").await.unwrap(), Some(newer.clone()), "{entry:?} applied");
    }
    apply_changing(store, &older, 0).await;
    assert_eq!(store.get("k").await.unwrap(), Some(newer.clone()));

    // Replaying the same entry is not a change either.
    apply_changing(store, std::slice::from_ref(&newer), 0).await;
    assert_eq!(store.get("k").await.unwrap(), Some(newer.clone()));

    let tombstone = Entry::tombstone("k", v(21, 1));
    apply_changing(store, std::slice::from_ref(&tombstone), 1).await;
    apply_changing(store, std::slice::from_ref(&newer), 0).await;
    assert_eq!(store.get("k").await.unwrap(), Some(tombstone.clone()));
    assert_eq!(store.load().await.unwrap(), std::slice::from_ref(&tombstone));
    assert_eq!(store.scan("k").await.unwrap(), [tombstone]);
}

async fn equal_versions_resolve_like_precedence(store: &dyn Store) {
    let version = v(5, 5);
    let base = value("k", b"\x01", version);
    // Each candidate differs from another in one field that `Entry::precedence` looks at, including the
    // cases a wrong SQL comparison gets wrong: a byte above 0x7f (signed vs unsigned bytes), a value that is
    // a prefix of another (length), non-ASCII content types (UTF-8 byte order).
    let candidates = [
        base.clone(),
        Entry::tombstone("k", version),
        Entry {
            deleted: true,
            ..base.clone()
        },
        value("k", b"", version),
        value("k", b"\x01\x00", version),
        value("k", b"\x80", version),
        value("k", b"\x7f\xff", version),
        Entry {
            content_type: String::new(),
            ..base.clone()
        },
        Entry {
            content_type: "a".into(),
            ..base.clone()
        },
        Entry {
            content_type: "ab".into(),
            ..base.clone()
        },
        Entry {
            content_type: "é".into(),
            ..base.clone()
        },
        Entry {
            content_type: "z".into(),
            ..base.clone()
        },
        Entry {
            secret: true,
            ..base.clone()
        },
    ];
    for (i, a) in candidates.iter().enumerate() {
        for (j, b) in candidates.iter().enumerate() {
            let key = format!("k/{i}/{j}");
            let a = Entry {
                key: key.clone(),
                ..a.clone()
            };
            let b = Entry {
                key: key.clone(),
                ..b.clone()
            };
            store.apply(std::slice::from_ref(&a)).await.unwrap();
            apply_changing(store, std::slice::from_ref(&b), usize::from(b.supersedes(&a))).await;
            assert_eq!(
                store.get(&key).await.unwrap(),
                Some(a.clone().merge(b.clone())),
                "{a:?} then {b:?}"
            );
        }
    }
}

async fn versions_with_the_high_bit_set_order_as_unsigned(store: &dyn Store) {
    // Ascending in unsigned order; as i64 the second half is negative.
    let ascending = [
        v(0, 1),
        v(1, 0),
        v(1, 1),
        v(1, i64::MAX as u64),
        v(1, HIGH),
        v(1, u64::MAX),
        v(i64::MAX as u64, 0),
        v(HIGH, 0),
        v(HIGH, HIGH + 1),
        v(HIGH + 1, 0),
        v(u64::MAX - 1, u64::MAX),
        v(u64::MAX, 0),
        v(u64::MAX, u64::MAX),
    ];
    for (i, lower) in ascending.iter().enumerate() {
        for higher in &ascending[i + 1..] {
            let key = format!("k/{lower}/{higher}");
            let low = value(&key, b"low", *lower);
            let high = value(&key, b"high", *higher);
            // High first: the low one must not replace it.
            apply_changing(store, &[high.clone(), low.clone()], 1).await;
            assert_eq!(
                store.get(&key).await.unwrap(),
                Some(high.clone()),
                "{higher} then {lower}"
            );
            // Low first (on a fresh key): the high one must replace it.
            let key = format!("{key}/up");
            let low = Entry {
                key: key.clone(),
                ..low
            };
            let high = Entry {
                key: key.clone(),
                ..high
            };
            apply_changing(store, &[low, high.clone()], 2).await;
            assert_eq!(store.get(&key).await.unwrap(), Some(high), "{lower} then {higher}");
        }
    }
}

async fn duplicate_keys_in_one_batch_merge_in_order(store: &dyn Store) {
    let batch = [
        value("k", b"1", v(1, 1)),
        value("k", b"3", v(3, 1)),
        value("k", b"2", v(2, 1)),
        Entry::tombstone("k", v(3, 0)),
        value("other", b"x", v(1, 1)),
    ];
    // Inserting v1, replacing it by v3 and inserting `other` are changes; v2 and the older tombstone are not.
    apply_changing(store, &batch, 3).await;
    assert_eq!(
        store.load().await.unwrap(),
        model(&batch).into_values().collect::<Vec<_>>()
    );
}

async fn a_batch_larger_than_a_chunk_merges_like_the_model(store: &dyn Store) {
    // 1234 entries: two full chunks of the SQLite store plus a remainder, with repeated keys across chunk
    // boundaries and versions going up and down.
    let batch: Vec<Entry> = (0..1234u64)
        .map(|i| {
            let hlc = (i * 7919) % 1000 + if i % 3 == 0 { HIGH } else { 0 };
            let key = format!("big/{:03}", i % 300);
            if i % 11 == 0 {
                Entry::tombstone(key, v(hlc, i))
            } else {
                value(&key, &i.to_be_bytes(), v(hlc, i))
            }
        })
        .collect();
    let state = model(&batch);
    let changed = store.apply(&batch).await.unwrap();
    assert!(changed >= state.len() && changed <= batch.len(), "{changed} changes");
    assert_eq!(store.load().await.unwrap(), state.into_values().collect::<Vec<_>>());
}

async fn scan_matches_exactly_the_prefix(store: &dyn Store) {
    let keys = [
        "a",
        "a.",
        "a/",
        "a/b",
        "a/b/c",
        "a/\u{7f}",
        "a/\u{D7FF}",
        "a/\u{E000}",
        "a/\u{10FFFF}",
        "a/\u{10FFFF}x",
        "a0",
        "a0/b",
        "ab",
        "b",
        "é",
        "é/1",
        "é/2",
        "éa",
        "ê",
        "日本/東京",
        "日本/大阪",
        "日本語",
        "\u{10FFFF}",
        "\u{10FFFF}\u{10FFFF}",
        "\u{10FFFF}a",
    ];
    let entries: Vec<Entry> = keys.iter().map(|key| value(key, key.as_bytes(), v(1, 1))).collect();
    store.apply(&entries).await.unwrap();

    let prefixes = [
        "",
        "a",
        "a/",
        "a/b",
        "a/\u{D7FF}",
        "a/\u{10FFFF}",
        "a0",
        "b",
        "c",
        "é",
        "é/",
        "日本/",
        "日本",
        "\u{10FFFF}",
        "\u{10FFFF}\u{10FFFF}",
    ];
    for prefix in prefixes {
        let expected: Vec<&str> = keys.iter().copied().filter(|key| key.starts_with(prefix)).collect();
        let mut expected = expected;
        expected.sort_unstable();
        let found: Vec<String> = store.scan(prefix).await.unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(found, expected, "scan({prefix:?})");
    }
    assert!(!store
        .scan("a/")
        .await
        .unwrap()
        .iter()
        .any(|e| e.key == "a" || e.key == "a0"));
}

async fn purge_removes_only_old_tombstones(store: &dyn Store) {
    let entries = [
        Entry::tombstone("t/5", v(5, 1)),
        Entry::tombstone("t/9", v(9, u64::MAX)),
        Entry::tombstone("t/10", v(10, 1)),
        Entry::tombstone("t/high", v(HIGH + 1, 1)),
        Entry::tombstone("t/max", v(u64::MAX, 1)),
        value("live/1", b"x", v(1, 1)),
        value("live/high", b"x", v(HIGH, 1)),
    ];
    store.apply(&entries).await.unwrap();

    assert_eq!(store.purge_tombstones(0).await.unwrap(), Vec::<String>::new());
    let mut purged = store.purge_tombstones(10).await.unwrap();
    purged.sort();
    assert_eq!(purged, ["t/5", "t/9"]);
    assert_eq!(store.get("t/5").await.unwrap(), None);
    assert!(store.get("t/10").await.unwrap().is_some());

    // A bound above 2^63 must neither skip the small HLCs nor the large ones below it.
    let mut purged = store.purge_tombstones(HIGH + 2).await.unwrap();
    purged.sort();
    assert_eq!(purged, ["t/10", "t/high"]);
    assert_eq!(store.purge_tombstones(u64::MAX).await.unwrap(), Vec::<String>::new());

    let left: Vec<String> = store.load().await.unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(left, ["live/1", "live/high", "t/max"]);
}

async fn size_grows_with_the_data(store: &dyn Store) {
    let before = store.size_bytes().await.unwrap();
    let big: Vec<Entry> = (0..16)
        .map(|i| value(&format!("big/{i}"), &[i as u8; 64 * 1024], v(1, 1)))
        .collect();
    store.apply(&big).await.unwrap();
    let after = store.size_bytes().await.unwrap();
    assert!(after >= before + 16 * 64 * 1024, "{before} -> {after}");
}

async fn concurrent_batches_all_persist(store: &dyn Store) {
    let batches: Vec<Vec<Entry>> = (0..8)
        .map(|writer| {
            (0..50)
                .map(|i| value(&format!("w{writer}/{i:02}"), b"x", v(i + 1, writer)))
                .collect()
        })
        .collect();
    let applied = futures::future::join_all(batches.iter().map(|batch| store.apply(batch))).await;
    for result in applied {
        assert_eq!(result.unwrap(), 50);
    }
    assert_eq!(store.load().await.unwrap().len(), 400);
}

async fn close_makes_every_call_unavailable(store: &dyn Store) {
    store.apply(&[value("k", b"v", v(1, 1))]).await.unwrap();
    store.close().await.unwrap();

    fn unavailable<T: std::fmt::Debug>(call: &str, result: crate::Result<T>) {
        assert!(
            matches!(result, Err(Error::Unavailable(_))),
            "{call} after close: {result:?}"
        );
    }
    unavailable("load", store.load().await);
    unavailable("get", store.get("k").await);
    unavailable("scan", store.scan("").await);
    unavailable("apply", store.apply(&[value("k", b"w", v(2, 1))]).await);
    unavailable("apply([])", store.apply(&[]).await);
    unavailable("purge_tombstones", store.purge_tombstones(u64::MAX).await);
    unavailable("size_bytes", store.size_bytes().await);
    unavailable("close", store.close().await);
}

// --- Order-insensitivity, property-tested ---------------------------------------------------------------

fn arb_entry() -> impl Strategy<Value = Entry> {
    // Small domains, so that keys collide and equal versions with different contents occur; versions on
    // both sides of 2^63.
    let hlc = prop::sample::select(vec![0, 1, 2, i64::MAX as u64, HIGH, u64::MAX]);
    let node = prop::sample::select(vec![0, 1, HIGH, u64::MAX]);
    let key = prop::sample::select(vec!["a", "a/b", "b"]);
    let bytes = prop::collection::vec(prop::sample::select(vec![0x00u8, 0x01, 0x7f, 0x80, 0xff]), 0..3);
    let content_type = prop::sample::select(vec!["", "a", "é"]);
    (key, hlc, node, any::<bool>(), bytes, content_type, any::<bool>()).prop_map(
        |(key, hlc, node, deleted, bytes, content_type, secret)| {
            let version = v(hlc, node);
            if deleted {
                Entry::tombstone(key, version)
            } else {
                Entry {
                    content_type: content_type.into(),
                    secret,
                    ..value(key, &bytes, version)
                }
            }
        },
    )
}

/// Entries cut into batches of random sizes, applied in order.
fn arb_batches() -> impl Strategy<Value = Vec<Vec<Entry>>> {
    prop::collection::vec(prop::collection::vec(arb_entry(), 0..8), 0..8)
}

async fn converges_to_the_merge(store: &dyn Store, batches: &[Vec<Entry>]) -> std::result::Result<(), TestCaseError> {
    for batch in batches {
        store.apply(batch).await.unwrap();
    }
    holds_the_merge(store, &model(batches.iter().flatten())).await
}

/// `load`, `get` of every key (and of a missing one) and `scan` all agree with `expected`.
async fn holds_the_merge(
    store: &dyn Store,
    expected: &BTreeMap<String, Entry>,
) -> std::result::Result<(), TestCaseError> {
    let all: Vec<Entry> = expected.values().cloned().collect();
    prop_assert_eq!(store.load().await.unwrap(), all.clone());
    prop_assert_eq!(store.scan("").await.unwrap(), all.clone());
    for (key, entry) in expected {
        let got = store.get(key).await.unwrap();
        prop_assert_eq!(got.as_ref(), Some(entry), "get {}", key);
    }
    prop_assert_eq!(store.get("missing").await.unwrap(), None);
    let under_a: Vec<Entry> = all.into_iter().filter(|e| e.key.starts_with("a/")).collect();
    prop_assert_eq!(store.scan("a/").await.unwrap(), under_a);
    Ok(())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

proptest! {
    #[test]
    fn memory_applies_in_any_order_converge_to_the_merge(batches in arb_batches()) {
        block_on(converges_to_the_merge(&MemoryStore::new(), &batches))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn sqlite_applies_in_any_order_converge_to_the_merge(batches in arb_batches()) {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            converges_to_the_merge(&open_sqlite(dir.path()).await, &batches).await
        })?;
    }

    /// Compactions triggered part way (any threshold and slice size, so slices start and end anywhere in
    /// the batches and several versions of a key meet in `kv`, in the log and in one slice) change nothing a
    /// read sees; neither does a final full compaction, nor reopening the file.
    #[test]
    fn sqlite_applies_converge_with_compaction_mid_way(
        batches in arb_batches(),
        threshold in 0usize..12,
        slice in 1usize..6,
    ) {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let tuning = StoreTuning {
                compact_threshold_rows: threshold,
                compact_slice_rows: slice,
                ..StoreTuning::DEFAULT
            };
            let store = open_sqlite_with(dir.path(), tuning).await;
            converges_to_the_merge(&store, &batches).await?;
            let expected = model(batches.iter().flatten());
            // The log stays near the threshold: a sweep starts once the log reaches it and, with these slice
            // sizes, folds a key range for every row appended; there are only three keys, so three ranges.
            prop_assert!(store.log_rows().await.unwrap() < threshold.max(1) + 2 * 8);
            store.compact().await.unwrap();
            prop_assert_eq!(store.log_rows().await.unwrap(), 0);
            holds_the_merge(&store, &expected).await?;
            store.close().await.unwrap();
            let store = open_sqlite_with(dir.path(), tuning).await;
            holds_the_merge(&store, &expected).await
        })?;
    }
}

// --- MemoryStore only ------------------------------------------------------------------------------------

#[tokio::test]
async fn memory_reopen_sees_the_persisted_entries() {
    let disk = MemoryStore::new();
    let entries = [value("a", b"1", v(1, 1)), Entry::tombstone("b", v(2, 1))];
    disk.apply(&entries).await.unwrap();
    disk.close().await.unwrap();

    let restarted = disk.reopen();
    assert_eq!(restarted.load().await.unwrap(), entries);
    assert_eq!(
        restarted.size_bytes().await.unwrap(),
        entries.iter().map(|e| e.size() as u64).sum::<u64>()
    );
    restarted.apply(&[value("c", b"3", v(3, 1))]).await.unwrap();
    assert!(
        matches!(disk.get("c").await, Err(Error::Unavailable(_))),
        "the old handle stays closed"
    );
    assert_eq!(
        disk.reopen().get("c").await.unwrap().unwrap().value,
        Bytes::from_static(b"3")
    );
}

#[tokio::test]
async fn memory_size_is_the_sum_of_entry_sizes() {
    let store = MemoryStore::new();
    let entries = [
        value("a", b"12345", v(1, 1)),
        value("a", b"1", v(2, 1)),
        Entry::tombstone("bb", v(1, 1)),
    ];
    store.apply(&entries).await.unwrap();
    let expected: usize = model(&entries).values().map(Entry::size).sum();
    assert_eq!(store.size_bytes().await.unwrap(), expected as u64);
    store.purge_tombstones(u64::MAX).await.unwrap();
    assert_eq!(store.size_bytes().await.unwrap(), entries[1].size() as u64);
}

// --- SqliteStore only ------------------------------------------------------------------------------------

/// A second connection to the store's file, as an operator's `sqlite3` shell would have.
async fn side_connection(path: &Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let entries: Vec<Entry> = (0..700u64)
        .map(|i| value(&format!("k/{i:04}"), &i.to_le_bytes(), v(i, HIGH)))
        .collect();
    let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    store.apply(&entries).await.unwrap();
    store.apply(&[Entry::tombstone("k/0001", v(HIGH, 1))]).await.unwrap();
    assert_eq!(
        store.log_rows().await.unwrap(),
        701,
        "below the threshold, everything is still in the log"
    );
    store.close().await.unwrap();
    assert!(matches!(store.compact().await, Err(Error::Unavailable(_))));

    // The checkpoint folded the WAL into the main file.
    let wal = dir.path().join("cave.db-wal");
    assert!(
        std::fs::metadata(&wal).map(|m| m.len() == 0).unwrap_or(true),
        "WAL left behind"
    );
    // And close compacted the log into `kv` first.
    let mut side = side_connection(&path).await;
    let counts: (i64, i64) = sqlx::query_as("SELECT (SELECT COUNT(*) FROM log), (SELECT COUNT(*) FROM kv)")
        .fetch_one(&mut side)
        .await
        .unwrap();
    assert_eq!(counts, (0, 700));
    side.close().await.unwrap();

    let store = SqliteStore::open(&path, Durability::Fsync).await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.len(), 700);
    assert_eq!(loaded[0], entries[0]);
    assert!(loaded[1].deleted);
    assert_eq!(loaded[2..], entries[2..]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_pragmas_follow_the_durability() {
    let dir = tempfile::tempdir().unwrap();
    for (durability, synchronous) in [(Durability::Normal, 1), (Durability::Fsync, 2)] {
        let store = SqliteStore::open(&dir.path().join(format!("{durability:?}.db")), durability)
            .await
            .unwrap();
        let (journal_mode, sync, busy_timeout, autocheckpoint) = store.writer_settings().await.unwrap();
        assert_eq!(journal_mode, "wal");
        assert_eq!(sync, synchronous, "{durability:?}");
        assert!(busy_timeout > 0);
        assert_eq!(autocheckpoint, 0, "the writer never checkpoints on its commit path");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn sqlite_open_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/node-1/cave.db");
    let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    store.apply(&[value("k", b"v", v(1, 1))]).await.unwrap();
    assert!(path.exists());
    assert_eq!(store.path(), path);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_a_failed_batch_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(dir.path()).await;
    store.apply(&[value("before", b"1", v(1, 1))]).await.unwrap();

    // Make the 700th row of a batch fail, in the second statement of the transaction.
    let mut side = side_connection(&dir.path().join("cave.db")).await;
    sqlx::query(
        "CREATE TRIGGER boom BEFORE INSERT ON log WHEN NEW.key = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END",
    )
    .execute(&mut side)
    .await
    .unwrap();
    let mut batch: Vec<Entry> = (0..1000).map(|i| value(&format!("k/{i:04}"), b"x", v(1, 1))).collect();
    batch[699].key = "boom".into();
    batch.push(value("before", b"2", v(2, 1)));
    assert!(store.apply(&batch).await.is_err());
    assert_eq!(store.load().await.unwrap(), [value("before", b"1", v(1, 1))]);
    assert_eq!(
        store.log_rows().await.unwrap(),
        1,
        "the running count of log rows survives a rollback"
    );

    // The writer is usable afterwards.
    sqlx::query("DROP TRIGGER boom").execute(&mut side).await.unwrap();
    side.close().await.unwrap();
    assert_eq!(store.apply(&batch).await.unwrap(), 1001);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_scan_and_purge_use_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(dir.path()).await;
    let mut side = side_connection(&dir.path().join("cave.db")).await;
    let plans = [
        (SCAN_RANGE_SQL, "USING PRIMARY KEY (key>? AND key<?)"),
        (SCAN_FROM_SQL, "USING PRIMARY KEY (key>?)"),
        (PURGE_LOW_SQL, "USING INDEX kv_tombstones_by_hlc (hlc>? AND hlc<?)"),
        // A sweep reads only the log rows up to its bound, by rowid.
        (COMPACT_RANGE_SQL, "log USING INTEGER PRIMARY KEY (rowid<?)"),
        (COMPACT_FROM_SQL, "log USING INTEGER PRIMARY KEY (rowid<?)"),
    ];
    for (sql, expected) in plans {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .bind("a/")
                .bind("a0")
                .fetch_all(&mut side)
                .await
                .unwrap();
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            details.iter().any(|d| d.starts_with("SEARCH") && d.contains(expected)),
            "{sql}: {details:?}"
        );
    }
    // The high variant cannot be one range, but it must still only visit tombstones.
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {PURGE_HIGH_SQL}")))
            .bind(-1i64)
            .fetch_all(&mut side)
            .await
            .unwrap();
    assert!(
        plan.iter().any(|row| row.3.contains("kv_tombstones_by_hlc")),
        "{plan:?}"
    );
    // The log must stay append-only on disk: an index ordered by key would bring back one random page
    // write per entry and commit.
    let log_indexes: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'log'")
            .fetch_one(&mut side)
            .await
            .unwrap();
    assert_eq!(log_indexes, 0);
    side.close().await.unwrap();
    store.close().await.unwrap();
}

/// Every read of `store` agrees with `expected`.
async fn reads_agree(store: &SqliteStore, expected: &BTreeMap<String, Entry>) {
    let result = holds_the_merge(store, expected).await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn sqlite_reads_merge_the_log_before_and_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite_with(dir.path(), NEVER_COMPACT).await;
    let first = [
        value("a", b"kv", v(5, 1)),
        value("a/b", b"kv", v(5, 1)),
        Entry::tombstone("b", v(5, 1)),
        value("c", b"kv", v(HIGH, 1)),
        value("d", b"kv", v(5, 1)),
    ];
    store.apply(&first).await.unwrap();
    store.compact().await.unwrap();
    assert_eq!(store.log_rows().await.unwrap(), 0);

    let second = [
        value("a", b"older than kv", v(4, 9)),
        value("a/b", b"newer than kv", v(6, 1)),
        value("b", b"back from the tombstone", v(HIGH, 0)),
        value("c", b"older, high bit", v(HIGH, 0)),
        value("c", b"older, no high bit", v(i64::MAX as u64, u64::MAX)),
        Entry::tombstone("d", v(6, 1)),
        value("d", b"older than the logged tombstone", v(5, 2)),
        value("a/only-logged", b"2", v(2, 1)),
        value("a/only-logged", b"1", v(1, 1)),
        value("e", b"only logged", v(1, 1)),
    ];
    store.apply(&second).await.unwrap();
    assert_eq!(store.log_rows().await.unwrap(), second.len());
    let expected = model(first.iter().chain(&second));
    assert_eq!(expected["a"], first[0]);
    assert_eq!(expected["c"], first[3]);
    assert!(expected["d"].deleted);
    reads_agree(&store, &expected).await;

    store.compact().await.unwrap();
    assert_eq!(store.log_rows().await.unwrap(), 0);
    reads_agree(&store, &expected).await;

    // And once more with an older entry on top of the compacted state.
    store.apply(&[value("a/b", b"stale", v(1, 1))]).await.unwrap();
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}

fn permutations(items: &[Entry]) -> Vec<Vec<Entry>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            all.push(tail);
        }
    }
    all
}

#[tokio::test]
async fn sqlite_compaction_keeps_the_greatest_precedence() {
    // Versions of one key that only the full order tells apart: the high bit, equal versions with
    // different contents (deleted, value bytes above 0x7f, value length).
    let versions = [
        value("k", b"low", v(2, 1)),
        value("k", b"signed max", v(i64::MAX as u64, u64::MAX)),
        value("k", b"\x80", v(HIGH, 0)),
        value("k", b"\x7f\xff", v(HIGH, 0)),
        value("k", b"\x80\x00", v(HIGH, 0)),
        Entry::tombstone("k", v(HIGH, 0)),
    ];
    // Every order of several subsets, each on its own key, appended in that order: so the log holds older
    // versions after newer ones, which one statement of a sweep merges; slices of different sizes cut the
    // keys into different ranges, and the replay below merges every version again with the one in `kv`.
    let subsets: [&[usize]; 4] = [&[0, 1, 2, 3], &[1, 2, 3, 4], &[0, 2, 5, 4], &[5, 3, 1]];
    let mut batch = Vec::new();
    for (s, subset) in subsets.iter().enumerate() {
        let chosen: Vec<Entry> = subset.iter().map(|&i| versions[i].clone()).collect();
        for (p, order) in permutations(&chosen).into_iter().enumerate() {
            let key = format!("k/{s}/{p:02}");
            batch.extend(order.into_iter().map(|e| Entry { key: key.clone(), ..e }));
        }
    }
    let expected = model(&batch);
    for slice in [1, 2, 3, 5, 7, batch.len()] {
        let dir = tempfile::tempdir().unwrap();
        let tuning = StoreTuning {
            compact_slice_rows: slice,
            ..NEVER_COMPACT
        };
        let store = open_sqlite_with(dir.path(), tuning).await;
        store.apply(&batch).await.unwrap();
        reads_agree(&store, &expected).await;
        store.compact().await.unwrap();
        assert_eq!(store.log_rows().await.unwrap(), 0);
        reads_agree(&store, &expected).await;
        // Every key's winner is in `kv` now: replaying all of it (one more pass through the log) is a no-op.
        store.apply(&batch).await.unwrap();
        store.compact().await.unwrap();
        reads_agree(&store, &expected).await;
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn sqlite_purge_never_resurrects_a_value_hidden_behind_a_logged_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite_with(dir.path(), NEVER_COMPACT).await;
    // In `kv`: a live value and a tombstone.
    store
        .apply(&[value("k", b"old", v(1, 1)), Entry::tombstone("t", v(1, 1))])
        .await
        .unwrap();
    store.compact().await.unwrap();
    // In the log: a tombstone over the live value, a value over the tombstone.
    let back = value("t", b"back", v(2, 1));
    store
        .apply(&[Entry::tombstone("k", v(2, 1)), back.clone()])
        .await
        .unwrap();

    // `k` is a tombstone below the bound and goes; `t` is live and stays; and nothing comes back.
    assert_eq!(store.purge_tombstones(3).await.unwrap(), ["k"]);
    assert_eq!(store.get("k").await.unwrap(), None);
    assert_eq!(store.get("t").await.unwrap(), Some(back.clone()));
    assert_eq!(store.load().await.unwrap(), std::slice::from_ref(&back));
    assert_eq!(store.log_rows().await.unwrap(), 0);
    store.close().await.unwrap();

    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.load().await.unwrap(), [back]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_logged_entries_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let compacted: Vec<Entry> = (0..300u64)
        .map(|i| value(&format!("k/{i:03}"), b"compacted", v(10, 1)))
        .collect();
    // Newer and older versions of compacted keys, and new keys, left in the log.
    let logged: Vec<Entry> = (0..300u64)
        .map(|i| match i % 3 {
            0 => value(&format!("k/{i:03}"), b"newer", v(11, 1)),
            1 => value(&format!("k/{i:03}"), b"older", v(9, 1)),
            _ => Entry::tombstone(format!("new/{i:03}"), v(HIGH, 1)),
        })
        .collect();
    let expected = model(compacted.iter().chain(&logged));

    let store = open_sqlite_with(dir.path(), NEVER_COMPACT).await;
    store.apply(&compacted).await.unwrap();
    store.compact().await.unwrap();
    store.apply(&logged).await.unwrap();
    // A crash: no `close`, so no compaction and no checkpoint.
    drop(store);

    let store = open_sqlite(dir.path()).await;
    assert_eq!(
        store.log_rows().await.unwrap(),
        logged.len(),
        "the rows are still in the log"
    );
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();

    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.log_rows().await.unwrap(), 0, "close compacted");
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_a_failed_compaction_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = StoreTuning {
        compact_threshold_rows: 1,
        compact_slice_rows: 100,
        ..StoreTuning::DEFAULT
    };
    let store = open_sqlite_with(dir.path(), tuning).await;
    let mut side = side_connection(&dir.path().join("cave.db")).await;
    sqlx::query("CREATE TRIGGER boom BEFORE INSERT ON kv WHEN NEW.key = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END")
        .execute(&mut side)
        .await
        .unwrap();

    // The append commits; the compaction after it fails and rolls back. The apply still succeeds: its
    // batch is durable, in the log.
    let first = [value("a", b"1", v(1, 1)), value("boom", b"2", v(1, 1))];
    assert_eq!(store.apply(&first).await.unwrap(), 2);
    assert_eq!(store.log_rows().await.unwrap(), 2);
    reads_agree(&store, &model(&first)).await;
    assert!(store.compact().await.is_err());

    // Once compaction works again, the next apply retries the range and completes the sweep: the first
    // batch leaves the log, the second one (appended after the sweep began) stays for the next sweep.
    sqlx::query("DROP TRIGGER boom").execute(&mut side).await.unwrap();
    side.close().await.unwrap();
    let second = [value("a", b"3", v(2, 1))];
    store.apply(&second).await.unwrap();
    assert_eq!(store.log_rows().await.unwrap(), 1);
    reads_agree(&store, &model(first.iter().chain(&second))).await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_sweeps_fold_key_ranges_and_keep_the_log_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = StoreTuning {
        compact_threshold_rows: 1000,
        compact_slice_rows: 256,
        ..StoreTuning::DEFAULT
    };
    let store = open_sqlite_with(dir.path(), tuning).await;
    let mut batches = Vec::new();
    let mut most_ranges = 0;
    let mut sweeps = 0;
    let mut sweeping = false;
    for i in 0..300 {
        batches.push(load_batch(i));
        store.apply(&batches[i as usize]).await.unwrap();
        // A sweep folds ~1000 rows in ranges of ~256, one range per 64 rows appended: the log stays within a
        // quarter (plus a batch) of the threshold.
        let rows = store.log_rows().await.unwrap();
        assert!(rows < 1000 + 250 + 2 * 32, "{rows} rows in the log after batch {i}");
        let ranges = store.sweep_ranges_left().await;
        most_ranges = most_ranges.max(ranges.unwrap_or(0));
        if ranges.is_some() && !sweeping {
            sweeps += 1;
        }
        sweeping = ranges.is_some();
        if i % 60 == 0 {
            reads_agree(&store, &model(batches.iter().flatten())).await;
        }
    }
    assert!(sweeps >= 5, "{sweeps} sweeps");
    assert!(
        most_ranges >= 3,
        "sweeps are cut into ranges: at most {most_ranges} left"
    );
    let expected = model(batches.iter().flatten());
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.log_rows().await.unwrap(), 0);
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}

// --- SqliteStore: the checkpointer ------------------------------------------------------------------------

/// Checkpoints and WAL restarts many times a second, compaction every few batches.
const BUSY_CHECKPOINTS: StoreTuning = StoreTuning {
    compact_threshold_rows: 200,
    compact_slice_rows: 64,
    checkpoint_interval: std::time::Duration::from_millis(5),
    wal_restart_bytes: 64 << 10,
    wal_limit_bytes: 1 << 20,
};

fn wal_len(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Batch `i` of a sustained write load: 32 entries with 100-byte values over 2000 keys, some tombstones.
fn load_batch(i: u64) -> Vec<Entry> {
    (0..32u64)
        .map(|j| {
            let n = i * 32 + j;
            let key = format!("load/{:04}", (n * 7919) % 2000);
            let version = v(n + 1, if n.is_multiple_of(2) { 1 } else { HIGH });
            if n.is_multiple_of(13) {
                Entry::tombstone(key, version)
            } else {
                value(&key, &[n as u8; 100], version)
            }
        })
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn sqlite_the_checkpointer_stops_at_close_and_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    let task = store.checkpointer_task().expect("running after open");
    store.apply(&load_batch(0)).await.unwrap();
    assert!(!task.is_finished());
    store.close().await.unwrap();
    assert!(task.is_finished(), "close waits for the task");
    assert!(store.checkpointer_task().is_none());

    // Dropped without `close` (a crash, as far as the store knows): the task does not keep running.
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    let task = store.checkpointer_task().unwrap();
    store.apply(&load_batch(1)).await.unwrap();
    drop(store);
    wait_until("the task ends", || task.is_finished()).await;
    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.load().await.unwrap().len(), 64);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_the_checkpointer_moves_the_wal_into_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = open_sqlite_with(dir.path(), NEVER_COMPACT).await;
    let before = std::fs::metadata(&path).unwrap().len();
    let big: Vec<Entry> = (0..16)
        .map(|i| value(&format!("big/{i}"), &[i as u8; 64 * 1024], v(1, 1)))
        .collect();
    store.apply(&big).await.unwrap();
    // The writer never checkpoints; only the task can grow the database file before `close`.
    wait_until("the database file holds the batch", || {
        std::fs::metadata(&path).unwrap().len() >= before + 16 * 64 * 1024
    })
    .await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_data_written_while_checkpointing_survives_close_a_drop_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let crashed = tempfile::tempdir().unwrap();
    let crashed_path = crashed.path().join("cave.db");
    let mut batches = Vec::new();
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    for i in 0..400 {
        batches.push(load_batch(i));
        store.apply(&batches[i as usize]).await.unwrap();
        if i == 300 {
            // What a process crash leaves behind (durability normal: the OS has every write), taken while
            // checkpoints run: the WAL first, then the database file, which the checkpointer may be writing.
            // Everything it copies in is a frame of the WAL copy, which recovery replays on top.
            std::fs::copy(dir.path().join("cave.db-wal"), crashed.path().join("cave.db-wal")).unwrap();
            std::fs::copy(&path, &crashed_path).unwrap();
        }
    }
    let expected = model(batches.iter().flatten());
    reads_agree(&store, &expected).await;
    drop(store);

    // The crash image holds the first 301 batches.
    let image = SqliteStore::open_with(&crashed_path, Durability::Normal, BUSY_CHECKPOINTS)
        .await
        .unwrap();
    reads_agree(&image, &model(batches[..301].iter().flatten())).await;
    image.close().await.unwrap();

    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    reads_agree(&store, &expected).await;
    for i in 400..500 {
        batches.push(load_batch(i));
        store.apply(&batches[i as usize]).await.unwrap();
    }
    store.close().await.unwrap();
    assert_eq!(wal_len(&path), 0, "close truncates the WAL");

    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.log_rows().await.unwrap(), 0);
    reads_agree(&store, &model(batches.iter().flatten())).await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_an_idle_wal_file_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    let mut i = 0;
    while wal_len(&path) <= BUSY_CHECKPOINTS.wal_restart_bytes {
        store.apply(&load_batch(i)).await.unwrap();
        i += 1;
    }
    // No more writes: two rounds later the checkpointer sees nothing new and gives the space back.
    wait_until("the idle WAL file is truncated", || wal_len(&path) == 0).await;
    store.apply(&load_batch(i)).await.unwrap();
    let expected = model((0..=i).flat_map(load_batch).collect::<Vec<_>>().iter());
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}

/// What one apply of [`load_batch`] may add to the WAL past the limit before the writer checks it: the batch
/// and a compaction slice, which rewrites at most every page of `kv` (2000 small entries).
const ONE_APPLY_OF_WAL: u64 = 512 << 10;

#[tokio::test]
async fn sqlite_the_wal_stays_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await;
    let mut largest = 0;
    let mut written = 0;
    let mut i = 0;
    // Far more WAL traffic than the hard limit: every batch rewrites the log's last pages, and compaction
    // rewrites `kv` pages.
    while written < 8 * BUSY_CHECKPOINTS.wal_limit_bytes {
        let batch = load_batch(i);
        store.apply(&batch).await.unwrap();
        written += batch.iter().map(|e| e.size() as u64).sum::<u64>();
        largest = largest.max(wal_len(&path));
        i += 1;
    }
    assert!(
        largest < BUSY_CHECKPOINTS.wal_limit_bytes + ONE_APPLY_OF_WAL,
        "the WAL grew to {largest} bytes, past the limit"
    );
    let expected = model((0..i).flat_map(load_batch).collect::<Vec<_>>().iter());
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_reader_pinning_the_wal_holds_the_writer_at_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cave.db");
    let store = std::sync::Arc::new(open_sqlite_with(dir.path(), BUSY_CHECKPOINTS).await);
    store.apply(&load_batch(0)).await.unwrap();

    // A long read transaction (an operator's shell, a backup) keeps every later frame in the WAL.
    let mut reader = side_connection(&path).await;
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log")
        .fetch_one(&mut reader)
        .await
        .unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut i = 1;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                store.apply(&load_batch(i)).await.unwrap();
                i += 1;
            }
            i
        }
    });
    // The WAL reaches the limit; then the writer waits in a TRUNCATE checkpoint for the reader (until its
    // busy timeout, then again on the next apply), so the WAL stops growing.
    let limit = BUSY_CHECKPOINTS.wal_limit_bytes;
    wait_until("the WAL reaches its limit", || wal_len(&path) >= limit).await;
    let mut largest = 0;
    for _ in 0..100 {
        largest = largest.max(wal_len(&path));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        largest < limit + ONE_APPLY_OF_WAL,
        "the WAL grew to {largest} bytes while pinned"
    );
    assert!(!writes.is_finished());

    // The reader goes: the TRUNCATE gets through and empties the WAL file (a WAL that merely starts over
    // would be cut back to `wal_restart_bytes` only), and the writes go on.
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    reader.close().await.unwrap();
    wait_until("the WAL file is truncated", || {
        wal_len(&path) < BUSY_CHECKPOINTS.wal_restart_bytes
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let batches = writes.await.unwrap();
    let expected = model((0..batches).flat_map(load_batch).collect::<Vec<_>>().iter());
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}

#[test]
fn prefix_successors_bound_exactly_the_prefixed_keys() {
    assert_eq!(prefix_successor(""), None);
    assert_eq!(prefix_successor("a/").as_deref(), Some("a0"));
    assert_eq!(prefix_successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
    assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
    assert_eq!(prefix_successor("é").as_deref(), Some("ê"));
}
