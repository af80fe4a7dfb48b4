//! The fixed seed range CI runs (as part of `cargo test --workspace`): every scenario of the rotation, all
//! of which must pass. A longer soak is one command, see `docs/simulation.md`.

use std::collections::BTreeSet;

use cave_simulation::{run_many, Options, Scenario};

/// Seeds `0..CI_SEEDS`. Seed `s` runs scenario `s % 13`, so this is every scenario twice.
const CI_SEEDS: u64 = 26;

#[test]
fn the_ci_seed_range_passes_and_covers_every_scenario() {
    let covered: BTreeSet<Scenario> = (0..CI_SEEDS).map(Scenario::for_seed).collect();
    assert_eq!(
        covered.len(),
        Scenario::ROTATION.len(),
        "the CI range must cover every scenario"
    );
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let failed = run_many(0..CI_SEEDS, Options::new, jobs, |_| {});
    let reports: String = failed.iter().map(|o| o.report()).collect();
    assert!(
        failed.is_empty(),
        "{} of {CI_SEEDS} seeds failed:\n{reports}",
        failed.len()
    );
}
