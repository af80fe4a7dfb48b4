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

mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::crdt::{Entry, Hlc, LwwMap, NodeId, Version};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::secrets::Sealer;
use crate::storage::Store;

/// Commands that may wait in the writer's queue before callers are pushed back.
const WRITER_QUEUE_COMMANDS: usize = 8192;
/// Change events buffered per watcher before a slow watcher is told it lagged.
const EVENT_BUFFER: usize = 16_384;

/// One operation of an atomic write (a single PUT is a one-op write; `POST /api/v1/query` sends several).
#[derive(Debug, Clone)]
pub enum Op {
    /// Read a key (seeing the effects of earlier ops of the same write).
    Get { key: String },
    /// Store a value. For a secret, `value` is already the sealed envelope.
    Put {
        key: String,
        value: Bytes,
        content_type: String,
        secret: bool,
        cas: Option<Version>,
    },
    /// Write a tombstone.
    Delete { key: String, cas: Option<Version> },
    /// Tombstone every live key starting with `prefix` (a folder prefix ending in `/`).
    DeletePrefix { prefix: String },
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
    /// The entry written by a put or a delete (a tombstone for deletes).
    Written(Entry),
    /// The tombstones written by a prefix delete.
    DeletedPrefix(Vec<Entry>),
}

/// Counters of the in-memory state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Live keys.
    pub keys: usize,
    /// Tombstones not yet purged.
    pub tombstones: usize,
    /// Estimated bytes of keys, values and metadata held.
    pub bytes: usize,
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
    events: broadcast::Sender<Arc<Entry>>,
    sealer: Sealer,
    metrics: Arc<Metrics>,
    /// Becomes `true` when the node starts shutting down: long-lived readers (watch streams) end then.
    closing: tokio::sync::watch::Sender<bool>,
    /// The last commit failed because the disk is full; the next one that succeeds clears it.
    storage_full: AtomicBool,
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
        let mut map = LwwMap::new();
        for entry in store.load().await? {
            hlc.observe(entry.version.hlc);
            map.merge(entry);
        }
        let (commands, queue) = mpsc::channel(WRITER_QUEUE_COMMANDS);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            node,
            hlc,
            state: RwLock::new(map),
            store,
            commands,
            events,
            sealer,
            metrics,
            closing: tokio::sync::watch::Sender::new(false),
            storage_full: AtomicBool::new(false),
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
        self.shared.state.read().get_live(key).cloned()
    }

    /// The entry of `key`, tombstone or not.
    pub fn get_entry(&self, key: &str) -> Option<Entry> {
        self.shared.state.read().get(key).cloned()
    }

    /// Run `f` under a read lock of the in-memory state (the replication core reads digests and buckets).
    /// Keep `f` short: the writer waits for it.
    pub fn with_state<T>(&self, f: impl FnOnce(&LwwMap) -> T) -> T {
        f(&self.shared.state.read())
    }

    /// Direct children of a folder prefix (`""` or ending in `/`); see [`LwwMap::children`].
    pub fn children(&self, prefix: &str) -> Vec<String> {
        self.shared.state.read().children(prefix)
    }

    /// Live entries under `prefix`, in key order.
    pub fn scan(&self, prefix: &str) -> Vec<Entry> {
        self.shared
            .state
            .read()
            .range_prefix(prefix)
            .filter(|e| !e.deleted)
            .cloned()
            .collect()
    }

    /// Up to `limit` entries (tombstones included) under `prefix` with keys strictly after `after`, in key
    /// order. Lets exports walk a large key space in chunks without holding the lock for long.
    pub fn page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<Entry> {
        let state = self.shared.state.read();
        state
            .range_prefix(prefix)
            .skip_while(|e| after.is_some_and(|a| e.key.as_str() <= a))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Counts of the in-memory state.
    pub fn stats(&self) -> Stats {
        let state = self.shared.state.read();
        Stats {
            keys: state.live(),
            tombstones: state.tombstones(),
            bytes: state.bytes(),
        }
    }

    /// Bytes the store occupies.
    pub async fn size_bytes(&self) -> Result<u64> {
        self.shared.store.size_bytes().await
    }

    /// Apply `ops` atomically: all succeed and are committed together, or none is applied. Outcomes come
    /// back in the order of `ops`.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<Outcome>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        if !ops.iter().any(Op::is_write) {
            // A read-only batch needs no ordering with writes: one consistent snapshot is enough.
            self.shared.metrics.kv_reads(ops.len() as u64);
            let state = self.shared.state.read();
            return Ok(ops
                .iter()
                .map(|op| match op {
                    Op::Get { key } => Outcome::Got(state.get_live(key).cloned()),
                    _ => unreachable!("checked: only gets"),
                })
                .collect());
        }
        self.call(|reply| writer::Command::Write { ops, reply }).await?
    }

    /// Merge entries written elsewhere (replication, import): each is applied only if it supersedes what
    /// this node has. Returns the entries that changed the state.
    pub async fn merge(&self, entries: Vec<Entry>) -> Result<Vec<Entry>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| writer::Command::Merge { entries, reply }).await?
    }

    /// Purge tombstones whose version is older than `before_hlc`. Returns how many were purged.
    pub async fn purge_tombstones(&self, before_hlc: u64) -> Result<usize> {
        self.call(|reply| writer::Command::Purge { before_hlc, reply }).await?
    }

    /// Every committed change (local or merged), as it becomes visible to readers.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.shared.events.subscribe()
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
mod tests;
