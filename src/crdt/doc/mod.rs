//! Document values: a JSON object held as an Automerge document, whose fields merge instead of one writer
//! winning.
//!
//! A document is an [`Entry`] whose `doc` is [`Some`]: its `value` holds the document's saved Automerge bytes
//! (for a secret, the sealed envelope of them, exactly like any secret value), and [`DocMeta`] says, in the
//! clear, which document it is and how far its history goes.
//!
//! # The merge rule
//! - **Epoch first.** Every entry has an *epoch*: a document's is the version of the write that created it
//!   ([`DocMeta::created`]), an LWW value's or a tombstone's is its own version. [`Entry::precedence`] orders
//!   by epoch before anything else, so between kinds the later *creation* decides: a delete or a plain write
//!   made after a document was created removes it everywhere, including edits that a partitioned node made to
//!   that document concurrently (they came from a document the delete had already removed); only a new
//!   create (`PUT ?doc=true`) after the delete brings a document back. The rule is remove-wins, chosen
//!   because it keeps the merge a semilattice: "a later edit revives the document" would make the result
//!   depend on whether the edit met the delete before or after it met older edits.
//! - **One epoch, one document.** Two documents of the same epoch are two states of one Automerge document:
//!   they merge by Automerge's merge, the union of their changes (concurrent edits of different fields both
//!   survive, one field's concurrent writes get Automerge's deterministic winner, counter increments add up).
//!   The merged entry's version is the greater of the two, so the union of the same changes always carries
//!   the same version. Union is commutative, associative and idempotent, and the epoch order is total, so
//!   the whole merge is a join-semilattice (property-tested in `tests.rs` over random concurrent edits on
//!   2 to 4 replicas).
//! - **Heads in the digest.** [`DocMeta::heads`] is a hash of the document's heads (the change hashes that
//!   nothing depends on yet: they name its whole history) and [`DocMeta::changes`] the number of its changes.
//!   Both are part of the entry's digest hash and of [`Entry::precedence`] (after the version): two replicas
//!   holding different changes under one version differ in the digest, so anti-entropy finds and joins
//!   them, and a later state of one node's document (a superset of the changes, so more of them) always wins
//!   over an earlier one in the stores, which only ever see a node's successive states.
//!
//! Entry::merge joins plain documents itself. A secret document's changes are sealed, so only the database
//! (which holds the key) can join two of them ([`join`] with its sealer); without the key the merge keeps
//! the greater precedence, which is right for the successive states of one node that the stores see.

mod counter;
mod edit;
#[cfg(test)]
mod tests;

use automerge::transaction::CommitOptions;
use automerge::{ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use bytes::Bytes;
use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use super::{Entry, NodeId, Version};
use crate::error::{Error, Result};

pub use edit::PatchOp;

/// What an entry says in the clear about the document it holds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct DocMeta {
    /// The version of the write that created the document: its epoch (see the module docs).
    pub created: Version,
    /// The number of changes in its history.
    pub changes: u64,
    /// XXH3-64 of its sorted heads: equal heads, equal history.
    pub heads: u64,
    /// The entry is a broadcast delta: `value` holds only the changes of one edit (Automerge's incremental
    /// save after the heads before it), not the whole document. A delta is joined into the document its
    /// receiver holds, never stored itself; one whose dependencies the receiver lacks is dropped, and
    /// anti-entropy (which sends whole documents) repairs.
    pub delta: bool,
}

/// One change of a document's history, as `?history=true` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangeSummary {
    /// The node that made the change (its Automerge actor).
    pub node: String,
    /// When, in milliseconds since the Unix epoch, by the writer's clock.
    pub time_ms: i64,
    /// The change hash (hex).
    pub hash: String,
    /// What the change did, as the writer described it.
    pub summary: String,
}

/// An Automerge document being read or edited.
pub struct Doc {
    inner: AutoCommit,
}

impl std::fmt::Debug for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Doc(..)")
    }
}

/// The Automerge actor of a node: its id, so each change names the node that made it.
fn actor_of(node: NodeId) -> ActorId {
    ActorId::from(node.0.to_be_bytes().as_slice())
}

impl Doc {
    /// An empty document edited by `node`.
    pub fn new(node: NodeId) -> Doc {
        Doc {
            inner: AutoCommit::new().with_actor(actor_of(node)),
        }
    }

    /// A document from its saved bytes, edited by `node` from now on.
    pub fn load(bytes: &[u8], node: NodeId) -> Result<Doc> {
        let inner =
            AutoCommit::load(bytes).map_err(|e| Error::Corrupt(format!("a stored document does not load: {e}")))?;
        Ok(Doc {
            inner: inner.with_actor(actor_of(node)),
        })
    }

    /// The saved bytes (the whole history, compressed).
    pub fn save(&mut self) -> Vec<u8> {
        self.inner.save()
    }

    /// The document's metadata, for a document created at `created`.
    pub fn meta(&mut self, created: Version) -> DocMeta {
        let mut heads = self.inner.get_heads();
        heads.sort();
        let mut hasher = Xxh3::new();
        for head in &heads {
            hasher.update(&head.0);
        }
        DocMeta {
            created,
            changes: self.inner.stats().num_changes,
            heads: hasher.digest(),
            delta: false,
        }
    }

    /// The changes made after `heads` ([`Doc::head_hashes`] earlier), in Automerge's incremental format.
    pub fn save_after(&mut self, heads: &[[u8; 32]]) -> Vec<u8> {
        let heads: Vec<ChangeHash> = heads.iter().map(|h| ChangeHash(*h)).collect();
        self.inner.save_after(&heads)
    }

    /// Take in incremental changes. Returns false when some of them depend on changes this document lacks
    /// (they are then not applied: the caller drops the document rather than save a gap).
    pub fn apply_delta(&mut self, bytes: &[u8]) -> Result<bool> {
        self.inner
            .load_incremental(bytes)
            .map_err(|e| Error::Corrupt(format!("a document delta does not load: {e}")))?;
        Ok(self.inner.get_missing_deps(&[]).is_empty())
    }

    /// Take in every change of `other`.
    pub fn merge(&mut self, other: &mut Doc) -> Result<()> {
        self.inner
            .merge(&mut other.inner)
            .map(drop)
            .map_err(|e| Error::Corrupt(format!("documents do not merge: {e}")))
    }

    /// Close the pending edits into one change stamped `time_ms` and described by `summary`. Returns false
    /// when the edits changed nothing (no change is made then).
    pub fn commit(&mut self, time_ms: i64, summary: &str) -> bool {
        self.inner
            .commit_with(CommitOptions::default().with_message(summary).with_time(time_ms))
            .is_some()
    }

    /// The materialised JSON (counters as their current numbers).
    pub fn to_json(&self) -> serde_json::Value {
        json_of(&self.inner, &ROOT)
    }

    /// Whether the document holds the change of hash `hash`.
    pub fn contains(&mut self, hash: &[u8; 32]) -> bool {
        self.inner.get_change_by_hash(&ChangeHash(*hash)).is_some()
    }

    /// The hashes of the heads.
    pub fn head_hashes(&mut self) -> Vec<[u8; 32]> {
        self.inner.get_heads().into_iter().map(|h| h.0).collect()
    }

    /// Every change, in causal order (newest last).
    pub fn history(&mut self) -> Vec<ChangeSummary> {
        self.inner
            .get_changes(&[])
            .into_iter()
            .map(|change| {
                let actor = change.actor_id().to_bytes();
                let node = match <[u8; 8]>::try_from(actor) {
                    Ok(bytes) => NodeId(u64::from_be_bytes(bytes)).to_string(),
                    Err(_) => change.actor_id().to_hex_string(),
                };
                ChangeSummary {
                    node,
                    time_ms: change.timestamp(),
                    hash: hex(&change.hash()),
                    summary: change.message().unwrap_or_default().to_string(),
                }
            })
            .collect()
    }
}

fn hex(hash: &ChangeHash) -> String {
    hash.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JSON of one object of `doc`.
pub(super) fn json_of<R: ReadDoc>(doc: &R, obj: &ObjId) -> serde_json::Value {
    use serde_json::Value as J;
    match doc.object_type(obj) {
        Ok(ObjType::Map) | Ok(ObjType::Table) => {
            let mut map = serde_json::Map::new();
            for key in doc.keys(obj) {
                if let Some(value) = member_json(doc, obj, automerge::Prop::Map(key.clone())) {
                    map.insert(key, value);
                }
            }
            J::Object(map)
        }
        Ok(ObjType::List) => J::Array(
            (0..doc.length(obj))
                .filter_map(|i| member_json(doc, obj, automerge::Prop::Seq(i)))
                .collect(),
        ),
        Ok(ObjType::Text) => J::String(doc.text(obj).unwrap_or_default()),
        Err(_) => J::Null,
    }
}

/// The JSON of the member at `prop` of `obj` (a counter as its number), `None` if there is none.
pub(super) fn member_json<R: ReadDoc>(doc: &R, obj: &ObjId, prop: automerge::Prop) -> Option<serde_json::Value> {
    if let Some(n) = counter::total(doc, obj, prop.clone()) {
        return Some(n.into());
    }
    match doc.get(obj, prop).ok()?? {
        (Value::Object(_), id) => Some(json_of(doc, &id)),
        (Value::Scalar(s), _) => Some(scalar_json(&s)),
    }
}

fn scalar_json(s: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    match s {
        ScalarValue::Null | ScalarValue::Unknown { .. } => J::Null,
        ScalarValue::Boolean(b) => J::Bool(*b),
        ScalarValue::Int(i) => J::from(*i),
        ScalarValue::Uint(u) => J::from(*u),
        ScalarValue::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        ScalarValue::Counter(c) => J::from(i64::from(c)),
        ScalarValue::Timestamp(t) => J::from(*t),
        ScalarValue::Str(s) => J::String(s.to_string()),
        ScalarValue::Bytes(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
    }
}

/// Join two document entries of one key and one epoch: the union of their changes, at the greater version;
/// `b` may be a delta ([`DocMeta::delta`]), which is applied to `a`.
/// `open` gives a document's saved bytes (it unseals a secret), `seal` seals the result when either was a
/// secret. Two entries with equal heads hold the same history: the one of greater precedence is returned
/// without loading anything.
pub fn join(
    a: &Entry,
    b: &Entry,
    open: &dyn Fn(&Entry) -> Result<Bytes>,
    seal: &dyn Fn(&[u8]) -> Bytes,
) -> Result<Entry> {
    let (Some(meta_a), Some(meta_b)) = (a.doc_meta(), b.doc_meta()) else {
        return Err(Error::internal("join of entries that are not both documents"));
    };
    if meta_a.created != meta_b.created || meta_a.delta {
        return Err(Error::internal(
            "join of documents of different epochs, or onto a delta",
        ));
    }
    if meta_b.delta {
        // The change of a delta applies to the whole document held; one that depends on changes missing here
        // leaves it as it is (the whole document comes with anti-entropy).
        let mut doc = Doc::load(&open(a)?, NodeId(0))?;
        if !doc.apply_delta(&open(b)?)? || doc.meta(meta_a.created).heads == meta_a.heads {
            return Ok(a.clone());
        }
        let saved = doc.save();
        let secret = a.secret || b.secret;
        return Ok(Entry {
            value: if secret { seal(&saved) } else { Bytes::from(saved) },
            secret,
            version: a.version.max(b.version),
            doc: Some(Box::new(doc.meta(meta_a.created))),
            ..a.clone()
        });
    }
    let winner = if b.supersedes(a) { b } else { a };
    if (meta_a.heads, meta_a.changes) == (meta_b.heads, meta_b.changes) {
        return Ok(winner.clone());
    }
    // The actor of a document only matters for edits, and a join makes none.
    let mut left = Doc::load(&open(a)?, NodeId(0))?;
    let mut right = Doc::load(&open(b)?, NodeId(0))?;
    left.merge(&mut right)?;
    let saved = left.save();
    let secret = a.secret || b.secret;
    Ok(Entry {
        key: winner.key.clone(),
        value: if secret { seal(&saved) } else { Bytes::from(saved) },
        content_type: winner.content_type.clone(),
        secret,
        deleted: false,
        version: a.version.max(b.version),
        doc: Some(Box::new(left.meta(meta_a.created))),
        expires: None,
        lease: None,
    })
}

/// [`join`] of two plain (not secret) documents.
pub fn join_plain(a: &Entry, b: &Entry) -> Result<Entry> {
    join(a, b, &|e| Ok(e.value.clone()), &|bytes| Bytes::copy_from_slice(bytes))
}

/// The content type of a document's materialised JSON.
pub const DOC_CONTENT_TYPE: &str = "application/json";
