//! The writer's sweep of expired values and of values bound to ended leases ([`crate::crdt::expiry`],
//! [`crate::crdt::lease`]): before each group, and while idle at the pace the next expiry asks for.

use tokio::sync::{mpsc, oneshot};

use super::{Command, Group, Shared, MAX_GROUP_ENTRIES};
use crate::crdt::hlc;

/// Longest the writer sleeps while a value is due to expire: the hybrid clock may pass an expiry sooner
/// than the wall clock says (it follows the newest timestamp this node has seen).
const EXPIRY_POLL_MAX_MS: u64 = 250;

/// What the idle writer woke up for.
pub(super) enum Next {
    Command(Command),
    /// A value may have expired: sweep before waiting again.
    ExpiryDue,
    Closed,
}

/// Wait for the next command, or until the next expiry (at most [`EXPIRY_POLL_MAX_MS`]; that long after a
/// failed sweep, so that a full disk is retried at that pace rather than in a spin).
pub(super) async fn next_command(shared: &Shared, queue: &mut mpsc::Receiver<Command>, expiry_failed: bool) -> Next {
    let (next, lease_ended) = {
        let state = shared.state.read();
        (state.expiring().next(), state.bound().any_ended())
    };
    // Values bound to an ended lease are due now (a full sweep leaves none, so this does not spin).
    let at = match next {
        _ if lease_ended => 0,
        Some(at) => at,
        None => return queue.recv().await.map_or(Next::Closed, Next::Command),
    };
    let wait_ms = if expiry_failed {
        EXPIRY_POLL_MAX_MS
    } else {
        hlc::physical_ms(at)
            .saturating_sub(shared.hlc.time_ms())
            .min(EXPIRY_POLL_MAX_MS)
    };
    tokio::select! {
        received = queue.recv() => received.map_or(Next::Closed, Next::Command),
        _ = tokio::time::sleep(std::time::Duration::from_millis(wait_ms)) => Next::ExpiryDue,
    }
}

/// Turn the values that have expired into their tombstones ([`Entry::expired`]), committed as one group like
/// replicated entries: every node derives the same tombstones, so this is a merge, not a write. A commit
/// that fails (a full disk) leaves the values in place; they read as absent anyway and the next round
/// tries again. Returns false if a commit failed.
pub(super) async fn expire_due(shared: &Shared) -> bool {
    let tombstones = shared.state.read().expired_due(shared.hlc.reading(), MAX_GROUP_ENTRIES);
    if tombstones.is_empty() {
        return true;
    }
    let count = tombstones.len();
    let (reply, answer) = oneshot::channel();
    let mut group = Group::default();
    group.add(
        shared,
        Command::Merge {
            entries: tombstones,
            imported: false,
            audit: None,
            reply,
        },
    );
    group.commit(shared).await;
    match answer.await {
        Ok(Ok(_)) => {
            tracing::debug!(count, "expired values");
            true
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "could not commit expired values; retrying");
            false
        }
        Err(_) => false,
    }
}
