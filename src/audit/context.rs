//! The audit record of the request a task is serving, where the database layer finds it.
//!
//! The HTTP layer ([`crate::api`]'s audit middleware) opens a [`Pending`] record for each request that
//! may change something and runs the request inside [`Pending::scope`]. When the request's handler writes
//! through [`crate::db::Db`], the database [`claim`]s the record and commits it in the same transaction as
//! the write; the middleware then sees it [`Pending::committed`] and has nothing left to store unless the
//! final answer differs from what was committed. A task-local rather than a parameter of every handler:
//! every route that writes is covered, the access-control routes of other modules included, without each
//! handler having to pass the record along, and a handler that does not (one that wrote from a task of its
//! own) only loses the atomicity, never the record: the middleware stores what was not committed.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::AuditRecord;

tokio::task_local! {
    static REQUEST: Arc<Pending>;
}

/// The status an audit record committed with a write carries: what the write's handler answers when the
/// write succeeds. The middleware corrects it if the request ended otherwise.
pub const COMMITTED_STATUS: u16 = 200;

/// The audit record of one request in progress.
#[derive(Debug)]
pub struct Pending {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Everything but `id`, `status` (and `accessor`, until the access-control layer names the caller).
    record: AuditRecord,
    /// A database call holds the record (its commit is in progress).
    claimed: bool,
    /// The id and status it was committed with.
    committed: Option<(u64, u16, String)>,
}

impl Pending {
    /// A pending record: `record` with its `id` and `status` still to be decided.
    pub fn new(record: AuditRecord) -> Arc<Pending> {
        Arc::new(Pending {
            state: Mutex::new(State {
                record,
                claimed: false,
                committed: None,
            }),
        })
    }

    /// Run `request` with this record as the one its database writes carry.
    pub async fn scope<F: Future>(self: Arc<Self>, request: F) -> F::Output {
        REQUEST.scope(self, request).await
    }

    /// `(id, status, accessor)` it was committed with, if a write committed it.
    pub fn committed(&self) -> Option<(u64, u16, String)> {
        self.state.lock().committed.clone()
    }

    /// The record with this final `id`, `status` and `accessor`.
    pub fn record(&self, id: u64, status: u16, accessor: &str) -> AuditRecord {
        let state = self.state.lock();
        AuditRecord {
            id,
            status,
            accessor: accessor.to_string(),
            ..state.record.clone()
        }
    }
}

/// The accessor of the caller of the request this task serves, once the access-control layer knows it.
/// Outside a request, or for requests without a pending record (reads), it does nothing.
pub fn set_accessor(accessor: &str) {
    let _ = REQUEST.try_with(|pending| {
        let mut state = pending.state.lock();
        if state.record.accessor != accessor {
            state.record.accessor = accessor.to_string();
        }
    });
}

/// The pending record of the request this task serves, for the database to commit with a write: `None`
/// outside a request, for a request without one, and once one write committed it (a request that writes
/// several times, an import in chunks, is recorded once, with its first write).
pub fn claim() -> Option<Claim> {
    REQUEST
        .try_with(|pending| {
            let mut state = pending.state.lock();
            if state.claimed || state.committed.is_some() {
                return None;
            }
            state.claimed = true;
            Some(Claim {
                record: state.record.clone(),
                pending: pending.clone(),
            })
        })
        .ok()
        .flatten()
}

/// A pending record held by a database write. Dropped without [`Claim::committed`] (the write failed), it
/// goes back to its request, whose middleware then stores it with the final status.
#[derive(Debug)]
pub struct Claim {
    /// The record (its `id` and `status` still to be set by whoever commits it).
    pub record: AuditRecord,
    pending: Arc<Pending>,
}

impl Claim {
    /// The record was committed with `id` and `status`.
    pub fn committed(self, id: u64, status: u16) {
        let mut state = self.pending.state.lock();
        state.committed = Some((id, status, self.record.accessor.clone()));
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.pending.state.lock().claimed = false;
    }
}
