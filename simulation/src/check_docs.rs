//! The checker's rules for documents (the `documents` scenario), beside `check`'s for LWW keys:
//!
//! 5. Every live node holds the same document: the same version and history (heads), the same JSON. Saved
//!    bytes may differ (Automerge lays the same changes out by arrival), so they are not compared.
//! 6. Every acknowledged edit's change is in the document: nothing acknowledged is lost. So an acknowledged
//!    field edit is visible unless a later (or concurrent, Automerge's deterministic winner) edit of that field
//!    superseded it; each field holds the value of one of its acknowledged edits.
//! 7. Each counter equals the sum of its acknowledged increments.

use std::collections::BTreeMap;

use cave::crdt::doc::Doc;
use cave::crdt::{Entry, NodeId};

use crate::check::Violation;
use crate::history::{Fate, History};
use crate::node::Node;

fn load(e: &Entry) -> Option<Doc> {
    Doc::load(&e.value, NodeId(0)).ok()
}

/// Two entries hold the same state: for documents, the same version and history (not the same bytes).
pub fn same(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if a.doc.is_some() || b.doc.is_some() => {
            (a.version, a.doc_meta(), a.deleted, a.secret) == (b.version, b.doc_meta(), b.deleted, b.secret)
        }
        (a, b) => a == b,
    }
}

fn violation(kind: &'static str, key: &str, detail: String) -> Violation {
    Violation {
        kind,
        key: Some(key.to_string()),
        detail,
        history: String::new(),
    }
}

/// Rules 5 to 7 over the live nodes.
pub fn check(live: &[&Node], history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut keys: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in history.doc_edits.iter().enumerate() {
        keys.entry(e.key.as_str()).or_default().push(i);
    }
    for (key, edits) in keys {
        let mut reference: Option<serde_json::Value> = None;
        for n in live {
            let Some(entry) = n.state.get(key).filter(|e| e.doc.is_some() && !e.deleted) else {
                out.push(violation(
                    "document missing",
                    key,
                    format!("n{} holds {:?}", n.slot, n.state.get(key).map(|e| e.version)),
                ));
                continue;
            };
            let Some(mut doc) = load(entry) else {
                out.push(violation("document does not load", key, format!("on n{}", n.slot)));
                continue;
            };
            let json = doc.to_json();
            match &reference {
                None => reference = Some(json.clone()),
                Some(r) if *r != json => {
                    out.push(violation(
                        "documents differ",
                        key,
                        format!("n{}: {json}\nfirst: {r}", n.slot),
                    ));
                }
                Some(_) => {}
            }
            let acked: Vec<_> = edits
                .iter()
                .map(|&i| &history.doc_edits[i])
                .filter(|e| matches!(e.fate, Fate::Acked(_)))
                .collect();
            let lost: Vec<_> = acked.iter().filter(|e| !doc.contains(&e.hash)).collect();
            if let Some(first) = lost.first() {
                out.push(violation(
                    "acknowledged document edit lost",
                    key,
                    format!(
                        "n{}: {} of {} acknowledged edits missing, e.g. {:?} by n{} ({:?})",
                        n.slot,
                        lost.len(),
                        acked.len(),
                        first.field,
                        first.node,
                        first.fate
                    ),
                ));
            }
            let sum: i64 = acked.iter().map(|e| e.by).sum();
            // No increment yet: no counter yet.
            if json.get("hits").map_or(Some(0), serde_json::Value::as_i64) != Some(sum) {
                out.push(violation(
                    "counter is not the sum of its increments",
                    key,
                    format!(
                        "n{}: hits = {}, acknowledged increments sum to {sum}",
                        n.slot, json["hits"]
                    ),
                ));
            }
            let mut fields: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
            for e in &acked {
                if let Some((field, value)) = &e.field {
                    fields.entry(field.as_str()).or_default().push(*value);
                }
            }
            for (field, values) in fields {
                let found = json[field].as_i64();
                if !found.is_some_and(|v| values.contains(&v)) {
                    out.push(violation(
                        "field holds no acknowledged edit",
                        key,
                        format!("n{}: {field} = {}, acknowledged values {values:?}", n.slot, json[field]),
                    ));
                }
            }
        }
    }
    out
}
