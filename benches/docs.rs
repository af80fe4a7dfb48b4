//! Document values: what a field patch costs next to a plain PUT of the same JSON, what it puts on the wire,
//! how a document grows, and how long merging a long history takes.
//!
//! 1. One node in this process (SQLite storage, HTTP on loopback). ROUNDS times, alternately: OPS plain PUTs
//!    of a JSON object (12 fields) to DOCS keys, and OPS merge-patches of one field of DOCS documents holding
//!    that same JSON. Per-op CPU is the process's (client and server: the client's share is the same for
//!    both) user+sys time from `getrusage`, divided by the ops; the ratio is taken round by round, so that both
//!    sides see the same machine load.
//! 2. Bytes on the wire per patch: the delta a field edit broadcasts (the entry's value: Automerge's
//!    incremental save of the one change), next to the whole saved document.
//! 3. Growth: the saved size of a document after CHANGES small field edits, per change.
//! 4. Merge: two replicas of a CHANGES-change document that diverged for the last 10 % of it, joined
//!    (`crdt::doc::join_plain`: load both, merge, save), median of 5.
//!
//! Run: `cargo bench --bench docs` (env OPS, ROUNDS, DOCS, CHANGES).

use std::time::{Duration, Instant};

use bytes::Bytes;
use cave::crdt::doc::{join_plain, Doc, DOC_CONTENT_TYPE};
use cave::crdt::{Entry, NodeId, Version};
use serde_json::{json, Value};

mod support;
use support::{env_or, BenchNode};

fn cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn body(i: usize) -> Value {
    let mut map = serde_json::Map::new();
    for f in 0..12 {
        map.insert(format!("field{f}"), json!(format!("value {f} of {i}")));
    }
    map.insert("n".into(), json!(i));
    Value::Object(map)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Run `ops` requests made by `make` on 4 concurrent clients; (CPU per op in µs, ops/s).
async fn phase(client: &reqwest::Client, ops: usize, make: impl Fn(usize) -> reqwest::RequestBuilder) -> (f64, f64) {
    let (cpu0, wall0) = (cpu(), Instant::now());
    let mut pending = futures::stream::FuturesUnordered::new();
    let _ = client;
    for i in 0..ops {
        pending.push(make(i).send());
        if pending.len() >= 4 {
            let r = futures::StreamExt::next(&mut pending).await.unwrap().unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    while let Some(r) = futures::StreamExt::next(&mut pending).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let (cpu, wall) = ((cpu() - cpu0).as_secs_f64(), wall0.elapsed().as_secs_f64());
    (cpu * 1e6 / ops as f64, ops as f64 / wall)
}

fn entry(doc: &mut Doc, version: Version, created: Version) -> Entry {
    Entry {
        value: Bytes::from(doc.save()),
        content_type: DOC_CONTENT_TYPE.into(),
        doc: Some(Box::new(doc.meta(created))),
        ..Entry::value("k", "", version)
    }
}

#[tokio::main]
async fn main() {
    let ops: usize = env_or("OPS", 2_000);
    let rounds: usize = env_or("ROUNDS", 4);
    let docs: usize = env_or("DOCS", 50);
    let changes: usize = env_or("CHANGES", 10_000);

    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let node = BenchNode::start(&client).await;
    let base = node.base.clone();

    // 1. PATCH of one field vs PUT of the same JSON.
    let mut ratios = Vec::new();
    let (mut put_cpu, mut patch_cpu, mut put_rate, mut patch_rate) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        for d in 0..docs {
            let url = format!("{base}/api/v1/kv/bench/doc{round}-{d}?doc=true");
            assert_eq!(
                client.put(url).body(body(0).to_string()).send().await.unwrap().status(),
                200
            );
        }
        let (pc, pr) = phase(&client, ops, |i| {
            client
                .put(format!("{base}/api/v1/kv/bench/plain{}", i % docs))
                .header("content-type", "application/json")
                .body(body(i).to_string())
        })
        .await;
        let (dc, dr) = phase(&client, ops, |i| {
            client
                .patch(format!("{base}/api/v1/kv/bench/doc{round}-{}", i % docs))
                .header("content-type", "application/merge-patch+json")
                .body(json!({"n": i}).to_string())
        })
        .await;
        ratios.push(dc / pc);
        put_cpu.push(pc);
        patch_cpu.push(dc);
        put_rate.push(pr);
        patch_rate.push(dr);
    }
    println!(
        "PUT of a 12-field JSON: median {:.0} µs CPU/op, {:.0} ops/s; PATCH of one field: median {:.0} µs CPU/op, {:.0} patches/s",
        median(put_cpu),
        median(put_rate),
        median(patch_cpu),
        median(patch_rate)
    );
    println!(
        "  PATCH/PUT CPU per op, round by round: {:?}, median {:.2}x (documents of up to {} changes)",
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>(),
        median(ratios.clone()),
        ops / docs + 1
    );
    node.stop().await;

    // 2-4. Wire bytes, growth, merge time.
    let created = Version::new(1, NodeId(1));
    let mut doc = Doc::new(NodeId(1));
    doc.update_to(&body(0)).unwrap();
    doc.commit(0, "create");
    let mut deltas = Vec::new();
    let mut fork_at = None;
    for i in 1..changes {
        let before = doc.head_hashes();
        doc.merge_patch(&json!({"n": i})).unwrap();
        doc.commit(i as i64, "patch");
        if i % (changes / 100).max(1) == 0 {
            deltas.push(doc.save_after(&before).len() as f64);
        }
        if i == changes * 9 / 10 {
            fork_at = Some(doc.save());
        }
    }
    let whole = doc.save().len();
    println!(
        "wire per patch (delta value): median {:.0} bytes; the whole document after {changes} changes: {whole} bytes ({:.1} bytes per change)",
        median(deltas),
        whole as f64 / changes as f64
    );
    let a = entry(&mut doc, Version::new(changes as u64 + 1, NodeId(1)), created);
    let mut other = Doc::load(&fork_at.unwrap(), NodeId(2)).unwrap();
    for i in 0..changes / 10 {
        other.merge_patch(&json!({"other": i})).unwrap();
        other.commit(i as i64, "patch");
    }
    let b = entry(&mut other, Version::new(changes as u64 + 2, NodeId(2)), created);
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let joined = join_plain(&a, &b).unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(joined.doc.unwrap().changes as usize, changes + changes / 10);
    }
    println!(
        "merge of two replicas of a {changes}-change document ({} concurrent changes on one side): median {:.1} ms",
        changes / 10,
        median(times)
    );
}
