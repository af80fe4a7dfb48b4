//! The checks of each operation on its own, which every store runs (see `for_each_store!`).

use bytes::Bytes;

use super::{v, value, LoadedReads, HIGH};
use crate::crdt::Entry;
use crate::error::Error;
use crate::storage::Store;

pub(super) async fn round_trip(store: &dyn Store) {
    let entries = vec![
        Entry {
            content_type: "text/plain; charset=utf-8".into(),
            ..value("app/greeting", "grüß dich".as_bytes(), v(10, 1))
        },
        value("app/binary", &[0x00, 0xff, 0xfe, 0x80, 0x7f, 0x00], v(11, 2)),
        value("app/empty", b"", v(12, 3)),
        Entry {
            secret: true,
            content_type: "application/x-cave-sealed".into(),
            ..value("app/db/password", b"\x01sealed\xc3\x28", v(13, 4))
        },
        Entry::tombstone("app/deleted", v(14, 5)),
        Entry {
            expires: Some(crate::crdt::expiry::at(HIGH + 9)),
            ..value("app/expiring", b"e", v(15, 6))
        },
        Entry {
            lease: crate::crdt::LeaseId::new(HIGH + 3),
            ..value("app/leased", b"l", v(16, 6))
        },
        value("zz/last", b"z", v(HIGH + 7, u64::MAX)),
    ];
    assert_eq!(store.apply(&entries).await.unwrap(), entries.len());

    for entry in &entries {
        assert_eq!(
            store.get(&entry.key).await.unwrap().as_ref(),
            Some(entry),
            "get {}",
            entry.key
        );
    }
    assert_eq!(store.get("app/missing").await.unwrap(), None);
    assert_eq!(store.get("app").await.unwrap(), None);

    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(store.load().await.unwrap(), sorted);
    assert_eq!(store.scan("app/").await.unwrap(), sorted[..7].to_vec());
    let empty = store.get("app/empty").await.unwrap().unwrap();
    assert_eq!(empty.value, Bytes::new());
    assert!(!empty.deleted);
}

pub(super) async fn an_empty_batch_changes_nothing(store: &dyn Store) {
    assert_eq!(store.apply(&[]).await.unwrap(), 0);
    assert_eq!(store.load().await.unwrap(), vec![]);
}

pub(super) async fn scan_matches_exactly_the_prefix(store: &dyn Store) {
    let keys = [
        "a",
        "a.",
        "a/",
        "a/b",
        "a/b/c",
        "a/\u{7f}",
        "a/\u{D7FF}",
        "a/\u{E000}",
        "a/\u{10FFFF}",
        "a/\u{10FFFF}x",
        "a0",
        "a0/b",
        "ab",
        "b",
        "é",
        "é/1",
        "é/2",
        "éa",
        "ê",
        "日本/東京",
        "日本/大阪",
        "日本語",
        "\u{10FFFF}",
        "\u{10FFFF}\u{10FFFF}",
        "\u{10FFFF}a",
    ];
    let entries: Vec<Entry> = keys.iter().map(|key| value(key, key.as_bytes(), v(1, 1))).collect();
    store.apply(&entries).await.unwrap();

    let prefixes = [
        "",
        "a",
        "a/",
        "a/b",
        "a/\u{D7FF}",
        "a/\u{10FFFF}",
        "a0",
        "b",
        "c",
        "é",
        "é/",
        "日本/",
        "日本",
        "\u{10FFFF}",
        "\u{10FFFF}\u{10FFFF}",
    ];
    for prefix in prefixes {
        let expected: Vec<&str> = keys.iter().copied().filter(|key| key.starts_with(prefix)).collect();
        let mut expected = expected;
        expected.sort_unstable();
        let found: Vec<String> = store
            .scan(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key.to_string())
            .collect();
        assert_eq!(found, expected, "scan({prefix:?})");
    }
    assert!(!store
        .scan("a/")
        .await
        .unwrap()
        .iter()
        .any(|e| e.key == "a" || e.key == "a0"));
}

pub(super) async fn purge_removes_only_old_tombstones(store: &dyn Store) {
    let entries = [
        Entry::tombstone("t/5", v(5, 1)),
        Entry::tombstone("t/9", v(9, u64::MAX)),
        Entry::tombstone("t/10", v(10, 1)),
        Entry::tombstone("t/high", v(HIGH + 1, 1)),
        Entry::tombstone("t/max", v(u64::MAX, 1)),
        value("live/1", b"x", v(1, 1)),
        value("live/high", b"x", v(HIGH, 1)),
    ];
    store.apply(&entries).await.unwrap();

    assert_eq!(store.purge_tombstones(0).await.unwrap(), Vec::<String>::new());
    let mut purged = store.purge_tombstones(10).await.unwrap();
    purged.sort();
    assert_eq!(purged, ["t/5", "t/9"]);
    assert_eq!(store.get("t/5").await.unwrap(), None);
    assert!(store.get("t/10").await.unwrap().is_some());

    // A bound above 2^63 must neither skip the small HLCs nor the large ones below it.
    let mut purged = store.purge_tombstones(HIGH + 2).await.unwrap();
    purged.sort();
    assert_eq!(purged, ["t/10", "t/high"]);
    assert_eq!(store.purge_tombstones(u64::MAX).await.unwrap(), Vec::<String>::new());

    let left: Vec<String> = store
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key.to_string())
        .collect();
    assert_eq!(left, ["live/1", "live/high", "t/max"]);
}

pub(super) async fn size_grows_with_the_data(store: &dyn Store) {
    let before = store.size_bytes().await.unwrap();
    let big: Vec<Entry> = (0..16)
        .map(|i| value(&format!("big/{i}"), &[i as u8; 64 * 1024], v(1, 1)))
        .collect();
    store.apply(&big).await.unwrap();
    let after = store.size_bytes().await.unwrap();
    assert!(after >= before + 16 * 64 * 1024, "{before} -> {after}");
}

pub(super) async fn concurrent_batches_all_persist(store: &dyn Store) {
    let batches: Vec<Vec<Entry>> = (0..8)
        .map(|writer| {
            (0..50)
                .map(|i| value(&format!("w{writer}/{i:02}"), b"x", v(i + 1, writer)))
                .collect()
        })
        .collect();
    let applied = futures::future::join_all(batches.iter().map(|batch| store.apply(batch))).await;
    for result in applied {
        assert_eq!(result.unwrap(), 50);
    }
    assert_eq!(store.load().await.unwrap().len(), 400);
}

pub(super) async fn close_makes_every_call_unavailable(store: &dyn Store) {
    store.apply(&[value("k", b"v", v(1, 1))]).await.unwrap();
    store.close().await.unwrap();

    fn unavailable<T: std::fmt::Debug>(call: &str, result: crate::Result<T>) {
        assert!(
            matches!(result, Err(Error::Unavailable(_))),
            "{call} after close: {result:?}"
        );
    }
    unavailable("load", store.load().await);
    unavailable("apply", store.apply(&[value("k", b"w", v(2, 1))]).await);
    unavailable("apply([])", store.apply(&[]).await);
    unavailable("purge_tombstones", store.purge_tombstones(u64::MAX).await);
    unavailable("size_bytes", store.size_bytes().await);
    unavailable("close", store.close().await);
}
