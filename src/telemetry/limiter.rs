//! Rate limiting of repeated log lines: a warning that input from outside can trigger at will (a peer sending
//! garbage frames, a client hitting a full disk) is logged at most once per [`LogLimiter`] interval per
//! key, and the line that is logged says how many were left out since the previous one.
//!
//! Without it, 3,000 garbage frames in under a second are 3,000 warnings: they flood the log file and push
//! every other record out of the 2,048-record ring behind `/api/v1/perf/logs`, which is exactly what an
//! operator looking into the flood would need. Counting the suppressed lines keeps the size of the problem
//! visible; the metrics count every event regardless.
//!
//! Each call site (source) owns a limiter and keys it by what varies: the peer's IP address (not its port,
//! which changes with every connection), an error category. The number of keys is bounded: when the map is
//! full of keys active within the interval, further new keys share one overflow slot, so a flood from many
//! addresses is still bounded to one line per interval. Like [`crate::metrics`], this is a leaf any layer
//! may use.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Interval of the limiters Cave's call sites use: long enough that a flood is a handful of lines a minute,
/// short enough that a problem that stops and starts again is seen again soon.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Keys a limiter tracks before new keys share the overflow slot.
pub const DEFAULT_MAX_KEYS: usize = 1024;
/// The key of the overflow slot.
pub const OVERFLOW_KEY: &str = "(others)";

/// Decides which of many repeated log lines are written (see the module docs).
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    max_keys: usize,
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    logged_at: Instant,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(DEFAULT_LOG_INTERVAL, DEFAULT_MAX_KEYS)
    }
}

impl LogLimiter {
    /// At most one line per `interval` for each of up to `max_keys` keys (at least one).
    pub fn new(interval: Duration, max_keys: usize) -> LogLimiter {
        LogLimiter {
            interval,
            max_keys: max_keys.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to log an event of `key` now: `Some(n)` to log it, `n` the events of the key left out since
    /// its previous line; `None` to leave it out (it is counted).
    pub fn check(&self, key: &str) -> Option<u64> {
        self.check_at(key, Instant::now())
    }

    /// [`LogLimiter::check`] at time `now`.
    pub fn check_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut slots = self.slots.lock();
        if !slots.contains_key(key) && slots.len() >= self.max_keys {
            // Keys quiet for a whole interval have nothing left to suppress: forget them first.
            let interval = self.interval;
            slots.retain(|_, slot| now.saturating_duration_since(slot.logged_at) < interval || slot.suppressed > 0);
        }
        let key = if slots.contains_key(key) || slots.len() < self.max_keys {
            key
        } else {
            OVERFLOW_KEY
        };
        match slots.get_mut(key) {
            None => {
                slots.insert(
                    key.to_string(),
                    Slot {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
            Some(slot) if now.saturating_duration_since(slot.logged_at) >= self.interval => {
                let suppressed = std::mem::take(&mut slot.suppressed);
                slot.logged_at = now;
                Some(suppressed)
            }
            Some(slot) => {
                slot.suppressed += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{LogLimiter, OVERFLOW_KEY};

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn one_line_per_interval_per_key_counting_the_rest() {
        let limiter = LogLimiter::new(10 * SECOND, 16);
        let t0 = Instant::now();
        assert_eq!(limiter.check_at("a", t0), Some(0), "the first event is logged");
        for i in 1..=2999u32 {
            let at = t0 + Duration::from_micros(u64::from(i) * 300);
            assert_eq!(limiter.check_at("a", at), None);
        }
        assert_eq!(limiter.check_at("b", t0 + SECOND), Some(0), "keys are limited apart");
        assert_eq!(limiter.check_at("a", t0 + 9 * SECOND), None);
        assert_eq!(
            limiter.check_at("a", t0 + 10 * SECOND),
            Some(3000),
            "the next line says how many were left out"
        );
        assert_eq!(limiter.check_at("a", t0 + 11 * SECOND), None);
        assert_eq!(limiter.check_at("a", t0 + 30 * SECOND), Some(1));
        assert_eq!(limiter.check_at("a", t0 + 41 * SECOND), Some(0));
    }

    #[test]
    fn many_keys_share_one_overflow_slot_and_quiet_keys_are_forgotten() {
        let limiter = LogLimiter::new(10 * SECOND, 4);
        let t0 = Instant::now();
        for key in ["k0", "k1", "k2", "k3"] {
            assert_eq!(limiter.check_at(key, t0), Some(0));
        }
        // The map is full of active keys: a flood of new ones is one line per interval in all.
        assert_eq!(limiter.check_at("k4", t0), Some(0));
        for i in 5..100 {
            assert_eq!(limiter.check_at(&format!("k{i}"), t0), None);
        }
        assert_eq!(limiter.slots.lock().len(), 5, "four keys and the overflow slot");
        assert!(limiter.slots.lock().contains_key(OVERFLOW_KEY));
        // Once the old keys have been quiet for an interval, new keys get slots of their own again.
        let later = t0 + 20 * SECOND;
        assert_eq!(limiter.check_at("fresh", later), Some(0));
        assert!(limiter.slots.lock().contains_key("fresh"));
    }
}
