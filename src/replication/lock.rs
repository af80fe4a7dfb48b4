//! Locks: a small agreement per lock inside the core, so that a lock is never granted to two holders at
//! once while a majority of the members can talk.
//!
//! # The agreement
//! Each lock is a register every member votes on, single-decree Paxos style. A member keeps, per lock, the
//! highest [`Ballot`] it promised and the [`Grant`] it last accepted (with the ballot that wrote it, inside
//! the grant). A node asked to acquire, extend or release a lock proposes:
//! 1. **Prepare** with a ballot above every one it knows; a member promises (answers with what it accepted)
//!    unless it promised a higher ballot.
//! 2. With promises from a strict **majority of the members** (itself included; dead members count, left
//!    ones do not), the proposer takes the grant of the highest ballot among the answers as the lock's state,
//!    and decides: held by another lease → refused ([`LockOutcome::Held`]); held by this lease → extended
//!    (same fence, later expiry); free (released, ended, or never granted) → a new grant, fence one more than
//!    the last.
//! 3. **Accept**: the new state goes to every member, who takes it unless it promised a higher ballot, and
//!    stores it as the lock's record (`crate::crdt::lock`). Accepted by a majority, it is decided.
//!
//! Any two majorities share a member, so a proposal always sees the latest decided grant (or a later one),
//! and replaces a grant only after judging it ended. A proposer outbid by another backs off (jittered) or
//! retries as soon as it sees the winner's accept; an attempt undecided after [`LOCK_TIMEOUT_MS`] fails, as
//! does one on a node that cannot reach a majority: locks trade availability for safety.
//!
//! # What the judgement rests on
//! A hold ends at its grant's `expires_ms` on the **proposer's** clock, plus `max_clock_drift`; a node whose
//! clock is fenced, or not yet judged against its members', proposes nothing. Promises live in memory: a node
//! that restarts with data neither votes nor proposes for [`LOCK_QUIET_MS`], longer than any attempt that
//! could hold one of its forgotten promises lives; accepted grants are stored. See docs/architecture.md.

mod rule;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::Rng;

use self::rule::decide;
pub use self::rule::{LockOp, LockOutcome};
use super::core::{Core, CoreEvent, Destination, Effects};
use super::membership::Status;
use super::message::Message;
use crate::crdt::hlc::from_physical_ms;
use crate::crdt::lock::{lock_key, name_of_key, Ballot, Grant, LOCK_PREFIX};
use crate::crdt::{Entry, LeaseId, LwwMap, NodeId, Version};

/// An attempt not decided after this long fails ([`LockOutcome::Unavailable`]), ms.
pub const LOCK_TIMEOUT_MS: u64 = 2_000;
/// A node restarted with data takes no part in locks for this long, ms: every attempt that may hold one of
/// the promises it forgot has ended by then.
pub const LOCK_QUIET_MS: u64 = LOCK_TIMEOUT_MS + 1_000;
/// An outbid proposal waits between one and two of these before it tries again, ms.
const LOCK_BACKOFF_MS: u64 = 20;
/// Unanswered prepares and accepts are sent again this often (messages get lost), ms.
const LOCK_RESEND_MS: u64 = 200;
/// Attempts on one lock waiting behind the running one on this node; more fail at once (bounded work).
const MAX_QUEUED_PER_LOCK: usize = 256;

/// What a member knows it accepted for a lock.
#[derive(Debug, Clone)]
struct Accepted {
    grant: Grant,
    version: Version,
}

impl Accepted {
    fn of_entry(e: &Entry) -> Option<Accepted> {
        Grant::of_entry(e).map(|grant| Accepted {
            grant,
            version: e.version,
        })
    }
}

/// The later of two pieces of knowledge, by the ballot that wrote them.
fn later(a: Option<Accepted>, b: Option<Accepted>) -> Option<Accepted> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.grant.ballot > a.grant.ballot { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[derive(Debug, Default)]
struct Slot {
    promised: Ballot,
    accepted: Option<Accepted>,
}

#[derive(Debug)]
struct Attempt {
    req: u64,
    op: LockOp,
    deadline_ms: u64,
}

#[derive(Debug)]
enum Phase {
    Prepare { highest: Option<Accepted> },
    Accept { entry: Entry, outcome: LockOutcome },
    Backoff { until_ms: u64 },
}

#[derive(Debug)]
struct Proposal {
    attempt: Attempt,
    ballot: Ballot,
    phase: Phase,
    /// Members that answered yes / no in the current phase.
    yes: BTreeSet<NodeId>,
    no: BTreeSet<NodeId>,
    /// The highest ballot a refusal named.
    outbid: Ballot,
    /// The most members an answer said it knows (see `Core::quorum_of`).
    voters_seen: usize,
    resend_at_ms: u64,
}

/// The lock part of a core: its votes and the attempts it runs.
#[derive(Debug, Default)]
pub(super) struct Locks {
    slots: BTreeMap<String, Slot>,
    /// The running attempt per lock (one at a time on a node, so its own clients do not outbid each other).
    active: BTreeMap<String, Proposal>,
    queued: BTreeMap<String, VecDeque<Attempt>>,
    next_req: u64,
    /// No votes or proposals before this local time (after a restart with data).
    quiet_until_ms: u64,
    /// This node synced with a peer before its restart: knowing no member now means it has not found its
    /// cluster yet, not that it is alone.
    had_peers: bool,
}

impl Locks {
    /// A node that held data before this start forgot its promises: it sits out [`LOCK_QUIET_MS`].
    pub(super) fn restarted(&mut self, now_ms: u64, had_peers: bool) {
        self.quiet_until_ms = now_ms + LOCK_QUIET_MS;
        self.had_peers = had_peers;
    }
}

impl Core {
    /// Members that vote on locks: every member that has not left, and this node.
    fn voters(&self) -> usize {
        1 + self.membership.members().filter(|m| m.status != Status::Left).count()
    }

    /// Answers needed to decide, with `seen` the most members any answer said it knows: a node whose view of
    /// the membership is short (just started, just joined) must not count a majority of too few.
    fn quorum_of(&self, seen: usize) -> usize {
        if self.cfg.faults.lock_say_so {
            return 1;
        }
        self.counted(seen) / 2 + 1
    }

    /// The members a majority is counted of: those known, the most any answer knows, the configured size.
    fn counted(&self, seen: usize) -> usize {
        self.voters().max(seen).max(self.cfg.lock_voters)
    }

    fn quorum(&self) -> usize {
        self.quorum_of(0)
    }

    /// Why this node may not propose now, if it may not.
    fn lock_refusal(&self, now_ms: u64) -> Option<&'static str> {
        if self.membership.refusing() {
            return Some("another node runs under this node's id");
        }
        if now_ms < self.locks.quiet_until_ms {
            return Some("restarting: this node takes part in locks again shortly");
        }
        if self.isolated() || (self.locks.had_peers && self.membership.members().next().is_none()) {
            return Some("this node has not found its cluster's members (yet)");
        }
        if self.fence.fenced().is_some() {
            return Some("this node's clock is off the cluster's");
        }
        if self.voters() > 1 && self.fence.offset_ms().is_none() && !self.cfg.faults.lock_say_so {
            return Some("this node's clock is not judged against its members' yet");
        }
        if 1 + self.membership.reachable().count() < self.quorum() {
            return Some("no majority of the members is reachable");
        }
        None
    }

    /// What this node knows of lock `name`: what it accepted, or a later record it holds.
    fn known(&self, name: &str, state: &LwwMap) -> Option<Accepted> {
        let held = state.get(&lock_key(name)).and_then(Accepted::of_entry);
        later(self.locks.slots.get(name).and_then(|s| s.accepted.clone()), held)
    }

    /// Start an attempt on lock `name`. Returns its request number: the attempt ends with a
    /// [`CoreEvent::LockDecided`] of that number, in these effects or later ones (at the latest
    /// [`LOCK_TIMEOUT_MS`] from now).
    pub fn lock(&mut self, now_ms: u64, name: &str, op: LockOp, state: &LwwMap) -> (u64, Effects) {
        let mut fx = Effects::default();
        self.locks.next_req += 1;
        let attempt = Attempt {
            req: self.locks.next_req,
            op,
            deadline_ms: now_ms + LOCK_TIMEOUT_MS,
        };
        let req = attempt.req;
        if self.locks.active.contains_key(name) {
            let queue = self.locks.queued.entry(name.to_string()).or_default();
            if queue.len() >= MAX_QUEUED_PER_LOCK {
                let why = "too many attempts on this lock wait on this node";
                fx.events.push(decided(req, name, LockOutcome::Unavailable(why)));
            } else {
                queue.push_back(attempt);
            }
        } else {
            self.start_attempt(now_ms, name, attempt, state, &mut fx);
        }
        (req, fx)
    }

    /// The locks `lease` holds as far as this node knows (to extend with the lease's renewal, or release with
    /// its revoke).
    pub fn locks_of(&self, now_ms: u64, lease: LeaseId, state: &LwwMap) -> Vec<String> {
        let mut names: BTreeSet<String> = self.locks.slots.keys().cloned().collect();
        names.extend(
            state
                .range_prefix(LOCK_PREFIX)
                .filter_map(|e| name_of_key(&e.key).map(str::to_string)),
        );
        names
            .into_iter()
            .filter(|name| {
                self.known(name, state).is_some_and(|a| {
                    a.grant.lease == Some(lease) && a.grant.held_at(now_ms, self.cfg.max_clock_drift_ms)
                })
            })
            .collect()
    }

    fn start_attempt(&mut self, now_ms: u64, name: &str, attempt: Attempt, state: &LwwMap, fx: &mut Effects) {
        if let Some(why) = self.lock_refusal(now_ms) {
            fx.events
                .push(decided(attempt.req, name, LockOutcome::Unavailable(why)));
            return self.next_attempt(now_ms, name, state, fx);
        }
        let proposal = Proposal {
            attempt,
            ballot: Ballot::default(),
            phase: Phase::Backoff { until_ms: now_ms },
            yes: BTreeSet::new(),
            no: BTreeSet::new(),
            outbid: Ballot::default(),
            voters_seen: 0,
            resend_at_ms: 0,
        };
        self.locks.active.insert(name.to_string(), proposal);
        self.prepare(now_ms, name, state, fx);
    }

    /// Start the next attempt waiting on lock `name`, if any.
    fn next_attempt(&mut self, now_ms: u64, name: &str, state: &LwwMap, fx: &mut Effects) {
        let next = self.locks.queued.get_mut(name).and_then(VecDeque::pop_front);
        if self.locks.queued.get(name).is_some_and(VecDeque::is_empty) {
            self.locks.queued.remove(name);
        }
        if let Some(attempt) = next {
            self.start_attempt(now_ms, name, attempt, state, fx);
        }
    }

    fn finish_attempt(&mut self, now_ms: u64, name: &str, outcome: LockOutcome, state: &LwwMap, fx: &mut Effects) {
        if let Some(p) = self.locks.active.remove(name) {
            fx.events.push(decided(p.attempt.req, name, outcome));
        }
        self.next_attempt(now_ms, name, state, fx);
    }

    /// Phase 1 of the running attempt on `name`, with a ballot above every one known here.
    fn prepare(&mut self, now_ms: u64, name: &str, state: &LwwMap, fx: &mut Effects) {
        let known = self.known(name, state);
        let me = self.id();
        let slot = self.locks.slots.entry(name.to_string()).or_default();
        let Some(p) = self.locks.active.get_mut(name) else {
            return;
        };
        let top = [
            slot.promised,
            p.outbid,
            known.as_ref().map(|a| a.grant.ballot).unwrap_or_default(),
        ]
        .into_iter()
        .max()
        .unwrap_or_default();
        let ballot = Ballot {
            round: top.round + 1,
            node: me,
        };
        // This node votes first: it promises its own ballot (nothing it promised is higher).
        slot.promised = ballot;
        p.ballot = ballot;
        p.phase = Phase::Prepare { highest: known };
        p.yes = BTreeSet::from([me]);
        p.no.clear();
        p.resend_at_ms = now_ms + LOCK_RESEND_MS;
        let msg = Message::LockPrepare {
            lock: name.to_string(),
            ballot,
        };
        self.send_to_voters(msg, &BTreeSet::from([me]), fx);
        self.advance(now_ms, name, state, fx);
    }

    fn send_to_voters(&self, msg: Message, skip: &BTreeSet<NodeId>, fx: &mut Effects) {
        let to: Vec<NodeId> = self
            .membership
            .reachable()
            .map(|m| m.record.id)
            .filter(|id| !skip.contains(id))
            .collect();
        for id in to {
            fx.send(id, msg.clone());
        }
    }

    /// Move the running attempt on `name` on, as far as the answers so far allow.
    fn advance(&mut self, now_ms: u64, name: &str, state: &LwwMap, fx: &mut Effects) {
        let seen = self.locks.active.get(name).map_or(0, |p| p.voters_seen);
        let (quorum, voters) = (self.quorum_of(seen), self.counted(seen));
        let (margin, me) = (self.cfg.max_clock_drift_ms, self.id());
        let Some(p) = self.locks.active.get_mut(name) else {
            return;
        };
        if p.no.len() > voters.saturating_sub(quorum) {
            // A majority can no longer say yes: outbid. Back off (jittered), then try above the winner.
            let until_ms = now_ms + LOCK_BACKOFF_MS + self.rng.gen_range(0..=LOCK_BACKOFF_MS);
            p.phase = Phase::Backoff { until_ms };
            return;
        }
        if p.yes.len() < quorum {
            return;
        }
        let ballot = p.ballot;
        match &p.phase {
            Phase::Prepare { highest } => {
                let current = highest.clone();
                let decision = decide(
                    &p.attempt.op,
                    ballot,
                    current.as_ref().map(|a| &a.grant),
                    now_ms,
                    margin,
                );
                let (grant, outcome) = match decision {
                    Ok(next) => next,
                    Err(outcome) => return self.finish_attempt(now_ms, name, outcome, state, fx),
                };
                // Stamped after every record of the lock seen, so that last-writer-wins keeps the newest
                // grant in every store.
                let floor = current.map(|a| a.version.hlc + 1).unwrap_or(0);
                let version = Version::new(from_physical_ms(now_ms).max(floor), me);
                let entry = grant.entry(name, version);
                p.phase = Phase::Accept {
                    entry: entry.clone(),
                    outcome,
                };
                p.yes.clear();
                p.no.clear();
                p.resend_at_ms = now_ms + LOCK_RESEND_MS;
                // This node votes like any member: a refusal counts, or an attempt that one member accepts
                // and another refuses (of three) would wait for answers that have all come.
                let yes = self.vote_accept(name, ballot, &entry, state, fx);
                let promised = self.locks.slots.get(name).map(|s| s.promised).unwrap_or_default();
                let p = self.locks.active.get_mut(name).expect("running");
                if yes {
                    p.yes.insert(me);
                } else {
                    p.no.insert(me);
                    p.outbid = p.outbid.max(promised);
                }
                let msg = Message::LockAccept { ballot, entry };
                self.send_to_voters(msg, &BTreeSet::from([me]), fx);
                self.advance(now_ms, name, state, fx);
            }
            Phase::Accept { entry, outcome } => {
                // Stored here before the client hears of it (the driver answers once this merge is durable).
                fx.persist.push(entry.clone());
                let outcome = outcome.clone();
                self.finish_attempt(now_ms, name, outcome, state, fx);
            }
            Phase::Backoff { .. } => {}
        }
    }

    /// This node's vote on an accept: take it unless a higher ballot was promised.
    fn vote_accept(&mut self, name: &str, ballot: Ballot, entry: &Entry, state: &LwwMap, fx: &mut Effects) -> bool {
        let floor = self.known(name, state).map(|a| a.grant.ballot).unwrap_or_default();
        let slot = self.locks.slots.entry(name.to_string()).or_default();
        slot.promised = slot.promised.max(floor);
        if ballot < slot.promised {
            return false;
        }
        let Some(accepted) = Accepted::of_entry(entry) else {
            return false;
        };
        slot.promised = ballot;
        slot.accepted = Some(accepted);
        fx.persist.push(entry.clone());
        true
    }

    /// Lock messages from member `from`.
    pub(super) fn on_lock_message(
        &mut self,
        now_ms: u64,
        from: NodeId,
        msg: Message,
        state: &LwwMap,
        fx: &mut Effects,
    ) {
        if now_ms < self.locks.quiet_until_ms {
            return; // no vote: see `LOCK_QUIET_MS`
        }
        match msg {
            Message::LockPrepare { lock, ballot } => {
                let known = self.known(&lock, state);
                let slot = self.locks.slots.entry(lock.clone()).or_default();
                // Never below what it accepted, stored: promises are forgotten in a restart, accepts are not.
                slot.promised = slot
                    .promised
                    .max(known.as_ref().map(|a| a.grant.ballot).unwrap_or_default());
                let ok = ballot >= slot.promised;
                if ok {
                    slot.promised = ballot;
                }
                let accepted = known.map(|a| a.grant.entry(&lock, a.version));
                let promised = slot.promised;
                let reply = Message::LockPromise {
                    lock,
                    ballot,
                    ok,
                    promised,
                    accepted,
                    voters: self.voters() as u32,
                };
                fx.send(from, reply);
            }
            Message::LockAccept { ballot, entry } => {
                let Some(lock) = name_of_key(&entry.key).map(str::to_string) else {
                    return;
                };
                if Grant::of_entry(&entry).is_none_or(|g| g.ballot != ballot) {
                    return; // not a record this ballot wrote: garbage
                }
                let ok = self.vote_accept(&lock, ballot, &entry, state, fx);
                let promised = self.locks.slots.get(&lock).map(|s| s.promised).unwrap_or_default();
                let reply = Message::LockAccepted {
                    lock: lock.clone(),
                    ballot,
                    ok,
                    promised,
                };
                // A yes counts towards a decision only once the record is stored here: a vote lost to a crash
                // would let a later majority miss the grant.
                fx.after_persist.push((Destination::Node(from), reply));
                // Our own attempt on this lock, outbid, tries again now: its prepare will see this grant.
                let ours = self.locks.active.get(&lock);
                if ok && ours.is_some_and(|p| matches!(p.phase, Phase::Backoff { .. })) {
                    self.prepare(now_ms, &lock, state, fx);
                }
            }
            Message::LockPromise {
                lock,
                ballot,
                ok,
                promised,
                accepted,
                voters,
            } => {
                let Some(p) = self.locks.active.get_mut(&lock) else {
                    return;
                };
                let Phase::Prepare { highest } = &mut p.phase else {
                    return;
                };
                if p.ballot != ballot {
                    return;
                }
                p.voters_seen = p.voters_seen.max(voters as usize);
                if ok {
                    p.yes.insert(from);
                    let theirs = accepted
                        .as_ref()
                        .filter(|e| name_of_key(&e.key) == Some(lock.as_str()))
                        .and_then(Accepted::of_entry);
                    *highest = later(highest.take(), theirs);
                } else {
                    p.no.insert(from);
                    p.outbid = p.outbid.max(promised);
                }
                self.advance(now_ms, &lock, state, fx);
            }
            Message::LockAccepted {
                lock,
                ballot,
                ok,
                promised,
            } => {
                let Some(p) = self.locks.active.get_mut(&lock) else {
                    return;
                };
                if p.ballot != ballot || !matches!(p.phase, Phase::Accept { .. }) {
                    return;
                }
                if ok {
                    p.yes.insert(from);
                } else {
                    p.no.insert(from);
                    p.outbid = p.outbid.max(promised);
                }
                self.advance(now_ms, &lock, state, fx);
            }
            _ => {}
        }
    }

    /// Time passes for the attempts: time out, retry after a backoff, resend what got no answer.
    pub(super) fn tick_locks(&mut self, now_ms: u64, state: &LwwMap, fx: &mut Effects) {
        let me = self.id();
        let names: Vec<String> = self.locks.active.keys().cloned().collect();
        for name in names {
            let Some(p) = self.locks.active.get_mut(&name) else {
                continue;
            };
            if now_ms >= p.attempt.deadline_ms {
                let outcome = LockOutcome::Unavailable("no majority of the members answered in time");
                self.finish_attempt(now_ms, &name, outcome, state, fx);
                continue;
            }
            let resend = match &p.phase {
                Phase::Backoff { until_ms } => {
                    if now_ms >= *until_ms {
                        self.prepare(now_ms, &name, state, fx);
                    }
                    continue;
                }
                _ if now_ms < p.resend_at_ms => continue,
                Phase::Accept { entry, .. } => Message::LockAccept {
                    ballot: p.ballot,
                    entry: entry.clone(),
                },
                Phase::Prepare { .. } => Message::LockPrepare {
                    lock: name.clone(),
                    ballot: p.ballot,
                },
            };
            p.resend_at_ms = now_ms + LOCK_RESEND_MS;
            let mut answered: BTreeSet<NodeId> = p.yes.union(&p.no).copied().collect();
            answered.insert(me);
            self.send_to_voters(resend, &answered, fx);
        }
        // Queued attempts whose time is up fail where they wait.
        for (name, queue) in self.locks.queued.iter_mut() {
            while queue.front().is_some_and(|a| now_ms >= a.deadline_ms) {
                let a = queue.pop_front().expect("front");
                let why = "no majority of the members answered in time";
                fx.events.push(decided(a.req, name, LockOutcome::Unavailable(why)));
            }
        }
        self.locks.queued.retain(|_, q| !q.is_empty());
    }
}

fn decided(req: u64, name: &str, outcome: LockOutcome) -> CoreEvent {
    CoreEvent::LockDecided {
        req,
        lock: name.to_string(),
        outcome,
    }
}
