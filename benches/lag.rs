//! Replication lag under load, measured from the watch stream (no polling).
//!
//! Three real nodes run in this process (SQLite storage, gRPC over loopback, HTTP on loopback). The program
//! 1. measures the peak write rate node 1 sustains with 64 concurrent HTTP writers,
//! 2. opens a watch stream (`GET /api/v1/watch/lag`) on node 3,
//! 3. writes to node 1 at half that rate, paced, and for each acknowledged write takes the time from the
//!    acknowledgment on node 1 to the event on node 3's stream,
//!    and prints the lag percentiles and how many writes never showed up.
//!
//! Run: `cargo bench --bench lag` (env SECONDS, default 10, for the measured phase).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cave::config::{Config, Mode};
use cave::secrets::MasterKey;
use futures::StreamExt;
use parking_lot::Mutex;

struct Node {
    base: String,
    grpc: String,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(key: &MasterKey, seeds: Vec<String>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (base, grpc_addr) = (
        format!("http://{}", http.local_addr().unwrap()),
        grpc.local_addr().unwrap(),
    );
    let config = Config {
        mode: Mode::Prod,
        data_dir: dir.path().join("data"),
        cluster_key: Some(key.clone()),
        peers: seeds,
        mdns: false,
        discovery_window: Duration::ZERO,
        http_addr: http.local_addr().unwrap(),
        grpc_addr,
        log_level: "warn".into(),
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        cave::node::serve_with(config, http, Some(grpc), shutdown)
            .await
            .unwrap();
    });
    let client = reqwest::Client::new();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Node {
        base,
        grpc: grpc_addr.to_string(),
        stop,
        _dir: dir,
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let key = MasterKey::generate();
    let n1 = start(&key, vec![]).await;
    let n2 = start(&key, vec![n1.grpc.clone()]).await;
    let n3 = start(&key, vec![n2.grpc.clone()]).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();
    // Wait until node 3 knows both others.
    loop {
        let nodes: serde_json::Value = client
            .get(format!("{}/api/v1/cluster/nodes", n3.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if nodes
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["status"] == "alive")
            .count()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. Peak: 64 writers for 5 s.
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (client, base, done, count) = (client.clone(), n1.base.clone(), done.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                let url = format!("{base}/api/v1/kv/peak/{w}/{}", i % 1000);
                if client
                    .put(url)
                    .body(vec![b'v'; 100])
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
                {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let peak = count.load(Ordering::Relaxed) as f64 / 5.0;
    let rate = peak / 2.0;
    println!("peak write rate through node 1: {peak:.0}/s; measuring lag at {rate:.0}/s for {seconds} s");

    // 2. Watch node 3.
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = client
        .get(format!("{}/api/v1/watch/lag", n3.base))
        .send()
        .await
        .unwrap();
    let mut stream = watch.bytes_stream();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                let now = Instant::now();
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buf.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&event);
                    if text.contains("event: ready") {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    for line in text.lines() {
                        if let Some(data) = line.strip_prefix("data: ") {
                            if let Ok(v) = serde_json::from_str::<serde_json::Value>(data) {
                                if let Some(k) = v["key"].as_str() {
                                    seen.lock().entry(k.to_string()).or_insert(now);
                                }
                            }
                        }
                    }
                }
            }
        })
    };
    ready_rx.await.unwrap();

    // 3. Paced writes at half the peak rate, spread over 32 writers.
    let writers = 32;
    let per_writer = Duration::from_secs_f64(writers as f64 / rate);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, base, acked) = (client.clone(), n1.base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now() + per_writer.mul_f64(w as f64 / writers as f64);
            let mut i = 0u64;
            while Instant::now() < deadline {
                tokio::time::sleep_until(next.into()).await;
                next += per_writer;
                let key = format!("lag/{w}/{i}");
                let r = client
                    .put(format!("{base}/api/v1/kv/{key}"))
                    .body(vec![b'v'; 100])
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 200) {
                    acked.lock().insert(key, Instant::now());
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // stragglers
    watcher.abort();
    let acked = acked.lock().clone();
    let seen = seen.lock().clone();
    let mut lags: Vec<f64> = Vec::new();
    let mut missing = 0;
    for (k, at) in &acked {
        match seen.get(k) {
            Some(s) => lags.push(s.saturating_duration_since(*at).as_secs_f64() * 1000.0),
            None => missing += 1,
        }
    }
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "lag node 1 -> node 3 (ack to watch event), {} writes at {:.0}/s: p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms, missing {}",
        acked.len(),
        acked.len() as f64 / seconds as f64,
        pct(&lags, 0.5),
        pct(&lags, 0.9),
        pct(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN),
        missing
    );
    for n in [n1, n2, n3] {
        let _ = n.stop.send(());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}
