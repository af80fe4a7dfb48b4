//! Replication: the sans-IO state machine that makes master-less nodes converge.
//!
//! # Shape
//! [`Core`] is a plain state machine. It is fed three kinds of input:
//! - [`Core::on_local_commit`]: entries this node just committed (from the database's change stream);
//! - [`Core::on_message`]: a message from a peer;
//! - [`Core::on_tick`]: the passage of time (a reading of the clock, in milliseconds);
//!
//! and answers with [`Effects`]: messages to send, entries to persist, entries to forget (as ready
//! tombstones), purges, the last sync time to record, events. It never touches a socket, a file, a clock or
//! an OS random generator: time comes in as numbers, randomness from a seeded generator. The tokio driver
//! (`crate::cluster`) and the deterministic simulation (`simulation/`) run the *same* core, and every rule
//! of the protocol is in it (what is broadcast, when to purge, what to forget, when to record the last
//! sync, the constants they use), so that neither has a copy to keep in step.
//! For anti-entropy the core reads the node's [`crate::crdt::LwwMap`] (its digest and bucket contents),
//! which the caller lends it for the duration of a call; reading memory is not I/O.
//!
//! # Protocol
//! - **Broadcast**: every local commit becomes a `Delta` to every reachable member. Receivers merge (an
//!   entry wins only if its version is greater) and never re-broadcast: a delta travels one hop. What a
//!   delta misses (a dropped message, a partition, a node that was down) is anti-entropy's job.
//! - **Membership**: push-pull gossip of [`PeerRecord`]s with heartbeat counters; see [`membership`].
//! - **Anti-entropy**: every `anti_entropy_interval` (jittered) a node picks a random alive member and walks
//!   the digest tree of [`crate::crdt::digest`] down from the root: equal roots end the round after one
//!   small message each way; otherwise group digests, then bucket digests of differing groups, then the
//!   `(key, version)` lists of differing buckets, and finally each side sends the other the entries it has
//!   newer. Traffic grows with the difference between the two nodes, not with the database. The version
//!   lists go a batch of whole buckets at a time (`max_message_bytes` each), the next asked when the last
//!   part of the previous answer arrives, so two nodes a million keys apart repair in one round of bounded
//!   messages; a second round does not start beside one still moving.
//! - **Clocks**: an entry stamped more than `max_clock_drift` ahead of the local clock is not applied; it
//!   comes back through anti-entropy once local time has caught up. A bad clock cannot pin a key into the
//!   future. A node that finds its own clock is the outlier of its cluster (far from the median of its
//!   members' clocks, a majority agreeing) is **fenced**: it takes no writes until its clock is back; see
//!   [`clock`].

mod anti_entropy;
pub mod clock;
mod config;
mod core;
mod effects;
pub mod lock;
pub mod membership;
pub mod message;
pub mod seeds;
mod twins;

pub use self::core::{
    ClockView, Core, CoreConfig, CoreEvent, Destination, Effects, Faults, LastSync, LAST_SYNC_WRITE_INTERVAL_MS,
    MAX_PURGE_INTERVAL_MS, MIN_PURGE_INTERVAL_MS, TICK_INTERVAL_MS,
};
pub use lock::{LockOp, LockOutcome, LOCK_QUIET_MS, LOCK_TIMEOUT_MS};
pub use membership::{Member, Membership, Status, StatusChange, Timing, Twin};
pub use message::{Message, PeerRecord};

#[cfg(test)]
mod lock_tests;
#[cfg(test)]
mod tests;
