//! Access control across real nodes (prod mode, HTTP and gRPC on loopback): every route under every kind
//! of token on a node other than the one that made it, revocation within a second, tokens made on one side
//! of a partition working on the other after it heals, watches that carry only what a token may read.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cave::config::{Config, Mode};
use cave::secrets::MasterKey;
use common::{client, client_with_token, TestNode, ROOT_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

/// Replication of a token must happen well within this (anti-entropy every 500 ms here).
const CONVERGE: Duration = Duration::from_secs(30);

struct Member {
    node: TestNode,
    _dir: tempfile::TempDir,
}

/// A prod member with the test root token, seeded with `seeds` (their advertised addresses), advertising
/// `advertise` if given (a proxy that can cut it off).
async fn member(key: &MasterKey, seeds: Vec<String>, grpc: std::net::TcpListener, advertise: Option<String>) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        mode: Mode::Prod,
        data_dir: dir.path().join("data"),
        cluster_key: Some(key.clone()),
        peers: seeds,
        mdns: false,
        grpc_addr: grpc.local_addr().unwrap(),
        advertise_addr: advertise,
        anti_entropy_interval: Duration::from_millis(500),
        discovery_window: Duration::ZERO,
        ..Config::default()
    };
    let node = TestNode::start_config_with_grpc(config, Some(grpc)).await;
    Member { node, _dir: dir }
}

fn grpc_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

/// `n` members in a chain (each seeded with the one before).
async fn cluster(n: usize) -> Vec<Member> {
    let key = MasterKey::generate();
    let mut members: Vec<Member> = Vec::new();
    for _ in 0..n {
        let seeds = members
            .last()
            .map(|m| vec![m.node.config.grpc_addr.to_string()])
            .unwrap_or_default();
        members.push(member(&key, seeds, grpc_listener(), None).await);
    }
    members
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + CONVERGE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send(c: &reqwest::Client, method: Method, url: &str, body: Option<(&str, String)>) -> (u16, String) {
    let mut request = c.request(method, url);
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // A watch is an endless stream: its status is what counts.
    let is_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    let text = if is_stream {
        String::new()
    } else {
        response.text().await.unwrap()
    };
    (status, text)
}

/// PUT a policy through `root` on `n`.
async fn put_policy(n: &TestNode, name: &str, rules: Value) {
    let (status, text) = send(
        &n.client,
        Method::PUT,
        &n.url(&format!("/api/v1/acl/policies/{name}")),
        Some(("application/json", json!({ "rules": rules }).to_string())),
    )
    .await;
    assert_eq!(status, 200, "PUT policy {name}: {text}");
}

/// Make a token on `n`; returns (accessor, token).
async fn make_token(n: &TestNode, policies: &[&str], ttl: Option<&str>) -> (String, String) {
    let mut body = json!({"policies": policies, "description": "test"});
    if let Some(ttl) = ttl {
        body["ttl"] = json!(ttl);
    }
    let (status, text) = send(
        &n.client,
        Method::POST,
        &n.url("/api/v1/acl/tokens"),
        Some(("application/json", body.to_string())),
    )
    .await;
    assert_eq!(status, 200, "make token: {text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert!(answer["token"].as_str().unwrap().starts_with("cave_"), "{answer}");
    (
        answer["accessor"].as_str().unwrap().into(),
        answer["token"].as_str().unwrap().into(),
    )
}

async fn whoami_status(n: &TestNode, token: &str) -> u16 {
    client_with_token(token)
        .get(n.url("/api/v1/acl/whoami"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A route of the matrix: method, path, body (content type and text), the capabilities it needs (`None`:
/// open; `Some([])`: any valid token).
type Route<'a> = (Method, String, Option<(&'a str, String)>, Option<Vec<&'a str>>);

const KEY_CAPS: [&str; 5] = ["read", "list", "write", "delete", "secret"];

/// The capabilities of a route, as the policy names of the tokens that test it: `with` holds exactly
/// `needs`, `without` everything but the last of them.
fn policy_name(caps: &[&str]) -> String {
    if caps.is_empty() {
        "nothing".into()
    } else {
        format!("only-{}", caps.join("-"))
    }
}

fn without_name(caps: &[&str]) -> String {
    format!("lacks-{}", caps.join("-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_kind_of_token_on_another_node_and_revocation_is_fast() {
    let members = cluster(3).await;
    let (a, b, c) = (&members[0].node, &members[1].node, &members[2].node);
    a.put("m/k", "plain").await;
    a.put_secret("m/s", "the-secret-plaintext").await;
    a.put("m/folder/x", "1").await;
    // An import line for m/i: an export line of m/k with another key (same version, so harmless).
    let line = a
        .export_text()
        .await
        .lines()
        .find(|l| l.contains("\"m/k\""))
        .unwrap()
        .replace("\"m/k\"", "\"m/i\"");

    // Each route: method, path, body, the capabilities it needs (None: open; Some([]) any valid token).
    let admin = Some(vec!["admin"]);
    let routes: Vec<Route> = vec![
        (Method::GET, "/api/v1/kv/m/k".into(), None, Some(vec!["read"])),
        (Method::HEAD, "/api/v1/kv/m/k".into(), None, Some(vec!["read"])),
        (
            Method::GET,
            "/api/v1/kv/m/s?secret=true".into(),
            None,
            Some(vec!["read", "secret"]),
        ),
        (Method::GET, "/api/v1/kv/m/".into(), None, Some(vec!["list"])),
        (
            Method::GET,
            "/api/v1/kv/m/?recurse=true".into(),
            None,
            Some(vec!["list"]),
        ),
        (
            Method::GET,
            "/api/v1/kv/m/?tree=true&limit=10".into(),
            None,
            Some(vec!["list"]),
        ),
        (Method::GET, "/api/v1/kv/".into(), None, Some(vec!["list"])),
        (
            Method::PUT,
            "/api/v1/kv/m/w".into(),
            Some(("text/plain", "v".into())),
            Some(vec!["write"]),
        ),
        (
            Method::POST,
            "/api/v1/kv/m/w2".into(),
            Some(("text/plain", "v".into())),
            Some(vec!["write"]),
        ),
        (Method::DELETE, "/api/v1/kv/m/gone".into(), None, Some(vec!["delete"])),
        (
            Method::DELETE,
            "/api/v1/kv/m/folder/?recurse=true".into(),
            None,
            Some(vec!["delete"]),
        ),
        (
            Method::POST,
            "/api/v1/query".into(),
            Some(("application/json", r#"[{"key":"m/k","verb":"get"}]"#.into())),
            Some(vec!["read"]),
        ),
        (
            Method::POST,
            "/api/v1/query".into(),
            Some((
                "application/json",
                r#"[{"key":"m/s","verb":"get","secret":true}]"#.into(),
            )),
            Some(vec!["read", "secret"]),
        ),
        (
            Method::POST,
            "/api/v1/query".into(),
            Some(("application/json", r#"[{"key":"m/q","verb":"set","value":"v"}]"#.into())),
            Some(vec!["write"]),
        ),
        (
            Method::POST,
            "/api/v1/query".into(),
            Some(("application/json", r#"[{"key":"m/q","verb":"delete"}]"#.into())),
            Some(vec!["delete"]),
        ),
        (Method::GET, "/api/v1/watch/m".into(), None, Some(vec!["read"])),
        (Method::GET, "/api/v1/export?prefix=m".into(), None, Some(vec!["list"])),
        (
            Method::POST,
            "/api/v1/import".into(),
            Some(("application/x-ndjson", line)),
            Some(vec!["write"]),
        ),
        (Method::GET, "/api/v1/cluster/nodes".into(), None, admin.clone()),
        (Method::GET, "/api/v1/system/config".into(), None, admin.clone()),
        (Method::GET, "/api/v1/perf/logs".into(), None, admin.clone()),
        (Method::GET, "/api/v1/acl/policies".into(), None, admin.clone()),
        (Method::GET, "/api/v1/acl/policies/nothing".into(), None, admin.clone()),
        (
            Method::PUT,
            "/api/v1/acl/policies/made-in-matrix".into(),
            Some(("application/json", r#"{"rules":[]}"#.into())),
            admin.clone(),
        ),
        (
            Method::DELETE,
            "/api/v1/acl/policies/doomed".into(),
            None,
            admin.clone(),
        ),
        (Method::GET, "/api/v1/acl/tokens".into(), None, admin.clone()),
        (
            Method::POST,
            "/api/v1/acl/tokens".into(),
            Some(("application/json", r#"{"policies":["nothing"]}"#.into())),
            admin.clone(),
        ),
        (Method::GET, "/api/v1/acl/whoami".into(), None, Some(vec![])),
        (Method::GET, "/api/v1/system/info".into(), None, Some(vec![])),
        (Method::GET, "/api/v1/perf/metrics".into(), None, Some(vec![])),
        (Method::GET, "/api/v1/perf/dashboard".into(), None, Some(vec![])),
        (Method::GET, "/healthz".into(), None, None),
        (Method::GET, "/readyz".into(), None, None),
        (Method::GET, "/ui/".into(), None, None),
    ];

    // Policies on node A: for each set of capabilities a route needs, one with exactly those and one with
    // everything but the last of them.
    let mut sets: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (_, _, _, needs) in &routes {
        if let Some(needs) = needs {
            sets.insert(policy_name(needs), needs.clone());
        }
    }
    for (name, caps) in &sets {
        let with = if caps.is_empty() {
            json!([])
        } else {
            json!([{"prefix": "", "allow": caps}])
        };
        put_policy(a, name, with).await;
        if let Some(last) = caps.last() {
            let lacking: Vec<&str> = KEY_CAPS.iter().copied().filter(|c| c != last).collect();
            put_policy(a, &without_name(caps), json!([{"prefix": "", "allow": lacking}])).await;
        }
    }
    put_policy(a, "doomed", json!([])).await;
    let mut with_tokens = BTreeMap::new();
    let mut without_tokens = BTreeMap::new();
    for (name, caps) in &sets {
        with_tokens.insert(name.clone(), make_token(a, &[name], None).await.1);
        if !caps.is_empty() {
            without_tokens.insert(name.clone(), make_token(a, &[&without_name(caps)], None).await.1);
        }
    }
    let (expired_accessor, expired) = make_token(a, &[&policy_name(&["read"])], Some("1ms")).await;
    let (revoked_accessor, revoked) = make_token(a, &["nothing"], None).await;
    // Everything made on A works on B (the expired token is there too, but refused).
    for token in with_tokens.values().chain(without_tokens.values()).chain([&revoked]) {
        eventually("B accepts the tokens made on A", || async {
            whoami_status(b, token).await == 200
        })
        .await;
    }
    eventually("B holds the expired token's record", || async {
        b.get_json("/api/v1/acl/tokens")
            .await
            .to_string()
            .contains(&expired_accessor)
    })
    .await;
    eventually("B holds policy doomed", || async {
        b.client
            .get(b.url("/api/v1/acl/policies/doomed"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;

    let none = client();
    let wrong = client_with_token("cave_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let expired = client_with_token(&expired);
    let mut checked = 0;
    for (method, path, body, needs) in &routes {
        let url = b.url(path);
        let Some(needs) = needs else {
            for who in [&none, &wrong, &expired] {
                let (status, text) = send(who, method.clone(), &url, body.clone()).await;
                assert_eq!(status, 200, "{method} {path} is open: {text}");
            }
            checked += 3;
            continue;
        };
        let name = policy_name(needs);
        for (who, kind) in [
            (&none, "no token"),
            (&wrong, "a wrong token"),
            (&expired, "an expired token"),
        ] {
            let (status, text) = send(who, method.clone(), &url, body.clone()).await;
            assert_eq!(status, 401, "{method} {path} with {kind}: {text}");
            if *method != Method::HEAD {
                let json: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(json["code"], "unauthorized", "{text}");
            }
            checked += 1;
        }
        if let Some(without) = without_tokens.get(&name) {
            let (status, text) = send(&client_with_token(without), method.clone(), &url, body.clone()).await;
            assert_eq!(status, 403, "{method} {path} without {needs:?}: {text}");
            if *method != Method::HEAD {
                let missing = needs.last().unwrap();
                assert!(
                    text.contains(&format!("lacks the {missing} capability")),
                    "{method} {path}: {text}"
                );
            }
            checked += 1;
        }
        let (status, text) = send(
            &client_with_token(&with_tokens[&name]),
            method.clone(),
            &url,
            body.clone(),
        )
        .await;
        assert_eq!(status, 200, "{method} {path} with {needs:?}: {text}");
        if path.contains("secret=true") && *method == Method::GET {
            assert_eq!(text, "the-secret-plaintext");
        }
        checked += 1;
    }
    assert!(checked > 150, "{checked} checks");

    // A token without list sees nothing it may not list; a batch with one forbidden op is refused whole.
    let reader = client_with_token(&with_tokens[&policy_name(&["write"])]);
    let (status, text) = send(
        &reader,
        Method::POST,
        &b.url("/api/v1/query"),
        Some((
            "application/json",
            r#"[{"key":"m/ok","verb":"set","value":"v"},{"key":"m/k","verb":"get"}]"#.into(),
        )),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("op 1") && text.contains("read"), "{text}");
    assert_eq!(b.get("m/ok").await, None, "nothing of a refused batch is applied");

    // Revocation on A is refused on C within a second.
    eventually("C accepts the token", || async {
        whoami_status(c, &revoked).await == 200
    })
    .await;
    let revoke = a
        .client
        .delete(a.url(&format!("/api/v1/acl/tokens/{revoked_accessor}")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let revoked_at = Instant::now();
    while whoami_status(c, &revoked).await != 401 {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "C still accepts a token revoked on A 1 s ago"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lag = revoked_at.elapsed();
    eprintln!("revocation on node 1 refused on node 3 after {} ms", lag.as_millis());
    // The listing never shows a secret, and the revoked one is gone.
    let listing = c.get_json("/api/v1/acl/tokens").await.to_string();
    assert!(
        !listing.contains("cave_") && !listing.contains(&revoked_accessor),
        "{listing}"
    );
    for m in members {
        m.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_with_a_narrow_token_receives_nothing_outside_its_prefix() {
    let members = cluster(2).await;
    let (a, b) = (&members[0].node, &members[1].node);
    put_policy(a, "mine", json!([{"prefix": "w/mine/", "allow": ["read"]}])).await;
    let (_, token) = make_token(a, &["mine"], None).await;
    let narrow = client_with_token(&token);
    // The token and its policy replicate to B separately: wait until B knows both (a read under the prefix
    // is then a 404, not a 403).
    eventually("B accepts the token and knows its policy", || async {
        whoami_status(b, &token).await == 200 && send(&narrow, Method::GET, &b.kv("w/mine/probe"), None).await.0 == 404
    })
    .await;
    // Outside its prefix the watch is refused outright; over the root it opens, filtered.
    let (status, _) = send(&narrow, Method::GET, &b.url("/api/v1/watch/w/other"), None).await;
    assert_eq!(status, 403);
    let mut stream = narrow.get(b.url("/api/v1/watch/")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    while !seen.contains("event: ready") {
        seen.push_str(&String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()));
    }
    for round in 0..3 {
        a.put(&format!("w/other/{round}"), "not yours").await;
        a.put(&format!("w/minex/{round}"), "not yours either").await;
        a.put(&format!("w/mine/{round}"), "yours").await;
        // Events arrive in B's commit order: once the last write shows, the others came before it.
        let deadline = Instant::now() + CONVERGE;
        while !seen.contains(&format!("\"w/mine/{round}\"")) {
            let chunk = tokio::time::timeout_at(deadline.into(), stream.chunk())
                .await
                .expect("event in time");
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
        }
    }
    assert!(
        !seen.contains("w/other") && !seen.contains("w/minex") && !seen.contains("not yours"),
        "{seen}"
    );
    drop(stream);
    for m in members {
        m.node.stop().await;
    }
}

/// A TCP forwarder in front of a node's gRPC port that the test can cut: peers reach the node only
/// through it (the node advertises it), so cutting it partitions the node from the cluster.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue; // dropped: the connection closes at once
                }
                let mut watch = watch.clone();
                connections.spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Proxy { addr, cut, tasks }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_during_a_partition_works_on_the_other_side_after_heal() {
    let key = MasterKey::generate();
    let (grpc_a, grpc_b) = (grpc_listener(), grpc_listener());
    let proxy_a = Proxy::start(grpc_a.local_addr().unwrap()).await;
    let proxy_b = Proxy::start(grpc_b.local_addr().unwrap()).await;
    let a = member(&key, vec![], grpc_a, Some(proxy_a.addr.to_string())).await;
    let b = member(
        &key,
        vec![proxy_a.addr.to_string()],
        grpc_b,
        Some(proxy_b.addr.to_string()),
    )
    .await;
    let (a, b) = (&a.node, &b.node);
    put_policy(a, "p", json!([{"prefix": "", "allow": ["read"]}])).await;
    let (old_accessor, old) = make_token(a, &["p"], None).await;
    eventually("B accepts the token made before the partition", || async {
        whoami_status(b, &old).await == 200
    })
    .await;
    // The token and its policy are separate keys and may arrive apart: B makes a token of "p" below.
    eventually("B holds the policy", || async {
        let url = b.url("/api/v1/acl/policies/p");
        send(&b.client, Method::GET, &url, None).await.0 == 200
    })
    .await;

    proxy_a.set_cut(true);
    proxy_b.set_cut(true);
    // During the partition: a token made on B, and a revocation on A.
    let (_, new) = make_token(b, &["p"], None).await;
    let revoked = a
        .client
        .delete(a.url(&format!("/api/v1/acl/tokens/{old_accessor}")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        whoami_status(b, &new).await,
        200,
        "the side that made it accepts it at once"
    );
    assert_eq!(
        whoami_status(a, &old).await,
        401,
        "the side that revoked it refuses it at once"
    );
    // The partition is real: after several anti-entropy rounds neither side has heard.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        whoami_status(a, &new).await,
        401,
        "A cannot know a token made on B during the partition"
    );
    assert_eq!(
        whoami_status(b, &old).await,
        200,
        "B has not heard of the revocation (the documented window)"
    );

    proxy_a.set_cut(false);
    proxy_b.set_cut(false);
    let healed = Instant::now();
    eventually("A accepts the token made on B", || async {
        whoami_status(a, &new).await == 200
    })
    .await;
    eventually("B refuses the token revoked on A", || async {
        whoami_status(b, &old).await == 401
    })
    .await;
    eprintln!(
        "after heal: token and revocation crossed in {} ms",
        healed.elapsed().as_millis()
    );
}

/// No token's plaintext is in the data directory, the log, the metrics or an export; a secret's neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_plaintext_reaches_disk_logs_metrics_or_exports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = common::child::Cave::start(
        &data,
        &[
            "--mode",
            "prod",
            "--mdns",
            "false",
            "--discovery-window",
            "0s",
            "--acl-root-token",
            ROOT_TOKEN,
        ],
    )
    .await;
    let root = client_with_token(ROOT_TOKEN);
    let url = |p: &str| format!("{}{p}", node.base);
    let ok = |r: reqwest::Response| async move {
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{status}: {text}");
        text
    };
    ok(root
        .put(url("/api/v1/acl/policies/app"))
        .header("content-type", "application/json")
        .body(r#"{"rules":[{"prefix":"app/","allow":["read","write","list","secret"]}]}"#)
        .send()
        .await
        .unwrap())
    .await;
    let made: Value = serde_json::from_str(
        &ok(root
            .post(url("/api/v1/acl/tokens"))
            .header("content-type", "application/json")
            .body(r#"{"policies":["app"],"description":"app"}"#)
            .send()
            .await
            .unwrap())
        .await,
    )
    .unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    let app = client_with_token(&token);
    ok(app
        .put(url("/api/v1/kv/app/marker"))
        .body("plain-marker-value")
        .send()
        .await
        .unwrap())
    .await;
    ok(app
        .put(url("/api/v1/kv/app/pw?secret=true"))
        .body("secret-plaintext-42")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(
        ok(app.get(url("/api/v1/kv/app/pw?secret=true")).send().await.unwrap()).await,
        "secret-plaintext-42"
    );
    // Refused requests too: a wrong token and a token on a key it may not touch.
    let wrong = "cave_wrongwrongwrongwrongwrongwrongwrongwrong1";
    assert_eq!(
        client_with_token(wrong)
            .get(url("/api/v1/kv/app/marker"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(app.get(url("/api/v1/kv/other")).send().await.unwrap().status(), 403);
    let export = ok(root.get(url("/api/v1/export")).send().await.unwrap()).await;
    let metrics = ok(root.get(url("/api/v1/perf/metrics")).send().await.unwrap()).await;
    let logs = ok(root.get(url("/api/v1/perf/logs")).send().await.unwrap()).await;
    assert!(export.contains("app/marker"), "{export}");
    node.sigterm();
    let (status, log) = node.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("serving HTTP"), "the log was captured: {log}");
    for (name, text) in [
        ("export", &export),
        ("metrics", &metrics),
        ("logs", &logs),
        ("stderr", &log),
    ] {
        for plaintext in [token.as_str(), wrong, ROOT_TOKEN, "secret-plaintext-42"] {
            assert!(!text.contains(plaintext), "the {name} holds {plaintext:?}");
        }
    }
    for plaintext in [token.as_str(), wrong, ROOT_TOKEN, "secret-plaintext-42"] {
        common::assert_no_plaintext_below(&data, plaintext, "plain-marker-value");
    }
    // The node kept only the token's hash, and it is in the database file.
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let db = std::fs::read(data.join("cave.db")).unwrap();
    let wal = std::fs::read(data.join("cave.db-wal")).unwrap_or_default();
    assert!(
        common::contains_bytes(&db, hash.as_bytes()) || common::contains_bytes(&wal, hash.as_bytes()),
        "the token's hash is stored"
    );
}

/// `cave acl ...` against a running node: an operator needs no curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_policies_and_tokens_and_revokes_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::child::Cave::start(
        &dir.path().join("data"),
        &[
            "--mode",
            "prod",
            "--mdns",
            "false",
            "--discovery-window",
            "0s",
            "--acl-root-token",
            ROOT_TOKEN,
        ],
    )
    .await;
    let addr = node.base.strip_prefix("http://").unwrap().to_string();
    let cave = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cave"));
        command.env_clear().arg("acl").args(args).args(["--addr", &addr]);
        if let Some(token) = token {
            command.env("CAVE_TOKEN", token);
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        (output.status.code(), stdout, stderr)
    };
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"rules":[{"prefix":"app/","allow":["read","write"]}]}"#).unwrap();
    let (code, _, stderr) = cave(&["policy", "put", "app", file.to_str().unwrap()], None);
    assert_eq!(code, Some(1), "no token: refused");
    assert!(stderr.contains("401") && stderr.contains("CAVE_TOKEN"), "{stderr}");
    let (code, out, err) = cave(&["policy", "put", "app", file.to_str().unwrap()], Some(ROOT_TOKEN));
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, _) = cave(&["policy", "get", "app"], Some(ROOT_TOKEN));
    assert_eq!(code, Some(0));
    assert!(out.contains("app/"), "{out}");
    let (code, out, err) = cave(
        &[
            "token",
            "create",
            "--policy",
            "app",
            "--description",
            "ci",
            "--ttl",
            "1h",
        ],
        Some(ROOT_TOKEN),
    );
    assert_eq!(code, Some(0), "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let (token, accessor) = (made["token"].as_str().unwrap(), made["accessor"].as_str().unwrap());
    let app = client_with_token(token);
    let put = app
        .put(format!("{}/api/v1/kv/app/x", node.base))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let (code, out, _) = cave(&["token", "list"], Some(ROOT_TOKEN));
    assert_eq!(code, Some(0));
    assert!(out.contains(accessor) && !out.contains(token), "{out}");
    let (code, _, err) = cave(&["token", "list"], Some(token));
    assert_eq!(code, Some(1));
    assert!(err.contains("403") && err.contains("admin"), "{err}");
    let (code, _, err) = cave(&["token", "revoke", accessor], Some(ROOT_TOKEN));
    assert_eq!(code, Some(0), "{err}");
    let put = app
        .put(format!("{}/api/v1/kv/app/x", node.base))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 401);
    let (code, _, _) = cave(&["policy", "delete", "app"], Some(ROOT_TOKEN));
    assert_eq!(code, Some(0));
    let (code, out, _) = cave(&["policy", "list"], Some(ROOT_TOKEN));
    assert_eq!((code, out.trim()), (Some(0), "[]"));
    node.stop().await;
}

/// A founding prod node without a root token makes one, keeps it 0600 and prints it; a node that joins
/// accepts it once replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_founding_node_makes_a_root_token_the_others_accept() {
    let key = MasterKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let grpc = grpc_listener();
    let config = Config {
        mode: Mode::Prod,
        data_dir: dir.path().join("data"),
        cluster_key: Some(key.clone()),
        mdns: false,
        grpc_addr: grpc.local_addr().unwrap(),
        anti_entropy_interval: Duration::from_millis(500),
        discovery_window: Duration::ZERO,
        ..Config::default()
    };
    // Started without the helper's root token: the node must make its own.
    let founder = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = common::serve_on_own_thread(config.clone(), listener, Some(grpc), async move {
            let _ = rx.await;
        });
        (addr, tx, done)
    };
    let path = dir.path().join("data").join(cave::node::ROOT_TOKEN_FILE);
    eventually("the root token file exists", || async { path.exists() }).await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let root = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(root.starts_with("cave_"));
    let base = format!("http://{}", founder.0);
    eventually("the founder accepts its root token", || async {
        client_with_token(&root)
            .get(format!("{base}/api/v1/acl/whoami"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let joiner = member(&key, vec![config.grpc_addr.to_string()], grpc_listener(), None).await;
    eventually("the joiner accepts the founder's root token", || async {
        whoami_status(&joiner.node, &root).await == 200
    })
    .await;
    assert!(
        !joiner.node.data_dir().join(cave::node::ROOT_TOKEN_FILE).exists(),
        "a joining node makes none"
    );
    joiner.node.stop().await;
    let _ = founder.1.send(());
    founder.2.await.unwrap().unwrap();
}
