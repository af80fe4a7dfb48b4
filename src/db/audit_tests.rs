//! The audit records the writer commits: ids in commit order that continue after a restart, records of
//! failed commits left to their request, and the retention task the database owns.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::crdt::ManualTime;
use crate::secrets::{MasterKey, SECRETS_DOMAIN};
use crate::storage::MemoryStore;

async fn open_on(store: &MemoryStore, time: Arc<ManualTime>) -> Db {
    Db::open(
        Arc::new(store.clone()),
        NodeId(3),
        Arc::new(Hlc::new(time)),
        MasterKey::generate().sealer(SECRETS_DOMAIN),
        crate::metrics::Metrics::new(),
    )
    .await
    .unwrap()
}

fn record(time_ms: u64) -> AuditRecord {
    AuditRecord {
        id: 0,
        time_ms,
        node: NodeId(3),
        accessor: "anonymous".into(),
        method: "DELETE".into(),
        route: "/api/v1/kv/{*key}".into(),
        key: None,
        status: 200,
        remote_addr: None,
    }
}

fn everything() -> AuditQuery {
    AuditQuery {
        after: 0,
        since_ms: None,
        accessor: None,
        limit: 1000,
    }
}

async fn ids(db: &Db) -> Vec<u64> {
    db.audit_read(&everything())
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| r.id)
        .collect()
}

#[tokio::test]
async fn ids_follow_commit_order_and_continue_after_a_restart() {
    let store = MemoryStore::new();
    let db = open_on(&store, ManualTime::new(1_000)).await;
    db.audit(vec![record(1), record(2)]).await.unwrap();
    db.audit(vec![record(3)]).await.unwrap();
    assert_eq!(ids(&db).await, [1, 2, 3]);
    db.close().await.unwrap();
    let store = store.reopen();
    store.audit_purge(u64::MAX, 100).await.unwrap();
    let db = open_on(&store, ManualTime::new(1_000)).await;
    db.audit(vec![record(4)]).await.unwrap();
    assert_eq!(
        ids(&db).await,
        [4],
        "an id is never reused, even after every record was purged"
    );
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_commit_stores_no_record_and_reports_the_error() {
    let store = MemoryStore::new();
    let db = open_on(&store, ManualTime::new(1_000)).await;
    store.set_full(true);
    assert!(matches!(db.audit(vec![record(1)]).await, Err(Error::StorageFull(_))));
    assert!(db.storage_full());
    store.set_full(false);
    db.audit(vec![record(2)]).await.unwrap();
    assert!(
        db.storage_full(),
        "audit records alone do not show there is room for writes"
    );
    db.write(vec![Op::Delete {
        key: "k".into(),
        cas: None,
    }])
    .await
    .unwrap();
    assert!(!db.storage_full(), "a committed write does");
    let stored = db.audit_read(&everything()).await.unwrap().records;
    assert_eq!(stored.iter().map(|r| r.time_ms).collect::<Vec<_>>(), [2]);
    db.close().await.unwrap();
}

#[tokio::test]
async fn retention_purges_old_records_until_close() {
    let store = MemoryStore::new();
    let db = open_on(&store, ManualTime::new(100_000)).await;
    let old: Vec<AuditRecord> = (0..2500).map(|_| record(10_000)).collect();
    db.audit(old).await.unwrap();
    db.audit(vec![record(99_500)]).await.unwrap();
    db.start_audit_retention(Duration::from_secs(1)).await;
    // A round every 100 ms (a tenth of the retention), three batches of at most 1000.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db.audit_read(&everything()).await.unwrap().records.len() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = db.audit_read(&everything()).await.unwrap().records;
    assert_eq!(left.iter().map(|r| r.time_ms).collect::<Vec<_>>(), [99_500]);
    db.close().await.unwrap();
    // `close` waited for the task: the store is closed and nothing is left running on it.
    assert!(db.shared.retention.lock().is_none());
    assert_eq!(store.reopen().audit_scan(0, 10).await.unwrap().len(), 1);
}
