//! The expiring values of an [`LwwMap`], ordered by expiry, so that the database's writer
//! finds the next one to expire without scanning the key space.
//!
//! Expiry itself is a rule of the data model, not of this index: a value whose [`Entry::expires`] the hybrid
//! clock has reached reads as absent ([`Entry::live_at`]), and the tombstone it turns into
//! ([`Entry::expired`]) is the same on every node. The index only says *when* to write that tombstone.

use std::collections::BTreeSet;
use std::num::NonZeroU64;

use super::{Entry, LwwMap};

/// The expiry at hybrid-clock time `hlc`, as an entry holds it: 0, which no clock stamps but an import or a
/// peer may send, means expired long ago and becomes 1.
pub fn at(hlc: u64) -> NonZeroU64 {
    NonZeroU64::new(hlc).unwrap_or(NonZeroU64::MIN)
}

impl LwwMap {
    /// The tombstones ([`Entry::expired`]) of at most `limit` values expired at hybrid-clock time `now`,
    /// earliest first, then of values bound to a lease that has ended: what a node merges into its state to collect them. The database's writer and the
    /// simulation's both sweep with this.
    pub fn expired_due(&self, now: u64, limit: usize) -> Vec<Entry> {
        let mut due = if self.expiring().next().is_none_or(|at| at > now) {
            Vec::new()
        } else {
            self.expiring()
                .due(now, limit)
                .into_iter()
                .filter_map(|key| self.get(key))
                .map(Entry::expired)
                .collect()
        };
        // Values bound to a lease that ended ([`super::lease`]) are collected by the same sweep.
        if due.len() < limit && self.bound.any_ended() {
            // A value both expired and bound to an ended lease may come twice: the same tombstone, merged once.
            let more = self.lease_ended_due(limit - due.len());
            due.extend(more);
        }
        due
    }
}

/// `(expires, key)` of every live value that carries an expiry.
#[derive(Debug, Clone, Default)]
pub struct ExpiryIndex(BTreeSet<(u64, Box<str>)>);

impl ExpiryIndex {
    /// Take note of `entry` coming into the map.
    pub(super) fn add(&mut self, entry: &Entry) {
        if let (Some(at), false) = (entry.expires, entry.deleted) {
            self.0.insert((at.get(), entry.key.as_str().into()));
        }
    }

    /// Take in every expiry `other` holds.
    pub(super) fn append(&mut self, other: &mut ExpiryIndex) {
        self.0.append(&mut other.0);
    }

    /// Forget `entry` going out of the map (replaced or removed).
    pub(super) fn remove(&mut self, entry: &Entry) {
        if let (Some(at), false) = (entry.expires, entry.deleted) {
            self.0.remove(&(at.get(), Box::<str>::from(entry.key.as_str())));
        }
    }

    /// The earliest expiry of a live value.
    pub fn next(&self) -> Option<u64> {
        self.0.first().map(|(at, _)| *at)
    }

    /// Keys of the live values expired at `now`, earliest first, at most `limit` of them.
    pub fn due(&self, now: u64, limit: usize) -> Vec<&str> {
        self.0
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, key)| &**key)
            .collect()
    }

    /// How many live values carry an expiry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no live value carries an expiry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crdt::{NodeId, Version};

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            prop::sample::select(vec!["a", "b", "c/d"]),
            0u64..6,
            any::<bool>(),
            prop::option::of(0u64..8),
        )
            .prop_map(|(key, hlc, deleted, expires)| {
                let version = Version::new(hlc, NodeId(1));
                let entry = if deleted {
                    Entry::tombstone(key, version)
                } else {
                    Entry::value(key, "v", version)
                };
                Entry {
                    expires: expires.map(at),
                    ..entry
                }
            })
    }

    /// What the index must hold: every live value that carries an expiry, by `(expires, key)`.
    fn brute(map: &LwwMap) -> Vec<(u64, String)> {
        let mut all: Vec<_> = map
            .iter()
            .filter(|e| !e.deleted)
            .filter_map(|e| e.expires.map(|at| (at.get(), e.key.to_string())))
            .collect();
        all.sort();
        all
    }

    fn indexed(map: &LwwMap) -> Vec<(u64, String)> {
        map.expiring()
            .due(u64::MAX, usize::MAX)
            .into_iter()
            .map(|k| (map.get(k).unwrap().expires.unwrap().get(), k.to_string()))
            .collect()
    }

    proptest! {
        /// Through merges, replacements, removals and a bulk load, the index is exactly the live expiring
        /// values; a sweep at `now` leaves none due, and every node sweeping the same values derives the
        /// same tombstones.
        #[test]
        fn the_index_follows_the_map_and_a_sweep_collects_what_is_due(
            entries in prop::collection::vec(arb_entry(), 0..12),
            removed in prop::option::of(prop::sample::select(vec!["a", "b", "c/d"])),
            now in 0u64..8,
        ) {
            let mut map = LwwMap::new();
            for e in entries.iter().cloned() {
                map.merge(e);
            }
            if let Some(key) = removed {
                map.remove(key);
            }
            prop_assert_eq!(indexed(&map), brute(&map));
            let bulk = LwwMap::from_entries(map.iter().cloned().collect());
            prop_assert_eq!(indexed(&bulk), brute(&bulk));

            let tombstones = map.expired_due(now, usize::MAX);
            prop_assert!(tombstones.iter().all(|t| t.deleted && t.expires.is_some_and(|at| at.get() <= now)));
            for t in tombstones.iter().cloned() {
                prop_assert!(map.merge(t), "an expiry's tombstone always supersedes its value");
            }
            prop_assert!(map.expiring().next().is_none_or(|at| at > now));
            prop_assert!(map.iter().all(|e| !e.live_at(now) || e.expires.is_none_or(|at| at.get() > now)));
            prop_assert_eq!(indexed(&map), brute(&map));
            prop_assert_eq!(bulk.expired_due(now, usize::MAX), tombstones);
        }
    }
}
