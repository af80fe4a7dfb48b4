//! The lock workload (the `locks` scenario): contenders fight over a few locks through any node, acquiring,
//! extending (acquiring again) and releasing them; the core's agreement decides. Every decision is recorded,
//! and [`Sim::lock_violations`] requires that no two holds of a lock overlap and that fences grow with grants.

use std::collections::BTreeMap;

use cave::crdt::LeaseId;
use cave::replication::{LockOp, LockOutcome};
use rand::Rng;

use super::{sample, Sim};
use crate::check::Violation;
use crate::node::EPOCH_MS;
use crate::trace::Tag;

/// Contenders per lock (each holds its own lease).
const CONTENDERS: u64 = 4;
/// How long after it was asked a release may still take effect, ms: its attempt's deadline, and time for
/// accepts sent before it to arrive.
const RELEASE_WINDOW_MS: u64 = cave::replication::LOCK_TIMEOUT_MS + 1_000;

/// What the simulation saw of the locks.
#[derive(Debug, Default)]
pub struct LockLog {
    /// Attempts under way, by (node, its process generation, request): what was asked, and when.
    pending: BTreeMap<(usize, u64, u64), (LockOp, u64)>,
    /// Every grant or extension, in decision order.
    grants: Vec<Granted>,
    /// When releases were asked for, by (lock, lease): a holder stops acting as one when it asks, whatever
    /// the answer (an attempt that timed out may still have been accepted).
    releases: BTreeMap<(String, LeaseId), Vec<u64>>,
    /// When a release of a fence was decided (asked, perhaps, before that fence was granted: the contenders
    /// here do not wait for one answer before their next request).
    released: BTreeMap<(String, u64), u64>,
    /// Decisions by kind: granted, held, released, not held, unavailable.
    pub counts: [u64; 5],
}

/// A hold as the checker sees it: holder, first decision, end of hold, granting node.
type Hold = (Option<LeaseId>, u64, u64, usize);

#[derive(Debug)]
struct Granted {
    lock: String,
    fence: u64,
    lease: Option<LeaseId>,
    node: usize,
    /// Simulated true time of the decision.
    at: u64,
    /// The hold's end in simulated true time (clocks here agree within a few ms, the outlier being fenced).
    until: u64,
}

impl Sim {
    /// Issue one lock operation on `slot`.
    pub(super) fn lock_op(&mut self, slot: usize) {
        let lock_no = self.work.gen_range(0..self.params.locks.max(1) as u64);
        let name = format!("lock/{lock_no}");
        let lease = LeaseId::new(1 + lock_no * CONTENDERS + self.work.gen_range(0..CONTENDERS)).expect("not 0");
        let local = self.local(slot);
        let op = if self.work.gen_bool(0.75) {
            let ttl = sample(&mut self.work, self.params.lock_ttl_ms);
            LockOp::Acquire {
                lease,
                expires_ms: local + ttl,
            }
        } else {
            LockOp::Release { lease }
        };
        self.trace.event(Tag::Client, self.now, slot);
        self.trace.u64(lease.get());
        let node = &mut self.nodes[slot];
        let generation = node.generation;
        let Some(run) = node.run.as_mut() else { return };
        if let LockOp::Release { lease } = op {
            self.locks
                .releases
                .entry((name.clone(), lease))
                .or_default()
                .push(self.now);
        }
        let (req, fx) = run.core.lock(local, &name, op.clone(), &node.state);
        self.locks.pending.insert((slot, generation, req), (op, self.now));
        self.carry_out(slot, fx);
    }

    /// The core decided attempt `req` of `slot`.
    pub(super) fn lock_decided(&mut self, slot: usize, req: u64, lock: String, outcome: LockOutcome) {
        let generation = self.nodes[slot].generation;
        if self.locks.pending.remove(&(slot, generation, req)).is_none() {
            return;
        }
        let kind = match &outcome {
            LockOutcome::Granted(g) => {
                self.locks.grants.push(Granted {
                    lock: lock.clone(),
                    fence: g.fence,
                    lease: g.lease,
                    node: slot,
                    at: self.now,
                    until: g.expires_ms.saturating_sub(EPOCH_MS),
                });
                0
            }
            LockOutcome::Held(_) => 1,
            LockOutcome::Released(g) => {
                self.locks.released.entry((lock.clone(), g.fence)).or_insert(self.now);
                2
            }
            LockOutcome::NotHeld(_) => 3,
            LockOutcome::Unavailable(_) => 4,
        };
        self.locks.counts[kind] += 1;
        self.log(|| format!("n{slot} lock {lock}: {outcome:?}"));
    }

    /// No two holds of a lock overlap (beyond `margin_ms`, the clocks' disagreement), one fence names one
    /// holder, and a later grant never carries a smaller fence.
    pub(super) fn lock_violations(&self, margin_ms: u64) -> Vec<Violation> {
        // Per lock and fence: the holder, the first grant, the end of the hold.
        let mut holds: BTreeMap<&str, BTreeMap<u64, Hold>> = BTreeMap::new();
        let mut out = Vec::new();
        for g in &self.locks.grants {
            let hold = holds
                .entry(&g.lock)
                .or_default()
                .entry(g.fence)
                .or_insert((g.lease, g.at, g.until, g.node));
            if hold.0 != g.lease {
                out.push(Violation {
                    kind: "one fence granted to two holders",
                    key: Some(g.lock.clone()),
                    detail: format!(
                        "fence {} to {:?} (n{}) and to {:?} (n{})",
                        g.fence, hold.0, hold.3, g.lease, g.node
                    ),
                    history: String::new(),
                });
            }
            hold.2 = hold.2.max(g.until);
        }
        for (lock, fences) in &holds {
            let ends: Vec<(u64, u64, u64, usize)> = fences
                .iter()
                .map(|(&fence, &(lease, start, until, node))| {
                    // The hold ends at the first release its holder asked for that could still take effect once
                    // it was granted (an attempt waits, runs and has its accepts delivered within
                    // `RELEASE_WINDOW_MS`): a release asked before the grant ends it at the grant.
                    let asked = lease
                        .and_then(|l| self.locks.releases.get(&(lock.to_string(), l)))
                        .and_then(|times| {
                            times
                                .iter()
                                .filter(|&&t| t + RELEASE_WINDOW_MS >= start)
                                .map(|&t| t.max(start))
                                .min()
                        });
                    let decided = self.locks.released.get(&(lock.to_string(), fence)).copied();
                    let end = [Some(until), asked, decided]
                        .into_iter()
                        .flatten()
                        .min()
                        .unwrap_or(until);
                    (fence, start, end, node)
                })
                .collect();
            for (i, &(f1, s1, e1, n1)) in ends.iter().enumerate() {
                for &(f2, s2, _, n2) in &ends[i + 1..] {
                    // A smaller fence first heard of after a greater one is an attempt decided before it whose
                    // answer came late (its acceptors' commits were slow): fine if its hold had ended by then.
                    if s2 < s1 && s1 + margin_ms < e1 {
                        out.push(Violation {
                            kind: "a later grant of a lock has a smaller fence",
                            key: Some(lock.to_string()),
                            detail: format!("fence {f2} (n{n2}) at {s2} ms, after fence {f1} (n{n1}) at {s1} ms"),
                            history: String::new(),
                        });
                    } else if s2 + margin_ms < e1 {
                        out.push(Violation {
                            kind: "two holders of a lock at once",
                            key: Some(lock.to_string()),
                            detail: format!(
                                "fence {f2} granted by n{n2} at {s2} ms while fence {f1} (granted by n{n1} at {s1} \
                                 ms) held until {e1} ms"
                            ),
                            history: String::new(),
                        });
                    }
                }
            }
        }
        // A broken run finds the same thing many times: a few of each kind tell it.
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        out.retain(|v| {
            let n = shown.entry(v.kind).or_default();
            *n += 1;
            *n <= 5
        });
        out
    }
}
