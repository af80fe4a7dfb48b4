//! The audit table: records commit atomically with entries, read back in id order with every filter, are
//! replaced by id, purged by age in bounded batches, and ids are never reused.

use super::{open_sqlite, v, value};
use crate::audit::query::{read, AuditQuery};
use crate::crdt::NodeId;
use crate::error::Error;
use crate::storage::suite::LoadedReads;
use crate::storage::{AuditRecord, MemoryStore, Store};

pub(super) fn record(id: u64, time_ms: u64, accessor: &str) -> AuditRecord {
    AuditRecord {
        id,
        time_ms,
        node: NodeId(u64::MAX),
        accessor: accessor.to_string(),
        method: "PUT".to_string(),
        route: "/api/v1/kv/{*key}".to_string(),
        key: Some(format!("k/{id}")),
        status: 200,
        remote_addr: id.is_multiple_of(2).then(|| "127.0.0.1:4242".to_string()),
    }
}

fn all(after: u64) -> AuditQuery {
    AuditQuery {
        after,
        since_ms: None,
        accessor: None,
        limit: 1000,
    }
}

fn ids(records: &[AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

/// Records written with and without entries read back exactly, in id order, filtered and paged; the
/// store's primitives agree.
pub(super) async fn audit_records_round_trip_and_filter(store: &dyn Store) {
    assert_eq!(store.audit_last_id().await.unwrap(), 0);
    assert!(read(store, &all(0)).await.unwrap().records.is_empty());
    let records: Vec<AuditRecord> = (1..=10u64)
        .map(|id| record(id, 1000 + id, if id.is_multiple_of(3) { "alice" } else { "anonymous" }))
        .collect();
    store
        .apply_with_audit(&[value("a", b"x", v(1, 1))], &records[..4])
        .await
        .unwrap();
    store.apply_with_audit(&[], &records[4..]).await.unwrap();
    assert_eq!(
        store.get("a").await.unwrap().map(|e| e.value),
        Some(b"x".to_vec().into())
    );
    assert_eq!(read(store, &all(0)).await.unwrap().records, records);
    assert_eq!(store.audit_last_id().await.unwrap(), 10);
    assert_eq!(store.audit_scan(8, 5).await.unwrap(), records[8..]);
    assert_eq!(store.audit_time_at(0).await.unwrap(), Some(1001));
    assert_eq!(store.audit_time_at(7).await.unwrap(), Some(1007));
    assert_eq!(store.audit_time_at(11).await.unwrap(), None);

    let page = |after, limit| AuditQuery { limit, ..all(after) };
    assert_eq!(ids(&read(store, &page(0, 3)).await.unwrap().records), [1, 2, 3]);
    assert_eq!(ids(&read(store, &page(3, 3)).await.unwrap().records), [4, 5, 6]);
    assert_eq!(ids(&read(store, &page(9, 3)).await.unwrap().records), [10]);
    assert!(read(store, &page(10, 3)).await.unwrap().records.is_empty());

    let since = AuditQuery {
        since_ms: Some(1007),
        ..all(0)
    };
    assert_eq!(ids(&read(store, &since).await.unwrap().records), [7, 8, 9, 10]);
    let alice = AuditQuery {
        accessor: Some("alice".into()),
        ..all(0)
    };
    assert_eq!(ids(&read(store, &alice).await.unwrap().records), [3, 6, 9]);
    let both = AuditQuery {
        accessor: Some("alice".into()),
        since_ms: Some(1004),
        limit: 1,
        after: 0,
    };
    assert_eq!(ids(&read(store, &both).await.unwrap().records), [6]);
    let nobody = AuditQuery {
        accessor: Some("bob".into()),
        ..all(0)
    };
    assert!(read(store, &nobody).await.unwrap().records.is_empty());
}

/// A record written again under its id replaces the stored one (the request's final status).
pub(super) async fn an_audit_record_is_replaced_by_its_id(store: &dyn Store) {
    store
        .apply_with_audit(&[], &[record(1, 5, "a"), record(2, 6, "a")])
        .await
        .unwrap();
    let corrected = AuditRecord {
        status: 412,
        accessor: "b".into(),
        ..record(1, 5, "a")
    };
    store
        .apply_with_audit(&[], std::slice::from_ref(&corrected))
        .await
        .unwrap();
    assert_eq!(
        read(store, &all(0)).await.unwrap().records,
        [corrected, record(2, 6, "a")]
    );
}

/// Purging deletes only records older than the bound, at most the batch size at a time, oldest first; the
/// greatest id is remembered after every record is gone.
pub(super) async fn audit_purge_is_bounded_and_ids_are_never_reused(store: &dyn Store) {
    let records: Vec<AuditRecord> = (1..=25u64).map(|id| record(id, id * 10, "x")).collect();
    store.apply_with_audit(&[], &records).await.unwrap();
    assert_eq!(store.audit_purge(105, 4).await.unwrap(), 4);
    assert_eq!(ids(&read(store, &all(0)).await.unwrap().records)[0], 5);
    assert_eq!(store.audit_purge(105, 100).await.unwrap(), 6);
    assert_eq!(ids(&read(store, &all(0)).await.unwrap().records)[0], 11);
    assert_eq!(store.audit_purge(105, 100).await.unwrap(), 0);
    assert_eq!(store.audit_purge(u64::MAX, 100).await.unwrap(), 15);
    assert!(read(store, &all(0)).await.unwrap().records.is_empty());
    assert_eq!(store.audit_last_id().await.unwrap(), 25);
}

/// A full disk refuses a batch of audit records alone, stores none of a mixed batch, and takes them again
/// once there is room.
#[tokio::test]
async fn memory_a_full_disk_refuses_audit_records() {
    let store = MemoryStore::new();
    store.set_full(true);
    let refused = store.apply_with_audit(&[], &[record(1, 1, "x")]).await;
    assert!(matches!(refused, Err(Error::StorageFull(_))), "{refused:?}");
    let refused = store
        .apply_with_audit(&[value("a", b"x", v(1, 1))], &[record(2, 1, "x")])
        .await;
    assert!(matches!(refused, Err(Error::StorageFull(_))), "{refused:?}");
    assert!(read(&store, &all(0)).await.unwrap().records.is_empty());
    assert_eq!(store.get("a").await.unwrap(), None);
    store.set_full(false);
    store.apply_with_audit(&[], &[record(3, 1, "x")]).await.unwrap();
    assert_eq!(ids(&read(&store.reopen(), &all(0)).await.unwrap().records), [3]);
}

/// The same on SQLite: a statement past the page limit fails the whole transaction, entries and records.
#[tokio::test]
async fn sqlite_a_full_disk_refuses_audit_records_with_their_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(dir.path()).await;
    store.apply_with_audit(&[], &[record(1, 1, "x")]).await.unwrap();
    store
        .set_max_page_count(store.page_count().await.unwrap())
        .await
        .unwrap();
    let big: Vec<AuditRecord> = (2..400u64)
        .map(|id| AuditRecord {
            route: "r".repeat(1000),
            ..record(id, 1, "x")
        })
        .collect();
    let refused = store.apply_with_audit(&[value("a", &[7; 4096], v(1, 1))], &big).await;
    assert!(matches!(refused, Err(Error::StorageFull(_))), "{refused:?}");
    store.set_max_page_count(1 << 30).await.unwrap();
    assert_eq!(ids(&read(&store, &all(0)).await.unwrap().records), [1]);
    assert_eq!(store.get("a").await.unwrap(), None);
    // Ids stay above what was stored, across a restart.
    store.close().await.unwrap();
    let store = open_sqlite(dir.path()).await;
    assert_eq!(store.audit_last_id().await.unwrap(), 1);
    store.close().await.unwrap();
}

/// Batches of every size around the SQLite store's one-call bound (`sql::ONE_CALL_MAX_ROWS`: below it a
/// commit is one call, above it statement by statement), with and without audit records, all persist with
/// their records, and the entries bind to the right rows (each key keeps its own value and version).
pub(super) async fn batches_of_every_size_persist_with_their_records(store: &dyn Store) {
    let mut expected = Vec::new();
    let mut records = Vec::new();
    let mut next_id = 1;
    for (round, size) in [1usize, 2, 3, 7, 31, 63, 64, 65, 100].into_iter().enumerate() {
        let batch: Vec<_> = (0..size)
            .map(|i| {
                let key = format!("size/{size:03}/{i:03}");
                let body = format!("{key}={round}");
                value(&key, body.as_bytes(), v((round * 1000 + i + 1) as u64, i as u64))
            })
            .collect();
        let mut audit = Vec::new();
        if round % 2 == 0 {
            for _ in 0..3 {
                audit.push(record(next_id, next_id, "alice"));
                next_id += 1;
            }
        }
        store.apply_with_audit(&batch, &audit).await.unwrap();
        expected.extend(batch);
        records.extend(audit);
    }
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(store.load().await.unwrap(), expected);
    assert_eq!(read(store, &all(0)).await.unwrap().records, records);
}
