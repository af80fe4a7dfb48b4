//! The part of `cave::db` (the writer task): queued commands, group commits, and what a commit publishes.

use std::collections::BTreeMap;

use cave::crdt::{lease, Entry, Hlc, LwwMap, NodeId, Version};

use super::events::Ev;
use super::{sample, show, Sim, MAX_GROUP_ENTRIES};
use crate::history::{Excuse, History};
use crate::node::{lease_id, Cmd, Group, Op, Origin};
use crate::scenario::Bug;
use crate::trace::Tag;

impl Sim {
    /// Queue a command for the node's writer.
    pub(super) fn submit(&mut self, slot: usize, cmd: Cmd) {
        let Some(run) = self.nodes[slot].run.as_mut() else {
            return;
        };
        run.queue.push_back(cmd);
        if run.inflight.is_none() {
            self.start_group(slot);
        }
    }

    /// `db::writer::run`: evaluate the queued commands as one group and start its commit.
    fn start_group(&mut self, slot: usize) {
        self.local(slot); // the HLC reads the node's clock
        let bug = self.opts.bug;
        let now = self.now;
        let node = &mut self.nodes[slot];
        let Some(run) = node.run.as_mut() else { return };
        if run.inflight.is_some() {
            return;
        }
        let mut group = Group::default();
        while let Some(cmd) = run.queue.front() {
            if let Cmd::Purge(horizon) = cmd {
                if group.is_empty() {
                    group.purge = Some(*horizon);
                    run.queue.pop_front();
                }
                break;
            }
            if !group.is_empty() && group.weight + cmd.weight() > MAX_GROUP_ENTRIES {
                break;
            }
            let cmd = run.queue.pop_front().expect("peeked");
            group.weight += cmd.weight();
            group.commands += 1;
            match cmd {
                Cmd::Write(ops) => {
                    let taken = eval_write(
                        node.id,
                        &run.hlc,
                        &node.state,
                        &mut group,
                        ops,
                        &mut self.history,
                        (slot, now, bug),
                    );
                    if !taken {
                        self.stats.writes_refused += 1;
                    }
                }
                Cmd::Import(entry) => {
                    // `Db::merge` of the import handler: kept if it supersedes. Recorded as a client write
                    // (a losing import counts as overwritten, like a write shadowed in its own group).
                    let id = self.history.issue(slot, &entry, now);
                    self.history.writes[id].imported = true;
                    eval_merge(&run.hlc, &node.state, &mut group, vec![entry], Origin::Replicated, None);
                    group.writes.push(id);
                }
                Cmd::Merge(entries, origin) => {
                    let ties = eval_merge(&run.hlc, &node.state, &mut group, entries, origin, bug);
                    self.stats.hlc_ties += ties;
                }
                Cmd::Then(sends) => group.then.extend(sends),
                Cmd::Purge(_) => unreachable!("handled above"),
            }
        }
        if group.is_empty() {
            return;
        }
        run.inflight = Some(group);
        let generation = node.generation;
        let latency = sample(&mut self.disk, self.params.commit_ms);
        self.at(now + latency, Ev::Commit(slot, generation));
    }

    /// Other running nodes that completed a round within the TTL.
    fn fresh_nodes(&self, slot: usize) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.slot != slot)
            .filter_map(|n| n.run.as_ref().map(|r| r.core.authority(n.clock.read(self.now))))
            .filter(|&a| a == 3)
            .count()
    }

    /// The group commit completed: apply, acknowledge, publish local changes to the core.
    pub(super) fn commit(&mut self, slot: usize, generation: u64) {
        if !self.is_current(slot, generation) {
            return;
        }
        let replace = matches!(self.opts.bug, Some(Bug::LwwArrivalOrder | Bug::LwwTieArrivalOrder));
        let docs_as_lww = self.opts.bug == Some(Bug::DocsAsLww);
        let purging = self.nodes[slot]
            .run
            .as_ref()
            .and_then(|r| r.inflight.as_ref())
            .is_some_and(|g| g.purge.is_some());
        let fresh_others = if purging { self.fresh_nodes(slot) } else { 0 };
        // The isolation script cuts its victim off for longer than the TTL on purpose: a delete it made just
        // before, that had not reached anyone, expires unseen. No rule can save it (DESIGN.md: a tombstone must
        // reach every live node within the TTL); the checker excuses it.
        let isolated_victim = self.params.isolated_past_ttl && self.script.as_ref().is_some_and(|s| s.victim == slot);
        let unseen: Vec<Entry> = match self.nodes[slot].run.as_ref().and_then(|r| r.inflight.as_ref()) {
            Some(Group {
                purge: Some(horizon), ..
            }) if isolated_victim => self.nodes[slot]
                .state
                .iter()
                .filter(|e| e.deleted && e.version.hlc < *horizon && !self.held_elsewhere(slot, e, 0))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        for e in &unseen {
            if !self.history.is_excused(&e.key, e.version) {
                self.history.excuse(e, Excuse::ExpiredUnseen, slot, self.now);
            }
        }
        let node = &mut self.nodes[slot];
        let run = node.run.as_mut().expect("current");
        let Some(group) = run.inflight.take() else { return };
        if let Some(horizon) = group.purge {
            let dead: Vec<Entry> = node
                .state
                .iter()
                .filter(|e| e.deleted && e.version.hlc < horizon)
                .cloned()
                .collect();
            // A node that defers to its peers over old entries (it restarted after more than the TTL without
            // sync, or stayed up that long without sync while others are fresh) rejoins pull-first: its own
            // expired tombstones that no peer saw are dropped, and the delete with them.
            let local = node.clock.read(self.now);
            let stale = match run.core.authority(local) {
                1 => true,
                2 => fresh_others > 0,
                _ => false,
            };
            for e in &dead {
                node.state.remove(&e.key);
                if self.opts.watch.as_deref() == Some(e.key.as_str()) {
                    eprintln!("{:>10.3} [{}] n{slot} purges {}", self.now as f64 / 1e3, e.key, show(e));
                }
                if stale && !self.history.is_excused(&e.key, e.version) {
                    self.history.excuse(e, Excuse::PurgedWhileStale, slot, self.now);
                }
            }
            self.stats.purged += dead.len() as u64;
            self.trace.event(Tag::Purge, self.now, slot);
            self.trace.u64(dead.len() as u64);
        } else {
            self.trace.event(Tag::Commit, self.now, slot);
            for &id in &group.writes {
                let w = &self.history.writes[id];
                let shadowed = group.overlay.get(&w.key).map(|e| e.version) != Some(w.version);
                self.history.ack(id, self.now, shadowed);
            }
            for &id in &group.doc_edits {
                self.history.doc_edits[id].fate = crate::history::Fate::Acked(self.now);
            }
            for e in group.overlay.into_values() {
                self.trace.entry(&e);
                if self.opts.watch.as_deref() == Some(e.key.as_str()) {
                    eprintln!(
                        "{:>10.3} [{}] n{slot} commits {}",
                        self.now as f64 / 1e3,
                        e.key,
                        show(&e)
                    );
                }
                if replace {
                    node.state.remove(&e.key);
                }
                // The real writer installs its group's entries (documents already joined: merging them again
                // would give the same, at the cost of another join). The bug installs a document whole over
                // the one held.
                if docs_as_lww && e.doc.is_some() {
                    node.state.remove(&e.key);
                }
                if e.doc.is_some() {
                    node.state.install(e);
                } else {
                    node.state.merge(e);
                }
            }
            self.stats.writes_acked += group.writes.len() as u64;
            let then = group.then;
            // The driver hands the core every committed change; the core picks what it broadcasts.
            let mut fx = run.core.on_local_commit(node.clock.read(self.now), &group.changes);
            fx.sends.extend(then);
            if !fx.is_empty() {
                self.carry_out(slot, fx);
            }
        }
        self.start_group(slot);
    }
}

/// `Group::write` of the writer: evaluate one atomic write against the group's overlay and the state.
/// Returns `false` if the clock refused to stamp it (fenced): then nothing of it enters the group or the
/// history, as the real writer answers the client with an error.
#[allow(clippy::too_many_arguments)]
fn eval_write(
    me: NodeId,
    hlc: &Hlc,
    state: &LwwMap,
    group: &mut Group,
    ops: Vec<Op>,
    history: &mut History,
    (slot, now, bug): (usize, u64, Option<Bug>),
) -> bool {
    let mut local: BTreeMap<String, Entry> = BTreeMap::new();
    let mut written = Vec::new();
    for op in ops {
        let key = op.key();
        let current = local
            .get(&key)
            .or_else(|| group.overlay.get(&key))
            .or_else(|| state.get(&key))
            .cloned();
        // `db::lease`: renewing, revoking or binding to a lease that is not live here is a 404.
        let lease_live = |n: u64| {
            let key = lease_id(n).key();
            let lease = local
                .get(&key)
                .or_else(|| group.overlay.get(&key))
                .or_else(|| state.get(&key));
            lease.is_some_and(|e| e.live_at(hlc.reading()))
        };
        let refused = match &op {
            Op::Renew { lease } | Op::Revoke { lease } | Op::PutLeased { lease, .. } => !lease_live(*lease),
            _ => false,
        };
        if refused {
            continue;
        }
        if matches!(&op, Op::Delete { .. }) && current.as_ref().is_some_and(|e| e.deleted) {
            // Deleting a deleted key changes nothing (and must not move the version).
            continue;
        }
        let floor = current.as_ref().map_or(0, |e| e.version.hlc);
        let Ok(stamp) = hlc.tick_after(floor) else {
            return false;
        };
        let entry = match op {
            Op::Put { key, value } => Entry::value(key, value, Version::new(stamp, me)),
            // `db::writer`: the expiry on the hybrid clock, from the write's own stamp.
            Op::PutTtl { key, value, ttl_ms } => Entry {
                expires: Some(cave::crdt::expiry::at(lease::expires_after(
                    Version::new(stamp, me),
                    ttl_ms,
                ))),
                ..Entry::value(key, value, Version::new(stamp, me))
            },
            Op::Delete { key } => Entry::tombstone(key, Version::new(stamp, me)),
            // `db::lease`: a lease is an entry that expires; a renewal a later write of it, a revoke its delete.
            Op::Grant { ttl_ms, .. } => Entry {
                expires: Some(cave::crdt::expiry::at(lease::expires_after(
                    Version::new(stamp, me),
                    ttl_ms,
                ))),
                ..Entry::value(key.clone(), lease::lease_value(ttl_ms), Version::new(stamp, me))
            },
            Op::Renew { .. } => {
                let current = current.expect("checked: live");
                let ttl_ms = lease::ttl_ms_of(&current).expect("a lease entry holds its TTL");
                Entry {
                    expires: Some(cave::crdt::expiry::at(lease::expires_after(
                        Version::new(stamp, me),
                        ttl_ms,
                    ))),
                    ..Entry::value(key.clone(), current.value, Version::new(stamp, me))
                }
            }
            Op::Revoke { .. } => Entry::tombstone(key.clone(), Version::new(stamp, me)),
            Op::PutLeased { key, value, lease } => Entry {
                lease: Some(lease_id(lease)),
                ..Entry::value(key, value, Version::new(stamp, me))
            },
            op @ (Op::DocSet { .. } | Op::DocIncrement { .. }) => {
                // A patch of a key without a live document is a 404: nothing is written.
                let Some(edit) = super::docs::edit(current.as_ref(), &op, Version::new(stamp, me)) else {
                    continue;
                };
                let (field, by) = match op {
                    Op::DocSet { field, value, .. } => (Some((field, value)), 0),
                    Op::DocIncrement { by, .. } => (None, by),
                    _ => unreachable!("matched a document op"),
                };
                group.doc_edits.push(history.doc_edits.len());
                history.doc_edits.push(crate::history::DocEdit {
                    key: key.clone(),
                    node: slot,
                    field,
                    by,
                    hash: edit.hash,
                    fate: crate::history::Fate::Pending,
                });
                // The driver broadcasts the edit as its delta (the bug: as the whole document).
                group.changes.push(if bug == Some(Bug::DocsAsLww) {
                    edit.entry.clone()
                } else {
                    edit.delta
                });
                local.insert(key, edit.entry);
                continue;
            }
        };
        written.push(entry.clone());
        local.insert(key, entry);
    }
    for entry in written {
        history.note_lease(&entry);
        group.writes.push(history.issue(slot, &entry, now));
        group.changes.push(entry);
    }
    group.overlay.extend(local);
    true
}

/// `Group::merge` of the writer (or its deliberately broken variants). Returns the number of HLC ties met.
fn eval_merge(
    hlc: &Hlc,
    state: &LwwMap,
    group: &mut Group,
    entries: Vec<Entry>,
    origin: Origin,
    bug: Option<Bug>,
) -> u64 {
    let mut ties = 0;
    for entry in entries {
        hlc.observe(entry.version.hlc);
        let current = group
            .overlay
            .get(entry.key.as_str())
            .or_else(|| state.get(entry.key.as_str()));
        // Documents of the epoch held, and deltas: joined, and a join is not broadcast (`Db::resolve_broadcast`).
        // The bug takes a document whole when its precedence is greater, and drops deltas.
        if bug != Some(Bug::DocsAsLww) && (entry.is_delta() || current.is_some_and(|c| c.same_document(&entry))) {
            if let Some(joined) = current
                .filter(|c| c.same_document(&entry))
                .and_then(|c| super::docs::join(c, &entry))
            {
                group.overlay.insert(joined.key.to_string(), joined);
            }
            continue;
        }
        if entry.is_delta() {
            continue;
        }
        let wins = match current {
            None => true,
            Some(c) => {
                if c.version.hlc == entry.version.hlc && c.version.node != entry.version.node {
                    ties += 1;
                }
                match (bug, origin) {
                    (Some(Bug::LwwArrivalOrder), Origin::Replicated) => *c != entry,
                    (Some(Bug::LwwTieArrivalOrder), Origin::Replicated) => {
                        entry.version.hlc > c.version.hlc || (entry.version.hlc == c.version.hlc && *c != entry)
                    }
                    _ => entry.supersedes(c),
                }
            }
        };
        if wins {
            group.overlay.insert(entry.key.to_string(), entry.clone());
            group.changes.push(entry);
        }
    }
    ties
}
