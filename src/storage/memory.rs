//! [`MemoryStore`]: a [`Store`] in memory, for tests and the simulation.
//!
//! It has the same semantics as the SQLite store (merge by [`Entry::supersedes`], atomic batches, key order,
//! `Unavailable` after close), so that tests of the layers above can use it instead of a file, and the
//! simulation can run thousands of nodes without touching a disk.
//!
//! # Modelling restarts
//! The entries live behind an `Arc` that plays the part of the disk. [`MemoryStore::reopen`] hands out a new,
//! open store over the same entries, the way a restarted process reopens its database file: the simulation
//! keeps one handle per node's "disk", closes (or simply drops) the handle of a node it crashes, and gives
//! the restarted node `reopen()`. Everything `apply` acknowledged is still there, as with a clean SQLite
//! restart. [`Clone`] is a second handle to the *same* open store (closing one closes both), like sharing an
//! `Arc<SqliteStore>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{AuditRecord, Store};
use crate::crdt::Entry;
use crate::error::{Error, Result};

/// The "disk": entries by key, and their total [`Entry::size`] kept up to date so `size_bytes` is O(1); the
/// audit trail by id, and the greatest id it ever held.
#[derive(Debug, Default)]
struct Data {
    entries: BTreeMap<String, Entry>,
    bytes: usize,
    audit: BTreeMap<u64, AuditRecord>,
    audit_high: u64,
}

/// A [`Store`] held in memory. See the module docs for how it models restarts.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    data: Arc<RwLock<Data>>,
    /// Set by [`MemoryStore::set_full`]: the "disk" has no room, so `apply` fails. Shared with reopened stores,
    /// like the disk.
    full: Arc<AtomicBool>,
    /// Per open store rather than per disk, so that closing a crashed node's store does not close the store
    /// its restarted incarnation reopened.
    closed: Arc<AtomicBool>,
}

fn closed() -> Error {
    Error::Unavailable("storage is closed".to_string())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A new open store over the same entries, as after a process restart (even if `self` is closed).
    pub fn reopen(&self) -> MemoryStore {
        MemoryStore {
            data: Arc::clone(&self.data),
            full: Arc::clone(&self.full),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Model a full disk (`true`) or one with room again (`false`): while full, every `apply` fails with
    /// [`Error::StorageFull`] and stores nothing, as a batch the SQLite store cannot commit does.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::Release);
    }

    /// Whether [`MemoryStore::set_full`] says the disk is full.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<Vec<Entry>> {
        self.check_open()?;
        Ok(self.data.read().entries.values().cloned().collect())
    }

    async fn apply_with_audit(&self, entries: &[Entry], audit: &[AuditRecord]) -> Result<usize> {
        let mut data = self.data.write();
        // Checked under the lock so that a batch either completes before `close` or is refused.
        self.check_open()?;
        if self.full.load(Ordering::Acquire) && !(entries.is_empty() && audit.is_empty()) {
            return Err(Error::StorageFull("storage is full (simulated)".to_string()));
        }
        for record in audit {
            data.audit_high = data.audit_high.max(record.id);
            data.audit.insert(record.id, record.clone());
        }
        let Data {
            entries: stored, bytes, ..
        } = &mut *data;
        let mut changed = 0;
        for entry in entries {
            match stored.get_mut(entry.key.as_str()) {
                Some(current) if entry.supersedes(current) => {
                    *bytes = *bytes - current.size() + entry.size();
                    *current = entry.clone();
                }
                Some(_) => continue,
                None => {
                    *bytes += entry.size();
                    stored.insert(entry.key.to_string(), entry.clone());
                }
            }
            changed += 1;
        }
        Ok(changed)
    }

    async fn purge_tombstones(&self, before_hlc: u64) -> Result<Vec<String>> {
        let mut data = self.data.write();
        self.check_open()?;
        let Data { entries, bytes, .. } = &mut *data;
        let mut purged = Vec::new();
        entries.retain(|key, entry| {
            let purge = entry.deleted && entry.version.hlc < before_hlc;
            if purge {
                *bytes -= entry.size();
                purged.push(key.clone());
            }
            !purge
        });
        Ok(purged)
    }

    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.check_open()?;
        let data = self.data.read();
        let records = data.audit.range(after.saturating_add(1)..).map(|(_, r)| r.clone());
        Ok(records.take(limit).collect())
    }

    async fn audit_time_at(&self, id: u64) -> Result<Option<u64>> {
        self.check_open()?;
        Ok(self.data.read().audit.range(id..).next().map(|(_, r)| r.time_ms))
    }

    async fn audit_purge(&self, before_ms: u64, max_rows: usize) -> Result<usize> {
        let mut data = self.data.write();
        self.check_open()?;
        let old: Vec<u64> = (data.audit.values().take(max_rows))
            .filter(|r| r.time_ms < before_ms)
            .map(|r| r.id)
            .collect();
        for id in &old {
            data.audit.remove(id);
        }
        Ok(old.len())
    }

    async fn audit_last_id(&self) -> Result<u64> {
        self.check_open()?;
        Ok(self.data.read().audit_high)
    }

    async fn size_bytes(&self) -> Result<u64> {
        self.check_open()?;
        Ok(self.data.read().bytes as u64)
    }

    async fn close(&self) -> Result<()> {
        // The write lock waits for a batch in progress, so nothing is half-applied when close returns.
        let _data = self.data.write();
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(closed());
        }
        Ok(())
    }
}
