//! The HTTP surface as real clients meet it: an early answer to a client that sends its whole body before it
//! reads, CORS for browser apps on other origins, the access log, and the log lines a flood of garbage
//! replication frames leaves.

mod common;

use std::sync::Once;
use std::time::{Duration, Instant};

use cave::config::{Config, Mode};
use cave::grpc::pb;
use cave::grpc::pb::replication_client::ReplicationClient;
use cave::secrets::MasterKey;
use common::{start_with, TestNode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Install the recent-log ring as this test binary's subscriber (once).
fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(cave::telemetry::logs::layer())
            .try_init()
            .expect("no other subscriber in this test binary");
    });
}

async fn logs(node: &TestNode) -> Vec<Value> {
    let body = node.get_json("/api/v1/perf/logs?limit=2048&level=trace").await;
    body["records"].as_array().unwrap().clone()
}

/// Await `check` with a deadline.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const LIMIT: usize = 64 << 10;
const OVERSIZE: usize = 3 << 20;

/// The send buffer of the test clients. On loopback the kernel grows a socket's send buffer to 4 MiB, which
/// takes a whole oversize body at once and hides the problem; a small one behaves like a real network, where
/// the client is still writing when the server answers.
const CLIENT_SEND_BUFFER: u32 = 16 << 10;

/// Write a whole request (head and body) before reading anything, as Python's `http.client` does; the
/// answer, or why there is none.
async fn send_all_then_read(node: &TestNode, head: &str, body: &[u8]) -> Result<String, String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(CLIENT_SEND_BUFFER).unwrap();
    let mut stream = socket.connect(node.addr).await.unwrap();
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("writing the head: {e}"))?;
    stream
        .write_all(body)
        .await
        .map_err(|e| format!("writing the body: {e}"))?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_413_reaches_a_client_that_sends_its_whole_body_first() {
    let (_dir, node) = start_with(|c| c.max_value_bytes = LIMIT).await;
    let body = vec![b'x'; OVERSIZE];
    let head = format!(
        "PUT /api/v1/kv/big HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {OVERSIZE}\r\n\r\n",
        node.addr
    );
    let answer = send_all_then_read(&node, &head, &body).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"too_large\""), "{answer}");

    // The same for a chunked body, refused once it grows past the limit.
    let mut chunked = Vec::new();
    for chunk in body.chunks(16 << 10) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "PUT /api/v1/kv/big HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        node.addr
    );
    let answer = send_all_then_read(&node, &head, &chunked).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A refusal before the handler (a write to a folder) is drained too.
    let head = format!(
        "PUT /api/v1/kv/dir/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {OVERSIZE}\r\n\r\n",
        node.addr
    );
    let answer = send_all_then_read(&node, &head, &body).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(node.get("big").await, None);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_http_client_sees_the_413() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        assert!(
            std::env::var("CAVE_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "CAVE_REQUIRE_TOOLS=1 but python3 is missing"
        );
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let (_dir, node) = start_with(|c| c.max_value_bytes = LIMIT).await;
    let script = format!(
        "import http.client, socket\n\
         c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=15)\n\
         c.connect()\n\
         c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, {CLIENT_SEND_BUFFER})\n\
         c.request('PUT', '/api/v1/kv/big', body=b'x' * {OVERSIZE})\n\
         r = c.getresponse()\n\
         print(r.status, r.read().decode())\n",
        port = node.addr.port()
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "python failed: {stderr}");
    assert!(stdout.starts_with("413 ") && stdout.contains("too_large"), "{stdout}");
    node.stop().await;
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

async fn preflight(node: &TestNode, origin: &str) -> reqwest::Response {
    node.client
        .request(reqwest::Method::OPTIONS, node.kv("app/k"))
        .header("origin", origin)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization, x-cave-token, content-type, if-match",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_lets_the_configured_origins_in_and_no_other() {
    const APP: &str = "https://app.example";
    let (_dir, node) = start_with(|c| c.cors_origins = vec![APP.into()]).await;
    let response = preflight(&node, APP).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin").as_deref(), Some(APP));
    let methods = header(&response, "access-control-allow-methods")
        .unwrap()
        .to_lowercase();
    assert!(methods.contains("put") && methods.contains("delete"), "{methods}");
    let allowed = header(&response, "access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    for name in ["authorization", "x-cave-token", "content-type", "if-match"] {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }

    // The app's write passes the cross-site check, and the app may read the version header.
    let response = node
        .client
        .put(node.kv("app/k"))
        .header("origin", APP)
        .header("sec-fetch-site", "cross-site")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin").as_deref(), Some(APP));
    let exposed = header(&response, "access-control-expose-headers")
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("x-cave-version"), "{exposed}");

    // Another origin gets no CORS answer and still may not write.
    let response = preflight(&node, "https://evil.example").await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    let response = node
        .client
        .put(node.kv("app/k"))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body("evil")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(node.get("app/k").await.as_deref(), Some(&b"v"[..]));
    node.stop().await;

    // Without origins configured nothing changes: no CORS headers, OPTIONS is not a method of the route.
    let (_dir, node) = start_with(|_| {}).await;
    let response = preflight(&node, APP).await;
    assert_eq!(response.status(), 405);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_names_routes_never_keys_values_or_queries() {
    capture_logs();
    let (_dir, node) = start_with(|c| c.access_log = true).await;
    let response = node
        .client
        .put(node.kv("acc3ss/k3y-zq?secret=true&token=t0k3n-zq"))
        .body("v4lue-zq")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = node.client.get(node.kv("acc3ss/k3y-zq")).send().await.unwrap();
    let sealed_len = response.bytes().await.unwrap().len() as u64;
    eventually("both requests are logged", || async {
        let records = logs(&node).await;
        let kv = records
            .iter()
            .filter(|r| r["target"] == "cave::access" && r["fields"]["route"] == "/api/v1/kv/{*key}")
            .count();
        kv >= 2
    })
    .await;
    let records = logs(&node).await;
    let access: Vec<&Value> = records.iter().filter(|r| r["target"] == "cave::access").collect();
    let get = access
        .iter()
        .find(|r| r["fields"]["method"] == "GET" && r["fields"]["route"] == "/api/v1/kv/{*key}")
        .unwrap_or_else(|| panic!("no GET in {access:?}"));
    assert_eq!(get["fields"]["status"], 200);
    assert_eq!(get["fields"]["bytes"], sealed_len);
    assert_eq!(get["fields"]["complete"], true);
    assert!(get["fields"]["duration_ms"].as_f64().is_some(), "{get}");
    let text = serde_json::to_string(&records).unwrap();
    for leak in ["k3y-zq", "t0k3n-zq", "v4lue-zq", "secret=true"] {
        assert!(!text.contains(leak), "{leak} reached the log");
    }
    node.stop().await;

    // Off by default.
    let (_dir, quiet) = start_with(|_| {}).await;
    quiet.put("quiet/k", "v").await;
    let before = logs(&quiet)
        .await
        .iter()
        .filter(|r| r["target"] == "cave::access")
        .count();
    quiet.put("quiet/k2", "v").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = logs(&quiet)
        .await
        .iter()
        .filter(|r| r["target"] == "cave::access")
        .count();
    assert_eq!(before, after, "a node without access_log logged a request");
    quiet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_garbage_frames_is_a_few_log_lines_and_every_frame_is_counted() {
    capture_logs();
    let key = MasterKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = Config {
        mode: Mode::Prod,
        data_dir: dir.path().join("data"),
        cluster_key: Some(key),
        mdns: false,
        grpc_addr: grpc.local_addr().unwrap(),
        discovery_window: Duration::ZERO,
        ..Config::default()
    };
    let node = TestNode::start_config_with_grpc(config, Some(grpc)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.config.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    const FRAMES: usize = 1000;
    let started = Instant::now();
    for _ in 0..FRAMES / 50 {
        let calls = (0..50).map(|_| {
            let mut client = ReplicationClient::new(channel.clone());
            async move { client.deliver(pb::Frame { sealed: vec![7; 64] }).await }
        });
        for result in futures::future::join_all(calls).await {
            assert_eq!(result.unwrap_err().code(), tonic::Code::Unauthenticated);
        }
    }
    let took = started.elapsed();
    assert!(node.metric("cave_seal_failures_total").await >= FRAMES as f64);
    let records = logs(&node).await;
    let lines: Vec<&Value> = records
        .iter()
        .filter(|r| r["message"] == "rejected a replication frame")
        .collect();
    // One line per 10 s interval for this peer.
    let most = 1 + took.as_secs() as usize / 10;
    assert!(
        !lines.is_empty() && lines.len() <= most,
        "{} lines in {took:?}",
        lines.len()
    );
    assert_eq!(lines[0]["fields"]["peer"], "127.0.0.1", "{}", lines[0]);
    assert_eq!(lines[0]["fields"]["suppressed"], 0);
    node.stop().await;
}
