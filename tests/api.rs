//! The REST API end to end: a real node served in-process, exercised over HTTP with reqwest (and raw
//! HTTP/1.1 where a URL library would rewrite the request target).

mod common;

use std::time::Duration;

use common::{expect_error, raw_request, start, start_with, TestNode};
use futures::StreamExt;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A plaintext that must never be found anywhere but in an opened read.
const PLAINTEXT: &str = "s3cr3t-plaintext-ZQX";
const ENVELOPE_PREFIX: &str = "cave-sealed:v1:";

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// The HLC part of a version `HLC-NODE`.
fn hlc(version: &str) -> u64 {
    version
        .split_once('-')
        .expect("HLC-NODE")
        .0
        .parse()
        .expect("numeric HLC")
}

/// POST a query batch; returns (status, body JSON).
async fn query(node: &TestNode, batch: &Value) -> (StatusCode, Value) {
    let response = node
        .client
        .post(node.url("/api/v1/query"))
        .json(batch)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

/// POST an import; returns the response.
async fn import(node: &TestNode, ndjson: impl Into<reqwest::Body>) -> reqwest::Response {
    node.client
        .post(node.url("/api/v1/import"))
        .header(CONTENT_TYPE, "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap()
}

/// After a rejected request: nothing was stored, and the node still serves a valid write.
async fn nothing_stored_and_still_works(node: &TestNode) {
    assert_eq!(
        node.export().await,
        Vec::<Value>::new(),
        "a rejected request stored something"
    );
    let info = node.get_json("/api/v1/system/info").await;
    assert_eq!((info["keys"].as_u64(), info["tombstones"].as_u64()), (Some(0), Some(0)));
    node.put("after/bad/input", "fine").await;
    assert_eq!(node.get("after/bad/input").await.as_deref(), Some(&b"fine"[..]));
    let health = node.client.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

// ---------------------------------------------------------------------------------------------------------
// Single keys

#[tokio::test(flavor = "multi_thread")]
async fn put_and_post_store_raw_bytes_that_get_returns_exactly() {
    let (_dir, node) = start().await;
    let binary: Vec<u8> = vec![0x00, 0xff, 0xfe, 0x80, 0x01, b'\n', 0xc3, 0x28];
    assert!(
        std::str::from_utf8(&binary).is_err(),
        "the test value must not be UTF-8"
    );
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        ("bin/blob", binary.clone(), Some("image/png"), "PUT"),
        (
            "text/hello",
            b"hello, world".to_vec(),
            Some("text/plain; charset=utf-8"),
            "POST",
        ),
        ("empty/value", Vec::new(), None, "PUT"),
        ("empty/posted", Vec::new(), Some("application/json"), "POST"),
        ("ünïcode/κλειδί", "välue ✓".as_bytes().to_vec(), None, "PUT"),
        ("with space/k", b"spaced".to_vec(), None, "POST"),
    ];
    for (key, value, content_type, method) in &cases {
        let request = if *method == "PUT" {
            node.client.put(node.kv(key))
        } else {
            node.client.post(node.kv(key))
        };
        let request = match content_type {
            Some(ct) => request.header(CONTENT_TYPE, *ct),
            None => request,
        };
        let response = request.body(value.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {key}");
        let version_header = header(&response, "x-cave-version").expect("x-cave-version on a write");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["message"], "ok");
        assert_eq!(body["version"], version_header.as_str());

        let response = node.client.get(node.kv(key)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {key}");
        let expected_ct = content_type.unwrap_or("application/octet-stream");
        assert_eq!(header(&response, "content-type").as_deref(), Some(expected_ct), "{key}");
        assert_eq!(
            header(&response, "x-cave-version").as_deref(),
            Some(version_header.as_str())
        );
        assert_eq!(
            header(&response, "etag"),
            Some(format!("\"{version_header}\"")),
            "ETag = quoted version"
        );
        assert_eq!(header(&response, "x-cave-secret"), None);
        assert_eq!(response.bytes().await.unwrap().as_ref(), value.as_slice(), "{key}");
    }
    // Overwriting moves the version forward and replaces value and content type.
    let first = node.put("bin/blob", "second").await;
    let response = node.client.get(node.kv("bin/blob")).send().await.unwrap();
    assert_eq!(header(&response, "x-cave-version").as_deref(), Some(first.as_str()));
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(response.text().await.unwrap(), "second");
    let second = node.put("bin/blob", "third").await;
    assert!(hlc(&second) > hlc(&first), "{second} after {first}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etag_if_none_match_and_head() {
    let (_dir, node) = start().await;
    let version = node.put("cache/me", "payload").await;
    let etag = format!("\"{version}\"");

    let response = node
        .client
        .get(node.kv("cache/me"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&response, "etag").as_deref(), Some(etag.as_str()));
    assert_eq!(header(&response, "x-cave-version").as_deref(), Some(version.as_str()));
    assert!(response.bytes().await.unwrap().is_empty());

    // Another tag, or the old tag after a write, gets the full answer.
    let response = node
        .client
        .get(node.kv("cache/me"))
        .header(IF_NONE_MATCH, "\"1-0000000000000001\"")
        .send();
    assert_eq!(response.await.unwrap().status(), 200);
    let newer = node.put("cache/me", "payload 2").await;
    let response = node
        .client
        .get(node.kv("cache/me"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[ETAG].to_str().unwrap(), format!("\"{newer}\""));
    assert_eq!(response.text().await.unwrap(), "payload 2");

    // HEAD: the headers of a GET, no body.
    let response = node.client.head(node.kv("cache/me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-cave-version").as_deref(), Some(newer.as_str()));
    assert_eq!(header(&response, "etag"), Some(format!("\"{newer}\"")));
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(response.bytes().await.unwrap().is_empty());
    let response = node.client.head(node.kv("cache/absent")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absent_and_deleted_keys_are_404_and_delete_writes_a_tombstone() {
    let (_dir, node) = start().await;
    let response = node.client.get(node.kv("never/written")).send().await.unwrap();
    expect_error(response, 404, "not_found", "not found").await;

    let put = node.put("doomed", "value").await;
    let tomb = node.delete("doomed").await;
    assert!(hlc(&tomb) > hlc(&put));
    let response = node.client.get(node.kv("doomed")).send().await.unwrap();
    expect_error(response, 404, "not_found", "not found").await;
    assert_eq!(node.client.head(node.kv("doomed")).send().await.unwrap().status(), 404);
    // Deleting again changes nothing: the same tombstone answers.
    assert_eq!(node.delete("doomed").await, tomb);

    let export = node.export().await;
    assert_eq!(export.len(), 1, "{export:?}");
    assert_eq!(export[0]["key"], "doomed");
    assert_eq!(export[0]["deleted"], true);
    assert_eq!(export[0]["value"], "");
    assert_eq!(export[0]["version"], tomb.as_str());

    // A deleted key can be written again, with a newer version.
    let again = node.put("doomed", "back").await;
    assert!(hlc(&again) > hlc(&tomb));
    assert_eq!(node.get("doomed").await.as_deref(), Some(&b"back"[..]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cas_makes_writes_conditional() {
    let (_dir, node) = start().await;
    let put_cas = |key: &str, cas: &str, value: &'static str| {
        node.client.put(node.kv(&format!("{key}?cas={cas}"))).body(value).send()
    };
    // cas=0: create only.
    let response = put_cas("c/k", "0", "first").await.unwrap();
    assert_eq!(response.status(), 200);
    let v1 = response.json::<Value>().await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    expect_error(
        put_cas("c/k", "0", "second").await.unwrap(),
        412,
        "precondition_failed",
        "cas",
    )
    .await;
    assert_eq!(node.get("c/k").await.as_deref(), Some(&b"first"[..]));

    // The exact version succeeds; the now stale one fails.
    let response = put_cas("c/k", &v1, "second").await.unwrap();
    assert_eq!(response.status(), 200);
    let v2 = response.json::<Value>().await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    expect_error(
        put_cas("c/k", &v1, "third").await.unwrap(),
        412,
        "precondition_failed",
        &v1,
    )
    .await;
    assert_eq!(node.get("c/k").await.as_deref(), Some(&b"second"[..]));

    // Garbage is a 400, and nothing is written.
    for garbage in ["garbage", "12", "-1", "1-xyz", ""] {
        let response = put_cas("c/k", garbage, "bad").await.unwrap();
        expect_error(response, 400, "invalid_input", "cas").await;
    }
    assert_eq!(node.get("c/k").await.as_deref(), Some(&b"second"[..]));

    // DELETE with cas: stale fails, exact succeeds; after it the key counts as absent for cas=0.
    let response = node
        .client
        .delete(node.kv(&format!("c/k?cas={v1}")))
        .send()
        .await
        .unwrap();
    expect_error(response, 412, "precondition_failed", "cas").await;
    assert_eq!(node.get("c/k").await.as_deref(), Some(&b"second"[..]));
    let response = node.client.delete(node.kv("c/k?cas=garbage")).send().await.unwrap();
    expect_error(response, 400, "invalid_input", "cas").await;
    let response = node
        .client
        .delete(node.kv(&format!("c/k?cas={v2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(node.get("c/k").await, None);
    let response = put_cas("c/k", "0", "reborn").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(node.get("c/k").await.as_deref(), Some(&b"reborn"[..]));
    node.stop().await;
}

/// Concurrent conditional writes race on one key: exactly one create wins, and of writers holding the same
/// version exactly one succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cas_writes_have_exactly_one_winner() {
    let (_dir, node) = start().await;
    let race = |cas: String| {
        let requests = (0..16).map(|i| {
            let request = node
                .client
                .put(node.kv(&format!("race?cas={cas}")))
                .body(format!("writer {i}"));
            async move { request.send().await.unwrap().status().as_u16() }
        });
        futures::future::join_all(requests)
    };
    let statuses = race("0".into()).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 15, "{statuses:?}");
    let response = node.client.get(node.kv("race")).send().await.unwrap();
    let version = header(&response, "x-cave-version").unwrap();
    let statuses = race(version).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 15, "{statuses:?}");
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// Folders

async fn write_tree(node: &TestNode) {
    for key in ["a", "a/x", "a/y/1", "a/y/2", "a/z/deep/k", "ab", "b"] {
        node.put(key, format!("value of {key}")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_direct_children_of_folders() {
    let (_dir, node) = start().await;
    let response = node.client.get(node.kv("")).send().await.unwrap();
    assert_eq!(response.status(), 200, "an empty root lists nothing, it is not missing");
    assert_eq!(response.json::<Value>().await.unwrap(), json!([]));

    write_tree(&node).await;
    assert_eq!(node.get_json("/api/v1/kv/").await, json!(["a", "a/", "ab", "b"]));
    assert_eq!(node.get_json("/api/v1/kv/a/").await, json!(["a/x", "a/y/", "a/z/"]));
    assert_eq!(node.get_json("/api/v1/kv/a/y/").await, json!(["a/y/1", "a/y/2"]));
    assert_eq!(node.get_json("/api/v1/kv/a/z/").await, json!(["a/z/deep/"]));
    assert_eq!(node.get_json("/api/v1/kv/a/z/deep/").await, json!(["a/z/deep/k"]));

    // An empty (or never existing) non-root folder is a 404; so is a key's name used as a folder.
    for folder in ["nothing/", "a/x/", "ab/", "a/y/1/"] {
        let response = node.client.get(node.kv(folder)).send().await.unwrap();
        expect_error(response, 404, "not_found", "no keys").await;
    }

    // Deleted keys drop out of listings, and so do folders left with nothing live.
    node.delete("a/z/deep/k").await;
    assert_eq!(node.get_json("/api/v1/kv/a/").await, json!(["a/x", "a/y/"]));
    let response = node.client.get(node.kv("a/z/")).send().await.unwrap();
    expect_error(response, 404, "not_found", "no keys").await;
    node.delete("b").await;
    assert_eq!(node.get_json("/api/v1/kv/").await, json!(["a", "a/", "ab"]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recursive_listing_and_tree() {
    let (_dir, node) = start().await;
    write_tree(&node).await;
    let secret_version = node.put_secret("a/y/3", PLAINTEXT).await;

    let metas = node.get_json("/api/v1/kv/a/?recurse=true").await;
    let metas = metas.as_array().expect("array");
    let keys: Vec<&str> = metas.iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["a/x", "a/y/1", "a/y/2", "a/y/3", "a/z/deep/k"]);
    for meta in metas {
        let key = meta["key"].as_str().unwrap();
        assert!(meta["version"].as_str().unwrap().contains('-'), "{meta}");
        assert!(meta.get("value").is_none(), "metadata carries no value: {meta}");
        if key == "a/y/3" {
            assert_eq!(meta["secret"], true);
            assert_eq!(meta["version"], secret_version.as_str());
        } else {
            assert_eq!(meta["secret"], false);
            assert_eq!(meta["size"], format!("value of {key}").len());
            assert_eq!(meta["content_type"], "application/octet-stream");
        }
    }
    let all = node.get_json("/api/v1/kv/?recurse=true").await;
    assert_eq!(all.as_array().unwrap().len(), 8);
    assert!(!all.to_string().contains(PLAINTEXT));
    let response = node.client.get(node.kv("nothing/?recurse=true")).send().await.unwrap();
    expect_error(response, 404, "not_found", "no keys").await;

    let tree = node.get_json("/api/v1/kv/a/?tree=true").await;
    let names = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&tree), ["x", "y/", "z/"]);
    assert_eq!(names(&tree["y/"]), ["1", "2", "3"]);
    assert_eq!(names(&tree["z/"]), ["deep/"]);
    assert_eq!(tree["z/"]["deep/"]["k"]["key"], "a/z/deep/k");
    assert_eq!(tree["x"]["key"], "a/x");
    assert_eq!(tree["y/"]["3"]["secret"], true);

    // At the root a key `a` and a folder `a/` live side by side.
    let root = node.get_json("/api/v1/kv/?tree=true").await;
    assert_eq!(names(&root), ["a", "a/", "ab", "b"]);
    assert_eq!(root["a"]["key"], "a");
    assert_eq!(root["a/"]["y/"]["1"]["key"], "a/y/1");
    let response = node.client.get(node.kv("nothing/?tree=true")).send().await.unwrap();
    expect_error(response, 404, "not_found", "no keys").await;
    let response = node.client.get(node.kv("a/?tree=maybe")).send().await.unwrap();
    expect_error(response, 400, "invalid_input", "tree").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_folder_needs_recurse_and_spares_its_siblings() {
    let (_dir, node) = start().await;
    write_tree(&node).await;

    let response = node.client.delete(node.kv("a/")).send().await.unwrap();
    expect_error(response, 400, "invalid_input", "recurse=true").await;
    let response = node.client.delete(node.kv("a/?recurse=false")).send().await.unwrap();
    expect_error(response, 400, "invalid_input", "recurse=true").await;
    assert_eq!(node.get_json("/api/v1/kv/a/").await, json!(["a/x", "a/y/", "a/z/"]));
    let response = node.client.delete(node.kv("?recurse=true")).send().await.unwrap();
    expect_error(response, 400, "invalid_input", "whole key space").await;

    // A nested folder first, then its parent.
    let response = node.client.delete(node.kv("a/y/?recurse=true")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "ok", "deleted": 2})
    );
    assert_eq!(node.get_json("/api/v1/kv/a/").await, json!(["a/x", "a/z/"]));
    let response = node.client.delete(node.kv("a/?recurse=true")).send().await.unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "ok", "deleted": 2})
    );

    for gone in ["a/x", "a/y/1", "a/y/2", "a/z/deep/k"] {
        assert_eq!(node.get(gone).await, None, "{gone}");
    }
    for kept in ["a", "ab", "b"] {
        assert_eq!(
            node.get(kept).await,
            Some(format!("value of {kept}").into_bytes()),
            "{kept}"
        );
    }
    let response = node.client.get(node.kv("a/")).send().await.unwrap();
    expect_error(response, 404, "not_found", "no keys").await;
    assert_eq!(node.get_json("/api/v1/kv/").await, json!(["a", "ab", "b"]));
    // Again: nothing left to delete.
    let response = node.client.delete(node.kv("a/?recurse=true")).send().await.unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "ok", "deleted": 0})
    );

    let export = node.export().await;
    let tombstones: Vec<&str> = export
        .iter()
        .filter(|e| e["deleted"] == true)
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(tombstones, ["a/x", "a/y/1", "a/y/2", "a/z/deep/k"]);
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// Query batches

#[tokio::test(flavor = "multi_thread")]
async fn query_applies_a_mixed_batch_in_order() {
    let (_dir, node) = start().await;
    node.put("q/b", "old-b").await;
    node.put("q/c", "old-c").await;
    let (status, results) = query(
        &node,
        &json!([
            {"key": "q/a", "verb": "set", "value": "one"},
            {"key": "q/a", "verb": "get"},
            {"key": "q/b", "verb": "delete"},
            {"key": "q/b", "verb": "get"},
            {"key": "q/none", "verb": "get"},
            {"key": "q/bin", "verb": "put", "value": "AP8B", "encoding": "base64", "content_type": "image/png"},
            {"key": "q/bin", "verb": "get"},
            {"key": "q/c", "verb": "get"},
            {"key": "q/s", "verb": "set", "value": PLAINTEXT, "secret": true},
            {"key": "q/s", "verb": "get"},
            {"key": "q/s", "verb": "get", "secret": true},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{results}");
    let results = results.as_array().unwrap();
    let labels: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), r["verb"].as_str().unwrap()))
        .collect();
    assert_eq!(
        labels,
        [
            ("q/a", "set"),
            ("q/a", "get"),
            ("q/b", "delete"),
            ("q/b", "get"),
            ("q/none", "get"),
            ("q/bin", "set"),
            ("q/bin", "get"),
            ("q/c", "get"),
            ("q/s", "set"),
            ("q/s", "get"),
            ("q/s", "get"),
        ]
    );
    let set_version = results[0]["version"].as_str().unwrap();
    assert_eq!(results[1]["found"], true, "a get sees an earlier set of the batch");
    assert_eq!(results[1]["value"], "one");
    assert_eq!(results[1]["version"], set_version);
    assert!(results[2]["version"].is_string());
    assert_eq!(results[3]["found"], false, "a get sees an earlier delete of the batch");
    assert_eq!(results[4]["found"], false);
    assert_eq!(results[6]["value"], "AP8B");
    assert_eq!(results[6]["encoding"], "base64");
    assert_eq!(results[6]["content_type"], "image/png");
    assert_eq!(results[7]["value"], "old-c");
    assert_eq!(results[7]["encoding"], "utf8");
    assert!(results[8].get("value").is_none(), "a set does not echo its value");
    let sealed = results[9]["value"].as_str().unwrap();
    assert!(
        sealed.starts_with(ENVELOPE_PREFIX) && !sealed.contains(PLAINTEXT),
        "{sealed}"
    );
    assert_eq!(results[9]["secret"], true);
    assert_eq!(results[10]["value"], PLAINTEXT);

    // The writes are visible through the key API.
    assert_eq!(node.get("q/a").await.as_deref(), Some(&b"one"[..]));
    assert_eq!(node.get("q/b").await, None);
    let response = node.client.get(node.kv("q/bin")).send().await.unwrap();
    assert_eq!(header(&response, "content-type").as_deref(), Some("image/png"));
    assert_eq!(response.bytes().await.unwrap().as_ref(), [0x00, 0xff, 0x01]);
    assert_eq!(node.get("q/s?secret=true").await.as_deref(), Some(PLAINTEXT.as_bytes()));

    let (status, results) = query(&node, &json!([])).await;
    assert_eq!((status.as_u16(), results), (200, json!([])));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_with_a_failing_cas_applies_nothing() {
    let (_dir, node) = start().await;
    let va = node.put("q/a", "one").await;
    node.put("q/c", "old-c").await;
    node.put("q/d", "old-d").await;
    let before = node.export_text().await;
    let (status, body) = query(
        &node,
        &json!([
            {"key": "q/a", "verb": "set", "value": "two", "cas": va},
            {"key": "q/c", "verb": "delete"},
            {"key": "q/new", "verb": "set", "value": "x"},
            {"key": "q/d", "verb": "set", "value": "create-only", "cas": "0"},
            {"key": "q/later", "verb": "set", "value": "y"},
        ]),
    )
    .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["code"], "precondition_failed");
    assert!(body["error"].as_str().unwrap().contains("cas"), "{body}");
    assert_eq!(node.get("q/a").await.as_deref(), Some(&b"one"[..]));
    assert_eq!(node.get("q/c").await.as_deref(), Some(&b"old-c"[..]));
    assert_eq!(node.get("q/d").await.as_deref(), Some(&b"old-d"[..]));
    assert_eq!(node.get("q/new").await, None);
    assert_eq!(node.get("q/later").await, None);
    assert_eq!(node.export_text().await, before, "a failed batch left a trace");

    // A cas inside a batch is checked against the batch's own earlier writes.
    let (status, body) = query(
        &node,
        &json!([
            {"key": "q/a", "verb": "set", "value": "two"},
            {"key": "q/a", "verb": "set", "value": "three", "cas": va},
        ]),
    )
    .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(node.get("q/a").await.as_deref(), Some(&b"one"[..]));
    assert_eq!(node.export_text().await, before);

    // ... and sees the batch's own delete: after it, the key counts as absent for cas=0.
    let (status, body) = query(
        &node,
        &json!([
            {"key": "q/c", "verb": "delete"},
            {"key": "q/c", "verb": "set", "value": "recreated", "cas": "0"},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.get("q/c").await.as_deref(), Some(&b"recreated"[..]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_query_batches_are_rejected_whole() {
    let (_dir, node) = start().await;
    let send_raw = |body: &'static str| node.client.post(node.url("/api/v1/query")).body(body).send();
    // (body, status, code, what the error names)
    let cases: &[(&str, u16, &str, &str)] = &[
        (
            r#"[{"key":"q/m","verb":"set","value":"1"},"#,
            400,
            "invalid_input",
            "malformed query JSON",
        ),
        (
            r#"[{"key":"q/m","verb":"set","value":"1"},{"key":"q/x","verb":"frobnicate"}]"#,
            400,
            "invalid_input",
            "frobnicate",
        ),
        (
            r#"[{"key":"q/m","verb":"set","value":"1"},{"key":"a//b","verb":"get"}]"#,
            400,
            "invalid_input",
            "op 1",
        ),
        (
            r#"[{"key":"q/m","verb":"set","value":"1"},{"key":"_system/x","verb":"set","value":"1"}]"#,
            403,
            "forbidden",
            "op 1",
        ),
        (
            r#"[{"key":"q/m","verb":"set"}]"#,
            400,
            "invalid_input",
            "op 0: set needs a value",
        ),
        (
            r#"[{"key":"q/m","verb":"set","value":"!!","encoding":"base64"}]"#,
            400,
            "invalid_input",
            "base64",
        ),
        (
            r#"[{"key":"q/m","verb":"set","value":"1","bogus":true}]"#,
            400,
            "invalid_input",
            "bogus",
        ),
        (
            r#"{"key":"q/m","verb":"set","value":"1"}"#,
            400,
            "invalid_input",
            "malformed query JSON",
        ),
        ("", 400, "invalid_input", "malformed query JSON"),
    ];
    for (body, status, code, needle) in cases {
        expect_error(send_raw(body).await.unwrap(), *status, code, needle).await;
    }
    nothing_stored_and_still_works(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_value_over_the_limit_is_413() {
    let (_dir, node) = start_with(|c| c.max_value_bytes = 16).await;
    let batch = json!([
        {"key": "q/ok", "verb": "set", "value": "x"},
        {"key": "q/big", "verb": "set", "value": "0123456789abcdefg"},
    ]);
    let response = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "too_large", "op 1").await;
    nothing_stored_and_still_works(&node).await;
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// Watch

/// One Server-Sent Event.
#[derive(Debug)]
struct Sse {
    event: String,
    data: String,
}

/// Reads events from an SSE response body.
struct SseReader<S> {
    stream: S,
    buffer: String,
    raw: String,
}

impl<S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin> SseReader<S> {
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.strip_prefix(' ').unwrap_or(v).to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if data.is_empty() && block.lines().all(|l| l.starts_with(':') || l.is_empty()) {
                    continue; // keep-alive comment
                }
                return Sse {
                    event,
                    data: data.join("\n"),
                };
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("an SSE event in time")
                .expect("the stream stays open")
                .expect("stream chunk");
            let text = std::str::from_utf8(&chunk).expect("SSE is UTF-8");
            self.raw.push_str(text);
            self.buffer.push_str(text);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_the_changes_under_a_prefix_in_order() {
    let (_dir, node) = start().await;
    node.put("w/before", "not replayed").await;
    let response = node.client.get(node.url("/api/v1/watch/w")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let mut events = SseReader {
        stream: response.bytes_stream(),
        buffer: String::new(),
        raw: String::new(),
    };
    let ready = events.next().await;
    assert_eq!(ready.event, "ready", "{ready:?}");

    let mut expected: Vec<(&str, &str, String)> = Vec::new();
    let v = node.put("w/a", "1").await;
    expected.push(("put", "w/a", v));
    node.put("other/x", "outside").await;
    node.put("wx", "sibling, outside").await;
    let v = node.put("w", "the prefix itself").await;
    expected.push(("put", "w", v));
    let v = node.put_secret("w/s", PLAINTEXT).await;
    expected.push(("put", "w/s", v));
    let v = node.delete("w/a").await;
    expected.push(("delete", "w/a", v));
    node.delete("other/x").await;
    let (status, results) = query(
        &node,
        &json!([
            {"key": "w/q/1", "verb": "set", "value": "batched"},
            {"key": "elsewhere", "verb": "set", "value": "batched"},
            {"key": "w/q/2", "verb": "delete"},
        ]),
    )
    .await;
    assert_eq!(status, 200);
    expected.push(("put", "w/q/1", results[0]["version"].as_str().unwrap().to_string()));
    expected.push(("delete", "w/q/2", results[2]["version"].as_str().unwrap().to_string()));
    let v = node.put("w/deep/end", "end").await;
    expected.push(("put", "w/deep/end", v));

    let mut got = Vec::new();
    while got.len() < expected.len() {
        let event = events.next().await;
        let data: Value = serde_json::from_str(&event.data).unwrap_or_else(|e| panic!("{e}: {event:?}"));
        got.push((event.event, data));
    }
    for ((event, data), (kind, key, version)) in got.iter().zip(&expected) {
        assert_eq!(
            (event.as_str(), data["key"].as_str().unwrap()),
            (*kind, *key),
            "{got:?}"
        );
        assert_eq!(data["version"], version.as_str(), "{data}");
        assert_eq!(data["deleted"], *kind == "delete", "{data}");
    }
    assert_eq!(got[0].1["value"], "1");
    let sealed = &got[2].1;
    assert_eq!(sealed["secret"], true);
    assert!(
        sealed["value"].as_str().unwrap().starts_with(ENVELOPE_PREFIX),
        "{sealed}"
    );
    assert!(
        !events.raw.contains(PLAINTEXT),
        "a watch event carried a secret's plaintext"
    );
    assert!(
        !events.raw.contains("outside") && !events.raw.contains("not replayed"),
        "{}",
        events.raw
    );
    drop(events);
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// Export and import

#[tokio::test(flavor = "multi_thread")]
async fn export_import_round_trip_into_a_fresh_node() {
    let key = cave::secrets::MasterKey::generate();
    let with_key = |c: &mut cave::config::Config| c.cluster_key = Some(key.clone());
    let (_dir_a, a) = start_with(with_key).await;
    let binary = vec![0u8, 0x9f, 0x92, 0x96, 0xff];
    a.client
        .put(a.kv("t/plain"))
        .header(CONTENT_TYPE, "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    a.put("t/bin", binary.clone()).await;
    a.put("t/empty", "").await;
    let secret_version = a.put_secret("t/secret", PLAINTEXT).await;
    a.put("t/gone", "soon deleted").await;
    let tomb = a.delete("t/gone").await;
    a.put("ünï/κλειδί", "unicode").await;
    let export = a.export_text().await;
    assert_eq!(export.lines().count(), 6, "{export}");
    assert!(!export.contains(PLAINTEXT), "an export carried a secret's plaintext");
    let lines: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let line = |k: &str| {
        lines
            .iter()
            .find(|l| l["key"] == k)
            .unwrap_or_else(|| panic!("{k} not exported"))
    };
    assert_eq!(line("t/gone")["deleted"], true);
    assert_eq!(line("t/gone")["version"], tomb.as_str());
    assert_eq!(line("t/secret")["secret"], true);
    assert_eq!(line("t/secret")["version"], secret_version.as_str());
    assert!(line("t/secret")["value"].as_str().unwrap().starts_with(ENVELOPE_PREFIX));
    assert_eq!(line("t/bin")["encoding"], "base64");
    assert_eq!(line("t/plain")["content_type"], "text/plain");

    // A prefix narrows the export.
    let response = a.client.get(a.url("/api/v1/export?prefix=t/")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap().lines().count(), 5);

    let (_dir_b, b) = start_with(with_key).await;
    let response = import(&b, export.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "ok", "received": 6, "applied": 6})
    );
    assert_eq!(
        b.export_text().await,
        export,
        "the second node holds exactly the same entries"
    );

    let response = b.client.get(b.kv("t/bin")).send().await.unwrap();
    assert_eq!(
        header(&response, "x-cave-version"),
        line("t/bin")["version"].as_str().map(String::from),
        "versions travel with the entries"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), binary.as_slice());
    let response = b.client.get(b.kv("t/plain")).send().await.unwrap();
    assert_eq!(header(&response, "content-type").as_deref(), Some("text/plain"));
    assert_eq!(b.get("t/empty").await, Some(Vec::new()));
    assert_eq!(b.get("t/gone").await, None);
    assert_eq!(
        b.get("t/secret?secret=true").await.as_deref(),
        Some(PLAINTEXT.as_bytes())
    );
    assert_eq!(b.get("ünï/κλειδί").await.as_deref(), Some(&b"unicode"[..]));
    let info = b.get_json("/api/v1/system/info").await;
    assert_eq!((info["keys"].as_u64(), info["tombstones"].as_u64()), (Some(5), Some(1)));

    // Importing the same export again changes nothing.
    let response = import(&b, export.clone()).await;
    assert_eq!(response.json::<Value>().await.unwrap()["applied"], 0);
    assert_eq!(b.export_text().await, export);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn importing_an_old_export_never_clobbers_newer_data() {
    let (_dir, node) = start().await;
    node.put("k1", "v1").await;
    node.put("k2", "v1").await;
    let old = node.export().await;
    node.put("k1", "v2").await;
    node.delete("k2").await;
    let newer = node.export_text().await;

    // The old lines plus one for a key this node never had (reusing an old version).
    let mut extra = old[0].clone();
    extra["key"] = json!("k3");
    extra["value"] = json!("from import");
    let mut ndjson: String = old.iter().map(|l| format!("{l}\n")).collect();
    ndjson.push_str(&format!("\n{extra}\n")); // blank lines are skipped
    let response = import(&node, ndjson).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "ok", "received": 3, "applied": 1})
    );
    assert_eq!(node.get("k1").await.as_deref(), Some(&b"v2"[..]));
    assert_eq!(
        node.get("k2").await,
        None,
        "an old value must not resurrect a newer delete"
    );
    assert_eq!(node.get("k3").await.as_deref(), Some(&b"from import"[..]));
    let after = node.export_text().await;
    assert_eq!(
        after.lines().filter(|l| !l.contains("\"k3\"")).collect::<Vec<_>>(),
        newer.lines().collect::<Vec<_>>()
    );
    node.stop().await;
}

/// An import past a mebibyte is read into one buffer of its declared size (`read_body`'s large path): every
/// line of it arrives, the first and the last among them.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_import_arrives_whole() {
    let (_dir, node) = start().await;
    let value = "v".repeat(100);
    let lines = 20_000;
    let body: String = (0..lines)
        .map(|i| format!("{{\"key\":\"big/k{i:05}\",\"value\":\"{value}\",\"version\":\"1000-00000000000000a1\"}}\n"))
        .collect();
    assert!(body.len() > 2 * 1024 * 1024, "{} bytes", body.len());
    let response = import(&node, body).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["applied"], lines);
    for key in ["big/k00000", "big/k19999"] {
        assert_eq!(node.get(key).await.as_deref(), Some(value.as_bytes()), "{key}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_import_names_the_line_and_applies_nothing() {
    let (_dir, node) = start().await;
    let good = r#"{"key":"imp/ok","value":"fine","version":"1000-00000000000000a1"}"#;
    // (second line, what the error must name)
    let cases: &[(&str, &str)] = &[
        (r#"{"key":"imp/broken","value":"#, "line 2"),
        ("not json at all", "line 2"),
        (
            r#"{"key":"a//b","value":"x","version":"1001-00000000000000a1"}"#,
            "line 2: key has an empty segment",
        ),
        (
            r#"{"key":"../x","value":"x","version":"1001-00000000000000a1"}"#,
            "line 2",
        ),
        (
            &format!(r#"{{"key":"imp/s","value":"{PLAINTEXT}","secret":true,"version":"1001-00000000000000a1"}}"#),
            "line 2: a secret's value must be a sealed envelope",
        ),
        (r#"{"key":"imp/v","value":"x","version":"0"}"#, "line 2"),
        (r#"{"key":"imp/v","value":"x","version":"garbage"}"#, "line 2"),
        (r#"{"key":"imp/v","value":"x"}"#, "line 2"),
        (
            r#"{"key":"imp/v","value":"x","version":"1001-00000000000000a1","extra":1}"#,
            "line 2",
        ),
        (
            r#"{"key":"imp/v","value":"!!","encoding":"base64","version":"1001-00000000000000a1"}"#,
            "line 2",
        ),
    ];
    for (bad, needle) in cases {
        let body = format!("{good}\n{bad}\n{good}\n");
        let response = import(&node, body).await;
        let error = expect_error(response, 400, "invalid_input", needle).await;
        assert!(
            !error.to_string().contains(PLAINTEXT),
            "an error echoed a value: {error}"
        );
        assert_eq!(
            node.get("imp/ok").await,
            None,
            "{bad}: the valid first line was applied"
        );
    }
    let response = import(&node, vec![b'{', 0xff, b'}']).await;
    expect_error(response, 400, "invalid_input", "UTF-8").await;
    nothing_stored_and_still_works(&node).await;
    // The good line alone imports.
    let response = import(&node, format!("{good}\n")).await;
    assert_eq!(response.json::<Value>().await.unwrap()["applied"], 1);
    assert_eq!(node.get("imp/ok").await.as_deref(), Some(&b"fine"[..]));
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// Secrets

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_sealed_everywhere_but_an_opened_read() {
    let (_dir, node) = start().await;
    let marker = "plain-marker-QWJ"; // a non-secret value: proves the file scan below can see values
    node.put("app/visible", marker).await;
    let response = node
        .client
        .put(node.kv("app/db/password?secret=true"))
        .header(CONTENT_TYPE, "application/json")
        .body(PLAINTEXT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let version = header(&response, "x-cave-version").unwrap();
    assert!(!response.text().await.unwrap().contains(PLAINTEXT));

    let response = node.client.get(node.kv("app/db/password")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-cave-secret").as_deref(), Some("sealed"));
    assert_eq!(header(&response, "x-cave-version").as_deref(), Some(version.as_str()));
    let sealed = response.text().await.unwrap();
    assert!(sealed.starts_with(ENVELOPE_PREFIX), "{sealed}");
    assert!(!sealed.contains(PLAINTEXT));
    for query in ["", "?secret=false", "?secret=0"] {
        let body = node.get(&format!("app/db/password{query}")).await.unwrap();
        assert_eq!(body, sealed.as_bytes(), "{query}");
    }

    for query in ["?secret=true", "?secret=1", "?secret"] {
        let response = node
            .client
            .get(node.kv(&format!("app/db/password{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-cave-secret").as_deref(), Some("opened"), "{query}");
        assert_eq!(header(&response, "content-type").as_deref(), Some("application/json"));
        assert_eq!(response.text().await.unwrap(), PLAINTEXT, "{query}");
    }
    let response = node
        .client
        .get(node.kv("app/db/password?secret=maybe"))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "invalid_input", "secret").await;
    // Opening a key that is not a secret just returns it.
    assert_eq!(
        node.get("app/visible?secret=true").await.as_deref(),
        Some(marker.as_bytes())
    );

    for path in [
        "/api/v1/export",
        "/api/v1/kv/app/?recurse=true",
        "/api/v1/kv/app/?tree=true",
        "/api/v1/system/info",
    ] {
        let text = node.text(path).await;
        assert!(!text.contains(PLAINTEXT), "{path} shows the plaintext: {text}");
    }

    let data_dir = node.data_dir();
    node.stop().await;
    common::assert_no_plaintext_below(&data_dir, PLAINTEXT, marker);
}

// ---------------------------------------------------------------------------------------------------------
// System routes

#[tokio::test(flavor = "multi_thread")]
async fn system_info_reports_the_node() {
    let (_dir, node) = start().await;
    let version = node.put("i/a", "1").await;
    node.put("i/b", "2").await;
    node.put("i/c", "3").await;
    node.delete("i/c").await;
    let info = node.get_json("/api/v1/system/info").await;
    let node_id = info["node_id"].as_str().expect("node_id");
    assert_eq!(
        version.split_once('-').unwrap().1,
        node_id,
        "versions are stamped with the node id"
    );
    assert_eq!(info["mode"], "dev");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["uptime_seconds"].is_u64(), "{info}");
    assert_eq!(info["keys"], 2);
    assert_eq!(info["tombstones"], 1);
    assert!(info["db_size_bytes"].as_u64().unwrap() > 0, "{info}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn system_config_redacts_the_cluster_key() {
    let key = cave::secrets::MasterKey::generate();
    let text_key = key.to_base64();
    let (_dir, node) = start_with(|c| {
        c.cluster_key = Some(key.clone());
        c.max_value_bytes = 4096;
    })
    .await;
    let response = node.client.get(node.url("/api/v1/system/config")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(&text_key) && !text.contains(&text_key[..12]),
        "the key leaked: {text}"
    );
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["cluster_key"], "<redacted>");
    assert_eq!(config["max_value_bytes"], 4096);
    assert_eq!(config["mode"], "dev");
    assert_eq!(config["http_addr"], node.addr.to_string());
    assert_eq!(config["data_dir"], node.data_dir().display().to_string());
    // Nor does the key show up anywhere else a client can look.
    let info = node.text("/api/v1/system/info").await;
    assert!(!info.contains(&text_key[..12]), "{info}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_unknown_routes() {
    let (_dir, node) = start().await;
    assert_eq!(node.get_json("/healthz").await, json!({"status": "ok"}));
    assert_eq!(node.get_json("/readyz").await, json!({"status": "ready"}));
    for path in ["/nope", "/api/v1/nope", "/api/v2/kv/x", "/api/v1/system/secrets"] {
        let response = node.client.get(node.url(path)).send().await.unwrap();
        expect_error(response, 404, "not_found", "no such route").await;
    }
    let response = node.client.post(node.url("/api/v1/export")).send().await.unwrap();
    expect_error(response, 405, "method_not_allowed", "method not allowed").await;
    let response = node.client.delete(node.url("/api/v1/query")).send().await.unwrap();
    expect_error(response, 405, "method_not_allowed", "method not allowed").await;
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// Bad input: each is refused with a JSON error naming the problem, nothing is stored, the node carries on.

async fn reject_target(target: &str, status: u16, code: &str, needle: &str) {
    let (_dir, node) = start().await;
    for method in ["PUT", "POST", "GET", "DELETE"] {
        let response = raw_request(node.addr, method, target, b"value").await;
        response.expect_error(status, code, needle);
    }
    nothing_stored_and_still_works(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_empty() {
    let (_dir, node) = start().await;
    for target in ["/api/v1/kv/", "/api/v1/kv"] {
        for method in ["PUT", "POST"] {
            raw_request(node.addr, method, target, b"v")
                .await
                .expect_error(400, "invalid_input", "key is empty");
        }
    }
    nothing_stored_and_still_works(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_doubled_slash() {
    reject_target("/api/v1/kv/a//b", 400, "invalid_input", "empty segment").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_leading_slash() {
    reject_target("/api/v1/kv//a", 400, "invalid_input", "empty segment").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_dot_dot() {
    reject_target("/api/v1/kv/..", 400, "invalid_input", "'..' segment").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_dot_dot_inside() {
    reject_target("/api/v1/kv/a/../b", 400, "invalid_input", "'..' segment").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_encoded_dot_dot() {
    reject_target("/api/v1/kv/a/%2e%2E/b", 400, "invalid_input", "'..' segment").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_dot() {
    reject_target("/api/v1/kv/a/./b", 400, "invalid_input", "'.' or '..' segment").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_nul() {
    reject_target("/api/v1/kv/a%00b", 400, "invalid_input", "control character U+0000").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_newline() {
    reject_target("/api/v1/kv/a%0Ab", 400, "invalid_input", "control character U+000A").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_delete_character() {
    reject_target("/api/v1/kv/a%7F", 400, "invalid_input", "control character U+007F").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_too_long_and_exactly_the_limit_is_fine() {
    let long = "k".repeat(1025);
    reject_target(
        &format!("/api/v1/kv/{long}"),
        400,
        "invalid_input",
        "1025 bytes, the limit is 1024",
    )
    .await;
    // A multi-byte key counts bytes, not characters: 513 two-byte characters are 1026 bytes.
    let wide = "%C3%A9".repeat(513);
    reject_target(&format!("/api/v1/kv/{wide}"), 400, "invalid_input", "1026 bytes").await;

    let (_dir, node) = start().await;
    let exact = "k".repeat(1024);
    node.put(&exact, "at the limit").await;
    assert_eq!(node.get(&exact).await.as_deref(), Some(&b"at the limit"[..]));
    let nested = format!("{}/{}", "a".repeat(511), "b".repeat(512));
    node.put(&nested, "nested at the limit").await;
    assert_eq!(
        node.get_json(&format!("/api/v1/kv/{}/", "a".repeat(511))).await,
        json!([nested])
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_invalid_percent_escape() {
    reject_target("/api/v1/kv/a%zz", 400, "invalid_input", "percent-encoding").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_trailing_percent() {
    reject_target("/api/v1/kv/a%", 400, "invalid_input", "percent-encoding").await;
    reject_target("/api/v1/kv/a%4", 400, "invalid_input", "percent-encoding").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_invalid_utf8() {
    reject_target("/api/v1/kv/a%FF", 400, "invalid_input", "UTF-8").await;
    reject_target("/api/v1/kv/%C3%28", 400, "invalid_input", "UTF-8").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_reserved_system_prefix() {
    let (_dir, node) = start().await;
    for key in ["_system/x", "_system/node/id", "_system"] {
        let response = node.client.put(node.kv(key)).body("x").send().await.unwrap();
        expect_error(response, 403, "forbidden", "reserved").await;
        let response = node.client.delete(node.kv(key)).send().await.unwrap();
        expect_error(response, 403, "forbidden", "reserved").await;
    }
    nothing_stored_and_still_works(&node).await;
    // `_systemx` is an ordinary key.
    node.put("_systemx", "ok").await;
    node.stop().await;
}

/// A body over `max_value_bytes`: with a declared length, and streamed without one.
#[tokio::test(flavor = "multi_thread")]
async fn bad_body_over_max_value_bytes_is_413() {
    let (_dir, node) = start_with(|c| c.max_value_bytes = 64).await;
    let response = node
        .client
        .put(node.kv("big/declared"))
        .body(vec![b'x'; 65])
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "too_large", "limit of 64 bytes").await;

    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        (0..4).map(|_| Ok(bytes::Bytes::from_static(&[b'y'; 40]))).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = node
        .client
        .put(node.kv("big/streamed"))
        .body(body)
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "too_large", "limit of 64 bytes").await;
    assert_eq!(node.get("big/declared").await, None);
    assert_eq!(node.get("big/streamed").await, None);
    nothing_stored_and_still_works(&node).await;

    // Exactly the limit is fine, declared or streamed.
    node.put("big/exact", vec![b'z'; 64]).await;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        (0..2).map(|_| Ok(bytes::Bytes::from_static(&[b'w'; 32]))).collect();
    node.put(
        "big/exact-streamed",
        reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
    )
    .await;
    assert_eq!(node.get("big/exact-streamed").await, Some(vec![b'w'; 64]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_method_is_405() {
    let (_dir, node) = start().await;
    // PATCH edits documents on /api/v1/kv/ (tests/documents.rs); elsewhere it is not a method, nor is
    // OPTIONS without CORS origins.
    for (method, path) in [
        (reqwest::Method::OPTIONS, "/api/v1/kv/x"),
        (reqwest::Method::OPTIONS, "/api/v1/kv/"),
        (reqwest::Method::PATCH, "/api/v1/query"),
        (reqwest::Method::PATCH, "/healthz"),
    ] {
        let response = node
            .client
            .request(method, node.url(path))
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(response, 405, "method_not_allowed", "method not allowed").await;
    }
    nothing_stored_and_still_works(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_cas_is_400() {
    let (_dir, node) = start().await;
    for cas in ["garbage", "5", "5-", "-00000000000000a1", "x-00000000000000a1", "5-zz"] {
        let response = node
            .client
            .put(node.kv(&format!("k?cas={cas}")))
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_input", "parameter cas").await;
    }
    nothing_stored_and_still_works(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_secret_flag_is_400() {
    let (_dir, node) = start().await;
    for value in ["maybe", "y", "ture", "2"] {
        let response = node
            .client
            .put(node.kv(&format!("k?secret={value}")))
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_input", "parameter secret").await;
    }
    nothing_stored_and_still_works(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_content_type_is_400() {
    let (_dir, node) = start().await;
    let long = format!("text/{}", "x".repeat(300));
    let response = node
        .client
        .put(node.kv("ct/long"))
        .header(CONTENT_TYPE, long)
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "invalid_input", "longer than 255 bytes").await;
    for bad in [
        "text/plain; charset=é".as_bytes(),
        b"text/\tplain",
        &[b'a', 0x80, b'b'][..],
    ] {
        let value = reqwest::header::HeaderValue::from_bytes(bad).unwrap();
        let response = node
            .client
            .put(node.kv("ct/odd"))
            .header(CONTENT_TYPE, value)
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_input", "visible ASCII").await;
    }
    nothing_stored_and_still_works(&node).await;
    // 255 bytes is fine.
    let max = format!("text/{}", "x".repeat(250));
    let response = node
        .client
        .put(node.kv("ct/max"))
        .header(CONTENT_TYPE, &max)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = node.client.get(node.kv("ct/max")).send().await.unwrap();
    assert_eq!(header(&response, "content-type"), Some(max));
    node.stop().await;
}

/// Every kind of bad input against one node, then a valid write: nothing broke it.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_survives_a_barrage_of_bad_input() {
    let (_dir, node) = start_with(|c| c.max_value_bytes = 64).await;
    let targets = [
        "/api/v1/kv/",
        "/api/v1/kv/a//b",
        "/api/v1/kv/..",
        "/api/v1/kv/a/../b",
        "/api/v1/kv/a%00b",
        "/api/v1/kv/a%0Ab",
        "/api/v1/kv/a%7F",
        "/api/v1/kv/a%zz",
        "/api/v1/kv/a%",
        "/api/v1/kv/a%FF",
        "/api/v1/kv/_system/x",
        "/api/v1/kv/k?cas=garbage",
        "/api/v1/kv/k?secret=maybe",
        "/api/v1/query",
        "/api/v1/import",
    ];
    for target in targets {
        for method in ["PUT", "POST", "DELETE", "PATCH"] {
            if method == "DELETE" && target.contains("secret=") {
                continue; // a delete has nothing to seal or open: it ignores ?secret
            }
            let response = raw_request(node.addr, method, target, b"{not json").await;
            assert!((400..500).contains(&response.status), "{method} {target}: {response:?}");
            assert!(response.json()["error"].is_string(), "{method} {target}: {response:?}");
        }
    }
    let response = raw_request(node.addr, "PUT", "/api/v1/kv/big", &[b'x'; 100]).await;
    response.expect_error(413, "too_large", "limit");
    nothing_stored_and_still_works(&node).await;
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// Persistence

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_a_restart_on_the_same_directory() {
    let (_dir, node) = start().await;
    let binary = vec![0u8, 1, 2, 0xff, 0xfe];
    let mut versions = Vec::new();
    for i in 0..50 {
        versions.push((
            format!("p/{i:02}"),
            node.put(&format!("p/{i:02}"), format!("value {i}")).await,
        ));
    }
    let bin_version = node.put("p/bin", binary.clone()).await;
    node.client
        .put(node.kv("p/json"))
        .header(CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    node.put_secret("p/secret", PLAINTEXT).await;
    node.put("p/deleted", "x").await;
    let tomb = node.delete("p/deleted").await;
    let export_before = node.export_text().await;
    let node_id = node.get_json("/api/v1/system/info").await["node_id"].clone();

    let node = node.restart().await;
    assert_eq!(
        node.export_text().await,
        export_before,
        "the restarted node holds exactly the same entries"
    );
    assert_eq!(
        node.get_json("/api/v1/system/info").await["node_id"],
        node_id,
        "a node keeps its id"
    );
    for (i, (key, version)) in versions.iter().enumerate() {
        let response = node.client.get(node.kv(key)).send().await.unwrap();
        assert_eq!(header(&response, "x-cave-version").as_ref(), Some(version));
        assert_eq!(response.text().await.unwrap(), format!("value {i}"));
    }
    let response = node.client.get(node.kv("p/bin")).send().await.unwrap();
    assert_eq!(header(&response, "x-cave-version"), Some(bin_version));
    assert_eq!(response.bytes().await.unwrap().as_ref(), binary.as_slice());
    let response = node.client.get(node.kv("p/json")).send().await.unwrap();
    assert_eq!(header(&response, "content-type").as_deref(), Some("application/json"));
    assert_eq!(
        node.get("p/secret?secret=true").await.as_deref(),
        Some(PLAINTEXT.as_bytes())
    );
    assert_eq!(node.get("p/deleted").await, None);
    assert_eq!(
        node.delete("p/deleted").await,
        tomb,
        "the tombstone survived with its version"
    );

    // The clock does not go back: a write after the restart is newer than everything before it.
    let after = node.put("p/00", "rewritten").await;
    assert!(versions.iter().all(|(_, v)| hlc(&after) > hlc(v)));

    // A second restart after more writes.
    let node = node.restart().await;
    assert_eq!(node.get("p/00").await.as_deref(), Some(&b"rewritten"[..]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_watch_does_not_block_shutdown() {
    let (_dir, node) = start().await;
    let response = node.client.get(node.url("/api/v1/watch/")).send().await.unwrap();
    let mut events = SseReader {
        stream: response.bytes_stream(),
        buffer: String::new(),
        raw: String::new(),
    };
    assert_eq!(events.next().await.event, "ready");
    tokio::time::timeout(Duration::from_secs(10), node.stop())
        .await
        .expect("shutdown waited for the watcher");
    drop(events);
}

/// A secret sealed under another key (imported from a node of another cluster) cannot be opened here. Reading
/// it with `?secret=true` is refused; in a batch, that must not hide the fact that the batch's writes committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_sealed_elsewhere_cannot_be_opened_and_a_batch_reports_it_per_op() {
    let (_dir_a, a) = start().await;
    a.put_secret("foreign/secret", PLAINTEXT).await;
    let export = a.export_text().await;
    a.stop().await;
    let (_dir_b, b) = start().await; // another dev key
    let response = import(&b, export).await;
    assert_eq!(response.json::<Value>().await.unwrap()["applied"], 1);

    let sealed = b.get("foreign/secret").await.unwrap();
    assert!(sealed.starts_with(ENVELOPE_PREFIX.as_bytes()));
    let response = b.client.get(b.kv("foreign/secret?secret=true")).send().await.unwrap();
    expect_error(response, 403, "forbidden", "cannot be opened").await;

    let (status, results) = query(
        &b,
        &json!([
            {"key": "batch/write", "verb": "set", "value": "committed"},
            {"key": "foreign/secret", "verb": "get", "secret": true},
        ]),
    )
    .await;
    let committed = b.get("batch/write").await.is_some();
    assert!(
        (status == 200) == committed,
        "the batch answered {status} {results} although its write {} committed",
        if committed { "was" } else { "was not" }
    );
    assert_eq!(status, 200, "{results}");
    assert_eq!(results[1]["found"], true);
    assert_eq!(results[1]["secret"], true);
    assert!(
        results[1]["error"].as_str().unwrap().contains("cannot be opened"),
        "{results}"
    );
    assert!(results[1].get("value").is_none(), "{results}");
    assert!(!results.to_string().contains(PLAINTEXT));
    // Without `secret: true` the envelope is returned as usual.
    let (status, results) = query(&b, &json!([{"key": "foreign/secret", "verb": "get"}])).await;
    assert_eq!(status, 200);
    assert_eq!(results[0]["value"].as_str().unwrap().as_bytes(), sealed.as_slice());
    b.stop().await;
}
