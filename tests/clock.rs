//! Clock discipline end to end: versions from the future are refused wherever they come in, and a node
//! whose clock is the outlier of its cluster is fenced (real processes, one of them under libfaketime).

mod common;

use common::{expect_error, start, TestNode};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

/// POST an import; returns the response.
async fn import(node: &TestNode, ndjson: String) -> reqwest::Response {
    node.client
        .post(node.url("/api/v1/import"))
        .header(CONTENT_TYPE, "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap()
}

/// One export line of `key` with `version`.
fn line(key: &str, value: &str, version: &str) -> String {
    json!({"key": key, "value": value, "content_type": "text/plain", "secret": false, "deleted": false,
           "version": version})
    .to_string()
}

/// A version `ahead_ms` ahead of now, written by node 1.
fn version_ahead(ahead_ms: u64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    format!("{}-0000000000000001", (now_ms + ahead_ms) << 16)
}

/// The greatest version there is, or a year ahead: refused with 400 naming the line, nothing applied, and
/// later writes of the key still win (before the fix the import was applied and pinned the key and the clock).
#[tokio::test(flavor = "multi_thread")]
async fn an_import_from_the_future_is_refused_naming_its_line() {
    let (_dir, node) = start().await;
    let before = node.put("k", "before").await;
    let year_ms = 365 * 24 * 3_600_000;
    for poison in [
        "18446744073709551615-0000000000000001".to_string(),
        version_ahead(year_ms),
    ] {
        let ndjson = format!(
            "{}\n{}\n",
            line("fine", "ok", "1-0000000000000001"),
            line("k", "poison", &poison)
        );
        let body = expect_error(import(&node, ndjson).await, 400, "invalid_input", "import line 2").await;
        assert!(body["error"].as_str().unwrap().contains("ahead"), "{body}");
        assert_eq!(node.get("k").await.as_deref(), Some(&b"before"[..]));
        assert_eq!(node.get("fine").await, None, "nothing of a refused import is applied");
    }
    // The clock was not dragged along: a new write gets a version near now, and wins.
    let after = node.put("k", "after").await;
    let hlc = |v: &str| v.split_once('-').unwrap().0.parse::<u64>().unwrap();
    assert!(hlc(&after) > hlc(&before), "{after} after {before}");
    assert!(
        hlc(&after) < hlc(&version_ahead(60_000)),
        "the clock jumped ahead: {after}"
    );
    assert_eq!(node.get("k").await.as_deref(), Some(&b"after"[..]));
    // A version within max_clock_drift is still taken.
    let near = version_ahead(200);
    let response = import(&node, format!("{}\n", line("near", "v", &near))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["applied"], 1);
    node.stop().await;
}
