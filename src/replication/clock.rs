//! Clock discipline of the core: estimating every member's clock offset, finding out whether *this* node's
//! clock is the outlier of its cluster, and fencing it if so.
//!
//! # Why a fence
//! Last-writer-wins orders writes by their HLC, which follows the wall clock. The drift guard (an entry
//! stamped more than `max_clock_drift` ahead of local time is held back) stops a fast clock from pinning
//! keys into the future, but it cannot keep order: a node 30 s ahead stamps its writes 30 s late, and once
//! its peers' clocks catch up those writes replace everything written meanwhile; a node 30 s behind stamps
//! its writes 30 s early, and they lose to writes acknowledged before them. Both lose acknowledged writes.
//! So a node that finds its own clock far from its cluster's stops taking writes (CockroachDB's answer:
//! stop serving rather than break ordering). Reads go on, marked possibly stale.
//!
//! # Offset estimates
//! Every gossip message carries the sender's clock reading when it sent it. A sample `their send time - our
//! receive time` is the true offset minus the message's one-way delay: never too high, and too low by the
//! delay. So the estimate of a member is the **greatest of its last [`CLOCK_SAMPLES`] samples**: the one
//! that travelled fastest, off by that (on a LAN, sub-millisecond) delay; a message stuck in a queue only
//! makes one sample low. Push-pull gossip gives a sample from each alive member every few seconds.
//!
//! # The judgement
//! The cluster's clock is the **median** of the estimates of the alive members and of this node (offset 0).
//! A median is not moved by one bad clock, so one outlier cannot fence the healthy majority. This node is
//! an outlier when its own offset from that median exceeds **half** of `max_clock_drift` (never less than
//! [`MIN_CLOCK_BOUND_MS`]): then any two nodes that are not fenced differ by at most `max_clock_drift`,
//! which is exactly what the drift guard tolerates, so entries between serving nodes are never held back
//! and writes acknowledged more than `max_clock_drift` apart in real time are ordered as they happened.
//!
//! A judgement needs a strict majority of the reachable cluster (this node, alive and suspect members)
//! whose clocks agree with the median (within the same bound). Without one (a single node, a partition's
//! minority, or clocks scattered so that no majority agrees) nothing is decided and the last decision
//! stands: a node that never judged keeps serving (the drift guard alone, as before), and a fenced node
//! stays fenced until a majority says its clock is back (losing sight of the cluster says nothing about the
//! clock). Two nodes of three skewed alike *are* the majority: the third, correct one is fenced, and the
//! two order writes consistently between themselves.
//!
//! # Sending while fenced
//! A fenced node keeps replicating what it committed before the fence. Those writes were acknowledged;
//! withholding them would lose them for good if the node never came back, and would not save the writes
//! they may shadow (anti-entropy carries them once the node unfences). The fence protects what it can: no
//! write is acknowledged with a stamp known to be wrong.
//!
//! While fenced, the drift guard measures incoming entries against the *cluster's* clock (local time
//! corrected by the offset) instead of the local one: a slow node would otherwise hold back every entry of
//! its healthy peers and serve stale reads for as long as it is behind.

use std::collections::VecDeque;

/// One-way clock samples kept per member.
pub const CLOCK_SAMPLES: usize = 5;
/// The fence bound never goes below this, whatever `max_clock_drift` says (it may be 0): estimates are off
/// by a message's one-way delay, and a bound below that would fence healthy nodes.
pub const MIN_CLOCK_BOUND_MS: u64 = 100;
/// While fenced, the core reminds its driver (a log line) this often.
pub const FENCE_REMINDER_MS: u64 = 60_000;

/// Recent clock samples of one member.
#[derive(Debug, Clone, Default)]
pub struct ClockSamples(VecDeque<i64>);

impl ClockSamples {
    /// Add a sample `their send time - our receive time` (ms).
    pub fn push(&mut self, sample_ms: i64) {
        if self.0.len() == CLOCK_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(sample_ms);
    }

    /// The estimate: `their clock - our clock` in ms (the least delayed recent sample).
    pub fn estimate(&self) -> Option<i64> {
        self.0.iter().copied().max()
    }
}

/// What this node concluded about its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// No majority of the reachable cluster agrees on a time: nothing can be said.
    Unknown,
    /// This node's clock is `offset_ms` off the cluster's median, within the bound.
    Within { offset_ms: i64 },
    /// This node's clock is `offset_ms` off the cluster's median, beyond the bound: it is the outlier.
    Outlier { offset_ms: i64 },
}

/// Judge this node's clock from the estimates (`their clock - ours`, ms) of the alive members that have
/// one, among `reachable` members (alive or suspect, this node not counted), with `bound_ms` the largest
/// tolerated offset from the median.
pub fn judge(estimates: &[i64], reachable: usize, bound_ms: u64) -> Judgement {
    if estimates.is_empty() {
        return Judgement::Unknown;
    }
    let mut offsets: Vec<i64> = estimates.to_vec();
    offsets.push(0);
    offsets.sort_unstable();
    // The lower median: with an even count, the lower of the two middle values (a pair that disagrees then
    // decides nothing, since neither half is a majority).
    let median = offsets[(offsets.len() - 1) / 2];
    let bound = bound_ms as i64;
    let agreeing = offsets.iter().filter(|o| (**o - median).abs() <= bound).count();
    let cluster = reachable + 1;
    if agreeing * 2 <= cluster {
        return Judgement::Unknown;
    }
    let offset_ms = -median;
    if offset_ms.abs() > bound {
        Judgement::Outlier { offset_ms }
    } else {
        Judgement::Within { offset_ms }
    }
}

/// The fence state of one node.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    /// `Some(offset ms)` while fenced.
    fenced: Option<i64>,
    /// The latest judgement that said something (its offset), for the node list and metrics.
    offset_ms: Option<i64>,
    /// When the next reminder is due while fenced.
    remind_at_ms: u64,
}

/// A change of the fence (or a reminder that it holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceChange {
    /// Fenced now, or still (once per [`FENCE_REMINDER_MS`]).
    Fenced { offset_ms: i64 },
    /// Lifted: the clock is back within the bound.
    Lifted { offset_ms: i64 },
}

impl Fence {
    /// `Some(offset from the cluster's clock, ms)` while fenced.
    pub fn fenced(&self) -> Option<i64> {
        self.fenced
    }

    /// This node's offset from the cluster's clock at the last judgement that could decide, if any.
    pub fn offset_ms(&self) -> Option<i64> {
        self.offset_ms
    }

    /// Apply a judgement made at `now_ms`; `enabled` false never fences (the simulation's injected bug).
    pub fn update(&mut self, judgement: Judgement, now_ms: u64, enabled: bool) -> Option<FenceChange> {
        match judgement {
            Judgement::Unknown => {}
            Judgement::Within { offset_ms } => {
                self.offset_ms = Some(offset_ms);
                if self.fenced.take().is_some() {
                    return Some(FenceChange::Lifted { offset_ms });
                }
            }
            Judgement::Outlier { offset_ms } => {
                self.offset_ms = Some(offset_ms);
                if enabled {
                    let was = self.fenced.replace(offset_ms);
                    if was.is_none() || now_ms >= self.remind_at_ms {
                        self.remind_at_ms = now_ms + FENCE_REMINDER_MS;
                        return Some(FenceChange::Fenced { offset_ms });
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: u64 = 500;

    #[test]
    fn the_outlier_knows_it_and_the_majority_is_not_fenced() {
        // Three nodes, one 30 s ahead: as seen from the fast one, both others are 30 s behind.
        assert_eq!(
            judge(&[-30_000, -30_010], 2, BOUND),
            Judgement::Outlier { offset_ms: 30_000 }
        );
        // From a healthy node: one peer agrees, one is 30 s ahead.
        assert_eq!(judge(&[5, 30_000], 2, BOUND), Judgement::Within { offset_ms: -5 });
        assert_eq!(judge(&[-5, 30_000], 2, BOUND), Judgement::Within { offset_ms: 0 });
        // Slow node.
        assert_eq!(
            judge(&[30_000, 29_990], 2, BOUND),
            Judgement::Outlier { offset_ms: -29_990 }
        );
    }

    #[test]
    fn without_a_majority_nothing_is_decided() {
        // Alone.
        assert_eq!(judge(&[], 0, BOUND), Judgement::Unknown);
        // Two nodes 30 s apart: neither is a majority.
        assert_eq!(judge(&[30_000], 1, BOUND), Judgement::Unknown);
        assert_eq!(judge(&[-30_000], 1, BOUND), Judgement::Unknown);
        // Three clocks all far apart (two skewed the same way, by different amounts).
        assert_eq!(judge(&[5_000, 30_000], 2, BOUND), Judgement::Unknown);
        // Three of five reachable in view, one of them off: two agreeing are not a majority of five.
        assert_eq!(judge(&[0, 30_000], 4, BOUND), Judgement::Unknown);
        // Two nodes of three skewed alike are the majority: the correct one is the outlier.
        assert_eq!(
            judge(&[30_000, 30_000], 2, BOUND),
            Judgement::Outlier { offset_ms: -30_000 }
        );
    }

    #[test]
    fn estimates_take_the_least_delayed_recent_sample() {
        let mut s = ClockSamples::default();
        assert_eq!(s.estimate(), None);
        for sample in [-40, -3, -250, -12] {
            s.push(sample);
        }
        assert_eq!(s.estimate(), Some(-3));
        // Old samples age out: a clock that jumped is seen within CLOCK_SAMPLES samples.
        for _ in 0..CLOCK_SAMPLES {
            s.push(-30_000);
        }
        assert_eq!(s.estimate(), Some(-30_000));
    }

    #[test]
    fn the_fence_holds_until_a_majority_says_the_clock_is_back_and_reminds_once_a_minute() {
        let mut f = Fence::default();
        assert_eq!(f.update(Judgement::Unknown, 0, true), None);
        assert_eq!(f.fenced(), None);
        let out = Judgement::Outlier { offset_ms: 30_000 };
        assert_eq!(
            f.update(out, 1_000, true),
            Some(FenceChange::Fenced { offset_ms: 30_000 })
        );
        assert_eq!(f.update(out, 2_000, true), None);
        assert_eq!(f.update(Judgement::Unknown, 3_000, true), None);
        assert_eq!(f.fenced(), Some(30_000));
        assert_eq!(
            f.update(out, 61_000, true),
            Some(FenceChange::Fenced { offset_ms: 30_000 })
        );
        assert_eq!(
            f.update(Judgement::Within { offset_ms: 20 }, 62_000, true),
            Some(FenceChange::Lifted { offset_ms: 20 })
        );
        assert_eq!(f.fenced(), None);
        assert_eq!(f.offset_ms(), Some(20));
        // Disabled (the injected bug): the offset is known, nothing is fenced.
        assert_eq!(f.update(out, 70_000, false), None);
        assert_eq!(f.fenced(), None);
    }
}
