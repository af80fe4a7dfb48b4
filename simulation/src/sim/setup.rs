//! Building the world from the seed: nodes, ids, clocks, seeds, the network, and the plan of the run.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use cave::crdt::hlc::from_physical_ms;
use cave::crdt::{LwwMap, ManualTime, NodeId, Version};
use cave::replication::{CoreConfig, Faults};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::events::Ev;
use super::script::{Script, Step};
use super::{sample, up_to, Options, Sim, Stats, DOOMED_KEYS};
use crate::history::History;
use crate::net::{Block, Episode, NetParams, Network};
use crate::node::{Clock, Life, Node, EPOCH_MS};
use crate::scenario::Bug;
use crate::trace::Trace;

impl Sim {
    pub(super) fn new(opts: Options) -> Sim {
        let params = opts.scenario.params();
        let mut master = StdRng::seed_from_u64(opts.seed);
        let mut setup = StdRng::seed_from_u64(master.gen());
        let net_rng = StdRng::seed_from_u64(master.gen());
        let work = StdRng::seed_from_u64(master.gen());
        let disk = StdRng::seed_from_u64(master.gen());
        let cores = StdRng::seed_from_u64(master.gen());

        let initial = opts
            .nodes
            .unwrap_or_else(|| setup.gen_range(params.nodes.0..=params.nodes.1))
            .max(2);
        let slots = initial + params.joins as usize;
        let cfg = CoreConfig {
            tombstone_ttl_ms: params.ttl_ms,
            max_message_bytes: params.max_message_bytes,
            // The operator's cluster size: the initial nodes (joins come later).
            lock_voters: initial,
            faults: Faults {
                skip_last_bucket: opts.bug == Some(Bug::AeSkipLastBucket),
                no_clock_fence: opts.bug == Some(Bug::NoClockFence),
                lock_say_so: opts.bug == Some(Bug::LockSaySo),
            },
            ..CoreConfig::default()
        };

        // Distinct random ids: tie-breaking order is not slot order.
        let mut ids = BTreeSet::new();
        while ids.len() < slots {
            ids.insert(setup.gen_range(1..u64::MAX));
        }
        let mut ids: Vec<u64> = ids.into_iter().collect();
        ids.shuffle(&mut setup);
        let outlier_sign = match params.outliers {
            Some(o) if o.either_way && setup.gen_bool(0.5) => -1,
            _ => 1,
        };
        let mut nodes = Vec::with_capacity(slots);
        let mut addrs = BTreeMap::new();
        for (slot, &id) in ids.iter().enumerate() {
            let mut clock = Clock {
                offset_ms: if params.skew_ms > 0 {
                    setup.gen_range(-params.skew_ms..=params.skew_ms)
                } else {
                    0
                },
                drift_ppm: if params.drift_ppm > 0 {
                    setup.gen_range(-params.drift_ppm..=params.drift_ppm)
                } else {
                    0
                },
            };
            // The clock scenarios: the last initial slots run off, one offset each.
            if let Some(o) = params.outliers {
                let first = initial.saturating_sub(o.offsets_ms.len());
                if (first..initial).contains(&slot) {
                    clock.offset_ms = outlier_sign * o.offsets_ms[slot - first];
                    clock.drift_ppm = outlier_sign * o.drift_ppm;
                }
            }
            // Seeds: one to three other nodes (initial nodes only know earlier ones; node 0 knows node 1).
            let pool: Vec<usize> = if slot == 0 {
                vec![1]
            } else {
                (0..slot.min(initial)).collect()
            };
            let k = setup.gen_range(1..=3usize).min(pool.len());
            let mut seeds: Vec<String> = pool
                .choose_multiple(&mut setup, k)
                .map(|s| format!("n{s}:2000"))
                .collect();
            // The clock scenarios are about clocks, not about a cluster that starts as groups unaware of each
            // other (a node that sees a minority it takes for the whole cluster cannot judge its clock until
            // the groups meet, and seeds are only contacted often while a node knows nobody): every node
            // joins through node 0, which starts first.
            if params.outliers.is_some() && slot > 0 {
                seeds = vec!["n0:2000".into()];
            }
            let addr = format!("n{slot}:2000");
            addrs.insert(addr.clone(), slot);
            nodes.push(Node {
                slot,
                id: NodeId(id),
                addr,
                clock,
                time: ManualTime::new(clock.read(0)),
                state: LwwMap::new(),
                persisted_last_sync: None,
                seeds,
                life: Life::Waiting,
                generation: 0,
                run: None,
                leaving: None,
                starts: 0,
            });
        }

        // The documents exist before the run: created on node 0 and replicated to every initial node.
        for key in 0..params.doc_keys {
            let created = Version::new(from_physical_ms(EPOCH_MS), nodes[0].id);
            let doc = super::docs::seed(&format!("doc/{key}"), created);
            for node in nodes.iter_mut().take(initial) {
                node.state.merge(doc.clone());
            }
        }

        let net_params = NetParams {
            loss: up_to(&mut setup, params.loss),
            dup: up_to(&mut setup, params.dup),
            jitter_ms: params.jitter_ms,
            tail: params.tail,
        };
        let net = Network::new(net_params, slots, params.latency_ms, net_rng);
        let fault_end = params.fault_phase_ms;
        let mut sim = Sim {
            opts,
            params,
            cfg,
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes,
            addrs,
            net,
            work,
            disk,
            cores,
            history: History::default(),
            trace: Trace::default(),
            stats: Stats {
                initial_nodes: initial,
                ..Stats::default()
            },
            workload: true,
            fault_end,
            heal_at: None,
            done: None,
            script: None,
            value_seq: 0,
            expiry_violations: Vec::new(),
            leases_active: Vec::new(),
            lease_seq: 0,
            locks: Default::default(),
        };
        sim.plan(&mut setup, initial, slots);
        sim
    }

    /// Lay out the run: starts, joins, leaves, crashes, partitions, scripts, the client, the heal.
    fn plan(&mut self, rng: &mut StdRng, initial: usize, slots: usize) {
        let p = self.params.clone();
        let end = self.fault_end;
        for slot in 0..initial {
            let at = rng.gen_range(0..1_000);
            // The clock scenarios start node 0 first, so that every node meets it (see the seeds).
            let at = match p.outliers {
                Some(_) if slot == 0 => 0,
                Some(_) => at.max(100),
                None => at,
            };
            self.at(at, Ev::Start(slot));
        }
        for slot in initial..slots {
            let at = rng.gen_range(end / 10..end * 7 / 10);
            self.at(at, Ev::Start(slot));
        }
        let scripted = p.offline_past_ttl || p.isolated_past_ttl;
        if scripted {
            let victim = rng.gen_range(0..initial);
            self.script = Some(Script {
                victim,
                deletes_left: DOOMED_KEYS,
                ..Script::default()
            });
            for i in 0..DOOMED_KEYS {
                let at = rng.gen_range(1_000..35_000);
                self.at(at, Ev::Script(Step::DoomedPut(i)));
            }
            self.at(45_000, Ev::Script(Step::Away));
        }
        let victim = self.script.as_ref().map(|s| s.victim);
        // Leaves: never below two remaining members, never the script's victim.
        let mut leavers: Vec<usize> = (0..initial).filter(|&s| Some(s) != victim).collect();
        leavers.shuffle(rng);
        let leaves = (p.leaves as usize).min(initial.saturating_sub(2));
        for &slot in leavers.iter().take(leaves) {
            let at = rng.gen_range(end / 5..end * 4 / 5);
            self.at(at, Ev::Leave(slot));
        }
        for _ in 0..p.crashes {
            let slot = rng.gen_range(0..slots);
            let at = rng.gen_range(end / 20..end * 17 / 20);
            let down = sample(rng, p.downtime_ms);
            self.at(at, Ev::Crash(slot));
            self.at((at + down).min(end - 1_000), Ev::Restart(slot));
        }
        let mut episodes = Vec::new();
        let window = |rng: &mut StdRng| {
            let len = sample(rng, p.partition_ms).min(end - 1_000);
            let start = rng.gen_range(0..end - len);
            (start, start + len)
        };
        for _ in 0..p.sym_partitions {
            let (start_ms, end_ms) = window(rng);
            let groups = rng.gen_range(2..=3u8);
            let mut group: Vec<u8> = (0..slots).map(|_| rng.gen_range(0..groups)).collect();
            // At least two groups are non-empty.
            let a = rng.gen_range(0..slots);
            let b = (a + rng.gen_range(1..slots)) % slots;
            group[a] = 0;
            group[b] = 1;
            episodes.push(Episode {
                start_ms,
                end_ms,
                block: Block::Symmetric { group },
            });
        }
        for _ in 0..p.oneway_partitions {
            let (start_ms, end_ms) = window(rng);
            let side: Vec<bool> = (0..slots).map(|_| rng.gen_bool(0.5)).collect();
            let a = rng.gen_range(0..slots);
            let b = (a + rng.gen_range(1..slots)) % slots;
            let mut from = side.clone();
            from[a] = true;
            from[b] = false;
            let to: Vec<bool> = from.iter().map(|f| !f).collect();
            episodes.push(Episode {
                start_ms,
                end_ms,
                block: Block::OneWay { from, to },
            });
        }
        for _ in 0..p.flapping_links {
            let (start_ms, end_ms) = window(rng);
            let a = rng.gen_range(0..slots);
            let b = (a + rng.gen_range(1..slots)) % slots;
            episodes.push(Episode {
                start_ms,
                end_ms,
                block: Block::Flapping {
                    a,
                    b,
                    period_ms: rng.gen_range(200..5_000),
                    both: rng.gen_bool(0.5),
                },
            });
        }
        self.stats.episodes = episodes.iter().map(Episode::describe).collect();
        self.net.episodes = episodes;
        self.at(2_000, Ev::Client);
        if !scripted {
            self.at(end, Ev::Heal);
        }
    }
}
