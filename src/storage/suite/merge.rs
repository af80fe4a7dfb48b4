//! Merge by version: the checks every store runs, then the same property tested over random batches.

use proptest::prelude::*;

use super::{apply_changing, holds_the_merge, model, open_sqlite, open_sqlite_with, v, value, LoadedReads, HIGH};
use crate::crdt::Entry;
use crate::storage::{MemoryStore, Store, StoreTuning};

pub(super) async fn an_older_version_never_overwrites_a_newer_one(store: &dyn Store) {
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

pub(super) async fn equal_versions_resolve_like_precedence(store: &dyn Store) {
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
            content_type: "".into(),
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
                key: key.clone().into(),
                ..a.clone()
            };
            let b = Entry {
                key: key.clone().into(),
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

pub(super) async fn versions_with_the_high_bit_set_order_as_unsigned(store: &dyn Store) {
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
                key: key.clone().into(),
                ..low
            };
            let high = Entry {
                key: key.clone().into(),
                ..high
            };
            apply_changing(store, &[low, high.clone()], 2).await;
            assert_eq!(store.get(&key).await.unwrap(), Some(high), "{lower} then {higher}");
        }
    }
}

pub(super) async fn duplicate_keys_in_one_batch_merge_in_order(store: &dyn Store) {
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

pub(super) async fn a_batch_larger_than_a_chunk_merges_like_the_model(store: &dyn Store) {
    // Batches of 3000 and 5000 entries: for the SQLite store with its default tuning, an append of one full
    // chunk (2048 rows) plus a remainder, then an upsert past the log of two full chunks plus a remainder;
    // with repeated keys across chunk boundaries and versions going up and down.
    let mut applied = Vec::new();
    for (size, salt) in [(3000u64, 0u64), (5000, 1)] {
        let batch: Vec<Entry> = (0..size)
            .map(|i| {
                let hlc = (i * 7919 + salt * 104_729) % 1000 + if i % 3 == 0 { HIGH } else { 0 };
                let key = format!("big/{:03}", i % 700);
                if i % 11 == 0 {
                    Entry::tombstone(key, v(hlc, i))
                } else {
                    value(&key, &i.to_be_bytes(), v(hlc, i))
                }
            })
            .collect();
        let changed = store.apply(&batch).await.unwrap();
        assert!(changed <= batch.len(), "{changed} changes");
        if applied.is_empty() {
            // Into an empty store every key changes at least once.
            assert!(changed >= model(&batch).len(), "{changed} changes");
        }
        applied.extend(batch);
        let state = model(&applied);
        assert_eq!(store.load().await.unwrap(), state.into_values().collect::<Vec<_>>());
    }
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
    // Expiries on both sides of 2^63 too: the compaction compares them unsigned, like `Option<u64>`.
    let expires = prop::option::of(prop::sample::select(vec![0, 1, HIGH, u64::MAX]));
    let lease = prop::option::of(prop::sample::select(vec![1, 2, HIGH, u64::MAX]));
    (
        key,
        hlc,
        node,
        any::<bool>(),
        bytes,
        content_type,
        any::<bool>(),
        (expires, lease),
    )
        .prop_map(
            |(key, hlc, node, deleted, bytes, content_type, secret, (expires, lease))| {
                let version = v(hlc, node);
                let lease = lease.and_then(crate::crdt::LeaseId::new);
                let expires = expires.map(crate::crdt::expiry::at);
                if deleted {
                    Entry {
                        expires,
                        lease,
                        ..Entry::tombstone(key, version)
                    }
                } else {
                    Entry {
                        content_type: content_type.into(),
                        secret,
                        expires,
                        lease,
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
    /// the batches and several versions of a key meet in `kv`, in the log and in one slice), and batches
    /// large enough to be upserted into `kv` past the log (any size from one entry up), change nothing a
    /// read sees; neither does a final full compaction, nor reopening the file.
    #[test]
    fn sqlite_applies_converge_with_compaction_mid_way(
        batches in arb_batches(),
        threshold in 0usize..12,
        slice in 1usize..6,
        upsert_min in 1usize..16,
    ) {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let tuning = StoreTuning {
                compact_threshold_rows: threshold,
                compact_slice_rows: slice,
                upsert_min_rows: upsert_min,
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
