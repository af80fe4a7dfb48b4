//! The `leases` scenario: services grant leases, renew them through any node, bind keys to them, revoke or
//! abandon them, under partitions, crashes, loss and one clock 30 s behind. No judged node may read a key
//! bound to a lease whose grants and renewals have all expired (`max_clock_drift` ago), none may hold such a
//! key in the settled state, and the cluster converges. A node that ignores leases (the injected bug
//! `lease-ignored`, as a build before leases would) must be caught.

use cave_simulation::{run, Bug, Options, Scenario};

fn options(seed: u64, bug: Option<Bug>) -> Options {
    Options::of(seed, Scenario::Leases, bug)
}

#[test]
fn keys_bound_to_leases_end_with_them_on_every_node_and_converge() {
    let mut swept = 0;
    for seed in 0..6 {
        let outcome = run(&options(seed, None));
        assert!(outcome.passed(), "seed {seed}:\n{}", outcome.report());
        swept += outcome.stats.lease_swept;
    }
    assert!(swept > 0, "no lease ended with keys bound to it");
}

#[test]
fn a_node_that_ignores_leases_is_caught() {
    for seed in 0..3 {
        let outcome = run(&options(seed, Some(Bug::LeaseIgnored)));
        let kinds: Vec<&str> = outcome.violations.iter().map(|v| v.kind).collect();
        assert!(
            kinds.contains(&"key bound to an ended lease still read as live")
                && kinds.contains(&"key bound to an ended lease survives"),
            "seed {seed}: {kinds:?}"
        );
    }
}
