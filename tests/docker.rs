//! Container fault tests: the repository's image and `docker-compose.yml`, three prod nodes that find each other
//! by mDNS, under the faults of DESIGN.md section 10.
//!
//! (a) a write on node 1 is read on nodes 2 and 3; (b) node 3 is cut off with `docker network disconnect`,
//! both sides take writes (the same keys with different values, deletes), the network is restored and every
//! node converges to the greatest-version entries; (c) node 2 is `docker kill`ed during a stream of writes to
//! node 1 and started again, and catches up with no acknowledged write lost; (d) a rolling `docker restart` of
//! all three under continuous writes loses no acknowledged write; (e) the demo over HTTPS
//! (`docker-compose.tls.yml`, certificates from `scripts/tls-demo-cert.sh`): replication, Docker's health
//! check and a SIGHUP certificate swap. Each prints its counts and timings.
//!
//! The tests need Docker and Compose (`docker compose` or `docker-compose`). Without them they print a
//! "skipped" line and pass, unless `CAVE_REQUIRE_TOOLS=1` (set by `.ci/run`) makes that a failure.
//!
//! The image is `cave:test`, built by `scripts/docker-image.sh` from the *debug* binary that `cargo test` has
//! just compiled (`CARGO_BIN_EXE_cave`): a release build only for these tests would cost minutes of CI, and a
//! debug node is fast enough for them. The script skips the build when the image is up to date.
//!
//! Every test has its own compose project (containers, networks, volumes), random free host ports and cluster
//! key, and removes all of it when it ends, also when it fails (`docker compose down -v` in a `Drop`). Nodes
//! run anti-entropy every second (`CAVE_ANTI_ENTROPY_INTERVAL=1s`) to keep the tests short.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The image the tests run (`docker-compose.yml` reads it from `CAVE_IMAGE`).
const IMAGE: &str = "cave:test";
/// Anti-entropy interval of the test clusters.
const ANTI_ENTROPY: Duration = Duration::from_secs(1);
/// How long the nodes of a cluster may take to start, find each other and finish their first sync.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long the nodes may take to agree once a fault is over: a few anti-entropy rounds, generously (a round
/// starts every second on each node, with a random peer, and the debug build on a busy CI machine is slow).
const CONVERGENCE_BOUND: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A line on the test's stderr, past the harness's output capture: the counts are the proof these tests give,
/// so they are shown also when the tests pass.
/// The root token the test gives every node and sends with every request.
const ROOT_TOKEN: &str = "docker-test-root-token-0123456789";

fn root_token_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {ROOT_TOKEN}")).expect("header");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    headers
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

// ------------------------------------------------------------------------------------------------- Docker

/// How to run Docker Compose here.
struct Docker {
    /// `["docker", "compose"]` (Compose v2) or `["docker-compose"]` (v1).
    compose: Vec<&'static str>,
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Docker with a reachable daemon and Compose, or `None` after printing why the calling test is skipped
/// (a panic instead if `CAVE_REQUIRE_TOOLS=1`).
fn docker(test: &str) -> Option<&'static Docker> {
    static DOCKER: OnceLock<Result<Docker, String>> = OnceLock::new();
    let found = DOCKER.get_or_init(|| {
        if !succeeds("docker", &["version", "--format", "{{.Server.Version}}"]) {
            return Err("`docker version` fails: Docker is not installed or its daemon is not reachable".into());
        }
        if succeeds("docker", &["compose", "version"]) {
            Ok(Docker {
                compose: vec!["docker", "compose"],
            })
        } else if succeeds("docker-compose", &["version"]) {
            Ok(Docker {
                compose: vec!["docker-compose"],
            })
        } else {
            Err("neither `docker compose` nor `docker-compose` works: install Docker Compose".into())
        }
    });
    match found {
        Ok(docker) => Some(docker),
        Err(why) if std::env::var("CAVE_REQUIRE_TOOLS").as_deref() == Ok("1") => {
            panic!("CAVE_REQUIRE_TOOLS=1 but {why}")
        }
        Err(why) => {
            say(&format!("skipped {test}: {why}"));
            None
        }
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds [`IMAGE`] from the test build of `cave`, once per test process; the script makes it a no-op when the
/// image already holds this binary.
fn build_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let started = Instant::now();
        let output = Command::new(repo().join("scripts/docker-image.sh"))
            .arg(IMAGE)
            .env("CAVE_BINARY", env!("CARGO_BIN_EXE_cave"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/docker-image.sh: {e}"))?;
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            return Err(format!("scripts/docker-image.sh failed:\n{log}"));
        }
        let what = if log.contains("up to date") {
            "up to date"
        } else {
            "built"
        };
        say(&format!(
            "docker: image {IMAGE} {what} in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    });
    if let Err(why) = built {
        panic!("{why}");
    }
}

/// Runs a command to completion; its output whatever the status.
fn run(program: &str, args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command that must succeed; its stdout.
fn check(program: &str, args: &[&str], env: &[(String, String)]) -> String {
    let output = run(program, args, env);
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs blocking code (a docker command) from async code without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// `n` distinct free TCP ports on loopback (held open together so they differ, then released).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

// ------------------------------------------------------------------------------------------------- cluster

/// A three-node compose project. Dropping it removes its containers, networks and volumes.
struct Cluster {
    docker: &'static Docker,
    project: String,
    /// `-f FILE` arguments.
    files: Vec<String>,
    /// The variables `docker-compose.yml` reads.
    env: Vec<(String, String)>,
    ports: [u16; 3],
    http: reqwest::Client,
    /// `http`, or `https` over `docker-compose.tls.yml`.
    scheme: &'static str,
    /// The demo certificates of an HTTPS cluster (`CAVE_TLS_DIR`), removed with the cluster.
    tls: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `docker-compose.yml` (and `overlays` from tests/) as project `cave-test-NAME-...`; waits until
    /// every node is ready and sees the two others alive.
    async fn start(docker: &'static Docker, name: &str, overlays: &[&str]) -> Cluster {
        Cluster::start_with(docker, name, overlays, false).await
    }

    /// [`Cluster::start`] over HTTPS: `docker-compose.tls.yml` laid over the overlays, with a fresh demo CA
    /// and certificate that the cluster's client trusts.
    async fn start_https(docker: &'static Docker, name: &str) -> Cluster {
        Cluster::start_with(docker, name, &[], true).await
    }

    async fn start_with(docker: &'static Docker, name: &str, overlays: &[&str], https: bool) -> Cluster {
        build_image();
        let project = format!("cavetest-{name}-{}-{:x}", std::process::id(), rand::random::<u32>());
        let mut files = vec![
            "-f".to_string(),
            repo().join("docker-compose.yml").display().to_string(),
        ];
        for overlay in overlays {
            files.push("-f".to_string());
            files.push(repo().join("tests").join(overlay).display().to_string());
        }
        let key = cave::secrets::MasterKey::generate().to_base64();
        let ports = free_ports::<3>();
        let mut env = vec![
            ("CAVE_IMAGE".to_string(), IMAGE.to_string()),
            ("CAVE_CLUSTER_KEY".to_string(), key),
            // Access control is on in prod mode: every node gets the same root token, as the README does.
            ("CAVE_ACL_ROOT_TOKEN".to_string(), ROOT_TOKEN.to_string()),
            (
                "CAVE_ANTI_ENTROPY_INTERVAL".to_string(),
                format!("{}ms", ANTI_ENTROPY.as_millis()),
            ),
            ("CAVE_LOG_LEVEL".to_string(), "info".to_string()),
            ("CAVE_PUBLISH_IP".to_string(), "127.0.0.1".to_string()),
        ];
        for (i, port) in ports.iter().enumerate() {
            env.push((format!("CAVE_NODE{}_PORT", i + 1), port.to_string()));
        }
        let mut http = reqwest::Client::builder()
            .default_headers(root_token_headers())
            .no_proxy()
            .timeout(REQUEST_TIMEOUT);
        let tls = https.then(|| {
            let dir = tempfile::tempdir().unwrap();
            // The nodes run as user 10001: the mounted directory must be open to them, as tls/ of the demo is.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            demo_certificates(dir.path());
            files.push("-f".to_string());
            files.push(repo().join("docker-compose.tls.yml").display().to_string());
            env.push(("CAVE_TLS_DIR".to_string(), dir.path().display().to_string()));
            dir
        });
        if let Some(dir) = &tls {
            http = http.tls_built_in_root_certs(false).add_root_certificate(ca(dir.path()));
        }
        let http = http.build().expect("reqwest client");
        // The guard exists before anything is created, so a failing `up` is cleaned up too.
        let cluster = Cluster {
            docker,
            project,
            files,
            env,
            ports,
            http,
            scheme: if https { "https" } else { "http" },
            tls,
        };
        let started = Instant::now();
        blocking(|| cluster.compose(&["up", "-d"]));
        cluster.wait_until_formed([0, 1, 2], START_DEADLINE).await;
        say(&format!(
            "{name}: 3 nodes up, ready and meshed by mDNS in {:.1}s (project {})",
            started.elapsed().as_secs_f64(),
            cluster.project
        ));
        cluster
    }

    fn compose_args<'a>(&'a self, args: &[&'a str]) -> (&'static str, Vec<&'a str>) {
        let (program, first) = self.docker.compose.split_first().unwrap();
        let mut all: Vec<&str> = first.to_vec();
        all.extend(self.files.iter().map(String::as_str));
        all.extend(["-p", self.project.as_str()]);
        all.extend(args);
        (program, all)
    }

    /// `docker compose -f ... -p PROJECT ARGS`, which must succeed; its stdout.
    fn compose(&self, args: &[&str]) -> String {
        let (program, args) = self.compose_args(args);
        check(program, &args, &self.env)
    }

    /// The container of node `i` (0-based).
    fn container(&self, i: usize) -> String {
        let id = self.compose(&["ps", "-q", &format!("node{}", i + 1)]);
        let id = id.trim();
        assert!(!id.is_empty(), "no container for node{}", i + 1);
        id.to_string()
    }

    /// The cluster network (`PROJECT_cave`), as Docker names it.
    fn network(&self) -> String {
        let id = self.container(0);
        let names = check(
            "docker",
            &[
                "inspect",
                "--format",
                "{{range $name, $v := .NetworkSettings.Networks}}{{$name}} {{end}}",
                &id,
            ],
            &[],
        );
        let name = names.split_whitespace().find(|n| n.ends_with("_cave"));
        name.unwrap_or_else(|| panic!("node1 is on no *_cave network: {names}"))
            .to_string()
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.ports[i])
    }

    /// Until node `i` answers `/readyz` with 200 and lists every node of `members` (0-based, itself
    /// included) as alive.
    async fn wait_until_formed<const N: usize>(&self, members: [usize; N], deadline: Duration) {
        let started = Instant::now();
        for i in members {
            loop {
                let ready = self.ready(i).await;
                let alive = self.alive_members(i).await;
                if ready && alive == Some(members.len()) {
                    break;
                }
                if started.elapsed() > deadline {
                    panic!(
                        "node{} not ready with {} live members after {deadline:?}: ready {ready}, alive members \
                         {alive:?}",
                        i + 1,
                        members.len()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn ready(&self, i: usize) -> bool {
        let response = self.http.get(self.url(i, "/readyz")).send().await;
        response.is_ok_and(|r| r.status() == 200)
    }

    /// How many nodes node `i` lists as itself or alive.
    async fn alive_members(&self, i: usize) -> Option<usize> {
        let response = self.http.get(self.url(i, "/api/v1/cluster/nodes")).send().await.ok()?;
        let nodes: serde_json::Value = response.json().await.ok()?;
        let nodes = nodes.as_array()?;
        Some(
            nodes
                .iter()
                .filter(|n| matches!(n["status"].as_str(), Some("self" | "alive")))
                .count(),
        )
    }

    /// PUT on node `i`: the version of the acknowledged write, or why not.
    async fn put(&self, i: usize, key: &str, value: &str) -> Result<Version, String> {
        let request = self
            .http
            .put(self.url(i, &format!("/api/v1/kv/{key}")))
            .header("content-type", "text/plain")
            .body(value.to_string());
        acknowledged(request.send().await).await
    }

    /// DELETE on node `i`: the version of the tombstone.
    async fn delete(&self, i: usize, key: &str) -> Result<Version, String> {
        let request = self.http.delete(self.url(i, &format!("/api/v1/kv/{key}")));
        acknowledged(request.send().await).await
    }

    /// Node `i`'s value of `key`, `None` if absent or deleted.
    async fn get(&self, i: usize, key: &str) -> Result<Option<String>, String> {
        let response = self
            .http
            .get(self.url(i, &format!("/api/v1/kv/{key}")))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            200 => Ok(Some(response.text().await.map_err(|e| e.to_string())?)),
            404 => Ok(None),
            other => Err(format!("status {other}")),
        }
    }

    /// Node `i`'s `/api/v1/export`, tombstones included, by key.
    async fn export(&self, i: usize) -> Result<BTreeMap<String, Entry>, String> {
        let response = self
            .http
            .get(self.url(i, "/api/v1/export"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("export: status {}", response.status()));
        }
        let text = response.text().await.map_err(|e| e.to_string())?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
                let entry = Entry {
                    value: (!json["deleted"].as_bool().unwrap_or(false))
                        .then(|| json["value"].as_str().unwrap_or_default().to_string()),
                    version: Version::parse(json["version"].as_str().unwrap_or_default())?,
                };
                Ok((json["key"].as_str().unwrap_or_default().to_string(), entry))
            })
            .collect()
    }

    /// The exports of all three nodes, or the first error.
    async fn exports(&self) -> Result<[BTreeMap<String, Entry>; 3], String> {
        let (a, b, c) = tokio::join!(self.export(0), self.export(1), self.export(2));
        Ok([a?, b?, c?])
    }

    /// Waits until every node has every entry of `expected` (same value or deletion, same version) and the
    /// three exports are equal: the time that took and the exports. Panics after [`CONVERGENCE_BOUND`], saying
    /// what differs.
    async fn converge(&self, expected: &BTreeMap<String, Entry>) -> (Duration, [BTreeMap<String, Entry>; 3]) {
        let started = Instant::now();
        loop {
            let mut problem = String::new();
            match self.exports().await {
                Ok(exports) => {
                    for (i, export) in exports.iter().enumerate() {
                        let missing: Vec<_> = expected.iter().filter(|(k, e)| export.get(*k) != Some(*e)).collect();
                        if !missing.is_empty() {
                            let shown: Vec<String> = missing
                                .iter()
                                .take(5)
                                .map(|(k, e)| format!("{k}: want {e:?}, has {:?}", export.get(*k)))
                                .collect();
                            problem = format!(
                                "node{} lacks {} of {} expected entries, e.g. {shown:?}",
                                i + 1,
                                missing.len(),
                                expected.len()
                            );
                            break;
                        }
                    }
                    if problem.is_empty() && (exports[0] != exports[1] || exports[1] != exports[2]) {
                        problem = "the three exports differ".to_string();
                    }
                    if problem.is_empty() {
                        return (started.elapsed(), exports);
                    }
                }
                Err(e) => problem = e,
            }
            if started.elapsed() > CONVERGENCE_BOUND {
                panic!("not converged {CONVERGENCE_BOUND:?} after the fault: {problem}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until node `i` answers `/readyz` with 200 again (after a restart); how long that took.
    async fn wait_ready(&self, i: usize) -> Duration {
        let started = Instant::now();
        while !self.ready(i).await {
            assert!(
                started.elapsed() < START_DEADLINE,
                "node{} not ready {START_DEADLINE:?} after its restart",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let (program, args) = self.compose_args(&["logs", "--no-color", "--tail", "60"]);
            let logs = run(program, &args, &self.env);
            say(&format!(
                "---- logs of {} (test failed)\n{}{}",
                self.project,
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            ));
        }
        let (program, args) = self.compose_args(&["down", "-v", "--remove-orphans", "-t", "2"]);
        let output = run(program, &args, &self.env);
        if !output.status.success() {
            say(&format!(
                "cleanup of {} failed: {}",
                self.project,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
}

/// How many keys of `expected` every export holds with the expected value (or deletion) and version.
fn found_on_every_node(exports: &[BTreeMap<String, Entry>; 3], expected: &BTreeMap<String, Entry>) -> usize {
    expected
        .iter()
        .filter(|(key, entry)| exports.iter().all(|export| export.get(*key) == Some(*entry)))
        .count()
}

/// A version as the API writes it, `HLC-NODE`; ordered as Cave orders them (clock, then node id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u64, String);

impl Version {
    fn parse(text: &str) -> Result<Version, String> {
        let (clock, node) = text.split_once('-').ok_or_else(|| format!("bad version {text:?}"))?;
        let clock = clock.parse().map_err(|_| format!("bad version {text:?}"))?;
        Ok(Version(clock, node.to_string()))
    }
}

/// What a node holds for a key: a value or a deletion (`None`), and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: Option<String>,
    version: Version,
}

/// The version in a 200 `{"message":"ok","version":V}` answer, or why the write was not acknowledged.
async fn acknowledged(response: reqwest::Result<reqwest::Response>) -> Result<Version, String> {
    let response = response.map_err(|e| e.to_string())?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    Version::parse(body["version"].as_str().unwrap_or_default())
}

/// Writes keys `PREFIX/000000`, `PREFIX/000001`, ... one after another, spread round-robin over `nodes`, until
/// stopped; remembers every acknowledged one. A write that fails (its node is down) is not retried: it was
/// never acknowledged, so it may be lost.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeMap<String, Entry>>>,
    task: tokio::task::JoinHandle<usize>,
}

#[derive(Default)]
struct Writes {
    acknowledged: BTreeMap<String, Entry>,
    failed: usize,
}

impl Writer {
    fn start(cluster: &Cluster, prefix: &str, nodes: &[usize]) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(BTreeMap::new()));
        let (flag, log, prefix, nodes) = (stop.clone(), acks.clone(), prefix.to_string(), nodes.to_vec());
        let urls: Vec<String> = (0..3).map(|i| cluster.url(i, "/api/v1/kv/")).collect();
        let http = reqwest::Client::builder()
            .default_headers(root_token_headers())
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let task = tokio::spawn(async move {
            let mut failed = 0;
            let mut n = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let node = nodes[n % nodes.len()];
                let key = format!("{prefix}/{n:06}");
                let value = format!("value {n} via node{}", node + 1);
                let request = http
                    .put(format!("{}{key}", urls[node]))
                    .header("content-type", "text/plain")
                    .body(value.clone());
                match acknowledged(request.send().await).await {
                    Ok(version) => {
                        log.lock().unwrap().insert(
                            key,
                            Entry {
                                value: Some(value),
                                version,
                            },
                        );
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                n += 1;
            }
            failed
        });
        Writer {
            stop,
            acknowledged: acks,
            task,
        }
    }

    /// The writes acknowledged so far.
    fn acknowledged(&self) -> BTreeMap<String, Entry> {
        self.acknowledged.lock().unwrap().clone()
    }

    /// Stops writing; every write made.
    async fn stop(self) -> Writes {
        self.stop.store(true, Ordering::Relaxed);
        let failed = self.task.await.expect("the writer task");
        let acknowledged = std::mem::take(&mut *self.acknowledged.lock().unwrap());
        Writes { acknowledged, failed }
    }
}

/// `scripts/tls-demo-cert.sh DIR`: a demo CA (`ca.pem`) and the nodes' `cert.pem` and `key.pem`.
fn demo_certificates(dir: &Path) {
    check(
        &repo().join("scripts/tls-demo-cert.sh").display().to_string(),
        &[&dir.display().to_string()],
        &[],
    );
}

/// The demo CA in `dir`, for a client to trust.
fn ca(dir: &Path) -> reqwest::Certificate {
    reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ------------------------------------------------------------------------------------------------- scenarios

/// (a) A write on node 1 is read on nodes 2 and 3; the Docker health check reports every node healthy.
#[test]
fn a_write_on_node_1_is_read_on_nodes_2_and_3() {
    let Some(docker) = docker("docker (a)") else { return };
    runtime().block_on(async {
        let cluster = Cluster::start(docker, "a", &[]).await;
        let version = cluster.put(0, "demo/greeting", "hello from node1").await.unwrap();
        let written = Instant::now();
        let mut seen_after = [Duration::ZERO; 2];
        for (slot, i) in [1, 2].into_iter().enumerate() {
            loop {
                if cluster.get(i, "demo/greeting").await.unwrap().as_deref() == Some("hello from node1") {
                    seen_after[slot] = written.elapsed();
                    break;
                }
                assert!(
                    written.elapsed() < CONVERGENCE_BOUND,
                    "node{} never saw the write",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // A batch more, all read back on every node.
        let mut expected = BTreeMap::new();
        expected.insert(
            "demo/greeting".to_string(),
            Entry {
                value: Some("hello from node1".into()),
                version,
            },
        );
        for n in 0..100 {
            let (key, value) = (format!("demo/{n:03}"), format!("value {n}"));
            let version = cluster.put(0, &key, &value).await.unwrap();
            expected.insert(
                key,
                Entry {
                    value: Some(value),
                    version,
                },
            );
        }
        let (took, exports) = cluster.converge(&expected).await;
        let found = found_on_every_node(&exports, &expected);
        // Docker's own view: the image's HEALTHCHECK (`cave healthcheck`) passes on every node.
        let started = Instant::now();
        for i in 0..3 {
            let id = blocking(|| cluster.container(i));
            loop {
                let health =
                    blocking(|| check("docker", &["inspect", "--format", "{{.State.Health.Status}}", &id], &[]));
                if health.trim() == "healthy" {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "node{} is {health:?}, not healthy",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        say(&format!(
            "docker (a): 1 write on node1 seen on node2 after {:.0}ms, node3 after {:.0}ms; {} writes acknowledged, \
             {} keys found on every node, all equal {:.2}s after the last write; Docker health: 3/3 healthy",
            seen_after[0].as_secs_f64() * 1000.0,
            seen_after[1].as_secs_f64() * 1000.0,
            expected.len(),
            found,
            took.as_secs_f64()
        ));
    });
}

/// (b) Node 3 is cut off from the cluster network; both sides take writes, conflicting ones and deletes; the
/// network comes back and every node converges to the greatest version of each key.
#[test]
fn a_partition_heals_to_the_greatest_versions() {
    let Some(docker) = docker("docker (b)") else { return };
    runtime().block_on(async {
        // The overlay gives each node a private network for its published port, so node 3 still takes the test's
        // writes while it is cut off from the others.
        let cluster = Cluster::start(docker, "b", &["docker-compose.partition.yml"]).await;
        // Every write and delete that was acknowledged, by key: the greatest version must win everywhere.
        let mut written: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        fn record(written: &mut BTreeMap<String, Vec<Entry>>, key: &str, value: Option<&str>, version: Version) {
            written.entry(key.to_string()).or_default().push(Entry {
                value: value.map(str::to_string),
                version,
            });
        }
        for n in 0..10 {
            let key = format!("seed/{n}");
            record(
                &mut written,
                &key,
                Some("seed"),
                cluster.put(0, &key, "seed").await.unwrap(),
            );
        }
        let seeded: BTreeMap<String, Entry> = written.iter().map(|(k, v)| (k.clone(), v[0].clone())).collect();
        cluster.converge(&seeded).await;

        let (network, node3) = blocking(|| (cluster.network(), cluster.container(2)));
        blocking(|| check("docker", &["network", "disconnect", &network, &node3], &[]));
        let cut = Instant::now();

        // Conflicts, each pair in this order in time (the later write normally has the greater version, but
        // the expectation below is computed from the versions the nodes returned, not from the order).
        let majority = [0, 1]; // node1 and node2 stay together
        let steps: &[(usize, &str, Option<&str>)] = &[
            (2, "conflict/a", Some("minority, earlier")),
            (0, "conflict/a", Some("majority, later")),
            (1, "conflict/b", Some("majority, earlier")),
            (2, "conflict/b", Some("minority, later")),
            (0, "seed/0", None), // deleted on the majority side
            (2, "seed/1", None), // deleted on the minority side
            (2, "seed/2", None), // deleted, then rewritten on the other side
            (1, "seed/2", Some("rewritten by majority")),
            (0, "seed/3", Some("rewritten by majority")), // rewritten, then deleted on the other side
            (2, "seed/3", None),
            (0, "seed/4", None), // deleted on both sides
            (2, "seed/4", None),
        ];
        for (node, key, value) in steps {
            let version = match value {
                Some(value) => cluster.put(*node, key, value).await,
                None => cluster.delete(*node, key).await,
            };
            record(
                &mut written,
                key,
                *value,
                version.unwrap_or_else(|e| panic!("{key} on node{}: {e}", node + 1)),
            );
        }
        for n in 0..50 {
            let node = majority[n % 2];
            let (key, value) = (format!("majority/{n:03}"), format!("via node{}", node + 1));
            record(
                &mut written,
                &key,
                Some(&value),
                cluster.put(node, &key, &value).await.unwrap(),
            );
            let (key, value) = (format!("minority/{n:03}"), "via node3".to_string());
            record(
                &mut written,
                &key,
                Some(&value),
                cluster.put(2, &key, &value).await.unwrap(),
            );
        }
        let partition_writes: usize = written.values().map(Vec::len).sum::<usize>() - seeded.len();

        // The partition is real: after several anti-entropy rounds neither side has the other's writes.
        tokio::time::sleep(3 * ANTI_ENTROPY).await;
        assert_eq!(cluster.get(2, "majority/000").await.unwrap(), None, "node3 is cut off");
        assert_eq!(cluster.get(0, "minority/000").await.unwrap(), None, "node1 is cut off");
        assert_eq!(cluster.get(1, "minority/049").await.unwrap(), None, "node2 is cut off");
        assert_eq!(
            cluster.get(1, "majority/048").await.unwrap().as_deref(),
            Some("via node1")
        );
        let partitioned_for = cut.elapsed();

        // Heal: node 3 rejoins under its service name (a plain `connect` would drop the DNS alias compose gave it).
        blocking(|| {
            check(
                "docker",
                &["network", "connect", "--alias", "node3", &network, &node3],
                &[],
            )
        });
        let expected: BTreeMap<String, Entry> = written
            .iter()
            .map(|(key, entries)| {
                let greatest = entries.iter().max_by(|a, b| a.version.cmp(&b.version)).unwrap();
                (key.clone(), greatest.clone())
            })
            .collect();
        let (took, exports) = cluster.converge(&expected).await;
        let keys = found_on_every_node(&exports, &expected);
        let deleted = expected.values().filter(|e| e.value.is_none()).count();
        let conflicts = written.values().filter(|e| e.len() > 1).count();
        say(&format!(
            "docker (b): node3 cut off for {:.1}s; {partition_writes} writes and deletes acknowledged during the \
             partition ({conflicts} keys written more than once: conflicts, deletes); after reconnecting, all 3 nodes agree on \
             all {keys} keys ({deleted} deleted), each at its greatest version, in {:.2}s (anti-entropy every {}s, \
             bound {}s)",
            partitioned_for.as_secs_f64(),
            took.as_secs_f64(),
            ANTI_ENTROPY.as_secs(),
            CONVERGENCE_BOUND.as_secs()
        ));
    });
}

/// (c) Node 2 is killed (SIGKILL) during a stream of writes to node 1 and started again; it catches up and no
/// acknowledged write is lost anywhere.
#[test]
fn a_killed_node_catches_up_without_losing_acknowledged_writes() {
    let Some(docker) = docker("docker (c)") else { return };
    runtime().block_on(async {
        let cluster = Cluster::start(docker, "c", &[]).await;
        let node2 = blocking(|| cluster.container(1));
        let writer = Writer::start(&cluster, "stream", &[0]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before_kill = writer.acknowledged().len();
        blocking(|| check("docker", &["kill", &node2], &[]));
        let killed = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!cluster.ready(1).await, "node2 is down");
        // Everything acknowledged up to the restart, most of it while node 2 was down.
        let missed = writer.acknowledged();
        blocking(|| check("docker", &["start", &node2], &[]));
        let restarted = Instant::now();
        let down_for = killed.elapsed();
        let ready_after = cluster.wait_ready(1).await;
        // Node 2 alone has to catch up on what it missed.
        let caught_up_after = loop {
            if let Ok(export) = cluster.export(1).await {
                if missed.iter().all(|(key, entry)| export.get(key) == Some(entry)) {
                    break restarted.elapsed();
                }
            }
            assert!(
                restarted.elapsed() < CONVERGENCE_BOUND,
                "node2 did not catch up within {CONVERGENCE_BOUND:?} of its restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let writes = writer.stop().await;
        let (took, exports) = cluster.converge(&writes.acknowledged).await;
        let found = found_on_every_node(&exports, &writes.acknowledged);
        say(&format!(
            "docker (c): node2 killed during writes to node1 and down {:.1}s ({} writes acknowledged from the kill \
             to the restart); ready {:.1}s and caught up {:.1}s after `docker start`; {} writes acknowledged in all ({} \
             failed), {} found on every node, all nodes equal {:.2}s after the last write",
            down_for.as_secs_f64(),
            missed.len() - before_kill,
            ready_after.as_secs_f64(),
            caught_up_after.as_secs_f64(),
            writes.acknowledged.len(),
            writes.failed,
            found,
            took.as_secs_f64()
        ));
        assert!(writes.acknowledged.len() > 100, "the writer made progress");
    });
}

/// (d) `docker restart` of each node in turn, waiting for `/readyz` in between, under writes spread over all
/// three: no acknowledged write is lost.
#[test]
fn a_rolling_restart_loses_no_acknowledged_write() {
    let Some(docker) = docker("docker (d)") else { return };
    runtime().block_on(async {
        let cluster = Cluster::start(docker, "d", &[]).await;
        let containers: Vec<String> = blocking(|| (0..3).map(|i| cluster.container(i)).collect());
        let writer = Writer::start(&cluster, "rolling", &[0, 1, 2]);
        let started = Instant::now();
        let mut restarts = Vec::new();
        for (i, container) in containers.iter().enumerate() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let restart = Instant::now();
            blocking(|| check("docker", &["restart", "-t", "10", container], &[]));
            cluster.wait_ready(i).await;
            let ready = restart.elapsed();
            restarts.push(format!("node{} {:.1}s", i + 1, ready.as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let writes = writer.stop().await;
        let (took, exports) = cluster.converge(&writes.acknowledged).await;
        let found = found_on_every_node(&exports, &writes.acknowledged);
        say(&format!(
            "docker (d): rolling restart in {:.1}s (restart to ready: {}); {} writes acknowledged ({} refused by a \
             restarting node), {} found on every node, all nodes equal {:.2}s after the last write",
            started.elapsed().as_secs_f64(),
            restarts.join(", "),
            writes.acknowledged.len(),
            writes.failed,
            found,
            took.as_secs_f64()
        ));
        assert!(writes.acknowledged.len() > 100, "the writer made progress");
    });
}

/// (e) The demo over HTTPS: a write on node 1 is read on nodes 2 and 3 over HTTPS, plain HTTP gets nothing, the
/// image's health check passes over TLS by itself, and `docker compose kill -s HUP` swaps node 1's certificate.
#[test]
fn the_demo_cluster_works_over_https() {
    let Some(docker) = docker("docker (e)") else { return };
    runtime().block_on(async {
        let cluster = Cluster::start_https(docker, "e").await;
        cluster.put(0, "demo/tls", "sealed in transit").await.unwrap();
        for i in [1, 2] {
            let started = Instant::now();
            while cluster.get(i, "demo/tls").await.unwrap().as_deref() != Some("sealed in transit") {
                assert!(
                    started.elapsed() < CONVERGENCE_BOUND,
                    "node{} never saw the write",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let plain = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        let clear = plain
            .get(format!("http://127.0.0.1:{}/healthz", cluster.ports[0]))
            .send()
            .await;
        assert!(clear.is_err(), "plain HTTP was answered: {clear:?}");

        let started = Instant::now();
        for i in 0..3 {
            let id = blocking(|| cluster.container(i));
            loop {
                let health =
                    blocking(|| check("docker", &["inspect", "--format", "{{.State.Health.Status}}", &id], &[]));
                if health.trim() == "healthy" {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "node{} is {health:?}",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }

        // New files in the mounted directory (a new CA too), then SIGHUP to node 1 only: node 1 serves the new
        // certificate, node 2 still the old one, and nobody was restarted.
        let dir = cluster.tls.as_ref().unwrap().path();
        demo_certificates(dir);
        let renewed = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca(dir))
            .build()
            .unwrap();
        blocking(|| cluster.compose(&["kill", "-s", "HUP", "node1"]));
        let started = Instant::now();
        loop {
            let answer = renewed.get(cluster.url(0, "/healthz")).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "node1 did not load the new certificate"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            renewed.get(cluster.url(1, "/healthz")).send().await.is_err(),
            "node2 was not told to reload"
        );
        assert_eq!(
            cluster.get(1, "demo/tls").await.unwrap().as_deref(),
            Some("sealed in transit")
        );
        say(&format!(
            "docker (e): HTTPS write on node1 read on node2 and node3, plain HTTP refused, 3/3 healthy over TLS, \
             node1 reloaded its certificate on SIGHUP in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
    });
}
