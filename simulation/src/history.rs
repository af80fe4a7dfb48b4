//! The history the checker judges: every client write (with its fate: acknowledged, or lost in a crash
//! before its commit) and every entry the cluster was allowed to drop (pull-first rejoin, graceful leave).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use cave::crdt::{Entry, Version};

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Evaluated, commit in flight.
    Pending,
    /// Committed on the node that took it: the client got its answer (at this simulated time, ms).
    Acked(u64),
    /// The node crashed before the commit: never acknowledged, allowed to vanish.
    Lost(u64),
}

/// One client write.
#[derive(Debug, Clone)]
pub struct Write {
    pub key: String,
    pub node: usize,
    pub version: Version,
    pub deleted: bool,
    pub value: Bytes,
    pub issued_ms: u64,
    pub fate: Fate,
    /// Overwritten by a later write of the same group commit (a batch writing a key twice): it never
    /// existed on its own in any store.
    pub shadowed: bool,
    /// An import: its version is the client's, not a clock's (an old export is meant to lose).
    pub imported: bool,
    /// An expiring value's expiry (hybrid-clock timestamp).
    pub expires: Option<u64>,
    /// The lease a bound value lives by.
    pub lease: Option<cave::crdt::LeaseId>,
}

impl Write {
    /// The entry this write produced.
    pub fn entry(&self) -> Entry {
        let entry = if self.deleted {
            Entry::tombstone(self.key.clone(), self.version)
        } else {
            Entry::value(self.key.clone(), self.value.clone(), self.version)
        };
        Entry {
            expires: self.expires.map(cave::crdt::expiry::at),
            lease: self.lease,
            ..entry
        }
    }
}

/// Why an entry was allowed to disappear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excuse {
    /// A node rejoining pull-first dropped it (older than the TTL, the peer did not hold it).
    Forgotten,
    /// A node without a sync for longer than the TTL (so rejoining pull-first) purged this expired tombstone
    /// of its own before any peer had it: for entries older than the TTL the fresh peers are authoritative,
    /// and the delete is dropped.
    PurgedWhileStale,
    /// Only a node that left the cluster held it when the node stopped.
    Departed,
    /// A tombstone purged (expired) before it reached any other node: its node was cut off for about the
    /// TTL (the `isolated-past-ttl` script only; outside the fault model of the rotation).
    ExpiredUnseen,
}

/// Everything that happened to the keys.
#[derive(Debug, Default)]
pub struct History {
    pub writes: Vec<Write>,
    pub by_key: BTreeMap<String, Vec<usize>>,
    /// Entries the cluster may drop, by key: `(version, excuse, node, time)`.
    pub excused: BTreeMap<String, Vec<(Version, Excuse, usize, u64)>>,
    /// Document edits (the `documents` scenario), in issue order.
    pub doc_edits: Vec<DocEdit>,
    /// The latest expiry any grant or renewal of each lease was issued with (hybrid-clock timestamp): no
    /// node may hold the lease live, or read a value bound to it, past that (plus the clocks' drift bound).
    pub lease_ends: BTreeMap<cave::crdt::LeaseId, u64>,
}

/// One document edit a client made.
#[derive(Debug, Clone)]
pub struct DocEdit {
    pub key: String,
    pub node: usize,
    /// `Some((field, value))` for a field edit, `None` for an increment.
    pub field: Option<(String, i64)>,
    /// The increment (0 for a field edit).
    pub by: i64,
    /// The Automerge change it made.
    pub hash: [u8; 32],
    pub fate: Fate,
}

impl History {
    /// Take note of a grant or renewal among the writes just evaluated.
    pub fn note_lease(&mut self, entry: &Entry) {
        if let (Some(id), Some(at), false) = (
            cave::crdt::LeaseId::of_key(&entry.key),
            entry.expires.map(std::num::NonZeroU64::get),
            entry.deleted,
        ) {
            let end = self.lease_ends.entry(id).or_insert(at);
            *end = (*end).max(at);
        }
    }

    /// Record a write just evaluated; returns its id.
    pub fn issue(&mut self, node: usize, entry: &Entry, now_ms: u64) -> usize {
        let id = self.writes.len();
        self.writes.push(Write {
            key: entry.key.to_string(),
            node,
            version: entry.version,
            deleted: entry.deleted,
            value: entry.value.clone(),
            issued_ms: now_ms,
            fate: Fate::Pending,
            shadowed: false,
            imported: false,
            expires: entry.expires.map(std::num::NonZeroU64::get),
            lease: entry.lease,
        });
        self.by_key.entry(entry.key.to_string()).or_default().push(id);
        id
    }

    /// The write's commit completed; `shadowed` if a later write of the same group overwrote it.
    pub fn ack(&mut self, id: usize, now_ms: u64, shadowed: bool) {
        self.writes[id].fate = Fate::Acked(now_ms);
        self.writes[id].shadowed = shadowed;
    }

    /// The write's node crashed before the commit.
    pub fn lose(&mut self, id: usize, now_ms: u64) {
        self.writes[id].fate = Fate::Lost(now_ms);
    }

    /// The cluster was allowed to drop `entry`.
    pub fn excuse(&mut self, entry: &Entry, excuse: Excuse, node: usize, now_ms: u64) {
        self.excused
            .entry(entry.key.to_string())
            .or_default()
            .push((entry.version, excuse, node, now_ms));
    }

    /// Whether an entry of `key` may have been dropped.
    pub fn is_excused(&self, key: &str, version: Version) -> bool {
        self.excused
            .get(key)
            .is_some_and(|v| v.iter().any(|(ver, ..)| *ver == version))
    }

    /// The nodes that dropped `version` of `key` (empty if it was not excused).
    pub fn excused_by(&self, key: &str, version: Version) -> Vec<usize> {
        self.excused
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(ver, ..)| *ver == version)
            .map(|(_, _, node, _)| *node)
            .collect()
    }

    /// Whether some node dropped `version` of `key` by the pull-first rule (its same-version tombstone
    /// stands in for the dropped entry).
    pub fn was_forgotten(&self, key: &str, version: Version) -> bool {
        self.excused.get(key).is_some_and(|v| {
            v.iter()
                .any(|(ver, why, ..)| *ver == version && *why == Excuse::Forgotten)
        })
    }

    /// The acknowledged writes of `key`.
    pub fn acked<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a Write> + 'a {
        self.by_key
            .get(key)
            .into_iter()
            .flatten()
            .map(|&i| &self.writes[i])
            .filter(|w| matches!(w.fate, Fate::Acked(_)))
    }

    /// Every key that was ever written.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.by_key.keys()
    }

    /// A short, human-readable history of `key`: the last `max` events, plus (marked `*`) the writes of
    /// the versions in `mention` wherever they are.
    pub fn describe(&self, key: &str, max: usize, mention: &[Version]) -> String {
        let mut lines: Vec<(u64, bool, String)> = Vec::new();
        for &i in self.by_key.get(key).into_iter().flatten() {
            let w = &self.writes[i];
            let what = if w.deleted {
                "delete".to_string()
            } else {
                format!("put {}", short(&w.value))
            };
            let fate = match w.fate {
                Fate::Pending => "pending".to_string(),
                Fate::Acked(t) if w.shadowed => format!("acked at {} (overwritten in its own batch)", secs(t)),
                Fate::Acked(t) => format!("acked at {}", secs(t)),
                Fate::Lost(t) => format!("LOST (crash at {}, never acked)", secs(t)),
            };
            let star = mention.contains(&w.version);
            lines.push((
                w.issued_ms,
                star,
                format!(
                    "{}{:>9} n{:<2} {what:<16} version {}  {fate}",
                    if star { "*" } else { " " },
                    secs(w.issued_ms),
                    w.node,
                    w.version
                ),
            ));
        }
        for (version, excuse, node, t) in self.excused.get(key).into_iter().flatten() {
            let why = match excuse {
                Excuse::Forgotten => "dropped by the pull-first rejoin rule",
                Excuse::PurgedWhileStale => "purged while stale (rejoining pull-first)",
                Excuse::Departed => "only held by a node that left",
                Excuse::ExpiredUnseen => "expired before it reached any other node",
            };
            lines.push((
                *t,
                false,
                format!(" {:>9} n{node:<2} version {version} {why}", secs(*t)),
            ));
        }
        lines.sort_by_key(|(t, ..)| *t);
        let first_kept = lines.len().saturating_sub(max);
        let mut out = String::new();
        let mut skipped = 0;
        for (i, (_, star, line)) in lines.iter().enumerate() {
            if i < first_kept && !star {
                skipped += 1;
                continue;
            }
            if skipped > 0 {
                let _ = writeln!(out, "     ... {skipped} events");
                skipped = 0;
            }
            let _ = writeln!(out, "    {line}");
        }
        out
    }
}

/// Simulated ms as seconds for humans.
pub fn secs(ms: u64) -> String {
    format!("{:.3}s", ms as f64 / 1e3)
}

/// A value, shortened for reports.
pub fn short(value: &Bytes) -> String {
    let s = String::from_utf8_lossy(value);
    if s.len() > 14 {
        format!("{}..({} bytes)", &s[..10], value.len())
    } else {
        s.into_owned()
    }
}
