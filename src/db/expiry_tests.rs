//! Expiring values in the database: read as absent from their expiry on, turned into the tombstone every
//! node derives by the writer's sweep (with its change event), permanent again after a write without a TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::crdt::{hlc, ManualTime};
use crate::secrets::{MasterKey, SECRETS_DOMAIN};
use crate::storage::{MemoryStore, Store};

const DEADLINE: Duration = Duration::from_secs(10);

async fn open_on(store: Arc<dyn Store>, time: Arc<ManualTime>) -> Db {
    Db::open(
        store,
        NodeId(7),
        Arc::new(Hlc::new(time)),
        MasterKey::generate().sealer(SECRETS_DOMAIN),
        crate::metrics::Metrics::new(),
    )
    .await
    .unwrap()
}

fn put(key: &str, value: &str, ttl: Option<Duration>) -> Op {
    Op::Put {
        key: key.into(),
        value: bytes::Bytes::from(value.to_string()),
        content_type: "text/plain".into(),
        secret: false,
        cas: None,
        ttl,
        lease: None,
    }
}

fn written(outcomes: Vec<Outcome>) -> Entry {
    match outcomes.into_iter().next() {
        Some(Outcome::Written(entry)) => entry,
        other => panic!("not a write: {other:?}"),
    }
}

/// Wait until the map holds a tombstone for `key`.
pub(super) async fn until_tombstone(db: &Db, key: &str) -> Entry {
    let started = Instant::now();
    loop {
        if let Some(e) = db.with_state(|s| s.get(key).cloned()).filter(|e| e.deleted) {
            return e;
        }
        assert!(started.elapsed() < DEADLINE, "{key} was not swept within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_expired_value_reads_as_absent_and_is_swept_into_its_tombstone() {
    let time = ManualTime::new(1_000_000);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let db = open_on(store.clone(), time.clone()).await;
    let mut events = db.subscribe();
    let entry = written(
        db.write(vec![put("svc/a", "up", Some(Duration::from_secs(5)))])
            .await
            .unwrap(),
    );
    let expires = entry.expires.expect("an expiry");
    assert_eq!(
        hlc::physical_ms(expires.get()),
        hlc::physical_ms(entry.version.hlc) + 5_000
    );
    written(db.write(vec![put("svc/keep", "up", None)]).await.unwrap());
    assert!(db.get("svc/a").is_some());

    time.advance(5_000);
    // Absent at once, whether or not the sweep has run yet; a batch read agrees.
    assert_eq!(db.get("svc/a"), None);
    let got = db.write(vec![Op::Get { key: "svc/a".into() }]).await.unwrap();
    assert_eq!(got, vec![Outcome::Got(None)]);
    let tombstone = until_tombstone(&db, "svc/a").await;
    assert_eq!(tombstone, entry.expired());
    assert_eq!(
        tombstone.version, entry.version,
        "no later write is superseded by an expiry"
    );
    assert!(db.get("svc/keep").is_some());
    assert!(db.with_state(|s| s.expiring().is_empty()));

    // The change stream saw the write and then the expiry, which carries its expiry.
    let mut seen = Vec::new();
    while let Ok(change) = events.try_recv() {
        seen.push(
            db.resolve(&change)
                .map(|e| (e.key.clone(), e.deleted, e.expires.is_some())),
        );
    }
    assert!(seen.contains(&Some(("svc/a".into(), true, true))), "{seen:?}");

    // Stored: a restart loads the tombstone, not the value.
    let stored = store.load().await.unwrap();
    assert_eq!(stored.into_iter().find(|e| e.key == "svc/a"), Some(tombstone));
}

#[tokio::test]
async fn a_write_without_ttl_makes_the_key_permanent_and_a_replica_of_the_value_expires_too() {
    let time = ManualTime::new(1_000_000);
    let db = open_on(Arc::new(MemoryStore::new()), time.clone()).await;
    let first = written(
        db.write(vec![put("k", "v1", Some(Duration::from_secs(2)))])
            .await
            .unwrap(),
    );
    written(db.write(vec![put("k", "v2", None)]).await.unwrap());
    time.advance(10_000);
    assert_eq!(db.get("k").map(|e| e.value), Some(bytes::Bytes::from("v2")));

    // A replica that receives the expiring value late (already expired) sweeps it like its own, and one that
    // receives the tombstone first ignores the value afterwards.
    let other = open_on(Arc::new(MemoryStore::new()), time.clone()).await;
    other.merge(vec![first.clone()]).await.unwrap();
    assert_eq!(other.get("k"), None);
    assert_eq!(until_tombstone(&other, "k").await, first.expired());
    let third = open_on(Arc::new(MemoryStore::new()), time).await;
    third.merge(vec![first.expired()]).await.unwrap();
    assert_eq!(third.merge(vec![first.clone()]).await.unwrap(), 0);
    assert_eq!(third.get("k"), None);
}
