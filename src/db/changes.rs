//! The change stream's events: what a commit publishes ([`publish`]), and how an event gives its entry back,
//! from what it holds or from the map ([`held_entry`], [`resolve_in`]). The value budget is explained in the
//! module essay of [`crate::db`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::docs::DocBroadcast;
use super::{Shared, EVENT_VALUE_BUDGET_BYTES};
use crate::crdt::{Entry, Key, LwwMap, Version};

/// One committed change on the change stream: the key and the version it moved to, with the entry itself
/// while the stream's value budget has room. [`Db::resolve`](super::Db::resolve) gives the entry either way.
#[derive(Debug)]
pub struct Change {
    /// The key that changed.
    pub key: Key,
    /// The version it moved to (a newer one may have replaced it since).
    pub version: Version,
    /// Whether the change wrote a tombstone.
    pub deleted: bool,
    /// Whether it came in through this node's import (`POST /api/v1/import`): this node is the entry point of
    /// such entries into the cluster, and pushes them to its peers as it pushes its own writes, whoever
    /// wrote them (see [`crate::replication::Core::on_import`]).
    pub imported: bool,
    pub(super) held: Option<Held>,
}

/// The rest of a change's entry, counted in the value budget until dropped.
#[derive(Debug)]
pub(super) struct Held {
    value: Bytes,
    content_type: crate::crdt::ContentType,
    secret: bool,
    pub(super) doc: Option<crate::crdt::DocMeta>,
    expires: Option<std::num::NonZeroU64>,
    lease: Option<crate::crdt::LeaseId>,
    /// For a local document write: how it is broadcast.
    pub(super) delta: Option<DocBroadcast>,
    budget: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget
            .fetch_sub(self.value.len() + DocBroadcast::len(&self.delta), Ordering::AcqRel);
    }
}

impl Change {
    /// The event for `entry`: holding it if `budget` (bytes held by events so far) has room for its value.
    fn new(entry: Entry, delta: Option<DocBroadcast>, budget: &Arc<AtomicUsize>) -> Change {
        let size = entry.value.len() + DocBroadcast::len(&delta);
        let fits = budget.fetch_add(size, Ordering::AcqRel) + size <= EVENT_VALUE_BUDGET_BYTES;
        let held = if fits {
            Some(Held {
                value: entry.value,
                content_type: entry.content_type,
                secret: entry.secret,
                doc: entry.doc.map(|d| *d),
                expires: entry.expires,
                lease: entry.lease,
                delta,
                budget: budget.clone(),
            })
        } else {
            budget.fetch_sub(size, Ordering::AcqRel);
            None
        };
        Change {
            key: entry.key,
            version: entry.version,
            deleted: entry.deleted,
            imported: false,
            held,
        }
    }

    /// Whether the event carries its entry (rather than only naming it).
    pub fn holds_entry(&self) -> bool {
        self.held.is_some()
    }
}

/// Publish committed entries on the change stream, in order (the writer calls this after the map took them).
pub(super) fn publish(shared: &Shared, changes: Vec<Published>, mut deltas: HashMap<(Key, Version), DocBroadcast>) {
    for change in changes {
        let change = match change {
            Published::Entry { entry, imported } => {
                let delta = if deltas.is_empty() {
                    None
                } else {
                    deltas.remove(&(entry.key.clone(), entry.version))
                };
                Change {
                    imported,
                    ..Change::new(entry, delta, &shared.event_bytes)
                }
            }
            Published::Named { key, version, imported } => Change {
                key,
                version,
                deleted: false,
                imported,
                held: None,
            },
        };
        // No subscribers is fine: nobody is watching (and the dropped event gives its bytes back).
        let _ = shared.events.send(Arc::new(change));
    }
}

/// A committed change as the writer hands it to [`publish`].
pub(super) enum Published {
    /// The entry, held by its event if the budget has room; `imported` as in [`Change::imported`].
    Entry { entry: Entry, imported: bool },
    /// A value named by key and version only: its event is by reference.
    Named { key: Key, version: Version, imported: bool },
}

pub(super) fn held_entry(change: &Change) -> Option<Entry> {
    change.held.as_ref().map(|held| Entry {
        key: change.key.clone(),
        value: held.value.clone(),
        content_type: held.content_type.clone(),
        secret: held.secret,
        deleted: change.deleted,
        version: change.version,
        doc: held.doc.map(Box::new),
        expires: held.expires,
        lease: held.lease,
    })
}

pub(super) fn resolve_in(state: &LwwMap, change: &Change) -> Option<Entry> {
    match state.get(&change.key) {
        Some(e) if e.version == change.version && e.deleted == change.deleted => Some(e.clone()),
        None if change.deleted => Some(Entry::tombstone(change.key.clone(), change.version)),
        _ => None,
    }
}
