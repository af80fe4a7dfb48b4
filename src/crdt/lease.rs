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
