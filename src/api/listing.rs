//! The folder listings a console needs at scale (docs/api.md, "Listing"): one page of a folder's direct
//! children with their metadata (`?meta=true`), the live-key count of a folder (`?count=true`), and a
//! bounded search over the key names below a folder (`?recurse=true&contains=TEXT`).
//!
//! Every answer costs what it returns, not what the folder holds: a page seeks to its cursor in the ordered
//! map and jumps over each sub-folder with one range seek (a folder `f/` ends before `f0`, `'0'` being the
//! byte after `'/'`), so the 1,000 children after any cursor of a million-key folder are as cheap as the
//! first 1,000. A search scans at most [`MAX_SCANNED_KEYS`] keys per request and says where it stopped. The
//! count is the one answer linear in the folder, as counting is; it holds the read lock for a plain scan of
//! the keys (no copies).

use std::ops::Bound;

use serde::Serialize;

use super::encoding::EntryMeta;
use crate::acl::{Access, Capability};
use crate::crdt::{Entry, LwwMap};
use crate::key;

/// Children a `?meta=true` page answers when no `limit` is given.
pub const DEFAULT_LISTING_LIMIT: usize = 1_000;
/// Most keys one `?contains=` request looks at before it answers with a `next` to go on from.
pub const MAX_SCANNED_KEYS: usize = 100_000;

/// One child of a folder in a `?meta=true` page: a sub-folder, or a key with its metadata.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Child {
    /// A sub-folder (its name ends in `/`).
    Folder {
        /// The full folder path.
        key: String,
        /// Always true.
        folder: bool,
    },
    /// A live key.
    Key {
        /// The key's metadata.
        #[serde(flatten)]
        meta: EntryMeta,
        /// Always false.
        folder: bool,
    },
}

impl Child {
    /// The child's path: the cursor a following page goes on after.
    pub fn path(&self) -> &str {
        match self {
            Child::Folder { key, .. } => key,
            Child::Key { meta, .. } => &meta.key,
        }
    }
}

/// Where a page's scan goes on: at a path (a folder's end) or just past one (a key).
enum From {
    At(String),
    After(String),
}

impl From {
    /// The first position after `cursor`: past the whole folder for a folder cursor (`a/b/` ends before
    /// `a/b0`), else past the key.
    fn after(cursor: &str) -> From {
        match cursor.strip_suffix('/') {
            Some(stem) => From::At(format!("{stem}0")),
            None => From::After(cursor.to_string()),
        }
    }

    fn bound(&self) -> Bound<&str> {
        match self {
            From::At(k) => Bound::Included(k),
            From::After(k) => Bound::Excluded(k),
        }
    }
}

/// Up to `limit` direct children of `prefix` (`""` or ending in `/`) after `after`, in byte order, and the
/// cursor of the next page if more follow. Folders are listed once, only with a live key below them;
/// reserved keys never. Entries `access` may not list are dropped after paging, so the cursor still walks
/// everything.
pub fn children_page(
    map: &LwwMap,
    access: &Access,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> (Vec<Child>, Option<String>) {
    let mut out: Vec<Child> = Vec::with_capacity(limit.min(1024));
    let mut from = after.map_or_else(|| From::At(prefix.to_string()), From::after);
    let mut paged = 0usize;
    let mut last: Option<String> = None;
    loop {
        let next = map
            .range_from(prefix, from.bound())
            .find(|e| !e.deleted || e.key[prefix.len()..].contains('/'));
        let Some(entry) = next else {
            return (out, None);
        };
        let rest = &entry.key[prefix.len()..];
        let child = match rest.find('/') {
            Some(slash) => {
                let folder = &entry.key[..prefix.len() + slash + 1];
                let stem = &folder[..folder.len() - 1];
                let shown = map.range_prefix(folder).any(|e| !e.deleted) && !key::is_reserved(stem);
                let child = shown.then(|| Child::Folder {
                    key: folder.to_string(),
                    folder: true,
                });
                from = From::At(format!("{stem}0"));
                child
            }
            None => {
                let child = (!key::is_reserved(&entry.key)).then(|| Child::Key {
                    meta: EntryMeta::from(entry),
                    folder: false,
                });
                from = From::After(entry.key.clone());
                child
            }
        };
        let Some(child) = child else { continue };
        if paged == limit {
            return (out, last);
        }
        paged += 1;
        last = Some(child.path().to_string());
        let listable = match &child {
            Child::Folder { key, .. } => access.may_some_below(Capability::List, key),
            Child::Key { meta, .. } => access.may(Capability::List, &meta.key),
        };
        if listable {
            out.push(child);
        }
    }
}

/// Live keys below `prefix` that `access` may list (what a recursive delete of the folder would remove, for
/// a token that may delete them all); reserved keys are not counted.
pub fn count(map: &LwwMap, access: &Access, prefix: &str) -> usize {
    map.range_prefix(prefix)
        .filter(|e| !e.deleted && !key::is_reserved(&e.key) && access.may(Capability::List, &e.key))
        .count()
}

/// Keys below `prefix`, after `after`, whose path below the prefix contains `needle` (already lower-case)
/// ignoring case: up to `limit` matches, scanning at most [`MAX_SCANNED_KEYS`] keys. `next` is the last key
/// scanned when the scan stopped early or more may follow.
pub fn search(
    map: &LwwMap,
    access: &Access,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    needle: &str,
) -> (Vec<Entry>, Option<String>) {
    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut out = Vec::new();
    let mut last: Option<&str> = None;
    for (scanned, entry) in map.range_from(prefix, lower).enumerate() {
        if scanned == MAX_SCANNED_KEYS || out.len() == limit {
            return (out, last.map(str::to_string));
        }
        last = Some(&entry.key);
        if entry.deleted || key::is_reserved(&entry.key) {
            continue;
        }
        if entry.key[prefix.len()..].to_lowercase().contains(needle) && access.may(Capability::List, &entry.key) {
            out.push(entry.clone());
        }
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{NodeId, Version};

    fn map_of(keys: &[&str]) -> LwwMap {
        let mut map = LwwMap::new();
        for (i, k) in keys.iter().enumerate() {
            map.merge(Entry::value(*k, "v", Version::new((i as u64 + 1) << 20, NodeId(1))));
        }
        map
    }

    fn walk(map: &LwwMap, prefix: &str, limit: usize) -> Vec<String> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = children_page(map, &Access::Open, prefix, after.as_deref(), limit);
            assert!(page.len() <= limit);
            all.extend(page.iter().map(|c| c.path().to_string()));
            match next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    #[test]
    fn pages_walk_the_children_once_whatever_the_page_size() {
        let map = map_of(&["a", "b/1", "b/2", "b/c/3", "c", "d/4", "_system/x"]);
        for limit in 1..5 {
            assert_eq!(walk(&map, "", limit), ["a", "b/", "c", "d/"], "limit {limit}");
            assert_eq!(walk(&map, "b/", limit), ["b/1", "b/2", "b/c/"], "limit {limit}");
        }
    }

    #[test]
    fn a_folder_cursor_skips_the_folder_and_count_counts_live_keys() {
        let map = map_of(&["a/1", "a/2", "b", "_system/x"]);
        let (page, next) = children_page(&map, &Access::Open, "", Some("a/"), 10);
        assert_eq!(page.iter().map(Child::path).collect::<Vec<_>>(), ["b"]);
        assert_eq!(next, None);
        assert_eq!(count(&map, &Access::Open, ""), 3);
        assert_eq!(count(&map, &Access::Open, "a/"), 2);
    }

    #[test]
    fn search_matches_below_the_prefix_ignoring_case() {
        let map = map_of(&["app/DB/host", "app/web/port", "dbx"]);
        let (found, next) = search(&map, &Access::Open, "app/", None, 10, "db");
        assert_eq!(
            found.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["app/DB/host"]
        );
        assert_eq!(next, None);
        let (found, next) = search(&map, &Access::Open, "app/", None, 1, "o");
        assert_eq!(found.len(), 1);
        assert_eq!(next.as_deref(), Some("app/DB/host"));
    }
}
