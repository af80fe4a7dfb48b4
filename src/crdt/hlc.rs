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
//!
//! # Clock discipline
//! - **One drift rule** ([`beyond_drift`]): a version stamped more than `max_clock_drift` ahead of local
//!   time is not taken in, whatever brings it (a peer's delta or repair, an import line). Observing such a
//!   version would drag this clock (and every later local write) into the future with it: later writes
//!   elsewhere would silently lose to it, and a version near the top of the range would pin keys for good.
//! - **No saturation**: a timestamp that cannot be made greater than what it must follow is an error
//!   ([`Hlc::tick_after`]), never a silent repeat of the old value.
//! - **Fence**: when the replication core finds that *this* node's clock is the outlier of its cluster, the
//!   driver fences the clock ([`Hlc::set_fence`]); while fenced it refuses to stamp local writes
//!   ([`crate::Error::ClockSkew`]), because their timestamps would misorder them against the others'.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

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

/// How far (ms) a version stamped `hlc` is ahead of `now_ms` beyond the tolerated `max_drift_ms`: `None`
/// if it is within the bound (the one drift rule of every path that brings in a version; see the module
/// docs), else `Some(ms ahead of now_ms)`.
pub fn beyond_drift(hlc: u64, now_ms: u64, max_drift_ms: u64) -> Option<u64> {
    let stamped = physical_ms(hlc);
    (stamped > now_ms.saturating_add(max_drift_ms)).then(|| stamped - now_ms)
}

/// Stored in [`Hlc`]'s fence when the clock is not fenced.
const NOT_FENCED: i64 = i64::MIN;

/// A hybrid logical clock. Cheap to share: all state is atomics.
pub struct Hlc {
    last: AtomicU64,
    time: Arc<dyn TimeSource>,
    /// This node's estimated offset (ms) from its cluster's clock while fenced, else [`NOT_FENCED`].
    fence: AtomicI64,
    /// Another live process runs under this node's id and this one must stop: versions stamped here could
    /// collide with that process's (same node id, same time). See [`Hlc::retire`].
    retired: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hlc")
            .field("last", &self.last.load(Ordering::Relaxed))
            .field("fenced", &self.fenced())
            .finish()
    }
}

impl Hlc {
    /// A clock reading physical time from `time`.
    pub fn new(time: Arc<dyn TimeSource>) -> Hlc {
        Hlc {
            last: AtomicU64::new(0),
            time,
            fence: AtomicI64::new(NOT_FENCED),
            retired: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A clock on the machine's wall clock.
    pub fn system() -> Hlc {
        Hlc::new(Arc::new(SystemTime))
    }

    /// A fresh timestamp: strictly greater than anything handed out or observed. Errors as
    /// [`Hlc::tick_after`] does.
    pub fn now(&self) -> Result<u64> {
        self.tick_after(0)
    }

    /// A fresh timestamp that is also greater than `floor`: `max(now, last + 1, floor + 1)`. Local writes
    /// pass the current version of the key they overwrite, so a write always wins over what it replaces even
    /// when the previous writer's clock was ahead of ours.
    ///
    /// Fails with [`Error::ClockSkew`] while the clock is fenced, and when no greater timestamp exists
    /// (`floor` or the clock at the top of the range): a write that cannot sort after what it overwrites must
    /// not be acknowledged, because it would silently lose.
    pub fn tick_after(&self, floor: u64) -> Result<u64> {
        if self.retired() {
            return Err(Error::Unavailable(
                "another live node runs under this node's id (a copied data directory?): this one refuses \
                 writes; stop it and run `cave reset-node-id` on its data directory (write to another node \
                 meanwhile)"
                    .into(),
            ));
        }
        if let Some(offset_ms) = self.fenced() {
            return Err(fenced_error(offset_ms));
        }
        let physical = from_physical_ms(self.time.now_ms());
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let (Some(after_last), Some(after_floor)) = (last.checked_add(1), floor.checked_add(1)) else {
                return Err(Error::ClockSkew(
                    "no version greater than the current one exists: a stored version is at the top of the \
                     clock's range (see `cave repair-clock` in the README)"
                        .into(),
                ));
            };
            let next = physical.max(after_last).max(after_floor);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(next),
                Err(actual) => last = actual,
            }
        }
    }

    /// Fence the clock (`Some(offset from the cluster's clock, ms)`): local writes are refused until it is
    /// lifted (`None`).
    pub fn set_fence(&self, offset_ms: Option<i64>) {
        let stored = offset_ms.map_or(NOT_FENCED, |offset| offset.max(NOT_FENCED + 1));
        self.fence.store(stored, Ordering::Release);
    }

    /// Stop stamping for good (this process): another live process runs under this node's id. Every local
    /// write then fails with [`Error::Unavailable`].
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Whether [`Hlc::retire`] was called.
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The offset from the cluster's clock (ms) this clock is fenced for, if it is.
    pub fn fenced(&self) -> Option<i64> {
        match self.fence.load(Ordering::Acquire) {
            NOT_FENCED => None,
            offset => Some(offset),
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

    /// The hybrid clock's reading now, without handing out a timestamp: the later of the last one handed out
    /// or observed and the physical time. What an expiry is judged against, so that a node whose wall clock
    /// lags still expires a key once it has seen the cluster's time pass it.
    ///
    /// While fenced, the physical part is the cluster's clock (ours corrected by the fence's offset, as the
    /// drift rule measures it): a node far behind its cluster would otherwise serve expired values for as
    /// long as it is behind, whenever nothing newer reaches it.
    pub fn reading(&self) -> u64 {
        let now_ms = self.time.now_ms();
        let physical = match self.fenced() {
            Some(offset_ms) => (now_ms as i64).saturating_sub(offset_ms).max(0) as u64,
            None => now_ms,
        };
        self.peek().max(from_physical_ms(physical))
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

/// The error of a write refused by a fenced clock.
pub fn fenced_error(offset_ms: i64) -> Error {
    Error::ClockSkew(format!(
        "this node's clock is {offset_ms} ms off its cluster's: it refuses writes until its clock is back within \
         max_clock_drift (write to another node meanwhile)"
    ))
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
                    Step::Now => { let t = hlc.now().unwrap(); prop_assert!(t > high); high = t; }
                    Step::After(f) => { let t = hlc.tick_after(f).unwrap(); prop_assert!(t > high && t > f); high = t; }
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
        assert_eq!(physical_ms(hlc.now().unwrap()), 5_000);
        time.set(6_000);
        assert_eq!(hlc.now().unwrap(), from_physical_ms(6_000));
    }

    #[test]
    fn never_saturates_a_write_that_cannot_sort_after_its_floor_is_an_error() {
        let hlc = Hlc::new(ManualTime::new(5_000));
        assert!(matches!(hlc.tick_after(u64::MAX), Err(Error::ClockSkew(_))));
        // The clock itself was dragged to the top: nothing greater exists for any key.
        hlc.observe(u64::MAX);
        assert!(matches!(hlc.now(), Err(Error::ClockSkew(_))));
        assert!(matches!(hlc.tick_after(0), Err(Error::ClockSkew(_))));
        assert_eq!(hlc.peek(), u64::MAX);
    }

    #[test]
    fn a_fenced_clock_refuses_to_stamp_and_resumes_when_lifted() {
        let hlc = Hlc::new(ManualTime::new(5_000));
        let before = hlc.now().unwrap();
        hlc.set_fence(Some(-30_000));
        assert_eq!(hlc.fenced(), Some(-30_000));
        let err = hlc.tick_after(0).unwrap_err();
        assert_eq!(err.code(), "clock_skew");
        assert!(err.to_string().contains("-30000 ms"), "{err}");
        hlc.set_fence(None);
        assert_eq!(hlc.fenced(), None);
        assert!(hlc.now().unwrap() > before);
    }

    #[test]
    fn the_drift_rule_names_how_far_ahead_a_version_is() {
        let at = |ms| from_physical_ms(ms);
        assert_eq!(beyond_drift(at(10_000), 10_000, 1_000), None);
        assert_eq!(beyond_drift(at(11_000), 10_000, 1_000), None);
        assert_eq!(beyond_drift(at(11_001), 10_000, 1_000), Some(1_001));
        assert_eq!(
            beyond_drift(u64::MAX, 10_000, 1_000),
            Some(physical_ms(u64::MAX) - 10_000)
        );
        assert_eq!(beyond_drift(at(1), u64::MAX, 1_000), None);
    }
}
