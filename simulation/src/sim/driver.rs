//! The part of `cave::cluster` (the tokio driver): ticks, carrying out the core's effects, and the messages
//! between nodes.

use cave::crdt::{Entry, NodeId};
use cave::replication::{CoreEvent, Destination, Effects, Message};

use super::events::Ev;
use super::{show, Sim, TICK_MS};
use crate::history::Excuse;
use crate::node::{Cmd, Origin};
use crate::trace::Tag;

impl Sim {
    pub(super) fn is_current(&self, slot: usize, generation: u64) -> bool {
        let node = &self.nodes[slot];
        node.generation == generation && node.run.is_some()
    }

    pub(super) fn tick(&mut self, slot: usize, generation: u64) {
        if !self.is_current(slot, generation) {
            return;
        }
        let local = self.local(slot);
        self.trace.event(Tag::Tick, self.now, slot);
        let node = &mut self.nodes[slot];
        let run = node.run.as_mut().expect("current");
        let fx = run.core.on_tick(local, &node.state);
        // `Driver::apply_fence`: the clock refuses to stamp local writes while the core says fenced.
        run.hlc.set_fence(run.core.clock_fence());
        self.carry_out(slot, fx);
        if self.params.expiring_ratio > 0.0 || self.params.leases > 0 {
            self.expiry_tick(slot, local);
        }
        self.stats.cluster_ms += TICK_MS;
        self.at(self.now + TICK_MS, Ev::Tick(slot, generation));
    }

    /// `Driver::carry_out`: sends go to the network; persists, forgets and purges to the writer, in this
    /// order; the last sync time to the node's record.
    pub(super) fn carry_out(&mut self, slot: usize, fx: Effects) {
        let Effects {
            sends,
            after_persist,
            persist,
            forget,
            purge_below,
            persist_last_sync,
            events,
        } = fx;
        for (to, msg) in sends {
            self.send(slot, to, msg);
        }
        if !persist.is_empty() {
            self.submit(slot, Cmd::Merge(persist, Origin::Replicated));
        }
        // Behind the merges just queued: sent when they commit (a crash first loses them with the merges).
        if !after_persist.is_empty() {
            if self.nodes[slot].writer_idle() {
                for (to, msg) in after_persist {
                    self.send(slot, to, msg);
                }
            } else {
                self.submit(slot, Cmd::Then(after_persist));
            }
        }
        if !forget.is_empty() {
            self.trace.event(Tag::Forget, self.now, slot);
            for t in &forget {
                self.trace.entry(t);
                if self.opts.watch.as_deref() == Some(t.key.as_str()) {
                    eprintln!(
                        "{:>10.3} [{}] n{slot} forgets {}",
                        self.now as f64 / 1e3,
                        t.key,
                        t.version
                    );
                }
                // The tombstone has the version of the entry it drops.
                self.history.excuse(t, Excuse::Forgotten, slot, self.now);
            }
            self.stats.forgotten += forget.len() as u64;
            let n = forget.len();
            self.log(|| format!("n{slot} forgets {n} entries (pull-first)"));
            self.submit(slot, Cmd::Merge(forget, Origin::Forget));
        }
        if let Some(horizon) = purge_below {
            self.submit(slot, Cmd::Purge(horizon));
        }
        if let Some(time_ms) = persist_last_sync {
            self.nodes[slot].persisted_last_sync = Some(time_ms);
        }
        for ev in events {
            match ev {
                CoreEvent::AntiEntropyDone { .. } => self.stats.ae_rounds += 1,
                CoreEvent::AntiEntropyTimedOut { .. } => self.stats.ae_timeouts += 1,
                CoreEvent::ClockDriftRejected { entries, .. } => self.stats.clock_rejections += entries as u64,
                CoreEvent::ClockFenced { offset_ms } => {
                    self.stats.fences += 1;
                    self.log(|| format!("n{slot} fenced: clock {offset_ms} ms off the cluster's"));
                }
                CoreEvent::ClockUnfenced { offset_ms } => {
                    self.log(|| format!("n{slot} unfenced: clock {offset_ms} ms off the cluster's"));
                }
                // Every simulated node has its own id: a twin found here is a false positive, and the node that
                // falls silent for it fails the run's convergence checks.
                CoreEvent::DuplicateNodeId { grpc_addr, refusing } => {
                    self.log(|| format!("n{slot} found a twin under its id at {grpc_addr} (refusing: {refusing})"));
                }
                CoreEvent::ContentConflict { entries, .. } => self.stats.content_conflicts += entries as u64,
                CoreEvent::LockDecided { req, lock, outcome } => self.lock_decided(slot, req, lock, outcome),
                CoreEvent::Peer(_) => {}
            }
        }
    }

    fn send(&mut self, from: usize, dest: Destination, msg: Message) {
        let node = &self.nodes[from];
        let addr = match &dest {
            Destination::Node(id) => node
                .run
                .as_ref()
                .and_then(|r| r.core.address_of(*id))
                .map(str::to_string),
            Destination::Addr(a) => Some(a.clone()),
        };
        let from_id = node.id;
        self.stats.sent += 1;
        let Some(to) = addr.and_then(|a| self.addrs.get(&a).copied()) else {
            self.stats.dropped += 1;
            return;
        };
        let copies = self.net.send(from, to, self.now);
        if copies.is_empty() {
            self.stats.dropped += 1;
            self.trace.event(Tag::Drop, self.now, from);
            self.trace.u64(to as u64);
            return;
        }
        self.stats.duplicated += copies.len() as u64 - 1;
        let last = copies.len() - 1;
        let mut msg = Some(msg);
        for (i, at) in copies.into_iter().enumerate() {
            let msg = if i == last {
                msg.take().expect("once")
            } else {
                msg.clone().expect("kept")
            };
            let msg = Box::new(msg);
            self.at(at, Ev::Deliver { from, from_id, to, msg });
        }
    }

    pub(super) fn deliver(&mut self, from: usize, from_id: NodeId, to: usize, msg: Message) {
        if self.net.blocked(from, to, self.now) || self.nodes[to].run.is_none() {
            self.stats.dropped += 1;
            self.trace.event(Tag::Drop, self.now, from);
            self.trace.u64(to as u64);
            return;
        }
        self.stats.delivered += 1;
        self.trace.event(Tag::Deliver, self.now, to);
        self.trace.u64(from as u64);
        self.trace.message(&msg);
        if self.opts.verbose {
            self.log(|| format!("n{from} -> n{to} {}", msg.kind()));
        }
        if let Some(key) = &self.opts.watch {
            let about: Vec<String> = match &msg {
                Message::Delta { entries } | Message::AeEntries { entries, .. } | Message::AePush { entries, .. } => {
                    entries.iter().filter(|e| e.key == *key).map(show).collect()
                }
                Message::AeVersions { versions, .. } => versions
                    .iter()
                    .filter(|(k, ..)| k == key)
                    .map(|(_, v, _)| format!("has {v}"))
                    .collect(),
                _ => Vec::new(),
            };
            let wants = matches!(&msg, Message::AeEntries { want, .. } if want.contains(key));
            if !about.is_empty() || wants {
                let kind = msg.kind();
                let held = self.nodes[to].state.get(key).map(show);
                eprintln!(
                    "{:>10.3} [{key}] n{from} -> n{to} {kind}: {}{} (n{to} holds {})",
                    self.now as f64 / 1e3,
                    about.join(", "),
                    if wants { " + wants it" } else { "" },
                    held.unwrap_or_else(|| "nothing".into())
                );
            }
        }
        let local = self.local(to);
        let carried: Vec<Entry> = match (&msg, self.opts.verbose) {
            (
                Message::Delta { entries } | Message::AeEntries { entries, .. } | Message::AePush { entries, .. },
                true,
            ) => entries.clone(),
            _ => Vec::new(),
        };
        let node = &mut self.nodes[to];
        let run = node.run.as_mut().expect("checked");
        let fx = run.core.on_message(local, from_id, msg, &node.state);
        // Diagnostics (verbose only): expired tombstones that supersede what the node holds.
        let horizon = run.core.purge_horizon(local);
        for e in carried
            .iter()
            .filter(|e| e.deleted && e.version.hlc < horizon && !fx.persist.contains(e))
        {
            let held = self.nodes[to].state.get(&e.key).filter(|h| h.version < e.version);
            if let Some(held) = held {
                let (key, version, held) = (&e.key, e.version, held.version);
                self.log(|| format!("n{to} gets expired tombstone {key} {version} from n{from}, holds older {held}"));
            }
        }
        self.carry_out(to, fx);
    }
}
