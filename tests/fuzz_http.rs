//! A property fuzz of the REST API: arbitrary methods, request targets (percent-encoding, bytes that are not
//! UTF-8, `..`, very long segments, `_system/`, odd query parameters), headers and bodies (random bytes,
//! random JSON, batches and NDJSON of arbitrary fields), each sent byte for byte over a fresh connection to
//! one real node. Every request must be answered within a deadline and never with a 5xx; every error answer
//! with a body must be the JSON error shape; afterwards the node must still be healthy and serve writes.
//!
//! The seed and the case count are fixed (about 10-20 s in a debug build), so that CI sends the same requests
//! every time and a failure reproduces; proptest shrinks a failing case and prints it.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How many requests one run sends.
const CASES: u32 = 15_000;
/// Longest a request may take to be answered before it counts as a hang.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// One request, as bytes on the wire.
#[derive(Debug, Clone)]
struct Case {
    method: String,
    target: Vec<u8>,
    /// Header lines without CR LF; `Host` is among them unless the case leaves it out.
    headers: Vec<Vec<u8>>,
    body: Vec<u8>,
}

impl Case {
    fn wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.target.len() + self.body.len() + 256);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(b" HTTP/1.1\r\nConnection: close\r\n");
        for header in &self.headers {
            out.extend_from_slice(header);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

fn percent_encoded(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|b| format!("%{b:02X}").into_bytes()).collect()
}

/// Bytes that may stand in a request target without ending it (no space, CR, LF).
fn target_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(
        any::<u8>().prop_filter("not a separator", |b| !b" \r\n".contains(b)),
        1..max,
    )
}

fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z0-9_.~-]{1,12}".prop_map(String::into_bytes),
        1 => Just(b"..".to_vec()),
        1 => Just(b".".to_vec()),
        1 => Just(b"_system".to_vec()),
        1 => Just(Vec::new()),
        2 => vec(any::<u8>(), 1..4).prop_map(|b| percent_encoded(&b)),
        1 => prop_oneof![Just("%"), Just("%zz"), Just("%F"), Just("%2e%2e"), Just("%2F"), Just("%00")]
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => (1usize..6_000).prop_map(|n| vec![b'k'; n]),
        1 => vec(0x80u8..=0xff, 1..4),
        1 => target_bytes(8),
    ]
}

fn route() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "api/v1/kv",
        "api/v1/kv/_system",
        "api/v1/query",
        "api/v1/import",
        "api/v1/export",
        "api/v1/watch",
        "api/v1/cluster/nodes",
        "api/v1/system/info",
        "api/v1/system/config",
        "api/v1/perf/metrics",
        "api/v1/perf/logs",
        "api/v1/perf/dashboard",
        "api/v1",
        "healthz",
        "readyz",
        "ui",
        "",
    ])
}

fn query() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "secret", "cas", "recurse", "tree", "prefix", "encoding", "level", "limit", "since", "keys", "",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        target_bytes(6),
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "true",
            "false",
            "1",
            "0",
            "",
            "maybe",
            "base64",
            "utf8",
            "debug",
            "-1",
            "99999999999999999999",
            "1-ff",
            "0-0",
            "%FF",
            "a/b/",
            "..",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        target_bytes(12),
        (1usize..3_000).prop_map(|n| vec![b'v'; n]),
    ];
    vec((name, value, any::<bool>()), 0..4).prop_map(|pairs| {
        let mut out = Vec::new();
        for (i, (name, value, with_value)) in pairs.into_iter().enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            out.extend_from_slice(&name);
            if with_value {
                out.push(b'=');
                out.extend_from_slice(&value);
            }
        }
        out
    })
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    let path = (route(), vec(segment(), 0..5), any::<bool>()).prop_map(|(route, segments, slash)| {
        let mut out = b"/".to_vec();
        out.extend_from_slice(route.as_bytes());
        for segment in segments {
            out.push(b'/');
            out.extend_from_slice(&segment);
        }
        if slash {
            out.push(b'/');
        }
        out
    });
    // Well-formed targets too, so that a fair share of requests reaches the handlers' success paths.
    let plausible = (
        prop_oneof![
            3 => Just("api/v1/kv"),
            1 => Just("api/v1/query"),
            1 => Just("api/v1/import"),
            2 => route(),
        ],
        vec("[a-c]{1,2}", 0..3),
        prop::option::of(prop::sample::select(vec![
            "secret=true",
            "recurse=true",
            "tree=true",
            "cas=0",
            "prefix=a",
            "limit=5",
            "level=info",
        ])),
    )
        .prop_map(|(route, segments, query)| {
            let mut out = format!("/{route}");
            for segment in segments {
                out.push('/');
                out.push_str(&segment);
            }
            if let Some(query) = query {
                out.push('?');
                out.push_str(query);
            }
            out.into_bytes()
        });
    // One percent-encoded segment of arbitrary bytes (often not UTF-8) under a route that decodes it.
    let encoded = (
        prop::sample::select(vec!["ui", "api/v1/kv", "api/v1/watch", "api/v1/kv/a"]),
        vec(any::<u8>(), 1..4),
    )
        .prop_map(|(route, bytes)| [format!("/{route}/").as_bytes(), &percent_encoded(&bytes)].concat());
    prop_oneof![
        12 => plausible,
        3 => encoded,
        20 => (path, prop::option::of(query())).prop_map(|(mut path, query)| {
            if let Some(query) = query {
                path.push(b'?');
                path.extend_from_slice(&query);
            }
            path
        }),
        1 => Just(b"*".to_vec()),
        1 => target_bytes(40),
        1 => Just([b"/api/v1/kv/".as_slice(), &vec![b'k'; 70_000]].concat()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::from),
            vec(("[a-z_]{1,8}", inner), 0..6).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Objects with the field names batches and exports use, holding arbitrary values.
fn entry_like() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "key",
        "verb",
        "value",
        "secret",
        "cas",
        "content_type",
        "encoding",
        "deleted",
        "version",
        "extra",
    ]);
    let value = prop_oneof![
        json_value(),
        prop::sample::select(vec![
            "get",
            "set",
            "put",
            "delete",
            "base64",
            "utf8",
            "a/b",
            "_system/x",
            "0"
        ])
        .prop_map(Value::from),
        "[0-9]{1,20}-[0-9a-f]{1,16}".prop_map(Value::from),
    ];
    vec((field, value), 0..7)
        .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// A batch of well-formed ops on a few keys.
fn valid_ops() -> impl Strategy<Value = Value> {
    let op = (
        "[a-c]{1,2}/[a-c]{1,2}",
        prop::sample::select(vec!["get", "set", "delete"]),
        "[a-z]{0,8}",
        any::<bool>(),
    )
        .prop_map(|(key, verb, value, secret)| serde_json::json!({"key": key, "verb": verb, "value": value, "secret": secret}));
    vec(op, 1..5).prop_map(Value::from)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => valid_ops().prop_map(|v| v.to_string().into_bytes()),
        3 => Just(Vec::new()),
        2 => vec(any::<u8>(), 0..2048),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => vec(entry_like(), 0..8).prop_map(|ops| Value::from(ops).to_string().into_bytes()),
        2 => vec(entry_like(), 0..8).prop_map(|lines| {
            lines.iter().map(|l| format!("{l}\n")).collect::<String>().into_bytes()
        }),
    ]
}

fn headers(addr: SocketAddr) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let own = format!("Host: {addr}");
    let host = prop_oneof![
        8 => Just(Some(own.into_bytes())),
        1 => prop::sample::select(vec!["Host: evil.example", "Host: ", "Host: [::1", "Host: localhost"])
            .prop_map(|h| Some(h.as_bytes().to_vec())),
        1 => Just(None),
    ];
    let content_type = prop_oneof![
        4 => Just(None),
        4 => prop::sample::select(vec![
            "application/json",
            "application/x-ndjson",
            "application/jsonl",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=utf-8",
            "",
        ])
        .prop_map(|t| Some(t.as_bytes().to_vec())),
        1 => vec(0x20u8..=0xff, 0..300).prop_map(Some),
    ]
    .prop_map(|t| t.map(|t| [b"Content-Type: ".as_slice(), &t].concat()));
    let browser = prop::option::weighted(
        0.25,
        prop::sample::select(vec![
            "Origin: http://evil.example",
            "Origin: null",
            "Sec-Fetch-Site: cross-site",
            "Sec-Fetch-Site: same-origin",
            "If-None-Match: \"1-1\"",
            "If-None-Match: *",
            "Accept: text/event-stream",
        ]),
    )
    .prop_map(|h| h.map(|h| h.as_bytes().to_vec()));
    let extra = prop::option::of(("x-[a-z]{1,8}", vec(0x20u8..=0xff, 0..64)))
        .prop_map(|h| h.map(|(name, value)| [name.as_bytes(), b": ", &value].concat()));
    (host, content_type, browser, extra).prop_map(|(host, content_type, browser, extra)| {
        [host, content_type, browser, extra].into_iter().flatten().collect()
    })
}

fn case(addr: SocketAddr) -> impl Strategy<Value = Case> {
    let method = prop_oneof![
        8 => prop::sample::select(vec!["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]).prop_map(String::from),
        1 => "[A-Z]{1,10}",
    ];
    (method, target(), headers(addr), body()).prop_map(|(method, target, headers, body)| Case {
        method,
        target,
        headers,
        body,
    })
}

/// Status, headers (lower-cased names) and as much of the body as arrived: all of it, or the start of an
/// event stream, which never ends.
async fn exchange(addr: SocketAddr, case: &Case) -> Result<(u16, String, Vec<u8>), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    // The node may answer and close before the whole request is written (a 414, a 400 from the parser).
    let _ = stream.write_all(&case.wire()).await;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            if head.contains("content-type: text/event-stream") {
                return parse(&received);
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return parse(&received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

fn parse(received: &[u8]) -> Result<(u16, String, Vec<u8>), String> {
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete answer: {:?}", String::from_utf8_lossy(received)))?;
    let head = String::from_utf8_lossy(&received[..end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {head}"))?;
    Ok((status, head.to_ascii_lowercase(), received[end + 4..].to_vec()))
}

async fn check(addr: SocketAddr, case: Case, seen: &Mutex<BTreeMap<u16, u32>>) -> Result<(), TestCaseError> {
    let answer = tokio::time::timeout(ANSWER_DEADLINE, exchange(addr, &case))
        .await
        .map_err(|_| TestCaseError::fail(format!("no answer within {ANSWER_DEADLINE:?}")))?;
    let (status, head, body) = answer.map_err(TestCaseError::fail)?;
    *seen.lock().unwrap().entry(status).or_default() += 1;
    prop_assert!(
        status < 500,
        "status {status}: {head}\n{}",
        String::from_utf8_lossy(&body)
    );
    if status >= 400 && !body.is_empty() && case.method != "HEAD" {
        let chunked = head.contains("transfer-encoding: chunked");
        prop_assert!(!chunked, "an error answer is not streamed: {head}");
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            TestCaseError::fail(format!(
                "error body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            ))
        })?;
        prop_assert!(json["error"].is_string() && json["code"].is_string(), "{json}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_get_timely_non_5xx_json_answers_and_the_node_stays_healthy() {
    let (_dir, node) = common::start_with(|c| c.allowed_hosts = Vec::new()).await;
    let addr = node.addr;
    let runtime = tokio::runtime::Handle::current();
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let statuses = seen.clone();
    let result = tokio::task::spawn_blocking(move || {
        // A fixed seed: every run sends the same requests, so a failure in CI reproduces anywhere.
        let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
        let mut runner = TestRunner::new_with_rng(config, rng);
        runner.run(&case(addr), |case| runtime.block_on(check(addr, case, &statuses)))
    })
    .await
    .unwrap();
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // The generator reaches handlers (successes) as well as every kind of refusal.
    let seen = seen.lock().unwrap().clone();
    println!("answers by status: {seen:?}");
    for status in [200, 400, 404, 405, 414, 415, 421] {
        assert!(seen.contains_key(&status), "no request was answered {status}: {seen:?}");
    }
    let health = node.client.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    node.put("after/fuzz", "still writes").await;
    assert_eq!(node.get("after/fuzz").await.as_deref(), Some(&b"still writes"[..]));
    node.stop().await;
}
