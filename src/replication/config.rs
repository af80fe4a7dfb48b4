//! The core's tunables ([`CoreConfig`]), its test-only fault switches ([`Faults`]) and what it is told at
//! start about its last anti-entropy round ([`LastSync`]).

use super::membership::Timing;
#[cfg(doc)]
use super::Core;

/// What a node knows, at start, about its last completed anti-entropy round (from the record its driver
/// keeps in the data directory). See [`LastSync::recorded`] and [`Core::restore_last_sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastSync {
    /// A new node: no record and no data. Nobody defers to it, and it has nothing old to drop.
    Never,
    /// The node holds data but has no record of syncing (lost, or never written before a crash): it may
    /// have been away for any time, so it rejoins **pull-first**, as if its last sync were past the TTL.
    Unknown,
    /// The recorded time (ms) of its last completed round.
    At(u64),
}

impl LastSync {
    /// The rule that turns what a node finds at start into what it knows: a missing record on a node that
    /// holds data is *not* "never synced" (authority 0 would make it push old entries its peers deleted
    /// and purged back to them), it is "unknown", which is treated as stale.
    pub fn recorded(record: Option<u64>, holds_data: bool) -> LastSync {
        match (record, holds_data) {
            (Some(t), _) => LastSync::At(t),
            (None, true) => LastSync::Unknown,
            (None, false) => LastSync::Never,
        }
    }
}

/// Tunables of the core, in milliseconds and counts. Defaults live in [`CoreConfig::default`].
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Interval between two membership gossip rounds.
    pub gossip_interval_ms: u64,
    /// Failure detection timing.
    pub timing: Timing,
    /// Mean interval between two anti-entropy rounds started by this node.
    pub anti_entropy_interval_ms: u64,
    /// A round not finished after this long is abandoned.
    pub anti_entropy_timeout_ms: u64,
    /// Entries stamped further than this ahead of our clock are not applied (yet).
    pub max_clock_drift_ms: u64,
    /// Most value bytes carried by one message; bigger deltas and repairs are split.
    pub max_message_bytes: usize,
    /// Tombstones older than this are purged; it is also the horizon of the pull-first rejoin rule.
    pub tombstone_ttl_ms: u64,
    /// The fewest members a lock majority is counted of (the cluster's size, when the operator knows it): a
    /// node that has not discovered every member yet (a partition while the cluster forms) must not count a
    /// majority of the few it knows. 0: the members known.
    pub lock_voters: usize,
    /// Deliberate bugs, for the deterministic simulation only (see [`Faults`]); all off by default.
    #[doc(hidden)]
    pub faults: Faults,
}

/// Test-only fault injection: deliberately broken behaviour that the deterministic simulation
/// (`simulation/`, `--inject-bug`) switches on to prove its checker catches the bug. Everything defaults to
/// off, and nothing outside the simulation sets a field.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Anti-entropy never compares the last bucket of a group (an off-by-one): differences there are never
    /// repaired.
    pub skip_last_bucket: bool,
    /// The clock fence never closes: an outlier clock keeps stamping writes.
    pub no_clock_fence: bool,
    /// A lock is granted on the proposer's say-so: it decides without waiting for a majority.
    pub lock_say_so: bool,
}

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            gossip_interval_ms: 1_000,
            timing: Timing {
                suspect_after_ms: 5_000,
                dead_after_ms: 30_000,
                forget_after_ms: 24 * 3_600_000,
            },
            anti_entropy_interval_ms: 10_000,
            anti_entropy_timeout_ms: 30_000,
            max_clock_drift_ms: 1_000,
            max_message_bytes: 2 * 1024 * 1024,
            tombstone_ttl_ms: 7 * 24 * 3_600_000,
            lock_voters: 0,
            faults: Faults::default(),
        }
    }
}
