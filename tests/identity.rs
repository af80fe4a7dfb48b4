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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cave --mode=prod --mdns=false` on `dir`, HTTP on `http`, gRPC on `grpc`, with `env` and `extra` flags.
fn launch(dir: &Path, http: u16, grpc: u16, env: &[(&str, &str)], extra: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cave"))
        .env_clear()
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
        let client = common::client();
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
        let response = common::client().get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

fn keygen() -> String {
    cave::secrets::MasterKey::generate().to_base64()
}

/// Start a prod node on `dir` and expect it to refuse: exit status 2 and a message naming each of `needles`.
async fn refused(dir: &Path, env: &[(&str, &str)], extra: &[&str], needles: &[&str]) {
    let mut node = launch(dir, free_port(), free_port(), env, extra);
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
    let mut node = launch(&dir, free_port(), free_port(), &[("CAVE_CLUSTER_KEY", &key)], &[]);
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
    let mut node = launch(&dir, free_port(), free_port(), &[], &file_flag);
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
    let mut node = launch(&dir, free_port(), free_port(), &[], &["--new-cluster"]);
    node.healthy().await;
    let (_, info) = node.json("/api/v1/system/info").await;
    let new_id = info["cluster_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, cluster_id);
    node.stop().await;
    assert_eq!(std::fs::read_to_string(dir.join("cluster.id")).unwrap().trim(), new_id);
    // ... whose key is now in the data dir: the next start needs no flag.
    let mut node = launch(&dir, free_port(), free_port(), &[], &[]);
    node.healthy().await;
    node.stop().await;
}

/// Every node lists the other two as alive.
async fn converged(nodes: &[Proc]) -> bool {
    for node in nodes {
        let Ok(response) = common::client().get(node.url("/api/v1/cluster/nodes")).send().await else {
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
    let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
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
    let nowhere = format!("127.0.0.1:{}", free_port());
    let flags = ["--peers", &nowhere, "--discovery-window", "0s"];
    for unready in [false, true] {
        let mut extra = flags.to_vec();
        if unready {
            extra.push("--isolated-unready");
        }
        let dir = tmp.path().join(format!("n{unready}"));
        let mut node = launch(&dir, free_port(), free_port(), &env, &extra);
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
