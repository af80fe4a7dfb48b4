//! Shared helpers of the integration tests: a real node served in-process on a loopback port, and small
//! HTTP utilities around it.
//!
//! Each test binary uses only part of this module, so unused items are expected.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cave::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long a node may take to answer `/healthz` after it was started.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Upper bound of any single request a test makes (a hang fails the test instead of stalling it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The root token the test helpers give a node that has access control on and no root token configured.
pub const ROOT_TOKEN: &str = "test-root-token-0123456789abcdef";

/// A loopback listener for a member's replication port, and its address (a seed for the others).
pub fn grpc_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a gRPC port");
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// A prod member of a test cluster with its data in `dir`, serving replication on `grpc`, seeded with
/// `seeds`, anti-entropy every 500 ms and no discovery window (the root token as [`TestNode`] gives it).
pub async fn prod_member(
    dir: &tempfile::TempDir,
    key: &cave::secrets::MasterKey,
    grpc: std::net::TcpListener,
    seeds: Vec<String>,
) -> TestNode {
    let config = Config {
        mode: cave::config::Mode::Prod,
        data_dir: dir.path().join("data"),
        cluster_key: Some(key.clone()),
        peers: seeds,
        mdns: false,
        grpc_addr: grpc.local_addr().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        anti_entropy_interval: Duration::from_millis(500),
        discovery_window: Duration::ZERO,
        ..Config::default()
    };
    TestNode::start_config_with_grpc(config, Some(grpc)).await
}

/// A prod cluster of `dirs.len()` members under `key`, each seeded with all the others (see [`prod_member`]).
pub async fn prod_cluster(dirs: &[tempfile::TempDir], key: &cave::secrets::MasterKey) -> Vec<TestNode> {
    let listeners: Vec<_> = dirs.iter().map(|_| grpc_listener()).collect();
    let addrs: Vec<String> = listeners.iter().map(|(_, a)| a.clone()).collect();
    let mut nodes = Vec::new();
    for (i, ((grpc, _), dir)) in listeners.into_iter().zip(dirs).enumerate() {
        let seeds = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.clone())
            .collect();
        nodes.push(prod_member(dir, key, grpc, seeds).await);
    }
    nodes
}

/// An HTTP client that ignores proxy settings of the environment and never waits forever.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("reqwest client")
}

/// [`client`] sending `token` with every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("token header");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .default_headers(headers)
        .build()
        .expect("reqwest client")
}

/// A node served by this process. The data directory is owned by the caller (keep the `TempDir` alive
/// separately), so a node can be stopped and started again on the same data.
pub struct TestNode {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The address the node listens on.
    pub addr: SocketAddr,
    /// A client for this node; with access control on, it sends the root token.
    pub client: reqwest::Client,
    /// The configuration the node runs with (its `data_dir` included).
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    /// Answers once the node has stopped (its runtime dropped too); closed without an answer if it panicked.
    done: Option<oneshot::Receiver<cave::Result<()>>>,
}

/// A fresh data directory and a node serving it with the dev defaults.
pub async fn start() -> (tempfile::TempDir, TestNode) {
    start_with(|_| {}).await
}

/// A fresh data directory and a node serving it, with `tweak` applied to the dev defaults.
pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> (tempfile::TempDir, TestNode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start_in(&dir.path().join("data"), tweak).await;
    (dir, node)
}

/// A fresh data directory and a prod-mode node alone in its cluster: access control on (its client carries
/// [`ROOT_TOKEN`]), a cluster key of its own, no mDNS, no discovery wait, its own gRPC port.
pub async fn start_prod() -> (tempfile::TempDir, TestNode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let config = Config {
        mode: cave::config::Mode::Prod,
        data_dir: dir.path().join("data"),
        cluster_key: Some(cave::secrets::MasterKey::generate()),
        mdns: false,
        grpc_addr: grpc.local_addr().expect("local addr"),
        discovery_window: Duration::ZERO,
        ..Config::default()
    };
    let node = TestNode::start_config_with_grpc(config, Some(grpc)).await;
    (dir, node)
}

impl TestNode {
    /// Serve a node on `data_dir` (created if missing) with `tweak` applied to the dev defaults.
    pub async fn start_in(data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> TestNode {
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            ..Config::default()
        };
        tweak(&mut config);
        TestNode::start_config(config).await
    }

    /// Serve a node with exactly this configuration (its `http_addr` is ignored: a free port is used).
    ///
    /// The node runs on a thread of its own, in a runtime of its own, rather than in a `tokio::spawn`ed
    /// task: the future of `cave::node::serve` is not `Send` (see `serve_on_own_thread`).
    pub async fn start_config(config: Config) -> TestNode {
        TestNode::start_config_with_grpc(config, None).await
    }

    /// [`TestNode::start_config`] with a bound gRPC listener for a cluster member (its address must be in
    /// `config.grpc_addr`, so that a restart binds the same port again).
    /// With access control on (prod mode) and no root token configured, the node gets [`ROOT_TOKEN`].
    pub async fn start_config_with_grpc(mut config: Config, grpc: Option<std::net::TcpListener>) -> TestNode {
        if config.acl_enabled() && config.acl_root_token.is_none() {
            config.acl_root_token = Some(cave::acl::token::SecretToken::parse(ROOT_TOKEN).unwrap());
        }
        let client = match &config.acl_root_token {
            Some(token) if config.acl_enabled() => client_with_token(token.expose()),
            _ => client(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        config.http_addr = addr;
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender also shuts down: a panicking test does not leave a node behind.
            let _ = rx.await;
        };
        let done = serve_on_own_thread(config.clone(), listener, grpc, shutdown);
        let mut node = TestNode {
            base: format!("http://{addr}"),
            addr,
            client,
            config,
            shutdown: Some(tx),
            done: Some(done),
        };
        node.wait_ready().await;
        node
    }

    /// Poll `/healthz` until it answers 200; fail early if the node stopped (e.g. it refused to open).
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let url = self.url("/healthz");
        loop {
            match self.done.as_mut().expect("running").try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {}
                Ok(result) => panic!("node stopped before it became ready: {result:?}"),
                Err(oneshot::error::TryRecvError::Closed) => panic!("node panicked before it became ready"),
            }
            let probe = self.client.get(&url).timeout(Duration::from_millis(500)).send().await;
            if matches!(&probe, Ok(response) if response.status() == reqwest::StatusCode::OK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node at {} not ready in time: {probe:?}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The body of `GET path` as text, whatever the status.
    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of every sample of a metric family (all label sets) in `/api/v1/perf/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        self.text("/api/v1/perf/metrics")
            .await
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// URL of a key (already percent-encoded as it should appear in the path), plus an optional query.
    pub fn kv(&self, key_and_query: &str) -> String {
        self.url(&format!("/api/v1/kv/{key_and_query}"))
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// PUT raw bytes to a key and expect 200; returns the new version.
    pub async fn put(&self, key: &str, value: impl Into<reqwest::Body>) -> String {
        let response = self.client.put(self.kv(key)).body(value).send().await.expect("PUT");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "PUT {key}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["version"].as_str().expect("version").to_string()
    }

    /// PUT a secret and expect 200; returns the new version.
    pub async fn put_secret(&self, key: &str, value: &str) -> String {
        let response = self
            .client
            .put(self.kv(&format!("{key}?secret=true")))
            .body(value.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "PUT secret {key}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["version"].as_str().expect("version").to_string()
    }

    /// DELETE a key and expect 200; returns the tombstone's version.
    pub async fn delete(&self, key: &str) -> String {
        let response = self.client.delete(self.kv(key)).send().await.expect("DELETE");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "DELETE {key}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["version"].as_str().expect("version").to_string()
    }

    /// GET a key: `Some(bytes)` on 200, `None` on 404, a failure otherwise.
    pub async fn get(&self, key_and_query: &str) -> Option<Vec<u8>> {
        let response = self.client.get(self.kv(key_and_query)).send().await.expect("GET");
        match response.status().as_u16() {
            200 => Some(response.bytes().await.unwrap().to_vec()),
            404 => None,
            other => panic!("GET {key_and_query}: {other} {}", response.text().await.unwrap()),
        }
    }

    /// GET a path and parse the JSON body, expecting 200.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// The export as parsed NDJSON lines.
    pub async fn export(&self) -> Vec<serde_json::Value> {
        let text = self.export_text().await;
        text.lines()
            .map(|l| serde_json::from_str(l).expect("export line is JSON"))
            .collect()
    }

    /// The raw export.
    pub async fn export_text(&self) -> String {
        let response = self
            .client
            .get(self.url("/api/v1/export"))
            .send()
            .await
            .expect("export");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Stop the node gracefully and wait for it; the node must report a clean shutdown.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), done)
                .await
                .expect("node did not shut down in time")
                .expect("node panicked");
            result.expect("node shut down with an error");
        }
    }

    /// Stop the node and start it again on the same data directory and configuration.
    pub async fn restart(mut self) -> TestNode {
        self.stop_inner().await;
        let config = self.config.clone();
        TestNode::start_config(config).await
    }
}

/// Run `cave::node::serve` on a new thread with its own multi-threaded runtime; the receiver answers with
/// its result once the runtime has been dropped too.
///
/// Why not `tokio::spawn(cave::node::serve(..))`: that does not compile. The future is not `Send` ("implementation
/// of `Acquire` is not general enough", "implementation of `Send` is not general enough" for `&Path`), because
/// `SqliteStore::open` holds `&mut SqliteConnection` across `MIGRATOR.run(&mut writer)` and a borrowed `&Path`
/// across `tokio::fs::create_dir_all(parent)`: the rustc higher-ranked-lifetime limitation sqlx's
/// `Migrator::run_direct` exists to work around.
pub fn serve_on_own_thread(
    config: Config,
    listener: std::net::TcpListener,
    grpc: Option<std::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> oneshot::Receiver<cave::Result<()>> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("cave-test-node".into())
        .spawn(move || {
            let result = {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("node runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("listener into tokio");
                    let grpc = grpc.map(|g| {
                        g.set_nonblocking(true).expect("nonblocking listener");
                        TcpListener::from_std(g).expect("listener into tokio")
                    });
                    cave::node::serve_with(config, listener, grpc, shutdown).await
                })
            };
            let _ = done_tx.send(result);
        })
        .expect("spawn the node thread");
    done_rx
}

/// Assert an error response: its status, and a JSON body `{"error", "code"}` whose error contains
/// `needle`. Returns the body.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str, needle: &str) -> serde_json::Value {
    let got = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "unexpected status, body: {text}");
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text:?}"));
    assert_eq!(json["code"], code, "{text}");
    let error = json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {text}"));
    assert!(error.contains(needle), "error {error:?} should mention {needle:?}");
    json
}

/// A response read by [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Assert the status and a JSON error body naming `needle`.
    pub fn expect_error(&self, status: u16, code: &str, needle: &str) {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "unexpected status, body: {text}");
        let json = self.json();
        assert_eq!(json["code"], code, "{text}");
        let error = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {text}"));
        assert!(error.contains(needle), "error {error:?} should mention {needle:?}");
    }
}

/// Send one HTTP/1.1 request with exactly this request target, byte for byte. A URL library would normalise
/// `..` segments or reject bad escapes before they reach the server; this does not.
pub async fn raw_request(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .expect("raw response in time")
        .expect("read raw response");
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers: {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    RawResponse { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).expect("chunk size");
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Assert that no file below `dir` holds `plaintext`, and that the scan saw stored data at all: some file
/// holds `marker`, a plain value written alongside (otherwise the scan would prove nothing).
pub fn assert_no_plaintext_below(dir: &Path, plaintext: &str, marker: &str) {
    let mut marker_seen = false;
    for file in files_below(dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains_bytes(&bytes, plaintext.as_bytes()),
            "{} holds the plaintext",
            file.display()
        );
        marker_seen |= contains_bytes(&bytes, marker.as_bytes());
    }
    assert!(
        marker_seen,
        "no stored value found under {}: the scan proves nothing",
        dir.display()
    );
}

pub mod child;
