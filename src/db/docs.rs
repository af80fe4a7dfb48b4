//! The writer's document operations: creating and editing documents, and joining a document that arrives
//! from elsewhere with the one held (see [`crate::crdt::doc`] for the merge rule).
//!
//! They live in the writer because an edit reads the current state and writes the next one, and a secret
//! document can only be opened, edited and sealed again with the key the database holds. Each edit becomes
//! one Automerge change stamped with the write's version time, by this node's actor, described by a short
//! summary (what `?history=true` shows).

use bytes::Bytes;

use super::Shared;
use crate::crdt::doc::{self, Doc, PatchOp, DOC_CONTENT_TYPE};
use crate::crdt::{hlc, Entry, Version};
use crate::error::{Error, Result};

/// The saved bytes of a document entry (unsealed).
fn open(shared: &Shared, entry: &Entry) -> Result<Bytes> {
    if entry.secret {
        shared
            .sealer
            .open_envelope(&entry.value)
            .map(Bytes::from)
            .inspect_err(|_| {
                shared.metrics.seal_failure();
            })
    } else {
        Ok(entry.value.clone())
    }
}

/// The live document held in `current`, loaded, or the error a patch gets for what is there instead.
fn held(shared: &Shared, current: Option<&Entry>, key: &str) -> Result<(Doc, Entry)> {
    match current {
        Some(e) if !e.deleted && e.doc.is_some() => Ok((Doc::load(&open(shared, e)?, shared.node)?, e.clone())),
        Some(e) if !e.deleted => Err(Error::Conflict(format!(
            "{key} holds a plain value, not a document: PUT it with ?doc=true to make it one"
        ))),
        _ => Err(Error::NotFound(format!("no document at {key}"))),
    }
}

/// Close `doc`'s pending edits into the entry written at `version`: the saved bytes (sealed if `secret`),
/// bounded by `max_bytes`.
fn finish(
    shared: &Shared,
    (mut doc, before): (Doc, Vec<[u8; 32]>),
    (key, version, created, secret): (String, Version, Version, bool),
    summary: &str,
    max_bytes: usize,
) -> Result<Written> {
    doc.commit(hlc::physical_ms(version.hlc) as i64, summary);
    // A new document goes out whole (no peer holds a part of it), an edit as its one change.
    let delta = (created != version).then(|| doc.save_after(&before));
    let saved = doc.save();
    if saved.len() > max_bytes {
        return Err(Error::TooLarge(format!(
            "the document would take {} bytes saved, over the limit of {max_bytes} bytes",
            saved.len()
        )));
    }
    let meta = doc.meta(created);
    let seal = |bytes: Vec<u8>| {
        if secret {
            Bytes::from(shared.sealer.seal_envelope(&bytes))
        } else {
            Bytes::from(bytes)
        }
    };
    let entry = Entry {
        key: key.into(),
        value: seal(saved),
        content_type: DOC_CONTENT_TYPE.into(),
        secret,
        deleted: false,
        version,
        doc: Some(Box::new(meta)),
        expires: None,
        lease: None,
    };
    Ok(Written {
        entry,
        broadcast: match delta {
            Some(delta) => DocBroadcast::Delta(seal(delta)),
            None => DocBroadcast::Whole,
        },
    })
}

/// A document write: the entry to store, and how it is broadcast.
pub(super) struct Written {
    pub(super) entry: Entry,
    pub(super) broadcast: DocBroadcast,
}

/// `PUT ?doc=true`: a new document (epoch `version`) over anything but a live document; over a live one, one
/// change that makes it equal `json`.
pub(super) fn put(
    shared: &Shared,
    current: Option<&Entry>,
    (key, json, secret): (String, &serde_json::Value, bool),
    version: Version,
    max_bytes: usize,
) -> Result<Written> {
    let (mut doc, created, secret) = match current {
        Some(e) if !e.deleted && e.doc.is_some() => {
            let (doc, e) = held(shared, current, &key)?;
            (doc, e.epoch(), secret || e.secret)
        }
        _ => (Doc::new(shared.node), version, secret),
    };
    let before = doc.head_hashes();
    doc.update_to(json)?;
    let summary = if created == version { "create" } else { "put" };
    finish(
        shared,
        (doc, before),
        (key, version, created, secret),
        summary,
        max_bytes,
    )
}

/// `PATCH`: apply `patch` to the live document in `current`, as one change.
pub(super) fn patch(
    shared: &Shared,
    current: Option<&Entry>,
    key: String,
    patch: &DocPatch,
    version: Version,
    max_bytes: usize,
) -> Result<Written> {
    let (mut doc, held) = held(shared, current, &key)?;
    let before = doc.head_hashes();
    let summary = match patch {
        DocPatch::Merge(json) => {
            doc.merge_patch(json)?;
            let fields: Vec<&str> = json
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            format!("merge-patch {}", fields.join(", "))
        }
        DocPatch::Json(ops) => {
            doc.json_patch(ops)?;
            ops.iter().map(describe).collect::<Vec<_>>().join(", ")
        }
    };
    finish(
        shared,
        (doc, before),
        (key, version, held.epoch(), held.secret),
        &summary,
        max_bytes,
    )
}

fn describe(op: &PatchOp) -> String {
    match op {
        PatchOp::Add { path, .. } => format!("add {path}"),
        PatchOp::Remove { path } => format!("remove {path}"),
        PatchOp::Replace { path, .. } => format!("replace {path}"),
        PatchOp::Test { path, .. } => format!("test {path}"),
        PatchOp::Increment { path, value } => format!("increment {path} by {value}"),
    }
}

/// The join of the held document `current` with `incoming` of the same epoch (opening and sealing secrets).
/// A delta is applied to the held document ([`doc::join`]).
pub(super) fn join(shared: &Shared, current: &Entry, incoming: &Entry) -> Result<Entry> {
    doc::join(current, incoming, &|e| open(shared, e), &|bytes| {
        Bytes::from(shared.sealer.seal_envelope(bytes))
    })
}

/// How a local document write goes out to the peers.
#[derive(Debug, Clone)]
pub(super) enum DocBroadcast {
    /// Whole: a new document, which no peer can hold a part of yet.
    Whole,
    /// Only the new change (the delta's value).
    Delta(Bytes),
}

impl DocBroadcast {
    /// Bytes it holds beyond the entry (for the change stream's value budget).
    pub(super) fn len(this: &Option<DocBroadcast>) -> usize {
        match this {
            Some(DocBroadcast::Delta(bytes)) => bytes.len(),
            _ => 0,
        }
    }
}

/// An edit of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum DocPatch {
    /// RFC 7396 merge patch.
    Merge(serde_json::Value),
    /// RFC 6902 JSON Patch operations (and `increment`).
    Json(Vec<crate::crdt::doc::PatchOp>),
}
