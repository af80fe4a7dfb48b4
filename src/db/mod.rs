//! The local database: the in-memory [`LwwMap`] that serves reads, one writer task that decides versions and
//! commits in groups, and a stream of change events.
//!
//! # Why one writer
//! Every write needs to read the key's current version (to stamp `max(now, current + 1)` and to check
//! `?cas=`) and then persist. Doing that from many request tasks at once would need a lock held across the
//! disk commit, which serialises commits one by one. Instead every request sends a [`Command`] to a single
//! writer task ([`writer`]). The writer drains whatever has queued up, evaluates the commands in arrival
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

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::crdt::{Entry, Hlc, LwwMap, NodeId, Version};
use crate::error::{Error, Result};
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
}

impl Db {
    /// Load everything `store` holds and start the writer task.
    pub async fn open(store: Arc<dyn Store>, node: NodeId, hlc: Arc<Hlc>, sealer: Sealer) -> Result<Db> {
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

    /// The live entry of `key`.
    pub fn get(&self, key: &str) -> Option<Entry> {
        self.shared.state.read().get_live(key).cloned()
    }

    /// The entry of `key`, tombstone or not.
    pub fn get_entry(&self, key: &str) -> Option<Entry> {
        self.shared.state.read().get(key).cloned()
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

    /// Seal a secret value into its envelope.
    pub fn seal(&self, plaintext: &[u8]) -> Bytes {
        Bytes::from(self.shared.sealer.seal_envelope(plaintext))
    }

    /// Open a secret entry's envelope.
    pub fn open_secret(&self, entry: &Entry) -> Result<Bytes> {
        self.shared.sealer.open_envelope(&entry.value).map(Bytes::from)
    }

    /// Finish every queued command, stop the writer and close the store. Later writes fail with
    /// [`Error::Unavailable`]; reads keep answering from memory.
    pub async fn close(&self) -> Result<()> {
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

fn closed() -> Error {
    Error::Unavailable("the database is shutting down".into())
}

#[cfg(test)]
mod tests;
