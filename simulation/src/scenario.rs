//! Named scenarios (what the network, the clocks, the nodes and the clients do) and the injectable bugs.

use std::fmt;
use std::str::FromStr;

/// A named set of fault and workload parameters. Every scenario ends the same way: faults heal, clients
/// stop, crashed nodes restart, and the cluster is left alone until it converges (or a limit passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// A small healthy cluster: latency and clock skew only. The baseline.
    Calm,
    /// Heavy message loss, duplication and reordering; small message size limit (deltas and repairs split).
    Lossy,
    /// Repeated symmetric partitions into two or three groups.
    Partition,
    /// One-way partitions: one group hears the other but not the reverse.
    OneWay,
    /// Links that go up and down every few hundred milliseconds to seconds.
    Flapping,
    /// Nodes crash (losing in-flight, unacknowledged commits) and restart; slow commits.
    Crash,
    /// Maximal clock skew (±10 s) and strong drift.
    Skew,
    /// Few keys, many writers: simultaneous writes to one key, deletes racing writes, batches.
    Contention,
    /// Perfectly synchronised clocks and simultaneous writes: equal HLC timestamps, node id breaks the tie.
    Ties,
    /// Short tombstone TTL; a node is down longer than the TTL while keys it holds are deleted and purged.
    Purge,
    /// Membership changes: nodes join and leave (gracefully) while clients write.
    Churn,
    /// 30 to 50 nodes with moderate faults.
    Large,
    /// Everything at once, moderately.
    Chaos,
    /// A node stays *up* but partitioned away for longer than the tombstone TTL while keys it holds are
    /// deleted and purged. Not in the default rotation: see `docs/simulation.md` (known limitation).
    IsolatedPastTtl,
    /// One node's clock 30 s ahead of the others' (which agree): it must be fenced.
    ClockFast,
    /// One node's clock 30 s behind.
    ClockSlow,
    /// One node's clock 5 s off, either way.
    ClockNear,
    /// One node's clock drifting away (2 %, either way) from a correct start.
    ClockDrift,
    /// Three nodes, two of them 30 s ahead alike: they are the majority, the correct one is fenced.
    ClockPair,
    /// Three nodes, two of them ahead by different amounts (5 s and 30 s): no majority agrees on a time,
    /// nobody is fenced, and writes are ordered by HLC only (the guarantee without a majority).
    ClockSplit,
    /// Document values: clients patch fields of a few shared documents and increment their counters under
    /// partitions, crashes, loss and reordering. Outside the rotation (its own test,
    /// `simulation/tests/documents.rs`), so that the rotation's pinned traces stay as they are.
    Documents,
    /// Expiring keys: clients write values with TTLs under partitions and loss, one node's clock 30 s
    /// behind (fenced); every node must read an expired key as absent within `max_clock_drift` of its
    /// expiry. Outside the rotation (`simulation/tests/expiry.rs`).
    Expiry,
    /// Leases: services grant, renew (through any node), bind keys to, revoke or abandon leases under
    /// partitions, crashes and one clock 30 s behind; no node reads a key bound to an ended lease, and none
    /// survives in the settled state. Outside the rotation (`simulation/tests/leases.rs`).
    Leases,
    /// Locks: contenders on a few locks acquire, extend and release them through any node under partitions,
    /// crashes, loss and one clock 30 s behind; no two holds of a lock overlap and fences grow with grants.
    /// Outside the rotation (`simulation/tests/locks.rs`).
    Locks,
}

impl Scenario {
    /// The scenarios a seed range rotates through (seed `s` runs `ROTATION[s % len]`): CI covers them all.
    pub const ROTATION: [Scenario; 13] = [
        Scenario::Calm,
        Scenario::Lossy,
        Scenario::Partition,
        Scenario::OneWay,
        Scenario::Flapping,
        Scenario::Crash,
        Scenario::Skew,
        Scenario::Contention,
        Scenario::Ties,
        Scenario::Purge,
        Scenario::Churn,
        Scenario::Large,
        Scenario::Chaos,
    ];

    /// The clock scenarios: outside the rotation (they need a majority of agreeing clocks, which the
    /// rotation's random skews do not give); `simulation/tests/clock.rs` runs them.
    pub const CLOCKS: [Scenario; 6] = [
        Scenario::ClockFast,
        Scenario::ClockSlow,
        Scenario::ClockNear,
        Scenario::ClockDrift,
        Scenario::ClockPair,
        Scenario::ClockSplit,
    ];

    /// Every scenario, including those outside the rotation.
    pub const ALL: [Scenario; 24] = [
        Scenario::Calm,
        Scenario::Lossy,
        Scenario::Partition,
        Scenario::OneWay,
        Scenario::Flapping,
        Scenario::Crash,
        Scenario::Skew,
        Scenario::Contention,
        Scenario::Ties,
        Scenario::Purge,
        Scenario::Churn,
        Scenario::Large,
        Scenario::Chaos,
        Scenario::IsolatedPastTtl,
        Scenario::ClockFast,
        Scenario::ClockSlow,
        Scenario::ClockNear,
        Scenario::ClockDrift,
        Scenario::ClockPair,
        Scenario::ClockSplit,
        Scenario::Documents,
        Scenario::Expiry,
        Scenario::Leases,
        Scenario::Locks,
    ];

    /// The scenario seed `seed` runs when none is named.
    pub fn for_seed(seed: u64) -> Scenario {
        Scenario::ROTATION[(seed % Scenario::ROTATION.len() as u64) as usize]
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Calm => "calm",
            Scenario::Lossy => "lossy",
            Scenario::Partition => "partition",
            Scenario::OneWay => "one-way",
            Scenario::Flapping => "flapping",
            Scenario::Crash => "crash",
            Scenario::Skew => "skew",
            Scenario::Contention => "contention",
            Scenario::Ties => "ties",
            Scenario::Purge => "purge",
            Scenario::Churn => "churn",
            Scenario::Large => "large",
            Scenario::Chaos => "chaos",
            Scenario::IsolatedPastTtl => "isolated-past-ttl",
            Scenario::ClockFast => "clock-fast",
            Scenario::ClockSlow => "clock-slow",
            Scenario::ClockNear => "clock-near",
            Scenario::ClockDrift => "clock-drift",
            Scenario::ClockPair => "clock-pair",
            Scenario::ClockSplit => "clock-split",
            Scenario::Documents => "documents",
            Scenario::Expiry => "expiry",
            Scenario::Leases => "leases",
            Scenario::Locks => "locks",
        }
    }

    /// One line about what the scenario does.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Calm => "a small healthy cluster: latency and mild clock skew only",
            Scenario::Lossy => "heavy loss, duplication and reordering; small messages, big values",
            Scenario::Partition => "repeated symmetric partitions into two or three groups",
            Scenario::OneWay => "one-way partitions: one group hears the other, not the reverse",
            Scenario::Flapping => "links going down and up every 0.2 to 5 s",
            Scenario::Crash => "crashes (losing unacknowledged commits) and restarts; slow commits",
            Scenario::Skew => "clocks up to 10 s off, drift up to 2 %",
            Scenario::Contention => "few keys, simultaneous writers, deletes racing writes, batches",
            Scenario::Ties => "perfect clocks and simultaneous writes: equal HLC timestamps",
            Scenario::Purge => "TTL 2 min; a node down past the TTL while its keys are deleted and purged",
            Scenario::Churn => "nodes join and leave while clients write",
            Scenario::Large => "30 to 50 nodes, moderate faults",
            Scenario::Chaos => "everything at once, moderately",
            Scenario::IsolatedPastTtl => "a node up but partitioned away past the TTL while its keys are deleted",
            Scenario::ClockFast => "one clock 30 s ahead of the others: it is fenced",
            Scenario::ClockSlow => "one clock 30 s behind the others: it is fenced",
            Scenario::ClockNear => "one clock 5 s off, either way: it is fenced",
            Scenario::ClockDrift => "one clock drifting away at 2 %: fenced once it is out of bounds",
            Scenario::ClockPair => "three nodes, two 30 s ahead alike: the correct third is the outlier",
            Scenario::ClockSplit => "three nodes, two ahead by 5 s and 30 s: no majority, nobody fenced",
            Scenario::Documents => "field patches and counter increments on shared documents, with faults",
            Scenario::Expiry => "values with TTLs; partitions, loss, one clock 30 s behind: all expire on time",
            Scenario::Leases => {
                "leases granted, renewed anywhere, revoked, abandoned; keys bound to them end with them"
            }
            Scenario::Locks => "contended locks under partitions and crashes: one holder at a time, fences grow",
        }
    }

    /// The parameters of this scenario.
    pub fn params(self) -> Params {
        let base = Params::default();
        match self {
            Scenario::Calm => Params {
                nodes: (2, 5),
                loss: 0.0,
                dup: 0.0,
                ..base
            },
            Scenario::Lossy => Params {
                nodes: (3, 7),
                loss: 0.3,
                dup: 0.2,
                jitter_ms: 40,
                tail: 0.05,
                max_message_bytes: 2_048,
                big_values: 0.05,
                ..base
            },
            Scenario::Partition => Params {
                nodes: (3, 9),
                sym_partitions: 5,
                partition_ms: (3_000, 30_000),
                ..base
            },
            Scenario::OneWay => Params {
                nodes: (3, 9),
                oneway_partitions: 5,
                partition_ms: (3_000, 30_000),
                ..base
            },
            Scenario::Flapping => Params {
                nodes: (3, 9),
                flapping_links: 8,
                partition_ms: (10_000, 60_000),
                ..base
            },
            Scenario::Crash => Params {
                nodes: (2, 7),
                crashes: 6,
                downtime_ms: (500, 40_000),
                commit_ms: (2, 60),
                ..base
            },
            Scenario::Skew => Params {
                nodes: (3, 8),
                skew_ms: 10_000,
                drift_ppm: 20_000,
                loss: 0.05,
                ..base
            },
            Scenario::Contention => Params {
                nodes: (2, 8),
                hot_keys: 3,
                cold_keys: 12,
                hot_ratio: 0.7,
                burst_ratio: 0.25,
                race_ratio: 0.2,
                batch_ratio: 0.2,
                delete_ratio: 0.3,
                ops_per_sec: 30.0,
                loss: 0.1,
                ..base
            },
            Scenario::Ties => Params {
                nodes: (2, 6),
                skew_ms: 0,
                drift_ppm: 0,
                hot_keys: 4,
                cold_keys: 16,
                hot_ratio: 0.6,
                burst_ratio: 0.5,
                race_ratio: 0.2,
                loss: 0.15,
                sym_partitions: 2,
                partition_ms: (2_000, 10_000),
                ..base
            },
            Scenario::Purge => Params {
                nodes: (2, 6),
                ttl_ms: 120_000,
                offline_past_ttl: true,
                crashes: 2,
                downtime_ms: (500, 20_000),
                sym_partitions: 2,
                partition_ms: (2_000, 15_000),
                delete_ratio: 0.4,
                ..base
            },
            Scenario::Churn => Params {
                nodes: (3, 7),
                joins: 3,
                leaves: 2,
                crashes: 1,
                ..base
            },
            Scenario::Large => Params {
                nodes: (30, 50),
                ops_per_sec: 25.0,
                loss: 0.02,
                sym_partitions: 1,
                oneway_partitions: 1,
                crashes: 3,
                joins: 1,
                leaves: 1,
                partition_ms: (3_000, 20_000),
                cold_keys: 3_000,
                ..base
            },
            Scenario::Chaos => Params {
                nodes: (3, 12),
                loss: 0.15,
                dup: 0.1,
                jitter_ms: 30,
                tail: 0.03,
                sym_partitions: 2,
                oneway_partitions: 2,
                flapping_links: 3,
                partition_ms: (2_000, 20_000),
                crashes: 3,
                downtime_ms: (500, 20_000),
                commit_ms: (1, 40),
                joins: 1,
                leaves: 1,
                skew_ms: 10_000,
                drift_ppm: 2_000,
                burst_ratio: 0.1,
                race_ratio: 0.1,
                batch_ratio: 0.15,
                max_message_bytes: 4_096,
                big_values: 0.02,
                ttl_ms: 600_000,
                ..base
            },
            Scenario::IsolatedPastTtl => Params {
                nodes: (3, 6),
                ttl_ms: 120_000,
                isolated_past_ttl: true,
                delete_ratio: 0.4,
                ..base
            },
            Scenario::ClockFast => clocks(base, (3, 5), &[30_000], 0, false),
            Scenario::ClockSlow => clocks(base, (3, 5), &[-30_000], 0, false),
            Scenario::ClockNear => clocks(base, (3, 5), &[5_000], 0, true),
            Scenario::ClockDrift => clocks(base, (3, 5), &[0], 20_000, true),
            Scenario::ClockPair => clocks(base, (3, 3), &[30_000, 30_000], 0, false),
            Scenario::ClockSplit => Params {
                real_time_order: false,
                ..clocks(base, (3, 3), &[5_000, 30_000], 0, false)
            },
            Scenario::Documents => Params {
                nodes: (2, 6),
                loss: 0.15,
                dup: 0.1,
                jitter_ms: 40,
                sym_partitions: 3,
                oneway_partitions: 1,
                partition_ms: (2_000, 20_000),
                crashes: 3,
                downtime_ms: (500, 20_000),
                commit_ms: (1, 30),
                doc_keys: 3,
                doc_ratio: 0.6,
                ops_per_sec: 8.0,
                fault_phase_ms: 60_000,
                ..base
            },
            Scenario::Expiry => Params {
                sym_partitions: 3,
                partition_ms: (3_000, 15_000),
                loss: 0.05,
                import_ratio: 0.0,
                burst_ratio: 0.05,
                expiring_ratio: 0.6,
                key_ttl_ms: (5_000, 20_000),
                fault_phase_ms: 60_000,
                // Partitions can leave no majority to order by real time; what is checked here is expiry.
                real_time_order: false,
                ..clocks(base, (3, 5), &[-30_000], 0, false)
            },
            Scenario::Leases => Params {
                leases: 6,
                lease_ratio: 0.5,
                lease_ttl_ms: (2_000, 10_000),
                ..services(base)
            },
            Scenario::Locks => Params {
                locks: 3,
                lock_ratio: 0.6,
                lock_ttl_ms: (1_000, 6_000),
                ..services(base)
            },
        }
    }
}

/// The faults the service scenarios (leases, locks) run under: partitions, two crashes, some loss, one clock
/// 30 s behind. Partitions can leave no majority to order by real time; what they check is their own rule.
fn services(base: Params) -> Params {
    Params {
        sym_partitions: 3,
        partition_ms: (3_000, 15_000),
        crashes: 2,
        downtime_ms: (500, 10_000),
        loss: 0.05,
        import_ratio: 0.0,
        burst_ratio: 0.05,
        fault_phase_ms: 60_000,
        real_time_order: false,
        ..clocks(base, (3, 5), &[-30_000], 0, false)
    }
}

/// A clock scenario: the other nodes' clocks agree within 20 ms and do not drift; the outliers are off by
/// `offsets_ms` (negated for all of them, on half the seeds, when `either_way`) and drift by `drift_ppm`.
/// Hot keys and bursts make writes of one key on different nodes close in time, which is where a bad
/// clock misorders them; the real-time order rule of the checker is on.
fn clocks(base: Params, nodes: (usize, usize), offsets_ms: &'static [i64], drift_ppm: i64, either_way: bool) -> Params {
    Params {
        nodes,
        skew_ms: 20,
        drift_ppm: 0,
        outliers: Some(Outliers {
            offsets_ms,
            drift_ppm,
            either_way,
        }),
        hot_keys: 4,
        hot_ratio: 0.6,
        burst_ratio: 0.15,
        ops_per_sec: 20.0,
        import_ratio: 0.05,
        real_time_order: true,
        ..base
    }
}

/// Nodes whose clocks are off on purpose (the clock scenarios): the last initial slots.
#[derive(Debug, Clone, Copy)]
pub struct Outliers {
    /// The outliers' clock offsets from true time, ms (one per outlier).
    pub offsets_ms: &'static [i64],
    /// Their drift, parts per million.
    pub drift_ppm: i64,
    /// Whether a seed may flip the sign of all the offsets and the drift.
    pub either_way: bool,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Scenario, String> {
        Scenario::ALL.into_iter().find(|sc| sc.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scenario {s:?}; one of: {}", names.join(", "))
        })
    }
}

/// What a scenario does. Probabilities are maxima: each seed draws its own value in `[0, max]`.
#[derive(Debug, Clone)]
pub struct Params {
    /// Initial cluster size range (inclusive); `--nodes` overrides it.
    pub nodes: (usize, usize),
    /// Length of the phase with faults and client traffic, in ms (a script may extend it).
    pub fault_phase_ms: u64,
    /// Largest clock offset from true time, in ms (each node draws one in `[-max, max]`).
    pub skew_ms: i64,
    /// Largest clock drift, in parts per million.
    pub drift_ppm: i64,
    /// Range of per-link base latency, ms.
    pub latency_ms: (u64, u64),
    /// Mean of the exponential jitter added to each message, ms (this is what reorders messages).
    pub jitter_ms: u64,
    /// Probability that a message is delayed by a long tail (100 ms to 2 s).
    pub tail: f64,
    /// Message loss probability (max).
    pub loss: f64,
    /// Message duplication probability (max).
    pub dup: f64,
    /// Number of symmetric partition episodes.
    pub sym_partitions: u32,
    /// Number of one-way partition episodes.
    pub oneway_partitions: u32,
    /// Number of flapping-link episodes.
    pub flapping_links: u32,
    /// Range of a partition episode's length, ms.
    pub partition_ms: (u64, u64),
    /// Number of crashes (each followed by a restart before the faults heal).
    pub crashes: u32,
    /// Range of a crashed node's downtime, ms.
    pub downtime_ms: (u64, u64),
    /// Range of the time a group commit takes, ms (a crash loses the group in flight).
    pub commit_ms: (u64, u64),
    /// Nodes joining during the run.
    pub joins: u32,
    /// Nodes leaving (gracefully) during the run.
    pub leaves: u32,
    /// Client operations per second, cluster-wide.
    pub ops_per_sec: f64,
    /// Number of hot keys.
    pub hot_keys: usize,
    /// Number of cold keys.
    pub cold_keys: usize,
    /// Share of operations on hot keys.
    pub hot_ratio: f64,
    /// Share of single operations that are deletes.
    pub delete_ratio: f64,
    /// Share of operations that are batches (2 to 8 operations applied atomically).
    pub batch_ratio: f64,
    /// Share of operations that are bursts: several nodes write one key at the same instant.
    pub burst_ratio: f64,
    /// Share of operations that are races: a delete and a write of one key at the same instant.
    pub race_ratio: f64,
    /// Share of values that are big (1 to 6 KiB).
    pub big_values: f64,
    /// Tombstone TTL, ms (the core's purge horizon and pull-first rule).
    pub ttl_ms: u64,
    /// Most payload bytes per message (the core splits bigger deltas and repairs).
    pub max_message_bytes: usize,
    /// Script: one node goes down for longer than the TTL while keys it holds are deleted (and purged).
    pub offline_past_ttl: bool,
    /// Script: one node is partitioned away (but up) for longer than the TTL while keys it holds are deleted.
    pub isolated_past_ttl: bool,
    /// Clocks off on purpose (see [`Outliers`]).
    pub outliers: Option<Outliers>,
    /// Share of client operations that are imports of one line (an old export, or a version from the future
    /// that the drift rule must refuse).
    pub import_ratio: f64,
    /// Check that no acknowledged write lost to one acknowledged more than `max_clock_drift` earlier in
    /// real time (holds when a majority of clocks agrees; see `check`).
    pub real_time_order: bool,
    /// Documents every initial node holds from the start (`doc/0`, ...), created before the run.
    pub doc_keys: usize,
    /// Share of client operations that edit one of them (a field patch, or a counter increment).
    pub doc_ratio: f64,
    /// Share of puts that carry a TTL (`PUT ?ttl=`).
    pub expiring_ratio: f64,
    /// Their TTLs, ms.
    pub key_ttl_ms: (u64, u64),
    /// Leases the workload's services hold at most at once (0: no lease operations at all).
    pub leases: usize,
    /// Share of client operations that are lease operations (grant, renew, bind, revoke).
    pub lease_ratio: f64,
    /// Their TTLs, ms.
    pub lease_ttl_ms: (u64, u64),
    /// Locks the workload's contenders fight over (0: no lock operations at all).
    pub locks: usize,
    /// Share of client operations that are lock operations (acquire, extend, release).
    pub lock_ratio: f64,
    /// How long a hold lasts unless extended, ms.
    pub lock_ttl_ms: (u64, u64),
}

impl Default for Params {
    fn default() -> Params {
        Params {
            nodes: (3, 5),
            fault_phase_ms: 90_000,
            skew_ms: 2_000,
            drift_ppm: 500,
            latency_ms: (1, 30),
            jitter_ms: 10,
            tail: 0.01,
            loss: 0.02,
            dup: 0.02,
            sym_partitions: 0,
            oneway_partitions: 0,
            flapping_links: 0,
            partition_ms: (2_000, 20_000),
            crashes: 0,
            downtime_ms: (500, 30_000),
            commit_ms: (1, 10),
            joins: 0,
            leaves: 0,
            ops_per_sec: 15.0,
            hot_keys: 5,
            cold_keys: 1_000,
            hot_ratio: 0.3,
            delete_ratio: 0.2,
            batch_ratio: 0.1,
            burst_ratio: 0.05,
            race_ratio: 0.05,
            big_values: 0.0,
            ttl_ms: 7 * 24 * 3_600_000,
            max_message_bytes: 2 * 1024 * 1024,
            offline_past_ttl: false,
            isolated_past_ttl: false,
            outliers: None,
            import_ratio: 0.0,
            real_time_order: false,
            doc_keys: 0,
            doc_ratio: 0.0,
            expiring_ratio: 0.0,
            key_ttl_ms: (5_000, 20_000),
            leases: 0,
            lease_ratio: 0.0,
            lease_ttl_ms: (2_000, 10_000),
            locks: 0,
            lock_ratio: 0.0,
            lock_ttl_ms: (1_000, 6_000),
        }
    }
}

/// A deliberately broken variant, to prove that the checker catches it (`--inject-bug NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// The harness applies replicated entries "last arrival wins" instead of `LwwMap::merge`.
    LwwArrivalOrder,
    /// Replicated entries whose HLC timestamps tie are applied in arrival order instead of by node id.
    LwwTieArrivalOrder,
    /// Anti-entropy never compares the last bucket of a digest group (`CoreConfig::faults`).
    AeSkipLastBucket,
    /// A restarted node does not restore its last sync time, so it never rejoins pull-first.
    PurgeWithoutRejoin,
    /// The clock fence never closes: an outlier clock keeps stamping writes (`CoreConfig::faults`).
    NoClockFence,
    /// Imports skip the drift rule: a version from the future is taken in.
    ImportUnchecked,
    /// Documents merge as LWW registers (the greater version wins whole) instead of by Automerge's merge.
    DocsAsLww,
    /// Expiry judged on the node's own wall clock instead of its hybrid clock (`Hlc::reading`).
    ExpiryOnWallClock,
    /// A node ignores a value's lease (as a build before leases would): it reads a bound value by its own
    /// expiry only, and its sweep never collects it.
    LeaseIgnored,
    /// A lock is granted on the proposer's say-so, without a majority (`CoreConfig::faults`).
    LockSaySo,
}

impl Bug {
    /// Every injectable bug.
    pub const ALL: [Bug; 10] = [
        Bug::LwwArrivalOrder,
        Bug::LwwTieArrivalOrder,
        Bug::AeSkipLastBucket,
        Bug::PurgeWithoutRejoin,
        Bug::NoClockFence,
        Bug::ImportUnchecked,
        Bug::DocsAsLww,
        Bug::ExpiryOnWallClock,
        Bug::LeaseIgnored,
        Bug::LockSaySo,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Bug::LwwArrivalOrder => "lww-arrival-order",
            Bug::LwwTieArrivalOrder => "lww-tie-arrival-order",
            Bug::AeSkipLastBucket => "ae-skip-last-bucket",
            Bug::PurgeWithoutRejoin => "purge-without-rejoin",
            Bug::NoClockFence => "no-clock-fence",
            Bug::ImportUnchecked => "import-unchecked",
            Bug::DocsAsLww => "docs-as-lww",
            Bug::ExpiryOnWallClock => "expiry-on-wall-clock",
            Bug::LeaseIgnored => "lease-ignored",
            Bug::LockSaySo => "lock-say-so",
        }
    }

    /// The scenario that exposes the bug best (the bug test runs it).
    pub fn scenario(self) -> Scenario {
        match self {
            Bug::LwwArrivalOrder => Scenario::Contention,
            Bug::LwwTieArrivalOrder => Scenario::Ties,
            Bug::AeSkipLastBucket => Scenario::Lossy,
            Bug::PurgeWithoutRejoin => Scenario::Purge,
            Bug::NoClockFence => Scenario::ClockFast,
            Bug::ImportUnchecked => Scenario::ClockNear,
            Bug::DocsAsLww => Scenario::Documents,
            Bug::ExpiryOnWallClock => Scenario::Expiry,
            Bug::LeaseIgnored => Scenario::Leases,
            Bug::LockSaySo => Scenario::Locks,
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bug {
    type Err = String;
    fn from_str(s: &str) -> Result<Bug, String> {
        Bug::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug {s:?}; one of: {}", names.join(", "))
        })
    }
}
