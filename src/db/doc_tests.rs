//! The database's document operations: edits, the delta a local edit broadcasts, and how merged
//! documents and deltas are joined (including secret ones, which only the database can open).

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::crdt::doc::{Doc, PatchOp};
use crate::crdt::ManualTime;
use crate::secrets::{MasterKey, SECRETS_DOMAIN};
use crate::storage::MemoryStore;

const MAX: usize = 1 << 20;

async fn node(id: u64, key: &MasterKey) -> Db {
    let hlc = Arc::new(Hlc::new(ManualTime::new(1_000 * id)));
    Db::open(
        Arc::new(MemoryStore::new()),
        NodeId(id),
        hlc,
        key.sealer(SECRETS_DOMAIN),
        crate::metrics::Metrics::new(),
    )
    .await
    .unwrap()
}

fn put_doc(key: &str, json: serde_json::Value, secret: bool) -> Op {
    Op::PutDoc {
        key: key.into(),
        json,
        secret,
        cas: None,
        max_bytes: MAX,
    }
}

fn increment(key: &str, by: i64) -> Op {
    Op::Patch {
        key: key.into(),
        patch: DocPatch::Json(vec![PatchOp::Increment {
            path: "/hits".into(),
            value: by,
        }]),
        cas: None,
        max_bytes: MAX,
    }
}

fn json_of(db: &Db, key: &str) -> serde_json::Value {
    let entry = db.get(key).unwrap();
    let bytes = if entry.secret {
        db.open_secret(&entry).unwrap()
    } else {
        entry.value.clone()
    };
    Doc::load(&bytes, NodeId(0)).unwrap().to_json()
}

/// What `db` broadcasts for its changes since `events` was subscribed.
fn broadcasts(db: &Db, events: &mut tokio::sync::broadcast::Receiver<Arc<Change>>) -> Vec<Entry> {
    let changes: Vec<Arc<Change>> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    db.resolve_broadcast(changes.iter().map(|c| &**c))
}

#[tokio::test]
async fn edits_travel_as_deltas_and_a_gap_waits_for_the_whole_document() {
    for secret in [false, true] {
        let key = MasterKey::generate();
        let (a, b) = (node(1, &key).await, node(2, &key).await);
        let mut events = a.subscribe();
        a.write(vec![put_doc("d", json!({}), secret)]).await.unwrap();
        a.write(vec![increment("d", 1)]).await.unwrap();
        let sent = broadcasts(&a, &mut events);
        // The creation goes whole, the edit as its change only.
        assert_eq!(sent.len(), 2);
        assert!(!sent[0].is_delta() && sent[1].is_delta());
        let whole = a.get("d").unwrap();
        if !secret {
            assert!(
                sent[1].value.len() < whole.value.len(),
                "{} vs {}",
                sent[1].value.len(),
                whole.value.len()
            );
        }
        // A delta for a document b does not hold is not stored.
        assert_eq!(b.merge(vec![sent[1].clone()]).await.unwrap(), 0);
        assert!(b.get("d").is_none());
        b.merge(vec![sent[0].clone()]).await.unwrap();
        assert_eq!(b.merge(vec![sent[1].clone()]).await.unwrap(), 1);
        assert_eq!(json_of(&b, "d"), json!({"hits": 1}));
        assert_eq!(b.get("d").unwrap().doc.map(|d| d.heads), whole.doc.map(|d| d.heads));
        // Twice changes nothing.
        assert_eq!(b.merge(vec![sent[1].clone()]).await.unwrap(), 0);

        // A delta whose predecessor b missed is held back; the whole document (anti-entropy) repairs.
        a.write(vec![increment("d", 2)]).await.unwrap();
        a.write(vec![increment("d", 4)]).await.unwrap();
        let sent = broadcasts(&a, &mut events);
        assert_eq!(b.merge(vec![sent[1].clone()]).await.unwrap(), 0);
        assert_eq!(json_of(&b, "d"), json!({"hits": 1}));
        b.merge(vec![a.get("d").unwrap()]).await.unwrap();
        assert_eq!(json_of(&b, "d"), json!({"hits": 7}));
    }
}

#[tokio::test]
async fn concurrent_edits_join_and_joins_are_not_rebroadcast() {
    for secret in [false, true] {
        let key = MasterKey::generate();
        let (a, b) = (node(1, &key).await, node(2, &key).await);
        a.write(vec![put_doc("d", json!({}), secret)]).await.unwrap();
        // The counter exists before the concurrent increments (two concurrent first increments would be two
        // concurrent creations of the field, of which one wins).
        a.write(vec![increment("d", 0)]).await.unwrap();
        b.merge(vec![a.get("d").unwrap()]).await.unwrap();
        a.write(vec![increment("d", 2)]).await.unwrap();
        b.write(vec![increment("d", 3)]).await.unwrap();
        let mut events = a.subscribe();
        a.merge(vec![b.get("d").unwrap()]).await.unwrap();
        b.merge(vec![a.get("d").unwrap()]).await.unwrap();
        assert_eq!(json_of(&a, "d"), json!({"hits": 5}));
        assert_eq!(json_of(&b, "d"), json!({"hits": 5}));
        let (ea, eb) = (a.get("d").unwrap(), b.get("d").unwrap());
        assert_eq!(
            (ea.version, ea.doc_meta(), ea.secret),
            (eb.version, eb.doc_meta(), eb.secret)
        );
        assert_eq!(
            crate::crdt::digest::content_tag(&ea),
            crate::crdt::digest::content_tag(&eb)
        );
        assert!(broadcasts(&a, &mut events).is_empty(), "a join went out");
    }
}

#[tokio::test]
async fn an_imported_document_is_pushed_whole() {
    for secret in [false, true] {
        let key = MasterKey::generate();
        let (a, b) = (node(1, &key).await, node(2, &key).await);
        a.write(vec![put_doc("d", json!({}), secret)]).await.unwrap();
        a.write(vec![increment("d", 2)]).await.unwrap();
        let mut events = b.subscribe();
        // An import brings the document whole, and whoever wrote it, the node it came in through pushes it.
        assert_eq!(b.import(vec![a.get("d").unwrap()]).await.unwrap(), 1);
        let sent = broadcasts(&b, &mut events);
        assert_eq!(sent.len(), 1);
        assert!(!sent[0].is_delta());
        assert_eq!(sent[0], b.get("d").unwrap());
        let c = node(3, &key).await;
        c.merge(sent).await.unwrap();
        assert_eq!(json_of(&c, "d"), json!({"hits": 2}));
    }
}

#[tokio::test]
async fn a_later_delete_removes_the_document_and_a_new_put_recreates_it() {
    let key = MasterKey::generate();
    let (a, b) = (node(1, &key).await, node(2, &key).await);
    a.write(vec![put_doc("d", json!({"x": 1}), false)]).await.unwrap();
    b.merge(vec![a.get("d").unwrap()]).await.unwrap();
    b.write(vec![Op::Delete {
        key: "d".into(),
        cas: None,
    }])
    .await
    .unwrap();
    // a edits after the delete (by its clock), not having seen it: the delete still wins.
    a.write(vec![increment("d", 1)]).await.unwrap();
    let raw = |db: &Db| db.with_state(|m| m.get("d").cloned()).unwrap();
    a.merge(vec![raw(&b)]).await.unwrap();
    b.merge(vec![raw(&a)]).await.unwrap();
    assert!(raw(&a).deleted && raw(&b).deleted);
    let err = a.write(vec![increment("d", 1)]).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    a.write(vec![put_doc("d", json!({"y": 2}), false)]).await.unwrap();
    b.merge(vec![a.get("d").unwrap()]).await.unwrap();
    assert_eq!(json_of(&b, "d"), json!({"y": 2}));
    // Patches of plain values conflict; an oversized document is refused and changes nothing.
    a.write(vec![Op::Put {
        key: "p".into(),
        value: "v".into(),
        content_type: "text/plain".into(),
        secret: false,
        cas: None,
        ttl: None,
        lease: None,
    }])
    .await
    .unwrap();
    assert!(matches!(
        a.write(vec![increment("p", 1)]).await,
        Err(Error::Conflict(_))
    ));
    let big = Op::PutDoc {
        key: "d".into(),
        // Incompressible text: the saved form is deflated.
        json: json!({"blob": (0..64u8).map(|i| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&[i]))).collect::<String>()}),
        secret: false,
        cas: None,
        max_bytes: 300,
    };
    let refused = a.write(vec![big]).await;
    assert!(matches!(refused, Err(Error::TooLarge(_))), "{refused:?}");
    assert_eq!(json_of(&a, "d"), json!({"y": 2}));
}
