//! Durable storage of entries.
//!
//! A [`Store`] persists [`Entry`]s and hands them back after a restart. It is deliberately small: the
//! in-memory [`crate::crdt::LwwMap`] serves reads, and the database layer (`crate::db`) decides versions,
//! checks conditions and batches writes. What the store must guarantee:
//!
//! - **Merge by version.** What [`Store::load`] returns for a key is the
//!   entry of greatest precedence ([`Entry::precedence`]) among everything applied to it: [`Store::apply`]
//!   never lets an entry of lower precedence replace a stored one, so replaying an old batch, an old import
//!   or a duplicate delta is harmless.
//! - **Atomic batches.** One `apply` call commits all of its entries or none.
//! - **Failures leave no trace.** An `apply` that fails stored nothing and leaves the store usable: the next
//!   one commits as if the failed one had never been tried. A full disk fails it with
//!   [`crate::Error::StorageFull`]; once there is room again, `apply` succeeds again.
//! - **Durable acknowledgement.** When `apply` returns `Ok`, the batch survives a clean restart, and with
//!   [`Durability::Fsync`] also a crash of the process or machine.
//!
//! - **Audit rows ride along.** [`Store::apply_with_audit`] commits a group's [`AuditRecord`]s in the same
//!   transaction as its entries (see [`AuditRecord`]): a write is never stored without the record of the request
//!   that made it, nor the other way round.
//!
//! [`SqliteStore`] is the production store; [`MemoryStore`] serves tests and the simulation. Both pass the
//! same test suite (`suite/`).

mod audit;
mod memory;
mod sqlite;
#[cfg(test)]
mod suite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crdt::Entry;
use crate::error::Result;

pub use audit::AuditRecord;
pub use memory::MemoryStore;
pub use sqlite::{SqliteStore, StoreTuning};

/// How hard a commit tries to reach the disk before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: survives a process crash (the OS has the data) and a clean restart;
    /// a power loss can lose the last commits.
    #[default]
    Normal,
    /// WAL with `synchronous=FULL`: every commit is fsynced before it is acknowledged.
    Fsync,
}

/// Persistent storage of entries.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every stored entry (tombstones included), in key order. Called once when a node opens its data.
    async fn load(&self) -> Result<Vec<Entry>>;

    /// [`Store::load`] as parts: each in key order, every key of a part before every key of the next, so that
    /// their concatenation is what `load` returns. A store may read its parts at once, and the map be built
    /// from them at once ([`crate::crdt::LwwMap::from_parts`]).
    async fn load_parts(&self) -> Result<Vec<Vec<Entry>>> {
        Ok(vec![self.load().await?])
    }

    /// Persist `entries` atomically, each merged by version with what is stored: an entry that does not
    /// supersede the stored one never shows in `load`. A store may merge on write
    /// ([`MemoryStore`]) or record every entry and merge when reading and compacting ([`SqliteStore`]).
    ///
    /// Returns how many entries were written: at least the number that changed the stored state, at most
    /// `entries.len()` ([`MemoryStore`] counts the changes, [`SqliteStore`] every appended entry). The count is
    /// informational; which entries won is decided by [`Entry::supersedes`], not by it.
    async fn apply(&self, entries: &[Entry]) -> Result<usize> {
        self.apply_with_audit(entries, &[]).await
    }

    /// [`Store::apply`], and in the same transaction store `audit` (a record whose id is stored already
    /// replaces it). All of it or, on any failure, none: a full disk fails even a batch of audit records
    /// alone with [`crate::Error::StorageFull`].
    async fn apply_with_audit(&self, entries: &[Entry], audit: &[AuditRecord]) -> Result<usize>;

    /// At most `limit` audit records with an id greater than `after`, in id order.
    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// The time of the first audit record with an id at least `id`, if there is one.
    async fn audit_time_at(&self, id: u64) -> Result<Option<u64>>;

    /// Of the `max_rows` audit records with the lowest ids, delete those older than `before_ms`, in one
    /// transaction. Returns how many went (fewer than `max_rows`: no older record is left at the front).
    async fn audit_purge(&self, before_ms: u64, max_rows: usize) -> Result<usize>;

    /// The greatest audit id ever stored (0 if none), even if its record has been purged since: the next
    /// id must be greater, so that a reader's cursor never skips a record.
    async fn audit_last_id(&self) -> Result<u64>;

    /// Delete every tombstone whose version HLC is below `before_hlc` (tombstone garbage collection), in one
    /// transaction. Returns the purged keys.
    async fn purge_tombstones(&self, before_hlc: u64) -> Result<Vec<String>>;

    /// Bytes the store occupies (on disk, or in memory for [`MemoryStore`]).
    async fn size_bytes(&self) -> Result<u64>;

    /// Flush and close. Further calls fail with [`crate::Error::Unavailable`].
    async fn close(&self) -> Result<()>;
}
