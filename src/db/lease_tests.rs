//! Leases in the database: a bound value lives as long as its lease, a renewal extends it, a revoke or an
//! expiry ends every value bound to it (absent at once, swept into same-version tombstones), an ended lease
//! is neither renewed nor bound to, and a replica that lacks the lease hides the values bound to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::expiry_tests::until_tombstone;
use super::*;
use crate::crdt::{LeaseId, ManualTime};
use crate::secrets::{MasterKey, SECRETS_DOMAIN};
use crate::storage::{MemoryStore, Store};

const DEADLINE: Duration = Duration::from_secs(10);

async fn open(time: Arc<ManualTime>, node: u64) -> Db {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Db::open(
        store,
        NodeId(node),
        Arc::new(Hlc::new(time)),
        MasterKey::generate().sealer(SECRETS_DOMAIN),
        crate::metrics::Metrics::new(),
    )
    .await
    .unwrap()
}

fn bound(key: &str, lease: LeaseId) -> Op {
    Op::Put {
        key: key.into(),
        value: bytes::Bytes::from_static(b"up"),
        content_type: "text/plain".into(),
        secret: false,
        cas: None,
        ttl: None,
        lease: Some(lease),
    }
}

#[tokio::test]
async fn a_bound_value_lives_while_its_lease_is_renewed_and_ends_with_its_expiry() {
    let time = ManualTime::new(1_000_000);
    let db = open(time.clone(), 7).await;
    let lease = db.grant_lease(Duration::from_secs(10)).await.unwrap();
    assert_eq!((lease.ttl.as_str(), lease.ttl_ms, lease.keys), ("10s", 10_000, 0));
    db.write(vec![bound("svc/a", lease.id), bound("svc/b", lease.id)])
        .await
        .unwrap();
    assert_eq!(db.get("svc/a").unwrap().lease, Some(lease.id));
    assert_eq!(db.lease(lease.id).unwrap().bound, ["svc/a", "svc/b"]);

    time.advance(8_000);
    let renewed = db.renew_lease(lease.id).await.unwrap();
    assert_eq!(renewed.keys, 2);
    assert!(
        renewed.expires_ms >= lease.expires_ms + 8_000,
        "{renewed:?} after {lease:?}"
    );
    time.advance(8_000);
    assert!(db.get("svc/a").is_some(), "renewed 8 s ago for 10 s");

    time.advance(2_000);
    assert_eq!(db.get("svc/a"), None, "the lease expired");
    assert!(matches!(db.renew_lease(lease.id).await, Err(Error::NotFound(_))));
    assert!(matches!(
        db.write(vec![bound("svc/c", lease.id)]).await,
        Err(Error::NotFound(_))
    ));
    let swept = until_tombstone(&db, "svc/b").await;
    assert_eq!(
        (swept.lease, swept.version),
        (Some(lease.id), db.with_state(|s| s.get("svc/b").unwrap().version))
    );
    until_tombstone(&db, "svc/a").await;
    assert!(db.with_state(|s| s.bound().is_empty() && !s.bound().any_ended()));
    assert!(db.leases().unwrap().is_empty());
}

#[tokio::test]
async fn a_revoke_ends_every_bound_value_and_a_later_unbound_write_survives_it() {
    let time = ManualTime::new(1_000_000);
    let db = open(time.clone(), 7).await;
    let mut events = db.subscribe();
    let lease = db.grant_lease(Duration::from_secs(60)).await.unwrap();
    db.write(vec![bound("svc/a", lease.id), bound("svc/b", lease.id)])
        .await
        .unwrap();
    // A later write without the lease takes the key out of it.
    let mut unbound = bound("svc/b", lease.id);
    if let Op::Put { lease, .. } = &mut unbound {
        *lease = None;
    }
    db.write(vec![unbound]).await.unwrap();
    assert_eq!(db.revoke_lease(lease.id).await.unwrap(), 1);
    assert_eq!(db.get("svc/a"), None);
    assert!(db.get("svc/b").is_some());
    until_tombstone(&db, "svc/a").await;
    assert!(matches!(db.revoke_lease(lease.id).await, Err(Error::NotFound(_))));
    assert!(matches!(db.lease(lease.id), Err(Error::NotFound(_))));
    // The sweep's tombstone is an event like the expiry's.
    let started = Instant::now();
    loop {
        let change = tokio::time::timeout(DEADLINE, events.recv()).await.unwrap().unwrap();
        if change.key == "svc/a" && change.deleted {
            break;
        }
        assert!(started.elapsed() < DEADLINE);
    }
}

#[tokio::test]
async fn a_replica_hides_a_bound_value_until_it_holds_the_lease_and_collects_it_once_the_lease_ends() {
    let time = ManualTime::new(1_000_000);
    let here = open(time.clone(), 7).await;
    let there = open(time.clone(), 8).await;
    let lease = here.grant_lease(Duration::from_secs(30)).await.unwrap();
    let written = here.write(vec![bound("svc/a", lease.id)]).await.unwrap();
    let Outcome::Written(value) = &written[0] else {
        panic!("{written:?}")
    };
    let lease_entry = here.with_state(|s| s.get(&lease.id.key()).cloned()).unwrap();

    // The value arrives first (anti-entropy has no order): hidden, and not collected.
    there.merge(vec![value.clone()]).await.unwrap();
    assert_eq!(there.get("svc/a"), None);
    there.merge(vec![lease_entry]).await.unwrap();
    assert_eq!(there.get("svc/a").as_ref(), Some(value));

    // The revoke replicates: the replica collects the value into the same tombstone as the origin.
    here.revoke_lease(lease.id).await.unwrap();
    let revoke = here.with_state(|s| s.get(&lease.id.key()).cloned()).unwrap();
    there.merge(vec![revoke]).await.unwrap();
    assert_eq!(there.get("svc/a"), None);
    assert_eq!(
        until_tombstone(&there, "svc/a").await,
        until_tombstone(&here, "svc/a").await
    );
    assert_eq!(
        here.with_state(|s| s.digest().root()),
        there.with_state(|s| s.digest().root())
    );
}

#[tokio::test]
async fn a_restart_keeps_leases_and_bindings() {
    let time = ManualTime::new(1_000_000);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let db = Db::open(
        store.clone(),
        NodeId(7),
        Arc::new(Hlc::new(time.clone())),
        MasterKey::generate().sealer(SECRETS_DOMAIN),
        crate::metrics::Metrics::new(),
    )
    .await
    .unwrap();
    let kept = db.grant_lease(Duration::from_secs(60)).await.unwrap();
    let ended = db.grant_lease(Duration::from_secs(60)).await.unwrap();
    db.write(vec![bound("a", kept.id), bound("b", ended.id), bound("c", ended.id)])
        .await
        .unwrap();
    db.revoke_lease(ended.id).await.unwrap();
    // What a restart loads: the bulk load rebuilds the index, the ended lease's values still due.
    let loaded = crate::crdt::LwwMap::from_entries(store.load().await.unwrap());
    let now = db.hlc().reading();
    assert_eq!(loaded.get_live_at("a", now).unwrap().lease, Some(kept.id));
    assert!(loaded.get_live_at("b", now).is_none() && loaded.get_live_at("c", now).is_none());
    // Whichever the writer had not swept before the load is due at once.
    let mut due: Vec<String> = loaded
        .expired_due(now, 10)
        .into_iter()
        .map(|e| e.key.to_string())
        .collect();
    due.sort();
    let unswept: Vec<String> = ["b", "c"]
        .into_iter()
        .filter(|k| loaded.get(k).is_some_and(|e| !e.deleted))
        .map(String::from)
        .collect();
    assert_eq!(due, unswept);
    assert_eq!(loaded.bound().any_ended(), !unswept.is_empty());
    assert_eq!(loaded.bound().keys(kept.id).collect::<Vec<_>>(), ["a"]);
}
