//! Cluster identity and start-up, with the built binary: a data directory remembers its cluster (a restart
//! without the key, or with another one, refuses to start), the key from a file, three nodes started at
//! once converge within 2 s, and a node whose seeds are unreachable says it is isolated.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// A `cave` process, killed if dropped while running.
struct Proc {
    child: Child,
    http: u16,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cave --mode=prod --mdns=false` on `dir`, HTTP on `http`, gRPC on `grpc`, with `env` and `extra` flags.
fn launch(dir: &Path, http: u16, grpc: u16, env: &[(&str, &str)], extra: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cave"))
        .env_clear()
        .env("CAVE_ACL_ROOT_TOKEN", common::ROOT_TOKEN)
        .envs(env.iter().copied())
        .args(["--mode=prod", "--mdns=false", "--data-dir", dir.to_str().unwrap()])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cave");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Proc {
        child,
        http,
        log,
        reader: Some(reader),
    }
}

impl Proc {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until `/healthz` answers.
    async fn healthy(&mut self) {
        let client = common::client_with_token(common::ROOT_TOKEN);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("cave exited ({status}):\n{}", self.finish_log());
            }
            let probe = client.get(self.url("/healthz")).send().await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "not healthy in time:\n{}", self.log_text());
            tokio::time::sleep(POLL).await;
        }
    }

    /// Wait for the process to exit: its exit code and full log.
    async fn exit(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.finish_log());
            }
            assert!(Instant::now() < deadline, "did not exit:\n{}", self.log_text());
            tokio::time::sleep(POLL).await;
        }
    }

    async fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
        let (code, log) = self.exit().await;
        assert_eq!(code, Some(0), "{log}");
    }

    fn finish_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log_text()
    }

    async fn json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = common::client_with_token(common::ROOT_TOKEN)
            .get(self.url(path))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

fn keygen() -> String {
    cave::secrets::MasterKey::generate().to_base64()
}

/// Start a prod node on `dir` and expect it to refuse: exit status 2 and a message naming each of `needles`.
async fn refused(dir: &Path, env: &[(&str, &str)], extra: &[&str], needles: &[&str]) {
    let mut node = launch(dir, common::child::free_port(), common::child::free_port(), env, extra);
    let (code, log) = node.exit().await;
    assert_eq!(code, Some(2), "{log}");
    for needle in needles {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_without_its_key_or_with_another_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("member");
    let key = keygen();
    let mut node = launch(
        &dir,
        common::child::free_port(),
        common::child::free_port(),
        &[("CAVE_CLUSTER_KEY", &key)],
        &[],
    );
    node.healthy().await;
    let (_, info) = node.json("/api/v1/system/info").await;
    let cluster_id = info["cluster_id"].as_str().unwrap().to_string();
    node.stop().await;
    assert_eq!(
        std::fs::read_to_string(dir.join("cluster.id")).unwrap().trim(),
        cluster_id,
        "the data dir records its cluster"
    );

    // The restart of the issue: no key. It used to found a new cluster on the old data.
    refused(
        &dir,
        &[],
        &[],
        &[&cluster_id, "CAVE_CLUSTER_KEY", "--cluster-key-file", "--new-cluster"],
    )
    .await;
    assert!(!dir.join("cluster.key").exists(), "a refused start makes no key");
    // Another cluster's key.
    refused(
        &dir,
        &[("CAVE_CLUSTER_KEY", &keygen())],
        &[],
        &[&cluster_id, "--new-cluster"],
    )
    .await;

    // The right key, from a file as a secrets manager mounts it (trailing newline).
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let file_flag = ["--cluster-key-file", key_file.to_str().unwrap()];
    let mut node = launch(
        &dir,
        common::child::free_port(),
        common::child::free_port(),
        &[],
        &file_flag,
    );
    node.healthy().await;
    let (_, info) = node.json("/api/v1/system/info").await;
    assert_eq!(info["cluster_id"], cluster_id.as_str());
    node.stop().await;
    // Both a key and a key file: which one is meant?
    refused(
        &dir,
        &[("CAVE_CLUSTER_KEY", &key)],
        &file_flag,
        &["cluster_key_file", "one way only"],
    )
    .await;

    // Founding a new cluster on this data, explicitly.
    let mut node = launch(
        &dir,
        common::child::free_port(),
        common::child::free_port(),
        &[],
        &["--new-cluster"],
    );
    node.healthy().await;
    let (_, info) = node.json("/api/v1/system/info").await;
    let new_id = info["cluster_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, cluster_id);
    node.stop().await;
    assert_eq!(std::fs::read_to_string(dir.join("cluster.id")).unwrap().trim(), new_id);
    // ... whose key is now in the data dir: the next start needs no flag.
    let mut node = launch(&dir, common::child::free_port(), common::child::free_port(), &[], &[]);
    node.healthy().await;
    node.stop().await;
}

/// Every node lists the other two as alive.
async fn converged(nodes: &[Proc]) -> bool {
    for node in nodes {
        let Ok(response) = common::client_with_token(common::ROOT_TOKEN)
            .get(node.url("/api/v1/cluster/nodes"))
            .send()
            .await
        else {
            return false;
        };
        let Ok(list) = response.json::<Vec<serde_json::Value>>().await else {
            return false;
        };
        if list.iter().filter(|n| n["status"] == "alive").count() != nodes.len() - 1 {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_at_once_converge_within_two_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen();
    let env = [("CAVE_CLUSTER_KEY", key.as_str())];
    let grpc: Vec<u16> = (0..3).map(|_| common::child::free_port()).collect();
    let http: Vec<u16> = (0..3).map(|_| common::child::free_port()).collect();
    // The README's start: node 2 seeds with node 1, node 3 with node 2, all at once.
    let started = Instant::now();
    let nodes: Vec<Proc> = (0..3)
        .map(|i| {
            let peers = if i == 0 {
                Vec::new()
            } else {
                vec!["--peers".to_string(), format!("127.0.0.1:{}", grpc[i - 1])]
            };
            let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
            launch(&tmp.path().join(format!("n{i}")), http[i], grpc[i], &env, &peers)
        })
        .collect();
    let deadline = started + Duration::from_secs(10);
    while !converged(&nodes).await {
        assert!(
            Instant::now() < deadline,
            "not converged after 10 s:\n{}",
            nodes.iter().map(Proc::log_text).collect::<Vec<_>>().join("\n---\n")
        );
        tokio::time::sleep(POLL).await;
    }
    let took = started.elapsed();
    eprintln!("three nodes started at once converged in {took:?}");
    assert!(took <= Duration::from_secs(2), "converged only after {took:?}");
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_seeds_are_unreachable_says_it_is_isolated() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen();
    let env = [("CAVE_CLUSTER_KEY", key.as_str())];
    let nowhere = format!("127.0.0.1:{}", common::child::free_port());
    let flags = ["--peers", &nowhere, "--discovery-window", "0s"];
    for unready in [false, true] {
        let mut extra = flags.to_vec();
        if unready {
            extra.push("--isolated-unready");
        }
        let dir = tmp.path().join(format!("n{unready}"));
        let mut node = launch(
            &dir,
            common::child::free_port(),
            common::child::free_port(),
            &env,
            &extra,
        );
        node.healthy().await;
        let deadline = Instant::now() + DEADLINE;
        let (status, body) = loop {
            let (status, body) = node.json("/readyz").await;
            if body["status"] == "isolated" || Instant::now() > deadline {
                break (status, body);
            }
            tokio::time::sleep(POLL).await;
        };
        assert_eq!(body["status"], "isolated", "{body}");
        assert_eq!(status, if unready { 503 } else { 200 });
        while !node.log_text().contains("isolated: no seed peer answers") {
            assert!(Instant::now() < deadline, "{}", node.log_text());
            tokio::time::sleep(POLL).await;
        }
        assert!(node.log_text().contains(&nowhere), "the log names the seeds");
        node.stop().await;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

async fn put(node: &Proc, key: &str) -> u16 {
    let url = node.url(&format!("/api/v1/kv/{key}"));
    common::client_with_token(common::ROOT_TOKEN)
        .put(url)
        .body("v")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn metric(node: &Proc, name: &str) -> String {
    let text = common::client_with_token(common::ROOT_TOKEN)
        .get(node.url("/api/v1/perf/metrics"))
        .send()
        .await
        .unwrap();
    let text = text.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .to_string()
}

fn reset_node_id(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cave"))
        .env_clear()
        .args(["reset-node-id", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_data_dir_running_beside_its_original_stops_serving_until_given_a_new_id() {
    let tmp = tempfile::tempdir().unwrap();
    let (original, copy) = (tmp.path().join("original"), tmp.path().join("copy"));
    let key = keygen();
    let env = [("CAVE_CLUSTER_KEY", key.as_str())];
    let window = ["--discovery-window", "0s"];
    let mut a = launch(
        &original,
        common::child::free_port(),
        common::child::free_port(),
        &env,
        &window,
    );
    a.healthy().await;
    assert_eq!(put(&a, "before").await, 200);
    a.stop().await;
    copy_dir(&original, &copy);

    let a_grpc = common::child::free_port();
    let mut a = launch(&original, common::child::free_port(), a_grpc, &env, &window);
    a.healthy().await;
    let (_, info) = a.json("/api/v1/system/info").await;
    let id = info["node_id"].as_str().unwrap().to_string();
    // The original has been up for a while when the copy starts (so it is told apart as the older).
    let deadline = Instant::now() + DEADLINE;
    while a.json("/api/v1/system/info").await.1["uptime_seconds"]
        .as_u64()
        .unwrap()
        < 5
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seed = format!("127.0.0.1:{a_grpc}");
    let mut b = launch(
        &copy,
        common::child::free_port(),
        common::child::free_port(),
        &env,
        &["--peers", &seed, "--discovery-window", "0s"],
    );
    b.healthy().await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = b.json("/readyz").await;
        if body["status"] == "duplicate_node_id" {
            assert_eq!(status, 503);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the copy still serves: {body}\n{}",
            b.log_text()
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(put(&b, "from-copy").await, 503, "the copy refuses writes");
    assert_eq!(put(&a, "from-original").await, 200, "the original serves on");
    assert_eq!(a.json("/readyz").await.1["status"], "ready");
    assert!(b.log_text().contains("cave reset-node-id"), "{}", b.log_text());
    while !a.log_text().contains("another live node runs under this node's id") {
        assert!(Instant::now() < deadline, "{}", a.log_text());
        tokio::time::sleep(POLL).await;
    }
    for node in [&a, &b] {
        assert_eq!(
            metric(node, "cave_duplicate_node_id_total").await,
            "cave_duplicate_node_id_total 1"
        );
    }
    let refused = reset_node_id(&copy);
    assert!(!refused.status.success(), "the data dir is locked while the copy runs");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use"));
    b.stop().await;

    let reset = reset_node_id(&copy);
    let said = String::from_utf8_lossy(&reset.stdout);
    assert!(
        reset.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(said.contains(&id), "{said}");
    let mut b = launch(
        &copy,
        common::child::free_port(),
        common::child::free_port(),
        &env,
        &["--peers", &seed, "--discovery-window", "0s"],
    );
    b.healthy().await;
    let (_, info) = b.json("/api/v1/system/info").await;
    assert_ne!(info["node_id"], id.as_str(), "a fresh id");
    assert_eq!(put(&b, "after-reset").await, 200);
    let kept = common::client_with_token(common::ROOT_TOKEN)
        .get(b.url("/api/v1/kv/before"))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200, "the data is kept");
    let deadline = Instant::now() + DEADLINE;
    let nodes = [a, b];
    while !converged(&nodes).await {
        assert!(Instant::now() < deadline, "the copy did not join as a new member");
        tokio::time::sleep(POLL).await;
    }
    for node in nodes {
        node.stop().await;
    }
}
