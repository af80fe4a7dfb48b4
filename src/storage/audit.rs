//! The audit trail as the store keeps it: [`AuditRecord`] rows in id order.
//!
//! The store only persists and returns rows; what is recorded, and when, is decided above it (`crate::audit`,
//! `crate::db`). Rows are written by [`super::Store::apply_with_audit`] in the same transaction as the
//! entries of the group commit that carries them, keyed by an `id` the database layer assigns in commit order.
//! Writing a row whose `id` is already stored replaces it (the final status of a request, see `crate::audit`).
//!
//! The table has no index but its id: an index by time or accessor would be written on every audited
//! request, and measured, the two cost a write about a tenth of its throughput. Reads seek by id (the time
//! of `?since=` through a binary search over ids, which follow commit order and so, but for a clock stepped
//! back, time) and filter the rest in `crate::audit::read`, a bounded number of rows per page.

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
