//! [`LwwMap`]: the whole key space as a map of last-writer-wins registers, held in memory.
//!
//! This is the state every node converges on. It is a pure data structure (no I/O, no locks, no clock):
//! the local database wraps it behind a lock and persists what changes, the replication core and the
//! simulation use it directly. Keys are kept ordered so that a folder listing or a prefix scan is a range
//! query rather than a scan of everything.

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;
use std::ops::Bound;

use super::digest::{bucket_of, BucketKeys, DigestTree, BUCKETS};
use super::expiry::ExpiryIndex;
use super::lease::LeaseIndex;
use super::runs::{RunSet, Shape};
use super::Entry;

/// Groups smaller than this install one by one ([`LwwMap::install_all`]).
const BULK_INSTALL_MIN_ENTRIES: usize = 256;

/// Ordered map of keys to their winning [`Entry`], tombstones included, with its anti-entropy digest.
#[derive(Debug, Clone)]
pub struct LwwMap {
    /// The entries, ordered by key; each key is held once, in its entry. Runs of B-trees rather than one, so
    /// that new keys in key order fill their nodes ([`super::runs`]).
    entries: RunSet<Slot>,
    tombstones: usize,
    bytes: usize,
    digest: DigestTree,
    /// Keys of each digest bucket, so an anti-entropy round lists a bucket without scanning every key.
    buckets: Box<[BucketKeys]>,
    /// Live values that expire, by expiry.
    expiring: ExpiryIndex,
    /// Live values bound to a lease, by lease.
    pub(super) bound: LeaseIndex,
}

impl Default for LwwMap {
    fn default() -> LwwMap {
        LwwMap {
            entries: RunSet::default(),
            tombstones: 0,
            bytes: 0,
            digest: DigestTree::default(),
            buckets: vec![BucketKeys::default(); BUCKETS].into(),
            expiring: ExpiryIndex::default(),
            bound: LeaseIndex::default(),
        }
    }
}

impl LwwMap {
    /// An empty map.
    pub fn new() -> LwwMap {
        LwwMap::default()
    }

    /// A map of `entries`, in any order, the entries of one key merged: a restart's bulk load. The ordered map
    /// is built in one pass from sorted input, with full B-tree nodes and no rebalancing per insert, which
    /// takes a fraction of the time and memory of merging the entries one by one.
    pub fn from_entries(mut entries: Vec<Entry>) -> LwwMap {
        // As in `merge`: a document's delta is only for the database to apply.
        entries.retain(|entry| !entry.is_delta());
        // Storage loads in key order: checked in one pass, sorted (stable) only if not.
        if !entries.is_sorted_by(|a, b| a.key <= b.key) {
            entries.sort_by(|a, b| a.key.cmp(&b.key));
        }
        entries.dedup_by(|later, kept| {
            if later.key != kept.key {
                return false;
            }
            let placeholder = || Entry::tombstone(String::new(), super::Version::ZERO);
            let earlier = std::mem::replace(kept, placeholder());
            *kept = earlier.merge(std::mem::replace(later, placeholder()));
            true
        });
        let mut map = LwwMap::default();
        for entry in &entries {
            map.account_new(entry);
        }
        // Sorted and without duplicates already: the set is built in bulk.
        map.entries = RunSet::from_sorted(Shape::default(), entries.into_iter().map(Slot).collect());
        map.note_every_lease();
        map
    }

    /// A map of `parts`, each as [`LwwMap::from_entries`] takes it and every key of a part before every key of
    /// the next (a store's [`load_parts`](crate::storage::Store::load_parts)): the map `from_entries` makes of
    /// their concatenation, built part by part at once, on a thread each, and joined. A restart's build is
    /// mostly fresh memory touched for the first time (its B-tree's nodes); two threads touch it twice as fast.
    pub fn from_parts(parts: Vec<Vec<Entry>>) -> LwwMap {
        let mut parts = parts.into_iter();
        let Some(first) = parts.next() else {
            return LwwMap::default();
        };
        let maps: Vec<LwwMap> = std::thread::scope(|scope| {
            let others: Vec<_> = parts
                .map(|part| scope.spawn(move || LwwMap::from_entries(part)))
                .collect();
            let mut maps = vec![LwwMap::from_entries(first)];
            // A panic on another thread is a bug, not an outcome: it goes on here as it was.
            maps.extend(
                others
                    .into_iter()
                    .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
            );
            maps
        });
        let mut maps = maps.into_iter();
        let mut map = maps.next().unwrap_or_default();
        for mut next in maps {
            map.tombstones += next.tombstones;
            map.bytes += next.bytes;
            map.digest.absorb(&next.digest);
            for (mine, theirs) in map.buckets.iter_mut().zip(next.buckets.iter()) {
                mine.append(theirs);
            }
            map.expiring.append(&mut next.expiring);
            map.bound.append(&mut next.bound);
            map.entries.append_after(next.entries);
        }
        // A lease's record and the values bound to it may have been in different parts.
        map.note_every_lease();
        map
    }

    /// [`LwwMap::note_lease`] for every lease that has values bound to it: after a bulk build.
    fn note_every_lease(&mut self) {
        let leases: Vec<_> = self.bound.ids().collect();
        for id in leases {
            self.note_lease(&id.key(), None);
        }
    }

    /// The anti-entropy digest of everything the map holds.
    pub fn digest(&self) -> &DigestTree {
        &self.digest
    }

    /// The live values that expire, by expiry.
    pub fn expiring(&self) -> &ExpiryIndex {
        &self.expiring
    }

    /// The live values bound to a lease, by lease.
    pub fn bound(&self) -> &LeaseIndex {
        &self.bound
    }

    /// The entries of one digest bucket (in no particular order).
    pub fn bucket_entries(&self, bucket: u16) -> impl Iterator<Item = &Entry> {
        self.buckets[bucket as usize].iter().filter_map(|k| self.get(k))
    }

    /// The entry of `key`, tombstone or not.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).map(|slot| &slot.0)
    }

    /// The entry of `key` if it holds a live value.
    pub fn get_live(&self, key: &str) -> Option<&Entry> {
        self.get(key).filter(|e| !e.deleted)
    }

    /// The entry of `key` if it holds a value live at hybrid-clock time `now` ([`LwwMap::live_at`]: not
    /// expired, and its lease live if it has one): what a client read finds.
    pub fn get_live_at(&self, key: &str, now: u64) -> Option<&Entry> {
        self.get(key).filter(|e| self.live_at(e, now))
    }

    /// Merge `entry` in ([`Entry::merge`]: a document of the epoch held joins it). Returns true when the map
    /// changed, false when it already held the entry, or something newer.
    pub fn merge(&mut self, entry: Entry) -> bool {
        // A delta is a part of a document: only the database, which can apply it to the whole, takes one.
        if entry.is_delta() {
            return false;
        }
        let entry = match self.get(&entry.key) {
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
        let lease_note = (entry.lease.is_some() || entry.key.starts_with(super::lease::LEASE_PREFIX))
            .then(|| (entry.key.clone(), entry.lease));
        let changed = self.install_entry(entry);
        if let (true, Some((key, lease))) = (changed, lease_note) {
            self.note_lease(&key, lease);
        }
        changed
    }

    /// [`LwwMap::install`] for each of `entries`, in one pass: a commit group's final entries. The new keys
    /// among them go into the ordered set together (`RunSet::insert_fresh`): a stretch of them between two
    /// held keys (an import's, in key order) becomes a run built in bulk, with full nodes; inserted one by
    /// one in key order, they would leave every node split in half, and the set half empty: ~100 bytes more
    /// per key.
    pub fn install_all(&mut self, entries: Vec<Entry>) {
        let mut entries = entries;
        entries.retain(|entry| !entry.is_delta());
        // The writer sorts its batch before it takes the map's lock: checked in one pass here.
        if !entries.is_sorted_by(|a, b| a.key <= b.key) {
            entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        }
        let unique = entries.windows(2).all(|pair| pair[0].key != pair[1].key);
        if !unique || entries.len() < BULK_INSTALL_MIN_ENTRIES {
            for entry in entries {
                self.install(entry);
            }
            return;
        }
        let notes: Vec<_> = entries
            .iter()
            .filter(|entry| entry.lease.is_some() || entry.key.starts_with(super::lease::LEASE_PREFIX))
            .map(|entry| (entry.key.clone(), entry.lease))
            .collect();
        // The held keys' entries are taken out; the new ones stay where they are and become the set's slots in
        // place: an import's hundred thousand entries are not copied into another vector on the way.
        let held: Vec<Entry> = entries
            .extract_if(.., |entry| self.entries.contains(entry.key.as_str()))
            .collect();
        for entry in held {
            self.install_entry(entry);
        }
        for entry in &entries {
            self.account_new(entry);
        }
        // Sorted, unique and absent from the set.
        self.entries.insert_fresh(entries.into_iter().map(Slot).collect());
        for (key, lease) in notes {
            self.note_lease(&key, lease);
        }
    }

    /// The indexes and counters of a key coming into the map (its entry is inserted by the caller).
    fn account_new(&mut self, entry: &Entry) {
        Self::account(&mut self.tombstones, &mut self.bytes, (entry.deleted, entry.size()), 1);
        self.digest.toggle(entry);
        self.buckets[bucket_of(&entry.key) as usize].push(&entry.key);
        self.expiring.add(entry);
        self.bound.add(entry);
    }

    fn install_entry(&mut self, entry: Entry) -> bool {
        match self.entries.get(entry.key.as_str()) {
            Some(Slot(current)) => {
                if !entry.supersedes(current) {
                    return false;
                }
                self.digest.toggle(current);
                self.digest.toggle(&entry);
                self.expiring.remove(current);
                self.expiring.add(&entry);
                self.bound.remove(current);
                self.bound.add(&entry);
                let old = (current.deleted, current.size());
                let new = (entry.deleted, entry.size());
                self.entries.replace(Slot(entry));
                Self::account(&mut self.tombstones, &mut self.bytes, old, -1);
                Self::account(&mut self.tombstones, &mut self.bytes, new, 1);
            }
            None => {
                self.account_new(&entry);
                self.entries.insert(Slot(entry));
            }
        }
        true
    }

    /// Drop `key` entirely (tombstone purge). Returns the removed entry.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let Slot(removed) = self.entries.take(key)?;
        self.digest.toggle(&removed);
        self.expiring.remove(&removed);
        self.bound.remove(&removed);
        self.buckets[bucket_of(key) as usize].remove(key);
        Self::account(
            &mut self.tombstones,
            &mut self.bytes,
            (removed.deleted, removed.size()),
            -1,
        );
        // A purged lease is missing, no longer ended: as after a restart, its values are hidden, not collected.
        if key.starts_with(super::lease::LEASE_PREFIX) {
            self.note_lease(key, None);
        }
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
            .range_from(Bound::Included(prefix))
            .map(|slot| &slot.0)
            .take_while(move |e| e.key.starts_with(prefix))
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
            .range_from(lower)
            .map(|slot| &slot.0)
            .take_while(move |e| e.key.starts_with(prefix))
    }

    /// Direct children of the folder whose keys start with `prefix` (`""` for the root, else ending in
    /// `/`): live keys as themselves, deeper paths as their folder ending in `/`, each once, in order.
    /// Every child at once: a client listing pages through [`LwwMap::children_after`] instead.
    pub fn children(&self, prefix: &str) -> Vec<String> {
        self.children_after(prefix, None)
            .map(|child| child.path().to_string())
            .collect()
    }

    /// The direct children of the folder `prefix` (as [`LwwMap::children`]) that sort after the cursor
    /// `after`, lazily and in byte order. The cursor is the last child of the previous page: a key, or a
    /// folder ending in `/`, which skips everything below it. A cursor deeper than one level stands for the
    /// child folder that holds it; one before the folder starts at its first child.
    ///
    /// A seek, not a scan: each child costs one range seek (a folder's keys are jumped over, however many),
    /// plus the tombstones passed on the way, so a page of N children of a folder of a million keys costs
    /// O(N log n) whatever the page's position.
    pub fn children_after<'a>(&'a self, prefix: &'a str, after: Option<&'a str>) -> Children<'a> {
        let lower = match after {
            Some(after) if after > prefix => match after.strip_prefix(prefix) {
                Some(rest) => match rest.find('/') {
                    Some(slash) => Bound::Included(Cow::Owned(past_folder(&after[..prefix.len() + slash + 1]))),
                    None => Bound::Excluded(Cow::Borrowed(after)),
                },
                // After every key of the folder: nothing is left.
                None => {
                    return Children {
                        map: self,
                        prefix,
                        lower: None,
                    }
                }
            },
            // The folder's path itself is no child of it (keys never end in '/', but the map takes any).
            _ => Bound::Excluded(Cow::Borrowed(prefix)),
        };
        Children {
            map: self,
            prefix,
            lower: Some(lower),
        }
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().map(|slot| &slot.0)
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

/// One direct child of a folder, as [`LwwMap::children_after`] yields it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Child<'a> {
    /// A live key directly in the folder.
    Key(&'a Entry),
    /// A sub-folder holding at least one live key: its full path, ending in `/`.
    Folder(&'a str),
}

impl<'a> Child<'a> {
    /// The child's full path (a folder's ends in `/`): the cursor that continues after it.
    pub fn path(&self) -> &'a str {
        match self {
            Child::Key(entry) => &entry.key,
            Child::Folder(path) => path,
        }
    }
}

/// The first string after every key below `folder` (which ends in `/`; `'0'` is the byte after `'/'`).
fn past_folder(folder: &str) -> String {
    format!("{}0", &folder[..folder.len() - 1])
}

/// Iterator over the children of a folder, from [`LwwMap::children_after`].
#[derive(Debug)]
pub struct Children<'a> {
    map: &'a LwwMap,
    prefix: &'a str,
    /// Where the next child is looked for; `None` once the folder is exhausted.
    lower: Option<Bound<Cow<'a, str>>>,
}

impl<'a> Iterator for Children<'a> {
    type Item = Child<'a>;

    fn next(&mut self) -> Option<Child<'a>> {
        let prefix = self.prefix;
        loop {
            let lower = self.lower.take()?;
            let bound = match &lower {
                Bound::Included(k) => Bound::Included(k.as_ref()),
                Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
                Bound::Unbounded => Bound::Unbounded,
            };
            // The next key that is live or lies in a sub-folder (dead keys of this level are passed over).
            let entry = self
                .map
                .entries
                .range_from(bound)
                .map(|slot| &slot.0)
                .take_while(|e| e.key.starts_with(prefix))
                .find(|e| !e.deleted || e.key[prefix.len()..].contains('/'))?;
            let key = entry.key.as_str();
            let rest = &key[prefix.len()..];
            match rest.find('/') {
                Some(slash) => {
                    let folder = &key[..prefix.len() + slash + 1];
                    self.lower = Some(Bound::Included(Cow::Owned(past_folder(folder))));
                    // Only a folder with a live key below it is listed.
                    if self.map.range_prefix(folder).any(|e| !e.deleted) {
                        return Some(Child::Folder(folder));
                    }
                }
                None => {
                    self.lower = Some(Bound::Excluded(Cow::Borrowed(key)));
                    return Some(Child::Key(entry));
                }
            }
        }
    }
}

/// An entry in the ordered set, compared and looked up by its key alone, so that the key is stored once (in the
/// entry) rather than again as the map's key: 40 bytes an entry fewer (a `String` and its heap copy).
#[derive(Debug, Clone)]
struct Slot(Entry);

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Slot {}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Slot) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Slot {
    fn cmp(&self, other: &Slot) -> Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

// Consistent with `Ord`: a slot compares as its key does.
impl Borrow<str> for Slot {
    fn borrow(&self) -> &str {
        &self.0.key
    }
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
