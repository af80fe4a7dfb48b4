//! A simulated node: the real replication [`Core`] plus what the tokio driver and the database around it
//! would hold. What survives a crash is exactly what a real node persists: the committed [`LwwMap`] (the
//! store) and the last-sync file. The core (membership, rounds), the writer queue and the group commit in
//! flight are lost.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use cave::crdt::{Entry, Hlc, LwwMap, ManualTime, NodeId};
use cave::replication::Core;

/// Simulated true time 0 is this wall-clock instant (2026-01-01T00:00:00Z), so HLC timestamps look real.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// A node's wall clock: true time plus a fixed offset plus drift.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Offset from true time, ms.
    pub offset_ms: i64,
    /// Rate error, parts per million.
    pub drift_ppm: i64,
}

impl Clock {
    /// The reading (ms since the Unix epoch) at simulated true time `now_ms`.
    pub fn read(&self, now_ms: u64) -> u64 {
        let drift = (now_ms as i128 * self.drift_ppm as i128 / 1_000_000) as i64;
        (EPOCH_MS as i64 + now_ms as i64 + self.offset_ms + drift) as u64
    }
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Not started yet (a node that joins later).
    Waiting,
    /// Running.
    Up,
    /// Crashed; its store survives.
    Down,
    /// Left the cluster for good.
    Gone,
}

/// One client operation.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// `PUT ?ttl=`: a value that expires `ttl_ms` after its write.
    PutTtl {
        key: String,
        value: String,
        ttl_ms: u64,
    },
    /// `POST /api/v1/lease`: a new lease `lease` of `ttl_ms`.
    Grant {
        lease: u64,
        ttl_ms: u64,
    },
    /// `POST /api/v1/lease/{id}/renew` (nothing if the lease has ended here: a 404).
    Renew {
        lease: u64,
    },
    /// `DELETE /api/v1/lease/{id}` (nothing if the lease has ended here: a 404).
    Revoke {
        lease: u64,
    },
    /// `PUT ?lease=`: a value bound to a lease (nothing if the lease is not live here: a 404).
    PutLeased {
        key: String,
        value: String,
        lease: u64,
    },
    /// `PATCH` a document: set one field.
    DocSet {
        key: String,
        field: String,
        value: i64,
    },
    /// `PATCH` a document: increment its counter `/hits`.
    DocIncrement {
        key: String,
        by: i64,
    },
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> String {
        match self {
            Op::Put { key, .. }
            | Op::Delete { key }
            | Op::PutTtl { key, .. }
            | Op::PutLeased { key, .. }
            | Op::DocSet { key, .. }
            | Op::DocIncrement { key, .. } => key.clone(),
            Op::Grant { lease, .. } | Op::Renew { lease } | Op::Revoke { lease } => lease_id(*lease).key(),
        }
    }
}

/// Where entries to merge come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `Effects::persist`: replicated from a peer.
    Replicated,
    /// `Effects::forget`: the same-version tombstones of the pull-first rejoin.
    Forget,
}

/// A command for the node's writer (the `db::writer` task).
#[derive(Debug)]
pub enum Cmd {
    /// A client write (one operation or an atomic batch).
    Write(Vec<Op>),
    /// A client import (`POST /api/v1/import`) that passed the drift rule: merged, and acknowledged with
    /// its group.
    Import(Entry),
    /// Entries to merge.
    Merge(Vec<Entry>, Origin),
    /// Drop tombstones older than this HLC.
    Purge(u64),
    /// Messages that wait for the merges queued before them to be durable (`Effects::after_persist`): sent
    /// when the group they join commits.
    Then(Vec<(cave::replication::Destination, cave::replication::Message)>),
}

impl Cmd {
    pub fn weight(&self) -> usize {
        match self {
            Cmd::Write(ops) => ops.len(),
            Cmd::Import(_) => 1,
            Cmd::Merge(entries, _) => entries.len(),
            Cmd::Purge(_) => 1,
            Cmd::Then(_) => 0,
        }
    }
}

/// Commands evaluated together and committed at once (one group commit).
#[derive(Debug, Default)]
pub struct Group {
    /// Latest uncommitted entry per key.
    pub overlay: BTreeMap<String, Entry>,
    /// Every change in application order (what the database's change stream publishes).
    pub changes: Vec<Entry>,
    /// History ids of the client writes in the group (acknowledged when it commits).
    pub writes: Vec<usize>,
    /// History ids of the document edits in the group (acknowledged when it commits).
    pub doc_edits: Vec<usize>,
    /// A purge runs alone.
    pub purge: Option<u64>,
    /// Messages sent once the group commits (`Cmd::Then`).
    pub then: Vec<(cave::replication::Destination, cave::replication::Message)>,
    pub commands: usize,
    pub weight: usize,
}

impl Group {
    pub fn is_empty(&self) -> bool {
        self.commands == 0 && self.purge.is_none()
    }
}

/// What exists only while the node's process runs.
pub struct Running {
    pub core: Core,
    pub hlc: Hlc,
    pub queue: VecDeque<Cmd>,
    pub inflight: Option<Group>,
}

/// One node slot.
pub struct Node {
    pub slot: usize,
    pub id: NodeId,
    pub addr: String,
    pub clock: Clock,
    pub time: Arc<ManualTime>,
    /// Committed state: what the store holds. Survives crashes.
    pub state: LwwMap,
    /// The driver's last-sync file. Survives crashes.
    pub persisted_last_sync: Option<u64>,
    pub seeds: Vec<String>,
    pub life: Life,
    /// Bumped at every start and stop, so that timers of a dead process are ignored.
    pub generation: u64,
    pub run: Option<Running>,
    /// Draining before a graceful leave, since this simulated time.
    pub leaving: Option<u64>,
    pub starts: u32,
}

impl Node {
    /// Whether the writer has nothing queued or in flight.
    pub fn writer_idle(&self) -> bool {
        self.run
            .as_ref()
            .is_none_or(|r| r.inflight.is_none() && r.queue.is_empty())
    }

    /// Whether clients may send this node requests.
    pub fn serving(&self) -> bool {
        self.life == Life::Up && self.leaving.is_none()
    }
}

/// The id of the simulation's lease number `n` (never zero).
pub fn lease_id(n: u64) -> cave::crdt::LeaseId {
    cave::crdt::LeaseId::new(n.max(1)).expect("max(1) is not zero")
}
