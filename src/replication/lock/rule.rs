//! The rule of a lock attempt, apart from the agreement that runs it: what the client asks, how the attempt
//! ends, and what an operation makes of the lock's agreed state.

use crate::crdt::lock::{Ballot, Grant};
use crate::crdt::LeaseId;

/// What a client asks of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOp {
    /// Take the lock for `lease` until `expires_ms` (wall ms: the lease's expiry), or extend the hold if
    /// `lease` holds it already.
    Acquire { lease: LeaseId, expires_ms: u64 },
    /// Give the lock up, if `lease` holds it.
    Release { lease: LeaseId },
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// Granted (a new fence) or extended (the same fence, a later expiry): the lock's agreed state.
    Granted(Grant),
    /// Held by another lease: its grant.
    Held(Grant),
    /// Released: the state before the release.
    Released(Grant),
    /// A release by a lease that does not hold the lock: the lock's state, if it has one.
    NotHeld(Option<Grant>),
    /// Not decided: no majority answered in time, or this node may not propose now (why).
    Unavailable(&'static str),
}

/// The rule: given the lock's agreed state, what `op` makes of it (the state to accept and the answer once
/// accepted), or the answer at once.
pub(super) fn decide(
    op: &LockOp,
    ballot: Ballot,
    current: Option<&Grant>,
    now_ms: u64,
    margin_ms: u64,
) -> std::result::Result<(Grant, LockOutcome), LockOutcome> {
    let held = current.filter(|g| g.held_at(now_ms, margin_ms));
    match op {
        LockOp::Acquire { lease, expires_ms } => {
            let grant = match held {
                Some(g) if g.lease == Some(*lease) => Grant {
                    expires_ms: g.expires_ms.max(*expires_ms),
                    ballot,
                    ..g.clone()
                },
                Some(g) => return Err(LockOutcome::Held(g.clone())),
                None => Grant {
                    fence: current.map(|g| g.fence).unwrap_or(0) + 1,
                    lease: Some(*lease),
                    node: ballot.node,
                    expires_ms: *expires_ms,
                    ballot,
                },
            };
            Ok((grant.clone(), LockOutcome::Granted(grant)))
        }
        LockOp::Release { lease } => match held {
            Some(g) if g.lease == Some(*lease) => {
                let released = Grant {
                    lease: None,
                    expires_ms: now_ms,
                    ballot,
                    ..g.clone()
                };
                Ok((released, LockOutcome::Released(g.clone())))
            }
            _ => Err(LockOutcome::NotHeld(current.cloned())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::NodeId;

    fn ballot(round: u64) -> Ballot {
        Ballot { round, node: NodeId(7) }
    }

    fn lease(n: u64) -> LeaseId {
        LeaseId::new(n).unwrap()
    }

    fn held_by(l: u64, fence: u64, expires_ms: u64) -> Grant {
        Grant {
            fence,
            lease: Some(lease(l)),
            node: NodeId(3),
            expires_ms,
            ballot: ballot(1),
        }
    }

    fn acquire(l: u64, expires_ms: u64) -> LockOp {
        LockOp::Acquire {
            lease: lease(l),
            expires_ms,
        }
    }

    #[test]
    fn a_free_lock_is_granted_with_the_next_fence_and_a_held_one_refused() {
        let (g, out) = decide(&acquire(1, 5_000), ballot(2), None, 1_000, 100).unwrap();
        assert_eq!((g.fence, g.lease, g.ballot), (1, Some(lease(1)), ballot(2)));
        assert_eq!(out, LockOutcome::Granted(g));
        let current = held_by(1, 4, 5_000);
        assert_eq!(
            decide(&acquire(2, 9_000), ballot(3), Some(&current), 1_000, 100),
            Err(LockOutcome::Held(current.clone()))
        );
        // Ended (past its expiry and the margin): the next fence.
        let (g, _) = decide(&acquire(2, 9_000), ballot(3), Some(&current), 5_100, 100).unwrap();
        assert_eq!((g.fence, g.lease), (5, Some(lease(2))));
    }

    #[test]
    fn the_holder_extends_with_its_fence_and_only_it_releases() {
        let current = held_by(1, 4, 5_000);
        let (g, _) = decide(&acquire(1, 9_000), ballot(3), Some(&current), 1_000, 0).unwrap();
        assert_eq!((g.fence, g.expires_ms), (4, 9_000));
        let (g, _) = decide(&acquire(1, 2_000), ballot(3), Some(&current), 1_000, 0).unwrap();
        assert_eq!(g.expires_ms, 5_000, "an extension never shortens the hold");
        let other = LockOp::Release { lease: lease(2) };
        assert_eq!(
            decide(&other, ballot(3), Some(&current), 1_000, 0),
            Err(LockOutcome::NotHeld(Some(current.clone())))
        );
        let mine = LockOp::Release { lease: lease(1) };
        let (g, out) = decide(&mine, ballot(3), Some(&current), 1_000, 0).unwrap();
        assert_eq!((g.lease, g.fence), (None, 4));
        assert_eq!(out, LockOutcome::Released(current));
    }
}
