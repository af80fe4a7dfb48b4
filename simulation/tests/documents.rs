//! The `documents` scenario: nodes patch shared documents and increment their counters under partitions,
//! crashes, loss and reordering; the checker requires identical documents, every acknowledged edit present
//! and counters equal to the sum of their acknowledged increments. Merging documents as LWW registers (the
//! injected bug `docs-as-lww`) must be caught.

use cave_simulation::{run, Bug, Options, Scenario};

fn options(seed: u64, bug: Option<Bug>) -> Options {
    Options::of(seed, Scenario::Documents, bug)
}

#[test]
fn documents_converge_without_losing_an_acknowledged_edit() {
    for seed in 0..2 {
        let outcome = run(&options(seed, None));
        assert!(outcome.passed(), "seed {seed}:\n{}", outcome.report());
    }
}

#[test]
fn documents_merged_as_lww_are_caught() {
    let doc_rule = |kind: &str| {
        matches!(
            kind,
            "acknowledged document edit lost"
                | "counter is not the sum of its increments"
                | "field holds no acknowledged edit"
        )
    };
    for seed in 0..3 {
        let outcome = run(&options(seed, Some(Bug::DocsAsLww)));
        if outcome.violations.iter().any(|v| doc_rule(v.kind)) {
            let clean = run(&options(seed, None));
            assert!(
                clean.passed(),
                "seed {seed} fails without the bug too:\n{}",
                clean.report()
            );
            return;
        }
    }
    panic!("docs-as-lww was not caught by seeds 0..3 of the documents scenario");
}
