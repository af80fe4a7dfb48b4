//! Leases: a key bound to a lease lives only as long as the lease does (etcd's model).
//!
//! A lease is an ordinary replicated entry, `_system/lease/{id}`, written with the lease's TTL as its expiry
//! ([`Entry::expires`]): a renewal on any node is a later write of it with a later expiry, which last-writer-wins
//! spreads everywhere; a revoke is its delete; its expiry is the one every node judges on the hybrid clock. A
//! value bound to a lease ([`Entry::lease`]) reads as absent unless the node holds that lease *live*: an ended
//! lease (its tombstone, or a value past its expiry) and a missing one (not arrived yet) both hide it, so a bound
//! key can never outlive its lease on a node that lacks the lease's latest state. Collection is the expiry
//! sweep's: the values bound to an ended lease turn into their same-version tombstones
//! ([`Entry::expired`]), which every node derives identically.
//!
//! A missing lease only hides, never collects: a bound value can arrive (by anti-entropy) before its lease
//! does, and collecting it then would delete a live key everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use super::{Entry, LwwMap};
use crate::error::{Error, Result};

/// Where lease entries live (a reserved folder: clients reach them only through `/api/v1/lease`).
pub const LEASE_PREFIX: &str = "_system/lease/";

/// A lease's id: random, never zero, written as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub NonZeroU64);

impl LeaseId {
    /// A fresh random id.
    pub fn random() -> LeaseId {
        LeaseId(NonZeroU64::new(rand::random::<u64>().max(1)).expect("max(1) is not zero"))
    }

    /// The id of a raw value, `None` for zero.
    pub fn new(raw: u64) -> Option<LeaseId> {
        NonZeroU64::new(raw).map(LeaseId)
    }

    /// The raw value.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// The key of this lease's entry.
    pub fn key(self) -> String {
        format!("{LEASE_PREFIX}{self}")
    }

    /// The lease whose entry `key` is, if it is one.
    pub fn of_key(key: &str) -> Option<LeaseId> {
        key.strip_prefix(LEASE_PREFIX)?.parse().ok()
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({self})")
    }
}

impl FromStr for LeaseId {
    type Err = Error;
    fn from_str(s: &str) -> Result<LeaseId> {
        let bad = || Error::invalid(format!("a lease id is 1 to 16 hex digits, not zero; got {s:?}"));
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u64::from_str_radix(s, 16).ok().and_then(LeaseId::new).ok_or_else(bad)
    }
}

/// What a lease's entry stores: its TTL, so that a renewal on any node extends it by the same amount.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    ttl_ms: u64,
}

/// The value of a lease's entry for a TTL of `ttl_ms`.
pub fn lease_value(ttl_ms: u64) -> bytes::Bytes {
    bytes::Bytes::from(format!("{{\"ttl_ms\":{ttl_ms}}}"))
}

/// The TTL a lease's entry stores, `None` if `entry` does not hold one.
pub fn ttl_ms_of(entry: &Entry) -> Option<u64> {
    serde_json::from_slice::<Stored>(&entry.value).ok().map(|s| s.ttl_ms)
}

/// The hybrid-clock time `ttl_ms` after a write stamped `version`: the expiry a grant, a renewal or a
/// `?ttl=` write carries.
pub fn expires_after(version: super::Version, ttl_ms: u64) -> u64 {
    super::hlc::from_physical_ms(super::hlc::physical_ms(version.hlc).saturating_add(ttl_ms))
}

impl serde::Serialize for LeaseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for LeaseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<LeaseId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl LwwMap {
    /// Whether lease `id` is live at hybrid-clock time `now`: its entry is held and is a value not yet expired.
    pub fn lease_live(&self, id: LeaseId, now: u64) -> bool {
        self.get(&id.key()).is_some_and(|e| e.live_at(now))
    }

    /// How many leases are live at `now`.
    pub fn live_leases(&self, now: u64) -> usize {
        self.range_prefix(LEASE_PREFIX).filter(|e| e.live_at(now)).count()
    }

    /// Whether `entry` reads as a live value at `now`: live itself ([`Entry::live_at`]) and, if bound to a
    /// lease, that lease live. Every client read judges by this.
    pub fn live_at(&self, entry: &Entry, now: u64) -> bool {
        entry.live_at(now) && entry.lease.is_none_or(|id| self.lease_live(id, now))
    }

    /// The tombstones of at most `limit` values bound to leases that have ended on this node (their entry is a
    /// tombstone: revoked, or swept after expiring): what the sweep merges to collect them. A lease this node
    /// does not hold is not ended.
    pub(super) fn lease_ended_due(&self, limit: usize) -> Vec<Entry> {
        let mut due = Vec::new();
        for id in &self.bound.ended {
            let room = limit - due.len();
            if room == 0 {
                break;
            }
            let keys = self.bound.keys.get(id).into_iter().flatten();
            due.extend(keys.take(room).filter_map(|key| self.get(key)).map(Entry::expired));
        }
        due
    }

    /// Keep [`LeaseIndex::ended`] true to the map after `key` changed: a lease's entry, or a value bound to one.
    pub(super) fn note_lease(&mut self, key: &str, lease: Option<LeaseId>) {
        let Some(id) = LeaseId::of_key(key).or(lease) else {
            return;
        };
        let ended = self.get(&id.key()).is_some_and(|e| e.deleted);
        if ended && self.bound.keys.contains_key(&id.get()) {
            self.bound.ended.insert(id.get());
        } else {
            self.bound.ended.remove(&id.get());
        }
    }
}

/// The keys of the live values bound to each lease, and which of those leases have ended (so that the sweep
/// finds them without visiting every lease).
#[derive(Debug, Clone, Default)]
pub struct LeaseIndex {
    keys: BTreeMap<u64, BTreeSet<Box<str>>>,
    ended: BTreeSet<u64>,
}

impl LeaseIndex {
    /// Take note of `entry` coming into the map.
    pub(super) fn add(&mut self, entry: &Entry) {
        if let (Some(id), false) = (entry.lease, entry.deleted) {
            self.keys.entry(id.get()).or_default().insert(entry.key.as_str().into());
        }
    }

    /// Take in the bound keys `other` holds (which leases have ended is the map's to note again).
    pub(super) fn append(&mut self, other: &mut LeaseIndex) {
        for (id, mut keys) in std::mem::take(&mut other.keys) {
            self.keys.entry(id).or_default().append(&mut keys);
        }
        self.ended.append(&mut other.ended);
    }

    /// Forget `entry` going out of the map (replaced or removed).
    pub(super) fn remove(&mut self, entry: &Entry) {
        if let (Some(id), false) = (entry.lease, entry.deleted) {
            if let Some(keys) = self.keys.get_mut(&id.get()) {
                keys.remove(entry.key.as_str());
                if keys.is_empty() {
                    self.keys.remove(&id.get());
                    self.ended.remove(&id.get());
                }
            }
        }
    }

    /// The keys bound to `id` (live values; whether the lease is live is the map's question).
    pub fn keys(&self, id: LeaseId) -> impl Iterator<Item = &str> {
        self.keys.get(&id.get()).into_iter().flatten().map(|k| &**k)
    }

    /// The leases that have values bound to them.
    pub fn ids(&self) -> impl Iterator<Item = LeaseId> + '_ {
        self.keys.keys().filter_map(|&id| LeaseId::new(id))
    }

    /// How many leases have values bound to them.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no value is bound to a lease.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether values bound to an ended lease wait for the sweep.
    pub fn any_ended(&self) -> bool {
        !self.ended.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crdt::{NodeId, Version};

    /// Small domains: two leases (granted, renewed, revoked) and three keys bound to them or to none.
    fn arb_entry() -> impl Strategy<Value = Entry> {
        let lease = || prop::option::of(1u64..3).prop_map(|id| id.and_then(LeaseId::new));
        prop_oneof![
            // A lease's entry: live until `expires`, or revoked.
            (1u64..3, 0u64..6, any::<bool>(), 0u64..8).prop_map(|(id, hlc, deleted, expires)| {
                let key = LeaseId::new(id).unwrap().key();
                let version = Version::new(hlc, NodeId(1));
                if deleted {
                    Entry::tombstone(key, version)
                } else {
                    Entry {
                        expires: Some(crate::crdt::expiry::at(expires)),
                        ..Entry::value(key, "{\"ttl_ms\":1}", version)
                    }
                }
            }),
            // A key, bound or not.
            (
                prop::sample::select(vec!["a", "b", "c"]),
                0u64..6,
                any::<bool>(),
                lease()
            )
                .prop_map(|(key, hlc, deleted, lease)| {
                    let version = Version::new(hlc, NodeId(2));
                    if deleted {
                        Entry::tombstone(key, version)
                    } else {
                        Entry {
                            lease,
                            ..Entry::value(key, "v", version)
                        }
                    }
                }),
        ]
    }

    /// What the index must say: the live values bound to each lease, and which of those leases are ended.
    fn brute(map: &LwwMap) -> (Vec<(u64, String)>, Vec<u64>) {
        let mut bound: Vec<(u64, String)> = map
            .iter()
            .filter(|e| !e.deleted)
            .filter_map(|e| e.lease.map(|id| (id.get(), e.key.to_string())))
            .collect();
        bound.sort();
        let mut ended: Vec<u64> = bound
            .iter()
            .map(|(id, _)| *id)
            .filter(|&id| map.get(&LeaseId::new(id).unwrap().key()).is_some_and(|e| e.deleted))
            .collect();
        ended.dedup();
        (bound, ended)
    }

    fn indexed(map: &LwwMap) -> (Vec<(u64, String)>, Vec<u64>) {
        let bound = map
            .bound()
            .ids()
            .flat_map(|id| map.bound().keys(id).map(move |k| (id.get(), k.to_string())))
            .collect();
        (bound, map.bound.ended.iter().copied().collect())
    }

    proptest! {
        /// Through merges in any order, removals and a bulk load, the index is exactly the map's bound values
        /// and ended leases; a bound value reads live exactly while its lease does; and two sweeps (the lease,
        /// then its values) collect every value of an ended lease, leaving no ended lease with values.
        #[test]
        fn the_index_follows_the_map_and_the_sweep_collects_values_of_ended_leases(
            entries in prop::collection::vec(arb_entry(), 0..14),
            removed in prop::option::of(prop::sample::select(vec!["a", "_system/lease/0000000000000001"])),
            now in 0u64..8,
        ) {
            let mut map = LwwMap::new();
            for e in entries.iter().cloned() {
                map.merge(e);
            }
            let mut reversed = LwwMap::new();
            for e in entries.iter().rev().cloned() {
                reversed.merge(e);
            }
            if let Some(key) = removed {
                map.remove(key);
                reversed.remove(key);
            }
            prop_assert_eq!(indexed(&map), brute(&map));
            prop_assert_eq!(indexed(&reversed), brute(&reversed));
            let bulk = LwwMap::from_entries(map.iter().cloned().collect());
            prop_assert_eq!(indexed(&bulk), brute(&bulk));

            for e in map.iter() {
                let lease_ok = e.lease.is_none_or(|id| map.get(&id.key()).is_some_and(|l| l.live_at(now)));
                prop_assert_eq!(map.live_at(e, now), e.live_at(now) && lease_ok);
            }

            prop_assert_eq!(bulk.expired_due(now, usize::MAX), map.expired_due(now, usize::MAX));
            // A lease that expires is collected first, then (the writer's next round) the values bound to it.
            for _round in 0..2 {
                for t in map.expired_due(now, usize::MAX) {
                    map.merge(t);
                }
            }
            prop_assert!(map.expired_due(now, usize::MAX).is_empty());
            prop_assert!(!map.bound().any_ended(), "values of an ended lease left: {:?}", indexed(&map));
            prop_assert_eq!(indexed(&map), brute(&map));
        }
    }
}
