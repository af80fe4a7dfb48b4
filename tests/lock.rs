//! Locks over HTTP: acquire, refuse, inspect, release, fences, bad input; and two clients racing for one
//! lock through two nodes of a three-node cluster, round after round: one grant per round, fences growing.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;

use cave::secrets::MasterKey;
use common::{expect_error, start, TestNode};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);

async fn lease(node: &TestNode) -> String {
    let response = node
        .client
        .post(node.url("/api/v1/lease"))
        .json(&json!({ "ttl": "1h" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

async fn acquire(node: &TestNode, name: &str, lease: &str) -> reqwest::Response {
    let url = node.url(&format!("/api/v1/lock/{name}"));
    node.client
        .post(url)
        .json(&json!({ "lease": lease }))
        .send()
        .await
        .unwrap()
}

async fn release(node: &TestNode, name: &str, lease: &str) -> reqwest::Response {
    let url = node.url(&format!("/api/v1/lock/{name}?lease={lease}"));
    node.client.delete(url).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_is_held_by_one_lease_released_by_it_and_granted_again_with_a_greater_fence() {
    let (_dir, node) = start().await;
    let (a, b) = (lease(&node).await, lease(&node).await);
    let watch = node.client.get(node.url("/api/v1/watch/jobs")).send().await.unwrap();
    let mut events = watch.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: ready") {
        seen.push_str(std::str::from_utf8(&events.next().await.unwrap().unwrap()).unwrap());
    }
    let first = acquire(&node, "jobs/nightly", &a).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        (first["holder"].as_str(), first["fence"].as_u64()),
        (Some(a.as_str()), Some(1))
    );
    // Held: another lease is refused with the holder; the holder acquiring again keeps its fence.
    let refused = expect_error(acquire(&node, "jobs/nightly", &b).await, 409, "conflict", "held").await;
    assert_eq!(
        (refused["holder"].as_str(), refused["fence"].as_u64()),
        (Some(a.as_str()), Some(1))
    );
    let again: Value = acquire(&node, "jobs/nightly", &a).await.json().await.unwrap();
    assert_eq!(again["fence"], 1);
    let shown = node.get_json("/api/v1/lock/jobs/nightly").await;
    assert_eq!(
        (shown["held"].as_bool(), shown["holder"].as_str()),
        (Some(true), Some(a.as_str()))
    );
    assert_eq!(
        node.get_json("/api/v1/lock").await["locks"].as_array().unwrap().len(),
        1
    );
    assert_eq!(node.get_json("/api/v1/system/info").await["locks"], 1);
    assert_eq!(node.get_json("/api/v1/cluster/nodes").await[0]["locks"], 1);
    assert_eq!(node.metric("cave_locks").await, 1.0);
    // Only the holder releases.
    expect_error(release(&node, "jobs/nightly", &b).await, 409, "conflict", "held").await;
    let released: Value = release(&node, "jobs/nightly", &a).await.json().await.unwrap();
    assert_eq!(
        (released["released"].as_bool(), released["fence"].as_u64()),
        (Some(true), Some(1))
    );
    expect_error(release(&node, "jobs/nightly", &a).await, 404, "not_found", "not held").await;
    // The watch saw the grant, its extension and the release, as the lock's name.
    while seen.matches("event: ").count() < 4 {
        seen.push_str(std::str::from_utf8(&events.next().await.unwrap().unwrap()).unwrap());
    }
    assert_eq!(seen.matches("event: lock\n").count(), 2, "{seen}");
    assert_eq!(seen.matches("event: unlock\n").count(), 1, "{seen}");
    assert!(
        seen.contains(r#""lock":"jobs/nightly""#) && seen.contains(r#""fence":1"#),
        "{seen}"
    );
    let next: Value = acquire(&node, "jobs/nightly", &b).await.json().await.unwrap();
    assert_eq!(
        (next["holder"].as_str(), next["fence"].as_u64()),
        (Some(b.as_str()), Some(2))
    );
    // Revoking the lease releases its locks.
    let revoked = node
        .client
        .delete(node.url(&format!("/api/v1/lease/{b}")))
        .send()
        .await
        .unwrap();
    let revoked: Value = revoked.json().await.unwrap();
    assert_eq!(revoked["locks"], 1);
    assert_eq!(node.get_json("/api/v1/lock/jobs/nightly").await["held"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_lock_requests_are_refused_and_change_nothing() {
    let (_dir, node) = start().await;
    let a = lease(&node).await;
    let cases = [
        ("x", "{}", 400, "invalid_input", "lease"),
        ("x", r#"{"lease":"zz"}"#, 400, "invalid_input", "lease"),
        ("x", r#"{"lease":"00000000000000ab"}"#, 404, "not_found", ""),
        ("x", "not json", 400, "invalid_input", ""),
        ("_system/x", r#"{"lease":"1"}"#, 403, "forbidden", ""),
        ("a//b", r#"{"lease":"1"}"#, 400, "invalid_input", ""),
    ];
    for (name, body, status, code, needle) in cases {
        let response = node
            .client
            .post(node.url(&format!("/api/v1/lock/{name}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(response, status, code, needle).await;
    }
    let wrong_type = node
        .client
        .post(node.url("/api/v1/lock/x"))
        .header("content-type", "text/plain")
        .body(format!(r#"{{"lease":"{a}"}}"#));
    expect_error(wrong_type.send().await.unwrap(), 415, "unsupported_media_type", "").await;
    expect_error(release(&node, "x", "zz").await, 400, "invalid_input", "").await;
    let missing = node.client.get(node.url("/api/v1/lock/x")).send().await.unwrap();
    expect_error(missing, 404, "not_found", "never granted").await;
    assert_eq!(node.get_json("/api/v1/lock").await["locks"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clients_racing_through_two_nodes_get_one_grant_per_round_with_growing_fences() {
    let key = MasterKey::generate();
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let nodes = common::prod_cluster(&dirs, &key).await;
    let (a, b) = (lease(&nodes[0]).await, lease(&nodes[1]).await);
    // Wait until both nodes may propose (members found, clocks judged) and see both leases.
    let started = Instant::now();
    loop {
        let r = acquire(&nodes[1], "warmup", &a).await.status();
        if r == 200 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "no grant within {DEADLINE:?}: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut last_fence = 0;
    for round in 0..1_000 {
        let (x, y) = tokio::join!(acquire(&nodes[0], "race", &a), acquire(&nodes[1], "race", &b));
        let (sx, sy) = (x.status().as_u16(), y.status().as_u16());
        let (bx, by): (Value, Value) = (x.json().await.unwrap(), y.json().await.unwrap());
        let (winner, lease_won, body) = match (sx, sy) {
            (200, 409) => (&nodes[0], &a, bx),
            (409, 200) => (&nodes[1], &b, by),
            other => panic!("round {round}: {other:?} {bx} {by}"),
        };
        let fence = body["fence"].as_u64().unwrap();
        assert!(fence > last_fence, "round {round}: fence {fence} after {last_fence}");
        last_fence = fence;
        assert_eq!(release(winner, "race", lease_won).await.status(), 200, "round {round}");
    }
}

/// Three `cave` processes; killed (not stopped: a stopped node leaves the cluster and stops counting) one by
/// one. Two of three still grant; the last one, cut off from the majority, answers 503 and grants nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_from_the_majority_cannot_grant() {
    use common::child::{free_port, start_member};
    let key = std::process::Command::new(env!("CARGO_BIN_EXE_cave"))
        .arg("keygen")
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let grpc = [(); 3].map(|()| free_port());
    let mut nodes = Vec::new();
    for i in 0..3 {
        let peers: Vec<u16> = (0..3).filter(|&j| j != i).map(|j| grpc[j]).collect();
        nodes.push(start_member(dirs[i].path(), grpc[i], &key, &peers, &[]).await);
    }
    let client = common::client();
    let post = |base: &str, path: &str, body: Value| client.post(format!("{base}{path}")).json(&body).send();
    let lease_of = |r: Value| r["id"].as_str().unwrap().to_string();
    let last = nodes[2].base.clone();
    let lease = lease_of(
        post(&last, "/api/v1/lease", json!({"ttl": "1h"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap(),
    );
    let acquire = |name: &'static str| post(&last, &format!("/api/v1/lock/{name}"), json!({ "lease": lease }));
    // The cluster formed: a grant goes through.
    let started = Instant::now();
    while acquire("formed").await.unwrap().status() != 200 {
        assert!(started.elapsed() < DEADLINE, "no grant within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[0].kill_9();
    let two = acquire("two-of-three").await.unwrap();
    assert_eq!(two.status(), 200, "{}", two.text().await.unwrap());
    nodes[1].kill_9();
    let alone = acquire("alone").await.unwrap();
    expect_error(alone, 503, "unavailable", "majority").await;
    let shown = client.get(format!("{last}/api/v1/lock/alone")).send().await.unwrap();
    assert_eq!(shown.status(), 404, "a refused lock has no record");
}
