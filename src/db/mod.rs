//! The local database: the in-memory [`LwwMap`] that serves reads, one writer task that decides versions and
//! commits in groups, and a stream of change events.
//!
//! # Why one writer
//! Every write needs to read the key's current version (to stamp `max(now, current + 1)` and to check
//! `?cas=`) and then persist. Doing that from many request tasks at once would need a lock held across the
//! disk commit, which serialises commits one by one. Instead every request sends a `Command` to a single
//! writer task (`writer`). The writer drains whatever has queued up, evaluates the commands in arrival
//! order against the committed state plus the not-yet-committed effects of earlier commands in the same
//! group, commits the whole group in **one** storage transaction (group commit), and only then publishes the
//! new entries to readers and answers the callers. So:
//! - a write is acknowledged only after it is durable;
//! - readers never see uncommitted data (no dirty reads, even if the commit fails);
//! - CAS is race-free, because checks and commits are serialised in one task;
//! - throughput grows with concurrency: under load each commit carries many writes.
//!
//! # Why reads come from memory
//! The whole key space lives in the [`LwwMap`] (the store is loaded once at open). Reads and listings take a
//! short read lock and never wait for the disk or the writer. The price is that the data set must fit in
//! memory, like Redis and etcd's index; for the configuration-and-secrets workloads Cave targets that holds.
//!
//! # Why change events hold values only within a budget
//! The change stream ([`Db::subscribe`]) is a broadcast ring of [`EVENT_BUFFER`] events shared by every
//! subscriber, and an event stays in it until every subscriber has read it or it is overwritten. If events
//! always carried their values, one watcher that never reads would keep the last 16,384 values alive (16 GiB
//! of 1 MiB values). So the values that events hold, all events together, are bounded by
//! [`EVENT_VALUE_BUDGET_BYTES`]: a [`Change`] published while the budget has room carries its entry (and
//! gives its bytes back when the ring drops it); past the budget it names only what changed (key, version,
//! tombstone or not: at most [`MAX_KEY_BYTES`](crate::key::MAX_KEY_BYTES) plus a few dozen bytes), which
//! bounds the whole ring at the budget plus about 17 MiB. Subscribers that keep up hold the budget only for
//! moments, so events carry their values; one that stops reading fills it and the later events go by
//! reference.
//!
//! A subscriber turns an event into its entry with [`Db::resolve`]. For an event by reference that reads the
//! map, which is updated before the event is sent, so it holds that version or a newer one. If a newer one
//! replaced it meanwhile, the event resolves to nothing and is skipped: the newer change has its own event
//! later in the stream. Such a subscriber may miss intermediate values of a key that changes faster than it
//! reads, never the latest. Tombstones hold no bytes, so delete events always carry themselves. A subscriber
//! that falls more than [`EVENT_BUFFER`] events behind is told how many it missed (`Lagged`) and must
//! resynchronise by reading the state.
//!
//! # Client reads and reserved keys
//! The listing helpers ([`Db::children`], [`Db::page`]) serve the client API and pass over the keys reserved
//! for Cave ([`crate::key::is_reserved`]); replication reads the map itself ([`Db::with_state`]) and sees them.

mod changes;
mod docs;
pub mod lease;
mod listing;
pub mod locks;
mod writer;

pub use changes::Change;
use changes::{held_entry, publish, resolve_in, Published};
use docs::DocBroadcast;
pub use docs::DocPatch;
pub use listing::{Listed, Page};

pub use writer::MAX_GROUP_ENTRIES;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::audit::{context, AuditPage, AuditQuery, AuditRecord, Retention};
use crate::crdt::{Entry, Hlc, LwwMap, NodeId, Version};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::secrets::Sealer;
use crate::storage::Store;

/// Commands that may wait in the writer's queue before callers are pushed back.
const WRITER_QUEUE_COMMANDS: usize = 8192;
/// Change events kept for subscribers (one ring shared by all) before a slow one is told it lagged.
pub const EVENT_BUFFER: usize = 16_384;
/// Most value bytes that change events waiting in the ring hold, all together; past it events carry only
/// key and version (see the module docs).
pub const EVENT_VALUE_BUDGET_BYTES: usize = 64 << 20;

/// One operation of an atomic write (a single PUT is a one-op write; `POST /api/v1/query` sends several).
#[derive(Debug, Clone)]
pub enum Op {
    /// Read a key (seeing the effects of earlier ops of the same write).
    Get { key: String },
    /// Store a value. For a secret, `value` is already the sealed envelope.
    Put {
        key: String,
        value: Bytes,
        content_type: crate::crdt::ContentType,
        secret: bool,
        cas: Option<Version>,
        /// Expire the value this long after the write, on the cluster's hybrid clock (`None`: permanent).
        ttl: Option<std::time::Duration>,
        /// Bind the value to this lease (`?lease=`): it lives only as long as the lease does
        /// ([`crate::crdt::lease`]). The lease must be live on this node (404 otherwise).
        lease: Option<crate::crdt::LeaseId>,
    },
    /// Write a tombstone.
    Delete { key: String, cas: Option<Version> },
    /// Tombstone every live key starting with `prefix` (a folder prefix ending in `/`), except keys
    /// reserved for Cave: this is a client operation.
    DeletePrefix { prefix: String },
    /// Create a document holding `json` (an object), or, on a live document, edit it to equal `json` in one
    /// change (see [`crate::crdt::doc`]). `max_bytes` bounds the saved size.
    PutDoc {
        key: String,
        json: serde_json::Value,
        secret: bool,
        cas: Option<Version>,
        max_bytes: usize,
    },
    /// Renew a live lease by its TTL from now (404 if it has ended): [`Db::renew_lease`].
    RenewLease { id: crate::crdt::LeaseId },
    /// Edit a live document (404 if the key is missing, 409 if it holds an LWW value, 422 if the patch does
    /// not apply, and then nothing changes).
    Patch {
        key: String,
        patch: DocPatch,
        cas: Option<Version>,
        max_bytes: usize,
    },
}

impl Op {
    /// Whether the op changes anything.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
}

/// What one [`Op`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The live entry read, if any.
    Got(Option<Entry>),
    /// The entry written by a put.
    Written(Entry),
    /// The tombstone of a delete (of a key already deleted: its first tombstone), and whether the key had a
    /// live value before (as this write saw it, so that a client can tell a delete from a no-op).
    Deleted { tombstone: Entry, existed: bool },
    /// The tombstones written by a prefix delete.
    DeletedPrefix(Vec<Entry>),
}

/// Counters of the in-memory state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Live keys.
    pub keys: usize,
    /// Tombstones not yet purged.
    pub tombstones: usize,
    /// Estimated bytes of keys, values and metadata held.
    pub bytes: usize,
    /// Live values that carry an expiry (`?ttl=`).
    pub expiring: usize,
    /// Live leases.
    pub leases: usize,
    /// Held locks.
    pub locks: usize,
}

/// Handle to the local database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

/// State shared by handles and the writer task.
struct Shared {
    node: NodeId,
    hlc: Arc<Hlc>,
    state: RwLock<LwwMap>,
    store: Arc<dyn Store>,
    commands: mpsc::Sender<writer::Command>,
    events: broadcast::Sender<Arc<Change>>,
    /// Value bytes held by change events not yet dropped from the ring (see [`EVENT_VALUE_BUDGET_BYTES`]).
    event_bytes: Arc<AtomicUsize>,
    sealer: Sealer,
    metrics: Arc<Metrics>,
    /// Becomes `true` when the node starts shutting down: long-lived readers (watch streams) end then.
    closing: tokio::sync::watch::Sender<bool>,
    /// The last commit failed because the disk is full; the next one that succeeds clears it.
    storage_full: AtomicBool,
    /// The next audit record id (the writer assigns them, in commit order).
    audit_next: AtomicU64,
    /// The audit retention task, once started; stopped by `close`.
    retention: parking_lot::Mutex<Option<Retention>>,
}

impl Db {
    /// Load everything `store` holds and start the writer task. Reads, writes, deletes, commits and seal
    /// failures are recorded into `metrics`.
    pub async fn open(
        store: Arc<dyn Store>,
        node: NodeId,
        hlc: Arc<Hlc>,
        sealer: Sealer,
        metrics: Arc<Metrics>,
    ) -> Result<Db> {
        let audit_next = store.audit_last_id().await?.saturating_add(1);
        let started = std::time::Instant::now();
        let parts = store.load_parts().await?;
        let loaded = started.elapsed();
        if let Some(latest) = parts.iter().flatten().map(|entry| entry.version.hlc).max() {
            hlc.observe(latest);
        }
        // Blocking work (seconds for millions of keys) on threads of its own, off the runtime's workers.
        let map = tokio::task::spawn_blocking(move || LwwMap::from_parts(parts))
            .await
            .map_err(|err| Error::Internal(format!("building the map stopped: {err}")))?;
        tracing::info!(
            entries = map.len(),
            load_ms = loaded.as_millis() as u64,
            build_ms = (started.elapsed() - loaded).as_millis() as u64,
            "loaded the stored entries"
        );
        let (commands, queue) = mpsc::channel(WRITER_QUEUE_COMMANDS);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            node,
            hlc,
            state: RwLock::new(map),
            store,
            commands,
            events,
            event_bytes: Arc::default(),
            sealer,
            metrics,
            closing: tokio::sync::watch::Sender::new(false),
            storage_full: AtomicBool::new(false),
            audit_next: AtomicU64::new(audit_next),
            retention: parking_lot::Mutex::new(None),
        });
        tokio::spawn(writer::run(shared.clone(), queue));
        Ok(Db { shared })
    }

    /// This node's id (the `node` of every version it stamps).
    pub fn node_id(&self) -> NodeId {
        self.shared.node
    }

    /// The clock that stamps local writes.
    pub fn hlc(&self) -> &Arc<Hlc> {
        &self.shared.hlc
    }

    /// The metrics this database records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// A handle that does not keep the database alive: for callbacks stored in something the database
    /// itself owns (such as a metrics gauge), which would otherwise form a reference cycle.
    pub fn downgrade(&self) -> WeakDb {
        WeakDb(Arc::downgrade(&self.shared))
    }

    /// The live entry of `key` (a client read: counted in `cave_kv_reads_total`).
    pub fn get(&self, key: &str) -> Option<Entry> {
        self.shared.metrics.kv_reads(1);
        let now = self.shared.hlc.reading();
        self.shared.state.read().get_live_at(key, now).cloned()
    }

    /// Run `f` under a read lock of the in-memory state (the replication core reads digests and buckets).
    /// Keep `f` short: the writer waits for it.
    pub fn with_state<T>(&self, f: impl FnOnce(&LwwMap) -> T) -> T {
        f(&self.shared.state.read())
    }

    /// Counts of the in-memory state.
    pub fn stats(&self) -> Stats {
        let state = self.shared.state.read();
        Stats {
            keys: state.live(),
            tombstones: state.tombstones(),
            bytes: state.bytes(),
            expiring: state.expiring().len(),
            leases: state.live_leases(self.shared.hlc.reading()),
            locks: state.held_locks(self.shared.hlc.reading()),
        }
    }

    /// Bytes the store occupies.
    pub async fn size_bytes(&self) -> Result<u64> {
        self.shared.store.size_bytes().await
    }

    /// Apply `ops` atomically: all succeed and are committed together, or none is applied. Outcomes come
    /// back in the order of `ops`.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<Outcome>> {
        self.write_ops(ops, false).await
    }

    /// [`Db::write`] for a client's batch: an error caused by one op (a failed `cas`) names its index in
    /// the batch (`op 3: cas failed: ...`), in the category of the error.
    pub async fn write_batch(&self, ops: Vec<Op>) -> Result<Vec<Outcome>> {
        self.write_ops(ops, true).await
    }

    async fn write_ops(&self, ops: Vec<Op>, name_ops: bool) -> Result<Vec<Outcome>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        if !ops.iter().any(Op::is_write) {
            // A read-only batch needs no ordering with writes: one consistent snapshot is enough.
            self.shared.metrics.kv_reads(ops.len() as u64);
            let now = self.shared.hlc.reading();
            let state = self.shared.state.read();
            return Ok(ops
                .iter()
                .map(|op| match op {
                    Op::Get { key } => Outcome::Got(state.get_live_at(key, now).cloned()),
                    _ => unreachable!("checked: only gets"),
                })
                .collect());
        }
        // The audit record of the request writing, committed in the same transaction (see `crate::audit`).
        let audit = context::claim();
        self.call(|reply| writer::Command::Write {
            ops,
            name_ops,
            audit,
            reply,
        })
        .await?
    }

    /// Merge entries written elsewhere (replication, anti-entropy): each is applied only if it supersedes
    /// what this node has. Returns how many of them changed the state.
    pub async fn merge(&self, entries: Vec<Entry>) -> Result<usize> {
        self.merge_from(entries, false).await
    }

    /// [`Db::merge`] for entries imported through this node: their change events say so
    /// ([`Change::imported`]), so that the node pushes them to its peers.
    pub async fn import(&self, entries: Vec<Entry>) -> Result<usize> {
        self.merge_from(entries, true).await
    }

    async fn merge_from(&self, entries: Vec<Entry>, imported: bool) -> Result<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        let audit = context::claim();
        self.call(|reply| writer::Command::Merge {
            entries,
            imported,
            audit,
            reply,
        })
        .await?
    }

    /// Store audit records through the group commit (batched with the writes queued meanwhile): a record
    /// with id 0 gets the next id, one with an id replaces the stored record of that id. Returns once they
    /// are durable.
    pub async fn audit(&self, records: Vec<AuditRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.call(|reply| writer::Command::Audit { records, reply }).await?
    }

    /// The page of audit records `query` asks for, read from the store (not through the writer).
    pub async fn audit_read(&self, query: &AuditQuery) -> Result<AuditPage> {
        crate::audit::query::read(&*self.shared.store, query).await
    }

    /// Delete audit records older than `retention` from now on, in the background, until [`Db::close`]
    /// (which stops and awaits the task). A second call replaces the first task.
    pub async fn start_audit_retention(&self, retention: std::time::Duration) {
        let task = Retention::start(self.shared.store.clone(), self.shared.hlc.clone(), retention);
        let previous = self.shared.retention.lock().replace(task);
        if let Some(previous) = previous {
            previous.stop().await;
        }
    }

    /// Purge tombstones whose version is older than `before_hlc`. Returns how many were purged.
    pub async fn purge_tombstones(&self, before_hlc: u64) -> Result<usize> {
        self.call(|reply| writer::Command::Purge { before_hlc, reply }).await?
    }

    /// Every committed change (local or merged), in commit order, once it is visible to readers. Events
    /// carry no values: see the module docs and [`Db::resolve`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.shared.events.subscribe()
    }

    /// The entry `change` wrote: the one it holds, else the map's if that still has exactly this version
    /// (for a delete whose tombstone was purged since, the tombstone itself). `None` when a newer change
    /// replaced it; that change has its own event, later in the stream.
    pub fn resolve(&self, change: &Change) -> Option<Entry> {
        held_entry(change).or_else(|| resolve_in(&self.shared.state.read(), change))
    }

    /// [`Db::resolve`] for many changes, reading the map (if at all) under one read lock; changes that
    /// resolve to nothing are left out.
    pub fn resolve_all<'a>(&self, changes: impl IntoIterator<Item = &'a Change>) -> Vec<Entry> {
        let mut state = None;
        changes
            .into_iter()
            .filter_map(|c| {
                held_entry(c).or_else(|| resolve_in(state.get_or_insert_with(|| self.shared.state.read()), c))
            })
            .collect()
    }

    /// What to broadcast for `changes` (this node's, see [`crate::replication::Core::broadcasts`]): like
    /// [`Db::resolve_all`], except that a local document edit goes out as its delta (the one new change, see
    /// [`crate::crdt::DocMeta::delta`]) and a document join (a remote document taken in, whose version may be
    /// this node's) not at all: the peers get its changes from their authors, or from anti-entropy. A
    /// document change past the stream's value budget is sent whole, resolved from the map, and so is an
    /// imported document ([`Change::imported`]): an import has no author to send it, the node it came in
    /// through pushes it (it used to be left to anti-entropy).
    pub fn resolve_broadcast<'a>(&self, changes: impl IntoIterator<Item = &'a Change>) -> Vec<Entry> {
        let mut state = None;
        changes
            .into_iter()
            .filter_map(|c| match &c.held {
                Some(held) if held.doc.is_some() && !c.imported => match &held.delta {
                    Some(DocBroadcast::Whole) => held_entry(c),
                    Some(DocBroadcast::Delta(delta)) => Some(Entry {
                        value: delta.clone(),
                        doc: held.doc.map(|d| Box::new(crate::crdt::DocMeta { delta: true, ..d })),
                        ..held_entry(c)?
                    }),
                    None => None,
                },
                Some(_) => held_entry(c),
                None => resolve_in(state.get_or_insert_with(|| self.shared.state.read()), c),
            })
            .collect()
    }

    /// Tell long-lived readers (watch streams) that the node is shutting down, so that they end and let a
    /// graceful shutdown complete. Writes keep working until [`Db::close`].
    pub fn begin_shutdown(&self) {
        self.shared.closing.send_replace(true);
    }

    /// Whether the last commit failed for want of disk space (writes answer 507 until one succeeds again).
    pub fn storage_full(&self) -> bool {
        self.shared.storage_full.load(Ordering::Acquire)
    }

    /// Resolves once [`Db::begin_shutdown`] (or [`Db::close`]) was called.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.shared.closing.subscribe();
        async move {
            let _ = closing.wait_for(|closing| *closing).await;
        }
    }

    /// Seal a secret value into its envelope.
    pub fn seal(&self, plaintext: &[u8]) -> Bytes {
        Bytes::from(self.shared.sealer.seal_envelope(plaintext))
    }

    /// Open a secret entry's envelope. A failure (wrong key, tampering) counts in `cave_seal_failures_total`.
    pub fn open_secret(&self, entry: &Entry) -> Result<Bytes> {
        let opened = self.shared.sealer.open_envelope(&entry.value).map(Bytes::from);
        if opened.is_err() {
            self.shared.metrics.seal_failure();
        }
        opened
    }

    /// Finish every queued command, stop the writer and close the store. Later writes fail with
    /// [`Error::Unavailable`]; reads keep answering from memory.
    pub async fn close(&self) -> Result<()> {
        self.begin_shutdown();
        let retention = self.shared.retention.lock().take();
        if let Some(retention) = retention {
            retention.stop().await;
        }
        match self.call(|reply| writer::Command::Close { reply }).await {
            Err(Error::Unavailable(_)) => Ok(()), // already closed
            other => other?,
        }
    }

    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> writer::Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.shared.commands.send(command(reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())
    }
}

/// A [`Db`] handle that does not keep it alive (see [`Db::downgrade`]).
#[derive(Clone)]
pub struct WeakDb(Weak<Shared>);

impl WeakDb {
    /// The database, if it still exists.
    pub fn upgrade(&self) -> Option<Db> {
        self.0.upgrade().map(|shared| Db { shared })
    }
}

fn closed() -> Error {
    Error::Unavailable("the database is shutting down".into())
}

#[cfg(test)]
mod audit_tests;
#[cfg(test)]
mod doc_tests;
#[cfg(test)]
mod expiry_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod tests;
