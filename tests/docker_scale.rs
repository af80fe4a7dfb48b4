//! The scaled compose demo (`docker-compose.scale.yml`): one service `cave` run with `--scale cave=3`, whose
//! replicas find each other by DNS (`--peers dns:cave`, no mDNS, no host names). They form one cluster, a
//! write on one is read on the others, and a fourth replica added with `--scale cave=4` joins by itself.
//!
//! Needs Docker and Compose; without them the test prints a "skipped" line and passes, unless
//! `CAVE_REQUIRE_TOOLS=1`. The image is built from the test build of `cave` under its own tag, so that it
//! never races the image of `tests/docker.rs`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "cave:test-scale";
/// The root token every replica is given (access control is on in prod mode).
const ROOT_TOKEN: &str = "docker-scale-root-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(90);

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
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

/// The Compose command (`docker compose` or `docker-compose`), or `None` after saying why the test is skipped.
fn compose_command() -> Option<Vec<&'static str>> {
    let found = if !succeeds("docker", &["version", "--format", "{{.Server.Version}}"]) {
        Err("`docker version` fails: Docker is not installed or its daemon is not reachable")
    } else if succeeds("docker", &["compose", "version"]) {
        Ok(vec!["docker", "compose"])
    } else if succeeds("docker-compose", &["version"]) {
        Ok(vec!["docker-compose"])
    } else {
        Err("neither `docker compose` nor `docker-compose` works")
    };
    match found {
        Ok(command) => Some(command),
        Err(why) if std::env::var("CAVE_REQUIRE_TOOLS").as_deref() == Ok("1") => {
            panic!("CAVE_REQUIRE_TOOLS=1 but {why}")
        }
        Err(why) => {
            say(&format!("skipped docker_scale: {why}"));
            None
        }
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(program: &str, args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A compose project of `docker-compose.scale.yml`, removed with its volumes when dropped.
struct Project {
    compose: Vec<&'static str>,
    name: String,
    env: Vec<(String, String)>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        let file = repo().join("docker-compose.scale.yml").display().to_string();
        let mut all = self.compose[1..].to_vec();
        all.extend(["-f", &file, "-p", &self.name]);
        all.extend(args);
        run(self.compose[0], &all, &self.env)
    }

    fn check(&self, args: &[&str]) -> String {
        let output = self.compose(args);
        assert!(
            output.status.success(),
            "compose {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `http://127.0.0.1:PORT` of replica `index` (1-based), once it is published.
    fn base(&self, index: usize) -> String {
        let published = self.check(&["port", "--index", &index.to_string(), "cave", "2001"]);
        format!("http://{}", published.trim())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.compose(&["logs", "--no-color", "--tail", "40"]);
            say(&String::from_utf8_lossy(&logs.stdout));
        }
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "2"]);
    }
}

/// How many members each replica sees alive, `None` where it does not answer yet.
async fn alive(http: &reqwest::Client, bases: &[String]) -> Vec<Option<usize>> {
    let mut counts = Vec::new();
    for base in bases {
        let list = match http.get(format!("{base}/api/v1/cluster/nodes")).send().await {
            Ok(response) => response.json::<Vec<serde_json::Value>>().await.ok(),
            Err(_) => None,
        };
        counts.push(list.map(|l| l.iter().filter(|n| n["status"] == "alive").count()));
    }
    counts
}

async fn meshed(http: &reqwest::Client, bases: &[String], started: Instant) -> Duration {
    loop {
        let counts = alive(http, bases).await;
        if counts.iter().all(|c| *c == Some(bases.len() - 1)) {
            return started.elapsed();
        }
        assert!(started.elapsed() < DEADLINE, "replicas not meshed by DNS: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_service_finds_its_members_by_dns() {
    let Some(compose) = compose_command() else { return };
    let built = run(
        repo().join("scripts/docker-image.sh").to_str().unwrap(),
        &[IMAGE],
        &[("CAVE_BINARY".into(), env!("CARGO_BIN_EXE_cave").into())],
    );
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let project = Project {
        compose,
        name: format!("cavescale-{}-{:x}", std::process::id(), rand::random::<u32>()),
        env: vec![
            ("CAVE_IMAGE".into(), IMAGE.into()),
            (
                "CAVE_CLUSTER_KEY".into(),
                cave::secrets::MasterKey::generate().to_base64(),
            ),
            ("CAVE_ACL_ROOT_TOKEN".into(), ROOT_TOKEN.into()),
            ("CAVE_ANTI_ENTROPY_INTERVAL".into(), "1s".into()),
            ("CAVE_PUBLISH_IP".into(), "127.0.0.1".into()),
        ],
    };
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {ROOT_TOKEN}")).unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Compose v1 takes seconds per command on a busy machine: the mesh is timed from when the ports are known.
    project.check(&["up", "-d", "--scale", "cave=3"]);
    let bases: Vec<String> = (1..=3).map(|i| project.base(i)).collect();
    let took = meshed(&http, &bases, Instant::now()).await;
    say(&format!(
        "docker_scale: 3 replicas meshed by DNS {:.1}s after compose up",
        took.as_secs_f64()
    ));

    let put = http
        .put(format!("{}/api/v1/kv/scaled/greeting", bases[0]))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    for base in &bases[1..] {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = http.get(format!("{base}/api/v1/kv/scaled/greeting")).send().await;
            if let Ok(response) = got {
                if response.status() == 200 && response.text().await.unwrap() == "hello" {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{base} never got the write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Scale up: the new replica is found by the others' next resolution and finds them by its first.
    project.check(&["up", "-d", "--scale", "cave=4"]);
    let bases: Vec<String> = (1..=4).map(|i| project.base(i)).collect();
    let took = meshed(&http, &bases, Instant::now()).await;
    say(&format!(
        "docker_scale: a 4th replica joined {:.1}s after compose up",
        took.as_secs_f64()
    ));
}
