//! The audit trail on real nodes: what is recorded (writes, deletes, secrets opened, refusals; plain reads
//! not), `GET /api/v1/audit` with its filters and pages, retention, the 503 when a record cannot be
//! stored, and that no value or token ever reaches the trail.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cave::config::Config;
use cave::crdt::{Hlc, NodeId};
use cave::node::Node;
use cave::secrets::MasterKey;
use cave::storage::MemoryStore;
use common::TestNode;
use serde_json::Value;

/// Every record of `node`, following the pages.
async fn trail(node: &TestNode, query: &str) -> Vec<Value> {
    let mut records = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let cursor = after.map_or(String::new(), |a| format!("&after={a}"));
        let page = node.get_json(&format!("/api/v1/audit?{query}{cursor}")).await;
        records.extend(page["records"].as_array().unwrap().iter().cloned());
        match page["next"].as_u64() {
            Some(next) => after = Some(next),
            None => return records,
        }
    }
}

/// `(method, route, key, status)` of each record.
fn summary(records: &[Value]) -> Vec<(String, String, Value, u64)> {
    records
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["route"].as_str().unwrap().to_string(),
                r["key"].clone(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn writes_deletes_secrets_opened_and_refusals_are_recorded_and_plain_reads_are_not() {
    let (_dir, node) = common::start().await;
    node.put("app/a%20b", "one").await;
    node.put_secret("app/pw", "hunter2").await;
    assert!(node.get("app/a%20b").await.is_some());
    assert!(node.get("app/pw").await.is_some(), "sealed, not opened: not recorded");
    assert_eq!(node.get("app/pw?secret=true").await.as_deref(), Some(&b"hunter2"[..]));
    node.delete("app/a%20b").await;
    let refused = node.client.put(node.kv("_system/x")).body("v").send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let refused = node.client.get(node.kv("_system/x")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let bad = node.client.put(node.kv("bad%zzkey")).body("v").send().await.unwrap();
    assert_eq!(bad.status(), 400);

    let records = trail(&node, "").await;
    let route = "/api/v1/kv/{*key}".to_string();
    let key = |k: &str| Value::from(k);
    assert_eq!(
        summary(&records),
        [
            ("PUT".into(), route.clone(), key("app/a b"), 200),
            ("PUT".into(), route.clone(), key("app/pw"), 200),
            ("GET".into(), route.clone(), key("app/pw"), 200),
            ("DELETE".into(), route.clone(), key("app/a b"), 200),
            ("PUT".into(), route.clone(), key("_system/x"), 403),
            ("GET".into(), route.clone(), key("_system/x"), 403),
            ("PUT".into(), route.clone(), Value::from("bad%zzkey"), 400),
        ]
    );
    let node_id = node.get_json("/api/v1/system/info").await["node_id"].clone();
    for r in &records {
        assert_eq!(r["node"], node_id, "{r}");
        assert_eq!(r["accessor"], "anonymous", "{r}");
        assert!(r["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{r}");
        assert!(r["time"].as_str().unwrap().ends_with('Z'), "{r}");
    }
    assert_eq!(node.metric("cave_audit_records_total").await, 7.0);
    assert_eq!(node.metric("cave_audit_write_failures_total").await, 0.0);
    node.stop().await;
}

#[tokio::test]
async fn the_trail_pages_and_filters_and_survives_a_restart() {
    let (_dir, node) = common::start().await;
    let before = node.get_json("/api/v1/audit").await;
    assert_eq!(before, serde_json::json!({"records": [], "next": null}));
    for i in 0..25 {
        node.put(&format!("p/{i}"), "v").await;
    }
    let page = node.get_json("/api/v1/audit?limit=10").await;
    assert_eq!(page["records"].as_array().unwrap().len(), 10);
    let next = page["next"].as_u64().unwrap();
    let second = node.get_json(&format!("/api/v1/audit?limit=10&after={next}")).await;
    assert_eq!(second["records"][0]["key"], "p/10");
    assert_eq!(trail(&node, "limit=7").await.len(), 25);
    assert_eq!(trail(&node, "accessor=anonymous").await.len(), 25);
    assert!(trail(&node, "accessor=someone-else").await.is_empty());

    // `since`: RFC 3339 or Unix milliseconds, from the time of a record.
    let all = trail(&node, "").await;
    let t20 = all[20]["time_ms"].as_u64().unwrap();
    let since_ms = trail(&node, &format!("since={t20}")).await;
    assert!(since_ms.iter().all(|r| r["time_ms"].as_u64().unwrap() >= t20));
    assert!(since_ms.len() >= 5 && since_ms.len() <= 25);
    let rfc = all[20]["time"].as_str().unwrap().to_string();
    assert_eq!(trail(&node, &format!("since={rfc}")).await, since_ms);
    assert!(
        trail(&node, "since=4102444800000").await.is_empty(),
        "2100 is in the future"
    );

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "after=-1",
        "since=yesterday",
        "accessor=",
    ] {
        let response = node
            .client
            .get(node.url(&format!("/api/v1/audit?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "invalid_input", "{bad}: {body}");
    }

    // Durable: the same trail after a restart, and ids keep growing.
    let node = node.restart().await;
    assert_eq!(trail(&node, "").await, all);
    node.put("p/after", "v").await;
    let after = trail(&node, "").await;
    assert!(after[25]["id"].as_u64().unwrap() > all[24]["id"].as_u64().unwrap());
    node.stop().await;
}

#[tokio::test]
async fn records_past_their_retention_are_purged() {
    let (_dir, node) = common::start_with(|c| c.audit_retention = Duration::from_secs(1)).await;
    for i in 0..3 {
        node.put(&format!("r/{i}"), "v").await;
    }
    assert_eq!(trail(&node, "").await.len(), 3);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !trail(&node, "").await.is_empty() {
        assert!(Instant::now() < deadline, "audit records outlived their retention");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.put("r/new", "v").await;
    assert_eq!(summary(&trail(&node, "").await)[0].2, "r/new");
    node.stop().await;
}

/// A node over a [`MemoryStore`] whose "disk" the test fills, served on a loopback port.
struct MemoryNode {
    base: String,
    store: MemoryStore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

impl MemoryNode {
    async fn start() -> MemoryNode {
        let store = MemoryStore::new();
        let config = Config {
            cluster_key: Some(MasterKey::generate()),
            ..Config::default()
        };
        let node = Node::from_store(
            config.clone(),
            Arc::new(store.clone()),
            NodeId(11),
            Arc::new(Hlc::system()),
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let limits = cave::api::server::Limits::of(&config, None);
        let router = node.router();
        let metrics = node.db.metrics().clone();
        let served = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            cave::api::server::serve(listener, router, limits, None, metrics, shutdown)
                .await
                .unwrap();
            node.close().await.unwrap();
        });
        MemoryNode {
            base,
            store,
            stop: Some(stop),
            served,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.served)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn a_request_whose_record_cannot_be_stored_is_refused_with_503() {
    let node = MemoryNode::start().await;
    let client = common::client();
    let url = |path: &str| format!("{}{path}", node.base);
    let put = client
        .put(url("/api/v1/kv/s?secret=true"))
        .body("plaintext-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    node.store.set_full(true);
    let opened = client.get(url("/api/v1/kv/s?secret=true")).send().await.unwrap();
    assert_eq!(opened.status(), 503);
    let body = opened.text().await.unwrap();
    assert!(!body.contains("plaintext-7f3a"), "the secret left unrecorded: {body}");
    assert!(body.contains("audit trail"), "{body}");
    let refused = client.get(url("/api/v1/kv/_system/x")).send().await.unwrap();
    assert_eq!(refused.status(), 503, "a 403 that cannot be recorded");
    // A write on the full disk: neither it nor its record is stored, and the answer says so.
    let write = client.put(url("/api/v1/kv/w")).body("v").send().await.unwrap();
    assert_eq!(write.status(), 507);
    // Plain reads need no record.
    let sealed = client.get(url("/api/v1/kv/s")).send().await.unwrap();
    assert_eq!(sealed.status(), 200);
    let metrics = client
        .get(url("/api/v1/perf/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("cave_audit_write_failures_total 3"), "{metrics}");

    node.store.set_full(false);
    let opened = client.get(url("/api/v1/kv/s?secret=true")).send().await.unwrap();
    assert_eq!(opened.text().await.unwrap(), "plaintext-7f3a");
    let page: Value = client
        .get(url("/api/v1/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<u64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [200, 200],
        "the first write and the last secret read; the refused ones left nothing"
    );
    assert!(client.get(url("/api/v1/kv/w")).send().await.unwrap().status() == 404);
    node.stop().await;
}

#[tokio::test]
async fn no_value_secret_or_token_reaches_the_trail() {
    let (dir, node) = common::start().await;
    let value = "VALUE-MARKER-4c1d";
    let secret = "SECRET-MARKER-9e2b";
    let token = "TOKEN-MARKER-55aa";
    let query = "QUERY-MARKER-0d0d";
    node.put("m/plain", value).await;
    node.put_secret("m/secret", secret).await;
    for (name, header) in [
        ("authorization", format!("Bearer {token}")),
        ("x-cave-token", token.to_string()),
    ] {
        let response = node
            .client
            .put(node.kv(&format!("m/with-token?note={query}")))
            .header(name, header)
            .body(value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        node.get("m/secret?secret=true").await.as_deref(),
        Some(secret.as_bytes())
    );
    let batch = serde_json::json!([{"key": "m/batch", "verb": "set", "value": value}]);
    let response = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let api = node.text("/api/v1/audit").await;
    assert_eq!(trail(&node, "").await.len(), 6, "{api}");
    for marker in [value, secret, token, query] {
        assert!(!api.contains(marker), "{marker} in the audit API: {api}");
    }
    let data = node.data_dir();
    node.stop().await;

    // The audit table itself, and the token and query string anywhere in the database files.
    let mut conn = {
        use sqlx::ConnectOptions;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(data.join("cave.db"))
            .connect()
            .await
            .unwrap()
    };
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id || '|' || time_ms || '|' || node || '|' || accessor || '|' || method || '|' || route || '|' || \
         COALESCE(key, '') || '|' || status || '|' || COALESCE(remote_addr, '') FROM audit",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 6);
    for (row,) in &rows {
        for marker in [value, secret, token, query] {
            assert!(!row.contains(marker), "{marker} in the audit table: {row}");
        }
    }
    drop(conn);
    for entry in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        for marker in [token, query, secret] {
            let found = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
            assert!(!found, "{marker} in a file of the data directory");
        }
    }
    drop(dir);
}

#[tokio::test]
async fn repair_clock_keeps_the_trail() {
    use cave::crdt::{Entry, Version};
    use cave::storage::{SqliteStore, Store};

    let (_dir, node) = common::start().await;
    node.put("kept", "v").await;
    node.delete("kept").await;
    let before = trail(&node, "").await;
    let config = node.config.clone();
    node.stop().await;
    let store = SqliteStore::open(&config.data_dir.join(cave::node::DB_FILE), config.durability)
        .await
        .unwrap();
    let pinned = Entry::value("pinned", "p", Version::new(u64::MAX, NodeId(1)));
    store.apply(&[pinned]).await.unwrap();
    store.close().await.unwrap();
    let repaired = cave::node::repair_clock(&config).await.unwrap();
    assert_eq!(repaired.len(), 1);
    let node = TestNode::start_config(config).await;
    assert_eq!(trail(&node, "").await, before);
    node.stop().await;
}
