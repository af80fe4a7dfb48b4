//! Locks as reads see them: the records of `crate::crdt::lock` on this node. Acquiring and releasing is the
//! cluster's agreement (`replication::lock`), not a database write.

use serde::Serialize;

use super::Db;
use crate::crdt::lock::{lock_key, Grant};
use crate::crdt::{LeaseId, NodeId};

/// Locks [`Db::locks`] lists at most.
pub const LOCKS_SHOWN: usize = 1000;

/// A lock as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockView {
    /// Its name.
    pub lock: String,
    /// The holding lease while held, else `null`.
    pub holder: Option<LeaseId>,
    /// The fence of the latest grant.
    pub fence: u64,
    /// The node that granted it.
    pub node: NodeId,
    /// When the hold ends unless extended (Unix ms).
    pub expires_ms: u64,
    /// Whether it is held now, as this node sees it.
    pub held: bool,
}

impl LockView {
    fn of(lock: &str, grant: Grant, held: bool) -> LockView {
        LockView {
            lock: lock.to_string(),
            holder: grant.lease.filter(|_| held),
            fence: grant.fence,
            node: grant.node,
            expires_ms: grant.expires_ms,
            held,
        }
    }
}

impl Db {
    /// Lock `name` as this node last heard of it (`None`: never granted).
    pub fn lock(&self, name: &str) -> Option<LockView> {
        let now = self.shared.hlc.reading();
        self.with_state(|state| {
            let grant = state.get(&lock_key(name)).and_then(Grant::of_entry)?;
            let held = state.lock_held(&grant, now);
            Some(LockView::of(name, grant, held))
        })
    }

    /// The held locks, by name (at most [`LOCKS_SHOWN`]; `readable` filters by name).
    pub fn locks(&self, readable: impl Fn(&str) -> bool) -> Vec<LockView> {
        let now = self.shared.hlc.reading();
        self.with_state(|state| {
            state
                .lock_records()
                .filter(|(name, grant)| readable(name) && state.lock_held(grant, now))
                .take(LOCKS_SHOWN)
                .map(|(name, grant)| LockView::of(name, grant, true))
                .collect()
        })
    }
}
