//! The event queue: what can happen, in which order, and which handler each event goes to.

use std::cmp::Ordering;

use cave::crdt::NodeId;
use cave::replication::Message;

use super::script::Step;
use super::Sim;
use crate::node::Life;

#[derive(Debug)]
pub(super) enum Ev {
    Start(usize),
    Tick(usize, u64),
    Commit(usize, u64),
    Deliver {
        from: usize,
        from_id: NodeId,
        to: usize,
        msg: Box<Message>,
    },
    Client,
    Crash(usize),
    Restart(usize),
    Leave(usize),
    Stop(usize),
    Heal,
    Check,
    Script(Step),
}

pub(super) struct Scheduled {
    pub(super) at: u64,
    seq: u64,
    pub(super) ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl Sim {
    pub(super) fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, ev });
    }

    pub(super) fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start(slot) => {
                if self.nodes[slot].life == Life::Waiting {
                    if slot >= self.stats.initial_nodes {
                        self.stats.joins += 1;
                    }
                    self.start(slot);
                }
            }
            Ev::Restart(slot) => {
                let pinned = self
                    .script
                    .as_ref()
                    .is_some_and(|s| s.victim == slot && s.away_since.is_some());
                if self.nodes[slot].life == Life::Down && !pinned {
                    self.start(slot);
                }
            }
            Ev::Tick(slot, generation) => self.tick(slot, generation),
            Ev::Commit(slot, generation) => self.commit(slot, generation),
            Ev::Deliver { from, from_id, to, msg } => self.deliver(from, from_id, to, *msg),
            Ev::Client => self.client(),
            Ev::Crash(slot) => {
                let victim = self.script.as_ref().map(|s| s.victim);
                if self.nodes[slot].life == Life::Up && self.nodes[slot].leaving.is_none() && victim != Some(slot) {
                    self.crash(slot);
                }
            }
            Ev::Leave(slot) => self.leave(slot),
            Ev::Stop(slot) => self.stop(slot),
            Ev::Heal => self.heal(),
            Ev::Check => self.check(),
            Ev::Script(step) => self.script(step),
        }
    }
}
