//! Tests of [`LwwMap`](super::LwwMap): merges, the bulk load and bulk install, the digest buckets, paging.

mod basics {
    use super::super::*;
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

    fn entry_of(key: u16, hlc: u64, deleted: bool) -> Entry {
        let key = format!("k/{key:03}");
        if deleted {
            Entry::tombstone(key, v(hlc))
        } else {
            Entry::value(key, vec![hlc as u8], v(hlc))
        }
    }

    proptest::proptest! {
        /// A commit group installed at once is the same map as its entries installed one by one, in both the
        /// bulk path (many new keys, unique) and the fallback (few, or a key twice).
        #[test]
        fn installing_a_group_equals_installing_one_by_one(
            before in proptest::collection::vec((0u16..700, 0u64..4, proptest::bool::ANY), 0..200),
            group in proptest::collection::btree_map(0u16..700, (0u64..4, proptest::bool::ANY), 0..600),
            twice in proptest::bool::ANY,
        ) {
            let start = LwwMap::from_entries(before.iter().map(|&(k, h, d)| entry_of(k, h, d)).collect());
            // Reversed: the group arrives in no particular order.
            let mut entries: Vec<Entry> = group.iter().rev().map(|(&k, &(h, d))| entry_of(k, h, d)).collect();
            if twice {
                if let Some(first) = entries.first().cloned() {
                    entries.push(Entry { version: v(first.version.hlc + 1), ..first });
                }
            }
            let mut one = start.clone();
            for entry in entries.clone() {
                one.install(entry);
            }
            let mut all = start;
            all.install_all(entries);
            proptest::prop_assert_eq!(all.iter().collect::<Vec<_>>(), one.iter().collect::<Vec<_>>());
            proptest::prop_assert_eq!(all.digest().root(), one.digest().root());
            proptest::prop_assert_eq!((all.len(), all.tombstones(), all.bytes()), (one.len(), one.tombstones(), one.bytes()));
            for key in 0..700u16 {
                let bucket = crate::crdt::digest::bucket_of(&format!("k/{key:03}"));
                proptest::prop_assert_eq!(all.bucket_entries(bucket).count(), one.bucket_entries(bucket).count());
            }
        }

        /// The bulk load is the one-by-one merge, whatever the order and the duplicates of the input.
        #[test]
        fn a_bulk_load_equals_merging_one_by_one(
            writes in proptest::collection::vec((0u8..6, 0u64..5, proptest::bool::ANY, 0u8..3), 0..40)
        ) {
            let entries: Vec<Entry> = writes
                .iter()
                .map(|&(key, hlc, deleted, value)| {
                    let key = format!("k/{key}");
                    if deleted {
                        Entry::tombstone(key, v(hlc))
                    } else {
                        Entry::value(key, vec![value], v(hlc))
                    }
                })
                .collect();
            let mut merged = LwwMap::new();
            for entry in entries.clone() {
                merged.merge(entry);
            }
            let bulk = LwwMap::from_entries(entries);
            proptest::prop_assert_eq!(bulk.iter().collect::<Vec<_>>(), merged.iter().collect::<Vec<_>>());
            proptest::prop_assert_eq!(bulk.digest().root(), merged.digest().root());
            proptest::prop_assert_eq!((bulk.len(), bulk.tombstones(), bulk.bytes()), (merged.len(), merged.tombstones(), merged.bytes()));
            for key in 0..6 {
                let bucket = crate::crdt::digest::bucket_of(&format!("k/{key}"));
                proptest::prop_assert_eq!(bulk.bucket_entries(bucket).count(), merged.bucket_entries(bucket).count());
            }
        }

        /// A map built from parts (any cut of a sorted load) is the map built from the whole.
        #[test]
        fn a_map_of_parts_is_the_map_of_the_whole(
            rows in proptest::collection::btree_map(0u16..700, (0u64..4, proptest::bool::ANY, 0u8..3), 0..300),
            cuts in proptest::collection::vec(0usize..302, 0..4),
        ) {
            let entries: Vec<Entry> = rows
                .iter()
                .map(|(&k, &(h, d, kind))| {
                    let e = entry_of(k, h + 1, d);
                    match kind {
                        // Some expire, some are bound to a lease (whose record may sit in another part).
                        1 if !d => Entry { expires: Some(crate::crdt::expiry::at(h + 10)), ..e },
                        2 if !d => Entry { lease: crate::crdt::LeaseId::new(h + 1), ..e },
                        _ => e,
                    }
                })
                .collect();
            // Leases 1 and 3 have ended: their records (tombstones, under `_system/`) sort before every value.
            let ended = [1, 3].map(|id| Entry::tombstone(crate::crdt::LeaseId::new(id).unwrap().key(), v(1)));
            let entries: Vec<Entry> = ended.into_iter().chain(entries).collect();
            let whole = LwwMap::from_entries(entries.clone());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(entries.len())).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut rest = entries;
            for cut in cuts.into_iter().rev() {
                parts.push(rest.split_off(cut));
            }
            parts.push(rest);
            parts.reverse();
            let joined = LwwMap::from_parts(parts);
            proptest::prop_assert_eq!(joined.iter().collect::<Vec<_>>(), whole.iter().collect::<Vec<_>>());
            proptest::prop_assert_eq!(joined.digest().root(), whole.digest().root());
            proptest::prop_assert_eq!(joined.digest().groups(), whole.digest().groups());
            proptest::prop_assert_eq!((joined.len(), joined.tombstones(), joined.bytes()), (whole.len(), whole.tombstones(), whole.bytes()));
            proptest::prop_assert_eq!(joined.expiring().due(u64::MAX, usize::MAX), whole.expiring().due(u64::MAX, usize::MAX));
            proptest::prop_assert_eq!(joined.bound().ids().collect::<Vec<_>>(), whole.bound().ids().collect::<Vec<_>>());
            proptest::prop_assert_eq!(joined.bound().any_ended(), whole.bound().any_ended());
            for key in 0..700u16 {
                let bucket = crate::crdt::digest::bucket_of(&format!("k/{key:03}"));
                // The same keys in the same order: anti-entropy's messages list a bucket in this order.
                let keys = |m: &LwwMap| m.bucket_entries(bucket).map(|e| e.key.to_string()).collect::<Vec<_>>();
                proptest::prop_assert_eq!(keys(&joined), keys(&whole));
            }
        }
    }
}

mod paging {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::super::*;
    use crate::crdt::{NodeId, Version};

    fn v(hlc: u64) -> Version {
        Version::new(hlc, NodeId(1))
    }

    fn map_of(keys: &[&str]) -> LwwMap {
        let mut map = LwwMap::new();
        for (i, k) in keys.iter().enumerate() {
            map.merge(Entry::value(*k, "v", v(i as u64 + 1)));
        }
        map
    }

    /// Every child of `prefix`, walked in pages of `size`, each page continuing after the last path of the one
    /// before (as a client does with `next`).
    fn walk(map: &LwwMap, prefix: &str, size: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        loop {
            let after = out.last().cloned();
            let page: Vec<String> = map
                .children_after(prefix, after.as_deref())
                .take(size)
                .map(|c| c.path().to_string())
                .collect();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
            // Every child is a distinct key or folder of the map: more would mean a page repeated itself.
            assert!(out.len() <= map.len(), "the walk does not advance: {out:?}");
        }
    }

    /// The children computed the slow way: every live key below `prefix`, cut after its next `/`.
    fn brute(map: &LwwMap, prefix: &str) -> Vec<String> {
        let set: BTreeSet<String> = map
            .iter()
            .filter(|e| !e.deleted && e.key.starts_with(prefix) && e.key != prefix)
            .map(|e| {
                let rest = &e.key[prefix.len()..];
                match rest.find('/') {
                    Some(slash) => e.key[..prefix.len() + slash + 1].to_string(),
                    None => e.key.to_string(),
                }
            })
            .collect();
        set.into_iter().collect()
    }

    const KEYS: &[&str] = &[
        "a/x",
        "a/y/1",
        "a/y/2",
        "a/y.txt",
        "a/y0",
        "a/z/deep/k",
        "a/é",
        "a/日本/語",
        "a/日本語",
        "b",
        "a",
    ];

    #[test]
    fn pages_of_any_size_list_every_child_once_in_byte_order() {
        let map = map_of(KEYS);
        let all = map.children("a/");
        assert_eq!(
            all,
            ["a/x", "a/y.txt", "a/y/", "a/y0", "a/z/", "a/é", "a/日本/", "a/日本語"]
        );
        for size in 1..=all.len() + 1 {
            assert_eq!(walk(&map, "a/", size), all, "page size {size}");
        }
        assert_eq!(walk(&map, "", 1), ["a", "a/", "b"]);
    }

    #[test]
    fn a_folder_cursor_skips_the_whole_folder() {
        let map = map_of(KEYS);
        let after = |cursor| {
            map.children_after("a/", Some(cursor))
                .map(|c| c.path().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(after("a/y/"), ["a/y0", "a/z/", "a/é", "a/日本/", "a/日本語"]);
        // A cursor deeper than one level stands for its folder.
        assert_eq!(after("a/y/1"), after("a/y/"));
        assert_eq!(after("a/日本/"), ["a/日本語"]);
        // A key cursor is passed by itself: the folder of the same name (sorting after it) still comes.
        assert_eq!(map_of(&["a/y", "a/y/1"]).children_after("a/", Some("a/y")).count(), 1);
        // A cursor before the folder starts at its beginning, one after it yields nothing.
        assert_eq!(after("0"), map.children("a/"));
        assert_eq!(after("a/"), map.children("a/"));
        assert!(after("b").is_empty());
        assert!(after("a/日本語").is_empty());
    }

    #[test]
    fn keys_deleted_between_pages_are_passed_over() {
        let mut map = map_of(KEYS);
        let first: Vec<String> = map
            .children_after("a/", None)
            .take(2)
            .map(|c| c.path().to_string())
            .collect();
        assert_eq!(first, ["a/x", "a/y.txt"]);
        // Between two pages the next folder loses all its keys and the key after it is deleted.
        for (i, k) in ["a/y/1", "a/y/2", "a/y0"].iter().enumerate() {
            map.merge(Entry::tombstone(*k, v(100 + i as u64)));
        }
        let rest: Vec<String> = map
            .children_after("a/", Some("a/y.txt"))
            .map(|c| c.path().to_string())
            .collect();
        assert_eq!(rest, ["a/z/", "a/é", "a/日本/", "a/日本語"]);
        // The deleted cursor itself still continues where it was.
        let after_dead: Vec<String> = map
            .children_after("a/", Some("a/y0"))
            .map(|c| c.path().to_string())
            .collect();
        assert_eq!(after_dead, rest);
    }

    #[test]
    fn children_carry_the_entry_of_a_key() {
        let map = map_of(KEYS);
        let kinds: Vec<(String, bool)> = map
            .children_after("a/", Some("a/y.txt"))
            .take(2)
            .map(|c| match c {
                Child::Key(e) => (e.key.to_string(), false),
                Child::Folder(f) => (f.to_string(), true),
            })
            .collect();
        assert_eq!(kinds, [("a/y/".to_string(), true), ("a/y0".to_string(), false)]);
    }

    proptest! {
        #[test]
        fn paged_children_match_the_slow_definition(
            keys in prop::collection::vec("[ab/é]{1,5}", 0..40),
            dead in prop::collection::vec(any::<bool>(), 40),
            prefix in prop::sample::select(vec!["", "a/", "b/", "a/b/", "é/"]),
            size in 1usize..5,
        ) {
            let mut map = LwwMap::new();
            for (i, k) in keys.iter().enumerate() {
                map.merge(Entry::value(k.clone(), "v", v(i as u64 + 1)));
                if dead[i] {
                    map.merge(Entry::tombstone(k.clone(), v(1000 + i as u64)));
                }
            }
            let want = brute(&map, prefix);
            prop_assert_eq!(map.children(prefix), want.clone());
            prop_assert_eq!(walk(&map, prefix, size), want);
        }
    }
}
