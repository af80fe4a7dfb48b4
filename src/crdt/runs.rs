//! [`RunSet`]: an ordered set of items keyed by a string, kept as consecutive key ranges ("runs"), each its
//! own B-tree.
//!
//! Why not one `BTreeSet`: std's B-tree splits a full node in the middle wherever the new item goes, so keys
//! inserted in ascending order (an import, a peer's in-order delta) leave every node about half full, ~100
//! bytes more per entry of the map; and the only bulk operation, `append`, rebuilds the whole set, O(n) for a
//! batch however small. A run is built in bulk from sorted input, with full nodes, and lives beside the others:
//!
//! - A sorted batch of new keys that falls between two held keys (at the right edge, in an import) becomes a
//!   run of its own: the run it lands in is split there (`split_off`, a walk down the tree) and the batch goes
//!   in between, built in one pass. Nothing held is moved.
//! - Runs next to each other merge when the left one is at most twice the right one and both together stay
//!   within [`Shape::max_merge`]: a sequence of equal batches merges like a binary counter (each item moved
//!   O(log n) times), the work of one merge is bounded, and the number of runs stays small (tens at ten
//!   million items), so finding a key's run is a binary search over a short list of fences.
//! - Batches of new keys that interleave with held ones, and single inserts, go into their run's B-tree as
//!   usual; a run that receives at least 1/[`Shape::rebuild_ratio`] of its size at once is rebuilt in bulk.
//!
//! Each run owns the keys from its fence up to the next run's fence; the first run's fence is `""`, so every
//! key has exactly one run. A run never stays empty unless it is the only one.

use std::borrow::Borrow;
use std::collections::{btree_set, BTreeSet};
use std::ops::Bound;

/// The sizes at which a [`RunSet`] builds, merges and rebuilds runs, in items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// A batch of new keys between two held ones becomes a run of its own from this many items.
    pub min_run: usize,
    /// Two neighbouring runs merge only while they hold at most this many items together: a merge moves
    /// every item of both, under the map's lock.
    pub max_merge: usize,
    /// A run receiving at least 1/this of its size in one interleaving batch is rebuilt with it in bulk.
    pub rebuild_ratio: usize,
}

impl Default for Shape {
    fn default() -> Shape {
        // 1,024 items fill ~100 leaves; 2^20 items of 112 bytes are a ~10 ms merge.
        Shape {
            min_run: 1 << 10,
            max_merge: 1 << 20,
            rebuild_ratio: 8,
        }
    }
}

/// An ordered set of `T`, compared and looked up by its string key, held as runs (see the module essay).
#[derive(Debug, Clone)]
pub struct RunSet<T> {
    /// Never empty; `runs[0].fence` is `""`; fences strictly ascending.
    runs: Vec<Run<T>>,
    len: usize,
    shape: Shape,
}

#[derive(Debug, Clone)]
struct Run<T> {
    /// The least key this run may hold; the next run's fence is the bound above.
    fence: Box<str>,
    set: BTreeSet<T>,
}

impl<T: Ord + Borrow<str>> Default for RunSet<T> {
    fn default() -> RunSet<T> {
        RunSet::with_shape(Shape::default())
    }
}

impl<T: Ord + Borrow<str>> RunSet<T> {
    /// An empty set that builds its runs by `shape`.
    pub fn with_shape(shape: Shape) -> RunSet<T> {
        RunSet {
            runs: vec![Run {
                fence: "".into(),
                set: BTreeSet::new(),
            }],
            len: 0,
            shape,
        }
    }

    /// A set of `items`, which are sorted by key with no key twice, built in bulk: runs of at most
    /// [`Shape::max_merge`] items, so that a later rebuild of one moves no more than that.
    pub fn from_sorted(shape: Shape, items: Vec<T>) -> RunSet<T> {
        // Built whole (in place from the vector: no copy), then cut from the back: a split walks one path
        // down the tree and leaves the other nodes as full as they were.
        let mut whole: BTreeSet<T> = items.into_iter().collect();
        let mut runs = Vec::new();
        while whole.len() > shape.max_merge.max(1) {
            let Some(cut) = whole.iter().nth_back(shape.max_merge.max(1) - 1) else {
                break;
            };
            let cut: Box<str> = cut.borrow().into();
            let set = whole.split_off::<str>(&*cut);
            runs.push(Run { fence: cut, set });
        }
        runs.push(Run {
            fence: "".into(),
            set: whole,
        });
        runs.reverse();
        // Counted from the runs: a key given twice is held once.
        let len = runs.iter().map(|run| run.set.len()).sum();
        RunSet { runs, len, shape }
    }

    /// Put every item of `other`, whose keys all sort after this set's, after them: its runs follow this
    /// set's as they are.
    pub fn append_after(&mut self, other: RunSet<T>) {
        if other.is_empty() {
            return;
        }
        let last = self
            .runs
            .last()
            .and_then(|run| run.set.last())
            .map(|item| item.borrow());
        debug_assert!(
            last < other.runs[0].set.first().map(|item| item.borrow()),
            "parts out of order"
        );
        let mut runs = other.runs;
        if self.is_empty() {
            runs[0].fence = "".into();
            self.runs = runs;
        } else {
            runs[0].fence = first_key(&runs[0].set);
            self.runs.extend(runs);
        }
        self.len += other.len;
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index of the run that owns `key`.
    fn locate(&self, key: &str) -> usize {
        // runs[0].fence is "", which every key is at or after.
        self.runs.partition_point(|run| &*run.fence <= key) - 1
    }

    /// The item of `key`.
    pub fn get(&self, key: &str) -> Option<&T> {
        self.runs[self.locate(key)].set.get(key)
    }

    /// Whether an item of `key` is held.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Insert `item`; false (and `item` dropped) if its key is held already.
    pub fn insert(&mut self, item: T) -> bool {
        let at = self.locate(item.borrow());
        let inserted = self.runs[at].set.insert(item);
        self.len += usize::from(inserted);
        inserted
    }

    /// Put `item` in, replacing the item of its key; returns the one replaced.
    pub fn replace(&mut self, item: T) -> Option<T> {
        let at = self.locate(item.borrow());
        let old = self.runs[at].set.replace(item);
        self.len += usize::from(old.is_none());
        old
    }

    /// Remove and return the item of `key`.
    pub fn take(&mut self, key: &str) -> Option<T> {
        let at = self.locate(key);
        let taken = self.runs[at].set.take(key)?;
        self.len -= 1;
        if self.runs[at].set.is_empty() && self.runs.len() > 1 {
            // Its keys belong to the run before now; the first run's successor becomes the first.
            self.runs.remove(at);
            self.runs[0].fence = "".into();
        }
        Some(taken)
    }

    /// Items from `lower` on, in key order.
    pub fn range_from<'a>(&'a self, lower: Bound<&str>) -> Range<'a, T> {
        let at = match lower {
            Bound::Included(key) | Bound::Excluded(key) => self.locate(key),
            Bound::Unbounded => 0,
        };
        Range {
            current: self.runs[at].set.range::<str, _>((lower, Bound::Unbounded)),
            rest: self.runs[at + 1..].iter(),
        }
    }

    /// Every item in key order.
    pub fn iter(&self) -> Range<'_, T> {
        self.range_from(Bound::Unbounded)
    }

    /// Add `fresh`: items sorted by key, no key twice, none held. Each stretch of them that lies between two
    /// held keys becomes a run of its own if it is long enough; the rest go into the runs that own them.
    pub fn insert_fresh(&mut self, mut fresh: Vec<T>) {
        // First cut into stretches against the runs as they are (`(start, run)`, in order); the short ones
        // (grouped by run) go in first, which moves no fence, then each long one, found again as runs split
        // and merge. The items stay in `fresh` until the stretches are known: one stretch (an import's
        // request at the right edge) is passed on as the vector itself, without a copy.
        let mut stretches: Vec<(usize, usize)> = Vec::new();
        let mut start = 0;
        while start < fresh.len() {
            let first = fresh[start].borrow();
            let at = self.locate(first);
            // The stretch ends before the next held key, or the next run's fence, whichever comes first.
            let run_end = self.runs.get(at + 1).map(|run| &*run.fence);
            let held_next = self.runs[at]
                .set
                .range::<str, _>((Bound::Excluded(first), Bound::Unbounded))
                .next()
                .map(|item| item.borrow());
            let limit = match (run_end, held_next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let len = match limit {
                Some(limit) => fresh[start..].partition_point(|item| item.borrow() < limit),
                None => fresh.len() - start,
            };
            stretches.push((start, at));
            start += len.max(1);
        }
        // Cut from the back, so that each cut moves only its own stretch.
        let mut short: Vec<(usize, Vec<Vec<T>>)> = Vec::new();
        let mut long: Vec<Vec<T>> = Vec::new();
        for &(start, at) in stretches.iter().rev() {
            let stretch = if start == 0 {
                std::mem::take(&mut fresh)
            } else {
                fresh.split_off(start)
            };
            if stretch.len() >= self.shape.min_run {
                long.push(stretch);
            } else {
                match short.last_mut() {
                    Some((run, pieces)) if *run == at => pieces.push(stretch),
                    _ => short.push((at, vec![stretch])),
                }
            }
        }
        for (at, pieces) in short {
            // Gathered back to front: put in key order again.
            self.add_to_run(at, pieces.into_iter().rev().flatten().collect());
        }
        for items in long.into_iter().rev() {
            let at = self.locate(items[0].borrow());
            self.add_run(at, items);
        }
    }

    /// Put `items` (sorted, fresh, all owned by run `at`) into that run, one by one
    /// or, when they are many beside it, by rebuilding it.
    fn add_to_run(&mut self, at: usize, items: Vec<T>) {
        self.len += items.len();
        let run = &mut self.runs[at].set;
        if items.len() * self.shape.rebuild_ratio >= run.len() {
            let mut batch: BTreeSet<T> = items.into_iter().collect();
            run.append(&mut batch);
        } else {
            run.extend(items);
        }
    }

    /// Make `items` (sorted, fresh, all owned by run `at`, with no key of it between the first and the last) a
    /// run of their own, splitting run `at` around them, then merge neighbours that are due.
    fn add_run(&mut self, at: usize, items: Vec<T>) {
        self.len += items.len();
        let fence: Box<str> = items[0].borrow().into();
        let set: BTreeSet<T> = items.into_iter().collect();
        let right = self.runs[at].set.split_off::<str>(&*fence);
        let mut new_at = at + 1;
        if self.runs[at].set.is_empty() {
            // Nothing below the stretch in this run: the stretch takes its place and its fence.
            self.runs[at].set = set;
            new_at = at;
        } else {
            self.runs.insert(at + 1, Run { fence, set });
        }
        if !right.is_empty() {
            let fence = first_key(&right);
            self.runs.insert(new_at + 1, Run { fence, set: right });
        }
        self.merge_into_left(new_at);
    }

    /// Merge run `at` into the one before it while that one is at most twice its size and the two fit in
    /// [`Shape::max_merge`].
    fn merge_into_left(&mut self, mut at: usize) {
        while at > 0 {
            let (left, right) = (self.runs[at - 1].set.len(), self.runs[at].set.len());
            if left > 2 * right || left + right > self.shape.max_merge {
                return;
            }
            let mut run = self.runs.remove(at).set;
            self.runs[at - 1].set.append(&mut run);
            at -= 1;
        }
    }
}

fn first_key<T: Ord + Borrow<str>>(set: &BTreeSet<T>) -> Box<str> {
    set.first().map_or("", |item| item.borrow()).into()
}

/// Iterator over a [`RunSet`] from a bound on, in key order.
#[derive(Debug)]
pub struct Range<'a, T> {
    current: btree_set::Range<'a, T>,
    rest: std::slice::Iter<'a, Run<T>>,
}

impl<'a, T: Ord> Iterator for Range<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            self.current = self.rest.next()?.set.range(..);
        }
    }
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;
