//! The writer task: evaluates commands in order and commits them in groups (see the module docs of `db`).

use std::collections::HashMap;

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{publish, Op, Outcome, Shared};
use crate::audit::context::{Claim, COMMITTED_STATUS};
use crate::audit::AuditRecord;
use crate::crdt::{Entry, Key, Version};
use crate::error::{Error, Result};
use crate::key;
use crate::telemetry::limiter::LogLimiter;
use sweep::{expire_due, next_command, Next};

mod merge;
mod sweep;

/// Most entries one group commit carries; beyond it the rest waits for the next commit, which bounds the
/// latency a single huge batch adds to everyone else's writes.
pub const MAX_GROUP_ENTRIES: usize = 8192;

/// A merge of at least this many entries (an import, a large repair) publishes the events of its values by
/// reference (key and version; subscribers read the value from the map). Held by the event, a value's buffer
/// would be shared with the map's entry, and sharing a `Bytes` made from a `Vec` allocates its reference
/// count for good: ~32 bytes more per imported key after the event is gone. An event ring of
/// [`super::EVENT_BUFFER`] keeps only the last of so many events anyway.
pub(super) const BULK_MERGE_ENTRIES: usize = super::EVENT_BUFFER / 4;

pub(super) enum Command {
    /// `audit`: the record of the request writing, committed with the write if it succeeds.
    Write {
        ops: Vec<Op>,
        /// Prefix an error one op causes with its index (see `Db::write_batch`).
        name_ops: bool,
        audit: Option<Claim>,
        reply: oneshot::Sender<Result<Vec<Outcome>>>,
    },
    Merge {
        entries: Vec<Entry>,
        /// Through this node's import (see [`super::Change::imported`]), not from a peer.
        imported: bool,
        audit: Option<Claim>,
        reply: oneshot::Sender<Result<usize>>,
    },
    /// Audit records on their own (requests that wrote nothing, corrected statuses).
    Audit {
        records: Vec<AuditRecord>,
        reply: oneshot::Sender<Result<()>>,
    },
    Purge {
        before_hlc: u64,
        reply: oneshot::Sender<Result<usize>>,
    },
    Close {
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Command {
    /// A merge evaluated as a group of its own (see `merge`).
    fn is_bulk(&self) -> bool {
        matches!(self, Command::Merge { entries, .. } if entries.len() >= BULK_MERGE_ENTRIES)
    }

    fn weight(&self) -> usize {
        match self {
            Command::Write { ops, .. } => ops.len(),
            Command::Merge { entries, .. } => entries.len(),
            Command::Audit { records, .. } => records.len(),
            Command::Purge { .. } | Command::Close { .. } => 1,
        }
    }
}

/// A command evaluated but not yet committed, waiting for its group's commit to answer.
enum Pending {
    Write(oneshot::Sender<Result<Vec<Outcome>>>, Result<Vec<Outcome>>),
    Merge(oneshot::Sender<Result<usize>>, usize),
    Audit(oneshot::Sender<Result<()>>),
}

pub(super) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Command>) {
    let mut carry: Option<Command> = None;
    loop {
        // Expiries first: under a steady load the queue is never empty, and they must not wait for a lull.
        let expiry_failed = !expire_due(&shared).await;
        let first = match carry.take() {
            Some(c) => c,
            None => match next_command(&shared, &mut queue, expiry_failed).await {
                Next::Command(c) => c,
                Next::ExpiryDue => continue,
                Next::Closed => return,
            },
        };
        // Give request tasks that are runnable right now a chance to enqueue before the group is cut:
        // under load this turns many tiny commits into a few big ones, and costs one scheduler round when idle.
        tokio::task::yield_now().await;
        let mut group = Group::default();
        let mut next = Some(first);
        // Evaluate as many queued commands as fit in one commit; purge and close run on their own.
        while let Some(command) = next.take() {
            match command {
                Command::Purge { before_hlc, reply } if group.is_empty() => {
                    let _ = reply.send(purge(&shared, before_hlc).await);
                    break;
                }
                Command::Close { reply } if group.is_empty() => {
                    queue.close();
                    // Everything sent before the close is still in the queue: finish it first.
                    while let Ok(command) = queue.try_recv() {
                        let mut group = Group::default();
                        group.add(&shared, command);
                        group.commit(&shared).await;
                    }
                    let _ = reply.send(shared.store.close().await);
                    return;
                }
                c @ (Command::Purge { .. } | Command::Close { .. }) => {
                    carry = Some(c);
                    break;
                }
                command => {
                    // A bulk merge is a group of its own (see `merge`): it is not added to one, nor anything
                    // to it.
                    if !group.is_empty() && (command.is_bulk() || group.weight + command.weight() > MAX_GROUP_ENTRIES) {
                        carry = Some(command);
                        break;
                    }
                    let bulk = command.is_bulk();
                    group.add(&shared, command);
                    if bulk {
                        break;
                    }
                    next = queue.try_recv().ok();
                }
            }
        }
        if !group.is_empty() {
            group.commit(&shared).await;
        }
    }
}

async fn purge(shared: &Shared, before_hlc: u64) -> Result<usize> {
    let purged = shared.store.purge_tombstones(before_hlc).await?;
    let mut state = shared.state.write();
    for key in &purged {
        // Only drop what is still the purged tombstone; the store and the map agree because both are only
        // written here, but be strict anyway.
        if state.get(key).is_some_and(|e| e.deleted && e.version.hlc < before_hlc) {
            state.remove(key);
        }
    }
    Ok(purged.len())
}

/// Commands evaluated together and committed in one transaction.
#[derive(Default)]
struct Group {
    /// Latest uncommitted entry per key: what later commands of the group must see.
    overlay: HashMap<Key, Entry>,
    /// A bulk merge's entries, sorted by key, one per key: the group's only command, committed instead of
    /// the overlay (see `merge`).
    bulk: Vec<Entry>,
    /// Every change in application order, for watchers.
    changes: Vec<super::Published>,
    /// The broadcast delta of each local document edit, by key and version (see [`super::Change`]).
    deltas: HashMap<(Key, Version), super::DocBroadcast>,
    pending: Vec<Pending>,
    weight: usize,
    /// Audit records committed with the group's entries.
    audit: Vec<AuditRecord>,
    /// The requests' pending records among them, with their ids: told once committed.
    claims: Vec<(Claim, u64)>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn add(&mut self, shared: &Shared, command: Command) {
        self.weight += command.weight();
        match command {
            Command::Write {
                ops,
                name_ops,
                audit,
                reply,
            } => {
                let result = self.write(shared, ops, name_ops);
                // A write that failed its own checks stored nothing: its request records it with its answer.
                if result.is_ok() {
                    self.claim(shared, audit);
                }
                self.pending.push(Pending::Write(reply, result));
            }
            Command::Merge {
                entries,
                imported,
                audit,
                reply,
            } => {
                let applied = if entries.len() >= BULK_MERGE_ENTRIES {
                    self.merge_bulk(shared, entries, imported)
                } else {
                    self.merge(shared, entries, imported)
                };
                self.claim(shared, audit);
                self.pending.push(Pending::Merge(reply, applied));
            }
            Command::Audit { records, reply } => {
                for mut record in records {
                    if record.id == 0 {
                        record.id = shared.audit_next.fetch_add(1, Ordering::AcqRel);
                    }
                    self.audit.push(record);
                }
                self.pending.push(Pending::Audit(reply));
            }
            Command::Purge { reply, .. } => drop(reply.send(Err(out_of_turn()))),
            Command::Close { reply } => drop(reply.send(Err(out_of_turn()))),
        }
    }

    /// Commit the request's pending audit record with the group.
    fn claim(&mut self, shared: &Shared, claim: Option<Claim>) {
        let Some(claim) = claim else { return };
        let id = shared.audit_next.fetch_add(1, Ordering::AcqRel);
        self.audit.push(AuditRecord {
            id,
            status: COMMITTED_STATUS,
            ..claim.record.clone()
        });
        self.claims.push((claim, id));
    }

    /// The entry of `key` as this group sees it: its own uncommitted effects first, then committed state.
    fn current(&self, shared: &Shared, key: &str) -> Option<Entry> {
        match self.overlay.get(key) {
            Some(e) => Some(e.clone()),
            None => shared.state.read().get(key).cloned(),
        }
    }

    /// The version of `key` as this group sees it, and whether it is a tombstone.
    fn current_version(&self, shared: &Shared, key: &str) -> Option<(Version, bool)> {
        match self.overlay.get(key) {
            Some(e) => Some((e.version, e.deleted)),
            None => shared.state.read().get(key).map(|e| (e.version, e.deleted)),
        }
    }

    /// Evaluate one atomic write. On error nothing of it stays in the group; with `name_ops` the error
    /// names the index of the op that caused it.
    fn write(&mut self, shared: &Shared, ops: Vec<Op>, name_ops: bool) -> Result<Vec<Outcome>> {
        let mut local: HashMap<Key, Entry> = HashMap::new();
        let mut changes = Vec::new();
        let mut deltas = Vec::new();
        let mut outcomes = Vec::with_capacity(ops.len());
        let lookup = |local: &HashMap<Key, Entry>, key: &str| match local.get(key) {
            Some(e) => Some(e.clone()),
            None => self.current(shared, key),
        };
        // Puts only need the current version (for the HLC floor and `?cas=`): no clone of the value.
        let version_of = |local: &HashMap<Key, Entry>, key: &str| match local.get(key) {
            Some(e) => Some((e.version, e.deleted)),
            None => self.current_version(shared, key),
        };
        for (index, op) in ops.into_iter().enumerate() {
            let at = |err: Error| if name_ops { err.in_op(index) } else { err };
            match op {
                Op::Get { key } => {
                    let now = shared.hlc.reading();
                    let live = |e: &Entry| live_in(e, now, |k| lookup(&local, k));
                    outcomes.push(Outcome::Got(lookup(&local, &key).filter(live)));
                }
                Op::Put {
                    key,
                    value,
                    content_type,
                    secret,
                    cas,
                    ttl,
                    lease,
                } => {
                    let current = version_of(&local, &key);
                    check_cas_version(current, cas).map_err(at)?;
                    if let Some(id) = lease {
                        let now = shared.hlc.reading();
                        if !lookup(&local, &id.key()).is_some_and(|e| e.live_at(now)) {
                            return Err(at(Error::NotFound(format!(
                                "lease {id} not found: it ended or never existed"
                            ))));
                        }
                    }
                    let floor = current.map_or(0, |(v, _)| v.hlc);
                    let version = Version::new(shared.hlc.tick_after(floor).map_err(at)?, shared.node);
                    // On the hybrid clock, from the write's own stamp: every node judges the same instant.
                    let expires = ttl.map(|ttl| {
                        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                        crate::crdt::expiry::at(crate::crdt::lease::expires_after(version, ttl_ms))
                    });
                    let entry = Entry {
                        key: key.into(),
                        value,
                        content_type,
                        secret,
                        deleted: false,
                        version,
                        doc: None,
                        expires,
                        lease,
                    };
                    changes.push(entry.clone());
                    local.insert(entry.key.clone(), entry.clone());
                    outcomes.push(Outcome::Written(entry));
                }
                Op::Delete { key, cas } => {
                    let current = lookup(&local, &key);
                    check_cas(current.as_ref(), cas).map_err(at)?;
                    let now = shared.hlc.reading();
                    let existed = current.as_ref().is_some_and(|e| live_in(e, now, |k| lookup(&local, k)));
                    let tombstone = match current {
                        // Already deleted: deleting again changes nothing (and must not move the version).
                        Some(e) if e.deleted => e,
                        current => {
                            let tomb = Entry::tombstone(key, next_version(shared, current.as_ref()).map_err(at)?);
                            changes.push(tomb.clone());
                            local.insert(tomb.key.clone(), tomb.clone());
                            tomb
                        }
                    };
                    outcomes.push(Outcome::Deleted { tombstone, existed });
                }
                Op::PutDoc {
                    key,
                    json,
                    secret,
                    cas,
                    max_bytes,
                } => {
                    let current = lookup(&local, &key);
                    check_cas(current.as_ref(), cas).map_err(at)?;
                    let version = next_version(shared, current.as_ref()).map_err(at)?;
                    let written = super::docs::put(shared, current.as_ref(), (key, &json, secret), version, max_bytes)
                        .map_err(at)?;
                    let entry = written.entry;
                    deltas.push(((entry.key.clone(), entry.version), written.broadcast));
                    changes.push(entry.clone());
                    local.insert(entry.key.clone(), entry.clone());
                    outcomes.push(Outcome::Written(entry));
                }
                Op::Patch {
                    key,
                    patch,
                    cas,
                    max_bytes,
                } => {
                    let current = lookup(&local, &key);
                    check_cas(current.as_ref(), cas).map_err(at)?;
                    let version = next_version(shared, current.as_ref()).map_err(at)?;
                    let written =
                        super::docs::patch(shared, current.as_ref(), key, &patch, version, max_bytes).map_err(at)?;
                    let entry = written.entry;
                    deltas.push(((entry.key.clone(), entry.version), written.broadcast));
                    changes.push(entry.clone());
                    local.insert(entry.key.clone(), entry.clone());
                    outcomes.push(Outcome::Written(entry));
                }
                Op::RenewLease { id } => {
                    let entry = super::lease::renewed(shared, lookup(&local, &id.key()), id).map_err(at)?;
                    changes.push(entry.clone());
                    local.insert(entry.key.clone(), entry.clone());
                    outcomes.push(Outcome::Written(entry));
                }
                Op::DeletePrefix { prefix } => {
                    let mut keys: Vec<Key> = shared
                        .state
                        .read()
                        .range_prefix(&prefix)
                        .filter(|e| !key::is_reserved(&e.key))
                        .map(|e| e.key.clone())
                        .collect();
                    keys.extend(
                        self.overlay
                            .keys()
                            .chain(local.keys())
                            .filter(|k| k.starts_with(&prefix) && !key::is_reserved(k))
                            .cloned(),
                    );
                    keys.sort();
                    keys.dedup();
                    let mut tombs = Vec::new();
                    for key in keys {
                        let current = lookup(&local, &key);
                        if let Some(current) = current.filter(|e| !e.deleted) {
                            let tomb = Entry::tombstone(key, next_version(shared, Some(&current)).map_err(at)?);
                            changes.push(tomb.clone());
                            local.insert(tomb.key.clone(), tomb.clone());
                            tombs.push(tomb);
                        }
                    }
                    outcomes.push(Outcome::DeletedPrefix(tombs));
                }
            }
        }
        self.overlay.extend(local);
        let published = changes
            .into_iter()
            .map(|entry| super::Published::Entry { entry, imported: false });
        self.changes.extend(published);
        self.deltas.extend(deltas);
        Ok(outcomes)
    }

    /// Persist the group's final entries in one transaction; on success publish and answer, on failure
    /// answer every caller with the error and publish nothing.
    async fn commit(self, shared: &Shared) {
        let Group {
            overlay,
            bulk,
            changes,
            deltas,
            pending,
            audit,
            claims,
            ..
        } = self;
        let batch: Vec<Entry> = if bulk.is_empty() {
            let mut batch: Vec<Entry> = overlay.into_values().collect();
            // In key order: the store writes a large batch into its table in this order, and `install_all`
            // wants it sorted too.
            batch.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            batch
        } else {
            bulk
        };
        let committed = if batch.is_empty() && audit.is_empty() {
            Ok(0)
        } else {
            let started = Instant::now();
            let committed = shared.store.apply_with_audit(&batch, &audit).await;
            // `storage_full` is set by a full disk and cleared only by a commit that succeeds: another failure
            // says nothing about space.
            match &committed {
                Ok(_) => {
                    if !batch.is_empty() {
                        shared.metrics.commit(batch.len(), started.elapsed());
                    }
                    if !audit.is_empty() {
                        shared.metrics.audit_records(audit.len() as u64);
                    }
                    // Only entries show there is room again: a few audit records (the refusal of a write
                    // for want of space) still fit in pages SQLite keeps free.
                    if !batch.is_empty() {
                        shared.storage_full.store(false, Ordering::Release);
                    }
                }
                Err(err) => {
                    shared.metrics.commit_failed();
                    if matches!(err, Error::StorageFull(_)) {
                        shared.storage_full.store(true, Ordering::Release);
                    }
                }
            }
            committed
        };
        match committed {
            Ok(_) => {
                for (claim, id) in claims {
                    claim.committed(id, COMMITTED_STATUS);
                }
                record_ops(shared, &pending);
                // The batch holds the group's final entries, documents already joined: install, not merge.
                shared.state.write().install_all(batch);
                publish(shared, changes, deltas);
                for p in pending {
                    match p {
                        Pending::Write(reply, result) => drop(reply.send(result)),
                        Pending::Merge(reply, applied) => drop(reply.send(Ok(applied))),
                        Pending::Audit(reply) => drop(reply.send(Ok(()))),
                    }
                }
            }
            Err(err) => {
                // A full disk fails every commit while writes keep coming: one line per category per interval.
                static FAILURES: LazyLock<LogLimiter> = LazyLock::new(LogLimiter::default);
                if let Some(suppressed) = FAILURES.check(err.code()) {
                    tracing::error!(error = %err, suppressed, "commit failed; the group's writes are rejected");
                }
                for p in pending {
                    match p {
                        // A write that failed its own checks reports that, not the commit error.
                        Pending::Write(reply, Err(own)) => drop(reply.send(Err(own))),
                        Pending::Write(reply, Ok(_)) => drop(reply.send(Err(err.clone()))),
                        Pending::Merge(reply, _) => drop(reply.send(Err(err.clone()))),
                        Pending::Audit(reply) => drop(reply.send(Err(err.clone()))),
                    }
                }
            }
        }
    }
}

/// Count the reads, puts and deletes of the group's successful writes (merges are replication, not client
/// operations). A delete of an already deleted key still counts: the client asked for it and got it.
fn record_ops(shared: &Shared, pending: &[Pending]) {
    let (mut reads, mut writes, mut deletes) = (0, 0, 0);
    for p in pending {
        let Pending::Write(_, Ok(outcomes)) = p else { continue };
        for outcome in outcomes {
            match outcome {
                Outcome::Got(_) => reads += 1,
                Outcome::Deleted { .. } => deletes += 1,
                Outcome::Written(_) => writes += 1,
                Outcome::DeletedPrefix(tombs) => deletes += tombs.len() as u64,
            }
        }
    }
    let metrics = &shared.metrics;
    if reads > 0 {
        metrics.kv_reads(reads);
    }
    if writes > 0 {
        metrics.kv_writes(writes);
    }
    if deletes > 0 {
        metrics.kv_deletes(deletes);
    }
}

fn out_of_turn() -> Error {
    Error::internal("writer: command evaluated out of turn")
}

/// The version of a local write over `current`: `max(now, current.hlc + 1)`, stamped with this node. Fails
/// while the clock is fenced or when no greater version exists ([`crate::crdt::Hlc::tick_after`]).
fn next_version(shared: &Shared, current: Option<&Entry>) -> Result<Version> {
    let floor = current.map_or(0, |e| e.version.hlc);
    Ok(Version::new(shared.hlc.tick_after(floor)?, shared.node))
}

/// `?cas=`: `0` means "only if absent (or deleted)", anything else "only if the live version is exactly this".
fn check_cas(current: Option<&Entry>, cas: Option<Version>) -> Result<()> {
    check_cas_version(current.map(|e| (e.version, e.deleted)), cas)
}

/// [`check_cas`] on `(version, deleted)`.
fn check_cas_version(current: Option<(Version, bool)>, cas: Option<Version>) -> Result<()> {
    let Some(expected) = cas else { return Ok(()) };
    let live = current.filter(|(_, deleted)| !deleted).map(|(v, _)| v);
    let holds = match live {
        None => expected == Version::ZERO,
        Some(v) => v == expected,
    };
    if holds {
        Ok(())
    } else {
        let found = live.map_or_else(|| "absent".to_string(), |v| format!("at version {v}"));
        Err(Error::PreconditionFailed(format!(
            "cas failed: expected version {expected}, the key is {found}"
        )))
    }
}

/// Whether `entry` reads as live at `now` ([`crate::crdt::LwwMap::live_at`]), its lease looked up with
/// `lookup` (which sees the group's own earlier writes).
fn live_in(entry: &Entry, now: u64, lookup: impl Fn(&str) -> Option<Entry>) -> bool {
    entry.live_at(now)
        && entry
            .lease
            .is_none_or(|id| lookup(&id.key()).is_some_and(|l| l.live_at(now)))
}
