//! Small deterministic clusters of cores over an instant, lossless in-memory network. The full fault model
//! (loss, partitions, crashes, skew) is the simulation's; these tests pin down the protocol's basic moves.

use std::collections::VecDeque;

use super::*;
use crate::crdt::hlc::from_physical_ms;
use crate::crdt::{Entry, LwwMap, NodeId, Version};

pub(super) struct Node {
    pub(super) core: Core,
    pub(super) state: LwwMap,
    pub(super) up: bool,
    /// This node's clock minus true time, ms.
    skew_ms: i64,
}

impl Node {
    pub(super) fn local(&self, now_ms: u64) -> u64 {
        (now_ms as i64 + self.skew_ms) as u64
    }
}

pub(super) struct Cluster {
    pub(super) nodes: Vec<Node>,
    pub(super) now_ms: u64,
    pub(super) queue: VecDeque<(usize, NodeId, Message)>,
    sent: Vec<&'static str>,
    pub(super) events: Vec<(usize, CoreEvent)>,
}

fn record(i: usize, incarnation: u64) -> PeerRecord {
    PeerRecord {
        id: NodeId(i as u64 + 1),
        grpc_addr: format!("n{i}:2000"),
        http_addr: format!("n{i}:2001"),
        incarnation,
        heartbeat: 0,
        left: false,
        version: String::new(),
        keys: 0,
    }
}

impl Cluster {
    /// `n` nodes; node i is seeded with the addresses `seeds(i)`.
    pub(super) fn new(n: usize, seeds: impl Fn(usize) -> Vec<usize>) -> Cluster {
        Cluster::with_config(n, seeds, CoreConfig::default())
    }

    pub(super) fn with_config(n: usize, seeds: impl Fn(usize) -> Vec<usize>, cfg: CoreConfig) -> Cluster {
        let now_ms = 1_000_000;
        let nodes = (0..n)
            .map(|i| Node {
                core: Core::new(
                    cfg.clone(),
                    record(i, now_ms),
                    seeds(i).into_iter().map(|s| format!("n{s}:2000")).collect(),
                    i as u64,
                    now_ms,
                ),
                state: LwwMap::new(),
                up: true,
                skew_ms: 0,
            })
            .collect();
        Cluster {
            nodes,
            now_ms,
            queue: VecDeque::new(),
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn index_of_addr(&self, addr: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.core.membership().me().grpc_addr == addr)
    }

    pub(super) fn apply(&mut self, i: usize, fx: Effects) {
        let from = self.nodes[i].core.id();
        for e in fx.persist {
            self.nodes[i].state.merge(e);
        }
        // Ready same-version tombstones; the purge after them is left to `purge`.
        for t in fx.forget {
            assert!(t.deleted);
            self.nodes[i].state.merge(t);
        }
        for ev in fx.events {
            self.events.push((i, ev));
        }
        // The persists above are durable at once here, so what waits for them goes out with the rest.
        for (to, msg) in fx.sends.into_iter().chain(fx.after_persist) {
            let target = match to {
                Destination::Node(id) => self.nodes.iter().position(|n| n.core.id() == id),
                Destination::Addr(a) => self.index_of_addr(&a),
            };
            self.sent.push(msg.kind());
            if let Some(t) = target {
                self.queue.push_back((t, from, msg));
            }
        }
    }

    pub(super) fn deliver_all(&mut self) {
        while self.deliver_one() {}
    }

    /// Deliver the first queued message (dropped if its node is down); false once the queue is empty.
    fn deliver_one(&mut self) -> bool {
        let Some((to, from, msg)) = self.queue.pop_front() else {
            return false;
        };
        if self.nodes[to].up {
            let node = &mut self.nodes[to];
            let now = node.local(self.now_ms);
            let fx = node.core.on_message(now, from, msg, &node.state);
            self.apply(to, fx);
        }
        true
    }

    pub(super) fn tick(&mut self, ms: u64) {
        self.now_ms += ms;
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                let node = &mut self.nodes[i];
                let now = node.local(self.now_ms);
                let fx = node.core.on_tick(now, &node.state);
                self.apply(i, fx);
            }
        }
        self.deliver_all();
    }

    fn write(&mut self, i: usize, key: &str, value: &str) -> Entry {
        let hlc = from_physical_ms(self.now_ms) + self.nodes[i].state.len() as u64 + 1;
        let e = Entry::value(key, value.to_string(), Version::new(hlc, self.nodes[i].core.id()));
        self.nodes[i].state.merge(e.clone());
        let now = self.now_ms;
        let fx = self.nodes[i].core.on_local_commit(now, std::slice::from_ref(&e));
        self.apply(i, fx);
        self.deliver_all();
        e
    }

    fn anti_entropy(&mut self, i: usize) {
        self.start_anti_entropy(i);
        self.deliver_all();
    }

    /// Start a round on node `i` and queue its first message, delivering nothing yet.
    fn start_anti_entropy(&mut self, i: usize) {
        let now = self.now_ms;
        let mut fx = Effects::default();
        let node = &mut self.nodes[i];
        node.core
            .start_anti_entropy(now, &node.state, &mut fx)
            .expect("a live peer");
        self.apply(i, fx);
    }

    fn converged(&self) -> bool {
        let root = self.nodes[0].state.digest().root();
        self.nodes.iter().all(|n| n.state.digest().root() == root)
    }
}

#[test]
fn a_node_that_knows_one_member_learns_all() {
    // 0 <- 1 <- 2: node 2 only knows node 1, node 1 only node 0.
    let mut c = Cluster::new(3, |i| if i == 0 { vec![] } else { vec![i - 1] });
    for _ in 0..10 {
        c.tick(1_000);
    }
    for n in &c.nodes {
        assert_eq!(n.core.membership().alive().count(), 2, "node {} view", n.core.id());
    }
}

#[test]
fn writes_are_broadcast_to_every_member_and_not_echoed() {
    let mut c = Cluster::new(3, |i| if i == 0 { vec![] } else { vec![0] });
    for _ in 0..5 {
        c.tick(1_000);
    }
    c.sent.clear();
    let e = c.write(1, "k", "v");
    assert!(c.nodes.iter().all(|n| n.state.get("k") == Some(&e)));
    // One delta to each of the two others, and nothing sent back.
    assert_eq!(c.sent, vec!["delta", "delta"]);
}

#[test]
fn anti_entropy_repairs_differences_and_costs_little_when_in_sync() {
    let mut c = Cluster::new(2, |i| vec![1 - i]);
    for _ in 0..3 {
        c.tick(1_000);
    }
    // Shared history, then divergence that broadcasts never carried (written straight into the maps).
    for k in 0..2_000 {
        let e = Entry::value(format!("common/{k}"), "x", Version::new(10 + k, NodeId(9)));
        c.nodes[0].state.merge(e.clone());
        c.nodes[1].state.merge(e);
    }
    for k in 0..50 {
        c.nodes[0]
            .state
            .merge(Entry::value(format!("a/{k}"), "a", Version::new(5_000 + k, NodeId(1))));
        c.nodes[1]
            .state
            .merge(Entry::value(format!("b/{k}"), "b", Version::new(5_000 + k, NodeId(2))));
    }
    c.nodes[1]
        .state
        .merge(Entry::tombstone("common/7", Version::new(9_999, NodeId(2))));
    assert!(!c.converged());
    c.anti_entropy(0);
    assert!(c.converged());
    assert!(c.nodes[0].state.get("common/7").unwrap().deleted);
    assert!(c
        .events
        .iter()
        .any(|(i, e)| *i == 0 && matches!(e, CoreEvent::AntiEntropyDone { repaired: 101, .. })));
    c.sent.clear();
    c.anti_entropy(1);
    assert_eq!(c.sent, vec!["ae_root", "ae_root_reply"]);
}

#[test]
fn a_round_over_many_differing_buckets_asks_for_their_versions_a_batch_at_a_time() {
    // Small messages: 3,000 keys one side lacks differ in ~3,000 buckets, far more versions than one
    // message carries, so the round goes batch by batch and still repairs everything in one go.
    let cfg = CoreConfig {
        max_message_bytes: 8 * 1024,
        ..CoreConfig::default()
    };
    let mut c = Cluster::with_config(2, |i| vec![1 - i], cfg.clone());
    for _ in 0..3 {
        c.tick(1_000);
    }
    for k in 0..3_000 {
        let e = Entry::value(format!("only/{k:05}"), "x", Version::new(10 + k, NodeId(9)));
        c.nodes[0].state.merge(e);
    }
    c.sent.clear();
    let now = c.now_ms;
    c.start_anti_entropy(0);
    let mut checked = false;
    while c.deliver_one() {
        if !checked && c.sent.iter().filter(|k| **k == "ae_versions").count() == 2 {
            // Mid-way, a second round is not started beside the one moving; one that stopped moving for an
            // interval (a lost message) does not hold the next back (its messages are dropped here).
            checked = true;
            let node = &mut c.nodes[0];
            let mut ignored = Effects::default();
            assert!(node
                .core
                .start_anti_entropy(now + 1, &node.state, &mut ignored)
                .is_none());
            let stalled = now + cfg.anti_entropy_interval_ms;
            assert!(node
                .core
                .start_anti_entropy(stalled, &node.state, &mut ignored)
                .is_some());
        }
    }
    assert!(checked);
    assert!(c.converged());
    let batches = c.sent.iter().filter(|k| **k == "ae_versions").count();
    assert!(batches > 5, "{batches} version batches");
    assert!(c
        .events
        .iter()
        .any(|(i, e)| *i == 0 && matches!(e, CoreEvent::AntiEntropyDone { repaired: 3_000, .. })));
}

#[test]
fn a_part_of_a_repair_that_arrives_after_the_last_is_still_taken_in() {
    let cfg = CoreConfig {
        max_message_bytes: 1_024,
        ..CoreConfig::default()
    };
    let mut c = Cluster::with_config(2, |i| vec![1 - i], cfg);
    for _ in 0..3 {
        c.tick(1_000);
    }
    // Node 1 holds what node 0 lacks, in one bucket-batch but several entry parts.
    for k in 0..40 {
        let e = Entry::value(format!("b/{k}"), "y".repeat(100), Version::new(10 + k, NodeId(9)));
        c.nodes[1].state.merge(e);
    }
    c.start_anti_entropy(0);
    // Deliver step by step; when node 1 answers with its entry parts, deliver them last first.
    let mut reversed = false;
    while c.deliver_one() {
        let parts = c
            .queue
            .iter()
            .filter(|(_, _, m)| matches!(m, Message::AeEntries { .. }))
            .count();
        if parts > 1 && !reversed {
            assert_eq!(parts, c.queue.len());
            c.queue.make_contiguous().reverse();
            reversed = true;
        }
    }
    assert!(reversed);
    assert!(c.converged());
}

#[test]
fn entries_from_the_future_wait_until_the_clock_catches_up() {
    let mut c = Cluster::new(2, |i| vec![1 - i]);
    for _ in 0..3 {
        c.tick(1_000);
    }
    // Node 1's clock is an hour ahead.
    let ahead = from_physical_ms(c.now_ms + 3_600_000);
    let e = Entry::value("k", "future", Version::new(ahead, c.nodes[1].core.id()));
    c.nodes[1].state.merge(e.clone());
    let fx = c.nodes[1].core.on_local_commit(c.now_ms, std::slice::from_ref(&e));
    c.apply(1, fx);
    c.deliver_all();
    assert!(c.nodes[0].state.get("k").is_none());
    assert!(c
        .events
        .iter()
        .any(|(_, e)| matches!(e, CoreEvent::ClockDriftRejected { entries: 1, .. })));
    // Once local time has caught up, anti-entropy brings it over: nothing was lost.
    c.now_ms += 3_600_000;
    c.tick(1);
    c.anti_entropy(0);
    assert_eq!(c.nodes[0].state.get("k"), Some(&e));
}

#[test]
fn a_silent_member_becomes_suspect_then_dead_and_comes_back_after_restart() {
    let mut c = Cluster::new(3, |i| if i == 0 { vec![] } else { vec![0] });
    for _ in 0..5 {
        c.tick(1_000);
    }
    c.nodes[2].up = false;
    let status = |c: &Cluster| c.nodes[0].core.membership().get(NodeId(3)).map(|m| m.status);
    for _ in 0..7 {
        c.tick(1_000);
    }
    assert_eq!(status(&c), Some(Status::Suspect));
    for _ in 0..30 {
        c.tick(1_000);
    }
    assert_eq!(status(&c), Some(Status::Dead));
    // Restart: same id, new incarnation, heartbeat from zero.
    let now = c.now_ms;
    c.nodes[2] = Node {
        core: Core::new(CoreConfig::default(), record(2, now), vec!["n0:2000".into()], 99, now),
        state: LwwMap::new(),
        up: true,
        skew_ms: 0,
    };
    for _ in 0..5 {
        c.tick(1_000);
    }
    assert_eq!(status(&c), Some(Status::Alive));
}

/// Drop tombstones below the node's purge horizon (what the driver's purge does).
fn purge(c: &mut Cluster, i: usize) {
    let horizon = c.nodes[i].core.purge_horizon(c.now_ms);
    let dead: Vec<String> = c.nodes[i]
        .state
        .iter()
        .filter(|e| e.deleted && e.version.hlc < horizon)
        .map(|e| e.key.to_string())
        .collect();
    for k in dead {
        c.nodes[i].state.remove(&k);
    }
}

/// A node offline for longer than the tombstone TTL comes back holding a key that was deleted (and the
/// tombstone purged) meanwhile. Pull-first, it drops the key; without the rule it would resurrect it.
fn rejoin_after_ttl(restored: impl FnOnce(u64) -> LastSync) -> (bool, bool) {
    let cfg = CoreConfig {
        tombstone_ttl_ms: 60_000,
        ..CoreConfig::default()
    };
    let mut c = Cluster::with_config(2, |i| vec![1 - i], cfg.clone());
    for _ in 0..3 {
        c.tick(1_000);
    }
    let e = c.write(0, "doomed", "v");
    assert_eq!(c.nodes[1].state.get("doomed"), Some(&e));
    c.anti_entropy(1);
    let synced_at = c.now_ms;
    c.nodes[1].up = false;
    // Node 0 deletes the key; the TTL passes; the tombstone is purged.
    c.now_ms += 1_000;
    let t = Entry::tombstone("doomed", Version::new(from_physical_ms(c.now_ms), c.nodes[0].core.id()));
    c.nodes[0].state.merge(t);
    c.now_ms += 120_000;
    purge(&mut c, 0);
    assert!(c.nodes[0].state.get("doomed").is_none());
    // Node 1 restarts with its old data and its persisted last-sync time.
    let now = c.now_ms;
    let mut core = Core::new(cfg, record(1, now), vec!["n0:2000".into()], 7, now);
    let last = restored(synced_at);
    core.restore_last_sync(last, now);
    assert_eq!(core.pull_first(), last != LastSync::Never, "{last:?}");
    c.nodes[1].core = core;
    c.nodes[1].up = true;
    for _ in 0..3 {
        c.tick(1_000);
    }
    c.anti_entropy(1);
    purge(&mut c, 1);
    c.anti_entropy(0);
    (
        c.nodes[0].state.get("doomed").is_some(),
        c.nodes[1].state.get("doomed").is_some(),
    )
}

#[test]
fn a_node_back_after_the_tombstone_ttl_rejoins_pull_first_and_resurrects_nothing() {
    assert_eq!(rejoin_after_ttl(LastSync::At), (false, false));
    // The control: without the rule (the node looks new) the deleted key comes back on both nodes.
    assert_eq!(rejoin_after_ttl(|_| LastSync::Never), (true, true));
}

#[test]
fn a_node_with_data_that_lost_its_last_sync_record_rejoins_pull_first() {
    // The record is gone (deleted, never written before a crash): the node holds data, so it is not new.
    let last = |_| LastSync::recorded(None, true);
    assert_eq!(last(0), LastSync::Unknown);
    assert_eq!(rejoin_after_ttl(last), (false, false));
    // A node without data and without a record is new, and nobody defers to it.
    assert_eq!(LastSync::recorded(None, false), LastSync::Never);
    assert_eq!(LastSync::recorded(Some(5), false), LastSync::At(5));
}

#[test]
fn the_core_hands_out_purges_and_the_last_sync_time_on_its_ticks() {
    let cfg = CoreConfig {
        tombstone_ttl_ms: 60_000,
        ..CoreConfig::default()
    };
    let mut c = Cluster::with_config(2, |i| vec![1 - i], cfg);
    let interval = c.nodes[0].core.purge_interval_ms();
    assert_eq!(interval, 6_000);
    let now = c.now_ms;
    let state = LwwMap::new();
    // The first tick purges; the next one within the interval does not.
    let fx = c.nodes[0].core.on_tick(now, &state);
    assert_eq!(fx.purge_below, Some(c.nodes[0].core.purge_horizon(now)));
    assert_eq!(fx.persist_last_sync, None, "never synced: nothing to record");
    assert_eq!(c.nodes[0].core.on_tick(now + 100, &state).purge_below, None);
    assert!(c.nodes[0].core.on_tick(now + interval, &state).purge_below.is_some());
    // A completed round is recorded at once, and then at most once per LAST_SYNC_WRITE_INTERVAL_MS.
    for _ in 0..3 {
        c.tick(1_000);
    }
    c.anti_entropy(0);
    c.nodes[0].core.on_tick(c.now_ms, &state);
    c.now_ms += LAST_SYNC_WRITE_INTERVAL_MS;
    c.anti_entropy(0);
    let later = c.nodes[0].core.last_sync_ms().expect("synced");
    let fx = c.nodes[0].core.on_tick(c.now_ms, &state);
    assert_eq!(fx.persist_last_sync, Some(later));
    assert_eq!(c.nodes[0].core.on_tick(c.now_ms + 1, &state).persist_last_sync, None);
}

#[test]
fn a_node_broadcasts_only_its_own_writes_and_never_forgotten_tombstones() {
    let cfg = CoreConfig {
        tombstone_ttl_ms: 60_000,
        ..CoreConfig::default()
    };
    let mut c = Cluster::with_config(2, |i| vec![1 - i], cfg);
    for _ in 0..3 {
        c.tick(1_000);
    }
    let me = c.nodes[0].core.id();
    let now = c.now_ms;
    let horizon = c.nodes[0].core.purge_horizon(now);
    let fresh = Entry::value("mine", "v", Version::new(from_physical_ms(now), me));
    let theirs = Entry::value("theirs", "v", Version::new(from_physical_ms(now), c.nodes[1].core.id()));
    let old_tombstone = Entry::tombstone("forgotten", Version::new(horizon - 1, me));
    let old_value = Entry::value("old", "v", Version::new(horizon - 1, me));
    let core = &mut c.nodes[0].core;
    assert!(core.broadcasts(now, fresh.version, false));
    assert!(!core.broadcasts(now, theirs.version, false));
    assert!(!core.broadcasts(now, old_tombstone.version, true));
    assert!(core.broadcasts(now, old_value.version, false));
    let fx = core.on_local_commit(now, &[fresh.clone(), theirs, old_tombstone, old_value.clone()]);
    let sent: Vec<&Entry> = fx
        .sends
        .iter()
        .flat_map(|(_, m)| match m {
            Message::Delta { entries } => entries.iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(sent, vec![&fresh, &old_value]);
}

#[test]
fn a_node_pushes_what_it_imported_whoever_wrote_it_but_never_forgotten_tombstones() {
    let cfg = CoreConfig {
        tombstone_ttl_ms: 60_000,
        ..CoreConfig::default()
    };
    let mut c = Cluster::with_config(2, |i| vec![1 - i], cfg);
    for _ in 0..3 {
        c.tick(1_000);
    }
    let now = c.now_ms;
    let horizon = c.nodes[0].core.purge_horizon(now);
    let elsewhere = crate::crdt::NodeId(0xb1);
    let value = Entry::value("imported", "v", Version::new(from_physical_ms(now), elsewhere));
    let old_value = Entry::value("imported/old", "v", Version::new(horizon - 1, elsewhere));
    let old_tombstone = Entry::tombstone("imported/forgotten", Version::new(horizon - 1, elsewhere));
    let core = &mut c.nodes[0].core;
    assert!(!core.broadcasts(now, value.version, false), "not this node's write");
    assert!(core.forwards_import(now, value.version, false));
    assert!(core.forwards_import(now, old_value.version, false));
    assert!(!core.forwards_import(now, old_tombstone.version, true));
    let peer = c.nodes[1].core.id();
    let core = &mut c.nodes[0].core;
    let fx = core.on_import(now, &[value.clone(), old_tombstone, old_value.clone()]);
    let sent: Vec<(&Entry, bool)> = fx
        .sends
        .iter()
        .flat_map(|(to, m)| match m {
            Message::Delta { entries } => entries.iter().map(|e| (e, *to == Destination::Node(peer))).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(sent, vec![(&value, true), (&old_value, true)]);
}

/// Three nodes, `skews` their clocks' offsets from true time; ticked for `secs` seconds.
fn skewed(skews: &[i64], secs: u64) -> Cluster {
    let mut c = Cluster::new(skews.len(), |i| if i == 0 { vec![1] } else { vec![0] });
    let now = c.now_ms;
    for (i, (node, skew)) in c.nodes.iter_mut().zip(skews).enumerate() {
        // A core starts on its own clock.
        node.skew_ms = *skew;
        let local = node.local(now);
        let seeds = vec![format!("n{}:2000", usize::from(i == 0))];
        node.core = Core::new(CoreConfig::default(), record(i, local), seeds, i as u64, local);
    }
    for _ in 0..secs * 10 {
        c.tick(100);
    }
    c
}

fn fences(c: &Cluster) -> Vec<Option<i64>> {
    c.nodes.iter().map(|n| n.core.clock_fence()).collect()
}

#[test]
fn the_outlier_clock_is_fenced_and_the_majority_is_not() {
    for skew in [30_000, -30_000, 5_000, -5_000] {
        let c = skewed(&[0, 0, skew], 10);
        let f = fences(&c);
        assert_eq!(&f[..2], &[None, None], "skew {skew}");
        let offset = f[2].unwrap_or_else(|| panic!("skew {skew}: not fenced"));
        assert!((offset - skew).abs() < 50, "skew {skew}, estimated {offset}");
        assert!(c
            .events
            .iter()
            .any(|(i, e)| *i == 2 && matches!(e, CoreEvent::ClockFenced { .. })));
        // The healthy nodes see who is skewed and by how much.
        let view = c.nodes[0].core.clock_view();
        let id = c.nodes[2].core.id();
        let seen = view.members.iter().find(|(m, _)| *m == id).map(|(_, o)| *o);
        assert!(seen.is_some_and(|o| (o - skew).abs() < 50), "{view:?}");
    }
}

#[test]
fn without_a_majority_nobody_is_fenced_and_two_alike_fence_the_third() {
    // Two nodes: neither can tell whose clock is wrong.
    assert_eq!(fences(&skewed(&[0, 30_000], 10)), vec![None, None]);
    // Three clocks, no two within the bound: no majority agrees on a time.
    assert_eq!(fences(&skewed(&[0, 5_000, 30_000], 10)), vec![None, None, None]);
    // Two of three skewed alike are the majority: the third is the one out of line.
    let f = fences(&skewed(&[0, 30_000, 30_000], 10));
    assert!(f[0].is_some_and(|o| (o + 30_000).abs() < 50), "{f:?}");
    assert_eq!(&f[1..], &[None, None]);
}

#[test]
fn a_fenced_slow_node_takes_its_peers_entries_and_unfences_when_its_clock_is_back() {
    let mut c = skewed(&[0, 0, -30_000], 10);
    assert!(c.nodes[2].core.clock_fence().is_some());
    // Stamped by a healthy node: 30 s ahead of the slow clock, but not of the cluster's.
    let e = c.write(0, "k", "v");
    assert_eq!(c.nodes[2].state.get("k"), Some(&e));
    // The clock is fixed: the fence lifts once fresh samples show it.
    c.nodes[2].skew_ms = 0;
    for _ in 0..100 {
        c.tick(100);
    }
    assert_eq!(fences(&c), vec![None, None, None]);
    assert!(c
        .events
        .iter()
        .any(|(i, e)| *i == 2 && matches!(e, CoreEvent::ClockUnfenced { .. })));
}

#[test]
fn same_version_different_content_is_found_repaired_to_one_winner_and_reported() {
    let mut c = Cluster::new(2, |i| vec![1 - i]);
    for _ in 0..3 {
        c.tick(1_000);
    }
    // Two contents under one version (a bad import, a bug): the digests must tell them apart.
    let v = Version::new(from_physical_ms(c.now_ms), c.nodes[0].core.id());
    let a = Entry::value("k", "first", v);
    let b = Entry {
        content_type: "text/plain".into(),
        ..Entry::value("k", "second", v)
    };
    let winner = a.clone().merge(b.clone());
    for (round_by, (mine, theirs)) in [(0, (&a, &b)), (1, (&a, &b)), (0, (&b, &a)), (1, (&b, &a))] {
        c.nodes[0].state = LwwMap::new();
        c.nodes[1].state = LwwMap::new();
        c.nodes[0].state.merge(mine.clone());
        c.nodes[1].state.merge(theirs.clone());
        assert_ne!(c.nodes[0].state.digest().root(), c.nodes[1].state.digest().root());
        c.events.clear();
        c.anti_entropy(round_by);
        for n in &c.nodes {
            assert_eq!(n.state.get("k"), Some(&winner), "round by n{round_by}");
        }
        assert_eq!(c.nodes[0].state.digest().root(), c.nodes[1].state.digest().root());
        let reported: Vec<&CoreEvent> = c
            .events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| matches!(e, CoreEvent::ContentConflict { .. }))
            .collect();
        assert_eq!(
            reported,
            vec![&CoreEvent::ContentConflict {
                peer: c.nodes[round_by].core.id(),
                entries: 1,
                key: "k".into(),
                version: v,
            }]
        );
    }
}
