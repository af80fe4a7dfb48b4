//! The merge laws of documents, over random concurrent edits on 2 to 4 replicas, and the edit semantics.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::crdt::LwwMap;

const EPOCH: Version = Version {
    hlc: 10,
    node: NodeId(1),
};

/// One edit a replica makes.
#[derive(Clone, Debug)]
enum Edit {
    Set(&'static str, i64),
    Remove(&'static str),
    Increment(i64),
    /// Increment `/fresh`, a counter the base document lacks: the first increment creates it, so replicas
    /// create it concurrently.
    Fresh(i64),
    /// Merge in another replica's current state (so later edits build on a merged document).
    Pull(usize),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    let field = prop::sample::select(vec!["a", "b", "c"]);
    prop_oneof![
        (field.clone(), 0i64..5).prop_map(|(f, v)| Edit::Set(f, v)),
        field.prop_map(Edit::Remove),
        (-3i64..10).prop_map(Edit::Increment),
        (-3i64..10).prop_map(Edit::Fresh),
        (0usize..4).prop_map(Edit::Pull),
    ]
}

/// The created document every replica starts from: `{"hits": counter 0}`.
fn base() -> Entry {
    let mut doc = Doc::new(EPOCH.node);
    doc.json_patch(&[PatchOp::Add {
        path: "/hits".into(),
        value: json!(0),
        counter: true,
    }])
    .unwrap();
    doc.commit(0, "create");
    entry_of(&mut doc, EPOCH)
}

fn entry_of(doc: &mut Doc, version: Version) -> Entry {
    Entry {
        value: Bytes::from(doc.save()),
        doc: Some(Box::new(doc.meta(EPOCH))),
        content_type: DOC_CONTENT_TYPE.into(),
        ..Entry::value("k", "", version)
    }
}

/// Each replica's successive states after each of its edits (replica `r` is node `r + 2`; the replicas take
/// turns, one edit each), and the sums of all increments of `/hits` and of `/fresh`.
fn replay(edits: &[Vec<Edit>]) -> (Vec<Entry>, i64, i64) {
    let base = base();
    let mut states = vec![base.clone()];
    let (mut hits, mut fresh) = (0, 0);
    let mut docs: Vec<Doc> = (0..edits.len())
        .map(|r| Doc::load(&base.value, NodeId(r as u64 + 2)).unwrap())
        .collect();
    let rounds = edits.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..rounds {
        for (r, edits) in edits.iter().enumerate() {
            let Some(edit) = edits.get(i) else { continue };
            let node = NodeId(r as u64 + 2);
            let version = Version::new(EPOCH.hlc + 1 + i as u64, node);
            let op = match edit {
                Edit::Set(f, v) => PatchOp::Add {
                    path: format!("/{f}"),
                    value: json!(v),
                    counter: false,
                },
                Edit::Remove(f) => PatchOp::Remove { path: format!("/{f}") },
                Edit::Increment(by) => PatchOp::Increment {
                    path: "/hits".into(),
                    value: *by,
                },
                Edit::Fresh(by) => PatchOp::Increment {
                    path: "/fresh".into(),
                    value: *by,
                },
                Edit::Pull(from) => {
                    let from = from % docs.len();
                    if from != r {
                        let mut other = Doc::load(&docs[from].save(), NodeId(0)).unwrap();
                        docs[r].merge(&mut other).unwrap();
                        states.push(entry_of(&mut docs[r], version));
                    }
                    continue;
                }
            };
            let doc = &mut docs[r];
            // A remove of a missing field does not apply (422): the replica rolls it back, as the writer does.
            if doc.json_patch(&[op]).is_err() {
                doc.rollback();
                continue;
            }
            match edit {
                Edit::Increment(by) => hits += by,
                Edit::Fresh(by) => fresh += by,
                _ => {}
            }
            doc.commit(i as i64, "edit");
            states.push(entry_of(doc, version));
        }
    }
    (states, hits, fresh)
}

fn arb_replicas() -> impl Strategy<Value = Vec<Vec<Edit>>> {
    prop::collection::vec(prop::collection::vec(arb_edit(), 0..5), 2..=4)
}

/// What must agree between two merges: everything but the saved bytes' layout (Automerge saves the same
/// changes merged in another order as other bytes; the digest hashes the heads for that reason).
fn state(e: &Entry) -> (Version, Option<DocMeta>, bool, serde_json::Value) {
    let json = match e.doc {
        Some(_) => Doc::load(&e.value, NodeId(0)).unwrap().to_json(),
        None => serde_json::Value::Null,
    };
    (e.version, e.doc_meta(), e.deleted, json)
}

fn fold(entries: impl IntoIterator<Item = Entry>) -> Entry {
    entries.into_iter().reduce(Entry::merge).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn document_merge_is_a_semilattice(edits in arb_replicas(), picks in prop::collection::vec(any::<prop::sample::Index>(), 3)) {
        let (states, ..) = replay(&edits);
        let pick = |i: usize| states[picks[i].index(states.len())].clone();
        let (a, b, c) = (pick(0), pick(1), pick(2));
        prop_assert_eq!(state(&a.clone().merge(b.clone())), state(&b.clone().merge(a.clone())));
        prop_assert_eq!(
            state(&a.clone().merge(b.clone()).merge(c.clone())),
            state(&a.clone().merge(b.clone().merge(c.clone())))
        );
        prop_assert_eq!(state(&a.clone().merge(a.clone())), state(&a));
    }

    /// Whatever order the states arrive in, every replica ends with the same document, and the counter is
    /// the sum of every increment made anywhere.
    #[test]
    fn any_delivery_order_converges_and_counters_sum(edits in arb_replicas(), seed in any::<u64>()) {
        let (states, hits, fresh) = replay(&edits);
        let forward = fold(states.clone());
        let mut shuffled = states.clone();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        rand::seq::SliceRandom::shuffle(&mut shuffled[..], &mut rng);
        let mut map = LwwMap::new();
        for e in shuffled.iter().cloned().chain(shuffled.iter().rev().cloned()) {
            map.merge(e);
        }
        let there = map.get("k").unwrap().clone();
        prop_assert_eq!(state(&forward), state(&there));
        prop_assert_eq!(map.digest().root(), {
            let mut other = LwwMap::new();
            other.merge(forward.clone());
            other.digest().root()
        });
        let json = state(&forward).3;
        prop_assert_eq!(json["hits"].as_i64(), Some(hits));
        prop_assert_eq!(json.get("fresh").map_or(Some(0), serde_json::Value::as_i64), Some(fresh));
        prop_assert_eq!(forward.version, states.iter().map(|e| e.version).max().unwrap());
    }

    /// With LWW values and tombstones of any version in the mix, the laws still hold (the epoch decides
    /// between kinds) and a document survives exactly when nothing of a later epoch was written.
    #[test]
    fn kinds_mix_by_epoch(edits in arb_replicas(), others in prop::collection::vec((0u64..30, any::<bool>()), 0..3), seed in any::<u64>()) {
        let (mut states, ..) = replay(&edits);
        for (hlc, deleted) in &others {
            let v = Version::new(*hlc, NodeId(9));
            states.push(if *deleted { Entry::tombstone("k", v) } else { Entry::value("k", "lww", v) });
        }
        let forward = fold(states.clone());
        let mut shuffled = states.clone();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        rand::seq::SliceRandom::shuffle(&mut shuffled[..], &mut rng);
        prop_assert_eq!(state(&forward), state(&fold(shuffled)));
        let newest_other = others.iter().map(|(hlc, _)| Version::new(*hlc, NodeId(9))).max();
        prop_assert_eq!(forward.doc.is_some(), newest_other.is_none_or(|v| v < EPOCH));
    }
}

#[test]
fn concurrent_fields_both_survive_and_counters_add() {
    let base = base();
    let edit = |node: u64, ops: Vec<PatchOp>| {
        let mut doc = Doc::load(&base.value, NodeId(node)).unwrap();
        doc.json_patch(&ops).unwrap();
        doc.commit(1, "edit");
        entry_of(&mut doc, Version::new(20, NodeId(node)))
    };
    let inc = |by| PatchOp::Increment {
        path: "/hits".into(),
        value: by,
    };
    let a = edit(
        2,
        vec![
            PatchOp::Add {
                path: "/a".into(),
                value: json!("x"),
                counter: false,
            },
            inc(2),
        ],
    );
    let b = edit(
        3,
        vec![
            PatchOp::Add {
                path: "/b".into(),
                value: json!({"n": [1, 2]}),
                counter: false,
            },
            inc(5),
        ],
    );
    let merged = a.merge(b);
    let json = Doc::load(&merged.value, NodeId(0)).unwrap().to_json();
    assert_eq!(json, json!({"a": "x", "b": {"n": [1, 2]}, "hits": 7}));
    assert_eq!(merged.version, Version::new(20, NodeId(3)));
    let history = Doc::load(&merged.value, NodeId(0)).unwrap().history();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].summary, "create");
}

/// Two nodes create one missing counter concurrently (each by its first increment), then both keep counting
/// on the merged document: no increment is lost, and the counter's inner parts never show or take edits.
#[test]
fn concurrent_first_increments_of_a_missing_counter_all_count() {
    let base = base();
    let inc = |doc: &mut Doc, by| {
        doc.json_patch(&[PatchOp::Increment {
            path: "/new".into(),
            value: by,
        }])
        .unwrap();
        doc.commit(1, "inc");
    };
    let (mut a, mut b) = (
        Doc::load(&base.value, NodeId(2)).unwrap(),
        Doc::load(&base.value, NodeId(3)).unwrap(),
    );
    inc(&mut a, 3);
    inc(&mut b, 5);
    let mut b_copy = Doc::load(&b.save(), NodeId(0)).unwrap();
    a.merge(&mut b_copy).unwrap();
    let mut a_copy = Doc::load(&a.save(), NodeId(0)).unwrap();
    b.merge(&mut a_copy).unwrap();
    assert_eq!(a.to_json()["new"], json!(8));
    // Both go on counting on the merged document, concurrently again.
    inc(&mut a, 1);
    inc(&mut b, 10);
    let mut b_copy = Doc::load(&b.save(), NodeId(0)).unwrap();
    a.merge(&mut b_copy).unwrap();
    assert_eq!(a.to_json(), json!({"hits": 0, "new": 19}));
    // A PUT of a number over it increments by the difference; a test sees the number.
    a.update_to(&json!({"hits": 0, "new": 20})).unwrap();
    a.commit(2, "put");
    assert_eq!(a.to_json()["new"], json!(20));
    a.json_patch(&[PatchOp::Test {
        path: "/new".into(),
        value: json!(20),
    }])
    .unwrap();
    // Its inner parts are not addressable, and NUL-led names (reserved for them) are refused.
    for bad in [
        json!([{"op": "add", "path": "/new/x", "value": 1}]),
        json!([{"op": "add", "path": "/\0counter", "value": 1}]),
        json!([{"op": "add", "path": "/o", "value": {"\0x": 1}}]),
    ] {
        let ops: Vec<PatchOp> = serde_json::from_value(bad.clone()).unwrap();
        let err = a.json_patch(&ops).unwrap_err();
        a.rollback();
        assert!(matches!(err, Error::Unprocessable(_)), "{bad}: {err:?}");
    }
    assert!(a.update_to(&json!({"\0x": 1})).is_err());
    a.rollback();
    // A replace makes it a plain value again.
    a.json_patch(&[PatchOp::Replace {
        path: "/new".into(),
        value: json!("done"),
    }])
    .unwrap();
    assert_eq!(a.to_json()["new"], json!("done"));
}

#[test]
fn edits_follow_the_rfcs_and_fail_cleanly() {
    let mut doc = Doc::new(NodeId(1));
    doc.update_to(&json!({"a": 1, "o": {"x": 1, "y": 2}, "l": [1, 2]}))
        .unwrap();
    doc.commit(0, "create");
    doc.merge_patch(&json!({"a": null, "o": {"y": null, "z": 3}, "n": {"k": null, "j": 1}}))
        .unwrap();
    assert_eq!(
        doc.to_json(),
        json!({"o": {"x": 1, "z": 3}, "l": [1, 2], "n": {"j": 1}})
    );
    let ops: Vec<PatchOp> = serde_json::from_value(json!([
        {"op": "add", "path": "/l/1", "value": 9},
        {"op": "add", "path": "/l/-", "value": 3},
        {"op": "replace", "path": "/o/x", "value": "new"},
        {"op": "remove", "path": "/n"},
        {"op": "test", "path": "/l", "value": [1, 9, 2, 3]},
        {"op": "add", "path": "/a~1b", "value": 0, "counter": true},
        {"op": "increment", "path": "/a~1b", "value": 4},
        {"op": "increment", "path": "/fresh", "value": 2},
    ]))
    .unwrap();
    doc.json_patch(&ops).unwrap();
    assert!(doc.commit(1, "patch"));
    let want = json!({"o": {"x": "new", "z": 3}, "l": [1, 9, 2, 3], "a/b": 4, "fresh": 2});
    assert_eq!(doc.to_json(), want);
    // Each of these fails as a whole, and the rollback leaves the document as it was.
    for bad in [
        json!([{"op": "test", "path": "/o/x", "value": "old"}]),
        json!([{"op": "replace", "path": "/missing", "value": 1}]),
        json!([{"op": "remove", "path": "/l/7"}]),
        json!([{"op": "increment", "path": "/o", "value": 1}]),
        json!([{"op": "add", "path": "/o/q", "value": 1}, {"op": "add", "path": "/nope/x", "value": 1}]),
        json!([{"op": "add", "path": "/l/01", "value": 1}]),
        json!([{"op": "add", "path": "/c", "value": "x", "counter": true}]),
    ] {
        let ops: Vec<PatchOp> = serde_json::from_value(bad.clone()).unwrap();
        let err = doc.json_patch(&ops).unwrap_err();
        assert!(matches!(err, Error::Unprocessable(_)), "{bad}: {err:?}");
        doc.rollback();
        assert_eq!(doc.to_json(), want, "{bad}");
    }
    assert!(serde_json::from_value::<Vec<PatchOp>>(json!([{"op": "move", "from": "/a", "path": "/b"}])).is_err());
    // A PUT of a new number over a counter increments it by the difference.
    doc.update_to(&json!({"a/b": 10, "fresh": 2})).unwrap();
    doc.commit(2, "put");
    assert_eq!(doc.to_json(), json!({"a/b": 10, "fresh": 2}));
    assert!(matches!(doc.merge_patch(&json!([1])), Err(Error::Unprocessable(_))));
    assert!(matches!(doc.update_to(&json!([1])), Err(Error::InvalidInput(_))));
}

#[test]
fn a_join_of_equal_heads_does_no_work_and_garbage_does_not_load() {
    let a = base();
    assert_eq!(join_plain(&a, &a).unwrap(), a);
    assert!(matches!(Doc::load(b"not automerge", NodeId(1)), Err(Error::Corrupt(_))));
    // A corrupt same-epoch peer: the merge still picks deterministically.
    let bad = Entry {
        value: Bytes::from_static(b"junk"),
        doc: Some(Box::new(DocMeta {
            changes: 99,
            ..a.doc_meta().unwrap()
        })),
        ..a.clone()
    };
    assert_eq!(a.clone().merge(bad.clone()), bad.clone().merge(a.clone()));
}
