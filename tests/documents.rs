//! Document values end to end: the HTTP contract on one node, and two nodes that edit one document apart
//! and then meet.

mod common;

use std::time::{Duration, Instant};

use cave::secrets::MasterKey;
use common::{expect_error, TestNode};
use serde_json::{json, Value};

/// Convergence must happen well within this (anti-entropy every 500 ms here).
const CONVERGE: Duration = Duration::from_secs(30);

const MERGE: &str = "application/merge-patch+json";
const PATCH: &str = "application/json-patch+json";

async fn patch(n: &TestNode, key: &str, media: &str, body: Value) -> reqwest::Response {
    n.client
        .patch(n.kv(key))
        .header("content-type", media)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn put_doc(n: &TestNode, key: &str, body: Value) -> reqwest::Response {
    let sep = if key.contains('?') { '&' } else { '?' };
    n.client
        .put(n.kv(&format!("{key}{sep}doc=true")))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn doc_json(n: &TestNode, key: &str) -> Option<Value> {
    let response = n.client.get(n.kv(key)).send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    assert_eq!(response.headers()["x-cave-type"], "doc");
    response.json().await.ok()
}

#[tokio::test]
async fn the_http_contract_of_documents() {
    let (_dir, n) = common::start_prod().await;
    let created = put_doc(&n, "cfg/app", json!({"name": "app", "limits": {"cpu": 1}})).await;
    assert_eq!(created.status(), 200);
    assert_eq!(created.headers()["x-cave-type"], "doc");
    let got = n.client.get(n.kv("cfg/app")).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "application/json");
    assert_eq!(
        got.json::<Value>().await.unwrap(),
        json!({"name": "app", "limits": {"cpu": 1}})
    );

    let r = patch(&n, "cfg/app", MERGE, json!({"limits": {"mem": 2}, "name": null})).await;
    assert_eq!(r.status(), 200);
    let ops = json!([
        {"op": "add", "path": "/hits", "value": 0, "counter": true},
        {"op": "increment", "path": "/hits", "value": 5},
        {"op": "test", "path": "/limits/cpu", "value": 1},
    ]);
    assert_eq!(patch(&n, "cfg/app", PATCH, ops).await.status(), 200);
    let want = json!({"limits": {"cpu": 1, "mem": 2}, "hits": 5});
    assert_eq!(doc_json(&n, "cfg/app").await.unwrap(), want);

    // A PUT on the document applies the difference as one change.
    assert_eq!(
        put_doc(&n, "cfg/app", json!({"limits": {"cpu": 4}, "hits": 7}))
            .await
            .status(),
        200
    );
    assert_eq!(
        doc_json(&n, "cfg/app").await.unwrap(),
        json!({"limits": {"cpu": 4}, "hits": 7})
    );

    let history: Value = n.get_json("/api/v1/kv/cfg/app?history=true").await;
    let changes = history["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 4);
    assert_eq!(changes[0]["summary"], "create");
    assert!(changes[2]["summary"].as_str().unwrap().contains("increment /hits by 5"));
    assert_eq!(changes[3]["summary"], "put");
    assert!(changes
        .iter()
        .all(|c| c["hash"].as_str().unwrap().len() == 64 && c["time_ms"].as_i64() > Some(0)));

    // What does not apply changes nothing: 422, and the document is as it was.
    let before = doc_json(&n, "cfg/app").await.unwrap();
    let failing =
        json!([{"op": "replace", "path": "/limits/cpu", "value": 9}, {"op": "test", "path": "/hits", "value": 0}]);
    expect_error(
        patch(&n, "cfg/app", PATCH, failing).await,
        422,
        "unprocessable",
        "test failed",
    )
    .await;
    expect_error(
        patch(
            &n,
            "cfg/app",
            PATCH,
            json!([{"op": "increment", "path": "/limits", "value": 1}]),
        )
        .await,
        422,
        "unprocessable",
        "not a counter",
    )
    .await;
    assert_eq!(doc_json(&n, "cfg/app").await.unwrap(), before);
    // Malformed patches are 400, other media types 415, plain keys 409, missing keys 404.
    expect_error(
        patch(&n, "cfg/app", PATCH, json!([{"op": "jump"}])).await,
        400,
        "invalid_input",
        "JSON Patch",
    )
    .await;
    let r = n
        .client
        .patch(n.kv("cfg/app"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, 415, "unsupported_media_type", "merge-patch").await;
    n.put("plain", "text").await;
    expect_error(
        patch(&n, "plain", MERGE, json!({"a": 1})).await,
        409,
        "conflict",
        "plain value",
    )
    .await;
    let r = n.client.get(n.kv("plain?history=true")).send().await.unwrap();
    expect_error(r, 409, "conflict", "history").await;
    expect_error(
        patch(&n, "missing", MERGE, json!({"a": 1})).await,
        404,
        "not_found",
        "no document",
    )
    .await;
    expect_error(
        put_doc(&n, "arr", json!([1])).await,
        400,
        "invalid_input",
        "JSON object",
    )
    .await;

    // A document's saved size counts against max_value_bytes.
    let big = json!({"blob": "x".repeat(n.config.max_value_bytes)});
    let r = n
        .client
        .put(n.kv("big?doc=true"))
        .body(big.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Secret documents: sealed unless opened, and edits keep them sealed.
    assert_eq!(
        put_doc(&n, "s/doc?secret=true", json!({"password": "hunter2"}))
            .await
            .status(),
        200
    );
    assert_eq!(patch(&n, "s/doc", MERGE, json!({"user": "root"})).await.status(), 200);
    let sealed = n.client.get(n.kv("s/doc")).send().await.unwrap();
    assert_eq!(sealed.headers()["x-cave-secret"], "sealed");
    assert!(sealed.text().await.unwrap().starts_with("cave-sealed:v1:"));
    let opened: Value = n.get_json("/api/v1/kv/s/doc?secret=true").await;
    assert_eq!(opened, json!({"password": "hunter2", "user": "root"}));

    // Batches patch too, atomically with the other ops.
    let batch = json!([
        {"key": "cfg/app", "verb": "patch", "patch": [{"op": "increment", "path": "/hits", "value": 3}]},
        {"key": "cfg/app", "verb": "patch", "patch": {"owner": "ops"}},
        {"key": "cfg/app", "verb": "get"},
    ]);
    let r = n.client.post(n.url("/api/v1/query")).json(&batch).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        doc_json(&n, "cfg/app").await.unwrap(),
        json!({"limits": {"cpu": 4}, "hits": 10, "owner": "ops"})
    );
    let bad = json!([
        {"key": "cfg/app", "verb": "patch", "patch": {"owner": "nobody"}},
        {"key": "plain", "verb": "patch", "patch": {"a": 1}},
    ]);
    let r = n.client.post(n.url("/api/v1/query")).json(&bad).send().await.unwrap();
    expect_error(r, 409, "conflict", "op 1").await;
    assert_eq!(doc_json(&n, "cfg/app").await.unwrap()["owner"], "ops");

    // Export carries documents losslessly; importing an old export merges, it never clobbers.
    let old_export = n.export_text().await;
    assert_eq!(patch(&n, "cfg/app", MERGE, json!({"later": true})).await.status(), 200);
    let r = n
        .client
        .post(n.url("/api/v1/import"))
        .body(old_export.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(doc_json(&n, "cfg/app").await.unwrap()["later"], true);
    let (_dir2, fresh) = common::start_prod().await;
    let r = fresh
        .client
        .post(fresh.url("/api/v1/import"))
        .body(old_export)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(doc_json(&fresh, "cfg/app").await.unwrap()["hits"], 10);
    let line = fresh
        .export()
        .await
        .into_iter()
        .find(|e| e["key"] == "cfg/app")
        .unwrap();
    assert!(line["doc"]["created"].is_string() && line["doc"]["heads"].as_str().unwrap().len() == 16);

    // A delete removes the document; a new PUT ?doc=true starts a new one.
    n.delete("cfg/app").await;
    expect_error(
        patch(&n, "cfg/app", MERGE, json!({"a": 1})).await,
        404,
        "not_found",
        "no document",
    )
    .await;
    assert_eq!(put_doc(&n, "cfg/app", json!({"fresh": 1})).await.status(), 200);
    assert_eq!(doc_json(&n, "cfg/app").await.unwrap(), json!({"fresh": 1}));
    fresh.stop().await;
    n.stop().await;
}

async fn eventually(what: &str, nodes: &[&TestNode], want: &Value) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mut all = true;
        for n in nodes {
            all &= doc_json(n, "shared").await.as_ref() == Some(want);
        }
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two nodes that cannot see each other edit different fields of one document and increment one counter,
/// and each creates another, missing counter by its first increment; once they meet, both fields and both
/// summed counters are on both.
#[tokio::test]
async fn partitioned_edits_of_one_document_all_survive() {
    let key = MasterKey::generate();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ((grpc_a, addr_a), (grpc_b, addr_b)) = (common::grpc_listener(), common::grpc_listener());
    let a = common::prod_member(&dir_a, &key, grpc_a, vec![addr_b.clone()]).await;
    let b = common::prod_member(&dir_b, &key, grpc_b, vec![addr_a.clone()]).await;
    assert_eq!(put_doc(&a, "shared", json!({"title": "t"})).await.status(), 200);
    let counter = json!([{"op": "add", "path": "/hits", "value": 0, "counter": true}]);
    assert_eq!(patch(&a, "shared", PATCH, counter).await.status(), 200);
    eventually("b has the document", &[&a, &b], &json!({"title": "t", "hits": 0})).await;

    // Apart: b is down while a edits, then a is down while b edits.
    let b_config = b.config.clone();
    b.stop().await;
    assert_eq!(patch(&a, "shared", MERGE, json!({"from_a": 1})).await.status(), 200);
    let inc = |by: i64| json!([{"op": "increment", "path": "/hits", "value": by}]);
    assert_eq!(patch(&a, "shared", PATCH, inc(2)).await.status(), 200);
    let visit = |by: i64| json!([{"op": "increment", "path": "/visits", "value": by}]);
    assert_eq!(patch(&a, "shared", PATCH, visit(10)).await.status(), 200);
    let a_config = a.config.clone();
    a.stop().await;
    let b = TestNode::start_config(b_config).await;
    assert_eq!(doc_json(&b, "shared").await.unwrap(), json!({"title": "t", "hits": 0}));
    assert_eq!(patch(&b, "shared", MERGE, json!({"from_b": 2})).await.status(), 200);
    assert_eq!(patch(&b, "shared", PATCH, inc(3)).await.status(), 200);
    assert_eq!(patch(&b, "shared", PATCH, inc(4)).await.status(), 200);
    assert_eq!(patch(&b, "shared", PATCH, visit(20)).await.status(), 200);

    // Together again.
    let a = TestNode::start_config(a_config).await;
    let want = json!({"title": "t", "hits": 9, "visits": 30, "from_a": 1, "from_b": 2});
    eventually("both hold every edit", &[&a, &b], &want).await;
    let (history_a, history_b) = (
        a.get_json("/api/v1/kv/shared?history=true").await,
        b.get_json("/api/v1/kv/shared?history=true").await,
    );
    assert_eq!(history_a["changes"].as_array().unwrap().len(), 9);
    // The same changes; the causal order of concurrent ones may differ between the two.
    let hashes = |h: &Value| {
        let mut all: Vec<String> = h["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["hash"].to_string())
            .collect();
        all.sort();
        all
    };
    assert_eq!(hashes(&history_a), hashes(&history_b));
    a.stop().await;
    b.stop().await;
}
