//! The checker, run once the cluster has settled after healing (or ran out of time trying).
//!
//! 1. Every live node holds the same entries and the same digest root.
//! 2. Each key holds the greatest-version write among the acknowledged writes (a tombstone may also have
//!    been purged). Broken down: no unacknowledged write is visible; no acknowledged write vanished unless
//!    superseded; no deleted key came back unless written again later.
//! 3. Every live node's membership view agrees: it sees exactly the live nodes as alive.
//! 4. In the clock scenarios (where a majority of the clocks agrees): no acknowledged write lost to a write
//!    acknowledged earlier in real time by more than `max_clock_drift`. LWW orders by HLC, and HLCs follow
//!    the wall clocks: this is what a bad clock breaks and the clock fence must prevent.
//! 5. Documents (`check_docs`): identical on every node, every acknowledged edit present, counters the sum
//!    of their increments.
//!
//! Documented exceptions let an acknowledged write disappear, and the history records each case (the
//! report shows them): a node rejoining pull-first after more than a TTL away drops old entries its peer
//! lacks, and purges its own expired tombstones before any peer saw them (DESIGN.md section 1: for entries
//! older than the TTL the peers are authoritative); a node that leaves takes with it what no other node had
//! received (it drains first, for a bounded time). When the greatest write of a key was dropped that way,
//! the next greatest is admissible too (or the key being absent), and so on down to the first write that
//! was neither dropped nor made by a node that dropped one (such a node overwrote its older writes locally,
//! and they may never have left it).

use std::collections::BTreeSet;
use std::fmt;

use cave::crdt::{Entry, NodeId, Version};

use crate::history::{secs, short, Fate, History, Write};
use crate::node::{Life, Node};

/// One broken property.
#[derive(Debug, Clone)]
pub struct Violation {
    /// What broke, in a few words.
    pub kind: &'static str,
    /// The key concerned, if any.
    pub key: Option<String>,
    /// The evidence.
    pub detail: String,
    /// The key's short history.
    pub history: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => writeln!(f, "  VIOLATION {}: key {k}", self.kind)?,
            None => writeln!(f, "  VIOLATION {}", self.kind)?,
        }
        for line in self.detail.lines() {
            writeln!(f, "    {line}")?;
        }
        if !self.history.is_empty() {
            writeln!(f, "    history of the key:")?;
            for line in self.history.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// At most this many violations of one kind are kept.
const MAX_PER_KIND: usize = 1_000;
/// Lines of key history in a report.
const HISTORY_LINES: usize = 14;

fn show(e: Option<&Entry>) -> String {
    match e {
        None => "absent".into(),
        Some(e) if e.deleted => format!("tombstone {}", e.version),
        Some(e) => format!("{} {}", short(&e.value), e.version),
    }
}

fn show_write(w: &Write) -> String {
    show(Some(&w.entry()))
}

/// Membership disagreements: `(node, alive in its view, live nodes)` for every node whose view is off.
pub fn membership_views(nodes: &[Node]) -> Vec<(usize, BTreeSet<NodeId>, BTreeSet<NodeId>)> {
    let live: BTreeSet<NodeId> = nodes.iter().filter(|n| n.life == Life::Up).map(|n| n.id).collect();
    let mut off = Vec::new();
    for n in nodes.iter().filter(|n| n.life == Life::Up) {
        let Some(run) = &n.run else { continue };
        let mut view: BTreeSet<NodeId> = run.core.membership().alive().map(|m| m.record.id).collect();
        view.insert(n.id);
        if view != live {
            off.push((n.slot, view, live.clone()));
        }
    }
    off
}

/// Judge one node's entry of `key` against the history. `None` if it is right.
fn judge(history: &History, key: &str, found: Option<&Entry>) -> Option<(&'static str, String, Vec<Version>)> {
    let acked: Vec<&Write> = history.acked(key).collect();
    // An expiry's tombstone stands for the value it expired (every node derives it from that value): it is
    // judged as that write.
    // So does the tombstone a lease's end leaves for a value bound to it.
    let expired_value = found
        .filter(|f| f.deleted && (f.expires.is_some() || f.lease.is_some()))
        .and_then(|f| {
            acked
                .iter()
                .map(|w| w.entry())
                .find(|e| !e.deleted && e.expired() == *f)
        });
    let found = expired_value.as_ref().or(found);
    // A same-version tombstone is how a pull-first rejoin drops an entry: as good as absent.
    let found = found.filter(|f| {
        let stand_in = f.deleted
            && history.was_forgotten(key, f.version)
            && !acked.iter().any(|w| w.version == f.version && w.deleted);
        !stand_in
    });
    if let Some(f) = found {
        match acked.iter().find(|w| w.version == f.version && w.entry() == *f) {
            Some(_) => {}
            None => {
                let lost = history
                    .by_key
                    .get(key)
                    .into_iter()
                    .flatten()
                    .any(|&i| history.writes[i].version == f.version);
                let kind = if lost {
                    "unacknowledged write visible"
                } else {
                    "entry that no client wrote"
                };
                return Some((kind, format!("holds {}", show(Some(f))), vec![f.version]));
            }
        }
    }
    // The admissible outcomes: the greatest acknowledged write; if that one was excused (dropped by a
    // pull-first rejoin, or only held by a node that left), the next one too, and so on. A write made by a
    // node that dropped an excused write above it may have been lost with it (that node overwrote it
    // locally, perhaps before it left the node), so the walk goes on past it too; it stops at the first
    // other write. "Absent" is admissible if the walk never stopped, or if a tombstone is among them.
    let mut sorted: Vec<&Write> = acked.iter().copied().filter(|w| !w.shadowed).collect();
    sorted.sort_by_key(|w| std::cmp::Reverse(w.version));
    let mut admissible: Vec<&Write> = Vec::new();
    let mut droppers: Vec<usize> = Vec::new();
    let mut absent_ok = true;
    for w in sorted {
        admissible.push(w);
        let by = history.excused_by(key, w.version);
        if by.is_empty() && !droppers.contains(&w.node) {
            absent_ok = false;
            break;
        }
        droppers.extend(by);
    }
    absent_ok |= admissible.iter().any(|w| w.deleted);
    let expected = admissible.last().copied();
    let mention: Vec<Version> = found
        .iter()
        .map(|f| f.version)
        .chain(expected.map(|w| w.version))
        .collect();
    let verdict = match (found, expected) {
        (None, _) if absent_ok => None,
        (None, Some(w)) => Some((
            "acknowledged write vanished",
            format!("holds nothing; expected {}", show_write(w)),
        )),
        (None, None) => None,
        (Some(f), _) if admissible.iter().any(|w| w.version == f.version) => None,
        (Some(f), Some(w)) if w.deleted && !f.deleted => Some((
            "deleted key came back",
            format!("holds {}; it was deleted by {}", show(Some(f)), show_write(w)),
        )),
        (Some(f), Some(w)) => Some((
            "acknowledged write superseded by an older one",
            format!("holds {}; expected {}", show(Some(f)), show_write(w)),
        )),
        (Some(f), None) => Some(("entry that no client wrote", format!("holds {}", show(Some(f))))),
    };
    verdict.map(|(kind, detail)| (kind, detail, mention))
}

/// Rule 4 for one key: the acknowledged writes that lost to `found` although `found` was acknowledged more
/// than `max_drift_ms` before them (in true, simulated time).
fn lost_to_earlier<'a>(history: &'a History, key: &str, found: &Entry, max_drift_ms: u64) -> Vec<&'a Write> {
    let acked: Vec<&Write> = history.acked(key).filter(|w| !w.shadowed).collect();
    let Some(Fate::Acked(won_at)) = acked.iter().find(|w| w.version == found.version).map(|w| w.fate) else {
        return Vec::new();
    };
    acked
        .into_iter()
        // An imported version is the client's: an old export acknowledged late is meant to lose.
        .filter(|w| w.version < found.version && !w.imported && !history.is_excused(key, w.version))
        .filter(|w| matches!(w.fate, Fate::Acked(t) if t > won_at + max_drift_ms))
        .collect()
}

/// Check the settled cluster. `settled` is false when it ran out of time. `real_time_drift_ms` turns rule 4
/// on, with that `max_clock_drift`.
pub fn check(
    nodes: &[Node],
    history: &History,
    settled: bool,
    quiescence_ms: u64,
    real_time_drift_ms: Option<u64>,
) -> Vec<Violation> {
    let live: Vec<&Node> = nodes.iter().filter(|n| n.life == Life::Up).collect();
    let mut out = Vec::new();
    let push = |v: Violation, out: &mut Vec<Violation>| {
        if out.iter().filter(|o| o.kind == v.kind).count() < MAX_PER_KIND {
            out.push(v);
        }
    };
    if !settled {
        let roots: BTreeSet<u128> = live.iter().map(|n| n.state.digest().root()).collect();
        push(
            Violation {
                kind: "no convergence",
                key: None,
                detail: format!(
                    "not settled {} after healing: {} distinct digest roots among {} nodes, {} membership views off",
                    secs(quiescence_ms),
                    roots.len(),
                    live.len(),
                    membership_views(nodes).len()
                ),
                history: String::new(),
            },
            &mut out,
        );
    }
    let Some(first) = live.first() else {
        return out;
    };

    // 1. Identical replicas.
    let mut keys: BTreeSet<&str> = history.keys().map(String::as_str).collect();
    for n in &live {
        keys.extend(n.state.iter().map(|e| e.key.as_str()));
    }
    for key in &keys {
        let reference = first.state.get(key);
        if live
            .iter()
            .any(|n| !crate::check_docs::same(n.state.get(key), reference))
        {
            let mention: Vec<Version> = live
                .iter()
                .filter_map(|n| n.state.get(key).map(|e| e.version))
                .collect();
            let detail = live
                .iter()
                .map(|n| format!("n{}: {}", n.slot, show(n.state.get(key))))
                .collect::<Vec<_>>()
                .join("\n");
            push(
                Violation {
                    kind: "replicas differ",
                    key: Some(key.to_string()),
                    history: history.describe(key, HISTORY_LINES, &mention),
                    detail,
                },
                &mut out,
            );
        }
    }
    if live
        .iter()
        .any(|n| n.state.digest().root() != first.state.digest().root())
    {
        let roots = live
            .iter()
            .map(|n| format!("n{}: {:032x}", n.slot, n.state.digest().root()))
            .collect::<Vec<_>>()
            .join("\n");
        push(
            Violation {
                kind: "digest roots differ",
                key: None,
                detail: roots,
                history: String::new(),
            },
            &mut out,
        );
    }

    // 2. Each key is the greatest acknowledged write (documents: rules 5 to 7, in `check_docs`).
    for key in &keys {
        if first.state.get(key).is_some_and(|e| e.doc.is_some()) && history.acked(key).next().is_none() {
            continue;
        }
        // Lock records are the agreement's, not clients' writes: `sim::locks` checks what they decide.
        if key.starts_with(cave::crdt::lock::LOCK_PREFIX) {
            continue;
        }
        let mut verdicts: Vec<(usize, &'static str, String, Vec<Version>)> = Vec::new();
        for n in &live {
            if let Some((kind, detail, mention)) = judge(history, key, n.state.get(key)) {
                verdicts.push((n.slot, kind, detail, mention));
            }
        }
        if let Some((_, kind, detail, mention)) = verdicts.first() {
            let on: Vec<String> = verdicts.iter().map(|(s, ..)| format!("n{s}")).collect();
            push(
                Violation {
                    kind,
                    key: Some(key.to_string()),
                    detail: format!("{detail} (on {} of {} nodes: {})", on.len(), live.len(), on.join(" ")),
                    history: history.describe(key, HISTORY_LINES, mention),
                },
                &mut out,
            );
        }
    }

    // 4. Real-time order.
    if let Some(max_drift_ms) = real_time_drift_ms {
        for key in &keys {
            let Some(found) = first.state.get(key) else { continue };
            let lost = lost_to_earlier(history, key, found, max_drift_ms);
            if let Some(w) = lost.first() {
                let won = history.acked(key).find(|w| w.version == found.version);
                let won_at = won.map(|w| format!("{:?}", w.fate)).unwrap_or_default();
                let mut mention: Vec<Version> = lost.iter().map(|w| w.version).collect();
                mention.push(found.version);
                push(
                    Violation {
                        kind: "acknowledged write lost to an earlier one",
                        key: Some(key.to_string()),
                        detail: format!(
                            "holds {} ({won_at}); {} later acknowledged write(s) lost to it, e.g. {} ({:?})",
                            show(Some(found)),
                            lost.len(),
                            show_write(w),
                            w.fate
                        ),
                        history: history.describe(key, HISTORY_LINES, &mention),
                    },
                    &mut out,
                );
            }
        }
    }

    for v in crate::check_docs::check(&live, history) {
        if out.iter().filter(|o| o.kind == v.kind).count() < MAX_PER_KIND {
            out.push(v);
        }
    }

    // 3. Membership views.
    for (slot, view, live_ids) in membership_views(nodes) {
        let missing: Vec<String> = live_ids.difference(&view).map(|id| id.to_string()).collect();
        let extra: Vec<String> = view.difference(&live_ids).map(|id| id.to_string()).collect();
        push(
            Violation {
                kind: "membership views disagree",
                key: None,
                detail: format!(
                    "n{slot} sees alive {} of {} live nodes; missing {missing:?}, extra {extra:?}",
                    view.len(),
                    live_ids.len()
                ),
                history: String::new(),
            },
            &mut out,
        );
    }
    out
}
