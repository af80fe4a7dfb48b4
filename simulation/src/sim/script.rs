//! The purge / isolation scripts: doomed keys written, the victim taken away (crashed or isolated) for longer
//! than the TTL, the keys deleted meanwhile, the victim brought back.

use rand::seq::SliceRandom;
use rand::Rng;

use super::events::Ev;
use super::{Sim, DOOMED_KEYS};
use crate::net::{Block, Episode};
use crate::node::{Life, Op};

#[derive(Debug)]
pub(super) enum Step {
    /// Write a doomed key somewhere.
    DoomedPut(usize),
    /// Take the victim away (crash or isolate) once it has recorded a sync.
    Away,
    /// Delete a doomed key (not on the victim).
    DoomedDelete(usize),
    /// Bring the victim back.
    Return,
}

/// The purge / isolation script's state.
#[derive(Debug, Default)]
pub(super) struct Script {
    pub(super) victim: usize,
    pub(super) away_since: Option<u64>,
    pub(super) deletes_left: usize,
    pub(super) isolation: Option<usize>,
}

impl Sim {
    pub(super) fn script(&mut self, step: Step) {
        let Some(script) = self.script.as_ref() else { return };
        let victim = script.victim;
        let isolate = self.params.isolated_past_ttl;
        match step {
            Step::DoomedPut(i) => {
                // Written where it will reach the victim: the victim itself or any serving node.
                let serving: Vec<usize> = self.nodes.iter().filter(|n| n.serving()).map(|n| n.slot).collect();
                if let Some(&slot) = serving.choose(&mut self.work) {
                    let value = self.next_value(slot);
                    self.write(
                        slot,
                        vec![Op::Put {
                            key: format!("doomed/{i}"),
                            value,
                        }],
                    );
                }
            }
            Step::Away => {
                let node = &self.nodes[victim];
                if node.life != Life::Up || (node.persisted_last_sync.is_none() && self.now < 120_000) {
                    self.at(self.now + 1_000, Ev::Script(Step::Away));
                    return;
                }
                if isolate {
                    let group = (0..self.nodes.len()).map(|s| (s == victim) as u8).collect();
                    self.net.episodes.push(Episode {
                        start_ms: self.now,
                        end_ms: u64::MAX,
                        block: Block::Symmetric { group },
                    });
                    let script = self.script.as_mut().expect("script");
                    script.isolation = Some(self.net.episodes.len() - 1);
                    self.log(|| format!("n{victim} is isolated"));
                } else {
                    self.crash(victim);
                    self.log(|| format!("n{victim} goes down for longer than the TTL"));
                }
                let script = self.script.as_mut().expect("script");
                script.away_since = Some(self.now);
                for i in 0..DOOMED_KEYS {
                    let at = self.now + self.work.gen_range(5_000..30_000);
                    self.at(at, Ev::Script(Step::DoomedDelete(i)));
                }
            }
            Step::DoomedDelete(i) => {
                let serving: Vec<usize> = self
                    .nodes
                    .iter()
                    .filter(|n| n.serving() && n.slot != victim)
                    .map(|n| n.slot)
                    .collect();
                let Some(&slot) = serving.choose(&mut self.work) else {
                    self.at(self.now + 1_000, Ev::Script(Step::DoomedDelete(i)));
                    return;
                };
                self.write(
                    slot,
                    vec![Op::Delete {
                        key: format!("doomed/{i}"),
                    }],
                );
                let now = self.now;
                let script = self.script.as_mut().expect("script");
                script.deletes_left -= 1;
                if script.deletes_left == 0 {
                    let away = script.away_since.expect("away");
                    let back = away.max(now) + self.params.ttl_ms + 60_000 + self.work.gen_range(0..30_000);
                    self.at(back, Ev::Script(Step::Return));
                }
            }
            Step::Return => {
                let script = self.script.as_mut().expect("script");
                script.away_since = None;
                if let Some(i) = script.isolation {
                    self.net.episodes[i].end_ms = self.now;
                    self.stats.episodes.push(self.net.episodes[i].describe());
                } else {
                    self.start(victim);
                }
                self.log(|| format!("n{victim} is back"));
                self.at(self.now + 60_000, Ev::Heal);
            }
        }
    }
}
