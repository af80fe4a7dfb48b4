//! What the core hands its driver: [`Effects`] to carry out, with their [`Destination`]s, and the
//! [`CoreEvent`]s to report. The core performs no I/O; the tokio driver and the simulation both act on these.

use super::lock::LockOutcome;
use super::membership::StatusChange;
use super::message::Message;
#[cfg(doc)]
use super::{Core, LastSync};
use crate::crdt::{Entry, NodeId, Version};

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    /// A member, by id (the adapter knows its address from [`Core::address_of`]).
    Node(NodeId),
    /// An address whose node we do not know yet (a seed).
    Addr(String),
}

/// Something the driver should know about (logs, metrics, the node list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
    /// A member changed status.
    Peer(StatusChange),
    /// Entries from `from` were stamped too far in the future and were not applied.
    ClockDriftRejected { from: NodeId, entries: usize },
    /// This node's clock was found to be the outlier of its cluster (`offset_ms` off the median): local
    /// writes must be refused. Repeated once a minute while it lasts.
    ClockFenced { offset_ms: i64 },
    /// The clock is back within the bound: writes may resume.
    ClockUnfenced { offset_ms: i64 },
    /// An anti-entropy round this node started at `started_ms` ended; `repaired` counts entries exchanged
    /// both ways. Once it ends, the peer holds everything this node held when it started (or newer), except
    /// what the pull-first rule keeps back: the entries pushed to it are in `sends` of the same effects.
    AntiEntropyDone {
        peer: NodeId,
        repaired: usize,
        in_sync: bool,
        started_ms: u64,
    },
    /// An anti-entropy round was abandoned (the peer did not answer in time).
    AntiEntropyTimedOut { peer: NodeId },
    /// Another live process runs under this node's id, at `grpc_addr`; if `refusing`, this one is the
    /// younger (or they cannot be told apart) and stops serving: see `twins`.
    DuplicateNodeId { grpc_addr: String, refusing: bool },
    /// A round with `peer` found `entries` keys held at the same version with different contents (`key` at
    /// `version` is one of them). Both sides converge on the one [`Entry::precedence`] picks.
    ContentConflict {
        peer: NodeId,
        entries: usize,
        key: String,
        version: Version,
    },
    /// The lock attempt `req` (from [`Core::lock`]) on `lock` ended. A driver answers its client once the
    /// `persist` of the same effects is durable: it holds the lock's new record.
    LockDecided {
        req: u64,
        lock: String,
        outcome: LockOutcome,
    },
}

/// What the core asks its driver to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Messages to send.
    pub sends: Vec<(Destination, Message)>,
    /// Messages to send once `persist` is durable (a lock vote answers only for what it has stored).
    pub after_persist: Vec<(Destination, Message)>,
    /// Entries received from peers, to merge into the local store (they win only if newer).
    pub persist: Vec<Entry>,
    /// Entries to drop locally (pull-first rejoin), as ready tombstones of the *same* version as the entry
    /// they drop (equal versions order tombstones last, so each supersedes its entry). They are older than
    /// the purge horizon: merge them after `persist`, then purge (`purge_below` is set with them), and
    /// never broadcast them (see [`Core::broadcasts`]).
    pub forget: Vec<Entry>,
    /// Purge tombstones whose HLC is below this, after merging `persist` and `forget`: set on the purge
    /// interval and whenever `forget` is not empty.
    pub purge_below: Option<u64>,
    /// Persist this time (ms) as the node's last sync, where it survives a restart (atomically and durably:
    /// a lost record makes the node rejoin pull-first, see [`LastSync`]).
    pub persist_last_sync: Option<u64>,
    /// Things that happened.
    pub events: Vec<CoreEvent>,
}

impl Effects {
    pub(super) fn send(&mut self, to: NodeId, msg: Message) {
        self.sends.push((Destination::Node(to), msg));
    }

    /// Whether there is anything to do.
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
            && self.after_persist.is_empty()
            && self.persist.is_empty()
            && self.forget.is_empty()
            && self.purge_below.is_none()
            && self.persist_last_sync.is_none()
            && self.events.is_empty()
    }
}
