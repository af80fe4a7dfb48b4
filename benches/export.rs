//! Export of a large key space, and what it does to writes meanwhile.
//!
//! One node in this process (SQLite storage, HTTP on loopback) is filled with KEYS keys (default 1,000,000,
//! 100-byte values, through `POST /api/v1/query` batches). The program then
//! 1. exports everything alone (`GET /api/v1/export`, read to the end) and prints the rate,
//! 2. starts paced writers and alternates, ROUNDS times, a quiet window as long as that export with an
//!    export; each PUT's latency counts as "without export" or "during export" by when it started. The
//!    alternation exposes both sets to the same drift in machine load (other jobs share the cores).
//!
//! It also prints the process's resident memory before and after an export (RSS growth of one export).
//!
//! Run: `cargo bench --bench export` (env KEYS to change the size, ROUNDS, WRITERS and PUT_INTERVAL_MS the
//! load).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;

mod support;
use support::{env_or, BenchNode};

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

/// Export everything; (lines, bytes, elapsed).
async fn export(client: &reqwest::Client, base: &str) -> (usize, usize, Duration) {
    let started = Instant::now();
    let response = client.get(format!("{base}/api/v1/export")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let (mut lines, mut bytes) = (0, 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    (lines, bytes, started.elapsed())
}

/// Latencies (ms) of PUTs started without an export running, and of those started during one.
#[derive(Default)]
struct Latencies {
    quiet: Vec<f64>,
    busy: Vec<f64>,
}

/// Paced writers (each one PUT every `interval`) until `done`, filing each latency by `exporting`.
fn writers(
    client: &reqwest::Client,
    base: &str,
    count: usize,
    interval: Duration,
    done: &Arc<AtomicBool>,
    exporting: &Arc<AtomicBool>,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<Mutex<Latencies>>) {
    let latencies = Arc::new(Mutex::new(Latencies::default()));
    let tasks = (0..count)
        .map(|w| {
            let (client, base, done, latencies) = (client.clone(), base.to_string(), done.clone(), latencies.clone());
            let exporting = exporting.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = 0u64;
                while !done.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let busy = exporting.load(Ordering::Relaxed);
                    let started = Instant::now();
                    let response = client
                        .put(format!("{base}/api/v1/kv/load/{w}/{}", i % 1000))
                        .body(vec![b'w'; 100])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    let mut latencies = latencies.lock();
                    if busy {
                        latencies.busy.push(ms);
                    } else {
                        latencies.quiet.push(ms);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    (tasks, latencies)
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<()>>, latencies: Arc<Mutex<Latencies>>) -> (Vec<f64>, Vec<f64>) {
    for task in tasks {
        task.await.unwrap();
    }
    let Latencies { mut quiet, mut busy } = std::mem::take(&mut *latencies.lock());
    quiet.sort_by(f64::total_cmp);
    busy.sort_by(f64::total_cmp);
    (quiet, busy)
}

#[tokio::main]
async fn main() {
    let keys: usize = env_or("KEYS", 1_000_000);
    let rounds: usize = env_or("ROUNDS", 5);
    let writer_count: usize = env_or("WRITERS", 4);
    let interval = Duration::from_millis(env_or("PUT_INTERVAL_MS", 5));
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let node = BenchNode::start(&client).await;
    let base = node.base.clone();

    let started = Instant::now();
    let value = "v".repeat(100);
    for batch in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        let ops: Vec<serde_json::Value> = batch
            .iter()
            .map(|i| serde_json::json!({"key": format!("bench/{:02}/k{i:07}", i % 97), "verb": "set", "value": value}))
            .collect();
        let response = client
            .post(format!("{base}/api/v1/query"))
            .json(&ops)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    println!("filled {keys} keys in {:.1} s", started.elapsed().as_secs_f64());

    // 1. Export alone, with the resident memory of this process (node and client) around it: an export
    // streams, so it should leave the resident set where it was.
    let rss_mb = || cave::metrics::process::resident_bytes().map_or(f64::NAN, |b| b as f64 / (1 << 20) as f64);
    let rss_before = rss_mb();
    let (lines, bytes, alone) = export(&client, &base).await;
    let rss_after = rss_mb();
    let (_, _, _) = export(&client, &base).await;
    println!(
        "RSS before the first export {rss_before:.0} MB, after it {rss_after:.0} MB, after a second {:.0} MB",
        rss_mb()
    );
    assert!(lines >= keys, "export had {lines} lines for {keys} keys");
    println!(
        "export alone: {lines} entries, {} MB in {:.2} s = {:.0} entries/s",
        bytes >> 20,
        alone.as_secs_f64(),
        lines as f64 / alone.as_secs_f64()
    );

    // 2. Quiet windows and exports in turn, under the same paced writers.
    let window = alone.max(Duration::from_secs(1));
    let (done, exporting) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (tasks, latencies) = writers(&client, &base, writer_count, interval, &done, &exporting);
    let mut exports = Vec::new();
    for _ in 0..rounds {
        tokio::time::sleep(window).await;
        exporting.store(true, Ordering::Relaxed);
        exports.push(export(&client, &base).await);
        exporting.store(false, Ordering::Relaxed);
    }
    tokio::time::sleep(window).await;
    done.store(true, Ordering::Relaxed);
    let (quiet, busy) = finish(tasks, latencies).await;
    let mut rates: Vec<f64> = exports
        .iter()
        .map(|(lines, _, took)| *lines as f64 / took.as_secs_f64())
        .collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "export under writes: {} exports, median {:.0} entries/s (slowest {:.0})",
        rates.len(),
        pct(&rates, 0.5),
        rates[0]
    );

    let rate = writer_count as f64 * 1000.0 / interval.as_millis() as f64;
    println!("PUT latency, {writer_count} paced writers (~{rate:.0} PUT/s):");
    println!(
        "  without export: {} PUTs, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        quiet.len(),
        pct(&quiet, 0.50),
        pct(&quiet, 0.99),
        quiet.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  during export:  {} PUTs, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        busy.len(),
        pct(&busy, 0.50),
        pct(&busy, 0.99),
        busy.last().copied().unwrap_or(f64::NAN)
    );
    println!("  p99 ratio: {:.2}x", pct(&busy, 0.99) / pct(&quiet, 0.99));
    node.stop().await;
}
