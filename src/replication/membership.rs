//! Membership: who is in the cluster and who is alive, by gossip-style failure detection.
//!
//! Every member owns a [`PeerRecord`] with a heartbeat counter it bumps each gossip interval. Records travel
//! by push-pull gossip with one random peer per interval, so a node that knows one member learns them all,
//! and a heartbeat reaches everyone in O(log n) intervals. A member whose heartbeat has not advanced (as seen
//! *here*, through any path) for `suspect_after` is **suspect**, for `dead_after` **dead**: this is the
//! gossip-style failure detector of van Renesse, Minsky and Hayden (1998). It needs no direct probe, so a
//! member reachable only through others stays alive, and a partitioned one is declared dead on the other
//! side only.
//!
//! Pitfalls handled:
//! - **Restarts**: the incarnation is the start time of the member's process, so a restarted node (same id,
//!   heartbeat back at 0) supersedes its old record instead of looking stale. A node that hears of an
//!   incarnation of itself newer than its own (its previous process ran on a clock that was ahead) takes
//!   one past it.
//! - **Zombies**: dead members are not gossiped, and their record is kept (as dead) for `forget_after`, so
//!   an old copy of their record arriving late cannot revive them; only a genuinely newer heartbeat can.
//! - **Unbounded growth**: after `forget_after` dead members are dropped.
//! - **Duplicate ids** (a copied data directory or VM image): two live processes under one id would take
//!   incarnations past each other forever, and peers would flip between their addresses. A stale record of
//!   a previous process can supersede ours once (see Restarts); being superseded *again*, by a record one
//!   past the incarnation we took, is a live process answering us: a [`Twin`]. So is a gossip that comes
//!   from our own id with another process's record. The younger of the two (fewer heartbeats, which count
//!   gossip intervals since its start) stops serving; if they started within [`TWIN_MARGIN_BEATS`] of each
//!   other neither can tell, and both do.
//!
//! Why not SWIM (`foca`): this detector is ~200 lines, deterministic under our simulator with no timer
//! plumbing, and fits clusters of tens of nodes. SWIM's advantages (constant message load per member, faster
//! detection) matter at hundreds of nodes; the core's membership interface would let it replace this one.

use std::collections::BTreeMap;

use super::clock::ClockSamples;
use super::message::PeerRecord;
use crate::crdt::NodeId;

/// Liveness of a member as this node judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Heartbeats advance.
    Alive,
    /// No heartbeat progress for a while: still sent deltas, not trusted for anti-entropy.
    Suspect,
    /// Presumed gone: no traffic; anti-entropy repairs it if it comes back.
    Dead,
    /// Announced its departure.
    Left,
}

impl Status {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
            Status::Left => "left",
        }
    }
}

/// Failure-detector timing, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// No heartbeat progress for this long: suspect.
    pub suspect_after_ms: u64,
    /// No heartbeat progress for this long: dead.
    pub dead_after_ms: u64,
    /// Dead (or left) for this long: forgotten.
    pub forget_after_ms: u64,
}

/// A member as seen from here.
#[derive(Debug, Clone)]
pub struct Member {
    /// The freshest record known.
    pub record: PeerRecord,
    /// Current judgement.
    pub status: Status,
    /// Local time (ms) when the record last became newer.
    pub last_progress_ms: u64,
    /// Estimated `their clock - our clock` in ms, from their recent direct gossip (see `clock`).
    pub clock_skew_ms: Option<i64>,
    /// The samples behind the estimate.
    pub clock_samples: ClockSamples,
}

/// A change of a member's status (for logs, metrics and events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The member.
    pub id: NodeId,
    /// Its new status.
    pub status: Status,
}

/// Heartbeats (gossip intervals) within which two processes under one id count as started together.
pub const TWIN_MARGIN_BEATS: u64 = 3;

/// Another live process found running under this node's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twin {
    /// Its replication address.
    pub grpc_addr: String,
    /// Whether this process must stop serving: it is the younger one, or they cannot be told apart.
    pub refuse: bool,
}

/// The member list of one node.
#[derive(Debug, Clone)]
pub struct Membership {
    me: PeerRecord,
    members: BTreeMap<NodeId, Member>,
    timing: Timing,
    /// This process has taken an incarnation past a record of its own id once.
    superseded: bool,
    /// Another live process under our id, once found.
    twin: Option<Twin>,
    /// A twin found and not yet reported (see [`Membership::take_new_twin`]).
    new_twin: bool,
}

impl Membership {
    /// A list holding only this node.
    pub fn new(me: PeerRecord, timing: Timing) -> Membership {
        Membership {
            me,
            members: BTreeMap::new(),
            timing,
            superseded: false,
            twin: None,
            new_twin: false,
        }
    }

    /// Another live process under this node's id, if one was found.
    pub fn twin(&self) -> Option<&Twin> {
        self.twin.as_ref()
    }

    /// The twin found since the last call, once.
    pub fn take_new_twin(&mut self) -> Option<Twin> {
        std::mem::take(&mut self.new_twin).then(|| self.twin.clone()).flatten()
    }

    /// Whether this process must stay silent: a twin was found and this is the one to stop.
    pub fn refusing(&self) -> bool {
        self.twin.as_ref().is_some_and(|t| t.refuse)
    }

    /// A record of our own id that arrived through a peer's gossip.
    fn own_record(&mut self, record: &PeerRecord) {
        if !record.newer_than(&self.me) || self.refusing() {
            return;
        }
        if self.superseded && record.incarnation == self.me.incarnation + 1 {
            self.found_twin(record);
            if self.refusing() {
                return;
            }
        }
        // Someone remembers a *newer* incarnation of us: our previous process started with a clock ahead of
        // this one's (incarnations are start times: a fast clock fixed by a restart), and peers would take
        // our records for stale ones and us for dead. Supersede it. Against a twin, the one that keeps
        // serving keeps doing so, and wins once the other falls silent.
        self.me.incarnation = record.incarnation + 1;
        self.superseded = true;
    }

    /// A gossip sent by a process under our own id, carrying `records`: our own message come back (a seed
    /// address that is ours), or a twin's.
    pub fn gossip_from_own_id(&mut self, records: &[PeerRecord]) {
        let Some(theirs) = records.iter().find(|r| r.id == self.me.id) else {
            return;
        };
        let ours = theirs.grpc_addr == self.me.grpc_addr
            && (theirs.incarnation < self.me.incarnation
                || theirs.incarnation == self.me.incarnation && theirs.heartbeat <= self.me.heartbeat);
        if !ours {
            self.found_twin(theirs);
        }
    }

    fn found_twin(&mut self, theirs: &PeerRecord) {
        if self.twin.is_some() {
            return;
        }
        let refuse = self.me.heartbeat <= theirs.heartbeat.saturating_add(TWIN_MARGIN_BEATS);
        self.twin = Some(Twin {
            grpc_addr: theirs.grpc_addr.clone(),
            refuse,
        });
        self.new_twin = true;
    }

    /// This node's own record.
    pub fn me(&self) -> &PeerRecord {
        &self.me
    }

    /// Bump our heartbeat (once per gossip interval), with the live keys we now hold.
    pub fn beat(&mut self, keys: u64) {
        self.me.heartbeat += 1;
        self.me.keys = keys;
    }

    /// Mark ourselves as leaving (gossiped on the next rounds).
    pub fn leave(&mut self) {
        self.me.left = true;
        self.me.heartbeat += 1;
    }

    /// Every member but us.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One member.
    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Members worth sending data to: alive or suspect.
    pub fn reachable(&self) -> impl Iterator<Item = &Member> {
        self.members
            .values()
            .filter(|m| matches!(m.status, Status::Alive | Status::Suspect))
    }

    /// Members trusted as anti-entropy partners: alive.
    pub fn alive(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.status == Status::Alive)
    }

    /// What we gossip: ourselves and every member not known to be dead or gone.
    pub fn records(&self) -> Vec<PeerRecord> {
        let mut out = vec![self.me.clone()];
        // Members that left travel too (until they are forgotten): a member tells only the members it knows
        // that it leaves, and the others would otherwise wait for its heartbeat to time out. Dead members do
        // not: their records would read as alive.
        out.extend(
            self.members
                .values()
                .filter(|m| matches!(m.status, Status::Alive | Status::Suspect | Status::Left))
                .map(|m| m.record.clone()),
        );
        out
    }

    /// Take in gossiped records. Returns the members that became alive (new, restarted or back).
    pub fn merge(&mut self, records: Vec<PeerRecord>, now_ms: u64) -> Vec<StatusChange> {
        let mut changes = Vec::new();
        for record in records {
            if record.id == self.me.id {
                // An older incarnation of us: nothing to learn. A newer one: see `own_record`.
                self.own_record(&record);
                continue;
            }
            let status = if record.left { Status::Left } else { Status::Alive };
            match self.members.get_mut(&record.id) {
                Some(member) => {
                    if record.newer_than(&member.record) {
                        member.record = record;
                        member.last_progress_ms = now_ms;
                        if member.status != status {
                            member.status = status;
                            changes.push(StatusChange {
                                id: member.record.id,
                                status,
                            });
                        }
                    }
                }
                None => {
                    let id = record.id;
                    self.members.insert(
                        id,
                        Member {
                            record,
                            status,
                            last_progress_ms: now_ms,
                            clock_skew_ms: None,
                            clock_samples: ClockSamples::default(),
                        },
                    );
                    changes.push(StatusChange { id, status });
                }
            }
        }
        changes
    }

    /// Record a clock sample (`their send time - our receive time`, ms) of a member that gossiped to us
    /// directly, and update its estimate.
    pub fn observe_clock(&mut self, id: NodeId, sample_ms: i64) {
        if let Some(m) = self.members.get_mut(&id) {
            m.clock_samples.push(sample_ms);
            m.clock_skew_ms = m.clock_samples.estimate();
        }
    }

    /// Re-judge every member at `now_ms`; forget long-dead ones. Returns the status changes.
    pub fn tick(&mut self, now_ms: u64) -> Vec<StatusChange> {
        let t = self.timing;
        let mut changes = Vec::new();
        self.members.retain(|_, m| {
            let idle = now_ms.saturating_sub(m.last_progress_ms);
            let status = match m.status {
                Status::Left => Status::Left,
                _ if idle >= t.dead_after_ms => Status::Dead,
                _ if idle >= t.suspect_after_ms => Status::Suspect,
                _ => Status::Alive,
            };
            if status != m.status {
                m.status = status;
                changes.push(StatusChange {
                    id: m.record.id,
                    status,
                });
            }
            !(matches!(m.status, Status::Dead | Status::Left) && idle >= t.forget_after_ms)
        });
        changes
    }

    /// Number of members in each status (for the peers gauge).
    pub fn counts(&self) -> [(Status, usize); 4] {
        let mut counts = [
            (Status::Alive, 0),
            (Status::Suspect, 0),
            (Status::Dead, 0),
            (Status::Left, 0),
        ];
        for m in self.members.values() {
            counts[m.status as usize].1 += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        suspect_after_ms: 3_000,
        dead_after_ms: 10_000,
        forget_after_ms: 60_000,
    };

    fn rec(id: u64, incarnation: u64, heartbeat: u64) -> PeerRecord {
        PeerRecord {
            id: NodeId(id),
            grpc_addr: format!("n{id}:2000"),
            http_addr: format!("n{id}:2001"),
            incarnation,
            heartbeat,
            left: false,
            version: String::new(),
            keys: 0,
        }
    }

    #[test]
    fn learns_members_and_judges_them_by_heartbeat_progress() {
        let mut m = Membership::new(rec(1, 1, 0), T);
        let changes = m.merge(vec![rec(2, 1, 5), rec(3, 1, 1), rec(1, 0, 99)], 0);
        assert_eq!(changes.len(), 2);
        assert_eq!(m.members().count(), 2);
        m.merge(vec![rec(2, 1, 6)], 2_500);
        assert_eq!(
            m.tick(3_000),
            vec![StatusChange {
                id: NodeId(3),
                status: Status::Suspect
            }]
        );
        assert_eq!(
            m.tick(10_000),
            vec![
                StatusChange {
                    id: NodeId(2),
                    status: Status::Suspect
                },
                StatusChange {
                    id: NodeId(3),
                    status: Status::Dead
                }
            ]
        );
        // A stale copy of a dead member's record does not revive it...
        assert!(m.merge(vec![rec(3, 1, 1)], 11_000).is_empty());
        // ...a restart (greater incarnation, heartbeat back at 0) does.
        assert_eq!(
            m.merge(vec![rec(3, 2, 0)], 12_000),
            vec![StatusChange {
                id: NodeId(3),
                status: Status::Alive
            }]
        );
        // Dead members are not gossiped; long-dead ones are forgotten.
        m.tick(13_000);
        assert!(m.records().iter().all(|r| r.id != NodeId(2)));
        m.tick(80_000);
        assert_eq!(m.members().count(), 0);
    }

    #[test]
    fn a_node_restarted_on_a_slower_clock_supersedes_its_old_incarnation() {
        // The old process started at 130 on a fast clock; the new one at 100.
        let mut m = Membership::new(rec(1, 100, 0), T);
        m.merge(vec![rec(1, 90, 7)], 0);
        assert_eq!(m.me().incarnation, 100, "an older record of us changes nothing");
        m.merge(vec![rec(1, 130, 7)], 0);
        assert_eq!(m.me().incarnation, 131);
        assert!(m.me().newer_than(&rec(1, 130, 7)));
    }

    #[test]
    fn a_twin_under_our_id_is_found_by_the_incarnations_it_takes_past_ours() {
        // 1 started long ago (heartbeat 500); a copy of it, started later, takes incarnations past it.
        let mut old = Membership::new(rec(1, 100, 500), T);
        let mut copy = Membership::new(rec(1, 200, 3), T);
        copy.me.grpc_addr = "copy:2000".into();
        for _ in 0..4 {
            old.merge(vec![copy.me().clone()], 0);
            copy.merge(vec![old.me().clone()], 0);
        }
        let (a, b) = (old.twin().cloned().unwrap(), copy.twin().cloned().unwrap());
        assert_eq!(
            (a.grpc_addr.as_str(), a.refuse),
            ("copy:2000", false),
            "the older keeps serving"
        );
        assert_eq!((b.grpc_addr.as_str(), b.refuse), ("n1:2000", true), "the younger stops");
        assert!(
            old.take_new_twin().is_some() && old.take_new_twin().is_none(),
            "reported once"
        );
        // The younger falls silent; the older ends up newest.
        old.merge(vec![copy.me().clone()], 0);
        assert!(old.me().newer_than(copy.me()));
    }

    #[test]
    fn a_stale_record_of_a_previous_process_or_our_own_echo_is_no_twin() {
        let mut m = Membership::new(rec(1, 100, 50), T);
        m.merge(vec![rec(1, 130, 7)], 0);
        m.merge(vec![rec(1, 130, 9)], 0);
        m.gossip_from_own_id(&[m.me().clone()]);
        let mut echo = m.me().clone();
        echo.heartbeat = 0;
        m.gossip_from_own_id(&[echo]);
        assert!(m.twin().is_none());
        let mut other = rec(1, 50, 2);
        other.grpc_addr = "elsewhere:2000".into();
        m.gossip_from_own_id(&[other]);
        assert!(m.twin().is_some_and(|t| !t.refuse && t.grpc_addr == "elsewhere:2000"));
    }

    #[test]
    fn a_leaving_member_is_marked_left() {
        let mut m = Membership::new(rec(1, 1, 0), T);
        m.merge(vec![rec(2, 1, 1)], 0);
        let mut leaving = rec(2, 1, 2);
        leaving.left = true;
        assert_eq!(
            m.merge(vec![leaving], 1),
            vec![StatusChange {
                id: NodeId(2),
                status: Status::Left
            }]
        );
        assert_eq!(m.reachable().count(), 0);
    }

    #[test]
    fn a_leave_travels_to_members_the_leaver_did_not_know() {
        // 2 leaves and tells 1, the only member it knew; 3 hears of it from 1's gossip.
        let mut one = Membership::new(rec(1, 1, 0), T);
        one.merge(vec![rec(2, 1, 1)], 0);
        let mut leaving = rec(2, 1, 2);
        leaving.left = true;
        one.merge(vec![leaving], 1);
        let mut three = Membership::new(rec(3, 1, 0), T);
        three.merge(vec![rec(2, 1, 1)], 0);
        three.merge(one.records(), 2);
        assert_eq!(three.get(NodeId(2)).map(|m| m.status), Some(Status::Left));
        assert_eq!(three.get(NodeId(1)).map(|m| m.status), Some(Status::Alive));
    }
}
