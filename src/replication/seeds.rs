//! Seeds: the addresses a node joins through (configured, found by mDNS, resolved from DNS), and when to
//! contact each.
//!
//! A seed is *reached* once a reachable member advertises its address. Until then it is contacted (a gossip
//! asking for a reply) with an exponential backoff: first at once, then after [`SEED_RETRY_MIN_MS`],
//! doubling, jittered to between half and all of the step so that nodes started together do not retry in
//! step. The cap is [`SEED_RETRY_MAX_LONELY_MS`] while the node knows no reachable member (it is joining,
//! and a peer that starts listening a moment later must be found within seconds), and
//! [`SEED_RETRY_MAX_MS`] once it knows some (it is in a cluster; an unreached seed may be down, or another
//! name of a member it already knows, which it can never tell apart). A seed that was reached and is no
//! longer (its member died or left) starts again from the shortest step.
//!
//! Why: nodes started together (the README's three-node start) would otherwise split for many seconds: a
//! seed dialled a few milliseconds before it listened was retried only when the node was alone, and a node
//! that had met *another* node meanwhile no longer was, so it contacted its seed by chance once in a while.

use rand::rngs::StdRng;
use rand::Rng;

/// First retry step of an unreached seed.
pub const SEED_RETRY_MIN_MS: u64 = 100;
/// Longest retry step while the node knows no reachable member.
pub const SEED_RETRY_MAX_LONELY_MS: u64 = 2_000;
/// Longest retry step once the node knows reachable members.
pub const SEED_RETRY_MAX_MS: u64 = 30_000;

#[derive(Debug, Clone)]
struct Seed {
    addr: String,
    /// What put it here: `None` for configured seeds, else the discovery source (`mdns`, `dns:NAME:PORT`).
    origin: Option<String>,
    /// Contacts since it was last reached.
    attempts: u32,
    /// Next contact (local ms).
    next_ms: u64,
}

/// The seed list of one node.
#[derive(Debug, Clone, Default)]
pub struct Seeds {
    list: Vec<Seed>,
}

impl Seeds {
    /// The configured `addrs`, all due at once.
    pub fn new(addrs: Vec<String>) -> Seeds {
        let mut seeds = Seeds::default();
        seeds.add(addrs, None, "");
        seeds
    }

    /// Add `addrs` (from `origin`; `None`: configured) that are not known yet and are not `me`.
    pub fn add(&mut self, addrs: impl IntoIterator<Item = String>, origin: Option<&str>, me: &str) {
        for addr in addrs {
            if addr != me && !self.list.iter().any(|s| s.addr == addr) {
                self.list.push(Seed {
                    addr,
                    origin: origin.map(str::to_string),
                    attempts: 0,
                    next_ms: 0,
                });
            }
        }
    }

    /// Replace the seeds that came from `origin` with `addrs` (a DNS name resolves to the current members:
    /// addresses it no longer returns are dropped, so that a scaled-down or rescheduled service leaves no
    /// seeds behind to retry forever).
    pub fn replace(&mut self, origin: &str, addrs: Vec<String>, me: &str) {
        self.list
            .retain(|s| s.origin.as_deref() != Some(origin) || addrs.contains(&s.addr));
        self.add(addrs, Some(origin), me);
    }

    /// Every seed address.
    pub fn addrs(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|s| s.addr.as_str())
    }

    /// Whether there is no seed.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The seeds to contact at `now_ms`: those not `reached` whose time has come (each then gets its next
    /// time). `lonely`: the node knows no reachable member (see the module docs for the caps).
    pub fn due(&mut self, now_ms: u64, lonely: bool, reached: impl Fn(&str) -> bool, rng: &mut StdRng) -> Vec<String> {
        let cap = if lonely {
            SEED_RETRY_MAX_LONELY_MS
        } else {
            SEED_RETRY_MAX_MS
        };
        let mut due = Vec::new();
        for seed in &mut self.list {
            if reached(&seed.addr) {
                seed.attempts = 0;
                seed.next_ms = 0;
                continue;
            }
            // Joining again (the node lost every member): the next contact is at most one short step away.
            seed.next_ms = seed.next_ms.min(now_ms.saturating_add(cap));
            if seed.next_ms > now_ms {
                continue;
            }
            let step = SEED_RETRY_MIN_MS.saturating_mul(1 << seed.attempts.min(20)).min(cap);
            seed.attempts = seed.attempts.saturating_add(1);
            seed.next_ms = now_ms + step / 2 + rng.gen_range(0..=step / 2);
            due.push(seed.addr.clone());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// The times (ms) at which one unreached seed is contacted over `until_ms`, ticking every 100 ms.
    fn contacts(lonely: bool, until_ms: u64) -> Vec<u64> {
        let mut seeds = Seeds::new(vec!["a:1".into()]);
        let mut rng = StdRng::seed_from_u64(7);
        (0..=until_ms / 100)
            .map(|t| t * 100)
            .filter(|&t| !seeds.due(t, lonely, |_| false, &mut rng).is_empty())
            .collect()
    }

    #[test]
    fn an_unreached_seed_is_retried_from_100ms_doubling_up_to_the_cap() {
        let times = contacts(true, 20_000);
        assert_eq!(times[0], 0, "contacted at once");
        assert!(times[1] <= 200, "{times:?}");
        let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g <= SEED_RETRY_MAX_LONELY_MS + 100), "{gaps:?}");
        assert!(times.len() >= 10, "keeps trying: {times:?}");
        assert!(gaps[gaps.len() - 1] >= SEED_RETRY_MAX_LONELY_MS / 2, "{gaps:?}");
        let in_cluster = contacts(false, 120_000);
        assert!(
            in_cluster.len() < times.len() * 6 / 2,
            "backs off further when not alone: {in_cluster:?}"
        );
    }

    #[test]
    fn a_reached_seed_is_not_contacted_and_starts_over_once_lost() {
        let mut seeds = Seeds::new(vec!["a:1".into()]);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(seeds.due(0, true, |_| false, &mut rng).len(), 1);
        for t in 1..100 {
            assert!(seeds.due(t * 100, true, |_| true, &mut rng).is_empty());
        }
        assert_eq!(
            seeds.due(10_000, true, |_| false, &mut rng).len(),
            1,
            "lost: contacted at once"
        );
    }

    #[test]
    fn replacing_a_source_drops_addresses_it_no_longer_returns() {
        let mut seeds = Seeds::new(vec!["conf:1".into()]);
        seeds.replace(
            "dns:x:1",
            vec!["10.0.0.1:1".into(), "10.0.0.2:1".into(), "me:1".into()],
            "me:1",
        );
        seeds.replace("dns:x:1", vec!["10.0.0.2:1".into()], "me:1");
        assert_eq!(seeds.addrs().collect::<Vec<_>>(), ["conf:1", "10.0.0.2:1"]);
    }
}
