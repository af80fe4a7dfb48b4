//! The expiring values of an [`LwwMap`](super::LwwMap), ordered by expiry, so that the database's writer
//! finds the next one to expire without scanning the key space.
//!
//! Expiry itself is a rule of the data model, not of this index: a value whose [`Entry::expires`] the hybrid
//! clock has reached reads as absent ([`Entry::live_at`]), and the tombstone it turns into
//! ([`Entry::expired`]) is the same on every node. The index only says *when* to write that tombstone.

use std::collections::BTreeSet;

use super::Entry;

/// `(expires, key)` of every live value that carries an expiry.
#[derive(Debug, Clone, Default)]
pub struct ExpiryIndex(BTreeSet<(u64, Box<str>)>);

impl ExpiryIndex {
    /// Take note of `entry` coming into the map.
    pub(super) fn add(&mut self, entry: &Entry) {
        if let (Some(at), false) = (entry.expires, entry.deleted) {
            self.0.insert((at, entry.key.as_str().into()));
        }
    }

    /// Forget `entry` going out of the map (replaced or removed).
    pub(super) fn remove(&mut self, entry: &Entry) {
        if let (Some(at), false) = (entry.expires, entry.deleted) {
            self.0.remove(&(at, Box::<str>::from(entry.key.as_str())));
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
