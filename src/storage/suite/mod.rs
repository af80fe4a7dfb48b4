//! The one test suite every [`Store`] must pass.
//!
//! Each check is an async function over `&dyn Store`; [`for_each_store!`] instantiates it as a test for
//! [`MemoryStore`] (module `memory`) and for [`SqliteStore`] in a temporary directory, twice: with the default
//! tuning (module `sqlite`: in these small tests every entry stays in the write log, so reads merge it) and
//! compacting after nearly every apply in tiny key ranges (module `sqlite_compacting`: entries move into `kv`
//! part way, a batch's keys split between ranges). So the stores cannot drift apart, and neither can the
//! SQLite store's two places for an entry. Checks that only make sense for one store are in modules of their own.
//!
//! Versions deliberately include values at and above 2^63: SQLite stores the `u64`s as bit-cast `i64`s, and
//! a signed comparison would order those before small versions.

mod audit;
mod basic;
mod checkpointer;
mod compaction;
mod docs;
mod full;
mod memory_only;
mod merge;
mod restart;
mod space;

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use sqlx::ConnectOptions;

use super::{Durability, SqliteStore, Store, StoreTuning};
use crate::crdt::{Entry, NodeId, Version};
use audit::{
    an_audit_record_is_replaced_by_its_id, audit_purge_is_bounded_and_ids_are_never_reused,
    audit_records_round_trip_and_filter, batches_of_every_size_persist_with_their_records,
};
use basic::{
    an_empty_batch_changes_nothing, close_makes_every_call_unavailable, concurrent_batches_all_persist,
    purge_removes_only_old_tombstones, round_trip, scan_matches_exactly_the_prefix, size_grows_with_the_data,
};
use docs::documents_keep_their_latest_state_and_the_epoch_decides;
use merge::{
    a_batch_larger_than_a_chunk_merges_like_the_model, an_older_version_never_overwrites_a_newer_one,
    duplicate_keys_in_one_batch_merge_in_order, equal_versions_resolve_like_precedence,
    versions_with_the_high_bit_set_order_as_unsigned,
};

const HIGH: u64 = 1 << 63;

/// One key and one prefix read through [`Store::load`], the only read a node makes of its store: the checks
/// say what a reopened node would see.
#[async_trait::async_trait]
trait LoadedReads {
    /// The stored entry of `key`, tombstone or not.
    async fn get(&self, key: &str) -> crate::Result<Option<Entry>>;
    /// Stored entries whose key starts with `prefix`, tombstones included, in key order.
    async fn scan(&self, prefix: &str) -> crate::Result<Vec<Entry>>;
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> LoadedReads for S {
    async fn get(&self, key: &str) -> crate::Result<Option<Entry>> {
        Ok(self.load().await?.into_iter().find(|e| e.key == key))
    }

    async fn scan(&self, prefix: &str) -> crate::Result<Vec<Entry>> {
        let all = self.load().await?;
        Ok(all.into_iter().filter(|e| e.key.starts_with(prefix)).collect())
    }
}

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
        let merged = match state.remove(entry.key.as_str()) {
            Some(current) => current.merge(entry.clone()),
            None => entry.clone(),
        };
        state.insert(entry.key.to_string(), merged);
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
    compact_threshold_bytes: u64::MAX,
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

/// `load` agrees with `expected`.
async fn holds_the_merge(
    store: &dyn Store,
    expected: &BTreeMap<String, Entry>,
) -> std::result::Result<(), TestCaseError> {
    // `load` is the one read a node makes of its store (at start-up); the suite's `get`/`scan` are derived
    // from it, so comparing it once covers them.
    let all: Vec<Entry> = expected.values().cloned().collect();
    prop_assert_eq!(store.load().await.unwrap(), all);
    Ok(())
}

/// A second connection to the store's file, as an operator's `sqlite3` shell would have.
async fn side_connection(path: &Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

/// Every read of `store` agrees with `expected`.
async fn reads_agree(store: &SqliteStore, expected: &BTreeMap<String, Entry>) {
    let result = holds_the_merge(store, expected).await;
    assert!(result.is_ok(), "{result:?}");
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
    audit_records_round_trip_and_filter,
    an_audit_record_is_replaced_by_its_id,
    audit_purge_is_bounded_and_ids_are_never_reused,
    batches_of_every_size_persist_with_their_records,
    documents_keep_their_latest_state_and_the_epoch_decides,
);
