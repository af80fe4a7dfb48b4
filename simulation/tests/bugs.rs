//! Every injectable bug is caught within a fixed seed range of the scenario that exposes it, by the
//! violation it should cause; and the same seed passes (or at least is clean of that violation) without it.

use std::ops::Range;

use cave::crdt::digest::{bucket_of, BUCKETS_PER_GROUP};
use cave_simulation::{run, Bug, Options, Outcome, Violation};

fn options(seed: u64, bug: Option<Bug>, scenario_of: Bug) -> Options {
    Options::of(seed, scenario_of.scenario(), bug)
}

/// The first seed of `seeds` where the bug causes a violation `expected` accepts.
fn first_caught(bug: Bug, seeds: Range<u64>, expected: impl Fn(&Violation) -> bool) -> Outcome {
    for seed in seeds.clone() {
        let outcome = run(&options(seed, Some(bug), bug));
        if outcome.violations.iter().any(&expected) {
            return outcome;
        }
    }
    panic!("{bug} was not caught by seeds {seeds:?} of scenario {}", bug.scenario());
}

fn assert_passes_without_the_bug(caught: &Outcome) {
    let bug = caught.options.bug.expect("a bug");
    let clean = run(&options(caught.options.seed, None, bug));
    assert!(
        clean.passed(),
        "seed {} fails without {bug} too:\n{}",
        caught.options.seed,
        clean.report()
    );
}

/// LWW violations: a replica ends up with an older write than the greatest acknowledged one.
fn lww_violation(v: &Violation) -> bool {
    matches!(
        v.kind,
        "acknowledged write superseded by an older one" | "deleted key came back" | "acknowledged write vanished"
    )
}

#[test]
fn lww_arrival_order_is_caught() {
    let caught = first_caught(Bug::LwwArrivalOrder, 0..10, lww_violation);
    assert_passes_without_the_bug(&caught);
}

#[test]
fn lww_tie_arrival_order_is_caught() {
    let caught = first_caught(Bug::LwwTieArrivalOrder, 0..40, lww_violation);
    assert_passes_without_the_bug(&caught);
}

#[test]
fn ae_skip_last_bucket_is_caught() {
    // The replicas never converge, and every key that differs lives in the last bucket of a digest group.
    let last_bucket = |k: &str| bucket_of(k) as usize % BUCKETS_PER_GROUP == BUCKETS_PER_GROUP - 1;
    let caught = first_caught(Bug::AeSkipLastBucket, 0..10, |v| v.kind == "replicas differ");
    assert!(caught.violations.iter().any(|v| v.kind == "no convergence"));
    for v in caught.violations.iter().filter(|v| v.kind == "replicas differ") {
        let key = v.key.as_deref().expect("a key");
        assert!(
            last_bucket(key),
            "{key} differs but is not in the last bucket of its group"
        );
    }
    assert_passes_without_the_bug(&caught);
}

#[test]
fn purge_without_rejoin_is_caught() {
    // Keys deleted (and purged) while the node was away past the TTL come back.
    let doomed =
        |v: &Violation| v.kind == "deleted key came back" && v.key.as_deref().is_some_and(|k| k.starts_with("doomed/"));
    let caught = first_caught(Bug::PurgeWithoutRejoin, 0..10, doomed);
    let clean = run(&options(caught.options.seed, None, Bug::PurgeWithoutRejoin));
    assert!(!clean.violations.iter().any(doomed), "{}", clean.report());
}

#[test]
fn no_clock_fence_is_caught() {
    // The fast node keeps stamping writes 30 s ahead: they beat writes acknowledged after them elsewhere.
    let caught = first_caught(Bug::NoClockFence, 0..10, |v| {
        v.kind == "acknowledged write lost to an earlier one"
    });
    assert_passes_without_the_bug(&caught);
}

#[test]
fn import_unchecked_is_caught() {
    // An imported version a year ahead (or the greatest there is) pins its key: writes acknowledged after it
    // lose to it, and the replicas that hold it back never agree with the one that took it.
    let caught = first_caught(Bug::ImportUnchecked, 0..10, |v| {
        matches!(v.kind, "acknowledged write lost to an earlier one" | "replicas differ")
    });
    assert_passes_without_the_bug(&caught);
}
