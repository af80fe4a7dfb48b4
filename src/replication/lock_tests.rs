//! The lock agreement's basic moves on the lossless in-memory cluster of `tests` (the simulation runs it
//! under partitions, loss, crashes and skew).

use super::lock::{LockOp, LockOutcome, LOCK_TIMEOUT_MS};
use super::tests::Cluster;
use super::*;
use crate::crdt::lock::{lock_key, Grant};
use crate::crdt::LeaseId;

fn lease(n: u64) -> LeaseId {
    LeaseId::new(n).unwrap()
}

/// A cluster of `n` whose members know each other and have judged their clocks.
fn cluster(n: usize) -> Cluster {
    let mut c = Cluster::new(n, |i| if i == 0 { vec![] } else { vec![0] });
    for _ in 0..8 {
        c.tick(1_000);
    }
    c
}

impl Cluster {
    /// Start `op` on lock `name` at node `i`; its outcome if decided once the network is quiet.
    fn lock(&mut self, i: usize, name: &str, op: LockOp) -> Option<LockOutcome> {
        let node = &mut self.nodes[i];
        let now = node.local(self.now_ms);
        let (req, fx) = node.core.lock(now, name, op, &node.state);
        self.apply(i, fx);
        self.deliver_all();
        self.outcome(i, req)
    }

    fn outcome(&self, i: usize, req: u64) -> Option<LockOutcome> {
        self.events.iter().find_map(|(n, e)| match e {
            CoreEvent::LockDecided { req: r, outcome, .. } if *n == i && *r == req => Some(outcome.clone()),
            _ => None,
        })
    }

    fn acquire(&mut self, i: usize, name: &str, l: u64, ttl_ms: u64) -> Option<LockOutcome> {
        let expires_ms = self.now_ms + ttl_ms;
        self.lock(
            i,
            name,
            LockOp::Acquire {
                lease: lease(l),
                expires_ms,
            },
        )
    }
}

fn granted(o: Option<LockOutcome>) -> Grant {
    match o {
        Some(LockOutcome::Granted(g)) => g,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn a_lock_is_granted_once_refused_to_others_and_granted_again_after_release_with_a_greater_fence() {
    let mut c = cluster(3);
    let first = granted(c.acquire(0, "job", 1, 10_000));
    assert_eq!((first.fence, first.lease), (1, Some(lease(1))));
    // Every member stored the record.
    assert!(c
        .nodes
        .iter()
        .all(|n| n.state.get(&lock_key("job")).and_then(Grant::of_entry).is_some()));
    match c.acquire(1, "job", 2, 10_000) {
        Some(LockOutcome::Held(g)) => assert_eq!(g.lease, Some(lease(1))),
        other => panic!("expected held, got {other:?}"),
    }
    // The holder extends (same fence); another lease cannot release it.
    let again = granted(c.acquire(2, "job", 1, 20_000));
    assert_eq!((again.fence, again.expires_ms), (1, c.now_ms + 20_000));
    assert!(matches!(
        c.lock(1, "job", LockOp::Release { lease: lease(2) }),
        Some(LockOutcome::NotHeld(Some(_)))
    ));
    assert!(matches!(
        c.lock(1, "job", LockOp::Release { lease: lease(1) }),
        Some(LockOutcome::Released(_))
    ));
    let next = granted(c.acquire(1, "job", 2, 10_000));
    assert_eq!(next.fence, 2);
}

#[test]
fn a_hold_ends_at_its_expiry_plus_the_drift_margin() {
    let mut c = cluster(3);
    granted(c.acquire(0, "job", 1, 2_000));
    c.tick(2_500); // past the expiry, within the margin of max_clock_drift (1 s)
    assert!(matches!(c.acquire(1, "job", 2, 2_000), Some(LockOutcome::Held(_))));
    c.tick(1_000);
    assert_eq!(granted(c.acquire(1, "job", 2, 2_000)).fence, 2);
}

#[test]
fn two_nodes_racing_get_one_grant() {
    let mut c = cluster(3);
    for round in 0..50u64 {
        let name = format!("race/{round}");
        let (a, b) = (1 + 2 * round, 2 + 2 * round);
        let now = c.now_ms;
        let mut reqs = Vec::new();
        for (i, l) in [(0, a), (1, b)] {
            let node = &mut c.nodes[i];
            let (req, fx) = node.core.lock(
                now,
                &name,
                LockOp::Acquire {
                    lease: lease(l),
                    expires_ms: now + 60_000,
                },
                &node.state,
            );
            c.apply(i, fx);
            reqs.push((i, req));
        }
        c.deliver_all();
        // An outbid attempt backs off, then tries again (and finds the winner's grant).
        for _ in 0..10 {
            if reqs.iter().all(|&(i, r)| c.outcome(i, r).is_some()) {
                break;
            }
            c.tick(100);
        }
        let outcomes: Vec<LockOutcome> = reqs.iter().map(|&(i, r)| c.outcome(i, r).expect("decided")).collect();
        let grants = outcomes.iter().filter(|o| matches!(o, LockOutcome::Granted(_))).count();
        assert_eq!(grants, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes.iter().any(|o| matches!(o, LockOutcome::Held(_))),
            "{outcomes:?}"
        );
    }
}

#[test]
fn a_node_cut_off_from_the_majority_cannot_grant() {
    let mut c = cluster(3);
    c.nodes[1].up = false;
    c.nodes[2].up = false;
    // Still believed reachable (not yet suspected): the attempt runs and times out unanswered.
    let now = c.now_ms;
    let node = &mut c.nodes[0];
    let (req, fx) = node.core.lock(
        now,
        "job",
        LockOp::Acquire {
            lease: lease(1),
            expires_ms: now + 10_000,
        },
        &node.state,
    );
    c.apply(0, fx);
    c.deliver_all();
    assert_eq!(c.outcome(0, req), None);
    for _ in 0..(LOCK_TIMEOUT_MS / 100) {
        c.tick(100);
    }
    assert!(matches!(c.outcome(0, req), Some(LockOutcome::Unavailable(_))));
    // Once the others are judged dead, it refuses at once.
    for _ in 0..35 {
        c.tick(1_000);
    }
    assert!(matches!(
        c.acquire(0, "job", 1, 10_000),
        Some(LockOutcome::Unavailable(_))
    ));
    assert!(c.nodes[0].state.get(&lock_key("job")).is_none());
}

#[test]
fn on_one_nodes_say_so_two_holders_are_granted_at_once() {
    // The injected bug the simulation must catch, shown here: each side of a partition grants alone.
    let cfg = CoreConfig {
        faults: Faults {
            lock_say_so: true,
            ..Faults::default()
        },
        ..CoreConfig::default()
    };
    let mut c = Cluster::with_config(3, |i| if i == 0 { vec![] } else { vec![0] }, cfg);
    for _ in 0..8 {
        c.tick(1_000);
    }
    c.nodes[1].up = false;
    let a = granted(c.acquire(0, "job", 1, 10_000));
    c.nodes[1].up = true;
    c.nodes[0].up = false;
    let b = granted(c.acquire(1, "job", 2, 10_000));
    assert_eq!((a.fence, b.fence), (1, 1));
}
