//! Anti-entropy rounds of [`Core`]: starting one, answering each of its messages (the `Ae*` steps of
//! [`Message`]) and the bookkeeping of the rounds this node started. The protocol is described in the module
//! docs of `replication`.

use std::collections::{HashMap, VecDeque};

use rand::seq::SliceRandom;
use rand::Rng;

use super::core::{chunks, Core, CoreEvent, Effects};
use super::message::Message;
use crate::crdt::digest::{content_tag, BUCKETS_PER_GROUP, GROUPS};
use crate::crdt::{Entry, LwwMap, NodeId, Version};

/// Rounds this node finished lately, remembered so that parts of their answer that arrive after the last
/// one (deliveries to a peer are pipelined, so they may overtake each other) are still taken in.
pub(super) const RECENT_ROUNDS: usize = 16;

/// An anti-entropy round this node started.
#[derive(Debug, Clone)]
pub(super) struct Round {
    peer: NodeId,
    started_ms: u64,
    /// When the round last moved a step on: a round that compares many buckets asks for their versions a
    /// batch at a time, and is abandoned only when it stops moving, however long it takes in all.
    touched_ms: u64,
    repaired: usize,
    /// The peer's authority, from its root reply.
    peer_authority: u8,
    /// Differing buckets whose versions are still to be sent, after the batch under way.
    pending: Vec<u16>,
}

/// Rounds finished lately, oldest first (see [`RECENT_ROUNDS`]).
pub(super) type Recent = VecDeque<(u64, NodeId)>;

/// Most bytes a version takes in an `AeVersions` message besides its key (protobuf tags, lengths and
/// varints of the clock, node and tag).
const VERSION_WIRE_BYTES: usize = 40;

impl Core {
    /// Start an anti-entropy round with a random alive member now (also used by tests and benchmarks).
    pub fn start_anti_entropy(&mut self, now_ms: u64, state: &LwwMap, fx: &mut Effects) -> Option<NodeId> {
        if self.membership.refusing() {
            return None; // silent: see `twins`
        }
        // A big repair still going batch by batch is not doubled by a second round over the same
        // differences; one that has stalled (a lost message) does not hold the next back.
        let interval = self.cfg.anti_entropy_interval_ms;
        let moving = |r: &Round| !r.pending.is_empty() && now_ms.saturating_sub(r.touched_ms) < interval;
        if self.rounds.values().any(moving) {
            return None;
        }
        let alive: Vec<NodeId> = self.membership.alive().map(|m| m.record.id).collect();
        let peer = *alive.choose(&mut self.rng)?;
        let session = self.rng.gen::<u64>();
        self.rounds.insert(
            session,
            Round {
                peer,
                started_ms: now_ms,
                touched_ms: now_ms,
                repaired: 0,
                peer_authority: 0,
                pending: Vec::new(),
            },
        );
        fx.send(
            peer,
            Message::AeRoot {
                session,
                root: state.digest().root(),
                authority: self.authority(now_ms),
            },
        );
        Some(peer)
    }

    /// Step 1 arrived ([`Message::AeRoot`], we respond): answer with our group digests, or `None` if the roots
    /// are equal.
    pub(super) fn on_ae_root(
        &mut self,
        now_ms: u64,
        from: NodeId,
        session: u64,
        root: u128,
        state: &LwwMap,
        fx: &mut Effects,
    ) {
        let authority = self.authority(now_ms);
        let groups = (root != state.digest().root()).then(|| state.digest().groups().to_vec());
        if groups.is_none() {
            self.synced(now_ms);
        }
        fx.send(
            from,
            Message::AeRootReply {
                session,
                groups,
                authority,
            },
        );
    }

    /// Step 2 arrived ([`Message::AeRootReply`], we initiated): ask for the bucket digests of the groups that
    /// differ, or end the round.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_ae_root_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        session: u64,
        groups: Option<Vec<u128>>,
        authority: u8,
        state: &LwwMap,
        fx: &mut Effects,
    ) {
        if !self.round_with(session, from) {
            return;
        }
        if let Some(round) = self.rounds.get_mut(&session) {
            round.peer_authority = authority;
        }
        match groups {
            None => self.finish(session, now_ms, true, fx),
            Some(theirs) => {
                let mine = state.digest().groups();
                let differing: Vec<u8> = (0..GROUPS)
                    .filter(|&g| theirs.get(g) != Some(&mine[g]))
                    .map(|g| g as u8)
                    .collect();
                if differing.is_empty() {
                    self.finish(session, now_ms, true, fx);
                } else {
                    fx.send(
                        from,
                        Message::AeGroups {
                            session,
                            groups: differing,
                        },
                    );
                }
            }
        }
    }

    /// Step 3 arrived ([`Message::AeGroups`], we respond): send the bucket digests of the asked groups.
    pub(super) fn on_ae_groups(&self, from: NodeId, session: u64, groups: Vec<u8>, state: &LwwMap, fx: &mut Effects) {
        let mut buckets = Vec::new();
        for &g in &groups {
            let first = g as usize * BUCKETS_PER_GROUP;
            for (i, &digest) in state.digest().group_buckets(g).iter().enumerate() {
                if digest != 0 {
                    buckets.push(((first + i) as u16, digest));
                }
            }
        }
        fx.send(
            from,
            Message::AeBuckets {
                session,
                groups,
                buckets,
            },
        );
    }

    /// Step 4 arrived ([`Message::AeBuckets`], we initiated): send the versions we hold in the buckets that
    /// differ.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_ae_buckets(
        &mut self,
        now_ms: u64,
        from: NodeId,
        session: u64,
        groups: Vec<u8>,
        buckets: Vec<(u16, u128)>,
        state: &LwwMap,
        fx: &mut Effects,
    ) {
        if !self.round_with(session, from) {
            return;
        }
        let theirs: HashMap<u16, u128> = buckets.into_iter().collect();
        let mut differing = Vec::new();
        for &g in &groups {
            let first = g as usize * BUCKETS_PER_GROUP;
            for (i, &mine) in state.digest().group_buckets(g).iter().enumerate() {
                if self.cfg.faults.skip_last_bucket && i == BUCKETS_PER_GROUP - 1 {
                    continue; // test-only fault injection, see `Faults`
                }
                let bucket = (first + i) as u16;
                // Bucket digests travel truncated to 64 bits (see `Message::AeBuckets`).
                if theirs.get(&bucket).copied().unwrap_or(0) as u64 != mine as u64 {
                    differing.push(bucket);
                }
            }
        }
        // Taken from the back a batch at a time: keep the lowest buckets last so batches go in order.
        differing.reverse();
        if let Some(round) = self.rounds.get_mut(&session) {
            round.pending = differing;
        }
        self.send_versions(now_ms, session, state, fx);
    }

    /// Send the peer of round `session` the versions held in the next batch of its pending buckets: whole
    /// buckets (the peer compares a bucket against everything we hold in it) up to `max_message_bytes` of
    /// keys and versions, at least one bucket. Two nodes a million keys apart differ in every bucket, and one
    /// message of all their versions would be far past any frame limit.
    fn send_versions(&mut self, now_ms: u64, session: u64, state: &LwwMap, fx: &mut Effects) {
        let authority = self.authority(now_ms);
        let max_bytes = self.cfg.max_message_bytes;
        let Some(round) = self.rounds.get_mut(&session) else {
            return;
        };
        round.touched_ms = now_ms;
        let (mut buckets, mut versions, mut bytes) = (Vec::new(), Vec::new(), 0);
        while let Some(&bucket) = round.pending.last() {
            let batch: Vec<(String, Version, u64)> = state
                .bucket_entries(bucket)
                .map(|e| (e.key.to_string(), e.version, content_tag(e)))
                .collect();
            let size: usize = batch.iter().map(|(k, ..)| k.len() + VERSION_WIRE_BYTES).sum();
            if !buckets.is_empty() && bytes + size > max_bytes {
                break;
            }
            round.pending.pop();
            bytes += size;
            buckets.push(bucket);
            versions.extend(batch);
        }
        fx.send(
            round.peer,
            Message::AeVersions {
                session,
                buckets,
                versions,
                authority,
            },
        );
    }

    /// Step 5 arrived ([`Message::AeVersions`], we respond): send the entries newer here and the keys we want.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_ae_versions(
        &mut self,
        now_ms: u64,
        from: NodeId,
        session: u64,
        buckets: Vec<u16>,
        versions: Vec<(String, Version, u64)>,
        authority: u8,
        state: &LwwMap,
        fx: &mut Effects,
    ) {
        let defer = self.defers_to(now_ms, authority);
        let theirs: HashMap<String, (Version, u64)> = versions.into_iter().map(|(k, v, tag)| (k, (v, tag))).collect();
        let mut newer_here = Vec::new();
        // Same version, different content: only a bug, a corrupted import or a bad peer makes these, and
        // neither side's version says which is right. Both sides get ours; `Entry::precedence` picks the same
        // winner on both, and the initiator pushes its own back if it wins (see `on_ae_entries`).
        let mut conflicts = Vec::new();
        for &b in &buckets {
            for e in state.bucket_entries(b) {
                if self.is_forgetting(e) {
                    continue;
                }
                match theirs.get(e.key.as_str()) {
                    Some((v, _)) if e.version < *v => {}
                    Some((v, tag)) if e.version == *v => {
                        // Tags are never 0 (`entry_hash` is odd); 0 comes from a peer that sends none.
                        if *tag != 0 && *tag != content_tag(e) {
                            conflicts.push(e.clone());
                        }
                    }
                    _ => newer_here.push(e.clone()),
                }
            }
        }
        let mut want: Vec<String> = theirs
            .into_iter()
            .filter(|(k, (v, _))| state.get(k).is_none_or(|e| *v > e.version))
            .map(|(k, _)| k)
            .collect();
        want.sort();
        newer_here.sort_by(|a, b| a.key.cmp(&b.key));
        if defer {
            let horizon = self.purge_horizon(now_ms);
            let (old, keep): (Vec<Entry>, Vec<Entry>) = newer_here.into_iter().partition(|e| e.version.hlc < horizon);
            self.forget(now_ms, old, fx);
            newer_here = keep;
        }
        if let Some(first) = conflicts.first() {
            fx.events.push(CoreEvent::ContentConflict {
                peer: from,
                entries: conflicts.len(),
                key: first.key.to_string(),
                version: first.version,
            });
            conflicts.sort_by(|a, b| a.key.cmp(&b.key));
            newer_here.extend(conflicts);
        }
        // Big repairs travel in parts; the `want` list rides on the last one, which ends the round.
        let parts: Vec<&[Entry]> = chunks(&newer_here, self.cfg.max_message_bytes).collect();
        let n = parts.len().max(1);
        for i in 0..n {
            let entries = parts.get(i).map_or_else(Vec::new, |p| p.to_vec());
            let last = i + 1 == n;
            let want = if last { std::mem::take(&mut want) } else { Vec::new() };
            fx.send(
                from,
                Message::AeEntries {
                    session,
                    entries,
                    want,
                    last,
                },
            );
        }
        // A node that deferred has not received the peer's newer entries yet (they come in the
        // `AePush`): it stays stale until a round of its own completes.
        if !defer {
            self.synced(now_ms);
        }
        // We just compared everything with this peer: starting a round of our own right away (both
        // nodes of a fresh pair would) would repeat the work. Push ours back by half an interval.
        let later = now_ms + self.cfg.anti_entropy_interval_ms / 2;
        self.next_anti_entropy_ms = self.next_anti_entropy_ms.max(later);
    }

    /// Step 6 arrived ([`Message::AeEntries`], we initiated): take the entries, push back the wanted ones, and
    /// end the round on the `last` part. (Step 7, [`Message::AePush`], is taken in by [`Core::accept`].)
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_ae_entries(
        &mut self,
        now_ms: u64,
        from: NodeId,
        session: u64,
        entries: Vec<Entry>,
        want: Vec<String>,
        last: bool,
        state: &LwwMap,
        fx: &mut Effects,
    ) {
        if !self.round_with(session, from) {
            if self.recent.contains(&(session, from)) {
                // A part that the last one overtook: its entries are as good as a delta's.
                self.accept(now_ms, from, entries, state, fx);
            }
            return;
        }
        if let Some(round) = self.rounds.get_mut(&session) {
            round.repaired += entries.len() + want.len();
            round.touched_ms = now_ms;
        }
        let defer = self
            .rounds
            .get(&session)
            .is_some_and(|r| self.defers_to(now_ms, r.peer_authority));
        // Same-version entries whose content differs from ours (see `on_ae_versions`): if ours wins the
        // tie-break, the peer gets it back in the push, so one round repairs both sides.
        let winners: Vec<Entry> = entries
            .iter()
            .filter_map(|e| {
                state
                    .get(&e.key)
                    .filter(|held| held.version == e.version && held.supersedes(e))
            })
            .cloned()
            .collect();
        self.accept(now_ms, from, entries, state, fx);
        let mut wanted: Vec<Entry> = want
            .iter()
            .filter_map(|k| state.get(k).filter(|e| !self.is_forgetting(e)).cloned())
            .collect();
        if defer {
            // The peer lacks these or holds older versions. Old ones are the peer's to decide: drop
            // them here; if the peer does hold a version, the next round brings it back.
            let horizon = self.purge_horizon(now_ms);
            let (old, keep): (Vec<Entry>, Vec<Entry>) = wanted.into_iter().partition(|e| e.version.hlc < horizon);
            self.forget(now_ms, old, fx);
            wanted = keep;
        }
        wanted.extend(winners);
        for part in chunks(&wanted, self.cfg.max_message_bytes) {
            fx.send(
                from,
                Message::AePush {
                    session,
                    entries: part.to_vec(),
                },
            );
        }
        if last {
            if self.rounds.get(&session).is_some_and(|r| !r.pending.is_empty()) {
                self.send_versions(now_ms, session, state, fx);
            } else {
                self.finish(session, now_ms, false, fx);
            }
        }
    }

    /// Abandon the rounds this node started that have not moved for `anti_entropy_timeout_ms`.
    pub(super) fn expire_rounds(&mut self, now_ms: u64, fx: &mut Effects) {
        let timeout = self.cfg.anti_entropy_timeout_ms;
        let mut expired: Vec<(u64, NodeId)> = self
            .rounds
            .iter()
            .filter(|(_, r)| now_ms.saturating_sub(r.touched_ms) > timeout)
            .map(|(s, r)| (*s, r.peer))
            .collect();
        expired.sort();
        for (session, peer) in expired {
            self.rounds.remove(&session);
            fx.events.push(CoreEvent::AntiEntropyTimedOut { peer });
        }
    }

    /// Whether `session` is a round we started with `from`.
    fn round_with(&self, session: u64, from: NodeId) -> bool {
        self.rounds.get(&session).is_some_and(|r| r.peer == from)
    }

    fn finish(&mut self, session: u64, now_ms: u64, in_sync: bool, fx: &mut Effects) {
        if let Some(round) = self.rounds.remove(&session) {
            if self.recent.len() == RECENT_ROUNDS {
                self.recent.pop_front();
            }
            self.recent.push_back((session, round.peer));
            self.synced(now_ms);
            fx.events.push(CoreEvent::AntiEntropyDone {
                peer: round.peer,
                repaired: round.repaired,
                in_sync,
                started_ms: round.started_ms,
            });
        }
    }
}
