//! A large export (many chunks of the streamed walk) is complete and correct: every entry once, in key
//! order, tombstones included, values exact (binary ones in base64), nothing reserved for Cave. The node
//! is a prod node with access control on.

mod common;

use std::collections::BTreeMap;

use base64::Engine;
use futures::StreamExt;
use serde_json::{json, Value};

/// Keys written: more than 60 chunks of the export's walk (512 entries each).
const KEYS: usize = 33_333;

#[tokio::test(flavor = "multi_thread")]
async fn a_large_export_streams_every_entry_once_in_key_order() {
    let (_dir, node) = common::start_prod().await;
    // key -> Some(value bytes) for a live key, None for a tombstone.
    let mut want: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let ops: Vec<Value> = (0..KEYS)
        .map(|i| {
            let key = format!("e/{}/k{i:06}{}", i % 7, if i % 5 == 0 { "é" } else { "" });
            let value: Vec<u8> = if i % 11 == 0 {
                vec![0xff, (i % 256) as u8, 0]
            } else {
                format!("v{i}").into_bytes()
            };
            want.insert(key.clone(), Some(value.clone()));
            match std::str::from_utf8(&value) {
                Ok(text) => json!({"key": key, "verb": "set", "value": text}),
                Err(_) => json!({"key": key, "verb": "set", "value": base64::engine::general_purpose::STANDARD.encode(&value), "encoding": "base64"}),
            }
        })
        .collect();
    for chunk in ops.chunks(5_000) {
        let response = node
            .client
            .post(node.url("/api/v1/query"))
            .json(&chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for i in (0..KEYS).step_by(97) {
        let key = want.keys().nth(i).unwrap().clone();
        node.delete(&key).await;
        want.insert(key, None);
    }

    let response = node.client.get(node.url("/api/v1/export")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = Vec::new();
    let mut chunks = 0;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert!(chunks > 1, "the export arrives in pieces, not as one body");
    let text = String::from_utf8(body).unwrap();
    let mut got: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for line in text.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let key = entry["key"].as_str().unwrap().to_string();
        assert!(!key.starts_with("_system"), "reserved key exported: {key}");
        let value = entry["value"].as_str().unwrap();
        let value = match entry["encoding"].as_str().unwrap() {
            "base64" => base64::engine::general_purpose::STANDARD.decode(value).unwrap(),
            _ => value.as_bytes().to_vec(),
        };
        got.push((key, (!entry["deleted"].as_bool().unwrap()).then_some(value)));
    }
    let want: Vec<(String, Option<Vec<u8>>)> = want.into_iter().collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the export differs from what was written");
    node.stop().await;
}
