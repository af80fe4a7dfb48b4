//! The event loop: one thread, one seed, simulated time. It plays the role of `cave::cluster` (the tokio
//! driver) and of `cave::db` (the writer task) for every node, deterministically. The protocol's rules are
//! not copied here: what to broadcast, when to purge, what to forget and when to record the last sync all
//! come out of the real `Core` as effects, which this loop carries out as the driver does.

mod client;
mod docs;
mod driver;
mod events;
mod expiry;
mod lifecycle;
mod locks;
mod quiescence;
mod script;
mod setup;
mod writer;

use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use cave::crdt::Entry;
use cave::replication::CoreConfig;
use rand::rngs::StdRng;
use rand::Rng;

use crate::check::{self, Violation};
use crate::history::History;
use crate::net::Network;
use crate::node::{Life, Node};
use crate::scenario::{Bug, Params, Scenario};
use crate::trace::Trace;

use events::Scheduled;
use script::Script;

use cave::db::MAX_GROUP_ENTRIES;
use cave::replication::TICK_INTERVAL_MS as TICK_MS;
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

    /// Seed `seed` of `scenario`, with `bug` injected if given.
    pub fn of(seed: u64, scenario: Scenario, bug: Option<Bug>) -> Options {
        Options {
            scenario,
            bug,
            ..Options::new(seed)
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
    /// Client writes refused by a fenced clock (answered with an error, never acknowledged).
    pub writes_refused: u64,
    /// Client imports refused by the drift rule (a version from the future).
    pub imports_refused: u64,
    pub writes_lost: u64,
    /// Probes that found a node reading an expired key as live (each is a violation; `expiry.rs`).
    pub expired_served: u64,
    /// Expired values a node's sweep turned into tombstones (submitted to its writer).
    pub expired_swept: u64,
    /// Of those, values bound to a lease that ended.
    pub lease_swept: u64,
    /// Lock decisions: granted (or extended), held by another, released, not held, unavailable.
    pub lock_decisions: [u64; 5],
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
    /// Keys anti-entropy found at one version with different contents.
    pub content_conflicts: u64,
    /// Times a node's clock was fenced (and reminders while it stayed fenced).
    pub fences: u64,
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
    /// What the expiry probe found (`expiry.rs`), reported with the checker's violations.
    expiry_violations: Vec<crate::check::Violation>,
    /// The leases the workload's services still renew (the others were revoked, or their service died).
    leases_active: Vec<u64>,
    lease_seq: u64,
    /// What the lock workload asked and the cores decided (`locks.rs`).
    locks: locks::LockLog,
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
    let mut violations = check::check(
        &sim.nodes,
        &sim.history,
        settled,
        sim.now - sim.heal_at.unwrap_or(sim.now),
        sim.params.real_time_order.then_some(sim.cfg.max_clock_drift_ms),
    );
    violations.append(&mut sim.expiry_violations);
    if settled {
        violations.extend(sim.lease_survivors());
    }
    violations.extend(sim.lock_violations(sim.cfg.max_clock_drift_ms));
    let mut stats = sim.stats;
    stats.lock_decisions = sim.locks.counts;
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
}

/// An entry in a few words, for diagnostics.
fn show(e: &Entry) -> String {
    if e.deleted {
        format!("tombstone {}", e.version)
    } else {
        format!("{} {}", crate::history::short(&e.value), e.version)
    }
}
