//! The messages replication cores exchange, as domain types. The gRPC adapter maps them to protobuf in
//! one `convert` module; the simulation passes them as they are.

use crate::crdt::lock::Ballot;
use crate::crdt::{Entry, NodeId, Version};

/// What a node knows about a member (itself included), as gossiped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// The member's id.
    pub id: NodeId,
    /// Where its replication (gRPC) endpoint listens, as `host:port`.
    pub grpc_addr: String,
    /// Where its HTTP API listens, as `host:port` (for operators and the UI).
    pub http_addr: String,
    /// Start time of the member's current process (ms): a restarted node has a greater incarnation, so its
    /// fresh heartbeat counter is not mistaken for an old one.
    pub incarnation: u64,
    /// Counter the member increments every gossip interval; it only grows within an incarnation.
    pub heartbeat: u64,
    /// Whether the member announced that it is leaving.
    pub left: bool,
    /// The member's software version (`CARGO_PKG_VERSION`); empty from a member too old to say.
    pub version: String,
    /// Live keys the member held at its last heartbeat (for operators: a member far behind the others
    /// stands out). Informational only: no protocol rule reads it.
    pub keys: u64,
}

impl PeerRecord {
    /// Whether `self` is newer news about the member than `other`.
    pub fn newer_than(&self, other: &PeerRecord) -> bool {
        (self.incarnation, self.heartbeat, self.left) > (other.incarnation, other.heartbeat, other.left)
    }
}

/// A message between two cores of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Newly committed local writes, pushed to every live peer.
    Delta { entries: Vec<Entry> },
    /// Push-pull membership gossip: the sender's view; with `reply`, the receiver answers with its own.
    /// `now_ms` is the sender's wall clock when it sent the message (for clock-skew estimates).
    Gossip {
        records: Vec<PeerRecord>,
        reply: bool,
        now_ms: u64,
    },
    /// Anti-entropy step 1 (initiator): my root digest, and my [authority](crate::replication::Core::authority)
    /// over old entries.
    AeRoot { session: u64, root: u128, authority: u8 },
    /// Step 2 (responder): `None` if the roots are equal (the round ends), else my group digests.
    AeRootReply {
        session: u64,
        groups: Option<Vec<u128>>,
        authority: u8,
    },
    /// Step 3 (initiator): send me the bucket digests of these groups.
    AeGroups { session: u64, groups: Vec<u8> },
    /// Step 4 (responder): bucket digests of the asked groups, non-zero ones only, as `(bucket, digest)`.
    /// Only the low 64 bits of each digest travel (the high ones arrive as zero) and are compared: with
    /// 1,000 differences among 1,000,000 keys every group differs, and this message carries all 65,536
    /// buckets, so halving it matters more than the 2^-64 chance of missing one difference until the bucket
    /// next changes.
    AeBuckets {
        session: u64,
        groups: Vec<u8>,
        buckets: Vec<(u16, u128)>,
    },
    /// Step 5 (initiator): the versions I hold in the buckets that differ, as `(key, version, tag)`; the
    /// tag ([`crate::crdt::digest::content_tag`]) tells equal versions of different content apart.
    AeVersions {
        session: u64,
        buckets: Vec<u16>,
        versions: Vec<(String, Version, u64)>,
        authority: u8,
    },
    /// Step 6 (responder): entries newer on my side (in parts if large) and, on the `last` part, the keys
    /// I want from you.
    AeEntries {
        session: u64,
        entries: Vec<Entry>,
        want: Vec<String>,
        last: bool,
    },
    /// Step 7 (initiator): the wanted entries. Ends the round.
    AePush { session: u64, entries: Vec<Entry> },
    /// Lock agreement, phase 1 (see [`crate::replication::lock`]): promise me `ballot` on `lock`.
    LockPrepare { lock: String, ballot: Ballot },
    /// The answer: promised (`ok`, with the lock record the member accepted or holds, if any) or refused
    /// (`promised` is the higher ballot it promised).
    LockPromise {
        lock: String,
        ballot: Ballot,
        ok: bool,
        promised: Ballot,
        accepted: Option<Entry>,
        /// How many members vote on locks as the member sees it (itself included).
        voters: u32,
    },
    /// Phase 2: accept this record of the lock (its key names the lock, its grant carries `ballot`).
    LockAccept { ballot: Ballot, entry: Entry },
    /// The answer: accepted (`ok`) or refused (`promised` is the higher ballot it promised).
    LockAccepted {
        lock: String,
        ballot: Ballot,
        ok: bool,
        promised: Ballot,
    },
}

impl Message {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Delta { .. } => "delta",
            Message::Gossip { .. } => "gossip",
            Message::AeRoot { .. } => "ae_root",
            Message::AeRootReply { .. } => "ae_root_reply",
            Message::AeGroups { .. } => "ae_groups",
            Message::AeBuckets { .. } => "ae_buckets",
            Message::AeVersions { .. } => "ae_versions",
            Message::AeEntries { .. } => "ae_entries",
            Message::AePush { .. } => "ae_push",
            Message::LockPrepare { .. } => "lock_prepare",
            Message::LockPromise { .. } => "lock_promise",
            Message::LockAccept { .. } => "lock_accept",
            Message::LockAccepted { .. } => "lock_accepted",
        }
    }
}
