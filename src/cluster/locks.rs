//! Lock attempts between the HTTP API and the core (the agreement itself is `replication::lock`).
//!
//! A request goes to the driver over a bounded channel with a one-shot answer; the driver starts it in the
//! core and keeps the answer until the core's [`CoreEvent::LockDecided`], and sends it only once the lock's
//! new record (the `persist` of the same effects) is stored: a client told it holds a lock finds the record
//! on this node even after a crash. A node without a cluster decides alone, with the same core rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{Cluster, Driver};
use crate::db::Db;
use crate::replication::{Core, CoreConfig, CoreEvent, LockOp, LockOutcome, PeerRecord, LOCK_TIMEOUT_MS};

/// Lock requests waiting for the driver; more are refused as unavailable (bounded work).
pub const LOCK_REQUESTS: usize = 1024;
/// How long a request waits for its answer beyond the core's own deadline (a driver busy or stopping).
const ANSWER_GRACE: Duration = Duration::from_millis(1_000);

/// One attempt for the driver.
pub(super) struct LockRequest {
    name: String,
    op: LockOp,
    reply: oneshot::Sender<LockOutcome>,
}

/// Answers the driver owes, by the core's request number.
#[derive(Default)]
pub(super) struct PendingLocks(HashMap<u64, oneshot::Sender<LockOutcome>>);

/// Where the API's lock requests go: the cluster's agreement, or this node alone.
#[derive(Clone)]
pub enum Locker {
    /// A cluster member: a majority of the members decides.
    Cluster(Arc<Cluster>),
    /// A node without a cluster: its own vote is the majority.
    Solo(Arc<Solo>),
}

impl Locker {
    /// The locker of a node with `cluster`, or alone over `db`.
    pub fn of(cluster: Option<Arc<Cluster>>, db: &Db) -> Locker {
        match cluster {
            Some(c) => Locker::Cluster(c),
            None => Locker::Solo(Arc::new(Solo::new(db.clone()))),
        }
    }

    /// Run one attempt on lock `name` to its end.
    pub async fn lock(&self, name: &str, op: LockOp) -> LockOutcome {
        match self {
            Locker::Cluster(c) => c.lock(name, op).await,
            Locker::Solo(s) => s.lock(name, op).await,
        }
    }

    /// The locks `lease` holds as far as this node knows.
    pub fn locks_of(&self, lease: crate::crdt::LeaseId) -> Vec<String> {
        match self {
            Locker::Cluster(c) => c.db_locks_of(lease),
            Locker::Solo(s) => {
                let now = s.db.hlc().time_ms();
                s.db.with_state(|state| s.core.lock().locks_of(now, lease, state))
            }
        }
    }
}

impl Cluster {
    /// Run one attempt on lock `name` through the agreement; [`LockOutcome::Unavailable`] if the driver
    /// cannot take it or does not answer.
    pub async fn lock(&self, name: &str, op: LockOp) -> LockOutcome {
        let (reply, answer) = oneshot::channel();
        let request = LockRequest {
            name: name.to_string(),
            op,
            reply,
        };
        if self.locks.try_send(request).is_err() {
            return LockOutcome::Unavailable("too many lock requests wait on this node");
        }
        let wait = Duration::from_millis(LOCK_TIMEOUT_MS) + ANSWER_GRACE;
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(outcome)) => outcome,
            _ => LockOutcome::Unavailable("this node is stopping"),
        }
    }

    fn db_locks_of(&self, lease: crate::crdt::LeaseId) -> Vec<String> {
        let now = self.clock.time_ms();
        self.db.with_state(|state| self.core.lock().locks_of(now, lease, state))
    }
}

impl Driver {
    /// Start an attempt in the core; its answer waits in `pending_locks`.
    pub(super) async fn start_lock(&mut self, request: LockRequest) {
        let now = self.now_ms();
        let (req, fx) = self
            .db
            .with_state(|state| self.core.lock().lock(now, &request.name, request.op, state));
        self.pending_locks.0.insert(req, request.reply);
        self.carry_out(fx).await;
    }
}

impl PendingLocks {
    /// Take out the answers `events` decide.
    pub(super) fn decided(&mut self, events: &[CoreEvent]) -> Vec<(oneshot::Sender<LockOutcome>, LockOutcome)> {
        events
            .iter()
            .filter_map(|e| match e {
                CoreEvent::LockDecided { req, outcome, .. } => Some((self.0.remove(req)?, outcome.clone())),
                _ => None,
            })
            .collect()
    }
}

/// What the client hears of `outcome` once `stored` says whether its effects' records were stored: a grant or
/// release whose record this node could not store is not confirmed.
fn confirmed(outcome: LockOutcome, stored: bool) -> LockOutcome {
    match outcome {
        LockOutcome::Granted(_) | LockOutcome::Released(_) if !stored => {
            LockOutcome::Unavailable("this node could not store the lock's record")
        }
        outcome => outcome,
    }
}

/// Send the answers (see [`confirmed`]).
pub(super) fn answer(answers: Vec<(oneshot::Sender<LockOutcome>, LockOutcome)>, stored: bool) {
    for (reply, outcome) in answers {
        let _ = reply.send(confirmed(outcome, stored)); // a client that gave up
    }
}

/// A node on its own: the same core, with no members, decides at once.
pub struct Solo {
    db: Db,
    core: Mutex<Core>,
}

impl Solo {
    fn new(db: Db) -> Solo {
        let now = db.hlc().time_ms();
        let me = PeerRecord {
            id: db.node_id(),
            grpc_addr: String::new(),
            http_addr: String::new(),
            incarnation: now,
            heartbeat: 0,
            left: false,
            version: String::new(),
            keys: 0,
        };
        let core = Core::new(CoreConfig::default(), me, Vec::new(), rand::random(), now);
        Solo {
            db,
            core: Mutex::new(core),
        }
    }

    async fn lock(&self, name: &str, op: LockOp) -> LockOutcome {
        let now = self.db.hlc().time_ms();
        let (req, fx) = self.db.with_state(|state| self.core.lock().lock(now, name, op, state));
        let outcome = fx.events.into_iter().find_map(|e| match e {
            CoreEvent::LockDecided { req: r, outcome, .. } if r == req => Some(outcome),
            _ => None,
        });
        let Some(outcome) = outcome else {
            return LockOutcome::Unavailable("this node could not decide alone");
        };
        let stored = fx.persist.is_empty() || self.db.merge(fx.persist).await.is_ok();
        confirmed(outcome, stored)
    }
}
