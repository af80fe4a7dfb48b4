//! The event loop: one thread, one seed, simulated time. It plays the role of `cave::cluster` (the tokio
//! driver) and of `cave::db` (the writer task) for every node, deterministically.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Instant;

use cave::crdt::{Entry, Hlc, LwwMap, ManualTime, NodeId, Version};
use cave::replication::{Core, CoreConfig, CoreEvent, Destination, Effects, Faults, Message, PeerRecord};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::check::{self, Violation};
use crate::history::{Excuse, History};
use crate::net::{Block, Episode, NetParams, Network};
use crate::node::{Clock, Cmd, Group, Life, Node, Op, Origin, Running};
use crate::scenario::{Bug, Params, Scenario};
use crate::trace::{Tag, Trace};

/// The driver ticks the core this often (`cave::cluster::TICK_INTERVAL`).
const TICK_MS: u64 = 100;
/// The driver writes the last sync time at most this often (`cave::cluster`).
const LAST_SYNC_WRITE_INTERVAL_MS: u64 = 60_000;
/// Bounds of the purge interval (a tenth of the TTL within these), as in `cave::cluster`.
const PURGE_INTERVAL_MS: (u64, u64) = (1_000, 3_600_000);
/// Most entries one group commit carries (`cave::db::writer`).
const MAX_GROUP_ENTRIES: usize = 8_192;
/// After healing, the cluster is left alone at least this long (longer than failure detection's dead time).
const MIN_QUIESCENCE_MS: u64 = 40_000;
/// ... and at most this long: not settled by then is a violation.
const MAX_QUIESCENCE_MS: u64 = 600_000;
/// A leaving node drains (waits until its data is held elsewhere) at most this long.
const DRAIN_TIMEOUT_MS: u64 = 60_000;
/// The driver's pause between the leave gossip and the end of the process.
const LEAVE_GRACE_MS: u64 = 50;
/// Keys the purge scripts delete while their victim is away.
const DOOMED_KEYS: usize = 24;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub scenario: Scenario,
    /// Initial cluster size (default: drawn from the scenario's range).
    pub nodes: Option<usize>,
    pub bug: Option<Bug>,
    /// Print every event to stderr.
    pub verbose: bool,
    /// Print to stderr everything that happens to this key (messages carrying it, commits, purges).
    pub watch: Option<String>,
}

impl Options {
    /// Seed `seed` with the scenario of the default rotation.
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            scenario: Scenario::for_seed(seed),
            nodes: None,
            bug: None,
            verbose: false,
            watch: None,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run -p cave-simulation --release -- --seed {} --scenario {}",
            self.seed, self.scenario
        );
        if let Some(n) = self.nodes {
            cmd += &format!(" --nodes {n}");
        }
        if let Some(bug) = self.bug {
            cmd += &format!(" --inject-bug {bug}");
        }
        cmd
    }
}

/// Counters of one run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub initial_nodes: usize,
    pub final_nodes: usize,
    /// Simulated time, ms.
    pub sim_ms: u64,
    /// Simulated node-time of running nodes (sum over nodes), ms.
    pub cluster_ms: u64,
    /// Time from healing to settled, ms.
    pub quiescence_ms: u64,
    pub wall_ms: u64,
    pub events: u64,
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub writes_acked: u64,
    pub writes_lost: u64,
    pub hlc_ties: u64,
    pub crashes: u64,
    pub joins: u64,
    pub leaves: u64,
    pub purged: u64,
    pub forgotten: u64,
    pub departed: u64,
    pub ae_rounds: u64,
    pub ae_timeouts: u64,
    pub clock_rejections: u64,
    pub episodes: Vec<String>,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub options: Options,
    pub trace_hash: u64,
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The failure report: seed, scenario, violations with short key histories, and how to replay.
    pub fn report(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "FAILED seed={} scenario={} nodes={}{} trace={:016x}\n",
            o.seed,
            o.scenario,
            self.stats.initial_nodes,
            o.bug.map(|b| format!(" bug={b}")).unwrap_or_default(),
            self.trace_hash
        );
        // Three of each kind, and how many more.
        let mut shown: Vec<&str> = Vec::new();
        for v in &self.violations {
            if shown.iter().filter(|k| **k == v.kind).count() < 3 {
                out += &v.to_string();
            }
            shown.push(v.kind);
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.violations {
            *counts.entry(v.kind).or_default() += 1;
        }
        for (kind, n) in counts.into_iter().filter(|(_, n)| *n > 3) {
            out += &format!("  ... and {} more: {kind}\n", n - 3);
        }
        if !self.stats.episodes.is_empty() {
            out += "  faults:\n";
            for e in &self.stats.episodes {
                out += &format!("    {e}\n");
            }
        }
        out += &format!("  replay: {}\n", o.replay_command());
        out
    }
}

#[derive(Debug)]
enum Step {
    /// Write a doomed key somewhere.
    DoomedPut(usize),
    /// Take the victim away (crash or isolate) once it has recorded a sync.
    Away,
    /// Delete a doomed key (not on the victim).
    DoomedDelete(usize),
    /// Bring the victim back.
    Return,
}

#[derive(Debug)]
enum Ev {
    Start(usize),
    Tick(usize, u64),
    PurgeTimer(usize, u64),
    Commit(usize, u64),
    Deliver {
        from: usize,
        from_id: NodeId,
        to: usize,
        msg: Message,
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

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
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

/// The purge / isolation script's state.
#[derive(Debug, Default)]
struct Script {
    victim: usize,
    away_since: Option<u64>,
    last_delete: u64,
    deletes_left: usize,
    isolation: Option<usize>,
}

struct Sim {
    opts: Options,
    params: Params,
    cfg: CoreConfig,
    now: u64,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    nodes: Vec<Node>,
    addrs: BTreeMap<String, usize>,
    net: Network,
    work: StdRng,
    disk: StdRng,
    cores: StdRng,
    history: History,
    trace: Trace,
    stats: Stats,
    workload: bool,
    fault_end: u64,
    heal_at: Option<u64>,
    done: Option<bool>,
    script: Option<Script>,
    value_seq: u64,
}

/// Run one seed to the end and check the outcome.
pub fn run(opts: &Options) -> Outcome {
    let started = Instant::now();
    let mut sim = Sim::new(opts.clone());
    while sim.done.is_none() {
        let Some(s) = sim.queue.pop() else { break };
        debug_assert!(s.at >= sim.now);
        sim.now = s.at;
        sim.stats.events += 1;
        sim.handle(s.ev);
    }
    let settled = sim.done == Some(true);
    let violations = check::check(
        &sim.nodes,
        &sim.history,
        settled,
        sim.now - sim.heal_at.unwrap_or(sim.now),
    );
    let mut stats = sim.stats;
    stats.sim_ms = sim.now;
    stats.quiescence_ms = sim.now - sim.heal_at.unwrap_or(sim.now);
    stats.final_nodes = sim.nodes.iter().filter(|n| n.life == Life::Up).count();
    stats.wall_ms = started.elapsed().as_millis() as u64;
    Outcome {
        options: opts.clone(),
        trace_hash: sim.trace.digest(),
        violations,
        stats,
    }
}

fn sample(rng: &mut StdRng, (lo, hi): (u64, u64)) -> u64 {
    rng.gen_range(lo..=hi)
}

fn up_to(rng: &mut StdRng, max: f64) -> f64 {
    if max > 0.0 {
        rng.gen_range(0.0..=max)
    } else {
        0.0
    }
}

impl Sim {
    fn new(opts: Options) -> Sim {
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
            faults: Faults {
                skip_last_bucket: opts.bug == Some(Bug::AeSkipLastBucket),
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
        let mut nodes = Vec::with_capacity(slots);
        let mut addrs = BTreeMap::new();
        for (slot, &id) in ids.iter().enumerate() {
            let clock = Clock {
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
            // Seeds: one to three other nodes (initial nodes only know earlier ones; node 0 knows node 1).
            let pool: Vec<usize> = if slot == 0 {
                vec![1]
            } else {
                (0..slot.min(initial)).collect()
            };
            let k = setup.gen_range(1..=3usize).min(pool.len());
            let seeds = pool
                .choose_multiple(&mut setup, k)
                .map(|s| format!("n{s}:2000"))
                .collect();
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

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, ev });
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.opts.verbose {
            eprintln!("{:>10.3} {}", self.now as f64 / 1e3, what());
        }
    }

    /// Set node `slot`'s clock to now and return its reading.
    fn local(&self, slot: usize) -> u64 {
        let node = &self.nodes[slot];
        let t = node.clock.read(self.now);
        node.time.set(t);
        t
    }

    fn handle(&mut self, ev: Ev) {
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
            Ev::PurgeTimer(slot, generation) => self.purge_timer(slot, generation),
            Ev::Commit(slot, generation) => self.commit(slot, generation),
            Ev::Deliver { from, from_id, to, msg } => self.deliver(from, from_id, to, msg),
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

    fn start(&mut self, slot: usize) {
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
        };
        let mut core = Core::new(self.cfg.clone(), record, node.seeds.clone(), core_seed, local);
        // What mDNS would find on the LAN: a few current members (so that a node whose configured seeds have
        // all left can still (re)join).
        core.add_seeds(discovered);
        if restore {
            core.restore_last_sync(node.persisted_last_sync, local);
        }
        let pull_first = core.pull_first();
        node.run = Some(Running {
            core,
            hlc,
            queue: VecDeque::new(),
            inflight: None,
            last_sync_written: 0,
        });
        node.life = Life::Up;
        let generation = node.generation;
        self.trace.event(Tag::Start, self.now, slot);
        self.trace.u64(pull_first as u64);
        self.log(|| format!("n{slot} starts (pull-first: {pull_first})"));
        // Tokio intervals fire at once: the first tick and the first purge happen at start.
        self.at(self.now, Ev::Tick(slot, generation));
        self.at(self.now, Ev::PurgeTimer(slot, generation));
    }

    fn crash(&mut self, slot: usize) {
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

    /// Other running nodes that completed a round within the TTL.
    fn fresh_nodes(&self, slot: usize) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.slot != slot)
            .filter_map(|n| n.run.as_ref().map(|r| r.core.authority(n.clock.read(self.now))))
            .filter(|&a| a == 3)
            .count()
    }

    fn is_current(&self, slot: usize, generation: u64) -> bool {
        let node = &self.nodes[slot];
        node.generation == generation && node.run.is_some()
    }

    fn tick(&mut self, slot: usize, generation: u64) {
        if !self.is_current(slot, generation) {
            return;
        }
        let local = self.local(slot);
        self.trace.event(Tag::Tick, self.now, slot);
        let node = &mut self.nodes[slot];
        let run = node.run.as_mut().expect("current");
        let fx = run.core.on_tick(local, &node.state);
        // `Driver::remember_sync`.
        if let Some(synced) = run.core.last_sync_ms() {
            let written = run.last_sync_written;
            let skip =
                synced <= written || synced.saturating_sub(written) < LAST_SYNC_WRITE_INTERVAL_MS && written != 0;
            if !skip {
                run.last_sync_written = synced;
                node.persisted_last_sync = Some(synced);
            }
        }
        self.carry_out(slot, fx);
        self.stats.cluster_ms += TICK_MS;
        self.at(self.now + TICK_MS, Ev::Tick(slot, generation));
    }

    fn purge_timer(&mut self, slot: usize, generation: u64) {
        if !self.is_current(slot, generation) {
            return;
        }
        let local = self.local(slot);
        let horizon = self.nodes[slot]
            .run
            .as_ref()
            .expect("current")
            .core
            .purge_horizon(local);
        self.submit(slot, Cmd::Purge(horizon));
        let interval = (self.params.ttl_ms / 10).clamp(PURGE_INTERVAL_MS.0, PURGE_INTERVAL_MS.1);
        self.at(self.now + interval, Ev::PurgeTimer(slot, generation));
    }

    /// `Driver::carry_out`: sends go to the network, persists and forgets to the writer.
    fn carry_out(&mut self, slot: usize, fx: Effects) {
        let Effects {
            sends,
            persist,
            forget,
            events,
        } = fx;
        let mut purge_after = None;
        if !forget.is_empty() {
            let local = self.local(slot);
            self.trace.event(Tag::Forget, self.now, slot);
            for e in &forget {
                self.trace.entry(e);
                if self.opts.watch.as_deref() == Some(e.key.as_str()) {
                    eprintln!(
                        "{:>10.3} [{}] n{slot} forgets {}",
                        self.now as f64 / 1e3,
                        e.key,
                        show(e)
                    );
                }
                self.history.excuse(e, Excuse::Forgotten, slot, self.now);
            }
            self.stats.forgotten += forget.len() as u64;
            let n = forget.len();
            self.log(|| format!("n{slot} forgets {n} entries (pull-first)"));
            let tombstones = forget.into_iter().map(|e| Entry::tombstone(e.key, e.version)).collect();
            self.submit(slot, Cmd::Merge(tombstones, Origin::Forget));
            purge_after = Some(
                self.nodes[slot]
                    .run
                    .as_ref()
                    .expect("running")
                    .core
                    .purge_horizon(local),
            );
        }
        for (to, msg) in sends {
            self.send(slot, to, msg);
        }
        if !persist.is_empty() {
            self.submit(slot, Cmd::Merge(persist, Origin::Replicated));
        }
        if let Some(horizon) = purge_after {
            self.submit(slot, Cmd::Purge(horizon));
        }
        for ev in events {
            match ev {
                CoreEvent::AntiEntropyDone { .. } => self.stats.ae_rounds += 1,
                CoreEvent::AntiEntropyTimedOut { .. } => self.stats.ae_timeouts += 1,
                CoreEvent::ClockDriftRejected { entries, .. } => self.stats.clock_rejections += entries as u64,
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
            self.at(at, Ev::Deliver { from, from_id, to, msg });
        }
    }

    fn deliver(&mut self, from: usize, from_id: NodeId, to: usize, msg: Message) {
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
                    .filter(|(k, _)| k == key)
                    .map(|(_, v)| format!("has {v}"))
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

    /// Queue a command for the node's writer.
    fn submit(&mut self, slot: usize, cmd: Cmd) {
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
                Cmd::Write(ops) => eval_write(
                    node.id,
                    &run.hlc,
                    &node.state,
                    &mut group,
                    ops,
                    &mut self.history,
                    slot,
                    now,
                ),
                Cmd::Merge(entries, origin) => {
                    let ties = eval_merge(&run.hlc, &node.state, &mut group, entries, origin, bug);
                    self.stats.hlc_ties += ties;
                }
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

    /// The group commit completed: apply, acknowledge, publish local changes to the core.
    fn commit(&mut self, slot: usize, generation: u64) {
        if !self.is_current(slot, generation) {
            return;
        }
        let replace = matches!(self.opts.bug, Some(Bug::LwwArrivalOrder | Bug::LwwTieArrivalOrder));
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
                node.state.merge(e);
            }
            self.stats.writes_acked += group.writes.len() as u64;
            // The driver broadcasts what this node wrote, except tombstones older than the purge horizon (the
            // same-version tombstones of a pull-first `forget`: local cleanup).
            let me = node.id;
            let horizon = run.core.purge_horizon(node.clock.read(self.now));
            let mine: Vec<Entry> = group
                .changes
                .into_iter()
                .filter(|e| e.version.node == me && !(e.deleted && e.version.hlc < horizon))
                .collect();
            if !mine.is_empty() {
                let fx = run.core.on_local_commit(&mine);
                self.carry_out(slot, fx);
            }
        }
        self.start_group(slot);
    }

    fn next_value(&mut self, slot: usize) -> String {
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
            Op::Put { key, value }
        }
    }

    /// Issue a client write on `slot`.
    fn write(&mut self, slot: usize, ops: Vec<Op>) {
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
            }
        }
        self.submit(slot, Cmd::Write(ops));
    }

    fn client(&mut self) {
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
        let mean = 1_000.0 / self.params.ops_per_sec;
        let u: f64 = self.work.gen();
        let gap = (-(1.0 - u).ln() * mean) as u64;
        self.at(self.now + gap, Ev::Client);
    }

    /// Whether `entry` (held by `slot`) is also held, or superseded, by another member, or is garbage.
    fn held_elsewhere(&self, slot: usize, entry: &Entry, horizon: u64) -> bool {
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
    fn leave(&mut self, slot: usize) {
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

    fn stop(&mut self, slot: usize) {
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

    fn heal(&mut self) {
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
    fn check(&mut self) {
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

    fn script(&mut self, step: Step) {
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
                script.last_delete = now;
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

/// `Group::write` of the writer: evaluate one atomic write against the group's overlay and the state.
#[allow(clippy::too_many_arguments)]
fn eval_write(
    me: NodeId,
    hlc: &Hlc,
    state: &LwwMap,
    group: &mut Group,
    ops: Vec<Op>,
    history: &mut History,
    slot: usize,
    now: u64,
) {
    let mut local: BTreeMap<String, Entry> = BTreeMap::new();
    for op in ops {
        let key = match &op {
            Op::Put { key, .. } | Op::Delete { key } => key.clone(),
        };
        let current = local
            .get(&key)
            .or_else(|| group.overlay.get(&key))
            .or_else(|| state.get(&key))
            .cloned();
        let floor = current.as_ref().map_or(0, |e| e.version.hlc);
        let entry = match op {
            Op::Put { key, value } => Entry::value(key, value, Version::new(hlc.tick_after(floor), me)),
            Op::Delete { key } => match current {
                // Deleting a deleted key changes nothing (and must not move the version).
                Some(e) if e.deleted => continue,
                _ => Entry::tombstone(key, Version::new(hlc.tick_after(floor), me)),
            },
        };
        group.writes.push(history.issue(slot, &entry, now));
        group.changes.push(entry.clone());
        local.insert(key, entry);
    }
    group.overlay.extend(local);
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
        let current = group.overlay.get(&entry.key).or_else(|| state.get(&entry.key));
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
            group.overlay.insert(entry.key.clone(), entry.clone());
            group.changes.push(entry);
        }
    }
    ties
}

/// An entry in a few words, for diagnostics.
fn show(e: &Entry) -> String {
    if e.deleted {
        format!("tombstone {}", e.version)
    } else {
        format!("{} {}", crate::history::short(&e.value), e.version)
    }
}
