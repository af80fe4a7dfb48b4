//! The audit trail as the store keeps it: [`AuditRecord`] rows, read back by [`AuditQuery`].
//!
//! The store only persists and returns rows; what is recorded, and when, is decided above it (`crate::audit`,
//! `crate::db`). Rows are written by [`super::Store::apply_with_audit`] in the same transaction as the
//! entries of the group commit that carries them, keyed by an `id` the database layer assigns in commit order.
//! Writing a row whose `id` is already stored replaces it (the final status of a request, see `crate::audit`).

use crate::crdt::NodeId;

/// One audited request. Never holds a value or a token: only who (the token's public accessor), what
/// (method, route template, key) and how it ended (status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned by the database layer in commit order, unique for the life of the store (never reused, even
    /// after every row was purged): the paging cursor.
    pub id: u64,
    /// When the request was served, in milliseconds since the Unix epoch (the node's clock).
    pub time_ms: u64,
    /// The node that served it.
    pub node: NodeId,
    /// The public accessor of the token that made it (`anonymous` without one).
    pub accessor: String,
    /// The HTTP method.
    pub method: String,
    /// The matched route template (`/api/v1/kv/{*key}`), or the path without its query when none matched.
    pub route: String,
    /// The decoded key (or other name) the route names, if any.
    pub key: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// The client's address (`ip:port`), if known.
    pub remote_addr: Option<String>,
}

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
    /// Whether `record` matches every condition but the limit.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        record.id > self.after
            && self.since_ms.is_none_or(|since| record.time_ms >= since)
            && self.accessor.as_deref().is_none_or(|a| record.accessor == a)
    }
}
