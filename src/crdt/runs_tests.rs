//! [`RunSet`] against a `BTreeSet` model, with small shapes so that every split, merge and rebuild happens.

use std::collections::BTreeSet;
use std::ops::Bound;

use proptest::prelude::*;

use super::*;

fn key(i: u16) -> String {
    format!("k{i:03}")
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u16),
    Take(u16),
    /// The absent keys among `from..from + len`, every `step`th: a batch of fresh keys.
    Fresh {
        from: u16,
        len: u16,
        step: u16,
    },
    Range(Bound<u16>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u16..300).prop_map(Op::Insert),
        (0u16..300).prop_map(Op::Take),
        (0u16..300, 0u16..120, 1u16..4).prop_map(|(from, len, step)| Op::Fresh { from, len, step }),
        prop_oneof![
            Just(Bound::Unbounded),
            (0u16..300).prop_map(Bound::Included),
            (0u16..300).prop_map(Bound::Excluded)
        ]
        .prop_map(Op::Range),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    (1usize..6, 2usize..40, 1usize..10).prop_map(|(min_run, max_merge, rebuild_ratio)| Shape {
        min_run,
        max_merge,
        rebuild_ratio,
    })
}

/// The layout's invariants: the first fence is "", fences ascend, every key lies in its run's span, no run
/// is empty unless it is the only one, and the length is the sum of the runs'.
fn check_layout(set: &RunSet<String>) {
    assert_eq!(&*set.runs[0].fence, "");
    assert_eq!(set.len, set.runs.iter().map(|run| run.set.len()).sum::<usize>());
    for (i, run) in set.runs.iter().enumerate() {
        assert!(set.runs.len() == 1 || !run.set.is_empty(), "run {i} is empty");
        let next = set.runs.get(i + 1).map(|next| &*next.fence);
        if let Some(next) = next {
            assert!(*run.fence < *next, "fences out of order at {i}");
        }
        for item in &run.set {
            assert!(item.as_str() >= &*run.fence && next.is_none_or(|next| item.as_str() < next));
        }
    }
}

proptest! {
    #[test]
    fn a_run_set_behaves_as_an_ordered_set(shape in shape(), start in 0usize..100, ops in proptest::collection::vec(op(), 1..40)) {
        let initial: Vec<String> = (0..start as u16).map(|i| key(i * 3)).collect();
        let mut model: BTreeSet<String> = initial.iter().cloned().collect();
        let mut set = RunSet::from_sorted(shape, initial);
        check_layout(&set);
        for op in ops {
            match op {
                Op::Insert(k) => prop_assert_eq!(set.insert(key(k)), model.insert(key(k))),
                Op::Take(k) => prop_assert_eq!(set.take(&key(k)), model.take(key(k).as_str())),
                Op::Fresh { from, len, step } => {
                    let fresh: Vec<String> = (from..from + len)
                        .step_by(step as usize)
                        .map(key)
                        .filter(|k| !model.contains(k))
                        .collect();
                    model.extend(fresh.iter().cloned());
                    set.insert_fresh(fresh);
                }
                Op::Range(lower) => {
                    let lower = lower.map(key);
                    let lower = lower.as_ref().map(String::as_str);
                    let got: Vec<&String> = set.range_from(lower).collect();
                    let want: Vec<&String> = model.range::<str, _>((lower, Bound::Unbounded)).collect();
                    prop_assert_eq!(got, want);
                }
            }
            check_layout(&set);
            prop_assert_eq!(set.len(), model.len());
            prop_assert!(set.iter().eq(model.iter()));
            for k in (0..300).step_by(7) {
                prop_assert_eq!(set.get(&key(k)), model.get(key(k).as_str()));
            }
        }
    }
}

#[test]
fn batches_in_key_order_become_few_full_runs_and_move_nothing_held() {
    let shape = Shape {
        min_run: 4,
        max_merge: 64,
        rebuild_ratio: 8,
    };
    let mut set: RunSet<String> = RunSet::with_shape(shape);
    for batch in 0..64u16 {
        set.insert_fresh((batch * 8..batch * 8 + 8).map(key).collect());
    }
    check_layout(&set);
    assert_eq!(set.len(), 512);
    // Merged as a binary counter, capped at 64 items a run: 512 items in 8 runs of 64.
    assert_eq!(set.runs.len(), 8);
    assert!(set.runs.iter().all(|run| run.set.len() == 64));
}

#[test]
fn a_stretch_between_held_keys_splits_its_run() {
    let shape = Shape {
        min_run: 3,
        max_merge: 1,
        rebuild_ratio: 8,
    };
    let mut set = RunSet::from_sorted(shape, vec![key(0), key(100)]);
    // max_merge 1: the held keys were cut into runs of one; nothing merges again.
    assert_eq!(set.runs.len(), 2);
    set.insert_fresh(vec![key(10), key(11), key(12), key(200)]);
    check_layout(&set);
    let fences: Vec<&str> = set.runs.iter().map(|run| &*run.fence).collect();
    // 10..12 is a run of its own between 0 and 100; 200 alone is too short and joins 100's run.
    assert_eq!(fences, ["", "k010", "k100"]);
    assert!(set
        .iter()
        .map(String::as_str)
        .eq(["k000", "k010", "k011", "k012", "k100", "k200"]));
}
