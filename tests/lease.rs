//! Leases over HTTP: grant, bind (`PUT ?lease=`, batch `lease`), inspect, renew, revoke, bad input, and a
//! three-node cluster where a service registers under a 2 s lease, renews it through any node, is killed, and
//! its key vanishes from every node within lease + 1 s.

mod common;

use std::time::{Duration, Instant};

use cave::secrets::MasterKey;
use common::{expect_error, start, TestNode};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);

async fn grant(node: &TestNode, ttl: Value) -> reqwest::Response {
    node.client
        .post(node.url("/api/v1/lease"))
        .json(&json!({ "ttl": ttl }))
        .send()
        .await
        .unwrap()
}

async fn lease(node: &TestNode, ttl: &str) -> String {
    let response = grant(node, json!(ttl)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ttl"], ttl);
    body["id"].as_str().unwrap().to_string()
}

async fn bind(node: &TestNode, key: &str, id: &str) -> reqwest::Response {
    node.client
        .put(node.kv(&format!("{key}?lease={id}")))
        .body("10.0.0.7:8080")
        .send()
        .await
        .unwrap()
}

async fn renew(node: &TestNode, id: &str) -> reqwest::Response {
    let url = node.url(&format!("/api/v1/lease/{id}/renew"));
    node.client.post(url).send().await.unwrap()
}

async fn status(node: &TestNode, key: &str) -> u16 {
    node.client.get(node.kv(key)).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_binds_keys_renews_and_its_revoke_deletes_them() {
    let (_dir, node) = start().await;
    let id = lease(&node, "30s").await;
    assert_eq!(bind(&node, "svc/web/1", &id).await.status(), 200);
    let batch = json!([{"verb": "set", "key": "svc/web/2", "value": "b", "lease": id}]);
    let response = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    node.put("svc/web/static", "permanent").await;

    let read = node.client.get(node.kv("svc/web/1")).send().await.unwrap();
    assert_eq!(read.headers()["x-cave-lease"], id.as_str());
    let shown = node.get_json(&format!("/api/v1/lease/{id}")).await;
    assert_eq!(shown["keys"], 2);
    assert_eq!(shown["bound"], json!(["svc/web/1", "svc/web/2"]));
    assert_eq!(shown["ttl_ms"], 30_000);
    let listed = node.get_json("/api/v1/lease").await;
    assert_eq!(listed["leases"].as_array().unwrap().len(), 1);
    let line = node
        .export()
        .await
        .into_iter()
        .find(|l| l["key"] == "svc/web/1")
        .unwrap();
    assert_eq!(line["lease"], json!(id));

    let renewed = renew(&node, &id).await;
    assert_eq!(renewed.status(), 200);
    let renewed: Value = renewed.json().await.unwrap();
    assert!(renewed["expires_ms"].as_u64() >= shown["expires_ms"].as_u64());

    let revoked = node
        .client
        .delete(node.url(&format!("/api/v1/lease/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        revoked.json::<Value>().await.unwrap(),
        json!({"id": id, "revoked": true, "keys": 2, "locks": 0})
    );
    assert_eq!(status(&node, "svc/web/1").await, 404);
    assert_eq!(status(&node, "svc/web/2").await, 404);
    assert_eq!(status(&node, "svc/web/static").await, 200);
    let listing = node.get_json("/api/v1/kv/svc/web/").await;
    assert_eq!(listing, json!(["svc/web/static"]));
    // An export carries the ended values as tombstones (so that the end travels), never as values.
    assert!(node
        .export()
        .await
        .iter()
        .all(|l| l["key"] != "svc/web/1" || l["deleted"] == true));

    // An ended lease is neither renewed, revoked again, shown nor bound to.
    expect_error(renew(&node, &id).await, 404, "not_found", "lease").await;
    let again = node
        .client
        .delete(node.url(&format!("/api/v1/lease/{id}")))
        .send()
        .await
        .unwrap();
    expect_error(again, 404, "not_found", "lease").await;
    expect_error(
        bind(&node, "svc/web/3", &id).await,
        404,
        "not_found",
        "ended or never existed",
    )
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_lease_requests_are_refused_and_change_nothing() {
    let (_dir, node) = start().await;
    expect_error(grant(&node, json!("0s")).await, 400, "invalid_input", "between").await;
    expect_error(grant(&node, json!("ten")).await, 400, "invalid_input", "ttl").await;
    expect_error(grant(&node, json!(-3)).await, 400, "invalid_input", "lease request").await;
    let missing = node
        .client
        .post(node.url("/api/v1/lease"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(missing, 400, "invalid_input", "lease request").await;
    let text = node
        .client
        .post(node.url("/api/v1/lease"))
        .header("content-type", "text/plain")
        .body("{\"ttl\":\"5s\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    assert_eq!(grant(&node, json!(5)).await.status(), 200, "a number is seconds");
    for bad in ["zz", "0", "12345678901234567", "%00"] {
        expect_error(bind(&node, "k", bad).await, 400, "invalid_input", "lease").await;
        expect_error(renew(&node, bad).await, 400, "invalid_input", "lease id").await;
    }
    expect_error(bind(&node, "k", "00000000000000ab").await, 404, "not_found", "lease").await;
    let id = lease(&node, "30s").await;
    let doc = node
        .client
        .put(node.kv(&format!("d?doc=true&lease={id}")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(doc, 400, "invalid_input", "document").await;
    assert_eq!(status(&node, "k").await, 404);
    assert_eq!(status(&node, "d").await, 404);
    // Lease entries are Cave's own: not readable or writable as keys.
    let reserved = node
        .client
        .get(node.kv(&format!("_system/lease/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(reserved.status(), 403);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_of_a_value_bound_to_a_lease_this_cluster_lacks_lands_as_its_end() {
    let (_dir, node) = start().await;
    let id = lease(&node, "30s").await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let version = format!("{}-00000000000000a1", cave::crdt::hlc::from_physical_ms(now_ms));
    let lines = [
        json!({"key": "svc/orphan", "value": "v", "version": version, "lease": "00000000000000ab"}),
        json!({"key": "svc/kept", "value": "v", "version": version, "lease": id}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let response = node
        .client
        .post(node.url("/api/v1/import"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(status(&node, "svc/orphan").await, 404);
    assert_eq!(status(&node, "svc/kept").await, 200);
    let orphan = node
        .export()
        .await
        .into_iter()
        .find(|l| l["key"] == "svc/orphan")
        .unwrap();
    assert_eq!(
        (orphan["deleted"].clone(), orphan["lease"].clone()),
        (json!(true), json!("00000000000000ab"))
    );
    node.stop().await;
}

/// Wait until `key` answers 404 on every node; how long that took.
async fn until_gone_everywhere(nodes: &[&TestNode], key: &str) -> Duration {
    let started = Instant::now();
    for node in nodes {
        while status(node, key).await != 404 {
            assert!(started.elapsed() < DEADLINE, "{key} still read on {}", node.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_service_vanishes_from_all_three_nodes_within_its_lease_and_a_second() {
    let key = MasterKey::generate();
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let nodes = common::prod_cluster(&dirs, &key).await;
    let all: Vec<&TestNode> = nodes.iter().collect();

    // The service: registers under a 2 s lease, then renews every 500 ms, each time through another node.
    let id = lease(all[0], "2s").await;
    assert_eq!(bind(all[0], "services/web/1", &id).await.status(), 200);
    for node in &all {
        let started = Instant::now();
        while status(node, "services/web/1").await != 200 {
            assert!(started.elapsed() < DEADLINE, "{} never saw the registration", node.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (clients, bases): (Vec<_>, Vec<_>) = all.iter().map(|n| (n.client.clone(), n.base.clone())).unzip();
    let renewing_id = id.clone();
    let service = tokio::spawn(async move {
        for round in 0.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let at = round % clients.len();
            let url = format!("{}/api/v1/lease/{renewing_id}/renew", bases[at]);
            let renewed = clients[at].post(url).send().await.unwrap();
            assert_eq!(renewed.status(), 200, "renewal {round} through node {at}");
        }
    });
    // Alive for three lease periods: the renewals through every node keep it registered everywhere.
    let alive_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < alive_until {
        for node in &all {
            assert_eq!(
                status(node, "services/web/1").await,
                200,
                "{} lost a renewed key",
                node.base
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    service.abort();
    let killed = Instant::now();
    assert!(
        service.await.unwrap_err().is_cancelled(),
        "the service failed before it was killed"
    );
    until_gone_everywhere(&all, "services/web/1").await;
    let gone_after = killed.elapsed();
    assert!(
        gone_after <= Duration::from_secs(3),
        "gone from all three {gone_after:?} after the kill"
    );
    for node in nodes {
        node.stop().await;
    }
}
