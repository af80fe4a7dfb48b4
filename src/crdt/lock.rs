//! Locks: the record every node keeps of a lock's latest agreed grant.
//!
//! A lock is held by a lease: the grant names the lease, the node that granted it, the **fence** (a number
//! that grows with every new grant of that lock) and the wall-clock time its hold ends unless extended. The
//! agreement that decides grants is the replication core's (`replication::lock`); what it agrees on is
//! stored here, as the ordinary entry `_system/lock/{name}` holding a [`Grant`] in JSON, so that a node
//! knows a lock's last fence after a restart, every node can say who holds it, and the watch stream sees
//! grants and releases. A released lock keeps its record (no holder, the last fence), so fences never
//! start again from 1.

use serde::{Deserialize, Serialize};

use super::{Entry, LeaseId, NodeId, Version};

/// Where lock records live (a reserved folder: clients reach them only through `/api/v1/lock`).
pub const LOCK_PREFIX: &str = "_system/lock/";

/// The content type of a lock record.
const RECORD_CONTENT_TYPE: &str = "application/json";

/// A proposal number of the agreement: ordered by round, then by the proposing node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Ballot {
    /// Grows with every attempt on the lock.
    pub round: u64,
    /// The proposer; breaks ties between equal rounds.
    pub node: NodeId,
}

/// A lock's state as agreed: who holds it, under which fence, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Strictly greater for every new holder of the lock; unchanged when a holder extends its hold.
    pub fence: u64,
    /// The holding lease; `None` once released.
    pub lease: Option<LeaseId>,
    /// The node that granted it (the holder's client asked there).
    pub node: NodeId,
    /// Wall-clock ms (the hybrid clock's physical part) at which the hold ends unless extended: the
    /// holding lease's expiry when it was granted or last extended.
    pub expires_ms: u64,
    /// The proposal that wrote this state.
    pub ballot: Ballot,
}

impl Grant {
    /// Whether the lock is held at wall-clock `now_ms`, allowing `margin_ms` for clocks that disagree: a
    /// node whose clock runs ahead must not take a hold for ended while the holder's clock says it is not.
    pub fn held_at(&self, now_ms: u64, margin_ms: u64) -> bool {
        self.lease.is_some() && now_ms < self.expires_ms.saturating_add(margin_ms)
    }

    /// The record of this grant for lock `name`, stamped `version`.
    pub fn entry(&self, name: &str, version: Version) -> Entry {
        let mut e = Entry::value(
            lock_key(name),
            serde_json::to_vec(self).expect("a grant serializes"),
            version,
        );
        e.content_type = RECORD_CONTENT_TYPE.into();
        e
    }

    /// The grant a lock record holds, `None` if `entry` is not a live lock record.
    pub fn of_entry(entry: &Entry) -> Option<Grant> {
        if entry.deleted || name_of_key(&entry.key).is_none() {
            return None;
        }
        serde_json::from_slice(&entry.value).ok()
    }
}

/// The key of lock `name`'s record.
pub fn lock_key(name: &str) -> String {
    format!("{LOCK_PREFIX}{name}")
}

/// The lock whose record `key` is, if it is one.
pub fn name_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(LOCK_PREFIX).filter(|n| !n.is_empty())
}

impl super::LwwMap {
    /// Whether `grant` holds its lock at hybrid-clock time `now`, as reads judge it: not released, not past
    /// its expiry, and its lease live here (a revoked lease's locks read as free at once).
    pub fn lock_held(&self, grant: &Grant, now: u64) -> bool {
        let now_ms = super::hlc::physical_ms(now);
        grant.held_at(now_ms, 0) && grant.lease.is_some_and(|id| self.lease_live(id, now))
    }

    /// How many locks are held at hybrid-clock time `now`, as reads judge it.
    pub fn held_locks(&self, now: u64) -> usize {
        self.lock_records().filter(|(_, g)| self.lock_held(g, now)).count()
    }

    /// The lock records this node holds, by name.
    pub fn lock_records(&self) -> impl Iterator<Item = (&str, Grant)> + '_ {
        self.range_prefix(LOCK_PREFIX)
            .filter_map(|e| Some((name_of_key(&e.key)?, Grant::of_entry(e)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(lease: Option<u64>) -> Grant {
        Grant {
            fence: 7,
            lease: lease.and_then(LeaseId::new),
            node: NodeId(3),
            expires_ms: 10_000,
            ballot: Ballot {
                round: 9,
                node: NodeId(3),
            },
        }
    }

    #[test]
    fn a_record_round_trips_through_its_entry() {
        let g = grant(Some(0xab));
        let e = g.entry("jobs/nightly", Version::new(5, NodeId(3)));
        assert_eq!(e.key, "_system/lock/jobs/nightly");
        assert_eq!(name_of_key(&e.key), Some("jobs/nightly"));
        assert_eq!(Grant::of_entry(&e), Some(g));
        assert_eq!(Grant::of_entry(&Entry::tombstone(e.key.clone(), e.version)), None);
        let mut other = e.clone();
        other.key = "app/x".into();
        assert_eq!(Grant::of_entry(&other), None);
    }

    #[test]
    fn a_hold_ends_at_its_expiry_plus_the_margin_and_a_release_ends_it_at_once() {
        let g = grant(Some(1));
        assert!(g.held_at(9_999, 0));
        assert!(!g.held_at(10_000, 0));
        assert!(g.held_at(10_999, 1_000));
        assert!(!g.held_at(11_000, 1_000));
        assert!(!grant(None).held_at(0, 1_000));
    }

    #[test]
    fn ballots_order_by_round_then_node() {
        let b = |round, node| Ballot {
            round,
            node: NodeId(node),
        };
        assert!(b(1, 9) < b(2, 1));
        assert!(b(2, 1) < b(2, 2));
    }
}
