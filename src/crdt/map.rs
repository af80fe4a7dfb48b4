//! [`LwwMap`]: the whole key space as a map of last-writer-wins registers, held in memory.
//!
//! This is the state every node converges on. It is a pure data structure (no I/O, no locks, no clock):
//! the local database wraps it behind a lock and persists what changes, the replication core and the
//! simulation use it directly. Keys are kept ordered so that a folder listing or a prefix scan is a range
//! query rather than a scan of everything.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::digest::{bucket_of, DigestTree, BUCKETS};
use super::Entry;

/// Ordered map of keys to their winning [`Entry`], tombstones included, with its anti-entropy digest.
#[derive(Debug, Clone)]
pub struct LwwMap {
    entries: BTreeMap<String, Entry>,
    tombstones: usize,
    bytes: usize,
    digest: DigestTree,
    /// Keys of each digest bucket, so an anti-entropy round lists a bucket without scanning every key.
    buckets: Box<[Vec<Box<str>>]>,
}

impl Default for LwwMap {
    fn default() -> LwwMap {
        LwwMap {
            entries: BTreeMap::new(),
            tombstones: 0,
            bytes: 0,
            digest: DigestTree::default(),
            buckets: vec![Vec::new(); BUCKETS].into(),
        }
    }
}

impl LwwMap {
    /// An empty map.
    pub fn new() -> LwwMap {
        LwwMap::default()
    }

    /// The anti-entropy digest of everything the map holds.
    pub fn digest(&self) -> &DigestTree {
        &self.digest
    }

    /// The entries of one digest bucket (in no particular order).
    pub fn bucket_entries(&self, bucket: u16) -> impl Iterator<Item = &Entry> {
        self.buckets[bucket as usize]
            .iter()
            .filter_map(|k| self.entries.get(&**k))
    }

    /// The entry of `key`, tombstone or not.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The entry of `key` if it holds a live value.
    pub fn get_live(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).filter(|e| !e.deleted)
    }

    /// Merge `entry` in ([`Entry::merge`]: a document of the epoch held joins it). Returns true when the map
    /// changed, false when it already held the entry, or something newer.
    pub fn merge(&mut self, entry: Entry) -> bool {
        // A delta is a part of a document: only the database, which can apply it to the whole, takes one.
        if entry.is_delta() {
            return false;
        }
        let entry = match self.entries.get(&entry.key) {
            Some(current) if current.same_document(&entry) => current.clone().merge(entry),
            _ => entry,
        };
        self.install(entry)
    }

    /// Put `entry` in if it supersedes what the map holds ([`Entry::supersedes`], no document join): for an
    /// entry that is already the join of what the map holds with something else (the database's writer
    /// joins documents before it commits them). Returns true when the map changed.
    pub fn install(&mut self, entry: Entry) -> bool {
        if entry.is_delta() {
            return false;
        }
        match self.entries.get_mut(&entry.key) {
            Some(current) => {
                if !entry.supersedes(current) {
                    return false;
                }
                self.digest.toggle(current);
                self.digest.toggle(&entry);
                let old = std::mem::replace(current, entry);
                let new_size = (current.deleted, current.size());
                Self::account(&mut self.tombstones, &mut self.bytes, (old.deleted, old.size()), -1);
                Self::account(&mut self.tombstones, &mut self.bytes, new_size, 1);
            }
            None => {
                Self::account(&mut self.tombstones, &mut self.bytes, (entry.deleted, entry.size()), 1);
                self.digest.toggle(&entry);
                self.buckets[bucket_of(&entry.key) as usize].push(entry.key.as_str().into());
                self.entries.insert(entry.key.clone(), entry);
            }
        }
        true
    }

    /// Drop `key` entirely (tombstone purge). Returns the removed entry.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let removed = self.entries.remove(key)?;
        self.digest.toggle(&removed);
        let bucket = &mut self.buckets[bucket_of(key) as usize];
        if let Some(i) = bucket.iter().position(|k| &**k == key) {
            bucket.swap_remove(i);
        }
        Self::account(
            &mut self.tombstones,
            &mut self.bytes,
            (removed.deleted, removed.size()),
            -1,
        );
        Some(removed)
    }

    /// Adjust the counters by one entry `(deleted, size)` coming in (`sign` 1) or going out (-1).
    fn account(tombstones: &mut usize, bytes: &mut usize, (deleted, size): (bool, usize), sign: isize) {
        if deleted {
            *tombstones = tombstones.wrapping_add_signed(sign);
        }
        *bytes = bytes.wrapping_add_signed(sign * size as isize);
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn range_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
    }

    /// Entries whose key starts with `prefix` and is strictly after `after` (every one if `None`), in key
    /// order. A seek, not a scan: a walk over the key space in pages costs its size once, whatever the page.
    pub fn range_after<'a>(&'a self, prefix: &'a str, after: Option<&'a str>) -> impl Iterator<Item = &'a Entry> + 'a {
        self.range_from(prefix, after.map_or(Bound::Unbounded, Bound::Excluded))
    }

    /// Entries whose key starts with `prefix`, from `lower` on (a bound below the prefix starts at the
    /// prefix), in key order.
    pub fn range_from<'a>(&'a self, prefix: &'a str, lower: Bound<&'a str>) -> impl Iterator<Item = &'a Entry> + 'a {
        let lower = match lower {
            Bound::Included(k) | Bound::Excluded(k) if k < prefix => Bound::Included(prefix),
            Bound::Unbounded => Bound::Included(prefix),
            bound => bound,
        };
        self.entries
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
    }

    /// Direct children of the folder whose keys start with `prefix` (`""` for the root, else ending in
    /// `/`): live keys as themselves, deeper paths as their folder ending in `/`, each once, in order.
    ///
    /// Cost grows with the number of children, not with the size of the subtree: after a folder is found
    /// the scan jumps past all its keys.
    pub fn children(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut from = prefix.to_string();
        let mut inclusive = true;
        loop {
            let lower = if inclusive {
                Bound::Included(from.as_str())
            } else {
                Bound::Excluded(from.as_str())
            };
            let next = self
                .entries
                .range::<str, _>((lower, Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .find(|(k, e)| !e.deleted || k[prefix.len()..].contains('/'));
            let Some((key, _)) = next else { break };
            let rest = &key[prefix.len()..];
            match rest.find('/') {
                Some(slash) => {
                    let folder = &key[..prefix.len() + slash + 1];
                    // Only list a folder that has a live key below it.
                    if self.range_prefix(folder).any(|e| !e.deleted) {
                        out.push(folder.to_string());
                    }
                    // Jump past every key of the folder: '0' is the byte after '/'.
                    from = format!("{}0", &folder[..folder.len() - 1]);
                    inclusive = true;
                }
                None => {
                    out.push(key.clone());
                    from = key.clone();
                    inclusive = false;
                }
            }
        }
        out
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Number of keys, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of live keys.
    pub fn live(&self) -> usize {
        self.entries.len() - self.tombstones
    }

    /// Number of tombstones.
    pub fn tombstones(&self) -> usize {
        self.tombstones
    }

    /// Estimated bytes held (keys, values, metadata).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{NodeId, Version};

    fn v(hlc: u64) -> Version {
        Version::new(hlc, NodeId(1))
    }

    #[test]
    fn merge_keeps_newest_and_counts() {
        let mut map = LwwMap::new();
        assert!(map.merge(Entry::value("a", "1", v(2))));
        assert!(!map.merge(Entry::value("a", "0", v(1))));
        assert!(!map.merge(Entry::value("a", "1", v(2))));
        assert_eq!(map.get_live("a").unwrap().value, "1");
        assert!(map.merge(Entry::tombstone("a", v(3))));
        assert_eq!((map.live(), map.tombstones()), (0, 1));
        assert!(map.get_live("a").is_none());
        map.remove("a");
        assert_eq!((map.len(), map.tombstones(), map.bytes()), (0, 0, 0));
        assert_eq!(map.digest().root(), 0);
        assert_eq!(map.bucket_entries(crate::crdt::digest::bucket_of("a")).count(), 0);
    }

    #[test]
    fn digest_follows_the_winning_entries() {
        let mut a = LwwMap::new();
        let mut b = LwwMap::new();
        a.merge(Entry::value("k", "1", v(1)));
        a.merge(Entry::value("k", "2", v(2)));
        b.merge(Entry::value("k", "2", v(2)));
        assert_eq!(a.digest().root(), b.digest().root());
        b.merge(Entry::tombstone("k", v(3)));
        assert_ne!(a.digest().root(), b.digest().root());
        let bucket = crate::crdt::digest::bucket_of("k");
        assert_eq!(
            b.bucket_entries(bucket).map(|e| e.version).collect::<Vec<_>>(),
            vec![v(3)]
        );
    }

    #[test]
    fn range_after_starts_after_the_cursor_and_stays_in_the_prefix() {
        let mut map = LwwMap::new();
        for (i, k) in ["a", "b/1", "b/2", "b/3", "b0", "c"].iter().enumerate() {
            map.merge(Entry::value(*k, "v", v(i as u64 + 1)));
        }
        let keys = |prefix, after| {
            map.range_after(prefix, after)
                .map(|e| e.key.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys("", None), ["a", "b/1", "b/2", "b/3", "b0", "c"]);
        assert_eq!(keys("", Some("b/2")), ["b/3", "b0", "c"]);
        assert_eq!(keys("b/", None), ["b/1", "b/2", "b/3"]);
        assert_eq!(keys("b/", Some("b/1")), ["b/2", "b/3"]);
        // A cursor before the prefix starts at the prefix, one past it yields nothing.
        assert_eq!(keys("b/", Some("a")), ["b/1", "b/2", "b/3"]);
        assert!(keys("b/", Some("b/3")).is_empty());
        assert!(keys("b/", Some("c")).is_empty());
    }

    #[test]
    fn children_lists_keys_and_folders_once() {
        let mut map = LwwMap::new();
        for (i, k) in ["a/x", "a/y/1", "a/y/2", "a/y0", "a/z/deep/k", "b", "a/gone/k"]
            .iter()
            .enumerate()
        {
            map.merge(Entry::value(*k, "v", v(i as u64 + 1)));
        }
        map.merge(Entry::tombstone("a/gone/k", v(100)));
        map.merge(Entry::value("a/dead", "", v(1)));
        map.merge(Entry::tombstone("a/dead", v(101)));
        assert_eq!(map.children("a/"), vec!["a/x", "a/y/", "a/y0", "a/z/"]);
        assert_eq!(map.children(""), vec!["a/", "b"]);
        assert_eq!(map.children("a/y/"), vec!["a/y/1", "a/y/2"]);
        assert!(map.children("nothing/").is_empty());
    }
}
