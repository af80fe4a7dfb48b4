//! A hybrid logical clock (Kulkarni et al., 2014) packed into one `u64`.
//!
//! The upper 48 bits are physical milliseconds since the Unix epoch, the lower 16 a logical counter. Packing
//! keeps versions small and lets a plain integer comparison order them. Every timestamp the clock hands out
//! is strictly greater than every one it handed out or observed before, so:
//! - two local writes never share a timestamp, and a write always sorts after what it overwrote
//!   ([`Hlc::tick_after`]);
//! - after observing a remote version (a replicated write), later local writes sort after it, which is what
//!   makes "last writer wins" mean *last* across nodes whose wall clocks disagree a little.
//!
//! Time comes from an injected [`TimeSource`], so tests and the simulation drive the clock by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 16;

/// Where physical time comes from.
pub trait TimeSource: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTime;

impl TimeSource for SystemTime {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock moved by hand (tests, simulation).
#[derive(Debug, Default)]
pub struct ManualTime(AtomicU64);

impl ManualTime {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Arc<ManualTime> {
        Arc::new(ManualTime(AtomicU64::new(ms)))
    }
    /// Set the reading.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst)
    }
    /// Move forward (or back, with a negative delta: clocks do that).
    pub fn advance(&self, delta_ms: i64) {
        let now = self.0.load(Ordering::SeqCst) as i64;
        self.0.store((now + delta_ms).max(0) as u64, Ordering::SeqCst)
    }
}

impl TimeSource for ManualTime {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Pack physical milliseconds (and a zero counter) into a timestamp.
pub fn from_physical_ms(ms: u64) -> u64 {
    ms << LOGICAL_BITS
}

/// The physical milliseconds of a timestamp.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// A hybrid logical clock. Cheap to share: all state is one atomic.
pub struct Hlc {
    last: AtomicU64,
    time: Arc<dyn TimeSource>,
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hlc")
            .field("last", &self.last.load(Ordering::Relaxed))
            .finish()
    }
}

impl Hlc {
    /// A clock reading physical time from `time`.
    pub fn new(time: Arc<dyn TimeSource>) -> Hlc {
        Hlc {
            last: AtomicU64::new(0),
            time,
        }
    }

    /// A clock on the machine's wall clock.
    pub fn system() -> Hlc {
        Hlc::new(Arc::new(SystemTime))
    }

    /// A fresh timestamp: strictly greater than anything handed out or observed.
    pub fn now(&self) -> u64 {
        self.tick_after(0)
    }

    /// A fresh timestamp that is also greater than `floor`: `max(now, floor + 1)`. Local writes pass the
    /// current version of the key they overwrite, so a write always wins over what it replaces even when the
    /// previous writer's clock was ahead of ours.
    pub fn tick_after(&self, floor: u64) -> u64 {
        let physical = from_physical_ms(self.time.now_ms());
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = physical.max(last.saturating_add(1)).max(floor.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    /// Take note of a timestamp seen elsewhere, so later local timestamps sort after it.
    pub fn observe(&self, remote: u64) {
        self.last.fetch_max(remote, Ordering::AcqRel);
    }

    /// The last timestamp handed out or observed (no tick).
    pub fn peek(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// The time source's reading in milliseconds since the epoch: the node's notion of "now" for everything
    /// that is not a version (heartbeats, timeouts, the purge horizon).
    pub fn time_ms(&self) -> u64 {
        self.time.now_ms()
    }

    /// The physical reading of the time source, as a timestamp with a zero counter.
    pub fn physical_now(&self) -> u64 {
        from_physical_ms(self.time.now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Now,
        After(u64),
        Observe(u64),
        Clock(i64),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Now),
            (0u64..1 << 40).prop_map(Step::After),
            (0u64..1 << 40).prop_map(Step::Observe),
            (-5_000i64..5_000).prop_map(Step::Clock),
        ]
    }

    proptest! {
        /// Whatever the wall clock does (including going backwards) and whatever is observed, every
        /// timestamp handed out is strictly greater than all earlier ones, and than its floor.
        #[test]
        fn timestamps_strictly_increase(steps in prop::collection::vec(arb_step(), 1..200)) {
            let time = ManualTime::new(1_000_000);
            let hlc = Hlc::new(time.clone());
            let mut high = 0u64;
            for step in steps {
                match step {
                    Step::Now => { let t = hlc.now(); prop_assert!(t > high); high = t; }
                    Step::After(f) => { let t = hlc.tick_after(f); prop_assert!(t > high && t > f); high = t; }
                    Step::Observe(r) => { hlc.observe(r); high = high.max(r); }
                    Step::Clock(d) => time.advance(d),
                }
            }
        }
    }

    #[test]
    fn follows_physical_time_when_it_moves() {
        let time = ManualTime::new(5_000);
        let hlc = Hlc::new(time.clone());
        assert_eq!(physical_ms(hlc.now()), 5_000);
        time.set(6_000);
        assert_eq!(hlc.now(), from_physical_ms(6_000));
    }
}
