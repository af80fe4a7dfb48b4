//! The anti-entropy digest: a fixed two-level hash tree over all entries, maintained incrementally.
//!
//! Keys hash into [`BUCKETS`] buckets (by the key alone, so every node puts a key in the same bucket). A
//! bucket's digest is the XOR of the 128-bit hashes of its whole entries (key, version, the deleted flag and
//! the content: value, content type, secret flag), so two nodes holding one version with different contents
//! differ, and anti-entropy repairs them (like Garage, which hashes whole items); XOR makes the
//! digest independent of insertion order and lets a change update it in O(1): XOR out the old entry's hash,
//! XOR in the new one. Above the buckets sits one level of [`GROUPS`] group digests (each the XOR of its
//! [`BUCKETS_PER_GROUP`] buckets) and a root (the XOR of the groups): a 256-way tree over 2^16 buckets.
//!
//! Two nodes holding the same entries have equal roots, and one 16-byte comparison proves it. When roots
//! differ, comparing the 256 group digests and then the buckets of differing groups narrows the difference
//! down to a few buckets, whose `(key, version)` lists are small: the traffic of a round grows with the
//! difference between the nodes, not with the size of the database.
//!
//! The hashes are XXH3 (64-bit for bucket placement, 128-bit for entries): fast, stable across platforms and
//! versions, and not security-relevant here (a peer that wants to lie about its data does not need
//! collisions; replication traffic is authenticated by sealing instead).

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::Entry;

/// Number of leaf buckets.
pub const BUCKETS: usize = 1 << 16;
/// Number of groups (the middle level).
pub const GROUPS: usize = 256;
/// Buckets per group.
pub const BUCKETS_PER_GROUP: usize = BUCKETS / GROUPS;

/// The bucket of a key.
pub fn bucket_of(key: &str) -> u16 {
    (xxh3_64(key.as_bytes()) >> 48) as u16
}

/// The group of a bucket.
pub fn group_of(bucket: u16) -> u8 {
    (bucket as usize / BUCKETS_PER_GROUP) as u8
}

/// The 128-bit hash of an entry's whole state: key, version, whether it is a tombstone, and its content (for a
/// document: its epoch and heads, see [`super::doc`]).
pub fn entry_hash(entry: &Entry) -> u128 {
    let mut hasher = Xxh3::new();
    hasher.update(entry.key.as_bytes());
    hasher.update(&entry.version.hlc.to_le_bytes());
    hasher.update(&entry.version.node.0.to_le_bytes());
    hasher.update(&[entry.deleted as u8, entry.secret as u8]);
    // Lengths first, so that moving bytes between the content type and the value changes the hash.
    hasher.update(&(entry.content_type.len() as u64).to_le_bytes());
    hasher.update(entry.content_type.as_bytes());
    match entry.doc_meta() {
        // LWW entries hash as they always did (peers of older versions keep agreeing on them).
        None => hasher.update(&entry.value),
        // A document by its history, not its bytes: the same changes saved twice, or sealed under two nonces,
        // are the same document; different heads under one version differ, so anti-entropy joins them.
        Some(doc) => {
            hasher.update(b"doc");
            hasher.update(&doc.created.hlc.to_le_bytes());
            hasher.update(&doc.created.node.0.to_le_bytes());
            hasher.update(&doc.changes.to_le_bytes());
            hasher.update(&doc.heads.to_le_bytes());
        }
    }
    // Permanent entries hash as they always did.
    if let Some(at) = entry.expires {
        hasher.update(b"expires");
        hasher.update(&at.get().to_le_bytes());
    }
    if let Some(lease) = entry.lease {
        hasher.update(b"lease");
        hasher.update(&lease.get().to_le_bytes());
    }
    // Never zero, so that "an entry" and "no entry" always differ.
    hasher.digest128() | 1
}

/// A 64-bit tag of an entry's whole state (the low half of [`entry_hash`]): anti-entropy sends it with each
/// version so that equal versions of different contents are found.
pub fn content_tag(entry: &Entry) -> u64 {
    entry_hash(entry) as u64
}

/// The tree: bucket, group and root digests.
#[derive(Clone)]
pub struct DigestTree {
    buckets: Box<[u128]>,
    groups: Box<[u128]>,
    root: u128,
}

impl Default for DigestTree {
    fn default() -> DigestTree {
        DigestTree {
            buckets: vec![0; BUCKETS].into(),
            groups: vec![0; GROUPS].into(),
            root: 0,
        }
    }
}

impl std::fmt::Debug for DigestTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DigestTree(root={:032x})", self.root)
    }
}

impl DigestTree {
    /// Toggle an entry's hash in or out (XOR is its own inverse).
    pub fn toggle(&mut self, entry: &Entry) {
        let hash = entry_hash(entry);
        let bucket = bucket_of(&entry.key);
        self.buckets[bucket as usize] ^= hash;
        self.groups[group_of(bucket) as usize] ^= hash;
        self.root ^= hash;
    }

    /// Take in every entry `other` holds (the tree of the union of two disjoint sets of entries).
    pub fn absorb(&mut self, other: &DigestTree) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine ^= theirs;
        }
        for (mine, theirs) in self.groups.iter_mut().zip(other.groups.iter()) {
            *mine ^= theirs;
        }
        self.root ^= other.root;
    }

    /// The root digest.
    pub fn root(&self) -> u128 {
        self.root
    }

    /// All group digests.
    pub fn groups(&self) -> &[u128] {
        &self.groups
    }

    /// The digests of one group's buckets.
    pub fn group_buckets(&self, group: u8) -> &[u128] {
        let start = group as usize * BUCKETS_PER_GROUP;
        &self.buckets[start..start + BUCKETS_PER_GROUP]
    }

    /// One bucket's digest.
    pub fn bucket(&self, bucket: u16) -> u128 {
        self.buckets[bucket as usize]
    }
}

/// The keys of one bucket, packed into one buffer: each key as its length (LEB128) and its bytes.
///
/// Anti-entropy lists a differing bucket's entries through it without scanning the map. Held as a list of
/// boxed keys, a key cost a 16-byte pointer and a 16-byte heap block besides the map's own copy; packed, it
/// costs its length plus a byte. Removal (a tombstone purge) scans the bucket, a few dozen keys.
#[derive(Debug, Clone, Default)]
pub struct BucketKeys(Vec<u8>);

impl BucketKeys {
    /// Add `key` (the caller adds each key once).
    pub fn push(&mut self, key: &str) {
        let mut len = key.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                self.0.push(byte);
                break;
            }
            self.0.push(byte | 0x80);
        }
        self.0.extend_from_slice(key.as_bytes());
    }

    /// Add every key of `other` after this bucket's own, in `other`'s order.
    pub fn append(&mut self, other: &BucketKeys) {
        self.0.extend_from_slice(&other.0);
    }

    /// Remove `key`; false if it is not here. As `Vec::swap_remove`, the last key takes its place: the order
    /// a bucket lists its keys in (which anti-entropy's messages carry) is the one the list of boxed keys had,
    /// so a simulation seed replays exactly as before.
    pub fn remove(&mut self, key: &str) -> bool {
        let (mut at, mut found, mut last) = (0, None, 0);
        while let Some((start, end)) = self.span(at) {
            if found.is_none() && &self.0[start..end] == key.as_bytes() {
                found = Some((at, end));
            }
            last = at;
            at = end;
        }
        let Some((from, to)) = found else { return false };
        if from == last {
            self.0.truncate(from);
        } else {
            let moved = self.0[last..].to_vec();
            self.0.truncate(last);
            self.0.splice(from..to, moved);
        }
        true
    }

    /// The keys, in the order they were added (each removal moving the last key into the removed one's place).
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let (start, end) = self.span(at)?;
            at = end;
            Some(start..end)
        })
        // Every key was pushed as a `&str`, so its bytes are UTF-8.
        .filter_map(|range| std::str::from_utf8(&self.0[range]).ok())
    }

    /// The byte range of the key whose length starts at `at`, if one does.
    fn span(&self, mut at: usize) -> Option<(usize, usize)> {
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = *self.0.get(at)?;
            at += 1;
            len |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let end = at.checked_add(len).filter(|&end| end <= self.0.len())?;
        Some((at, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{NodeId, Version};
    use proptest::prelude::*;

    fn entry(key: &str, hlc: u64, deleted: bool) -> Entry {
        let v = Version::new(hlc, NodeId(1));
        if deleted {
            Entry::tombstone(key, v)
        } else {
            Entry::value(key, "x", v)
        }
    }

    proptest! {
        /// The digest depends on the set of entries, not on the order they were added in.
        #[test]
        fn order_independent(mut keys in prop::collection::vec("[a-c]{1,3}", 0..20), seed in any::<u64>()) {
            keys.sort();
            keys.dedup();
            let mut a = DigestTree::default();
            for (i, k) in keys.iter().enumerate() { a.toggle(&entry(k, i as u64 + 1, false)); }
            let mut b = DigestTree::default();
            let mut shuffled: Vec<_> = keys.iter().enumerate().collect();
            shuffled.sort_by_key(|(i, k)| xxh3_64(format!("{seed}{i}{k}").as_bytes()));
            for (i, k) in shuffled { b.toggle(&entry(k, i as u64 + 1, false)); }
            prop_assert_eq!(a.root(), b.root());
            prop_assert_eq!(a.groups(), b.groups());
        }
    }

    #[test]
    fn toggling_twice_restores_and_levels_agree() {
        let mut t = DigestTree::default();
        let e = entry("k", 5, false);
        t.toggle(&e);
        assert_ne!(t.root(), 0);
        let b = bucket_of("k");
        assert_eq!(t.bucket(b), t.root());
        assert_eq!(t.groups()[group_of(b) as usize], t.root());
        t.toggle(&e);
        assert_eq!(t.root(), 0);
        // A tombstone of the same version hashes differently from the value.
        assert_ne!(entry_hash(&entry("k", 5, true)), entry_hash(&e));
    }

    #[test]
    fn the_content_is_hashed_too() {
        let e = entry("k", 5, false);
        let other_value = Entry::value("k", "y", e.version);
        let other_type = Entry {
            content_type: "text/plain".into(),
            ..e.clone()
        };
        let secret = Entry {
            secret: true,
            ..e.clone()
        };
        for different in [&other_value, &other_type, &secret] {
            assert_ne!(entry_hash(different), entry_hash(&e), "{different:?}");
            assert_ne!(content_tag(different), content_tag(&e));
        }
        assert_eq!(entry_hash(&e.clone()), entry_hash(&e));
    }

    proptest! {
        /// A bucket's packed keys are the list of boxed keys they replace: pushes, `swap_remove`s (present or
        /// not), any lengths.
        #[test]
        fn bucket_keys_are_the_list_of_their_keys(
            ops in proptest::collection::vec((proptest::bool::ANY, 0usize..8, 0usize..300), 0..60)
        ) {
            let mut packed = BucketKeys::default();
            let mut model: Vec<String> = Vec::new();
            for (add, which, len) in ops {
                // Lengths across the one- and two-byte LEB128 boundary, and non-ASCII text.
                let key = format!("{which}/{}", "é".repeat(len / 2));
                if add && !model.contains(&key) {
                    packed.push(&key);
                    model.push(key);
                } else {
                    let present = model.iter().position(|k| *k == key);
                    prop_assert_eq!(packed.remove(&key), present.is_some());
                    if let Some(i) = present {
                        model.swap_remove(i);
                    }
                }
                prop_assert_eq!(packed.iter().collect::<Vec<_>>(), model.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
    }
}
