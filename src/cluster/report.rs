//! What the cluster driver does with the core's reports ([`CoreEvent`]): logs, metrics, the clock's fence
//! and the node's synced flag.

use std::sync::atomic::Ordering;

use super::{Driver, CONFLICT_LOG_INTERVAL};
use crate::metrics::{PeerCounts, RoundResult};
use crate::replication::{CoreEvent, Status};

impl Driver {
    /// Log and count what the core reports.
    pub(super) fn report(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::LockDecided { lock, outcome, .. } => tracing::debug!(%lock, ?outcome, "lock attempt decided"),
            CoreEvent::Peer(change) => {
                tracing::info!(peer = %change.id, status = change.status.as_str(), "peer status changed")
            }
            CoreEvent::ClockDriftRejected { from, entries } => {
                tracing::warn!(peer = %from, entries, "entries stamped too far in the future held back (clock skew)");
                for _ in 0..entries {
                    self.db.metrics().clock_drift_rejection();
                }
            }
            CoreEvent::ClockFenced { offset_ms } => tracing::error!(
                offset_ms,
                "this node's clock is off the cluster's by more than max_clock_drift allows: refusing \
                 writes until it is back (reads go on, marked possibly stale); fix the clock (NTP)"
            ),
            CoreEvent::ClockUnfenced { offset_ms } => {
                tracing::info!(
                    offset_ms,
                    "this node's clock is back within bounds: taking writes again"
                )
            }
            CoreEvent::AntiEntropyDone {
                peer,
                repaired,
                in_sync,
                started_ms,
            } => {
                if started_ms >= self.drain_since_ms.load(Ordering::Acquire) {
                    self.drained.store(true, Ordering::Release);
                }
                tracing::debug!(%peer, repaired, in_sync, "anti-entropy round done");
                self.db.metrics().anti_entropy_round(RoundResult::Ok);
                self.db.metrics().anti_entropy_repaired(repaired as u64);
                self.synced.send_replace(true);
            }
            CoreEvent::AntiEntropyTimedOut { peer } => {
                tracing::debug!(%peer, "anti-entropy round timed out");
                self.db.metrics().anti_entropy_round(RoundResult::Failed);
            }
            CoreEvent::DuplicateNodeId { grpc_addr, refusing } => {
                self.db.metrics().duplicate_node_id();
                if refusing {
                    self.db.hlc().retire();
                    tracing::error!(
                        other = %grpc_addr,
                        "another live node runs under this node's id (a copied data directory or VM image?) \
                         and started before this one: this node stops serving (writes and /readyz answer 503, \
                         replication is silent). Stop it, run `cave reset-node-id` on its data directory \
                         (the data is kept) and start it again"
                    );
                } else {
                    tracing::error!(
                        other = %grpc_addr,
                        "another live node runs under this node's id (a copied data directory or VM image?): \
                         it started later and stops serving; give it a fresh id with `cave reset-node-id`"
                    );
                }
            }
            CoreEvent::ContentConflict {
                peer,
                entries,
                key,
                version,
            } => {
                self.db.metrics().content_conflicts(entries as u64);
                let now = tokio::time::Instant::now();
                let (since, unlogged) = match self.conflicts_logged {
                    Some((at, n)) if now.duration_since(at) < CONFLICT_LOG_INTERVAL => {
                        self.conflicts_logged = Some((at, n + entries));
                        return;
                    }
                    Some((_, n)) => (Some(CONFLICT_LOG_INTERVAL), n),
                    None => (None, 0),
                };
                self.conflicts_logged = Some((now, 0));
                tracing::warn!(
                    %peer,
                    entries,
                    key = %key,
                    %version,
                    earlier = unlogged,
                    within = ?since,
                    "same version, different content: repairing to the deterministic winner (a node wrote \
                     two contents under one version: a bug, a bad import or a tampered peer)"
                );
            }
        }
    }

    /// Mirror the core's fence into the clock (which refuses to stamp local writes while fenced) and the
    /// metrics.
    pub(super) fn apply_fence(&self) {
        let view = self.core.lock().clock_view();
        self.db.hlc().set_fence(view.fenced);
        let peers = view.members.iter().map(|(id, o)| (id.to_string(), *o)).collect();
        self.db
            .metrics()
            .set_clock(view.fenced.is_some(), view.offset_ms, peers);
    }

    pub(super) fn report_peers(&self) {
        let core = self.core.lock();
        let mut counts = PeerCounts {
            alive: 0,
            suspect: 0,
            dead: 0,
        };
        for m in core.membership().members() {
            match m.status {
                Status::Alive => counts.alive += 1,
                Status::Suspect => counts.suspect += 1,
                Status::Dead | Status::Left => counts.dead += 1,
            }
        }
        self.db.metrics().set_peers(counts);
    }
}
