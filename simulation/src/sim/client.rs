//! The client workload: random writes, concurrent bursts on one key, deletes racing writes, batches.

use cave::crdt::hlc::{beyond_drift, from_physical_ms};
use cave::crdt::{Entry, NodeId, Version};
use rand::seq::SliceRandom;
use rand::Rng;

use super::events::Ev;
use super::{sample, Sim};
use crate::node::{Cmd, Op};
use crate::scenario::Bug;
use crate::trace::Tag;

impl Sim {
    pub(super) fn next_value(&mut self, slot: usize) -> String {
        self.value_seq += 1;
        let mut v = format!("n{slot}.{}", self.value_seq);
        if self.params.big_values > 0.0 && self.work.gen_bool(self.params.big_values) {
            let len = self.work.gen_range(1_024..6_144);
            v.extend(std::iter::repeat_n('x', len));
        }
        v
    }

    fn pick_key(&mut self, hot: bool) -> String {
        let p = &self.params;
        if hot || (p.hot_keys > 0 && self.work.gen_bool(p.hot_ratio)) {
            format!("hot/{}", self.work.gen_range(0..p.hot_keys.max(1)))
        } else {
            format!("cold/{}", self.work.gen_range(0..p.cold_keys.max(1)))
        }
    }

    fn random_op(&mut self, slot: usize) -> Op {
        let key = self.pick_key(false);
        if self.work.gen_bool(self.params.delete_ratio) {
            Op::Delete { key }
        } else {
            let value = self.next_value(slot);
            // Drawn only where expiring keys are on, so that other scenarios' traces stay as they were.
            if self.params.expiring_ratio > 0.0 && self.work.gen_bool(self.params.expiring_ratio) {
                let ttl_ms = sample(&mut self.work, self.params.key_ttl_ms);
                return Op::PutTtl { key, value, ttl_ms };
            }
            Op::Put { key, value }
        }
    }

    /// A service's lease operation: register (grant), keep alive (renew, through any node), bind a key, end
    /// (revoke) or die (stop renewing: the lease runs out).
    fn lease_op(&mut self, slot: usize) -> Op {
        let p = &self.params;
        if self.leases_active.len() < p.leases && (self.leases_active.is_empty() || self.work.gen_bool(0.2)) {
            self.lease_seq += 1;
            self.leases_active.push(self.lease_seq);
            let ttl_ms = sample(&mut self.work, p.lease_ttl_ms);
            return Op::Grant {
                lease: self.lease_seq,
                ttl_ms,
            };
        }
        let Some(&lease) = self.leases_active.choose(&mut self.work) else {
            return Op::Renew { lease: 1 };
        };
        let r: f64 = self.work.gen();
        if r < 0.55 {
            Op::Renew { lease }
        } else if r < 0.9 {
            let key = format!("svc/{}", self.work.gen_range(0..40));
            let value = self.next_value(slot);
            Op::PutLeased { key, value, lease }
        } else {
            self.leases_active.retain(|&l| l != lease);
            if r < 0.95 {
                Op::Revoke { lease }
            } else {
                // The service dies: nobody renews its lease again.
                Op::Renew { lease }
            }
        }
    }

    /// Issue a client write on `slot`.
    pub(super) fn write(&mut self, slot: usize, ops: Vec<Op>) {
        self.trace.event(Tag::Client, self.now, slot);
        for op in &ops {
            match op {
                Op::Put { key, value } => {
                    self.trace.u64(1);
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(value.as_bytes()));
                }
                Op::Delete { key } => {
                    self.trace.u64(2);
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
                }
                Op::PutTtl { key, value, ttl_ms } => {
                    self.trace.u64(5);
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(value.as_bytes()));
                    self.trace.u64(*ttl_ms);
                }
                Op::Grant { lease, ttl_ms } => {
                    self.trace.u64(6);
                    self.trace.u64(*lease);
                    self.trace.u64(*ttl_ms);
                }
                Op::Renew { lease } => {
                    self.trace.u64(7);
                    self.trace.u64(*lease);
                }
                Op::Revoke { lease } => {
                    self.trace.u64(8);
                    self.trace.u64(*lease);
                }
                Op::PutLeased { key, value, lease } => {
                    self.trace.u64(9);
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(value.as_bytes()));
                    self.trace.u64(*lease);
                }
                Op::DocSet { key, field, value } => {
                    self.trace.u64(3);
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(field.as_bytes()));
                    self.trace.u64(*value as u64);
                }
                Op::DocIncrement { key, by } => {
                    self.trace.u64(4);
                    self.trace.u64(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
                    self.trace.u64(*by as u64);
                }
            }
        }
        self.submit(slot, Cmd::Write(ops));
    }

    pub(super) fn client(&mut self) {
        if !self.workload {
            return;
        }
        let serving: Vec<usize> = self.nodes.iter().filter(|n| n.serving()).map(|n| n.slot).collect();
        let serving: Vec<usize> = match &self.script {
            // The scripts' victim must not write keys that would make it hold recent entries only it has.
            Some(s) if s.away_since.is_some() => serving.into_iter().filter(|&n| n != s.victim).collect(),
            _ => serving,
        };
        if !serving.is_empty() {
            let p = self.params.clone();
            if p.import_ratio > 0.0 && self.work.gen_bool(p.import_ratio) {
                let slot = *serving.choose(&mut self.work).expect("not empty");
                self.import(slot);
                return self.next_client();
            }
            // Only a scenario with documents draws for them: the other scenarios' traces stay as they were.
            if p.doc_keys > 0 && self.work.gen_bool(p.doc_ratio) {
                let slot = *serving.choose(&mut self.work).expect("not empty");
                let key = format!("doc/{}", self.work.gen_range(0..p.doc_keys));
                self.value_seq += 1;
                let op = if self.work.gen_bool(0.5) {
                    let field = format!("f{}", self.work.gen_range(0..4));
                    Op::DocSet {
                        key,
                        field,
                        value: self.value_seq as i64,
                    }
                } else {
                    Op::DocIncrement {
                        key,
                        by: self.work.gen_range(1..10),
                    }
                };
                self.write(slot, vec![op]);
                return self.next_client();
            }
            // Only a scenario with locks draws for them.
            if p.locks > 0 && self.work.gen_bool(p.lock_ratio) {
                let slot = *serving.choose(&mut self.work).expect("not empty");
                self.lock_op(slot);
                return self.next_client();
            }
            // Only a scenario with leases draws for them.
            if p.leases > 0 && self.work.gen_bool(p.lease_ratio) {
                let slot = *serving.choose(&mut self.work).expect("not empty");
                let op = self.lease_op(slot);
                self.write(slot, vec![op]);
                return self.next_client();
            }
            let r: f64 = self.work.gen();
            if r < p.burst_ratio && serving.len() >= 2 {
                // Concurrent writers on one key, at the same instant.
                let key = self.pick_key(true);
                let k = self.work.gen_range(2..=serving.len().min(4));
                let writers: Vec<usize> = serving.choose_multiple(&mut self.work, k).copied().collect();
                for slot in writers {
                    let value = self.next_value(slot);
                    self.write(
                        slot,
                        vec![Op::Put {
                            key: key.clone(),
                            value,
                        }],
                    );
                }
            } else if r < p.burst_ratio + p.race_ratio && serving.len() >= 2 {
                // A delete racing a write.
                let hot = self.work.gen_bool(0.5);
                let key = self.pick_key(hot);
                let pair: Vec<usize> = serving.choose_multiple(&mut self.work, 2).copied().collect();
                self.write(pair[0], vec![Op::Delete { key: key.clone() }]);
                let value = self.next_value(pair[1]);
                self.write(pair[1], vec![Op::Put { key, value }]);
            } else if r < p.burst_ratio + p.race_ratio + p.batch_ratio {
                let slot = *serving.choose(&mut self.work).expect("not empty");
                let n = self.work.gen_range(2..=8);
                let ops = (0..n).map(|_| self.random_op(slot)).collect();
                self.write(slot, ops);
            } else {
                let slot = *serving.choose(&mut self.work).expect("not empty");
                let op = self.random_op(slot);
                self.write(slot, vec![op]);
            }
        }
        self.next_client();
    }

    fn next_client(&mut self) {
        let mean = 1_000.0 / self.params.ops_per_sec;
        let u: f64 = self.work.gen();
        let gap = (-(1.0 - u).ln() * mean) as u64;
        self.at(self.now + gap, Ev::Client);
    }

    /// `POST /api/v1/import` of one line on `slot`: an old export (up to 10 s behind the node's clock), or a
    /// version from the future (a year ahead, or the greatest there is), which the drift rule refuses.
    fn import(&mut self, slot: usize) {
        let local = self.local(slot);
        let key = self.pick_key(false);
        let value = self.next_value(slot);
        let hlc = match self.work.gen_range(0..4) {
            0 => u64::MAX,
            1 => from_physical_ms(local + 365 * 24 * 3_600_000),
            _ => from_physical_ms(local.saturating_sub(self.work.gen_range(0..10_000))) + self.work.gen_range(0..16),
        };
        let entry = Entry::value(key, value, Version::new(hlc, IMPORTED_FROM));
        self.trace.event(Tag::Client, self.now, slot);
        self.trace.entry(&entry);
        let checked = self.opts.bug != Some(Bug::ImportUnchecked);
        // A fenced node cannot judge the drift rule with its own clock: it refuses imports as it refuses
        // writes (the handler asks `Hlc::fenced`).
        let fenced = self.nodes[slot].run.as_ref().is_some_and(|r| r.hlc.fenced().is_some());
        if checked && (fenced || beyond_drift(hlc, local, self.cfg.max_clock_drift_ms).is_some()) {
            self.stats.imports_refused += 1;
            return;
        }
        self.submit(slot, Cmd::Import(entry));
    }
}

/// The node id of imported versions: an export from a node that is not in this cluster.
const IMPORTED_FROM: NodeId = NodeId(0x1e_0000_0000_0001);
