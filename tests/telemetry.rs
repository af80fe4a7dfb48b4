//! Operations end to end: metrics (checked by `promtool` and scraped by a real Prometheus server), the
//! Grafana dashboard against the metrics a live node exports, the recent-log endpoint, and the system info.
//!
//! `promtool` and `prometheus` come from the Debian package `prometheus`. Without them the tests that need
//! them print a "skipped" line and pass, unless `CAVE_REQUIRE_TOOLS=1` (set by `.ci/run`) makes a missing
//! tool a failure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::{start, start_with, TestNode};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

/// How long Prometheus may take to start, scrape the node and answer a query.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(90);
/// How long a condition on a node may take to become true.
const DEADLINE: Duration = Duration::from_secs(20);

/// Install, once per test process, a subscriber that feeds the ring buffer with Cave's most verbose output
/// (trace) and everything else at debug: the logs tests then check far more than the default `info` filter
/// lets through, while the ring (shared by the tests running in parallel) does not churn through its
/// capacity in a few requests.
fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("debug,cave=trace"))
            .with(cave::telemetry::logs::layer())
            .try_init()
            .expect("no other subscriber in this test binary");
    });
}

/// The path of `name` on `PATH`, or `None` after printing why the calling test is skipped (or a failure if
/// `CAVE_REQUIRE_TOOLS=1`).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        let required = std::env::var("CAVE_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{name} is not installed and CAVE_REQUIRE_TOOLS=1: install the Debian package prometheus"
        );
        eprintln!("skipped: {name} not found; install the Debian package prometheus");
    }
    found
}

/// Some traffic of every kind: puts (plain and secret), reads, a delete, a miss, a batch, a bad request.
async fn traffic(node: &TestNode) {
    node.put("app/config", "plain").await;
    node.put("app/other", "x").await;
    node.put_secret("app/password", "hunter2").await;
    node.delete("app/other").await;
    assert!(node.get("app/config").await.is_some());
    assert!(node.get("app/missing").await.is_none());
    assert!(node.get("app/password?secret=true").await.is_some());
    let response = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&json!([{"key": "app/batch", "verb": "set", "value": "b"}, {"key": "app/config", "verb": "get"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = node.client.get(node.kv("app/bad?secret=maybe")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let response = node.client.get(node.url("/no/such/route")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

/// GET `/api/v1/perf/metrics`, checking the content type.
async fn metrics_text(node: &TestNode) -> String {
    let response = node.client.get(node.url("/api/v1/perf/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "text/plain; version=0.0.4",
        "Prometheus text format"
    );
    response.text().await.unwrap()
}

/// The exposition parsed: family types from `# TYPE` lines, and each sample (`name{labels}`) with its value.
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<(String, String, f64)>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let (series, value) = line.rsplit_once(' ').expect("sample value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                samples.push((
                    name.to_string(),
                    labels.to_string(),
                    value.parse().expect("numeric sample"),
                ));
            }
        }
        Exposition { types, samples }
    }

    fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|(name, _, _)| name.as_str()).collect()
    }

    /// The value of the one sample `name` with exactly `labels` (as rendered, e.g. `status="alive"`).
    fn value(&self, name: &str, labels: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|(_, _, v)| *v)
    }
}

async fn exposition(node: &TestNode) -> Exposition {
    Exposition::parse(&metrics_text(node).await)
}

/// Poll `check` until it returns `Some`, failing with `what` after `deadline`.
async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = Instant::now() + deadline;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= until => panic!("{what}: not true within {deadline:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Metrics

#[tokio::test(flavor = "multi_thread")]
async fn promtool_accepts_the_metrics_output() {
    let (_dir, node) = start().await;
    traffic(&node).await;
    let text = metrics_text(&node).await;
    let Some(promtool) = tool("promtool") else {
        node.stop().await;
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{report}\n--- metrics:\n{text}"
    );
    assert!(report.trim().is_empty(), "promtool has lint findings:\n{report}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_operations_and_state() {
    let (_dir, node) = start().await;
    let before = exposition(&node).await;
    for counter in [
        "cave_kv_reads_total",
        "cave_kv_writes_total",
        "cave_kv_deletes_total",
        "cave_deltas_sent_total",
        "cave_deltas_received_total",
        "cave_deltas_dropped_total",
        "cave_anti_entropy_entries_repaired_total",
        "cave_clock_drift_rejections_total",
        "cave_seal_failures_total",
        "cave_commit_failures_total",
    ] {
        assert_eq!(
            before.types.get(counter).map(String::as_str),
            Some("counter"),
            "{counter}"
        );
        assert_eq!(
            before.value(counter, ""),
            Some(0.0),
            "{counter} exported at zero before any event"
        );
    }
    assert_eq!(
        before.value("cave_anti_entropy_rounds_total", "result=\"failed\""),
        Some(0.0)
    );
    assert_eq!(before.value("cave_peers", "status=\"suspect\""), Some(0.0));
    assert_eq!(before.value("cave_keys", ""), Some(0.0));

    traffic(&node).await;
    let after = exposition(&node).await;
    // Puts: app/config, app/other, app/password, app/batch. Deletes: app/other. Reads: three GETs (a miss
    // included) and the batch's get.
    assert_eq!(after.value("cave_kv_writes_total", ""), Some(4.0));
    assert_eq!(after.value("cave_kv_deletes_total", ""), Some(1.0));
    assert_eq!(after.value("cave_kv_reads_total", ""), Some(4.0));
    assert_eq!(after.value("cave_keys", ""), Some(3.0));
    assert_eq!(after.value("cave_tombstones", ""), Some(1.0));
    assert!(after.value("cave_db_size_bytes", "").unwrap() > 0.0);
    assert_eq!(after.types["cave_commit_batch_entries"], "histogram");
    assert_eq!(
        after.value("cave_commit_duration_seconds_count", ""),
        Some(5.0),
        "one commit per write"
    );
    assert_eq!(after.value("cave_commit_batch_entries_sum", ""), Some(5.0));
    assert_eq!(after.types["cave_http_request_duration_seconds"], "histogram");
    let kv_puts = r#"method="PUT",route="/api/v1/kv/{*key}",status="200""#;
    assert_eq!(after.value("cave_http_requests_total", kv_puts), Some(3.0));
    assert_eq!(
        after.value("cave_http_request_duration_seconds_count", kv_puts),
        Some(3.0)
    );
    assert_eq!(
        after.value(
            "cave_http_requests_total",
            r#"method="GET",route="/api/v1/kv/{*key}",status="404""#
        ),
        Some(1.0)
    );
    assert_eq!(
        after.value(
            "cave_http_requests_total",
            r#"method="GET",route="/api/v1/kv/{*key}",status="400""#
        ),
        Some(1.0)
    );
    assert_eq!(
        after.value(
            "cave_http_requests_total",
            r#"method="GET",route="unmatched",status="404""#
        ),
        Some(1.0)
    );
    assert_eq!(
        after.value(
            "cave_http_requests_total",
            r#"method="GET",route="/api/v1/perf/metrics",status="200""#
        ),
        Some(1.0),
        "the first scrape is counted once it has been answered"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metric_labels_never_contain_a_raw_key() {
    let (_dir, node) = start().await;
    let key = "tenants/zq8xkeymarker/db-url";
    node.put(key, "zq8xvaluemarker").await;
    assert!(node.get(key).await.is_some());
    assert!(node.get("tenants/zq8xkeymarker/absent").await.is_none());
    node.put_secret("tenants/zq8xkeymarker/token", "zq8xsecretmarker").await;
    let response = node
        .client
        .get(node.url("/zq8xkeymarker/unrouted"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = node
        .client
        .delete(node.url("/api/v1/watch/zq8xkeymarker"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let text = metrics_text(&node).await;
    assert!(
        !text.contains("zq8x"),
        "a key, value or path leaked into the metrics:\n{text}"
    );
    let routes: BTreeSet<String> = Exposition::parse(&text)
        .samples
        .iter()
        .filter(|(name, _, _)| name == "cave_http_requests_total")
        .filter_map(|(_, labels, _)| {
            let rest = labels.split("route=\"").nth(1)?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect();
    // `/healthz`: the test harness polls it until the node is ready.
    let expected = ["/api/v1/kv/{*key}", "/api/v1/watch/{*prefix}", "/healthz", "unmatched"];
    assert_eq!(
        routes,
        expected.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
        "only route templates are labels"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_are_counted_while_open() {
    let (_dir, node) = start().await;
    let mut stream = node.client.get(node.url("/api/v1/watch/app")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    // The `ready` event: the server is streaming, so the subscriber is counted.
    let first = stream.chunk().await.unwrap().expect("ready event");
    assert!(String::from_utf8_lossy(&first).contains("ready"));
    assert_eq!(exposition(&node).await.value("cave_watch_subscribers", ""), Some(1.0));
    drop(stream);
    eventually(DEADLINE, "the watch subscriber gauge drops back to 0", || async {
        match exposition(&node).await.value("cave_watch_subscribers", "") {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    node.stop().await;
}

/// Kills the Prometheus server when dropped, also when the test fails; prints its log on failure.
struct PrometheusServer {
    child: Child,
    log: PathBuf,
    base: String,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- prometheus log ({}):\n{log}", self.log.display());
        }
    }
}

/// Start Prometheus on a free loopback port, scraping `target` every second.
fn start_prometheus(binary: &Path, dir: &Path, target: std::net::SocketAddr) -> PrometheusServer {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: cave\n    metrics_path: /api/v1/perf/metrics\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    // The port is free now; Prometheus binds it a moment later. Another process taking it in between makes
    // Prometheus exit at once, which `wait_for_prometheus` reports with its log.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join("prometheus.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start prometheus");
    PrometheusServer {
        child,
        log,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// `GET /api/v1/query?query=...` of Prometheus: the `data.result` array, or why not.
async fn prometheus_query(
    client: &reqwest::Client,
    server: &PrometheusServer,
    query: &str,
) -> Result<Vec<Value>, String> {
    let response = client
        .get(format!("{}/api/v1/query", server.base))
        .query(&[("query", query)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    body["data"]["result"]
        .as_array()
        .cloned()
        .ok_or_else(|| body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_node() {
    let Some(binary) = tool("prometheus") else { return };
    let (dir, node) = start().await;
    traffic(&node).await;
    let mut server = start_prometheus(&binary, dir.path(), node.addr);
    let client = common::client();

    // The target is up: Prometheus started, scraped the node and parsed what it got.
    let until = Instant::now() + PROMETHEUS_DEADLINE;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("prometheus exited early ({status}); see its log below");
        }
        let target = async {
            let response = client
                .get(format!("{}/api/v1/targets", server.base))
                .send()
                .await
                .ok()?;
            let body: Value = response.json().await.ok()?;
            let targets = body["data"]["activeTargets"].as_array()?.clone();
            targets.into_iter().find(|t| t["labels"]["job"] == "cave")
        }
        .await;
        if target.as_ref().is_some_and(|t| t["health"] == "up") {
            break;
        }
        assert!(
            Instant::now() < until,
            "the target is not up within {PROMETHEUS_DEADLINE:?}: {target:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let instance = node.addr.to_string();
    eventually(PROMETHEUS_DEADLINE, "query up == 1", || async {
        let result = prometheus_query(&client, &server, "up{job=\"cave\"}").await?;
        match result.first() {
            Some(sample) if sample["value"][1] == "1" && sample["metric"]["instance"] == instance.as_str() => Ok(()),
            _ => Err(format!("{result:?}")),
        }
    })
    .await;
    // The node's writes, as Prometheus stored them.
    eventually(PROMETHEUS_DEADLINE, "a cave_ series through the query API", || async {
        let result = prometheus_query(&client, &server, "cave_kv_writes_total{job=\"cave\"}").await?;
        match result.first() {
            Some(sample) if sample["value"][1] == "4" => Ok(()),
            _ => Err(format!("{result:?}")),
        }
    })
    .await;
    // A dashboard-style expression over the histogram buckets evaluates to a number.
    eventually(PROMETHEUS_DEADLINE, "a latency quantile over the buckets", || async {
        let query = "histogram_quantile(0.99, sum by (le) (cave_http_request_duration_seconds_bucket{job=\"cave\"}))";
        let result = prometheus_query(&client, &server, query).await?;
        let value = result.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok());
        match value {
            Some(v) if v.is_finite() && v > 0.0 => Ok(()),
            _ => Err(format!("{result:?}")),
        }
    })
    .await;
    drop(server);
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// Dashboard

/// Every `expr` (and templating query) string in the dashboard.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(text)) => out.push(text.clone()),
                    ("query", Value::String(text)) if text.contains("cave_") => out.push(text.clone()),
                    _ => expressions(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| expressions(item, out)),
        _ => {}
    }
}

/// Metric names in a PromQL expression: `cave_` then `[a-z0-9_]`, not preceded by a name character (so a
/// label or function name containing `cave_` does not count).
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while let Some(found) = expr[i..].find("cave_") {
        let start = i + found;
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + expr[start..]
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                .count();
        if !preceded {
            names.push(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_in_the_dashboard_is_exported() {
    let (_dir, node) = start().await;
    traffic(&node).await;
    let response = node
        .client
        .get(node.url("/api/v1/perf/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let served = response.text().await.unwrap();
    let checked_in =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json")).unwrap();
    assert_eq!(served, checked_in, "the node serves docs/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&served).unwrap();
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");

    let exported = exposition(&node).await;
    let sample_names = exported.names();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty() || !expr.contains("cave_"), "{expr}");
        for name in names {
            // The family a name belongs to: itself (counters keep `_total`, gauges their name), or for a
            // histogram's `_bucket`/`_sum`/`_count` series the histogram it is cut from.
            let family = if exported.types.contains_key(&name) {
                name.clone()
            } else {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or_else(|| panic!("{name} (in {expr}) is not an exported family"));
                assert_eq!(
                    exported.types.get(base).map(String::as_str),
                    Some("histogram"),
                    "{name} (in {expr}) is not a series of an exported histogram"
                );
                base.to_string()
            };
            assert!(
                sample_names.contains(name.as_str()),
                "{name} (in {expr}) has no sample: a bare histogram name, or a family never recorded"
            );
            used.insert(family);
        }
    }
    // The dashboard covers the areas the issue names.
    for family in [
        "cave_http_requests_total",
        "cave_http_request_duration_seconds",
        "cave_keys",
        "cave_tombstones",
        "cave_commit_batch_entries",
        "cave_commit_duration_seconds",
        "cave_deltas_sent_total",
        "cave_deltas_received_total",
        "cave_anti_entropy_rounds_total",
        "cave_anti_entropy_entries_repaired_total",
        "cave_peers",
        "cave_clock_drift_rejections_total",
        "cave_seal_failures_total",
    ] {
        assert!(used.contains(family), "the dashboard does not chart {family}");
    }
    node.stop().await;
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(r#"histogram_quantile(0.9, sum by (le) (rate(cave_x_bucket{a="cave_no"}[5m]))) / cave_y"#),
        ["cave_x_bucket", "cave_no", "cave_y"]
    );
    assert_eq!(metric_names("mycave_x + cave_1a"), ["cave_1a"]);
}

// ---------------------------------------------------------------------------------------------------------
// Logs

async fn logs(node: &TestNode, query: &str) -> Vec<Value> {
    let body = node.get_json(&format!("/api/v1/perf/logs{query}")).await;
    body["records"]
        .as_array()
        .unwrap_or_else(|| panic!("records: {body}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_served_with_level_limit_and_since_filters() {
    capture_logs();
    let (_dir, node) = start().await;
    let marker = "zq8x-log-marker";
    tracing::warn!(target: "cave_test", marker, n = 7u64, "telemetry test warning");

    let all = logs(&node, "?limit=2048").await;
    let record = all
        .iter()
        .find(|r| r["fields"]["marker"] == marker)
        .unwrap_or_else(|| panic!("marker not in {all:?}"));
    assert_eq!(record["level"], "warn");
    assert_eq!(record["target"], "cave_test");
    assert_eq!(record["message"], "telemetry test warning");
    assert_eq!(record["fields"]["n"], 7);
    let stamp = record["timestamp"].as_str().unwrap();
    assert!(cave::telemetry::logs::parse_rfc3339_micros(stamp).is_some(), "{stamp}");
    // The node's own start-up records are there too.
    assert!(all.iter().any(|r| r["message"] == "node opened"), "no start-up record");

    // Newest last.
    let stamps: Vec<i64> = all
        .iter()
        .map(|r| cave::telemetry::logs::parse_rfc3339_micros(r["timestamp"].as_str().unwrap()).unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "not in time order");

    // level: a minimum.
    let warnings = logs(&node, "?level=warn&limit=2048").await;
    assert!(warnings.iter().all(|r| r["level"] == "warn" || r["level"] == "error"));
    assert!(warnings.iter().any(|r| r["fields"]["marker"] == marker));
    let errors = logs(&node, "?level=ERROR&limit=2048").await;
    assert!(errors.iter().all(|r| r["level"] == "error"));
    assert!(!errors.iter().any(|r| r["fields"]["marker"] == marker));

    // limit: the newest ones; 100 by default.
    assert!(logs(&node, "").await.len() <= 100);
    assert_eq!(logs(&node, "?limit=1").await.len(), 1);

    // since: RFC 3339 or Unix milliseconds, inclusive.
    let since = logs(&node, &format!("?since={}&limit=2048", stamp.replace('+', "%2B"))).await;
    assert!(
        since.iter().any(|r| r["fields"]["marker"] == marker),
        "since is inclusive"
    );
    let millis = cave::telemetry::logs::parse_rfc3339_micros(stamp).unwrap() / 1000;
    assert!(logs(&node, &format!("?since={millis}&limit=2048&level=warn"))
        .await
        .iter()
        .any(|r| r["fields"]["marker"] == marker));
    assert!(logs(&node, "?since=2100-01-01T00:00:00Z").await.is_empty());
    assert!(logs(&node, "?since=4102444800000").await.is_empty());
    assert!(!logs(&node, "?since=2000-01-01T01:00:00%2B01:00").await.is_empty());

    for (query, needle) in [
        ("?level=loud", "level"),
        ("?level=", "level"),
        ("?limit=0", "limit"),
        ("?limit=2049", "limit"),
        ("?limit=-3", "limit"),
        ("?limit=many", "limit"),
        ("?since=yesterday", "since"),
        ("?since=2026-13-01T00:00:00Z", "since"),
        ("?since=", "since"),
    ] {
        let response = node
            .client
            .get(node.url(&format!("/api/v1/perf/logs{query}")))
            .send()
            .await
            .unwrap();
        common::expect_error(response, 400, "invalid_input", needle).await;
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_never_contain_values_or_secrets() {
    capture_logs();
    let (_dir, node) = start().await;
    let plain = "zq8x-plain-value-in-logs";
    let secret = "zq8x-secret-value-in-logs";
    node.put("logs/plain", plain).await;
    node.put_secret("logs/secret", secret).await;
    assert_eq!(node.get("logs/plain").await.as_deref(), Some(plain.as_bytes()));
    assert_eq!(
        node.get("logs/secret?secret=true").await.as_deref(),
        Some(secret.as_bytes())
    );
    let response = node
        .client
        .post(node.url("/api/v1/query"))
        .json(&json!([{"key": "logs/batch", "verb": "set", "value": plain, "secret": true}, {"key": "logs/batch", "verb": "get", "secret": true}]))
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains(plain));
    // A failing request logs its error: the error must not carry the value either.
    let response = node
        .client
        .put(node.kv("logs/plain?cas=0"))
        .body(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 412);
    let text = node.text("/api/v1/perf/logs?limit=2048&level=trace").await;
    let records = serde_json::from_str::<Value>(&text).unwrap()["records"]
        .as_array()
        .unwrap()
        .len();
    assert!(records > 0, "{text}");
    assert!(!text.contains(plain), "a value reached the logs: {text}");
    assert!(!text.contains(secret), "a secret reached the logs: {text}");
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------
// System

#[tokio::test(flavor = "multi_thread")]
async fn system_info_reports_a_cluster_id_shared_by_key_holders() {
    let key = cave::secrets::MasterKey::generate();
    let (_da, a) = start_with(|c| c.cluster_key = Some(key.clone())).await;
    let (_db, b) = start_with(|c| c.cluster_key = Some(key.clone())).await;
    let (_dc, c) = start().await;
    let info_a = a.get_json("/api/v1/system/info").await;
    let info_b = b.get_json("/api/v1/system/info").await;
    let info_c = c.get_json("/api/v1/system/info").await;
    let id = info_a["cluster_id"].as_str().expect("cluster_id");
    assert_eq!(id.len(), 16);
    assert_eq!(info_b["cluster_id"], id, "same key, same cluster id");
    assert_ne!(
        info_c["cluster_id"], id,
        "a dev node with its own key is its own cluster"
    );
    assert_ne!(info_a["node_id"], info_b["node_id"]);
    assert_eq!(info_a["peers"], json!([]));
    let text = info_a.to_string();
    assert!(!text.contains(&key.to_base64()), "{text}");
    if let Ok(path) = std::env::var("PATH") {
        assert!(!text.contains(&path), "the environment leaked: {text}");
    }
    let config = a.get_json("/api/v1/system/config").await;
    assert_eq!(config["cluster_key"], "<redacted>");
    for node in [a, b, c] {
        node.stop().await;
    }
}
