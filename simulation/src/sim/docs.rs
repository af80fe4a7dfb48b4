//! The documents part of `cave::db` (`db/docs.rs`): a document edit in the writer, and the join of a
//! replicated document or delta with the one held. The rules themselves are `cave::crdt::doc`'s, called as
//! the real writer calls them.

use bytes::Bytes;
use cave::crdt::doc::{self, Doc, PatchOp, DOC_CONTENT_TYPE};
use cave::crdt::{hlc, Entry, Version};
use serde_json::json;

use crate::node::Op;

/// The document `key` as created before the run: `{"seeded": true}`. Its counter `/hits` is missing: the
/// first increments create it, on several nodes at once under a partition.
pub fn seed(key: &str, created: Version) -> Entry {
    let mut d = Doc::new(created.node);
    d.json_patch(&[PatchOp::Add {
        path: "/seeded".into(),
        value: json!(true),
        counter: false,
    }])
    .expect("a fresh document takes a field");
    d.commit(hlc::physical_ms(created.hlc) as i64, "create");
    entry(key, &mut d, created, created)
}

fn entry(key: &str, d: &mut Doc, created: Version, version: Version) -> Entry {
    Entry {
        value: Bytes::from(d.save()),
        content_type: DOC_CONTENT_TYPE.into(),
        doc: Some(Box::new(d.meta(created))),
        ..Entry::value(key, "", version)
    }
}

/// What a document edit wrote: the entry, its delta (what the driver broadcasts), and its change hash.
pub struct Edit {
    pub entry: Entry,
    pub delta: Entry,
    pub hash: [u8; 32],
}

/// `docs::patch` of the writer: apply `op` to the live document `current` at `version`. `None` when there is
/// no live document (the client gets a 404, nothing is written).
pub fn edit(current: Option<&Entry>, op: &Op, version: Version) -> Option<Edit> {
    let current = current.filter(|e| !e.deleted && e.doc.is_some())?;
    let mut d = Doc::load(&current.value, version.node).ok()?;
    let before = d.head_hashes();
    let patch = match op {
        Op::DocSet { field, value, .. } => PatchOp::Add {
            path: format!("/{field}"),
            value: json!(value),
            counter: false,
        },
        Op::DocIncrement { by, .. } => PatchOp::Increment {
            path: "/hits".into(),
            value: *by,
        },
        _ => return None,
    };
    d.json_patch(&[patch]).ok()?;
    d.commit(hlc::physical_ms(version.hlc) as i64, "patch");
    let hash = *d.head_hashes().first()?;
    let delta_bytes = d.save_after(&before);
    let created = current.epoch();
    let entry = entry(&current.key, &mut d, created, version);
    let delta = Entry {
        value: Bytes::from(delta_bytes),
        doc: entry.doc_meta().map(|m| Box::new(doc::DocMeta { delta: true, ..m })),
        ..entry.clone()
    };
    Some(Edit { entry, delta, hash })
}

/// `Group::merge` for a document of the epoch held (or a delta): the join, and whether it changed anything.
pub fn join(current: &Entry, incoming: &Entry) -> Option<Entry> {
    let joined = doc::join_plain(current, incoming).ok()?;
    joined.supersedes(current).then_some(joined)
}
