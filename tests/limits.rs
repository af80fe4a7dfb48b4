//! Limits that keep one client from hurting a node or reaching what it must not: the memory an idle watcher
//! can pin, the size of one listing answer, and the keys reserved for Cave.
//!
//! Reserved (`_system/`) entries cannot be written through the client API, so these tests run a node in
//! process, holding its [`Db`], and merge them in as replication would.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cave::config::Config;
use cave::crdt::{Entry, NodeId, Version};
use cave::db::{Db, Op};
use common::expect_error;
use serde_json::{json, Value};

/// The bound of one recursive listing or tree answer (`api::kv::MAX_LISTING_ENTRIES`).
const MAX_LISTING_ENTRIES: usize = 10_000;
const DEADLINE: Duration = Duration::from_secs(30);

/// A node served in this process, with its database at hand.
struct Node {
    db: Db,
    base: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let node = cave::node::Node::open(config).await.unwrap();
        let db = node.db.clone();
        let router = node.router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown_db = db.clone();
        let served = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                    shutdown_db.begin_shutdown();
                })
                .await
                .unwrap();
            node.close().await.unwrap();
        });
        Node {
            db,
            base: format!("http://{addr}"),
            client: common::client(),
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Entries written by a peer, as replication merges them.
    async fn merge_from_peer(&self, keys: &[&str]) {
        let entries = keys
            .iter()
            .map(|k| {
                let hlc = self.db.hlc().tick_after(0).unwrap();
                Entry::value(*k, format!("reserved value of {k}"), Version::new(hlc, NodeId(0x99)))
            })
            .collect();
        self.db.merge(entries).await.unwrap();
    }

    async fn put(&self, key: &str, value: &str) {
        let response = self
            .client
            .put(self.url(&format!("/api/v1/kv/{key}")))
            .body(value.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "PUT {key}");
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.served.take().unwrap().await.unwrap();
    }
}

const RESERVED: [&str; 3] = ["_system", "_system/tokens/t1", "_system/tokens/t2"];

/// Ordinary keys around the reserved range in key order (`_system.x` sorts before `_system/`, `_system0`
/// after it), and the reserved ones written by a peer.
async fn node_with_reserved_keys() -> Node {
    let node = Node::start().await;
    for key in ["_system.x", "_system0", "a/b", "z"] {
        node.put(key, "visible").await;
    }
    node.merge_from_peer(&RESERVED).await;
    node
}

fn assert_hidden(what: &str, text: &str) {
    assert!(
        !text.contains("_system/") && !text.contains("\"_system\"") && !text.contains("reserved value"),
        "{what} shows a reserved key: {text}"
    );
}

async fn assert_reserved_intact(node: &Node) {
    for key in RESERVED {
        let entry = node.db.get(key).unwrap_or_else(|| panic!("{key} is gone"));
        assert_eq!(entry.value, format!("reserved value of {key}").into_bytes(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn root_listings_and_exports_pass_over_reserved_keys() {
    let node = node_with_reserved_keys().await;
    assert_eq!(
        node.get_json("/api/v1/kv/").await,
        json!(["_system.x", "_system0", "a/", "z"])
    );
    let recurse = node.get_json("/api/v1/kv/?recurse=true").await;
    let keys: Vec<&str> = recurse
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["_system.x", "_system0", "a/b", "z"]);
    let tree = node.get_json("/api/v1/kv/?tree=true").await;
    assert_hidden("the root tree", &tree.to_string());
    // Page by page, the walk crosses the reserved range without showing it.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = after.as_ref().map_or(String::new(), |a| format!("&after={a}"));
        let page = node.get_json(&format!("/api/v1/kv/?recurse=true&limit=1{query}")).await;
        walked.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["key"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(walked, keys);
    let export = node
        .client
        .get(node.url("/api/v1/export"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_hidden("the export", &export);
    assert_eq!(export.lines().count(), 4, "{export}");
    assert_reserved_intact(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_verb_naming_a_reserved_key_or_folder_is_refused() {
    let node = node_with_reserved_keys().await;
    let client = &node.client;
    let targets = [
        "/api/v1/kv/_system",
        "/api/v1/kv/_system/",
        "/api/v1/kv/_system/tokens/t1",
        "/api/v1/kv/_system/tokens/",
        "/api/v1/kv/_system/?recurse=true",
        "/api/v1/kv/_system/tokens/?recurse=true",
        "/api/v1/kv/_system/?tree=true",
        "/api/v1/kv/_system/?recurse=true&limit=1",
    ];
    for target in targets {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::PUT,
            reqwest::Method::POST,
            reqwest::Method::DELETE,
        ] {
            let response = client
                .request(method.clone(), node.url(target))
                .body("x")
                .send()
                .await
                .unwrap();
            expect_error(response, 403, "forbidden", "reserved").await;
        }
        let response = client.head(node.url(target)).send().await.unwrap();
        assert_eq!(response.status(), 403, "HEAD {target}");
    }
    for target in [
        "/api/v1/watch/_system",
        "/api/v1/watch/_system/",
        "/api/v1/watch/_system/tokens",
    ] {
        let response = client.get(node.url(target)).send().await.unwrap();
        expect_error(response, 403, "forbidden", "reserved").await;
    }
    for prefix in ["_system", "_system/", "_system/tokens"] {
        let response = client
            .get(node.url(&format!("/api/v1/export?prefix={prefix}")))
            .send()
            .await
            .unwrap();
        expect_error(response, 403, "forbidden", "reserved").await;
    }
    for verb in ["get", "set", "delete"] {
        let batch = json!([
            {"key": "q/ok", "verb": "set", "value": "1"},
            {"key": "_system/tokens/t1", "verb": verb, "value": "stolen"},
        ]);
        let response = client
            .post(node.url("/api/v1/query"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        expect_error(response, 403, "forbidden", "op 1").await;
    }
    let good = r#"{"key":"imp/ok","value":"fine","version":"1000-00000000000000a1"}"#;
    let bad = r#"{"key":"_system/tokens/t1","value":"stolen","version":"1001-00000000000000a1"}"#;
    let response = client
        .post(node.url("/api/v1/import"))
        .header("content-type", "application/x-ndjson")
        .body(format!("{good}\n{bad}\n"))
        .send()
        .await
        .unwrap();
    expect_error(response, 403, "forbidden", "import line 2").await;
    assert!(node.db.get("imp/ok").is_none() && node.db.get("q/ok").is_none());
    // The root cannot be deleted as a whole (a guard of its own), and a folder delete never reaches
    // reserved keys.
    let response = client
        .delete(node.url("/api/v1/kv/?recurse=true"))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "invalid_input", "whole key space").await;
    assert_reserved_intact(&node).await;
    node.stop().await;
}

/// Read an SSE stream until `until` shows up in what was read; all of it so far.
async fn read_events_until<S, B>(stream: &mut S, text: &mut String, until: &str)
where
    S: futures::Stream<Item = reqwest::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !text.contains(until) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{until:?} never arrived; got {text}"))
            .expect("stream ended")
            .unwrap();
        text.push_str(std::str::from_utf8(chunk.as_ref()).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_watch_passes_over_reserved_changes() {
    let node = node_with_reserved_keys().await;
    let response = node.client.get(node.url("/api/v1/watch/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    read_events_until(&mut stream, &mut text, "event: ready").await;
    node.merge_from_peer(&["_system/tokens/t3"]).await;
    node.put("after", "the marker").await;
    read_events_until(&mut stream, &mut text, "the marker").await;
    assert_hidden("the root watch", &text);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_falls_behind_is_told_it_lagged() {
    let node = Node::start().await;
    let response = node.client.get(node.url("/api/v1/watch/lag")).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    read_events_until(&mut stream, &mut text, "event: ready").await;
    // Far more than the ring (16,384 events) plus what the socket buffers take (4 KiB events) while the
    // test does not read: the subscription falls behind. One value shared by all entries keeps the test's
    // own memory small.
    let value = bytes::Bytes::from(vec![b'v'; 4096]);
    let ops: Vec<Op> = (0..24_000)
        .map(|i| Op::Put {
            key: format!("lag/k{i:05}"),
            value: value.clone(),
            content_type: "text/plain".into(),
            secret: false,
            cas: None,
            ttl: None,
            lease: None,
        })
        .collect();
    node.db.write(ops).await.unwrap();
    read_events_until(&mut stream, &mut text, "event: lagged").await;
    let lagged = text.split("event: lagged").nth(1).unwrap();
    assert!(lagged.trim_start().starts_with("data: {\"missed\":"), "{lagged:.80}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recursive_listings_past_the_bound_are_refused_and_page_instead() {
    let node = Node::start().await;
    let ops: Vec<Op> = (0..MAX_LISTING_ENTRIES + 5)
        .map(|i| Op::Put {
            key: format!("big/k{i:05}"),
            value: "v".into(),
            content_type: "text/plain".into(),
            secret: false,
            cas: None,
            ttl: None,
            lease: None,
        })
        .collect();
    node.db.write(ops).await.unwrap();
    node.merge_from_peer(&["_system/tokens/t1"]).await;
    for target in [
        "/api/v1/kv/big/?recurse=true",
        "/api/v1/kv/?tree=true",
        "/api/v1/kv/?recurse=true",
    ] {
        let response = node.client.get(node.url(target)).send().await.unwrap();
        expect_error(response, 413, "too_large", "10000").await;
    }
    let response = node
        .client
        .get(node.url("/api/v1/kv/?recurse=true"))
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "too_large", "?limit=").await;
    for bad in ["limit=0", "limit=10001", "limit=x", "limit=-1", "after=a//b"] {
        let response = node
            .client
            .get(node.url(&format!("/api/v1/kv/big/?recurse=true&{bad}")))
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_input", bad.split('=').next().unwrap()).await;
    }
    // A plain listing pages too (tests/listing.rs has the rest).
    let page = node.get_json("/api/v1/kv/big/?limit=5").await;
    assert_eq!(page["children"].as_array().unwrap().len(), 5, "{page}");
    assert_eq!(page["next"], "big/k00004");

    // Walk the listing and the tree page by page: every key once, in order.
    for (param, field) in [("recurse", "entries"), ("tree", "tree")] {
        let mut keys: Vec<String> = Vec::new();
        let mut after = String::new();
        let mut pages = 0;
        loop {
            let page = node
                .get_json(&format!("/api/v1/kv/big/?{param}=true&limit=3000{after}"))
                .await;
            pages += 1;
            match &page[field] {
                Value::Array(metas) => keys.extend(metas.iter().map(|m| m["key"].as_str().unwrap().to_string())),
                Value::Object(tree) => keys.extend(tree.keys().map(|k| format!("big/{k}"))),
                other => panic!("{param}: {other}"),
            }
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        let expected: Vec<String> = (0..MAX_LISTING_ENTRIES + 5).map(|i| format!("big/k{i:05}")).collect();
        assert_eq!(pages, 4, "{param}");
        assert_eq!(keys, expected, "{param}");
    }
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// Memory held for an idle watcher, on a real `cave` process

/// Resident and peak resident memory of a process, in bytes, from `/proc/PID/status`.
fn rss_bytes(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn launch(data_dir: &Path) -> (Process, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_cave"))
        .env_clear()
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .args(["--grpc-addr", "127.0.0.1:0", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cave");
    (Process(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

/// An SSE client that reads up to the `ready` event and then nothing: the server's only way to keep up
/// with it would be to buffer.
fn idle_watcher(addr: SocketAddr) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(
            format!("GET /api/v1/watch/ HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !common::contains_bytes(&seen, b"event: ready") {
        let n = stream.read(&mut buf).expect("watch answered");
        assert!(n > 0, "watch closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_watcher_does_not_pin_the_values_written_meanwhile() {
    const VALUE_BYTES: usize = 700 << 10;
    const PUTS: usize = 1_000; // 700 MB of values through one key, while the watcher reads nothing
    const ALLOWED_GROWTH_BYTES: u64 = 200 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (process, addr) = launch(&dir.path().join("data"));
    let base = format!("http://{addr}");
    let client = common::client();
    let deadline = Instant::now() + DEADLINE;
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "cave did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let value = bytes::Bytes::from(vec![b'v'; VALUE_BYTES]);
    let url = format!("{base}/api/v1/kv/big");
    let put = || async {
        let response = client.put(&url).body(value.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200);
    };
    // Warm up (allocator arenas, SQLite cache, HTTP buffers) before the baseline.
    for _ in 0..20 {
        put().await;
    }
    let pid = process.0.id();
    let (baseline, _) = rss_bytes(pid);
    let _watcher = idle_watcher(addr);
    let started = Instant::now();
    for _ in 0..PUTS {
        put().await;
    }
    let (now, peak) = rss_bytes(pid);
    println!(
        "{PUTS} PUTs of {VALUE_BYTES} bytes in {:?}: RSS {} MB -> {} MB (peak {} MB)",
        started.elapsed(),
        baseline >> 20,
        now >> 20,
        peak >> 20
    );
    assert!(
        peak.saturating_sub(baseline) <= ALLOWED_GROWTH_BYTES,
        "RSS grew from {} MB to a peak of {} MB with an idle watcher",
        baseline >> 20,
        peak >> 20
    );
}

// ---------------------------------------------------------------------------------------------------------
// Reserved keys still replicate

/// A cluster member in this process, without HTTP: only its database and replication.
async fn member(
    key: &cave::secrets::MasterKey,
    seeds: Vec<String>,
) -> (
    tempfile::TempDir,
    cave::node::Node,
    std::sync::Arc<cave::cluster::Cluster>,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let config = Config {
        mode: cave::config::Mode::Prod,
        data_dir: dir.path().join("data"),
        cluster_key: Some(key.clone()),
        peers: seeds,
        mdns: false,
        grpc_addr: addr,
        anti_entropy_interval: Duration::from_millis(300),
        discovery_window: Duration::ZERO,
        ..Config::default()
    };
    let node = cave::node::Node::open(config).await.unwrap();
    let cluster = node.start_cluster(Some(grpc)).await.unwrap();
    (dir, node, cluster, addr.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_keys_replicate_between_members() {
    let key = cave::secrets::MasterKey::generate();
    let (_a_dir, a, a_cluster, a_addr) = member(&key, vec![]).await;
    // Written before the peer exists: only anti-entropy can bring it over.
    let foreign = Version::new(a.db.hlc().tick_after(0).unwrap(), NodeId(0x99));
    a.db.merge(vec![Entry::value("_system/tokens/old", "by anti-entropy", foreign)])
        .await
        .unwrap();
    let (_b_dir, b, b_cluster, _) = member(&key, vec![a_addr]).await;
    let deadline = Instant::now() + DEADLINE;
    let alive = |cluster: &cave::cluster::Cluster| {
        cluster.with_core(|core, _| {
            core.membership()
                .members()
                .filter(|m| m.status.as_str() == "alive")
                .count()
        })
    };
    while alive(&a_cluster) < 1 {
        assert!(Instant::now() < deadline, "the members never met");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Written by this node (as Cave's own features will): the change stream hands it to the deltas (or the
    // next round brings it; either way the replication paths carry reserved keys).
    let local = Version::new(a.db.hlc().tick_after(0).unwrap(), a.db.node_id());
    a.db.merge(vec![Entry::value("_system/tokens/new", "by delta", local)])
        .await
        .unwrap();
    for (reserved, value) in [
        ("_system/tokens/old", "by anti-entropy"),
        ("_system/tokens/new", "by delta"),
    ] {
        while b.db.get(reserved).is_none() {
            assert!(Instant::now() < deadline, "{reserved} never reached the peer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(b.db.get(reserved).unwrap().value, value.as_bytes());
    }
    for (cluster, node) in [(b_cluster, b), (a_cluster, a)] {
        cluster.stop().await;
        node.close().await.unwrap();
    }
}
