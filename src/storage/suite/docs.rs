//! Document entries in a store: their metadata round-trips, a node's successive states of one document keep
//! the latest, and the epoch decides between a document and LWW entries (`crate::crdt::doc`), also for
//! versions with the high bit set.

use super::{apply_changing, model, v, value, LoadedReads, HIGH};
use crate::crdt::{DocMeta, Entry, Version};
use crate::storage::Store;

/// A document entry as the writer stores one (the bytes are opaque to a store).
fn doc(key: &str, created: Version, version: Version, changes: u64) -> Entry {
    Entry {
        doc: Some(Box::new(DocMeta {
            created,
            changes,
            heads: changes.wrapping_mul(0x9e37_79b9_7f4a_7c15) | HIGH,
            delta: false,
        })),
        content_type: "application/json".into(),
        ..value(key, format!("saved-{changes}").as_bytes(), version)
    }
}

pub(super) async fn documents_keep_their_latest_state_and_the_epoch_decides(store: &dyn Store) {
    let s1 = doc("d", v(5, 1), v(5, 1), 1);
    let s2 = doc("d", v(5, 1), v(7, 2), 2);
    apply_changing(store, std::slice::from_ref(&s1), 1).await;
    apply_changing(store, std::slice::from_ref(&s2), 1).await;
    assert_eq!(store.get("d").await.unwrap(), Some(s2.clone()));
    // An earlier state of the document, or the same version with fewer changes, never comes back.
    let fewer = doc("d", v(5, 1), v(7, 2), 1);
    for older in [&s1, &fewer] {
        apply_changing(store, std::slice::from_ref(older), 0).await;
        assert_eq!(store.get("d").await.unwrap(), Some(s2.clone()), "{older:?} applied");
    }
    // A plain write created after the document (epoch 6 > 5) replaces it, though the document's last edit
    // (version 7) is later: edits never outrank a later creation.
    let lww = value("d", b"plain", v(6, 3));
    apply_changing(store, std::slice::from_ref(&lww), 1).await;
    apply_changing(store, std::slice::from_ref(&s2), 0).await;
    assert_eq!(store.get("d").await.unwrap(), Some(lww.clone()));
    // A new document, created later still, replaces the plain value.
    let again = doc("d", v(8, 1), v(8, 1), 1);
    apply_changing(store, std::slice::from_ref(&again), 1).await;
    assert_eq!(store.get("d").await.unwrap(), Some(again.clone()));

    // The same in one batch, in any order, and with the high bit set (unsigned order in SQL too).
    let high = [
        doc("h", v(HIGH, 1), v(HIGH + 3, 1), 3),
        value("h", b"older", v(3, 1)),
        Entry::tombstone("h", v(HIGH + 1, 2)),
        doc("h", v(HIGH, 1), v(HIGH + 2, 1), 2),
        doc("g", v(4, 1), v(HIGH + 9, 1), 5),
        value("g", b"g", v(HIGH, 9)),
    ];
    store.apply(&high).await.unwrap();
    let expected = model(&high);
    assert_eq!(store.get("h").await.unwrap().as_ref(), expected.get("h"));
    assert!(store.get("h").await.unwrap().unwrap().deleted);
    assert_eq!(store.get("g").await.unwrap(), Some(value("g", b"g", v(HIGH, 9))));
}
