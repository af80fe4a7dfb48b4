//! Expiring values on a simulated node: the writer's sweep (`db::writer`'s `expire_due`) and the probe of
//! what the node would answer a read of each expired key. The rules are cave's own: `Hlc::reading` is the
//! time a node judges expiry by, `Entry::live_at` the judgement, `LwwMap::expired_due` the sweep.

use cave::crdt::hlc::from_physical_ms;

use super::{Sim, MAX_GROUP_ENTRIES};
use crate::check::Violation;
use crate::node::{Cmd, Origin, EPOCH_MS};
use crate::scenario::Bug;

/// Violations of one kind kept per run (the first ones tell the story).
const MAX_REPORTED: usize = 5;

impl Sim {
    /// On every tick of a running node (scenarios with expiring keys only): probe, then sweep.
    pub(super) fn expiry_tick(&mut self, slot: usize, local_ms: u64) {
        let node = &self.nodes[slot];
        let Some(run) = node.run.as_ref() else { return };
        // The guarantee is for nodes that serve with a clock within bounds, or that know theirs is off (the
        // fence): an outlier not judged yet (the first seconds of a run, when no majority has sampled it) is
        // the drift guard's alone, as for writes (docs/architecture.md, "Clock discipline").
        let off_ms = (local_ms as i64 - (EPOCH_MS + self.now) as i64).unsigned_abs();
        let judged = run.core.clock_fence().is_some() || off_ms <= self.cfg.max_clock_drift_ms / 2;
        let now = if self.opts.bug == Some(Bug::ExpiryOnWallClock) {
            from_physical_ms(local_ms)
        } else {
            run.hlc.reading()
        };
        // Every node reads a key as absent from `max_clock_drift` after its expiry in true time on.
        let true_ms = EPOCH_MS + self.now;
        let overdue = from_physical_ms(true_ms.saturating_sub(self.cfg.max_clock_drift_ms));
        let served: Vec<(String, u64)> = node
            .state
            .expiring()
            .due(overdue, usize::MAX)
            .into_iter()
            .filter_map(|key| node.state.get(key))
            .filter(|e| judged && e.live_at(now))
            .map(|e| (e.key.to_string(), e.expires.map_or(0, std::num::NonZeroU64::get)))
            .collect();
        for (key, expires) in served {
            self.stats.expired_served += 1;
            if self.expiry_violations.len() < MAX_REPORTED {
                let late_ms = true_ms - cave::crdt::hlc::physical_ms(expires);
                self.expiry_violations.push(Violation {
                    kind: "expired key still read as live",
                    detail: format!("n{slot} at {true_ms}: {late_ms} ms past its expiry"),
                    history: self.history.describe(&key, 8, &[]),
                    key: Some(key),
                });
            }
        }
        self.lease_probe(slot, judged, now);
        let node = &self.nodes[slot];
        let mut tombstones = node.state.expired_due(now, MAX_GROUP_ENTRIES);
        if self.opts.bug == Some(Bug::LeaseIgnored) {
            tombstones.retain(|t| t.lease.is_none());
        }
        if !tombstones.is_empty() {
            self.stats.expired_swept += tombstones.len() as u64;
            self.stats.lease_swept += tombstones.iter().filter(|t| t.lease.is_some()).count() as u64;
            self.submit(slot, Cmd::Merge(tombstones, Origin::Replicated));
        }
    }

    /// Every value bound to a lease whose every grant and renewal has expired, `max_clock_drift` ago in true
    /// time, must read as absent on a judged node (the rule: `LwwMap::live_at`).
    fn lease_probe(&mut self, slot: usize, judged: bool, now: u64) {
        let node = &self.nodes[slot];
        let true_ms = EPOCH_MS + self.now;
        let overdue = from_physical_ms(true_ms.saturating_sub(self.cfg.max_clock_drift_ms));
        let ignored = self.opts.bug == Some(Bug::LeaseIgnored);
        let mut served = Vec::new();
        for id in node.state.bound().ids() {
            if !judged || self.history.lease_ends.get(&id).is_none_or(|&end| end > overdue) {
                continue;
            }
            for key in node.state.bound().keys(id) {
                let Some(entry) = node.state.get(key) else { continue };
                let live = if ignored {
                    entry.live_at(now)
                } else {
                    node.state.live_at(entry, now)
                };
                if live {
                    served.push((key.to_string(), id));
                }
            }
        }
        for (key, id) in served {
            self.stats.expired_served += 1;
            if self.expiry_violations.len() < MAX_REPORTED {
                self.expiry_violations.push(Violation {
                    kind: "key bound to an ended lease still read as live",
                    detail: format!("n{slot} at {true_ms}: lease {id} ended"),
                    history: self.history.describe(&key, 8, &[]),
                    key: Some(key),
                });
            }
        }
    }

    /// In the settled state, no node holds a value bound to a lease that has ended there (revoked, or every
    /// grant and renewal expired): the sweep collected them all.
    pub(super) fn lease_survivors(&self) -> Vec<Violation> {
        let mut found = Vec::new();
        for node in self.nodes.iter().filter(|n| n.run.is_some()) {
            let now = node.run.as_ref().expect("running").hlc.reading();
            for id in node.state.bound().ids() {
                if node.state.lease_live(id, now) {
                    continue;
                }
                for key in node
                    .state
                    .bound()
                    .keys(id)
                    .take(MAX_REPORTED - found.len().min(MAX_REPORTED))
                {
                    found.push(Violation {
                        kind: "key bound to an ended lease survives",
                        detail: format!("n{} holds it as a value; lease {id} has ended", node.slot),
                        history: self.history.describe(key, 8, &[]),
                        key: Some(key.to_string()),
                    });
                }
            }
        }
        found
    }
}
