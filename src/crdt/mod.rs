//! The data model: last-writer-wins registers keyed by path.
//!
//! Every key holds one [`Entry`]: a value (or a tombstone) stamped with a [`Version`] `(hlc, node)`. The
//! hybrid-logical-clock timestamp orders writes by (approximately) real time; the writer's [`NodeId`] breaks
//! ties, so versions are *totally* ordered and every node that has seen the same set of writes picks the same
//! winner without talking to anyone.
//!
//! # The laws
//! [`Entry::merge`] makes entries of one key a join-semilattice:
//! - commutative: `a.merge(b) == b.merge(a)`
//! - associative: `a.merge(b).merge(c) == a.merge(b.merge(c))`
//! - idempotent:  `a.merge(a) == a`
//!
//! Those three are what make replication order-insensitive: deltas may arrive late, twice or out of order and
//! the replicas still converge. They are property-tested below. Two *different* entries with the same version
//! cannot come from a correct node (a node stamps each write with a fresh, strictly greater HLC), but a bug,
//! a corrupted import or a malicious peer could produce them; the merge then still picks deterministically by
//! comparing the contents, so the laws hold for every input, not only for well-behaved ones.
//!
//! An entry can also hold an Automerge document (`doc` is `Some`): documents of one epoch merge field by
//! field instead of by precedence. The rule between documents and LWW values is in [`doc`].

mod content_type;
pub mod digest;
pub mod doc;
pub mod expiry;
pub mod hlc;
pub mod lease;
pub mod lock;
mod map;
mod runs;

use std::cmp::Ordering;
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use content_type::ContentType;
pub use doc::DocMeta;
pub use hlc::{Hlc, ManualTime, SystemTime, TimeSource};
pub use lease::LeaseId;
pub use map::{Child, Children, LwwMap};

/// A node's identity: random, generated once and kept in the data directory.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// A fresh random id.
    pub fn random() -> NodeId {
        // Zero is reserved: `Version::ZERO` uses it to mean "no version at all".
        NodeId(rand::random::<u64>().max(1))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<NodeId> {
        if s.is_empty() || s.len() > 16 {
            return Err(Error::invalid(format!(
                "node id must be 1 to 16 hex digits, got {} characters",
                s.len()
            )));
        }
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| Error::invalid("node id must be hexadecimal"))
    }
}

/// The version of a write: `(hlc, node)`, totally ordered, hlc first.
///
/// Written as `HLC-NODE` (decimal, then 16 hex digits) in headers and JSON, e.g. `113845015691952128-00000000000000a1`;
/// `0` is [`Version::ZERO`], the version of a key that was never written.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Hybrid logical clock timestamp; see [`hlc`].
    pub hlc: u64,
    /// The node that made the write; breaks ties between equal timestamps.
    pub node: NodeId,
}

impl Version {
    /// Less than every real version.
    pub const ZERO: Version = Version {
        hlc: 0,
        node: NodeId(0),
    };

    /// A version from its parts.
    pub fn new(hlc: u64, node: NodeId) -> Version {
        Version { hlc, node }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Version::ZERO {
            f.write_str("0")
        } else {
            write!(f, "{}-{}", self.hlc, self.node)
        }
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({self})")
    }
}

impl FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Version> {
        let s = s.trim().trim_matches('"');
        if s == "0" {
            return Ok(Version::ZERO);
        }
        let bad = || Error::invalid("a version is HLC-NODE (e.g. 113845015691952128-00000000000000a1) or 0");
        let (hlc, node) = s.split_once('-').ok_or_else(bad)?;
        if hlc.is_empty() || !hlc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let hlc = hlc.parse::<u64>().map_err(|_| bad())?;
        let node = node.parse::<NodeId>().map_err(|_| bad())?;
        Ok(Version { hlc, node })
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The content type stored when a writer gives none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A key as an entry holds it: a string stored inline when it is at most 24 bytes (most keys), so that a key
/// costs no allocation of its own (16 bytes and an allocator block less per entry), on the heap otherwise.
pub type Key = compact_str::CompactString;

/// One key's state: a value or a tombstone, with the version that wrote it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    /// The key (already validated, see [`crate::key`]).
    pub key: Key,
    /// The raw value; for a secret, the sealed envelope; empty for a tombstone.
    pub value: Bytes,
    /// The content type given by the writer.
    pub content_type: ContentType,
    /// Whether `value` is a sealed secret envelope.
    pub secret: bool,
    /// A tombstone: the key was deleted by this version.
    pub deleted: bool,
    /// Who wrote it, when (for a document: its latest edit).
    pub version: Version,
    /// `Some` for a document value ([`doc`]): `value` holds its saved Automerge bytes. `None` for an LWW value
    /// and for every tombstone.
    pub doc: Option<Box<DocMeta>>,
    /// The hybrid-clock timestamp from which an expiring value (`PUT ?ttl=`) reads as absent on every node;
    /// `None` for a permanent one. A tombstone that an expiry wrote keeps it (see [`Entry::expired`]). Never
    /// zero, so that the option takes 8 bytes (an expiry of 0 from outside means "long ago":
    /// [`expiry::at`] makes it 1).
    pub expires: Option<NonZeroU64>,
    /// The lease a value is bound to (`PUT ?lease=`): it reads as absent unless that lease is live ([`lease`]).
    /// A tombstone that the lease's end wrote keeps it.
    pub lease: Option<LeaseId>,
}

impl Entry {
    /// The document metadata, copied out of its box (`None` for an LWW value and a tombstone).
    pub fn doc_meta(&self) -> Option<DocMeta> {
        self.doc.as_deref().copied()
    }

    /// A live value.
    pub fn value(key: impl Into<Key>, value: impl Into<Bytes>, version: Version) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
            content_type: ContentType::default(),
            secret: false,
            deleted: false,
            version,
            doc: None,
            expires: None,
            lease: None,
        }
    }

    /// A tombstone.
    pub fn tombstone(key: impl Into<Key>, version: Version) -> Entry {
        Entry {
            key: key.into(),
            value: Bytes::new(),
            content_type: ContentType::new(""),
            secret: false,
            deleted: true,
            version,
            doc: None,
            expires: None,
            lease: None,
        }
    }

    /// Whether this is a live value that has not expired at hybrid-clock time `now`.
    pub fn live_at(&self, now: u64) -> bool {
        !self.deleted && self.expires.is_none_or(|at| now < at.get())
    }

    /// The tombstone an expiring value turns into once expired (or a value bound to a lease once the lease ended): same version (so it supersedes exactly this
    /// value, and no later write), deleted, no value, the expiry kept. Every node derives the same one from
    /// the same value, so they converge whichever node's sweep or which replica's copy arrives first.
    pub fn expired(&self) -> Entry {
        Entry {
            expires: self.expires,
            lease: self.lease,
            ..Entry::tombstone(self.key.clone(), self.version)
        }
    }

    /// The total order merge uses: version first, then (only for equal versions, which a correct cluster never
    /// produces for different contents) the contents, so that the choice is deterministic on every node.
    ///
    /// The epoch ([`Entry::epoch`]) comes before the version: between a document and an LWW value or a
    /// tombstone the later creation decides ([`doc`]). For LWW entries the epoch is the version, so their order
    /// is the version order.
    pub fn precedence(&self, other: &Entry) -> Ordering {
        self.epoch()
            .cmp(&other.epoch())
            .then_with(|| self.version.cmp(&other.version))
            .then_with(|| self.deleted.cmp(&other.deleted))
            .then_with(|| {
                self.doc_meta()
                    .map(|d| (d.changes, d.heads))
                    .cmp(&other.doc_meta().map(|d| (d.changes, d.heads)))
            })
            .then_with(|| self.value.cmp(&other.value))
            .then_with(|| self.content_type.cmp(&other.content_type))
            .then_with(|| self.secret.cmp(&other.secret))
            .then_with(|| self.expires.cmp(&other.expires))
            .then_with(|| self.lease.cmp(&other.lease))
    }

    /// Whether `self` should replace `current` (strictly greater in [`Entry::precedence`]).
    pub fn supersedes(&self, current: &Entry) -> bool {
        self.precedence(current) == Ordering::Greater
    }

    /// The epoch: a document's creation version, any other entry's own version.
    pub fn epoch(&self) -> Version {
        self.doc.as_ref().map_or(self.version, |d| d.created)
    }

    /// Whether `self` and `other` are two states of one document (same epoch), which merge field by field.
    pub fn same_document(&self, other: &Entry) -> bool {
        matches!((&self.doc, &other.doc), (Some(a), Some(b)) if a.created == b.created)
    }

    /// Whether this is a document's broadcast delta ([`DocMeta::delta`]): only the database applies one.
    pub fn is_delta(&self) -> bool {
        self.doc.as_ref().is_some_and(|d| d.delta)
    }

    /// The join of two entries of the same key: for two plain documents of one epoch, the union of their
    /// changes ([`doc::join`]); otherwise the one with the greater precedence (a secret document needs the
    /// key to be joined, see [`doc`]).
    pub fn merge(self, other: Entry) -> Entry {
        debug_assert_eq!(self.key, other.key, "merging entries of different keys");
        if self.same_document(&other) && !self.secret && !other.secret && !self.is_delta() && !other.is_delta() {
            if let Ok(joined) = doc::join_plain(&self, &other) {
                return joined;
            }
        }
        if other.supersedes(&self) {
            other
        } else {
            self
        }
    }

    /// Bytes this entry accounts for in size estimates.
    pub fn size(&self) -> usize {
        self.key.len()
            + self.value.len()
            + self.content_type.len()
            + 24
            + if self.doc.is_some() { 32 } else { 0 }
            + if self.expires.is_some() { 8 } else { 0 }
            + if self.lease.is_some() { 8 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Eleven entries fill a B-tree node of the map: at 112 bytes one node is in mimalloc's 1,280-byte size
    /// class; 8 bytes more would move it to the 1,536-byte one (~23 MB more per million keys).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_entry_is_112_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 112);
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        // Small domains so that equal versions (and equal-version-different-content) actually occur.
        (
            0u64..4,
            0u64..3,
            any::<bool>(),
            prop::collection::vec(0u8..3, 0..3),
            any::<bool>(),
            prop::sample::select(vec![DEFAULT_CONTENT_TYPE, "text/plain", "a"]),
            prop::option::of(1u64..3),
            prop::option::of(1u64..3),
        )
            .prop_map(|(hlc, node, deleted, value, secret, content_type, expires, lease)| {
                let version = Version::new(hlc, NodeId(node));
                let lease = lease.and_then(LeaseId::new);
                let expires = expires.and_then(NonZeroU64::new);
                if deleted {
                    Entry {
                        expires,
                        lease,
                        ..Entry::tombstone("k", version)
                    }
                } else {
                    Entry {
                        secret,
                        content_type: content_type.into(),
                        expires,
                        lease,
                        ..Entry::value("k", value, version)
                    }
                }
            })
    }

    /// Two entries of one version whose contents differ (a bug, a bad import, a tampered peer).
    fn arb_conflict() -> impl Strategy<Value = (Entry, Entry)> {
        (arb_entry(), arb_entry())
            .prop_map(|(a, b)| {
                (
                    a.clone(),
                    Entry {
                        version: a.version,
                        ..b
                    },
                )
            })
            .prop_filter("different contents", |(a, b)| a != b)
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arb_entry(), b in arb_entry()) {
            prop_assert_eq!(a.clone().merge(b.clone()), b.merge(a));
        }

        #[test]
        fn merge_is_associative(a in arb_entry(), b in arb_entry(), c in arb_entry()) {
            prop_assert_eq!(
                a.clone().merge(b.clone()).merge(c.clone()),
                a.merge(b.merge(c))
            );
        }

        #[test]
        fn merge_is_idempotent(a in arb_entry()) {
            prop_assert_eq!(a.clone().merge(a.clone()), a);
        }

        #[test]
        fn merge_keeps_the_greatest_version(a in arb_entry(), b in arb_entry()) {
            let winner = a.clone().merge(b.clone());
            prop_assert_eq!(winner.version, a.version.max(b.version));
        }

        /// Same version, different content: the laws still hold, the winner is one of the two whichever
        /// side merges, and the digest tells the two apart (so anti-entropy finds and repairs the pair).
        #[test]
        fn a_same_version_conflict_merges_to_one_deterministic_winner((a, b) in arb_conflict(), c in arb_entry()) {
            let winner = a.clone().merge(b.clone());
            prop_assert!(winner == a || winner == b);
            prop_assert_eq!(&winner, &b.clone().merge(a.clone()));
            prop_assert_eq!(winner.clone().merge(a.clone()), winner.clone());
            prop_assert_eq!(
                a.clone().merge(b.clone()).merge(c.clone()),
                a.clone().merge(b.clone().merge(c))
            );
            prop_assert_ne!(digest::entry_hash(&a), digest::entry_hash(&b));
            let mut here = LwwMap::new();
            here.merge(a.clone());
            here.merge(b.clone());
            let mut there = LwwMap::new();
            there.merge(b);
            there.merge(a);
            prop_assert_eq!(here.get("k"), Some(&winner));
            prop_assert_eq!(here.digest().root(), there.digest().root());
        }

        #[test]
        fn version_text_round_trips(hlc in 1u64.., node in any::<u64>()) {
            let v = Version::new(hlc, NodeId(node));
            prop_assert_eq!(v.to_string().parse::<Version>().unwrap(), v);
        }
    }

    #[test]
    fn version_parse_rejects_garbage() {
        for bad in [
            "",
            "x",
            "-",
            "12-",
            "-ab",
            "12-zz",
            "1.5-ab",
            "+1-ab",
            "12-00000000000000001",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} parsed");
        }
        assert_eq!("0".parse::<Version>().unwrap(), Version::ZERO);
        assert_eq!("\"5-a\"".parse::<Version>().unwrap(), Version::new(5, NodeId(10)));
    }

    #[test]
    fn a_tombstone_with_a_greater_version_wins() {
        let live = Entry::value("k", "v", Version::new(1, NodeId(1)));
        let dead = Entry::tombstone("k", Version::new(2, NodeId(1)));
        assert!(live.clone().merge(dead.clone()).deleted);
        assert!(!Entry::value("k", "v", Version::new(3, NodeId(1))).merge(dead).deleted);
    }
}
