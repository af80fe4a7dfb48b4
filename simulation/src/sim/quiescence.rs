//! The end of a run: faults heal, clients stop, and the cluster is watched until it settles (or runs out of
//! time).

use super::events::Ev;
use super::{Sim, MAX_QUIESCENCE_MS, MIN_QUIESCENCE_MS};
use crate::check;
use crate::node::{Life, Node};
use crate::trace::Tag;

impl Sim {
    pub(super) fn heal(&mut self) {
        self.trace.event(Tag::Heal, self.now, 0);
        self.log(|| "faults heal, clients stop".into());
        self.net.healed = true;
        self.workload = false;
        self.heal_at = Some(self.now);
        if let Some(s) = &mut self.script {
            s.away_since = None;
        }
        for slot in 0..self.nodes.len() {
            if matches!(self.nodes[slot].life, Life::Down | Life::Waiting) {
                self.start(slot);
            }
        }
        self.at(self.now + 1_000, Ev::Check);
    }

    /// Quiescence: settled (or out of time) ends the run.
    pub(super) fn check(&mut self) {
        let heal_at = self.heal_at.expect("healed");
        if self.now - heal_at >= MIN_QUIESCENCE_MS && self.settled() {
            self.done = Some(true);
        } else if self.now - heal_at >= MAX_QUIESCENCE_MS {
            self.done = Some(false);
        } else {
            self.at(self.now + 1_000, Ev::Check);
        }
    }

    /// Nothing left to do: every member up, writers idle, equal digests, agreeing membership views.
    fn settled(&self) -> bool {
        let live: Vec<&Node> = self.nodes.iter().filter(|n| n.life != Life::Gone).collect();
        if live
            .iter()
            .any(|n| n.life != Life::Up || n.leaving.is_some() || !n.writer_idle())
        {
            return false;
        }
        let root = live[0].state.digest().root();
        if live.iter().any(|n| n.state.digest().root() != root) {
            return false;
        }
        check::membership_views(&self.nodes).is_empty()
    }
}
