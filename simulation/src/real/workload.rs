//! The client host of a real-transport scenario: waits for the cluster, writes through the HTTP API while
//! the chaos task injects faults, heals, waits for convergence and checks the outcome.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::time::{sleep, Instant};

use super::check::{check, parse_version, Answer, Attempt, Exported, Op};
use super::host::{GRPC_PORT, HTTP_PORT};
use super::net::request;
use super::{Control, Scenario};

/// Keys written (a small hot set, so that writers collide).
const KEYS: u64 = 24;
/// Share of writes to a fresh key of their own.
const UNIQUE_SHARE: f64 = 0.2;
/// Concurrent writers.
const WRITERS: u64 = 3;
/// How long writers write (and faults happen).
const FAULT_PHASE: Duration = Duration::from_secs(20);
/// How long a healed cluster may take to agree.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(60);
/// How long a fresh cluster may take to see all its members.
const FORMATION_LIMIT: Duration = Duration::from_secs(60);
/// Polling interval while waiting for a condition.
const POLL: Duration = Duration::from_millis(250);

/// Figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cluster size.
    pub nodes: usize,
    /// Writes acknowledged (200).
    pub acked: u64,
    /// Writes whose outcome the client cannot know (timeout, connection lost, 5xx but 507).
    pub unknown: u64,
    /// Writes refused with 507 (insufficient storage): definitely not stored.
    pub storage_full: u64,
    /// Keys holding an entry at the end.
    pub keys: usize,
    /// Keys on which the nodes disagreed when the faults were healed (evidence that the faults bit).
    pub diverged_keys: usize,
    /// Simulated seconds from healing to agreement.
    pub converged_secs: f64,
    /// Simulated seconds of the whole run.
    pub sim_secs: f64,
    /// Wall-clock milliseconds of the whole run.
    pub wall_ms: u64,
}

pub(super) async fn client(
    scenario: Scenario,
    seed: u64,
    names: Vec<String>,
    controls: Rc<RefCell<Vec<Control>>>,
    report: Rc<RefCell<Option<super::Report>>>,
) -> turmoil::Result {
    // The nodes that are up and members: writers pick among them, and the final checks cover them.
    let active = Rc::new(RefCell::new(names[..scenario.initial_nodes()].to_vec()));
    let initial = active.borrow().clone();
    wait_for_membership(&initial, &[], FORMATION_LIMIT)
        .await
        .map_err(|e| format!("cluster did not form: {e}"))?;
    let attempts: Rc<RefCell<Vec<Attempt>>> = Rc::default();
    if scenario == Scenario::Join {
        bulk_load(&names[0], &attempts).await?;
    }
    let seq = Rc::new(Cell::new(0u64));
    let deadline = Instant::now() + FAULT_PHASE;
    let writers = (0..WRITERS).map(|w| writer(seed, w, &active, deadline, attempts.clone(), seq.clone()));
    let chaos = chaos(scenario, seed, &names, &active, controls.clone());
    futures::future::join(futures::future::join_all(writers), chaos).await;
    // How far apart the faults drove the nodes: keys on which they disagree right before healing.
    let live = active.borrow().clone();
    let departed: Vec<String> = names.iter().filter(|n| !live.contains(n)).cloned().collect();
    let diverged = divergence(&live).await;
    // Heal: every link repaired (the crash scenario restarted its victims itself).
    repair_all(&names);
    let healed = Instant::now();
    // Departed nodes first have to be gone: until a node has left, what it alone holds is not expected
    // elsewhere (it is still handing it over).
    wait_for_membership(&live, &departed, CONVERGENCE_LIMIT)
        .await
        .map_err(|e| format!("membership views disagree after healing: {e}"))?;
    let exported = wait_for_agreement(&live, CONVERGENCE_LIMIT)
        .await
        .map_err(|e| format!("no convergence {CONVERGENCE_LIMIT:?} after healing: {e}"))?;
    let attempts = attempts.take();
    check(&exported, &attempts)?;
    *report.borrow_mut() = Some(super::Report {
        nodes: live.len(),
        acked: attempts.iter().filter(|a| matches!(a.answer, Answer::Acked(_))).count() as u64,
        unknown: attempts.iter().filter(|a| matches!(a.answer, Answer::Unknown)).count() as u64,
        storage_full: attempts
            .iter()
            .filter(|a| matches!(a.answer, Answer::StorageFull))
            .count() as u64,
        keys: exported.len(),
        diverged_keys: diverged,
        converged_secs: healed.elapsed().as_secs_f64(),
        ..Default::default()
    });
    Ok(())
}

/// Keys the join scenario loads before the joiner starts, so that it has something to catch up with.
const BULK_KEYS: usize = 2_000;
/// Puts per `POST /api/v1/query` batch of the bulk load.
const BULK_BATCH: usize = 200;

/// Load [`BULK_KEYS`] keys through `node` in atomic batches, recording each as an acknowledged write.
async fn bulk_load(node: &str, attempts: &Rc<RefCell<Vec<Attempt>>>) -> Result<(), String> {
    for batch in 0..BULK_KEYS / BULK_BATCH {
        let ops: Vec<Value> = (0..BULK_BATCH)
            .map(|i| {
                let n = batch * BULK_BATCH + i;
                serde_json::json!({"key": format!("bulk/{n:05}"), "verb": "put", "value": format!("b{n}")})
            })
            .collect();
        let body = Bytes::from(serde_json::to_vec(&ops).map_err(|e| e.to_string())?);
        let (status, answer) = request(node, HTTP_PORT, "POST", "/api/v1/query", body).await?;
        if status != 200 {
            return Err(format!("bulk load batch {batch}: status {status}"));
        }
        let results: Vec<Value> = serde_json::from_slice(&answer).map_err(|e| format!("bulk load answer: {e}"))?;
        for (op, result) in ops.iter().zip(&results) {
            let version = result["version"].as_str().and_then(parse_version);
            attempts.borrow_mut().push(Attempt {
                key: op["key"].as_str().unwrap_or_default().to_string(),
                op: Op::Put(op["value"].as_str().unwrap_or_default().to_string()),
                node: node.to_string(),
                answer: version.map_or(Answer::Unknown, Answer::Acked),
            });
        }
    }
    Ok(())
}

async fn writer(
    seed: u64,
    w: u64,
    active: &RefCell<Vec<String>>,
    deadline: Instant,
    attempts: Rc<RefCell<Vec<Attempt>>>,
    seq: Rc<Cell<u64>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5752_4954 + w));
    while Instant::now() < deadline {
        let node = {
            let active = active.borrow();
            active[rng.gen_range(0..active.len())].clone()
        };
        seq.set(seq.get() + 1);
        // Most writes collide on the hot keys; some create a key nobody writes again, so that a lost
        // acknowledged write cannot hide behind a later one.
        let (key, op) = if rng.gen_bool(UNIQUE_SHARE) {
            (format!("sim/u{}", seq.get()), Op::Put(format!("v{}-w{w}", seq.get())))
        } else if rng.gen_bool(0.75) {
            (
                format!("sim/k{}", rng.gen_range(0..KEYS)),
                Op::Put(format!("v{}-w{w}", seq.get())),
            )
        } else {
            (format!("sim/k{}", rng.gen_range(0..KEYS)), Op::Delete)
        };
        let path = format!("/api/v1/kv/{key}");
        let result = match &op {
            Op::Put(v) => request(&node, HTTP_PORT, "PUT", &path, Bytes::from(v.clone())).await,
            Op::Delete => request(&node, HTTP_PORT, "DELETE", &path, Bytes::new()).await,
        };
        let answer = match result {
            Ok((200, body)) => match serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["version"].as_str().and_then(parse_version))
            {
                Some(version) => Answer::Acked(version),
                None => Answer::Unknown,
            },
            Ok((status, _)) if (400..500).contains(&status) => Answer::Refused,
            // A full disk: the node promises that nothing of the write was stored.
            Ok((507, _)) => Answer::StorageFull,
            _ => Answer::Unknown,
        };
        attempts.borrow_mut().push(Attempt { key, op, node, answer });
        sleep(Duration::from_millis(rng.gen_range(5..40))).await;
    }
}

/// The scenario's faults, over [`FAULT_PHASE`]; the links are all repaired afterwards (one-way cuts too:
/// `repair` clears both directions).
async fn chaos(
    scenario: Scenario,
    seed: u64,
    names: &[String],
    active: &RefCell<Vec<String>>,
    controls: Rc<RefCell<Vec<Control>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC4A0_5000);
    let at = |secs: u64| sleep(Duration::from_secs(secs));
    let n = names.len();
    match scenario {
        Scenario::Partition => {
            at(3).await;
            let cut = &names[rng.gen_range(0..n)];
            for other in names.iter().filter(|o| *o != cut) {
                turmoil::partition(cut.as_str(), other.as_str());
            }
            // Healed only after the writes stop: convergence is then all anti-entropy's doing, over
            // connections the partition black-holed.
        }
        Scenario::OneWay => {
            at(3).await;
            // A ring of one-way cuts: every node can send to one neighbour but not hear back from it.
            for i in 0..n {
                turmoil::partition_oneway(names[i].as_str(), names[(i + 1) % n].as_str());
            }
        }
        Scenario::CrashRestart => {
            for round in 0..2 {
                at(2 + round).await;
                let victim = names[rng.gen_range(0..n)].clone();
                controls.borrow_mut().push(Control::Crash(victim.clone()));
                at(rng.gen_range(2..5)).await;
                controls.borrow_mut().push(Control::Restart(victim));
            }
        }
        Scenario::SkewFlapping => {
            let end = Instant::now() + FAULT_PHASE;
            while Instant::now() < end {
                let (a, b) = distinct_pair(&mut rng, n);
                if rng.gen_bool(0.5) {
                    turmoil::partition(names[a].as_str(), names[b].as_str());
                } else {
                    turmoil::repair(names[a].as_str(), names[b].as_str());
                }
                sleep(Duration::from_millis(500)).await;
            }
        }
        Scenario::Join => {
            at(2).await;
            let joiner = names[active.borrow().len()].clone();
            controls.borrow_mut().push(Control::Start(joiner.clone()));
            // Clients learn of it once it answers; until then writes to it would only fail.
            while request(&joiner, HTTP_PORT, "GET", "/healthz", Bytes::new())
                .await
                .is_err()
            {
                sleep(POLL).await;
            }
            let cut = {
                let mut active = active.borrow_mut();
                let cut = active[rng.gen_range(0..active.len())].clone();
                active.push(joiner.clone());
                cut
            };
            at(3).await;
            turmoil::partition(joiner.as_str(), cut.as_str());
        }
        Scenario::Leave => {
            let leaver = {
                let active = active.borrow();
                active[rng.gen_range(0..active.len())].clone()
            };
            // Cut off from everyone while it keeps taking writes: its deltas are lost, only anti-entropy
            // can hand those writes over. Soon after it is reachable again (before the next periodic round
            // is due) it is told to stop, for good: its drain has to do it.
            at(4).await;
            for other in names.iter().filter(|n| **n != leaver) {
                turmoil::partition(leaver.as_str(), other.as_str());
            }
            at(10).await;
            repair_all(names);
            at(2).await;
            active.borrow_mut().retain(|n| *n != leaver);
            controls.borrow_mut().push(Control::Stop(leaver));
        }
        Scenario::DiskFull => {
            let first = rng.gen_range(0..n);
            let (a, b) = (names[first].clone(), names[(first + 1) % n].clone());
            let fill = |host: &String, full: bool| controls.borrow_mut().push(Control::Fill(host.clone(), full));
            at(3).await;
            fill(&a, true);
            at(3).await;
            // Cut off while full, so that whatever it wrongly acknowledged would live nowhere else: its
            // deltas cannot leave.
            fill(&b, true);
            for other in names.iter().filter(|o| **o != b) {
                turmoil::partition(b.as_str(), other.as_str());
            }
            at(3).await;
            fill(&a, false);
            // Killed while its disk is full, and restarted on it still full.
            at(2).await;
            controls.borrow_mut().push(Control::Crash(b.clone()));
            at(2).await;
            controls.borrow_mut().push(Control::Restart(b.clone()));
            at(2).await;
            fill(&b, false);
        }
        Scenario::Splits => {
            let end = Instant::now() + FAULT_PHASE;
            while Instant::now() < end {
                repair_all(names);
                let side: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.5)).collect();
                for a in 0..n {
                    for b in a + 1..n {
                        if side[a] != side[b] {
                            turmoil::partition(names[a].as_str(), names[b].as_str());
                        }
                    }
                }
                sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn distinct_pair(rng: &mut StdRng, n: usize) -> (usize, usize) {
    let a = rng.gen_range(0..n);
    let b = (a + rng.gen_range(1..n)) % n;
    (a, b)
}

fn repair_all(names: &[String]) {
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            turmoil::repair(a.as_str(), b.as_str());
        }
    }
}

async fn export(node: &str) -> Result<Exported, String> {
    let (status, body) = request(node, HTTP_PORT, "GET", "/api/v1/export", Bytes::new()).await?;
    if status != 200 {
        return Err(format!("export from {node}: status {status}"));
    }
    let mut out = Exported::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).map_err(|e| format!("export from {node}: {e}"))?;
        let field = |name: &str| v[name].as_str().map(str::to_string);
        let key = field("key").ok_or("export line without key")?;
        let version = field("version")
            .as_deref()
            .and_then(parse_version)
            .ok_or("export line without version")?;
        let deleted = v["deleted"].as_bool().unwrap_or(false);
        out.insert(key, (version, deleted, field("value").unwrap_or_default()));
    }
    Ok(out)
}

/// Keys whose entries are not the same on every node (nodes that cannot be read count as disagreeing on
/// nothing).
async fn divergence(names: &[String]) -> usize {
    let mut exports = Vec::new();
    for node in names {
        if let Ok(e) = export(node).await {
            exports.push(e);
        }
    }
    let keys: HashSet<&String> = exports.iter().flat_map(|e| e.keys()).collect();
    keys.into_iter()
        .filter(|k| exports.iter().any(|e| e.get(*k) != exports[0].get(*k)))
        .count()
}

/// Poll until every node's export is the same; returns it.
async fn wait_for_agreement(names: &[String], limit: Duration) -> Result<Exported, String> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut exports = Vec::new();
        for node in names {
            match export(node).await {
                Ok(e) => exports.push(e),
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        if exports.len() == names.len() {
            match exports.iter().position(|e| *e != exports[0]) {
                None => return Ok(exports.swap_remove(0)),
                Some(i) => last = describe_difference(&names[0], &exports[0], &names[i], &exports[i]),
            }
        }
        sleep(POLL).await;
    }
    Err(last)
}

fn describe_difference(a: &str, ea: &Exported, b: &str, eb: &Exported) -> String {
    let keys: HashSet<&String> = ea.keys().chain(eb.keys()).collect();
    let differing = keys.iter().filter(|k| ea.get(**k) != eb.get(**k)).count();
    let example = keys.into_iter().filter(|k| ea.get(*k) != eb.get(*k)).min();
    format!(
        "{a} and {b} differ on {differing} keys, e.g. {example:?}: {:?} vs {:?}",
        example.and_then(|k| ea.get(k)),
        example.and_then(|k| eb.get(k))
    )
}

/// Poll until every node in `names` lists every other one as alive, and each of `departed` as left.
async fn wait_for_membership(names: &[String], departed: &[String], limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    'poll: while Instant::now() < deadline {
        for node in names {
            let rows = match request(node, HTTP_PORT, "GET", "/api/v1/cluster/nodes", Bytes::new()).await {
                Ok((200, body)) => serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default(),
                Ok((status, _)) => {
                    last = format!("{node}: nodes status {status}");
                    sleep(POLL).await;
                    continue 'poll;
                }
                Err(e) => {
                    last = format!("{node}: {e}");
                    sleep(POLL).await;
                    continue 'poll;
                }
            };
            let alive = rows.iter().filter(|r| r["status"] == "alive").count();
            let status_of = |name: &str| {
                rows.iter()
                    .find(|r| r["grpc_addr"].as_str() == Some(&format!("{name}:{GRPC_PORT}")))
                    .and_then(|r| r["status"].as_str())
                    .unwrap_or("unknown")
                    .to_string()
            };
            let not_left: Vec<String> = departed
                .iter()
                .map(|d| (d, status_of(d)))
                .filter(|(_, status)| status != "left")
                .map(|(d, status)| format!("{d} {status}"))
                .collect();
            if alive != names.len() - 1 || !not_left.is_empty() {
                last = format!(
                    "{node} sees {alive} of {} peers alive; departed but not left: {not_left:?}",
                    names.len() - 1
                );
                sleep(POLL).await;
                continue 'poll;
            }
        }
        return Ok(());
    }
    Err(last)
}
