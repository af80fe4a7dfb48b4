//! The fixed seed range CI runs (as part of `cargo test --workspace`): every scenario of the rotation, all
//! of which must pass, and each seed's event-trace hash must equal the one pinned in
//! `tests/golden/ci_trace_hashes.txt`, so that any change in the protocol's behaviour shows up as a diff of
//! that file. A longer soak is one command, see `docs/simulation.md`.
//!
//! After a deliberate change in behaviour, re-bless the file (and commit it with the change):
//! `CAVE_BLESS=1 cargo test -p cave-simulation --test ci`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use cave_simulation::{run_many, Options, Scenario};

/// Seeds `0..CI_SEEDS`. Seed `s` runs scenario `s % 13`, so this is every scenario twice.
const CI_SEEDS: u64 = 26;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ci_trace_hashes.txt")
}

/// One line per seed: `seed scenario trace-hash`.
fn golden_line(o: &cave_simulation::Outcome) -> String {
    format!("{} {} {:016x}", o.options.seed, o.options.scenario, o.trace_hash)
}

#[test]
fn the_ci_seed_range_passes_and_covers_every_scenario() {
    let covered: BTreeSet<Scenario> = (0..CI_SEEDS).map(Scenario::for_seed).collect();
    assert_eq!(
        covered.len(),
        Scenario::ROTATION.len(),
        "the CI range must cover every scenario"
    );
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut lines = Vec::new();
    let failed = run_many(0..CI_SEEDS, Options::new, jobs, |o| lines.push(golden_line(o)));
    let reports: String = failed.iter().map(|o| o.report()).collect();
    assert!(
        failed.is_empty(),
        "{} of {CI_SEEDS} seeds failed:\n{reports}",
        failed.len()
    );
    let actual = lines.join("\n") + "\n";
    let path = golden_path();
    if std::env::var_os("CAVE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create tests/golden");
        std::fs::write(&path, &actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        let diff: String = expected
            .lines()
            .zip(actual.lines())
            .filter(|(e, a)| e != a)
            .map(|(e, a)| format!("  pinned {e}\n  now    {a}\n"))
            .collect();
        panic!(
            "the CI seeds' trace hashes differ from {}:\n{diff}(the pinned file has {} lines, the run {})\n\
             The protocol behaves differently. If that is intended, re-bless with \
             `CAVE_BLESS=1 cargo test -p cave-simulation --test ci` and commit the file with the change.",
            path.display(),
            expected.lines().count(),
            actual.lines().count()
        );
    }
}
