//! Problems the simulation found in the replication core (see "Findings" in `docs/simulation.md`), pinned
//! to the seeds that exposed them. Open ones are ignored until fixed: run them with
//! `cargo test -p cave-simulation --test findings -- --ignored`.

use cave_simulation::{run, Options, Scenario};

fn assert_all_pass(scenario: Scenario, seeds: &[u64]) {
    let failed: Vec<String> = seeds
        .iter()
        .map(|&seed| {
            run(&Options {
                scenario,
                ..Options::new(seed)
            })
        })
        .filter(|o| !o.passed())
        .map(|o| o.report())
        .collect();
    assert!(failed.is_empty(), "{}", failed.concat());
}

/// A node rejoining pull-first is offered tombstones that supersede its stale entries but are past its
/// purge horizon; `Core::accept` turns them down as garbage, the stale entries stay, and once the peers
/// have purged those tombstones the entries are pushed back: deleted keys come back.
#[test]
fn a_pull_first_rejoin_drops_entries_whose_tombstones_expired() {
    assert_all_pass(Scenario::Purge, &[35, 61, 126]);
}

/// A node that stays up but is partitioned away for longer than the TTL is never pull-first (only a
/// restart decides that), so when the partition heals it pushes back keys deleted (and purged) meanwhile.
#[test]
fn a_node_partitioned_past_the_ttl_resurrects_nothing() {
    assert_all_pass(Scenario::IsolatedPastTtl, &[0, 1, 2]);
}

/// A node that defers to a peer becomes "fresh" before its stale entries are gone: as a responder it counts
/// the round as a sync before the peer's newer entries (the tombstones) arrived, and a `forget` reaches the
/// store only after the driver's commit. A round served in between offers the stale entry; deleted keys
/// come back.
#[test]
fn a_deferring_node_offers_no_stale_entry_before_it_is_gone() {
    assert_all_pass(Scenario::Purge, &[292, 498, 520, 558, 1072]);
    assert_all_pass(Scenario::IsolatedPastTtl, &[106, 387, 468]);
}
