//! Checks for [`SqliteStore`](crate::storage::SqliteStore) only: its SQL, the write log and the sweeps that fold
//! it into `kv`.

use sqlx::Connection;

use super::{
    load_batch, model, open_sqlite, open_sqlite_with, reads_agree, side_connection, v, value, LoadedReads, HIGH,
    NEVER_COMPACT,
};
use crate::crdt::Entry;
use crate::storage::sqlite::{COMPACT_FROM_SQL, COMPACT_RANGE_SQL, PURGE_HIGH_SQL, PURGE_LOW_SQL};
use crate::storage::{Store, StoreTuning};

#[tokio::test]
async fn sqlite_purge_and_sweeps_use_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(dir.path()).await;
    let mut side = side_connection(&dir.path().join("cave.db")).await;
    let plans = [
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
            batch.extend(order.into_iter().map(|e| Entry {
                key: key.clone().into(),
                ..e
            }));
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
    // The same batch upserted straight into `kv`: several versions of a key meet in one statement, in the
    // order of the batch; then replayed through the log, and upserted again over what `kv` holds.
    let dir = tempfile::tempdir().unwrap();
    let direct = StoreTuning {
        upsert_min_rows: batch.len(),
        ..NEVER_COMPACT
    };
    let store = open_sqlite_with(dir.path(), direct).await;
    store.apply(&batch).await.unwrap();
    assert_eq!(store.log_rows().await.unwrap(), 0, "a batch this large skips the log");
    reads_agree(&store, &expected).await;
    store.apply(&batch[..batch.len() - 1]).await.unwrap();
    store.apply(&batch).await.unwrap();
    reads_agree(&store, &expected).await;
    store.compact().await.unwrap();
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_a_large_batch_skips_the_log_and_merges_with_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = StoreTuning {
        upsert_min_rows: 4,
        ..NEVER_COMPACT
    };
    let store = open_sqlite_with(dir.path(), tuning).await;
    // In the log: rows the large batch will find older, newer and equal.
    let logged = [
        value("b", b"logged, older", v(3, 1)),
        value("c", b"logged, newer", v(9, 1)),
        Entry::tombstone("d", v(5, 1)),
    ];
    store.apply(&logged).await.unwrap();
    assert_eq!(store.log_rows().await.unwrap(), logged.len());
    // Out of key order, as a caller may hand it: the store sorts it.
    let large = [
        value("e", b"new", v(1, 1)),
        value("c", b"older than the log", v(4, 1)),
        value("b", b"newer than the log", v(6, 1)),
        value("d", b"equal version, not deleted: loses", v(5, 1)),
        value("a", b"new", v(HIGH, 1)),
    ];
    store.apply(&large).await.unwrap();
    assert_eq!(
        store.log_rows().await.unwrap(),
        logged.len(),
        "the large batch went to kv"
    );
    let expected = model(logged.iter().chain(&large));
    assert_eq!(expected["c"], logged[1]);
    assert!(expected["d"].deleted);
    reads_agree(&store, &expected).await;
    // The sweep folds the log's rows over the upserted ones: each key keeps its winner.
    store.compact().await.unwrap();
    assert_eq!(store.log_rows().await.unwrap(), 0);
    reads_agree(&store, &expected).await;
    // An older large batch changes nothing; the file holds the same after a reopen.
    let stale: Vec<Entry> = large
        .iter()
        .map(|e| Entry {
            version: v(0, 0),
            ..e.clone()
        })
        .collect();
    store.apply(&stale).await.unwrap();
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
    let store = open_sqlite_with(dir.path(), tuning).await;
    reads_agree(&store, &expected).await;
    store.close().await.unwrap();
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
