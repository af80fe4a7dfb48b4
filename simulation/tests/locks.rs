//! The `locks` scenario: contenders acquire, extend and release a few locks through any node under
//! partitions, crashes, loss and one clock 30 s behind (fenced). No two holds of a lock may overlap, one fence
//! names one holder, and a smaller fence never starts a hold after a greater one; the cluster converges. A
//! lock granted on one node's say-so (the injected bug `lock-say-so`) must be caught.

use cave_simulation::{run, Bug, Options, Scenario};

fn options(seed: u64, bug: Option<Bug>) -> Options {
    Options::of(seed, Scenario::Locks, bug)
}

#[test]
fn a_lock_has_one_holder_at_a_time_and_fences_grow() {
    let (mut granted, mut refused, mut unavailable) = (0, 0, 0);
    for seed in 0..8 {
        let outcome = run(&options(seed, None));
        assert!(outcome.passed(), "seed {seed}:\n{}", outcome.report());
        let [g, held, _, _, u] = outcome.stats.lock_decisions;
        (granted, refused, unavailable) = (granted + g, refused + held, unavailable + u);
    }
    // The workload contends and the faults bite: grants, refusals and unavailability all happen.
    assert!(
        granted > 50 && refused > 50 && unavailable > 0,
        "{granted} {refused} {unavailable}"
    );
}

#[test]
fn a_lock_granted_on_one_nodes_say_so_is_caught() {
    for seed in 0..4 {
        let outcome = run(&options(seed, Some(Bug::LockSaySo)));
        assert!(
            outcome
                .violations
                .iter()
                .any(|v| v.kind == "two holders of a lock at once" || v.kind == "one fence granted to two holders"),
            "seed {seed}: {:?}",
            outcome.violations.iter().map(|v| v.kind).collect::<Vec<_>>()
        );
    }
}
