//! Expiring keys over HTTP: `PUT ?ttl=` and batch `set` with `ttl`, `X-Cave-Expires`, absence from reads,
//! listings and exports once expired, `event: expire` on the watch stream, a later write without a TTL
//! making the key permanent, bad TTLs refused, and two nodes agreeing on the expiry.

mod common;

use std::time::{Duration, Instant};

use cave::secrets::MasterKey;
use common::{expect_error, start, TestNode};
use futures::StreamExt;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);

async fn put_ttl(node: &TestNode, key: &str, ttl: &str) -> reqwest::Response {
    node.client
        .put(node.kv(&format!("{key}?ttl={ttl}")))
        .body("v")
        .send()
        .await
        .unwrap()
}

fn expires_of(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("x-cave-expires")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

async fn head(node: &TestNode, key: &str) -> reqwest::Response {
    node.client.get(node.kv(key)).send().await.unwrap()
}

/// Wait until `key` reads as 404 on `node`.
async fn until_gone(node: &TestNode, key: &str) -> Duration {
    let started = Instant::now();
    while head(node, key).await.status() != 404 {
        assert!(started.elapsed() < DEADLINE, "{key} did not expire within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_key_vanishes_from_reads_listings_exports_and_says_so_on_the_watch() {
    let (_dir, node) = start().await;
    let watch = node.client.get(node.url("/api/v1/watch/svc")).send().await.unwrap();
    let mut stream = watch.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: ready") {
        seen.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }

    let before = now_ms();
    let response = put_ttl(&node, "svc/a", "1s").await;
    assert_eq!(response.status(), 200);
    node.put("svc/keep", "permanent").await;
    let read = head(&node, "svc/a").await;
    assert_eq!(read.status(), 200);
    let expires = expires_of(&read).expect("X-Cave-Expires on an expiring key");
    assert!((before + 1_000..=now_ms() + 1_000).contains(&expires), "{expires}");
    assert_eq!(expires_of(&head(&node, "svc/keep").await), None);
    let line = node.export().await.into_iter().find(|l| l["key"] == "svc/a").unwrap();
    assert_eq!(line["expires_ms"], json!(expires));
    let meta = node.get_json("/api/v1/kv/svc/?meta=true").await;
    let meta_a = meta["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "svc/a")
        .unwrap()
        .clone();
    assert_eq!(meta_a["expires_ms"], json!(expires));
    assert_eq!(node.metric("cave_expiring_keys").await, 1.0);

    until_gone(&node, "svc/a").await;
    assert!(now_ms() >= expires, "gone before its expiry");
    let started = Instant::now();
    while node.metric("cave_expiring_keys").await != 0.0 {
        assert!(started.elapsed() < DEADLINE, "the expired value was never swept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = node.get_json("/api/v1/kv/svc/").await;
    assert_eq!(listed, json!(["svc/keep"]));
    assert!(node
        .export()
        .await
        .iter()
        .all(|l| l["key"] != "svc/a" || l["deleted"] == json!(true)));
    let started = Instant::now();
    while !seen.contains("event: expire") {
        let chunk = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
        assert!(started.elapsed() < DEADLINE);
    }
    let expire = seen.split("event: expire").nth(1).unwrap();
    assert!(expire.contains("\"svc/a\""), "{seen}");

    // A later write without a TTL makes the key permanent again.
    assert_eq!(put_ttl(&node, "svc/b", "1s").await.status(), 200);
    node.put("svc/b", "permanent now").await;
    tokio::time::sleep(Duration::from_millis(1_300)).await; // past the first write's expiry: nothing to await
    let read = head(&node, "svc/b").await;
    assert_eq!(read.status(), 200);
    assert_eq!(expires_of(&read), None);
    node.stop().await;
}

#[tokio::test]
async fn bad_ttls_are_refused_and_batches_take_a_ttl() {
    let (_dir, node) = common::start_with(|c| c.max_ttl = Duration::from_secs(3600)).await;
    for (ttl, needle) in [
        ("0s", "between 1s and 1h"),
        ("10ms", "between 1s and 1h"),
        ("2h", "between 1s and 1h"),
        ("soon", "parameter ttl"),
        ("", "parameter ttl"),
    ] {
        expect_error(put_ttl(&node, "k", ttl).await, 400, "invalid_input", needle).await;
    }
    assert_eq!(head(&node, "k").await.status(), 404, "a refused write stores nothing");
    let doc = node
        .client
        .put(node.kv("d?doc=true&ttl=5s"))
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(doc, 400, "invalid_input", "documents do not expire").await;

    let batch = |ops: Value| node.client.post(node.url("/api/v1/query")).json(&ops).send();
    let refused = batch(json!([{"key": "b/x", "verb": "set", "value": "1", "ttl": "5h"}]))
        .await
        .unwrap();
    expect_error(refused, 400, "invalid_input", "ttl").await;
    let ok = batch(json!([
        {"key": "b/x", "verb": "set", "value": "1", "ttl": "1s"},
        {"key": "b/y", "verb": "set", "value": "2"},
    ]))
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(expires_of(&head(&node, "b/x").await).is_some());
    until_gone(&node, "b/x").await;
    assert_eq!(head(&node, "b/y").await.status(), 200);
    node.stop().await;
}

/// A key written with a TTL on one node carries the same expiry on the other, and vanishes from both.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_agree_on_an_expiry() {
    let key = MasterKey::generate();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ((grpc_a, addr_a), (grpc_b, addr_b)) = (common::grpc_listener(), common::grpc_listener());
    let a = common::prod_member(&dir_a, &key, grpc_a, vec![addr_b]).await;
    let b = common::prod_member(&dir_b, &key, grpc_b, vec![addr_a]).await;
    assert_eq!(put_ttl(&a, "svc/node-1", "2s").await.status(), 200);
    let on_a = expires_of(&head(&a, "svc/node-1").await).unwrap();
    let started = Instant::now();
    let on_b = loop {
        let read = head(&b, "svc/node-1").await;
        if read.status() == 200 {
            break expires_of(&read).unwrap();
        }
        assert!(started.elapsed() < DEADLINE, "b never received the key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(on_a, on_b, "one expiry, on the cluster's clock");
    until_gone(&a, "svc/node-1").await;
    until_gone(&b, "svc/node-1").await;
    assert!(now_ms() >= on_a);
    a.stop().await;
    b.stop().await;
}
