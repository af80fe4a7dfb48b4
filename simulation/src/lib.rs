//! Deterministic simulation of Cave's replication: the real [`cave::replication::Core`] of N nodes, in one
//! thread, from one seed, over a simulated network, clocks, disks and clients. See `docs/simulation.md`.
//!
//! The harness plays the parts that surround the core in a real node, mirroring them closely:
//! - `cave::cluster` (the tokio driver): ticks every 100 ms, routes messages by the core's addresses,
//!   merges `persist` effects, turns `forget` effects into same-version tombstones and a purge, broadcasts
//!   committed changes written by this node (`version.node == me`, expired tombstones excepted), persists
//!   the last sync time at most
//!   once a minute, purges tombstones every tenth of the TTL;
//! - `cave::db` (the writer task): group commits with a commit latency, versions
//!   `Version::new(hlc.tick_after(current.hlc), node)`, the clock observing every merged version; a write
//!   is acknowledged when its group commits;
//! - the machine: a wall clock with offset and drift feeding a `cave::crdt::Hlc` through `ManualTime`;
//!   a crash keeps the committed map and the last-sync file, and loses everything else.
//!
//! [`run`] runs one seed and checks the outcome with [`check`]; the same [`Options`] always give the
//! same event trace hash.
//!
//! [`real`] is the complement: whole nodes (tonic, axum, tokio tasks) as turmoil hosts, so that the
//! transport and the driver are exercised too, under partitions, crashes and skew.

pub mod check;
pub mod check_docs;
pub mod history;
pub mod net;
pub mod node;
pub mod real;
pub mod scenario;
pub mod sim;
mod trace;

pub use check::Violation;
pub use scenario::{Bug, Params, Scenario};
pub use sim::{run, Options, Outcome, Stats};

/// Parse a seed range: `A..B` (exclusive), `A..=B`, or a single seed `A`.
pub fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>, String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("bad seed {t:?} in {s:?} (expected A..B, A..=B or A)"))
    };
    if let Some((a, b)) = s.split_once("..=") {
        let (a, b) = (num(a)?, num(b)?);
        return Ok(a..b.checked_add(1).ok_or("seed range too large")?);
    }
    if let Some((a, b)) = s.split_once("..") {
        let (a, b) = (num(a)?, num(b)?);
        if b < a {
            return Err(format!("empty seed range {s:?}"));
        }
        return Ok(a..b);
    }
    let a = num(s)?;
    Ok(a..a + 1)
}

/// Run every seed of `seeds` on `jobs` threads (each seed is still one deterministic single-thread run),
/// calling `each` with every outcome in seed order. Returns the outcomes that failed.
pub fn run_many(
    seeds: std::ops::Range<u64>,
    make: impl Fn(u64) -> Options + Sync,
    jobs: usize,
    mut each: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;

    let next = AtomicU64::new(seeds.start);
    let (tx, rx) = mpsc::channel::<Outcome>();
    let mut failed = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let tx = tx.clone();
            let next = &next;
            let make = &make;
            let end = seeds.end;
            scope.spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                if tx.send(run(&make(seed))).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        // Report in seed order, whatever order the threads finish in.
        let mut waiting = BTreeMap::new();
        let mut expect = seeds.start;
        for outcome in rx {
            waiting.insert(outcome.options.seed, outcome);
            while let Some(outcome) = waiting.remove(&expect) {
                each(&outcome);
                if !outcome.passed() {
                    failed.push(outcome);
                }
                expect += 1;
            }
        }
    });
    failed
}
