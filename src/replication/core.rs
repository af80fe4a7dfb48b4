//! [`Core`]: the replication state machine of one node. See the module docs of `replication`. Its
//! anti-entropy rounds are in the sibling module `anti_entropy`.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::anti_entropy::{Recent, Round};
use super::clock::{judge, Fence, FenceChange};
pub use super::config::{CoreConfig, Faults, LastSync};
pub use super::effects::{CoreEvent, Destination, Effects};
use super::lock::Locks;
use super::membership::{Membership, Status};
use super::message::{Message, PeerRecord};
use super::seeds::Seeds;
use crate::crdt::hlc::{beyond_drift, from_physical_ms};
use crate::crdt::{Entry, LwwMap, NodeId, Version};

/// How often the driver ticks the core, ms (the tokio driver's interval and the simulation's tick).
pub const TICK_INTERVAL_MS: u64 = 100;
/// The time of the last completed round is handed out for persisting ([`Effects::persist_last_sync`]) at
/// most this often, ms: it only needs to be accurate to well within the tombstone TTL.
pub const LAST_SYNC_WRITE_INTERVAL_MS: u64 = 60_000;
/// Bounds of the interval between two tombstone purges, ms: a tenth of the TTL, within these.
pub const MIN_PURGE_INTERVAL_MS: u64 = 1_000;
/// See [`MIN_PURGE_INTERVAL_MS`].
pub const MAX_PURGE_INTERVAL_MS: u64 = 3_600_000;

/// The replication state machine. Driven by [`Core::on_local_commit`], [`Core::on_message`] and
/// [`Core::on_tick`]; it returns [`Effects`] and never performs I/O itself.
pub struct Core {
    pub(super) cfg: CoreConfig,
    pub(super) membership: Membership,
    seeds: Seeds,
    pub(super) rng: StdRng,
    next_gossip_ms: u64,
    pub(super) next_anti_entropy_ms: u64,
    pub(super) rounds: HashMap<u64, Round>,
    /// Rounds this node finished lately (see [`super::anti_entropy::RECENT_ROUNDS`]).
    pub(super) recent: Recent,
    /// Local time of the last anti-entropy round this node completed with a peer (either side).
    last_sync_ms: Option<u64>,
    /// The last value handed out in [`Effects::persist_last_sync`] (0: none yet in this process).
    last_sync_written_ms: u64,
    /// When the next periodic purge is due (local ms).
    next_purge_ms: u64,
    /// Restarted with a last sync older than the tombstone TTL, and not synced since (see [`Core::authority`]).
    restarted_stale: bool,
    /// Entries handed to the driver to forget whose removal has not reached the state yet (the driver applies
    /// effects asynchronously): never offered to peers meanwhile.
    forgetting: HashMap<String, Version>,
    /// Whether this node's clock is fenced (see [`super::clock`]).
    pub(super) fence: Fence,
    /// Votes and attempts on locks (see [`super::lock`]).
    pub(super) locks: Locks,
}

/// This node's view of the cluster's clocks (for the node list and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockView {
    /// This node's clock minus the cluster's median, ms (`None` before a majority could judge).
    pub offset_ms: Option<i64>,
    /// `Some(offset)` while this node is fenced.
    pub fenced: Option<i64>,
    /// The largest offset from the median a serving node may have, ms.
    pub bound_ms: u64,
    /// Each member with an estimate: its clock minus the cluster's median (or minus ours while there is no
    /// median), ms.
    pub members: Vec<(NodeId, i64)>,
}

impl Core {
    /// A core for the node described by `me`, starting at `now_ms`, with randomness from `seed`.
    pub fn new(cfg: CoreConfig, me: PeerRecord, seeds: Vec<String>, seed: u64, now_ms: u64) -> Core {
        let membership = Membership::new(me, cfg.timing);
        let mut rng = StdRng::seed_from_u64(seed);
        let first_ae = now_ms + rng.gen_range(0..=cfg.anti_entropy_interval_ms);
        Core {
            cfg,
            membership,
            seeds: Seeds::new(seeds),
            rng,
            next_gossip_ms: now_ms,
            next_anti_entropy_ms: first_ae,
            rounds: HashMap::new(),
            recent: Recent::new(),
            last_sync_ms: None,
            last_sync_written_ms: 0,
            // A driver's first tick purges right away (what a restarted node holds may have expired).
            next_purge_ms: now_ms,
            restarted_stale: false,
            forgetting: HashMap::new(),
            fence: Fence::default(),
            locks: Locks::default(),
        }
    }

    /// The largest offset from the cluster's median clock a node may have and keep taking writes: half the
    /// drift bound, so that any two serving nodes are within `max_clock_drift` of each other; never below
    /// [`MIN_CLOCK_BOUND_MS`](super::clock::MIN_CLOCK_BOUND_MS), which estimates cannot resolve.
    pub fn clock_bound_ms(&self) -> u64 {
        (self.cfg.max_clock_drift_ms / 2).max(super::clock::MIN_CLOCK_BOUND_MS)
    }

    /// `Some(offset from the cluster's clock, ms)` while this node's clock is fenced.
    pub fn clock_fence(&self) -> Option<i64> {
        self.fence.fenced()
    }

    /// This node's view of the cluster's clocks.
    pub fn clock_view(&self) -> ClockView {
        let mine = self.fence.offset_ms();
        ClockView {
            offset_ms: mine,
            fenced: self.fence.fenced(),
            bound_ms: self.clock_bound_ms(),
            members: self
                .membership
                .members()
                .filter_map(|m| m.clock_skew_ms.map(|skew| (m.record.id, skew + mine.unwrap_or(0))))
                .collect(),
        }
    }

    /// Judge this node's clock against its alive members' and update the fence.
    fn judge_clock(&mut self, now_ms: u64, fx: &mut Effects) {
        let estimates: Vec<i64> = self.membership.alive().filter_map(|m| m.clock_skew_ms).collect();
        let reachable = self.membership.reachable().count();
        let judgement = judge(&estimates, reachable, self.clock_bound_ms());
        match self.fence.update(judgement, now_ms, !self.cfg.faults.no_clock_fence) {
            Some(FenceChange::Fenced { offset_ms }) => fx.events.push(CoreEvent::ClockFenced { offset_ms }),
            Some(FenceChange::Lifted { offset_ms }) => fx.events.push(CoreEvent::ClockUnfenced { offset_ms }),
            None => {}
        }
    }

    /// Restore what the node knows of its last completed anti-entropy round (persisted by the driver across
    /// restarts, see [`Effects::persist_last_sync`]). If it is older than the tombstone TTL, or
    /// [unknown](LastSync::Unknown), this node rejoins **pull-first**: peers may have purged tombstones of
    /// deletes it never saw, so for entries older than the purge horizon the peers are authoritative. Until
    /// its first round completes, such entries that a peer lacks are dropped here instead of being pushed
    /// back (which would resurrect deleted keys).
    pub fn restore_last_sync(&mut self, last: LastSync, now_ms: u64) {
        let ttl = self.cfg.tombstone_ttl_ms;
        if last != LastSync::Never {
            self.locks.restarted(now_ms, matches!(last, LastSync::At(_)));
        }
        (self.last_sync_ms, self.restarted_stale) = match last {
            LastSync::Never => (None, false),
            LastSync::Unknown => (None, true),
            LastSync::At(t) => (Some(t), now_ms.saturating_sub(t) > ttl),
        };
    }

    /// Whether this node restarted after more than the TTL without sync and has not synced since: it
    /// rejoins pull-first (see [`Core::authority`]).
    pub fn pull_first(&self) -> bool {
        self.restarted_stale
    }

    /// How far this node's view of *old* entries (older than the purge horizon) can be trusted; in a round,
    /// the side with less authority defers to the other (**pull-first**): an old entry the other side lacks
    /// is dropped here rather than pushed there, because the other side may have seen its delete and purged
    /// the tombstone.
    /// - 3, **fresh**: completed a round within the TTL;
    /// - 2, **stayed up, stale**: running, but no round for longer than the TTL (partitioned away, or alone
    ///   because every peer was down: it cannot tell which, so it defers only to fresh nodes);
    /// - 1, **restarted stale**: came back after more than the TTL without sync (it was down: anything may
    ///   have been deleted and purged meanwhile), until its first completed round;
    /// - 0, **never synced**: a new node; nobody defers to it (its lack of entries says nothing), and it has
    ///   nothing old to drop.
    ///
    /// Two sides equally stale (a whole cluster down past the TTL, or split for that long) cannot tell a
    /// purged delete from a missed write; they merge as usual. Operators must not let a partition outlast
    /// the TTL (like Cassandra's `gc_grace_seconds`).
    pub fn authority(&self, now_ms: u64) -> u8 {
        match self.last_sync_ms {
            _ if self.restarted_stale => 1,
            None => 0,
            Some(t) if now_ms.saturating_sub(t) <= self.cfg.tombstone_ttl_ms => 3,
            Some(_) => 2,
        }
    }

    /// Whether this node defers to a peer of `peer_authority` over old entries.
    pub(super) fn defers_to(&self, now_ms: u64, peer_authority: u8) -> bool {
        let mine = self.authority(now_ms);
        mine > 0 && mine < peer_authority
    }

    /// The HLC below which tombstones are purged (and old entries are peers' to decide in pull-first mode).
    pub fn purge_horizon(&self, now_ms: u64) -> u64 {
        from_physical_ms(now_ms.saturating_sub(self.cfg.tombstone_ttl_ms))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.membership.me().id
    }

    /// The member list.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Add seed addresses (e.g. found by mDNS).
    pub fn add_seeds(&mut self, seeds: impl IntoIterator<Item = String>) {
        let me = self.membership.me().grpc_addr.clone();
        self.seeds.add(seeds, Some("discovered"), &me);
    }

    /// Replace the seeds found through `origin` (a `dns:NAME:PORT` peer) with what it resolves to now.
    pub fn replace_seeds(&mut self, origin: &str, seeds: Vec<String>) {
        let me = self.membership.me().grpc_addr.clone();
        self.seeds.replace(origin, seeds, &me);
    }

    /// The seed addresses.
    pub fn seeds(&self) -> impl Iterator<Item = &str> {
        self.seeds.addrs()
    }

    /// Whether this node has seeds but knows no reachable member: it reaches none of its seeds (wrong
    /// addresses, a network fault, or they are all down) and is on its own.
    pub fn isolated(&self) -> bool {
        !self.seeds.is_empty() && self.membership.reachable().next().is_none()
    }

    /// Contact the seeds that are due (see `seeds`): a gossip asking for a reply.
    fn contact_seeds(&mut self, now_ms: u64, fx: &mut Effects) {
        let membership = &self.membership;
        let lonely = membership.reachable().next().is_none();
        let reached = |addr: &str| membership.reachable().any(|m| m.record.grpc_addr == addr);
        let due = self.seeds.due(now_ms, lonely, reached, &mut self.rng);
        if due.is_empty() {
            return;
        }
        let records = self.membership.records();
        for addr in due {
            fx.sends.push((
                Destination::Addr(addr),
                Message::Gossip {
                    records: records.clone(),
                    reply: true,
                    now_ms,
                },
            ));
        }
    }

    /// The replication address of a member.
    pub fn address_of(&self, id: NodeId) -> Option<&str> {
        self.membership.get(id).map(|m| m.record.grpc_addr.as_str())
    }

    /// Local time of the last completed anti-entropy round, if any.
    pub fn last_sync_ms(&self) -> Option<u64> {
        self.last_sync_ms
    }

    /// Announce departure: gossip a `left` record to every reachable member.
    pub fn leave(&mut self, now_ms: u64) -> Effects {
        let mut fx = Effects::default();
        if self.membership.refusing() {
            // A leave under the id a twin runs with would tell the peers that *it* left.
            return fx;
        }
        self.membership.leave();
        let records = self.membership.records();
        for m in self.membership.reachable() {
            fx.send(
                m.record.id,
                Message::Gossip {
                    records: records.clone(),
                    reply: false,
                    now_ms,
                },
            );
        }
        fx
    }

    /// Whether a change the database committed is this node's to broadcast: only what it wrote itself
    /// (replicated entries are never re-broadcast, so a delta travels one hop), and never a tombstone older
    /// than the purge horizon: those are the same-version tombstones of a pull-first [`Effects::forget`],
    /// local cleanup that must not delete anything elsewhere. A driver may test changes with this before
    /// resolving their values; [`Core::on_local_commit`] applies it again.
    pub fn broadcasts(&self, now_ms: u64, version: Version, deleted: bool) -> bool {
        version.node == self.id() && !self.forgotten(now_ms, version, deleted)
    }

    /// Whether an entry imported through this node is this node's to broadcast: whoever wrote it, the node
    /// an import comes in through is its entry point into the cluster (its peers merge it and, as for any
    /// delta, do not pass it on), except a tombstone older than the purge horizon, as in
    /// [`Core::broadcasts`]. Without this an import reached the other nodes only through anti-entropy
    /// (200,000 keys took 29 s to reach two peers). [`Core::on_import`] applies it again.
    pub fn forwards_import(&self, now_ms: u64, version: Version, deleted: bool) -> bool {
        !self.forgotten(now_ms, version, deleted)
    }

    /// A tombstone older than the purge horizon: never sent (see [`Core::broadcasts`]).
    fn forgotten(&self, now_ms: u64, version: Version, deleted: bool) -> bool {
        deleted && version.hlc < self.purge_horizon(now_ms)
    }

    /// Entries the database just committed: push those [this node broadcasts](Core::broadcasts) to every
    /// reachable member.
    pub fn on_local_commit(&mut self, now_ms: u64, entries: &[Entry]) -> Effects {
        self.push(entries, |core, e| core.broadcasts(now_ms, e.version, e.deleted))
    }

    /// Entries imported through this node that the database just committed: push those it
    /// [forwards](Core::forwards_import) to every reachable member.
    pub fn on_import(&mut self, now_ms: u64, entries: &[Entry]) -> Effects {
        self.push(entries, |core, e| core.forwards_import(now_ms, e.version, e.deleted))
    }

    /// One delta of the `entries` that pass `sent` (in chunks of at most a message) to every reachable member.
    fn push(&mut self, entries: &[Entry], sent: impl Fn(&Core, &Entry) -> bool) -> Effects {
        let mine: Vec<Entry> = entries.iter().filter(|e| sent(self, e)).cloned().collect();
        let mut fx = Effects::default();
        if mine.is_empty() || self.membership.refusing() {
            return fx;
        }
        let peers: Vec<NodeId> = self.membership.reachable().map(|m| m.record.id).collect();
        for chunk in chunks(&mine, self.cfg.max_message_bytes) {
            for &peer in &peers {
                fx.send(
                    peer,
                    Message::Delta {
                        entries: chunk.to_vec(),
                    },
                );
            }
        }
        fx
    }

    /// The interval between two periodic purges, ms.
    pub fn purge_interval_ms(&self) -> u64 {
        (self.cfg.tombstone_ttl_ms / 10).clamp(MIN_PURGE_INTERVAL_MS, MAX_PURGE_INTERVAL_MS)
    }

    /// Time passes: gossip, judge members, start anti-entropy, expire rounds, purge expired tombstones and
    /// hand out the last sync time for persisting.
    pub fn on_tick(&mut self, now_ms: u64, state: &LwwMap) -> Effects {
        let mut fx = Effects::default();
        if self.membership.refusing() {
            return fx;
        }
        if now_ms >= self.next_purge_ms {
            self.next_purge_ms = now_ms + self.purge_interval_ms();
            fx.purge_below = Some(self.purge_horizon(now_ms));
        }
        if let Some(synced) = self.last_sync_ms {
            let written = self.last_sync_written_ms;
            if synced > written && (written == 0 || synced - written >= LAST_SYNC_WRITE_INTERVAL_MS) {
                self.last_sync_written_ms = synced;
                fx.persist_last_sync = Some(synced);
            }
        }
        if now_ms >= self.next_gossip_ms {
            self.next_gossip_ms = now_ms + self.cfg.gossip_interval_ms;
            self.membership.beat(state.live() as u64);
            self.gossip(now_ms, &mut fx);
        }
        self.contact_seeds(now_ms, &mut fx);
        fx.events
            .extend(self.membership.tick(now_ms).into_iter().map(CoreEvent::Peer));
        self.judge_clock(now_ms, &mut fx);
        self.expire_rounds(now_ms, &mut fx);
        self.tick_locks(now_ms, state, &mut fx);
        if now_ms >= self.next_anti_entropy_ms {
            // Jitter (0.5x to 1.5x) keeps the nodes of a cluster from synchronising their rounds.
            let interval = self.cfg.anti_entropy_interval_ms;
            self.next_anti_entropy_ms = now_ms + interval / 2 + self.rng.gen_range(0..=interval);
            self.start_anti_entropy(now_ms, state, &mut fx);
        }
        fx
    }

    fn gossip(&mut self, now_ms: u64, fx: &mut Effects) {
        let records = self.membership.records();
        let peers: Vec<NodeId> = self.membership.reachable().map(|m| m.record.id).collect();
        if let Some(&peer) = peers.choose(&mut self.rng) {
            fx.send(
                peer,
                Message::Gossip {
                    records: records.clone(),
                    reply: true,
                    now_ms,
                },
            );
        }
    }

    /// Merge a peer's [`Message::Gossip`] into the member list, and answer it if asked to.
    fn on_gossip(
        &mut self,
        now_ms: u64,
        from: NodeId,
        records: Vec<PeerRecord>,
        reply: bool,
        their_now: u64,
        fx: &mut Effects,
    ) {
        let changes = self.membership.merge(records, now_ms);
        self.report_twin(now_ms, fx);
        // A node that never synced (new, or restarted) syncs as soon as it sees a live member,
        // instead of waiting a whole anti-entropy interval.
        if self.last_sync_ms.is_none() && changes.iter().any(|c| c.status == Status::Alive) {
            self.next_anti_entropy_ms = self.next_anti_entropy_ms.min(now_ms);
        }
        self.membership.observe_clock(from, their_now as i64 - now_ms as i64);
        // Members just learned of (new, or back) that we have no clock estimate of get a gossip of their own:
        // their answer is a sample, and the clock can be judged within a round trip instead of waiting for
        // random gossip to pick each of them.
        let records = self.membership.records();
        for change in changes.iter().filter(|c| c.status == Status::Alive && c.id != from) {
            if self
                .membership
                .get(change.id)
                .is_some_and(|m| m.clock_skew_ms.is_none())
            {
                fx.send(
                    change.id,
                    Message::Gossip {
                        records: records.clone(),
                        reply: true,
                        now_ms,
                    },
                );
            }
        }
        fx.events.extend(changes.into_iter().map(CoreEvent::Peer));
        if reply {
            let records = self.membership.records();
            fx.send(
                from,
                Message::Gossip {
                    records,
                    reply: false,
                    now_ms,
                },
            );
        }
    }

    /// A message from `from` arrived at local time `now_ms`.
    pub fn on_message(&mut self, now_ms: u64, from: NodeId, msg: Message, state: &LwwMap) -> Effects {
        let mut fx = Effects::default();
        if from == self.id() || self.membership.refusing() {
            self.on_message_from_own_id(now_ms, from, &msg, &mut fx);
            return fx;
        }
        if !self.forgetting.is_empty() {
            self.forgetting
                .retain(|k, v| state.get(k).is_some_and(|e| e.version == *v && !e.deleted));
        }
        match msg {
            Message::Delta { entries } => self.accept(now_ms, from, entries, state, &mut fx),
            Message::Gossip {
                records,
                reply,
                now_ms: their_now,
            } => self.on_gossip(now_ms, from, records, reply, their_now, &mut fx),
            Message::AeRoot { session, root, .. } => self.on_ae_root(now_ms, from, session, root, state, &mut fx),
            Message::AeRootReply {
                session,
                groups,
                authority,
            } => self.on_ae_root_reply(now_ms, from, session, groups, authority, state, &mut fx),
            Message::AeGroups { session, groups } => self.on_ae_groups(from, session, groups, state, &mut fx),
            Message::AeBuckets {
                session,
                groups,
                buckets,
            } => self.on_ae_buckets(now_ms, from, session, groups, buckets, state, &mut fx),
            Message::AeVersions {
                session,
                buckets,
                versions,
                authority,
            } => self.on_ae_versions(now_ms, from, session, buckets, versions, authority, state, &mut fx),
            Message::AeEntries {
                session,
                entries,
                want,
                last,
            } => self.on_ae_entries(now_ms, from, session, entries, want, last, state, &mut fx),
            Message::AePush { entries, .. } => self.accept(now_ms, from, entries, state, &mut fx),
            msg @ (Message::LockPrepare { .. }
            | Message::LockPromise { .. }
            | Message::LockAccept { .. }
            | Message::LockAccepted { .. }) => self.on_lock_message(now_ms, from, msg, state, &mut fx),
        }
        self.forgetting
            .extend(fx.forget.iter().map(|e| (e.key.to_string(), e.version)));
        fx
    }

    /// Drop `entries` locally: hand out their same-version tombstones, and a purge right after them.
    pub(super) fn forget(&mut self, now_ms: u64, entries: impl IntoIterator<Item = Entry>, fx: &mut Effects) {
        let before = fx.forget.len();
        fx.forget
            .extend(entries.into_iter().map(|e| Entry::tombstone(e.key, e.version)));
        if fx.forget.len() > before {
            fx.purge_below = Some(self.purge_horizon(now_ms));
        }
    }

    pub(super) fn is_forgetting(&self, e: &Entry) -> bool {
        self.forgetting.get(e.key.as_str()).is_some_and(|v| *v == e.version)
    }

    /// A round completed (on either side).
    pub(super) fn synced(&mut self, now_ms: u64) {
        self.last_sync_ms = Some(now_ms);
        self.restarted_stale = false;
    }

    /// Take in entries from a peer, holding back those stamped too far ahead of our clock: a node with a
    /// bad clock must not pin keys into the future. Nothing is lost: anti-entropy offers them again, and
    /// they are applied once our clock has caught up.
    ///
    /// Tombstones older than the purge horizon are dropped too: they are garbage every node purges, and
    /// taking them back in would only make purged and unpurged nodes trade them forever.
    ///
    /// While fenced, "now" for the drift rule is the cluster's clock (ours corrected by the offset): this
    /// node stamps nothing then, and a slow clock would otherwise hold back every healthy peer's entries.
    pub(super) fn accept(&mut self, now_ms: u64, from: NodeId, entries: Vec<Entry>, state: &LwwMap, fx: &mut Effects) {
        let reference_ms = match self.fence.fenced() {
            Some(offset_ms) => (now_ms as i64).saturating_sub(offset_ms).max(0) as u64,
            None => now_ms,
        };
        let purge = self.purge_horizon(now_ms);
        let mut future = 0;
        for e in entries {
            if e.deleted && e.version.hlc < purge {
                // Expired tombstones are garbage, but one that supersedes an entry we hold says that key was
                // deleted long ago (we missed it, e.g. while away): drop our entry too, or it comes back as
                // soon as the peers have purged the tombstone. (Found by the simulation: docs/simulation.md,
                // finding 1.)
                if let Some(held) = state.get(&e.key).filter(|held| e.supersedes(held)) {
                    let held = held.clone();
                    self.forget(now_ms, [held], fx);
                }
            } else if beyond_drift(e.version.hlc, reference_ms, self.cfg.max_clock_drift_ms).is_none() {
                fx.persist.push(e);
            } else {
                future += 1;
            }
        }
        if future > 0 {
            fx.events.push(CoreEvent::ClockDriftRejected { from, entries: future });
        }
    }
}

/// Split entries into runs of at most `max_bytes` of payload (at least one entry each).
pub(super) fn chunks(entries: &[Entry], max_bytes: usize) -> impl Iterator<Item = &[Entry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        while n < rest.len() && (n == 0 || bytes + rest[n].size() <= max_bytes) {
            bytes += rest[n].size();
            n += 1;
        }
        let (part, tail) = rest.split_at(n);
        rest = tail;
        Some(part)
    })
}
