//! Clock discipline end to end: versions from the future are refused wherever they come in, and a node
//! whose clock is the outlier of its cluster is fenced (real processes, one of them under libfaketime).
//!
//! The faketime tests need libfaketime (`apt-get install faketime`); without it they print a "skipped" line
//! and pass, unless `CAVE_REQUIRE_TOOLS=1` (set by `.ci/run`) makes that a failure.

mod common;

use common::child::free_port;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{expect_error, start, TestNode};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

/// Where Debian and Ubuntu put the multi-threaded libfaketime.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// Deadline of every wait of the faketime tests.
const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

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
    format!("{}-0000000000000001", (now_ms() + ahead_ms) << 16)
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

/// A data directory holding versions from the future (as the old import let in): the node refuses to start,
/// naming them and the way out; `cave repair-clock` restamps them, keeps the old database, and the node then
/// starts, serves the values and takes new writes of those keys (before, it started and every later write
/// was stamped after the far-future version, or not at all).
#[tokio::test(flavor = "multi_thread")]
async fn a_node_holding_versions_from_the_future_refuses_to_start_until_repaired() {
    use cave::crdt::{hlc::from_physical_ms, Entry, NodeId, Version};
    use cave::storage::{SqliteStore, Store};

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let node = TestNode::start_in(&data, |_| {}).await;
    node.put("ok", "fine").await;
    let config = node.config.clone();
    node.stop().await;
    let store = SqliteStore::open(&data.join(cave::node::DB_FILE), config.durability)
        .await
        .unwrap();
    let year_ahead = from_physical_ms(now_ms() + 365 * 24 * 3_600_000);
    store
        .apply(&[
            Entry::value("pinned", "p", Version::new(u64::MAX, NodeId(1))),
            Entry::value("year", "y", Version::new(year_ahead, NodeId(1))),
        ])
        .await
        .unwrap();
    store.close().await.unwrap();

    let err = match cave::node::Node::open(config.clone()).await {
        Ok(_) => panic!("a node with versions from the future started"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert_eq!(err.code(), "clock_skew", "{message}");
    for needle in [
        "pinned at 18446744073709551615",
        "year at",
        "2 stored version(s)",
        "cave repair-clock",
    ] {
        assert!(message.contains(needle), "{needle:?} in {message}");
    }

    let repair = |dir: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_cave"))
            .env_clear()
            .args(["repair-clock", "--data-dir", dir.to_str().unwrap()])
            .output()
            .expect("cave repair-clock")
    };
    let out = repair(&data);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("restamped 2 entries") && stdout.contains("pinned was at"),
        "{stdout}"
    );
    assert!(data.join(cave::repair::BACKUP_FILE).exists());
    let again = repair(&data);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to repair"));

    let node = TestNode::start_in(&data, |_| {}).await;
    assert_eq!(node.get("pinned").await.as_deref(), Some(&b"p"[..]));
    assert_eq!(node.get("year").await.as_deref(), Some(&b"y"[..]));
    assert_eq!(node.get("ok").await.as_deref(), Some(&b"fine"[..]));
    node.put("pinned", "later").await;
    assert_eq!(node.get("pinned").await.as_deref(), Some(&b"later"[..]));
    node.stop().await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ------------------------------------------------------------------------------------ real processes

/// libfaketime, or `None` after printing why the calling test is skipped (a panic with CAVE_REQUIRE_TOOLS=1).
fn libfaketime(test: &str) -> Option<&'static str> {
    if Path::new(LIBFAKETIME).exists() {
        return Some(LIBFAKETIME);
    }
    if std::env::var("CAVE_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("CAVE_REQUIRE_TOOLS=1 but {LIBFAKETIME} is missing (apt-get install faketime)");
    }
    eprintln!("skipped {test}: {LIBFAKETIME} is missing (apt-get install faketime)");
    None
}

/// One `cave` process of a three-node cluster. Killed when dropped.
struct Proc {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-node cluster of processes on loopback; node `skewed` (0-based) may run under libfaketime.
struct Trio {
    key: String,
    dirs: Vec<PathBuf>,
    http: Vec<u16>,
    grpc: Vec<u16>,
    procs: Vec<Option<Proc>>,
    client: reqwest::Client,
    _tmp: tempfile::TempDir,
}

impl Trio {
    fn new() -> Trio {
        let out = Command::new(env!("CARGO_BIN_EXE_cave"))
            .arg("keygen")
            .output()
            .expect("cave keygen");
        let tmp = tempfile::tempdir().unwrap();
        Trio {
            key: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            dirs: (0..3).map(|i| tmp.path().join(format!("n{i}"))).collect(),
            http: (0..3).map(|_| free_port()).collect(),
            grpc: (0..3).map(|_| free_port()).collect(),
            procs: vec![None, None, None],
            client: common::client(),
            _tmp: tmp,
        }
    }

    /// Start node `i`, its clock shifted by `faketime` (e.g. `+30s`) if given.
    fn start(&mut self, i: usize, faketime: Option<(&str, &str)>) {
        let peers: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("127.0.0.1:{}", self.grpc[j]))
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cave"));
        cmd.env_clear()
            .env("CAVE_CLUSTER_KEY", &self.key)
            .args(["--data-dir", self.dirs[i].to_str().unwrap()])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http[i])])
            .args(["--grpc-addr", &format!("127.0.0.1:{}", self.grpc[i])])
            .args(["--peers", &peers.join(",")])
            .args(["--anti-entropy-interval", "500ms", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((lib, shift)) = faketime {
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME", shift)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        let mut child = cmd.spawn().expect("spawn cave");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        self.procs[i] = Some(Proc {
            child,
            base: format!("http://127.0.0.1:{}", self.http[i]),
            log,
        });
    }

    fn stop(&mut self, i: usize) {
        self.procs[i] = None;
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.procs[i].as_ref().expect("running").base)
    }

    fn log(&self, i: usize) -> String {
        self.procs[i].as_ref().expect("running").log.lock().unwrap().join("\n")
    }

    async fn put(&self, i: usize, key: &str, value: &str) -> (u16, Value) {
        let response = self
            .client
            .put(self.url(i, &format!("/api/v1/kv/{key}")))
            .body(value.to_string())
            .send()
            .await;
        match response {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    async fn get(&self, i: usize, key: &str) -> Option<reqwest::Response> {
        self.client
            .get(self.url(i, &format!("/api/v1/kv/{key}")))
            .send()
            .await
            .ok()
    }

    async fn value(&self, i: usize, key: &str) -> Option<String> {
        let r = self.get(i, key).await?;
        if r.status() != 200 {
            return None;
        }
        r.text().await.ok()
    }

    async fn readyz(&self, i: usize) -> Option<(u16, Value)> {
        let r = self.client.get(self.url(i, "/readyz")).send().await.ok()?;
        Some((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
    }

    /// Wait until `cond` holds, or fail naming `what` and node `i`'s log.
    async fn until<F, Fut>(&self, i: usize, what: &str, mut cond: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !cond().await {
            assert!(
                started.elapsed() < DEADLINE,
                "{what}: not within {DEADLINE:?}; log of node {i}:\n{}",
                self.log(i)
            );
            tokio::time::sleep(POLL).await;
        }
        started.elapsed()
    }

    /// Wait until node `i` answers ready, and its writes are taken.
    async fn until_serving(&self, i: usize) {
        self.until(i, "ready", || async {
            self.readyz(i).await.is_some_and(|(s, _)| s == 200)
        })
        .await;
    }

    /// Wait until every node shows `value` for `key`.
    async fn until_everywhere(&self, key: &str, value: &str) {
        for i in 0..3 {
            let what = format!("node {i} shows {key}={value}");
            self.until(i, &what, || async {
                self.value(i, key).await.as_deref() == Some(value)
            })
            .await;
        }
    }
}

/// The sequences with node 3 skewed by `shift`: started with the others, it is fenced (503
/// `clock_skew` to writes, `/readyz` 503 `clock_skew`, reads marked stale) within 5 s; a write on node 1
/// next to one on node 3 ends as node 1's write on every node (before: node 3's write was acknowledged, and
/// the earlier of the two won everywhere after 30 s); restarted with a correct clock it serves again.
async fn fenced_while_skewed(test: &str, shift: &str) {
    let Some(lib) = libfaketime(test) else { return };
    let mut trio = Trio::new();
    trio.start(0, None);
    trio.start(1, None);
    trio.until_serving(0).await;
    trio.until_serving(1).await;
    let started = Instant::now();
    trio.start(2, Some((lib, shift)));
    trio.until(2, "node 3 fenced", || async {
        trio.readyz(2)
            .await
            .is_some_and(|(s, body)| s == 503 && body["status"] == "clock_skew")
    })
    .await;
    let (status, body) = trio.put(2, "probe", "x").await;
    assert_eq!((status, body["code"].as_str()), (503, Some("clock_skew")), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fenced only after {:?}",
        started.elapsed()
    );
    assert!(body["error"].as_str().unwrap().contains("ms off"), "{body}");
    // Imports too: a fenced clock can judge no drift rule.
    let response = trio
        .client
        .post(trio.url(2, "/api/v1/import"))
        .header(CONTENT_TYPE, "application/x-ndjson")
        .body(format!("{}\n", line("imported", "v", "1-0000000000000001")))
        .send()
        .await
        .unwrap();
    expect_error(response, 503, "clock_skew", "ms off").await;

    // The sequence: the slow case writes on node 1 first, the fast case on node 3 first.
    let (first, second) = if shift.starts_with('-') { (0, 2) } else { (2, 0) };
    let a = trio.put(first, "k", &format!("from-{}", first + 1)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = trio.put(second, "k", &format!("from-{}", second + 1)).await;
    assert_eq!([a.0, b.0].iter().filter(|s| **s == 200).count(), 1, "{a:?} {b:?}");
    assert_eq!(
        if first == 2 { (a.0, b.0) } else { (b.0, a.0) },
        (503, 200),
        "{a:?} {b:?}"
    );
    trio.until_everywhere("k", "from-1").await;
    // Reads on the fenced node go on, marked as possibly stale.
    let read = trio.get(2, "k").await.expect("GET");
    assert_eq!(
        read.headers().get("x-cave-stale").map(|v| v.to_str().unwrap()),
        Some("clock_skew")
    );
    let nodes: Value = trio
        .client
        .get(trio.url(0, "/api/v1/cluster/nodes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let skewed: Vec<&Value> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["clock_skewed"] == true)
        .collect();
    assert_eq!(skewed.len(), 1, "exactly the skewed member is flagged: {nodes}");
    assert!(skewed[0]["clock_offset_ms"].as_i64().unwrap().abs() > 25_000, "{nodes}");
    assert!(trio.log(2).contains("refusing writes"), "{}", trio.log(2));

    // Back with a correct clock: serving again, its writes replicate, and its peers take it for alive (its
    // new incarnation, from the correct clock, may be lower than the fast one was).
    let (id, old_incarnation) = (skewed[0]["id"].clone(), skewed[0]["incarnation"].clone());
    trio.stop(2);
    trio.start(2, None);
    trio.until_serving(2).await;
    trio.until(0, "node 1 sees the restarted node 3 alive", || async {
        let nodes: Value = trio
            .client
            .get(trio.url(0, "/api/v1/cluster/nodes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        nodes.as_array().unwrap().iter().any(|n| {
            n["id"] == id && n["status"] == "alive" && n["incarnation"] != old_incarnation && n["clock_skewed"] == false
        })
    })
    .await;
    let (status, body) = trio.put(2, "k", "from-3-fixed").await;
    assert_eq!(status, 200, "{body}");
    trio.until_everywhere("k", "from-3-fixed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_30s_fast_is_fenced_and_the_later_write_wins_everywhere() {
    fenced_while_skewed("a_node_30s_fast_is_fenced", "+30s").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_30s_slow_is_fenced_and_the_later_write_wins_everywhere() {
    fenced_while_skewed("a_node_30s_slow_is_fenced", "-30s").await;
}
