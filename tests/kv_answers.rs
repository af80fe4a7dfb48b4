//! What the key API answers where a client easily gets it wrong: a folder named without its trailing slash,
//! whether a delete found anything, which op of a batch failed, and the spellings of boolean parameters.

mod common;

use common::{expect_error, start, TestNode};
use serde_json::{json, Value};

async fn send(node: &TestNode, method: reqwest::Method, key_and_query: &str) -> reqwest::Response {
    node.client
        .request(method, node.kv(key_and_query))
        .send()
        .await
        .unwrap()
}

async fn query(node: &TestNode, batch: &Value) -> (u16, Value) {
    let response = node
        .client
        .post(node.url("/api/v1/query"))
        .json(batch)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_named_without_its_slash_is_pointed_at_and_never_tombstoned() {
    let (_dir, node) = start().await;
    node.put("app/a", "1").await;
    node.put("app/db/b", "2").await;

    let response = send(&node, reqwest::Method::GET, "app").await;
    let body = expect_error(response, 404, "not_found", "app is a folder").await;
    assert!(body["error"].as_str().unwrap().contains("/api/v1/kv/app/"), "{body}");
    let response = send(&node, reqwest::Method::GET, "nothing").await;
    let body = expect_error(response, 404, "not_found", "key not found").await;
    assert!(!body["error"].as_str().unwrap().contains("folder"), "{body}");

    // A recursive delete without the slash is refused and writes nothing.
    let response = send(&node, reqwest::Method::DELETE, "app?recurse=true").await;
    expect_error(
        response,
        400,
        "invalid_input",
        "trailing slash (/api/v1/kv/app/?recurse=true)",
    )
    .await;
    let response = send(&node, reqwest::Method::DELETE, "nothing?recurse=true").await;
    expect_error(response, 400, "invalid_input", "nothing is not a folder").await;
    let keys: Vec<String> = node
        .export()
        .await
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["app/a", "app/db/b"], "no tombstone for `app` or `nothing`");

    // `recurse=false` on a key is an ordinary delete; with the slash the folder goes.
    let response = send(&node, reqwest::Method::DELETE, "app/a?recurse=false").await;
    assert_eq!(response.status(), 200);
    let response = send(&node, reqwest::Method::DELETE, "app/?recurse=true").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["message"].as_str(), body["deleted"].as_u64()),
        (Some("ok"), Some(1))
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_says_whether_a_live_value_was_there() {
    let (_dir, node) = start().await;
    let delete = |key: &'static str| {
        let node = &node;
        async move {
            let response = send(node, reqwest::Method::DELETE, key).await;
            assert_eq!(response.status(), 200);
            let version = response.headers()["x-cave-version"].to_str().unwrap().to_string();
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["message"], "ok", "{body}");
            assert_eq!(body["version"], version.as_str(), "{body}");
            body["existed"]
                .as_bool()
                .unwrap_or_else(|| panic!("no existed: {body}"))
        }
    };
    assert!(!delete("never/written").await);
    node.put("k", "v").await;
    assert!(delete("k").await);
    assert!(!delete("k").await, "deleting again finds nothing");

    node.put("q", "v").await;
    let (status, body) = query(
        &node,
        &json!([
            {"key": "q", "verb": "delete"},
            {"key": "q", "verb": "delete"},
            {"key": "r", "verb": "delete"},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let existed: Vec<Option<bool>> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["existed"].as_bool())
        .collect();
    assert_eq!(existed, [Some(true), Some(false), Some(false)], "{body}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_cas_in_a_batch_names_its_op() {
    let (_dir, node) = start().await;
    let version = node.put("b/a", "one").await;
    let (status, body) = query(
        &node,
        &json!([
            {"key": "b/a", "verb": "get"},
            {"key": "b/a", "verb": "set", "value": "two", "cas": version},
            {"key": "b/new", "verb": "set", "value": "x"},
            {"key": "b/a", "verb": "delete", "cas": version},
        ]),
    )
    .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["code"], "precondition_failed");
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("op 3: cas failed"), "{error}");
    assert_eq!(node.get("b/a").await.as_deref(), Some(&b"one"[..]));
    assert_eq!(node.get("b/new").await, None);

    // A single-key write keeps its plain message.
    let response = node.client.put(node.kv("b/a?cas=0")).body("x").send().await.unwrap();
    let body = expect_error(response, 412, "precondition_failed", "cas failed").await;
    assert!(body["error"].as_str().unwrap().starts_with("cas failed"), "{body}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn boolean_parameters_take_the_usual_spellings() {
    let (_dir, node) = start().await;
    let response = node
        .client
        .put(node.kv("s/token?secret=yes"))
        .body("hunter2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for query in ["secret=no", "secret=OFF", "secret=0"] {
        let response = send(&node, reqwest::Method::GET, &format!("s/token?{query}")).await;
        assert_eq!(response.headers()["x-cave-secret"], "sealed", "{query}");
    }
    for query in ["secret=yes", "secret=On", "secret=TRUE", "secret=1", "secret"] {
        let response = send(&node, reqwest::Method::GET, &format!("s/token?{query}")).await;
        assert_eq!(response.headers()["x-cave-secret"], "opened", "{query}");
        assert_eq!(response.text().await.unwrap(), "hunter2", "{query}");
    }
    let listing: Value = send(&node, reqwest::Method::GET, "s/?recurse=yes")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listing[0]["key"], "s/token", "{listing}");
    for query in ["s/token?secret=maybe", "s/?recurse=2", "s/?tree=y"] {
        let name = query.split_once('?').unwrap().1.split('=').next().unwrap();
        let response = send(&node, reqwest::Method::GET, query).await;
        expect_error(response, 400, "invalid_input", &format!("parameter {name} must be")).await;
    }
    node.stop().await;
}
