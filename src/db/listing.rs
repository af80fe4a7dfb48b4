//! The client's listing reads of the [`Db`]: pages of a folder's children, filtered scans, counts and the
//! chunk walk of an export. Each holds the read lock for its own page only and seeks from its cursor, so a
//! walk of the key space in pages costs its size once; all of them pass over the keys reserved for Cave.

use std::ops::Bound;

use super::Db;
use crate::crdt::{Child, Entry};
use crate::key;

/// One direct child of a folder in a client listing ([`Db::children_page`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Listed {
    /// A live key directly in the folder.
    Key(Entry),
    /// A sub-folder with live keys below it: its full path, ending in `/`.
    Folder(String),
}

impl Listed {
    /// The child's full path (a folder's ends in `/`), which is also the cursor continuing after it.
    pub fn path(&self) -> &str {
        match self {
            Listed::Key(entry) => &entry.key,
            Listed::Folder(path) => path,
        }
    }
}

/// One page of a listing: its items and, when more are left, the cursor (`after`) of the next page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// What the page holds, in key order.
    pub items: Vec<T>,
    /// Where the next page starts (exclusive), `None` on the last page.
    pub next: Option<String>,
}

impl Db {
    /// Every direct child of a folder prefix (`""` or ending in `/`), for a client; see [`LwwMap::children`](crate::crdt::LwwMap::children).
    /// Reserved keys are not listed. A listing pages with [`Db::children_page`] instead.
    pub fn children(&self, prefix: &str) -> Vec<String> {
        let page = self.children_page(prefix, None, usize::MAX);
        page.items.iter().map(|child| child.path().to_string()).collect()
    }

    /// Up to `limit` direct children of the folder `prefix` after the cursor `after` (the last child of the
    /// previous page; a folder cursor skips the whole folder), for a client, with the cursor of the next page
    /// if any child is left. Reserved keys are not listed. The read lock is held for the page only, and the
    /// page costs its own size, not the folder's (see [`LwwMap::children_after`](crate::crdt::LwwMap::children_after)).
    pub fn children_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Page<Listed> {
        let now = self.shared.hlc.reading();
        let state = self.shared.state.read();
        let mut items = Vec::with_capacity(limit.min(1024));
        // An expired value the writer has not swept yet is as absent here as in a read.
        let mut children = state
            .children_after(prefix, after)
            .filter(|child| !key::is_reserved(child.path().strip_suffix('/').unwrap_or(child.path())))
            .filter(|child| !matches!(child, Child::Key(entry) if !state.live_at(entry, now)));
        for child in children.by_ref().take(limit) {
            items.push(match child {
                Child::Key(entry) => Listed::Key(entry.clone()),
                Child::Folder(path) => Listed::Folder(path.to_string()),
            });
        }
        let next = match children.next() {
            Some(_) => items.last().map(|child: &Listed| child.path().to_string()),
            None => None,
        };
        Page { items, next }
    }

    /// Up to `limit` live entries under `prefix` after the key `after` that `keep` accepts, in key order, for
    /// a client (reserved keys passed over), examining at most `max_scanned` keys (tombstones included). The
    /// page's `next` is the last key examined when any key is left: a filtered page may hold fewer than
    /// `limit` entries, even none, and still go on.
    pub fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        max_scanned: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Page<Entry> {
        let now = self.shared.hlc.reading();
        let state = self.shared.state.read();
        let mut items = Vec::with_capacity(limit.min(1024));
        let mut scanned = 0usize;
        let mut last: Option<&str> = None;
        let mut from = after.map_or(Bound::Unbounded, Bound::Excluded);
        loop {
            let mut reserved = false;
            for entry in state.range_from(prefix, from) {
                if entry.key.starts_with(key::SYSTEM_PREFIX) {
                    reserved = true;
                    break;
                }
                if key::is_reserved(&entry.key) {
                    continue;
                }
                if items.len() == limit || scanned == max_scanned {
                    let next = last.map(str::to_string);
                    return Page { items, next };
                }
                scanned += 1;
                last = Some(&entry.key);
                if state.live_at(entry, now) && keep(entry) {
                    items.push(entry.clone());
                }
            }
            if !reserved {
                return Page { items, next: None };
            }
            from = Bound::Included(key::SYSTEM_END);
        }
    }

    /// Live keys under `prefix` that `keep` accepts (every one if `None`), reserved keys not counted: what a
    /// client's recursive delete of the folder would delete. The root without a filter costs the reserved
    /// range only; anything else a walk of the folder under the read lock.
    pub fn count(&self, prefix: &str, keep: Option<&dyn Fn(&str) -> bool>) -> usize {
        let now = self.shared.hlc.reading();
        let state = self.shared.state.read();
        let live_reserved = || {
            let below = state.range_prefix(key::SYSTEM_PREFIX).filter(|e| !e.deleted).count();
            below + usize::from(state.get_live("_system").is_some())
        };
        match keep {
            None if prefix.is_empty() => state.live() - live_reserved(),
            None => state.range_prefix(prefix).filter(|e| state.live_at(e, now)).count(),
            Some(keep) => state
                .range_prefix(prefix)
                .filter(|e| state.live_at(e, now) && !key::is_reserved(&e.key) && keep(&e.key))
                .count(),
        }
    }

    /// Up to `limit` entries under `prefix` with keys strictly after `after`, in key order, for a client:
    /// tombstones only if `tombstones`, reserved keys passed over. It seeks to `after` (and past the reserved
    /// range), so walking a key space page by page costs its size once, and each page holds the read lock
    /// only for its own entries.
    pub fn page(&self, prefix: &str, after: Option<&str>, limit: usize, tombstones: bool) -> Vec<Entry> {
        let mut out = Vec::with_capacity(limit.min(1024));
        self.visit(prefix, after, limit, tombstones, |entry| out.push(entry.clone()));
        out
    }

    /// [`Db::page`] without copying: `f` sees each entry of the page under the read lock (keep it short: the
    /// writer waits). Returns the last key visited when the page is full, the `after` of the next page
    /// (which may turn out empty), and `None` when the range is exhausted.
    pub fn visit(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        tombstones: bool,
        mut f: impl FnMut(&Entry),
    ) -> Option<String> {
        if limit == 0 {
            return None;
        }
        let now = self.shared.hlc.reading();
        let state = self.shared.state.read();
        let mut visited = 0usize;
        let mut from = after.map_or(Bound::Unbounded, Bound::Excluded);
        loop {
            let mut reserved = false;
            for entry in state.range_from(prefix, from) {
                if entry.key.starts_with(key::SYSTEM_PREFIX) {
                    reserved = true;
                    break;
                }
                if (!tombstones && !state.live_at(entry, now)) || key::is_reserved(&entry.key) {
                    continue;
                }
                f(entry);
                visited += 1;
                if visited == limit {
                    return Some(entry.key.to_string());
                }
            }
            if !reserved {
                return None;
            }
            from = Bound::Included(key::SYSTEM_END);
        }
    }
}
