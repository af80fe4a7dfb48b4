//! The clock scenarios: one node (or two) with a bad clock among agreeing ones. Each seed must pass the
//! checker, real-time order rule included, and fence the node the design says it fences.

use cave_simulation::{run, Options, Scenario};

const SEEDS: std::ops::Range<u64> = 0..4;

#[test]
fn an_outlier_clock_is_fenced_and_no_acknowledged_write_is_lost_to_an_earlier_one() {
    for scenario in Scenario::CLOCKS {
        for seed in SEEDS {
            let outcome = run(&Options {
                scenario,
                ..Options::new(seed)
            });
            assert!(outcome.passed(), "{}", outcome.report());
            let fenced = outcome.stats.fences > 0;
            // Scattered clocks (no majority agrees on a time): nobody can tell who is wrong.
            let expected = scenario != Scenario::ClockSplit;
            assert_eq!(
                fenced, expected,
                "{scenario} seed {seed}: fences {}",
                outcome.stats.fences
            );
            if expected {
                assert!(
                    outcome.stats.writes_refused > 0,
                    "{scenario} seed {seed}: no write refused"
                );
            }
        }
    }
}
