//! Real nodes on a simulated network: whole Cave nodes (tonic gRPC, axum HTTP, tokio tasks, the real
//! database writer over a [`cave::storage::MemoryStore`]) as turmoil hosts, under partitions, one-way
//! partitions, flapping links, crashes and clock skew, with a client that writes through the HTTP API and
//! checks convergence afterwards.
//!
//! The deterministic simulation beside this module ([`crate::sim`]) drives the replication core directly:
//! fast, bit-for-bit replayable, thousands of seeds. What it cannot see is everything between the core and
//! the wire: the driver's select loop, per-peer queues, HTTP/2 connections that a partition black-holes
//! (turmoil drops the segments, as a real partition does, so only keep-alives and request timeouts notice),
//! reconnects after repair, a crash that drops every task mid-commit. These scenarios exercise exactly that
//! code, unchanged: the node takes its listeners, its dialer and its clock from the outside
//! ([`cave::node::Node::from_store`], [`cave::node::Node::start_cluster_on`]).
//!
//! Each scenario: start N hosts (seeded with the first), wait until every node sees every other alive, run
//! concurrent writers (puts and deletes of a small hot key set, to every node) while a chaos task injects
//! the scenario's faults, heal everything, then poll every node's export until they agree, and check:
//! - every node holds the same entries (keys, versions, values, tombstones);
//! - each key holds a version at least as great as every acknowledged write to it, and its content is that
//!   of the write with that version: the greatest acknowledged one, or a write whose answer was lost;
//! - no key appears that nobody wrote, and no write refused (4xx, or 507 for a full disk) shows;
//! - every node sees every other node alive.
//!
//! Runs are seeded (turmoil's network randomness, the workload, the faults) and replay closely, but not
//! bit-for-bit: tokio's scheduler and hash maps inside the libraries are not seeded.

mod check;
pub mod host;
pub mod net;
mod workload;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use cave::crdt::NodeId;
use cave::secrets::MasterKey;
use cave::storage::MemoryStore;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use host::{HostSpec, GRPC_PORT};
pub use net::TransportFault;
pub use workload::Report;

/// Anti-entropy interval of the simulated nodes in most scenarios (production default: 10 s).
pub const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(1);
/// Simulated time a run may take before it is declared failed.
const SIMULATION_LIMIT: Duration = Duration::from_secs(600);

/// A fault pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One node cut off from the other two, both sides taking writes, then healed.
    Partition,
    /// Links that carry traffic in one direction only.
    OneWay,
    /// Nodes crashed during writes (losing every task and connection) and restarted on their disks.
    CrashRestart,
    /// Clocks skewed by up to +-3 s while random links fail and recover every half second.
    SkewFlapping,
    /// Five nodes split into random halves every second.
    Splits,
    /// A fourth node joins a loaded three-node cluster during writes (catching up over anti-entropy), and is
    /// cut off from one of them for a while.
    Join,
    /// One of four nodes shuts down gracefully in the middle of the writes and never comes back: what it
    /// acknowledged must survive on the others.
    Leave,
    /// Two of three nodes' disks fill up (every commit fails) for a while, one of them crashes and restarts
    /// while its disk is still full: writes to them are refused with 507 and must never appear, merges from
    /// peers fail until there is room, and what was acknowledged survives.
    DiskFull,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 8] = [
        Scenario::Partition,
        Scenario::OneWay,
        Scenario::CrashRestart,
        Scenario::SkewFlapping,
        Scenario::Splits,
        Scenario::Join,
        Scenario::Leave,
        Scenario::DiskFull,
    ];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Partition => "partition",
            Scenario::OneWay => "one-way",
            Scenario::CrashRestart => "crash-restart",
            Scenario::SkewFlapping => "skew-flapping",
            Scenario::Splits => "splits",
            Scenario::Join => "join",
            Scenario::Leave => "leave",
            Scenario::DiskFull => "disk-full",
        }
    }

    /// The scenario called `name`.
    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Cluster size (at the end).
    pub fn nodes(self) -> usize {
        match self {
            Scenario::SkewFlapping | Scenario::Join | Scenario::Leave => 4,
            Scenario::Splits => 5,
            _ => 3,
        }
    }

    /// Nodes started at the beginning; the others join during the run.
    pub fn initial_nodes(self) -> usize {
        match self {
            Scenario::Join => 3,
            n => n.nodes(),
        }
    }

    /// Mean anti-entropy interval: [`ANTI_ENTROPY_INTERVAL`], except where the scenario needs production's
    /// (so that a round does not happen to repair what the scenario wants the drain to hand over).
    fn anti_entropy_interval(self) -> Duration {
        match self {
            Scenario::Leave => cave::config::DEFAULT_ANTI_ENTROPY_INTERVAL,
            _ => ANTI_ENTROPY_INTERVAL,
        }
    }

    /// Largest clock skew (either direction), in ms.
    fn max_skew_ms(self) -> i64 {
        match self {
            Scenario::SkewFlapping => 3_000,
            _ => 0,
        }
    }
}

/// A request from the client to the simulation driver: turmoil starts, crashes and restarts hosts from
/// outside.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    Start(String),
    /// A graceful shutdown (the node leaves the cluster).
    Stop(String),
    Crash(String),
    Restart(String),
    /// The host's disk is full (`true`: every commit fails) or has room again (`false`).
    Fill(String, bool),
}

/// Host name of node `i`.
pub fn host_name(i: usize) -> String {
    format!("node{i}")
}

/// Run `scenario` from `seed`, on production's transport or with `fault`: `Ok` with figures if the cluster
/// converged and the checks held, otherwise a description of what went wrong (with the seed and scenario,
/// to replay it).
pub fn run(scenario: Scenario, seed: u64, fault: Option<TransportFault>) -> Result<Report, String> {
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(SIMULATION_LIMIT)
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .tcp_capacity(4096)
        .build();
    let key = MasterKey::generate();
    let names: Vec<String> = (0..scenario.nodes()).map(host_name).collect();
    let mut specs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let skew = scenario.max_skew_ms();
        specs.push(Rc::new(HostSpec {
            name: name.clone(),
            id: NodeId(rng.gen()),
            disk: MemoryStore::new(),
            key: key.clone(),
            // Every node is given one seed only (node1 for everyone, node0 for node1 itself): the others are
            // learned from gossip.
            seeds: match i {
                1 => vec![format!("{}:{GRPC_PORT}", names[0])],
                _ if names.len() > 1 => vec![format!("{}:{GRPC_PORT}", names[1])],
                _ => Vec::new(),
            },
            skew_ms: if skew == 0 { 0 } else { rng.gen_range(-skew..=skew) },
            anti_entropy_interval: scenario.anti_entropy_interval(),
            fault,
            stop: Arc::new(Notify::new()),
        }));
    }
    let start = |sim: &mut turmoil::Sim, spec: &Rc<HostSpec>| {
        let spec = spec.clone();
        sim.host(spec.name.clone().as_str(), move || host::run(spec.clone()));
    };
    for spec in &specs[..scenario.initial_nodes()] {
        start(&mut sim, spec);
    }
    let controls: Rc<RefCell<Vec<Control>>> = Rc::default();
    let report: Rc<RefCell<Option<Report>>> = Rc::default();
    let client = workload::client(scenario, seed, names.clone(), controls.clone(), report.clone());
    sim.client("client", client);
    let fail = |what: String| format!("seed {seed} scenario {}: {what}", scenario.name());
    loop {
        let done = sim.step().map_err(|e| fail(e.to_string()))?;
        for control in controls.borrow_mut().drain(..) {
            match control {
                Control::Start(host) => match specs.iter().find(|s| s.name == host) {
                    Some(spec) => start(&mut sim, spec),
                    None => return Err(fail(format!("no host {host} to start"))),
                },
                Control::Stop(host) => match specs.iter().find(|s| s.name == host) {
                    Some(spec) => spec.stop.notify_one(),
                    None => return Err(fail(format!("no host {host} to stop"))),
                },
                Control::Fill(host, full) => match specs.iter().find(|s| s.name == host) {
                    Some(spec) => spec.disk.set_full(full),
                    None => return Err(fail(format!("no host {host} to fill"))),
                },
                Control::Crash(host) => sim.crash(host.as_str()),
                Control::Restart(host) => sim.bounce(host.as_str()),
            }
        }
        if done {
            break;
        }
    }
    let mut report = report
        .take()
        .ok_or_else(|| fail("the client ended without a report".into()))?;
    report.sim_secs = sim.elapsed().as_secs_f64();
    report.wall_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}
