use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use crate::crdt::ManualTime;
use crate::secrets::{MasterKey, SECRETS_DOMAIN};
use crate::storage::{AuditRecord, MemoryStore, Store};

async fn open_with(store: Arc<dyn Store>) -> Db {
    let hlc = Arc::new(Hlc::new(ManualTime::new(1_000)));
    Db::open(
        store,
        NodeId(7),
        hlc,
        MasterKey::generate().sealer(SECRETS_DOMAIN),
        crate::metrics::Metrics::new(),
    )
    .await
    .unwrap()
}

async fn open() -> Db {
    open_with(Arc::new(MemoryStore::new())).await
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        content_type: "text/plain".into(),
        secret: false,
        cas: None,
        ttl: None,
        lease: None,
    }
}

fn put_cas(key: &str, value: &str, cas: Version) -> Op {
    match put(key, value) {
        Op::Put {
            key,
            value,
            content_type,
            secret,
            ..
        } => Op::Put {
            key,
            value,
            content_type,
            secret,
            cas: Some(cas),
            ttl: None,
            lease: None,
        },
        _ => unreachable!(),
    }
}

fn written(outcomes: Vec<Outcome>) -> Entry {
    match outcomes.into_iter().next() {
        Some(Outcome::Written(e)) | Some(Outcome::Deleted { tombstone: e, .. }) => e,
        other => panic!("expected a write, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_are_readable_and_versions_increase() {
    let db = open().await;
    let a = written(db.write(vec![put("k", "1")]).await.unwrap());
    let b = written(db.write(vec![put("k", "2")]).await.unwrap());
    assert!(b.version > a.version);
    assert_eq!(b.version.node, NodeId(7));
    assert_eq!(db.get("k").unwrap().value, "2");
}

#[tokio::test]
async fn a_write_always_beats_the_version_it_overwrites_even_from_the_future() {
    let db = open().await;
    let future = Version::new(u64::MAX / 4, NodeId(1));
    db.merge(vec![Entry::value("k", "remote", future)]).await.unwrap();
    let local = written(db.write(vec![put("k", "local")]).await.unwrap());
    assert!(local.version > future);
    assert_eq!(db.get("k").unwrap().value, "local");
}

#[tokio::test]
async fn cas_create_only_and_exact_version() {
    let db = open().await;
    let v1 = written(db.write(vec![put_cas("k", "1", Version::ZERO)]).await.unwrap()).version;
    let err = db.write(vec![put_cas("k", "x", Version::ZERO)]).await.unwrap_err();
    assert!(matches!(err, Error::PreconditionFailed(_)), "{err}");
    let v2 = written(db.write(vec![put_cas("k", "2", v1)]).await.unwrap()).version;
    assert!(matches!(
        db.write(vec![put_cas("k", "3", v1)]).await,
        Err(Error::PreconditionFailed(_))
    ));
    db.write(vec![Op::Delete {
        key: "k".into(),
        cas: Some(v2),
    }])
    .await
    .unwrap();
    // Deleted counts as absent for cas=0.
    db.write(vec![put_cas("k", "again", Version::ZERO)]).await.unwrap();
}

#[tokio::test]
async fn concurrent_create_only_writes_have_exactly_one_winner() {
    let db = open().await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(vec![put_cas("race", &i.to_string(), Version::ZERO)])
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += t.await.unwrap() as usize;
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn a_failing_op_rejects_the_whole_batch() {
    let db = open().await;
    let v = written(db.write(vec![put("a", "1")]).await.unwrap()).version;
    let bad = Version::new(v.hlc + 99, NodeId(7));
    let result = db.write(vec![put("b", "2"), put_cas("a", "3", bad)]).await;
    assert!(result.is_err());
    assert!(db.get("b").is_none());
    assert_eq!(db.get("a").unwrap().value, "1");
}

#[tokio::test]
async fn gets_in_a_batch_see_earlier_ops_in_request_order() {
    let db = open().await;
    let outcomes = db
        .write(vec![
            Op::Get { key: "k".into() },
            put("k", "v"),
            Op::Get { key: "k".into() },
            Op::Delete {
                key: "k".into(),
                cas: None,
            },
            Op::Get { key: "k".into() },
        ])
        .await
        .unwrap();
    assert!(matches!(&outcomes[0], Outcome::Got(None)));
    assert!(matches!(&outcomes[2], Outcome::Got(Some(e)) if e.value == "v"));
    assert!(matches!(&outcomes[3], Outcome::Deleted { tombstone, existed: true } if tombstone.deleted));
    assert!(matches!(&outcomes[4], Outcome::Got(None)));
}

#[tokio::test]
async fn a_delete_says_whether_the_key_was_live() {
    let db = open().await;
    let delete = |key: &str| Op::Delete {
        key: key.into(),
        cas: None,
    };
    let deleted = |outcomes: Vec<Outcome>| match outcomes.into_iter().next() {
        Some(Outcome::Deleted { tombstone, existed }) => (tombstone, existed),
        other => panic!("expected a delete, got {other:?}"),
    };
    let (never, existed) = deleted(db.write(vec![delete("never")]).await.unwrap());
    assert!(never.deleted && !existed, "a key that never existed");
    written(db.write(vec![put("k", "v")]).await.unwrap());
    let (first, existed) = deleted(db.write(vec![delete("k")]).await.unwrap());
    assert!(existed, "a live key");
    let (again, existed) = deleted(db.write(vec![delete("k")]).await.unwrap());
    assert!(
        !existed && again.version == first.version,
        "a deleted key keeps its first tombstone"
    );
    // Within one batch, a delete sees the put before it.
    let outcomes = db.write(vec![put("b", "v"), delete("b")]).await.unwrap();
    assert!(matches!(&outcomes[1], Outcome::Deleted { existed: true, .. }));
}

#[tokio::test]
async fn a_batch_error_names_the_op_that_caused_it() {
    let db = open().await;
    let stale = Version::new(1, db.node_id());
    let batch = || {
        vec![
            put("a", "1"),
            Op::Delete {
                key: "b".into(),
                cas: Some(stale),
            },
        ]
    };
    let err = db.write_batch(batch()).await.unwrap_err();
    assert!(
        matches!(&err, Error::PreconditionFailed(m) if m.starts_with("op 1: cas failed")),
        "{err:?}"
    );
    let err = db.write(batch()).await.unwrap_err();
    assert!(
        matches!(&err, Error::PreconditionFailed(m) if m.starts_with("cas failed")),
        "{err:?}"
    );
    assert!(db.get("a").is_none(), "nothing of a failed batch is applied");
}

#[tokio::test]
async fn merge_applies_only_newer_entries() {
    let db = open().await;
    let new = Entry::value("k", "new", Version::new(50, NodeId(1)));
    let old = Entry::value("k", "old", Version::new(40, NodeId(9)));
    assert_eq!(db.merge(vec![new.clone()]).await.unwrap(), 1);
    assert_eq!(db.get("k").unwrap(), new);
    assert_eq!(db.merge(vec![old]).await.unwrap(), 0);
    assert_eq!(db.merge(vec![new]).await.unwrap(), 0);
    assert_eq!(db.get("k").unwrap().value, "new");
    // The clock moved past what it observed.
    assert!(db.hlc().peek() >= 50);
}

#[tokio::test]
async fn a_bulk_merge_publishes_its_values_by_reference() {
    let db = open().await;
    let mut events = db.subscribe();
    let version = Version::new(50, NodeId(1));
    // A small merge's event holds its entry.
    let small = Entry::value("small", "v", version);
    db.merge(vec![small.clone()]).await.unwrap();
    let change = events.recv().await.unwrap();
    assert!(change.holds_entry());
    assert_eq!(db.resolve(&change), Some(small));
    // A bulk merge's value events name key and version; its tombstones still carry themselves.
    let mut bulk: Vec<Entry> = (0..writer::BULK_MERGE_ENTRIES)
        .map(|i| Entry::value(format!("bulk/{i:05}"), format!("value {i}"), version))
        .collect();
    bulk.push(Entry::tombstone("bulk/gone", version));
    assert_eq!(db.merge(bulk.clone()).await.unwrap(), bulk.len());
    let mut changes = Vec::new();
    for _ in 0..bulk.len() {
        changes.push(events.recv().await.unwrap());
    }
    let held: Vec<&str> = changes
        .iter()
        .filter(|c| c.holds_entry())
        .map(|c| c.key.as_str())
        .collect();
    assert_eq!(held, ["bulk/gone"]);
    // Every one resolves to the entry merged.
    let mut expected = bulk;
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    let mut resolved = db.resolve_all(changes.iter().map(|c| &**c));
    resolved.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(resolved, expected);
}

#[tokio::test]
async fn a_bulk_merge_keeps_the_greatest_of_its_duplicates_and_of_what_is_held() {
    let db = open().await;
    let at = |hlc| Version::new(hlc, NodeId(1));
    // Held before: one key the bulk will find newer, one it will find older.
    db.merge(vec![
        Entry::value("held/newer", "held", at(90)),
        Entry::value("held/older", "held", at(10)),
    ])
    .await
    .unwrap();
    // Filler up to the bulk size, then the interesting ones out of key order and with duplicates.
    let mut bulk: Vec<Entry> = (0..writer::BULK_MERGE_ENTRIES)
        .map(|i| Entry::value(format!("fill/{i:05}"), "f", at(20)))
        .collect();
    bulk.extend([
        Entry::value("dup/rising", "first", at(30)),
        Entry::value("held/newer", "loses to the held one", at(50)),
        Entry::value("dup/falling", "kept", at(40)),
        Entry::value("dup/rising", "second, kept", at(31)),
        Entry::value("held/older", "beats the held one", at(50)),
        Entry::value("dup/falling", "older, dropped", at(39)),
        Entry::tombstone("dup/rising", at(29)),
    ]);
    let applied = db.merge(bulk).await.unwrap();
    // Every filler, both writes of dup/rising (the second supersedes the first), dup/falling once, held/older.
    assert_eq!(applied, writer::BULK_MERGE_ENTRIES + 4);
    assert_eq!(db.get("dup/rising").unwrap().value, "second, kept");
    assert_eq!(db.get("dup/falling").unwrap().value, "kept");
    assert_eq!(db.get("held/newer").unwrap().value, "held");
    assert_eq!(db.get("held/older").unwrap().value, "beats the held one");
    assert_eq!(db.get("fill/00000").unwrap().value, "f");
    // What the map holds is what the store holds.
    let stored = db.shared.store.load().await.unwrap();
    for key in ["dup/rising", "dup/falling", "held/newer", "held/older"] {
        let entry = stored.iter().find(|e| e.key == key).unwrap();
        assert_eq!(Some(entry), db.shared.state.read().get(key));
    }
    assert!(db.hlc().peek() >= 90);
}

#[tokio::test]
async fn an_imports_events_say_so_and_a_merges_do_not() {
    let db = open().await;
    let mut events = db.subscribe();
    let version = Version::new(50, NodeId(0xb1));
    db.merge(vec![Entry::value("merged", "v", version)]).await.unwrap();
    let bulk: Vec<Entry> = (0..writer::BULK_MERGE_ENTRIES)
        .map(|i| Entry::value(format!("imported/{i:05}"), "v", version))
        .collect();
    db.import(vec![Entry::value("imported/small", "v", version)])
        .await
        .unwrap();
    db.import(bulk).await.unwrap();
    db.write(vec![put("written", "v")]).await.unwrap();
    let merged = events.recv().await.unwrap();
    assert!(!merged.imported);
    let small = events.recv().await.unwrap();
    assert!(small.imported && small.holds_entry());
    for _ in 0..writer::BULK_MERGE_ENTRIES {
        let change = events.recv().await.unwrap();
        assert!(change.imported && !change.holds_entry(), "{}", change.key);
    }
    let written = events.recv().await.unwrap();
    assert_eq!(written.key, "written");
    assert!(!written.imported);
}

#[tokio::test]
async fn prefix_delete_tombstones_the_folder_only() {
    let db = open().await;
    db.write(vec![put("a/x", "1"), put("a/y/z", "2"), put("ab", "3"), put("a", "4")])
        .await
        .unwrap();
    let outcomes = db.write(vec![Op::DeletePrefix { prefix: "a/".into() }]).await.unwrap();
    assert!(matches!(&outcomes[0], Outcome::DeletedPrefix(t) if t.len() == 2));
    assert!(db.get("a/x").is_none() && db.get("a/y/z").is_none());
    assert!(db.get("ab").is_some() && db.get("a").is_some());
    assert_eq!(db.stats().tombstones, 2);
}

#[tokio::test]
async fn deleting_twice_keeps_the_first_tombstone() {
    let db = open().await;
    db.write(vec![put("k", "v")]).await.unwrap();
    let t1 = written(
        db.write(vec![Op::Delete {
            key: "k".into(),
            cas: None,
        }])
        .await
        .unwrap(),
    );
    let t2 = written(
        db.write(vec![Op::Delete {
            key: "k".into(),
            cas: None,
        }])
        .await
        .unwrap(),
    );
    assert_eq!(t1.version, t2.version);
}

#[tokio::test]
async fn watchers_see_every_committed_change_in_order() {
    let db = open().await;
    let mut events = db.subscribe();
    db.write(vec![put("a", "1"), put("a", "2")]).await.unwrap();
    db.write(vec![Op::Delete {
        key: "a".into(),
        cas: None,
    }])
    .await
    .unwrap();
    let got: Vec<(String, bool)> = [events.recv().await, events.recv().await, events.recv().await]
        .into_iter()
        .map(|e| {
            db.resolve(&e.unwrap())
                .expect("within the budget an event holds its entry")
        })
        .map(|e| (String::from_utf8_lossy(&e.value).into_owned(), e.deleted))
        .collect();
    assert_eq!(got, vec![("1".into(), false), ("2".into(), false), ("".into(), true)]);
}

fn big_put(key: &str, bytes: usize) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::from(vec![b'x'; bytes]),
        content_type: "text/plain".into(),
        secret: false,
        cas: None,
        ttl: None,
        lease: None,
    }
}

#[tokio::test]
async fn events_an_idle_subscriber_holds_stay_within_the_value_budget() {
    let db = open().await;
    let mut idle = db.subscribe();
    // Three times the budget in values, one key overwritten: what the ring holds must not grow with it.
    let value_bytes = 1 << 20;
    let writes = 3 * EVENT_VALUE_BUDGET_BYTES / value_bytes;
    for _ in 0..writes {
        db.write(vec![big_put("big", value_bytes)]).await.unwrap();
    }
    let held = db.shared.event_bytes.load(Ordering::Acquire);
    assert!(held <= EVENT_VALUE_BUDGET_BYTES, "events hold {held} bytes");
    // Events past the budget name the change only; the superseded ones resolve to nothing and the last one
    // to the current entry.
    let mut by_reference = 0;
    let mut resolved = Vec::new();
    for _ in 0..writes {
        let change = idle.recv().await.unwrap();
        by_reference += usize::from(!change.holds_entry());
        if let Some(entry) = db.resolve(&change) {
            resolved.push(entry.version);
        }
    }
    assert!(
        by_reference >= writes - EVENT_VALUE_BUDGET_BYTES / value_bytes,
        "{by_reference}"
    );
    let last = db.get("big").unwrap().version;
    assert_eq!(resolved.last(), Some(&last));
    assert_eq!(
        resolved.len(),
        writes - by_reference + 1,
        "held events and the current one resolve"
    );
    // Once read (and so dropped from the ring), the bytes are given back.
    assert_eq!(db.shared.event_bytes.load(Ordering::Acquire), 0);
}

#[tokio::test]
async fn a_delete_event_resolves_after_its_tombstone_was_purged() {
    let db = open().await;
    db.write(vec![put("k", "v")]).await.unwrap();
    let mut events = db.subscribe();
    let tomb = written(
        db.write(vec![Op::Delete {
            key: "k".into(),
            cas: None,
        }])
        .await
        .unwrap(),
    );
    db.purge_tombstones(tomb.version.hlc + 1).await.unwrap();
    let change = events.recv().await.unwrap();
    assert_eq!(db.resolve(&change), Some(tomb));
}

#[tokio::test]
async fn a_subscriber_past_the_ring_is_told_it_lagged() {
    let db = open().await;
    let mut events = db.subscribe();
    let ops: Vec<Op> = (0..EVENT_BUFFER + 10).map(|i| put(&format!("k{i}"), "v")).collect();
    db.write(ops).await.unwrap();
    assert!(matches!(
        events.recv().await,
        Err(broadcast::error::RecvError::Lagged(10))
    ));
}

#[tokio::test]
async fn client_pages_seek_and_pass_over_reserved_keys() {
    let db = open().await;
    let mut remote = Vec::new();
    for (i, key) in ["_system", "_system.x", "_system/a", "_system/b/c", "_system0", "a", "z"]
        .iter()
        .enumerate()
    {
        remote.push(Entry::value(*key, "v", Version::new(100 + i as u64, NodeId(9))));
    }
    db.merge(remote).await.unwrap();
    db.write(vec![Op::Delete {
        key: "a".into(),
        cas: None,
    }])
    .await
    .unwrap();
    let keys = |after: Option<&str>, limit, tombstones| {
        db.page("", after, limit, tombstones)
            .into_iter()
            .map(|e| e.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(None, 10, true), ["_system.x", "_system0", "a", "z"]);
    assert_eq!(keys(None, 10, false), ["_system.x", "_system0", "z"]);
    assert_eq!(keys(None, 1, true), ["_system.x"]);
    assert_eq!(keys(Some("_system.x"), 1, true), ["_system0"]);
    assert_eq!(keys(Some("_system/a"), 10, true), ["_system0", "a", "z"]);
    assert_eq!(keys(Some("z"), 10, true), Vec::<String>::new());
    assert_eq!(db.children(""), ["_system.x", "_system0", "z"]);
    // A prefix delete (the client's recursive delete) spares reserved keys.
    db.write(vec![Op::DeletePrefix { prefix: String::new() }])
        .await
        .unwrap();
    assert!(db.get("_system/a").is_some() && db.get("_system").is_some());
    assert!(db.get("z").is_none());
}

#[tokio::test]
async fn writes_survive_reopening_the_same_store() {
    let store = MemoryStore::new();
    let db = open_with(Arc::new(store.clone())).await;
    db.write(vec![put("k", "v")]).await.unwrap();
    db.close().await.unwrap();
    assert!(matches!(
        db.write(vec![put("k", "x")]).await,
        Err(Error::Unavailable(_))
    ));
    db.close().await.unwrap();
    let reopened = open_with(Arc::new(store.reopen())).await;
    assert_eq!(reopened.get("k").unwrap().value, "v");
}

#[tokio::test]
async fn purge_drops_old_tombstones_only() {
    let db = open().await;
    db.write(vec![put("a", "1"), put("b", "2")]).await.unwrap();
    let ta = written(
        db.write(vec![Op::Delete {
            key: "a".into(),
            cas: None,
        }])
        .await
        .unwrap(),
    );
    db.write(vec![Op::Delete {
        key: "b".into(),
        cas: None,
    }])
    .await
    .unwrap();
    assert_eq!(db.purge_tombstones(ta.version.hlc + 1).await.unwrap(), 1);
    let entry = |key: &str| db.with_state(|state| state.get(key).cloned());
    assert!(entry("a").is_none());
    assert!(entry("b").is_some_and(|e| e.deleted));
}

/// A store whose commits fail on demand.
struct FlakyStore {
    inner: MemoryStore,
    fail: AtomicBool,
}

#[async_trait]
impl Store for FlakyStore {
    async fn load(&self) -> Result<Vec<Entry>> {
        self.inner.load().await
    }
    async fn apply_with_audit(&self, entries: &[Entry], audit: &[AuditRecord]) -> Result<usize> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::internal("disk full"));
        }
        self.inner.apply_with_audit(entries, audit).await
    }
    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.inner.audit_scan(after, limit).await
    }
    async fn audit_time_at(&self, id: u64) -> Result<Option<u64>> {
        self.inner.audit_time_at(id).await
    }
    async fn audit_purge(&self, before_ms: u64, max_rows: usize) -> Result<usize> {
        self.inner.audit_purge(before_ms, max_rows).await
    }
    async fn audit_last_id(&self) -> Result<u64> {
        self.inner.audit_last_id().await
    }
    async fn purge_tombstones(&self, before_hlc: u64) -> Result<Vec<String>> {
        self.inner.purge_tombstones(before_hlc).await
    }
    async fn size_bytes(&self) -> Result<u64> {
        self.inner.size_bytes().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[tokio::test]
async fn a_failed_commit_is_reported_and_never_visible() {
    let store = Arc::new(FlakyStore {
        inner: MemoryStore::new(),
        fail: AtomicBool::new(false),
    });
    let db = open_with(store.clone()).await;
    db.write(vec![put("k", "old")]).await.unwrap();
    store.fail.store(true, Ordering::SeqCst);
    let mut events = db.subscribe();
    assert!(matches!(db.write(vec![put("k", "new")]).await, Err(Error::Internal(_))));
    assert_eq!(db.get("k").unwrap().value, "old");
    assert!(events.try_recv().is_err());
    store.fail.store(false, Ordering::SeqCst);
    db.write(vec![put("k", "new")]).await.unwrap();
    assert_eq!(db.get("k").unwrap().value, "new");
}

#[tokio::test]
async fn a_full_disk_fails_the_whole_group_and_is_reported_until_a_commit_succeeds() {
    let store = MemoryStore::new();
    let db = open_with(Arc::new(store.clone())).await;
    db.write(vec![put("k", "old")]).await.unwrap();
    store.set_full(true);
    let mut events = db.subscribe();
    // Concurrent writes, committed in one or more groups: every one of them fails, none is visible.
    let writes = (0..8).map(|i| {
        let db = db.clone();
        async move { db.write(vec![put(&format!("k{}", i % 2), "new")]).await }
    });
    for result in futures::future::join_all(writes).await {
        assert!(matches!(result, Err(Error::StorageFull(_))), "{result:?}");
    }
    assert!(db.storage_full());
    assert_eq!(db.get("k").unwrap().value, "old");
    assert!(db.get("k1").is_none());
    assert!(events.try_recv().is_err());
    store.set_full(false);
    db.write(vec![put("k", "new")]).await.unwrap();
    assert!(!db.storage_full());
    assert_eq!(db.get("k").unwrap().value, "new");
    let stored = store.reopen().load().await.unwrap();
    assert_eq!(stored.iter().find(|e| e.key == "k").unwrap().value, "new");
}

/// A key at the greatest version there is cannot be overwritten: the write is an error, never acknowledged
/// with a version that silently loses (before, the HLC saturated and the "newer" write tied and lost).
#[tokio::test]
async fn a_write_that_cannot_get_a_greater_version_is_refused() {
    let db = open().await;
    let top = Version::new(u64::MAX, NodeId(9));
    db.merge(vec![Entry::value("k", "pinned", top)]).await.unwrap();
    for ops in [
        vec![put("k", "later")],
        vec![Op::Delete {
            key: "k".into(),
            cas: None,
        }],
        vec![put("other", "x")],
    ] {
        let err = db.write(ops).await.unwrap_err();
        assert_eq!(err.code(), "clock_skew", "{err}");
    }
    assert_eq!(db.get("k").map(|e| e.version), Some(top));
    assert_eq!(db.get("other"), None);
}

/// While the clock is fenced, local writes are refused (reads and merges go on); lifting it resumes them.
#[tokio::test]
async fn a_fenced_clock_refuses_local_writes_only() {
    let db = open().await;
    db.write(vec![put("k", "v1")]).await.unwrap();
    db.hlc().set_fence(Some(30_000));
    let err = db.write(vec![put("k", "v2")]).await.unwrap_err();
    assert_eq!(err.code(), "clock_skew");
    assert!(err.to_string().contains("30000 ms"), "{err}");
    assert_eq!(db.get("k").unwrap().value, Bytes::from("v1"));
    let remote = Entry::value("r", "remote", Version::new(1 << 16, NodeId(9)));
    assert_eq!(db.merge(vec![remote.clone()]).await.unwrap(), 1);
    assert_eq!(db.get("r").unwrap(), remote);
    db.hlc().set_fence(None);
    db.write(vec![put("k", "v3")]).await.unwrap();
    assert_eq!(db.get("k").unwrap().value, Bytes::from("v3"));
}
