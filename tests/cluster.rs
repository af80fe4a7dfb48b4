//! Three real nodes on loopback (HTTP and gRPC on port 0), replicating through the real transport.

mod common;

use std::time::{Duration, Instant};

use cave::config::{Config, Mode};
use cave::secrets::MasterKey;
use common::TestNode;
use serde_json::Value;

/// Convergence must happen well within this (gossip 1 s, anti-entropy 500 ms in these tests).
const CONVERGE: Duration = Duration::from_secs(30);

struct Member {
    node: TestNode,
    _dir: tempfile::TempDir,
}

impl Member {
    fn grpc(&self) -> String {
        self.node.config.grpc_addr.to_string()
    }
}

async fn member(key: &MasterKey, seeds: &[&Member]) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = Config {
        mode: Mode::Prod,
        data_dir: dir.path().join("data"),
        cluster_key: Some(key.clone()),
        peers: seeds.iter().map(|m| m.grpc()).collect(),
        mdns: false,
        grpc_addr: grpc.local_addr().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        anti_entropy_interval: Duration::from_millis(500),
        discovery_window: Duration::ZERO,
        ..Config::default()
    };
    let node = TestNode::start_config_with_grpc(config, Some(grpc)).await;
    Member { node, _dir: dir }
}

/// Three members: 2 seeded with 1, 3 seeded with 2.
async fn three(key: &MasterKey) -> (Member, Member, Member) {
    let a = member(key, &[]).await;
    let b = member(key, &[&a]).await;
    let c = member(key, &[&b]).await;
    (a, b, c)
}

/// Poll `check` until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + CONVERGE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn nodes(n: &TestNode) -> Vec<Value> {
    n.get_json("/api/v1/cluster/nodes")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn version(n: &TestNode, key: &str) -> Option<String> {
    let r = n.client.get(n.kv(key)).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.headers()
        .get("x-cave-version")
        .map(|v| v.to_str().unwrap().to_string())
}

/// Live entries and tombstones of a node, as sorted (key, version, deleted) triples.
async fn state(n: &TestNode) -> Vec<(String, String, bool)> {
    let mut out: Vec<_> = n
        .export()
        .await
        .into_iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["version"].as_str().unwrap().to_string(),
                e["deleted"] == true,
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_any_node_is_readable_on_every_node() {
    let key = MasterKey::generate();
    let (a, b, c) = three(&key).await;
    let all = [&a, &b, &c];
    for (i, m) in all.iter().enumerate() {
        m.node.put(&format!("from/{i}"), format!("value {i}")).await;
    }
    for m in all {
        for i in 0..3 {
            let path = format!("from/{i}");
            eventually(&format!("{path} is on {}", m.node.base), || async {
                m.node.get(&path).await.as_deref() == Some(format!("value {i}").as_bytes())
            })
            .await;
        }
    }
    // Every node reports the same cluster id and lists the two others.
    let ids: Vec<Value> = {
        let mut v = Vec::new();
        for m in all {
            v.push(m.node.get_json("/api/v1/system/info").await["cluster_id"].clone());
        }
        v
    };
    assert!(ids.iter().all(|id| *id == ids[0] && id.is_string()));
    // Each member's version and key count travel in its gossip: node 1 sees the three keys on the others.
    eventually("node 1 lists every member's version and key count", || async {
        let list = nodes(&a.node).await;
        list.len() == 3
            && list
                .iter()
                .all(|n| n["version"] == env!("CARGO_PKG_VERSION") && n["keys"].as_u64() == Some(3))
    })
    .await;
    for m in [a, b, c] {
        m.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_seeded_with_one_member_learns_all() {
    let key = MasterKey::generate();
    let (a, b, c) = three(&key).await;
    let a_id = a.node.get_json("/api/v1/system/info").await["node_id"].clone();
    eventually("node 3 sees node 1 alive", || async {
        nodes(&c.node)
            .await
            .iter()
            .any(|n| n["id"] == a_id && n["status"] == "alive")
    })
    .await;
    eventually("node 1 sees both others alive", || async {
        nodes(&a.node).await.iter().filter(|n| n["status"] == "alive").count() == 2
    })
    .await;
    let view = nodes(&c.node).await;
    assert!(view
        .iter()
        .all(|n| n["grpc_addr"].is_string() && n["http_addr"].is_string()));
    assert!(view.iter().any(|n| n["status"] == "self"));
    for m in [a, b, c] {
        m.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_key_converge_to_the_greatest_version() {
    let key = MasterKey::generate();
    let (a, b, c) = three(&key).await;
    let mut acked = Vec::new();
    for round in 0..20 {
        let (ra, rb) = tokio::join!(
            a.node.put("contested", format!("a{round}")),
            b.node.put("contested", format!("b{round}"))
        );
        acked.push(ra);
        acked.push(rb);
    }
    let greatest = acked
        .iter()
        .max_by_key(|v| {
            let (hlc, node) = v.split_once('-').unwrap();
            (hlc.parse::<u64>().unwrap(), u64::from_str_radix(node, 16).unwrap())
        })
        .unwrap()
        .clone();
    for m in [&a, &b, &c] {
        eventually("every node holds the greatest version", || async {
            version(&m.node, "contested").await.as_deref() == Some(greatest.as_str())
        })
        .await;
    }
    for m in [a, b, c] {
        m.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_misses_writes_and_deletes_then_converges() {
    let key = MasterKey::generate();
    let (a, b, c) = three(&key).await;
    a.node.put("before", "x").await;
    eventually("node 3 has the first write", || async {
        c.node.get("before").await.is_some()
    })
    .await;
    let Member {
        node: stopped,
        _dir: c_dir,
    } = c;
    let c_config = stopped.config.clone();
    stopped.stop().await;

    // 1,000 writes in batches, then 100 deletes and a rewrite, all while node 3 is down.
    for batch in 0..10 {
        let ops: Vec<Value> = (0..100)
            .map(|i| serde_json::json!({"key": format!("missed/{}", batch * 100 + i), "verb": "set", "value": format!("v{i}")}))
            .collect();
        let r = a
            .node
            .client
            .post(a.node.url("/api/v1/query"))
            .json(&ops)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for i in 0..100 {
        a.node.delete(&format!("missed/{i}")).await;
    }
    a.node.delete("before").await;

    let c = TestNode::start_config(c_config).await;
    eventually("the restarted node converges", || async {
        state(&c).await == state(&a.node).await
    })
    .await;
    assert!(c.get("missed/5").await.is_none());
    assert_eq!(c.get("missed/999").await.as_deref(), Some(&b"v99"[..]));
    assert!(c.get("before").await.is_none());
    c.stop().await;
    drop(c_dir);
    for m in [a, b] {
        m.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_key_gets_nothing_and_gives_nothing() {
    let key = MasterKey::generate();
    let a = member(&key, &[]).await;
    a.node.put("secret/plan", "cluster data").await;
    let stranger = member(&MasterKey::generate(), &[&a]).await;
    stranger.node.put("stranger/data", "not yours").await;
    eventually("the cluster node rejected the stranger's frames", || async {
        a.node.metric("cave_seal_failures_total").await > 0.0
    })
    .await;
    // Give replication every chance it would have had (several gossip and anti-entropy rounds).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(stranger.node.get("secret/plan").await.is_none());
    assert!(a.node.get("stranger/data").await.is_none());
    assert_eq!(nodes(&a.node).await.len(), 1, "the stranger must not become a member");
    assert_ne!(
        a.node.get_json("/api/v1/system/info").await["cluster_id"],
        stranger.node.get_json("/api/v1/system/info").await["cluster_id"]
    );
    a.node.stop().await;
    stranger.node.stop().await;
}

/// A secret written on one node is readable (`?secret=true`) on the others, and no node stores or exports its
/// plaintext: it travels and rests sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_replicates_sealed_and_opens_on_every_node() {
    const PLAINTEXT: &str = "hunter2-replicated-plaintext";
    const MARKER: &str = "plain-marker-value";
    let key = MasterKey::generate();
    let (a, b, c) = three(&key).await;
    a.node.put_secret("app/db/password", PLAINTEXT).await;
    a.node.put("app/db/host", MARKER).await;
    for m in [&b, &c] {
        eventually(&format!("the secret opens on {}", m.node.base), || async {
            m.node.get("app/db/password?secret=true").await.as_deref() == Some(PLAINTEXT.as_bytes())
        })
        .await;
        eventually(&format!("the marker is on {}", m.node.base), || async {
            m.node.get("app/db/host").await.as_deref() == Some(MARKER.as_bytes())
        })
        .await;
        let export = m.node.text("/api/v1/export").await;
        assert!(
            !export.contains(PLAINTEXT),
            "the export of {} shows the plaintext",
            m.node.base
        );
    }
    let dirs = [&b, &c].map(|m| m.node.data_dir());
    let mut keep = Vec::new(); // the temporary directories, until they are scanned
    for Member { node, _dir } in [a, b, c] {
        node.stop().await;
        keep.push(_dir);
    }
    for dir in dirs {
        common::assert_no_plaintext_below(&dir, PLAINTEXT, MARKER);
    }
}
