//! Evaluating a merge (entries from a peer or an import) into a commit group: the rule, once, and the two
//! ways a group holds what it keeps.
//!
//! A merge keeps an entry only if it supersedes what the node has, where "what the node has" is the group's
//! own uncommitted effect on the key if there is one, else the map. A small merge shares its group with
//! other commands, which must see its effects: it goes through the group's overlay, a map by key. A bulk
//! merge (an import's request, a large repair; at least [`super::BULK_MERGE_ENTRIES`] entries) is a group of its
//! own: its entries are sorted by key, so that duplicates of a key meet side by side and the result is
//! already the sorted, unique batch the store and the map take, and no overlay is built for it (hashing and
//! growing a map of 100,000 entries, then collecting and sorting it again, was a tenth of an import's CPU).

use super::{Group, Shared};
use crate::crdt::{Entry, Version};
use crate::db::Published;

/// What merging `entry` over `current` (the node's entry of its key, if any) keeps: the entry, or its join
/// with the document held, if that supersedes `current`.
fn winner(shared: &Shared, current: Option<&Entry>, entry: Entry) -> Option<Entry> {
    shared.hlc.observe(entry.version.hlc);
    match current {
        // A delta only applies to the document it is a change of; anything else is not stored.
        current if entry.is_delta() && !current.is_some_and(|c| c.same_document(&entry)) => None,
        Some(current) if current.same_document(&entry) => match super::super::docs::join(shared, current, &entry) {
            Ok(joined) => joined.supersedes(current).then_some(joined),
            Err(err) => {
                // Bytes that do not load or open: keep what is held (anti-entropy offers them again).
                tracing::warn!(key = %entry.key, error = %err, "a replicated document could not be joined");
                None
            }
        },
        Some(current) => entry.supersedes(current).then_some(entry),
        None => Some(entry),
    }
}

impl Group {
    /// Merge a few entries into the group's overlay, where later commands of the group see them. Returns
    /// how many were kept.
    pub(super) fn merge(&mut self, shared: &Shared, entries: Vec<Entry>, imported: bool) -> usize {
        let mut applied = 0;
        for entry in entries {
            let current = self.current(shared, &entry.key);
            if let Some(kept) = winner(shared, current.as_ref(), entry) {
                self.changes.push(Published::Entry {
                    entry: kept.clone(),
                    imported,
                });
                self.overlay.insert(kept.key.clone(), kept);
                applied += 1;
            }
        }
        applied
    }

    /// Merge a bulk of entries as the group's only command: into [`Group::bulk`], sorted by key with one
    /// entry per key. Its value events go out by reference (see [`super::BULK_MERGE_ENTRIES`]). Returns how many
    /// entries were kept (a key's later duplicate that supersedes the earlier counts too, as in
    /// [`Group::merge`]).
    pub(super) fn merge_bulk(&mut self, shared: &Shared, mut entries: Vec<Entry>, imported: bool) -> usize {
        debug_assert!(
            self.is_empty() && self.overlay.is_empty(),
            "a bulk merge is a group of its own"
        );
        // Stable: a key's duplicates keep the request's order, and each is merged over the one before. An
        // export is in key order already, and a sort would allocate its scratch (up to the whole bulk) anyway.
        if !entries.is_sorted_by(|a, b| a.key <= b.key) {
            entries.sort_by(|a, b| a.key.cmp(&b.key));
        }
        // In place: `entries[..kept]` holds what the bulk keeps so far, one per key; each entry is taken out
        // of its slot (left holding an empty tombstone) before its verdict. A second vector of the bulk's
        // size would be fresh pages the kernel zeroes, on every import request.
        let mut kept = 0;
        let mut applied = 0;
        // One event an entry at most: reserved once rather than grown by doubling into fresh pages.
        self.changes.reserve(entries.len());
        // Only this task writes the map: reading it under one lock for the whole bulk blocks no reader.
        let state = shared.state.read();
        for next in 0..entries.len() {
            let entry = std::mem::replace(&mut entries[next], Entry::tombstone(String::new(), Version::ZERO));
            let duplicate = kept > 0 && entries[kept - 1].key == entry.key;
            let current = if duplicate {
                Some(&entries[kept - 1])
            } else {
                state.get(&entry.key)
            };
            let Some(winner) = winner(shared, current, entry) else {
                continue;
            };
            self.changes.push(if winner.deleted {
                Published::Entry {
                    entry: winner.clone(),
                    imported,
                }
            } else {
                Published::Named {
                    key: winner.key.clone(),
                    version: winner.version,
                    imported,
                }
            });
            if duplicate {
                entries[kept - 1] = winner;
            } else {
                entries[kept] = winner;
                kept += 1;
            }
            applied += 1;
        }
        drop(state);
        entries.truncate(kept);
        self.bulk = entries;
        applied
    }
}
