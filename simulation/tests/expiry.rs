//! The `expiry` scenario: clients write values with TTLs under partitions and loss while one node's clock is
//! 30 s behind; every node must read an expired key as absent within `max_clock_drift` of its expiry, and
//! the cluster converges on the tombstones the expiries leave. Judging expiry on a node's own wall clock
//! (the injected bug `expiry-on-wall-clock`) must be caught.

use cave_simulation::{run, Bug, Options, Scenario};

fn options(seed: u64, bug: Option<Bug>) -> Options {
    Options::of(seed, Scenario::Expiry, bug)
}

#[test]
fn expiring_keys_expire_on_every_node_on_time_and_converge() {
    for seed in 0..4 {
        let outcome = run(&options(seed, None));
        assert!(outcome.passed(), "seed {seed}:\n{}", outcome.report());
        assert!(outcome.stats.expired_swept > 0, "seed {seed}: nothing expired");
    }
}

#[test]
fn expiry_on_the_wall_clock_is_caught() {
    for seed in 0..3 {
        let outcome = run(&options(seed, Some(Bug::ExpiryOnWallClock)));
        if outcome
            .violations
            .iter()
            .any(|v| v.kind == "expired key still read as live")
        {
            let clean = run(&options(seed, None));
            assert!(
                clean.passed(),
                "seed {seed} fails without the bug too:\n{}",
                clean.report()
            );
            return;
        }
    }
    panic!("expiry-on-wall-clock was not caught by seeds 0..3 of the expiry scenario");
}
