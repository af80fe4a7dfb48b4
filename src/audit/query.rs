//! Reading the trail: [`read`] pages through a store's records in id order, with the filters of
//! `GET /api/v1/audit`, examining a bounded number of records per page.
//!
//! The table is indexed by id only (see `crate::storage::AuditRecord`'s module). `since` seeks: ids follow
//! commit order, and so time, so a binary search over ids finds the first record at `since` in a few dozen
//! b-tree seeks; the time condition is still checked on every record (after a clock stepped back, a record
//! with a later id may be older). An `accessor` that made few of the records would make a page scan the
//! whole trail, so a page examines at most [`MAX_SCAN_RECORDS`] and then ends, possibly short or empty, with
//! a cursor to go on from.

use crate::error::Result;
use crate::storage::{AuditRecord, Store};

/// Most records one page examines (about 1.5 MB of rows read).
pub const MAX_SCAN_RECORDS: usize = 10_000;

/// Which audit records to read: those with an id after `after`, in id order, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records with an id greater than this (0: from the first).
    pub after: u64,
    /// Only records at or after this time (milliseconds since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Only records of this accessor.
    pub accessor: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl AuditQuery {
    /// Whether `record` matches every condition but `after` and the limit.
    fn matches(&self, record: &AuditRecord) -> bool {
        self.since_ms.is_none_or(|since| record.time_ms >= since)
            && self.accessor.as_deref().is_none_or(|a| record.accessor == a)
    }
}

/// One page of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// The matching records, in id order.
    pub records: Vec<AuditRecord>,
    /// The `after` of the next page; `None` when no record is left to examine.
    pub next: Option<u64>,
}

/// The page of `store`'s records that `query` asks for.
pub async fn read(store: &dyn Store, query: &AuditQuery) -> Result<AuditPage> {
    let mut after = query.after;
    if let Some(since) = query.since_ms {
        after = after.max(first_at(store, since, after).await?.saturating_sub(1));
    }
    let mut records = Vec::new();
    let mut examined = 0;
    while examined < MAX_SCAN_RECORDS {
        // One more than needed, without filters: to know whether the page is the last.
        let want = if query.since_ms.is_none() && query.accessor.is_none() {
            query.limit - records.len() + 1
        } else {
            (MAX_SCAN_RECORDS - examined).min(1000)
        };
        let batch = store.audit_scan(after, want).await?;
        let exhausted = batch.len() < want;
        for record in batch {
            examined += 1;
            if !query.matches(&record) {
                after = record.id;
                continue;
            }
            if records.len() == query.limit {
                // A match beyond the page: the page is full and another follows.
                return Ok(AuditPage {
                    records,
                    next: Some(after),
                });
            }
            after = record.id;
            records.push(record);
        }
        if exhausted {
            return Ok(AuditPage { records, next: None });
        }
    }
    Ok(AuditPage {
        records,
        next: Some(after),
    })
}

/// The lowest id at or after `from` whose record is at `since` or later (as if times grew with ids), or one
/// past the last record.
async fn first_at(store: &dyn Store, since: u64, from: u64) -> Result<u64> {
    let (mut lo, mut hi) = (from.saturating_add(1), store.audit_last_id().await?.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match store.audit_time_at(mid).await? {
            Some(time) if time < since => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::NodeId;
    use crate::storage::MemoryStore;

    fn record(id: u64, time_ms: u64, accessor: &str) -> AuditRecord {
        AuditRecord {
            id,
            time_ms,
            node: NodeId(1),
            accessor: accessor.into(),
            method: "PUT".into(),
            route: "/api/v1/kv/{*key}".into(),
            key: None,
            status: 200,
            remote_addr: None,
        }
    }

    fn query(after: u64, since_ms: Option<u64>, accessor: Option<&str>, limit: usize) -> AuditQuery {
        AuditQuery {
            after,
            since_ms,
            accessor: accessor.map(str::to_string),
            limit,
        }
    }

    #[tokio::test]
    async fn a_rare_accessor_pages_in_bounded_scans_to_the_end() {
        let store = MemoryStore::new();
        let n = 2 * MAX_SCAN_RECORDS as u64 + 500;
        let records: Vec<AuditRecord> = (1..=n)
            .map(|id| record(id, id, if id == 15_000 { "rare" } else { "common" }))
            .collect();
        store.apply_with_audit(&[], &records).await.unwrap();
        let first = read(&store, &query(0, None, Some("rare"), 10)).await.unwrap();
        assert!(first.records.is_empty());
        assert_eq!(first.next, Some(MAX_SCAN_RECORDS as u64));
        let second = read(&store, &query(first.next.unwrap(), None, Some("rare"), 10))
            .await
            .unwrap();
        assert_eq!(second.records, [record(15_000, 15_000, "rare")]);
        assert_eq!(second.next, Some(2 * MAX_SCAN_RECORDS as u64));
        let last = read(&store, &query(second.next.unwrap(), None, Some("rare"), 10))
            .await
            .unwrap();
        assert_eq!((last.records.len(), last.next), (0, None));
        // Unfiltered pages are full, and the last one says so.
        let page = read(&store, &query(n - 5, None, None, 5)).await.unwrap();
        assert_eq!((page.records.len(), page.next), (5, None));
        let page = read(&store, &query(n - 6, None, None, 5)).await.unwrap();
        assert_eq!((page.records.len(), page.next), (5, Some(n - 1)));
    }

    #[tokio::test]
    async fn since_seeks_and_still_checks_every_time() {
        let store = MemoryStore::new();
        // The clock stepped back at id 6: its record is older than those before it.
        let times = [10, 20, 30, 40, 50, 15, 60, 70];
        let records: Vec<AuditRecord> = (1..).zip(times).map(|(id, t)| record(id, t, "a")).collect();
        store.apply_with_audit(&[], &records).await.unwrap();
        let ids = |page: AuditPage| page.records.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(read(&store, &query(0, Some(35), None, 100)).await.unwrap()),
            [4, 5, 7, 8]
        );
        assert_eq!(
            ids(read(&store, &query(0, Some(0), None, 100)).await.unwrap()),
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(
            ids(read(&store, &query(5, Some(12), None, 100)).await.unwrap()),
            [6, 7, 8]
        );
        assert!(ids(read(&store, &query(0, Some(71), None, 100)).await.unwrap()).is_empty());
        assert_eq!(ids(read(&store, &query(0, Some(35), Some("a"), 1)).await.unwrap()), [4]);
    }
}
