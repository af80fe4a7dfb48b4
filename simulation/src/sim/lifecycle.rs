//! Node lifecycle: start (and restart, and join), crash, graceful leave (drain, gossip, stop).

use std::collections::VecDeque;

use cave::crdt::{Entry, Hlc};
use cave::replication::{Core, LastSync, PeerRecord};
use rand::seq::SliceRandom;
use rand::Rng;

use super::events::Ev;
use super::{Sim, DRAIN_TIMEOUT_MS, LEAVE_GRACE_MS};
use crate::history::Excuse;
use crate::node::{Life, Running};
use crate::scenario::Bug;
use crate::trace::Tag;

impl Sim {
    pub(super) fn start(&mut self, slot: usize) {
        let local = self.local(slot);
        let core_seed = self.cores.gen();
        let restore = self.opts.bug != Some(Bug::PurgeWithoutRejoin);
        let members: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.slot != slot && matches!(n.life, Life::Up | Life::Down) && n.leaving.is_none())
            .map(|n| n.addr.clone())
            .collect();
        let k = self.cores.gen_range(1..=3usize).min(members.len());
        let discovered: Vec<String> = members.choose_multiple(&mut self.cores, k).cloned().collect();
        let node = &mut self.nodes[slot];
        node.generation += 1;
        node.starts += 1;
        // `Db::open`: the clock observes every stored version.
        let hlc = Hlc::new(node.time.clone());
        for e in node.state.iter() {
            hlc.observe(e.version.hlc);
        }
        let record = PeerRecord {
            id: node.id,
            grpc_addr: node.addr.clone(),
            http_addr: format!("n{slot}:2001"),
            incarnation: local,
            heartbeat: 0,
            left: false,
            version: env!("CARGO_PKG_VERSION").to_string(),
            keys: 0,
        };
        let mut core = Core::new(self.cfg.clone(), record, node.seeds.clone(), core_seed, local);
        // What mDNS would find on the LAN: a few current members (so that a node whose configured seeds have
        // all left can still (re)join).
        core.add_seeds(discovered);
        // `Cluster::start_on`: what the node finds in its data directory. The injected bug skips the
        // restore, so the node looks new (authority 0) whatever it holds.
        if restore {
            core.restore_last_sync(
                LastSync::recorded(node.persisted_last_sync, !node.state.is_empty()),
                local,
            );
        }
        let pull_first = core.pull_first();
        node.run = Some(Running {
            core,
            hlc,
            queue: VecDeque::new(),
            inflight: None,
        });
        node.life = Life::Up;
        let generation = node.generation;
        self.trace.event(Tag::Start, self.now, slot);
        self.trace.u64(pull_first as u64);
        self.log(|| format!("n{slot} starts (pull-first: {pull_first})"));
        // Tokio intervals fire at once: the first tick (which also purges) happens at start.
        self.at(self.now, Ev::Tick(slot, generation));
    }

    pub(super) fn crash(&mut self, slot: usize) {
        let node = &mut self.nodes[slot];
        node.generation += 1;
        node.life = Life::Down;
        let run = node.run.take();
        self.stats.crashes += 1;
        self.trace.event(Tag::Crash, self.now, slot);
        if let Some(group) = run.and_then(|r| r.inflight) {
            for id in group.writes {
                self.history.lose(id, self.now);
                self.stats.writes_lost += 1;
            }
        }
        self.log(|| format!("n{slot} crashes"));
    }

    /// Whether `entry` (held by `slot`) is also held, or superseded, by another member, or is garbage.
    pub(super) fn held_elsewhere(&self, slot: usize, entry: &Entry, horizon: u64) -> bool {
        if entry.deleted && entry.version.hlc < horizon {
            return true;
        }
        self.nodes.iter().any(|n| {
            n.slot != slot
                && matches!(n.life, Life::Up | Life::Down)
                && n.state.get(&entry.key).is_some_and(|e| e.version >= entry.version)
        })
    }

    /// A graceful leave: stop serving clients, drain (wait until every entry is held elsewhere, bounded),
    /// then gossip the departure and stop.
    pub(super) fn leave(&mut self, slot: usize) {
        let node = &self.nodes[slot];
        if node.life != Life::Up {
            return;
        }
        let since = match node.leaving {
            Some(since) => since,
            None => {
                let members = self
                    .nodes
                    .iter()
                    .filter(|n| n.life != Life::Gone && n.leaving.is_none());
                if members.count() <= 2 {
                    return;
                }
                self.nodes[slot].leaving = Some(self.now);
                self.log(|| format!("n{slot} starts draining to leave"));
                self.now
            }
        };
        let local = self.local(slot);
        let node = &self.nodes[slot];
        let horizon = node.run.as_ref().expect("up").core.purge_horizon(local);
        let drained = node.writer_idle() && node.state.iter().all(|e| self.held_elsewhere(slot, e, horizon));
        if !drained && self.now - since < DRAIN_TIMEOUT_MS {
            self.at(self.now + 1_000, Ev::Leave(slot));
            return;
        }
        self.trace.event(Tag::Leave, self.now, slot);
        let fx = self.nodes[slot].run.as_mut().expect("up").core.leave(local);
        self.carry_out(slot, fx);
        self.at(self.now + LEAVE_GRACE_MS, Ev::Stop(slot));
    }

    pub(super) fn stop(&mut self, slot: usize) {
        let local = self.local(slot);
        let Some(run) = self.nodes[slot].run.as_ref() else {
            return;
        };
        let horizon = run.core.purge_horizon(local);
        let lost: Vec<Entry> = self.nodes[slot]
            .state
            .iter()
            .filter(|e| !self.held_elsewhere(slot, e, horizon))
            .cloned()
            .collect();
        for e in &lost {
            self.history.excuse(e, Excuse::Departed, slot, self.now);
        }
        self.stats.departed += lost.len() as u64;
        let node = &mut self.nodes[slot];
        if let Some(group) = node.run.take().and_then(|r| r.inflight) {
            for id in group.writes {
                self.history.lose(id, self.now);
                self.stats.writes_lost += 1;
            }
        }
        node.life = Life::Gone;
        node.generation += 1;
        node.leaving = None;
        self.stats.leaves += 1;
        self.trace.event(Tag::Stop, self.now, slot);
        self.log(|| format!("n{slot} left"));
    }
}
