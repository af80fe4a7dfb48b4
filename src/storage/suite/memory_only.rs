//! Checks for [`MemoryStore`] only.

use bytes::Bytes;

use super::{model, v, value, LoadedReads};
use crate::crdt::Entry;
use crate::error::Error;
use crate::storage::{MemoryStore, Store};

#[tokio::test]
async fn memory_reopen_sees_the_persisted_entries() {
    let disk = MemoryStore::new();
    let entries = [value("a", b"1", v(1, 1)), Entry::tombstone("b", v(2, 1))];
    disk.apply(&entries).await.unwrap();
    disk.close().await.unwrap();

    let restarted = disk.reopen();
    assert_eq!(restarted.load().await.unwrap(), entries);
    assert_eq!(
        restarted.size_bytes().await.unwrap(),
        entries.iter().map(|e| e.size() as u64).sum::<u64>()
    );
    restarted.apply(&[value("c", b"3", v(3, 1))]).await.unwrap();
    assert!(
        matches!(disk.get("c").await, Err(Error::Unavailable(_))),
        "the old handle stays closed"
    );
    assert_eq!(
        disk.reopen().get("c").await.unwrap().unwrap().value,
        Bytes::from_static(b"3")
    );
}

#[tokio::test]
async fn memory_size_is_the_sum_of_entry_sizes() {
    let store = MemoryStore::new();
    let entries = [
        value("a", b"12345", v(1, 1)),
        value("a", b"1", v(2, 1)),
        Entry::tombstone("bb", v(1, 1)),
    ];
    store.apply(&entries).await.unwrap();
    let expected: usize = model(&entries).values().map(Entry::size).sum();
    assert_eq!(store.size_bytes().await.unwrap(), expected as u64);
    store.purge_tombstones(u64::MAX).await.unwrap();
    assert_eq!(store.size_bytes().await.unwrap(), entries[1].size() as u64);
}
