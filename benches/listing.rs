//! Listing one page of a huge folder: 1,000 children of a folder of 1,000,000 keys, over HTTP.
//!
//! One node in this process (dev mode, SQLite storage, HTTP on loopback) is filled with KEYS keys directly in
//! `big/` (100-byte values, through `POST /api/v1/query` batches) plus SUBFOLDERS sub-folders of
//! SUBFOLDER_KEYS keys each mixed in between them (a page must jump over each in one seek). Then REQUESTS
//! pages of LIMIT children are fetched at the start, the middle and the end of the folder
//! (`GET /api/v1/kv/big/?limit=1000&after=K`), plain and with `?meta=true`, one client, sequentially, and
//! the latency percentiles printed: a page must cost the same wherever it is (O(page), not O(folder)).
//! The target (issue 12 item 6) is 5 ms for 1,000 keys of a 1 M folder.
//!
//! Run: `cargo bench --bench listing` (env KEYS, SUBFOLDERS, SUBFOLDER_KEYS, LIMIT, REQUESTS).

use std::time::Instant;

mod support;
use support::{env_or, BenchNode};

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((p * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

async fn fill(client: &reqwest::Client, base: &str, keys: impl Iterator<Item = String>) -> usize {
    let value = "v".repeat(100);
    let keys: Vec<String> = keys.collect();
    for batch in keys.chunks(10_000) {
        let ops: Vec<serde_json::Value> = batch
            .iter()
            .map(|k| serde_json::json!({"key": k, "verb": "set", "value": value}))
            .collect();
        let response = client
            .post(format!("{base}/api/v1/query"))
            .json(&ops)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    keys.len()
}

#[tokio::main]
async fn main() {
    let keys: usize = env_or("KEYS", 1_000_000);
    let subfolders: usize = env_or("SUBFOLDERS", 100);
    let subfolder_keys: usize = env_or("SUBFOLDER_KEYS", 1_000);
    let limit: usize = env_or("LIMIT", 1_000);
    let requests: usize = env_or("REQUESTS", 200);
    let client = reqwest::Client::builder().build().unwrap();
    let node = BenchNode::start(&client).await;
    let base = node.base.clone();

    let started = Instant::now();
    let direct = fill(&client, &base, (0..keys).map(|i| format!("big/k{i:07}"))).await;
    // Sub-folders spread over the key range: `big/k0012345/` sorts right after the key `big/k0012345`.
    let step = (keys / subfolders.max(1)).max(1);
    let nested = fill(
        &client,
        &base,
        (0..subfolders).flat_map(|f| (0..subfolder_keys).map(move |j| format!("big/k{:07}/sub/{j:05}", f * step))),
    )
    .await;
    println!(
        "filled {direct} keys directly in big/ and {nested} in {subfolders} sub-folders in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!("{requests} sequential requests per row, {limit} children each (p50 / p99 / max, ms):");
    for (place, after) in [
        ("start", None),
        ("middle", Some(format!("big/k{:07}", keys / 2))),
        ("end", Some(format!("big/k{:07}", keys.saturating_sub(limit + 1)))),
    ] {
        for meta in [false, true] {
            let mut url = format!("{base}/api/v1/kv/big/?limit={limit}");
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            if meta {
                url.push_str("&meta=true");
            }
            let mut latencies = Vec::with_capacity(requests);
            let mut body_bytes = 0;
            for _ in 0..requests {
                let t = Instant::now();
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                let body = response.bytes().await.unwrap();
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                body_bytes = body.len();
                let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let field = if meta { "entries" } else { "children" };
                assert_eq!(page[field].as_array().unwrap().len(), limit, "{place}");
            }
            latencies.sort_by(f64::total_cmp);
            println!(
                "  {place:<6} {:<10} p50 {:>6.2}  p99 {:>6.2}  max {:>6.2}   ({} KiB per page)",
                if meta { "meta=true" } else { "plain" },
                pct(&latencies, 0.5),
                pct(&latencies, 0.99),
                latencies.last().unwrap(),
                body_bytes >> 10
            );
        }
    }
    node.stop().await;
}
