//! The `cave` binary as a process: graceful shutdown under load, durability across `kill -9`, and the data
//! directory lock.
#![cfg(unix)]

mod common;

use common::child::free_port;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// A running `cave` process. Killed if dropped while still running (a failing test leaves nothing behind).
struct Cave {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Cave {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Start `cave` on `data_dir` and `port` without waiting for it.
fn launch(data_dir: &Path, port: u16, extra: &[&str]) -> Cave {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cave"))
        .env_clear()
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .args(["--grpc-addr", "127.0.0.1:0", "--log-level", "info"])
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
    Cave {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
        reader: Some(reader),
    }
}

impl Cave {
    /// Start `cave` and wait until `/healthz` answers. The port is picked free just before; should another
    /// process grab it in between, the start is retried once on a new port.
    async fn start(data_dir: &Path, extra: &[&str]) -> Cave {
        let client = common::client();
        for attempt in 0..2 {
            let mut cave = launch(data_dir, free_port(), extra);
            let deadline = Instant::now() + DEADLINE;
            loop {
                if let Some(status) = cave.child.try_wait().unwrap() {
                    let log = cave.finish_log();
                    if attempt == 0 && log.contains("cannot listen on http_addr") {
                        break; // the port was taken meanwhile: try another
                    }
                    panic!("cave exited before it was ready ({status}):\n{log}");
                }
                let probe = client
                    .get(format!("{}/healthz", cave.base))
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await;
                if probe.is_ok_and(|r| r.status() == 200) {
                    return cave;
                }
                assert!(
                    Instant::now() < deadline,
                    "cave not ready in time:\n{}",
                    cave.log_text()
                );
                tokio::time::sleep(POLL).await;
            }
        }
        panic!("no free port for cave after two attempts");
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    fn sigterm(&self) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
    }

    /// Wait for the process to exit (polling, with a deadline); returns its status and full log.
    async fn wait_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.finish_log());
            }
            assert!(
                Instant::now() < deadline,
                "cave did not exit in time:\n{}",
                self.log_text()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM and expect a clean exit with status 0.
    async fn stop(mut self) {
        self.sigterm();
        let (status, log) = self.wait_exit().await;
        assert_eq!(status.code(), Some(0), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }

    /// The log so far.
    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The complete log of an exited process (stderr read to its end).
    fn finish_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log_text()
    }
}

/// PUT `value` at `key`; `true` only for a 200 (an acknowledged write).
async fn put(client: &reqwest::Client, base: &str, key: &str, value: &str) -> Result<bool, reqwest::Error> {
    let response = client
        .put(format!("{base}/api/v1/kv/{key}"))
        .body(value.to_string())
        .send()
        .await?;
    Ok(response.status() == 200)
}

/// Every acknowledged write reads back with its value.
async fn assert_all_readable(cave: &Cave, acked: &[(String, String)]) {
    let client = common::client();
    let reads = futures::stream::iter(acked)
        .map(|(key, value)| {
            let client = client.clone();
            let url = format!("{}/api/v1/kv/{key}", cave.base);
            async move {
                let response = client.get(&url).send().await.unwrap();
                let status = response.status();
                let body = response.text().await.unwrap();
                (key, value, status, body)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let lost: Vec<_> = reads.iter().filter(|(_, v, s, b)| *s != 200 || b != *v).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..1]
    );
}

async fn wait_for(count: &AtomicUsize, at_least: usize, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while count.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} of {at_least} in time",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_exits_0_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cave = Cave::start(&data, &[]).await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new())); // HTTP answers other than 200: there must be none
    let count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, refused, count, base) = (acked.clone(), refused.clone(), count.clone(), cave.base.clone());
            tokio::spawn(async move {
                let client = common::client();
                for i in 0.. {
                    let (key, value) = (format!("load/{w}/{i}"), format!("value {w} {i}"));
                    let response = client
                        .put(format!("{base}/api/v1/kv/{key}"))
                        .body(value.clone())
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 200 => {
                            acked.lock().unwrap().push((key, value));
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => {
                            refused.lock().unwrap().push((key, r.status().as_u16()));
                            return;
                        }
                        Err(_) => return, // the server is gone: stop writing
                    }
                }
            })
        })
        .collect();
    wait_for(&count, 200, "acknowledged writes before SIGTERM").await;
    cave.sigterm();
    let (status, log) = cave.wait_exit().await;
    for writer in writers {
        tokio::time::timeout(DEADLINE, writer)
            .await
            .expect("writers stop once the server is gone")
            .unwrap();
    }
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("shut down cleanly"), "{log}");
    assert_eq!(
        *refused.lock().unwrap(),
        Vec::<(String, u16)>::new(),
        "requests refused during shutdown"
    );
    drop(cave);

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200);
    let cave = Cave::start(&data, &[]).await;
    assert_all_readable(&cave, &acked).await;
    cave.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_fsync_durability_kill_9_loses_no_acknowledged_write() {
    const N: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cave = Cave::start(&data, &["--durability", "fsync"]).await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let writes = {
        let (acked, count, base) = (acked.clone(), count.clone(), cave.base.clone());
        tokio::spawn(async move {
            let client = common::client();
            futures::stream::iter(0..N)
                .map(|i| {
                    let (client, base, acked, count) = (client.clone(), base.clone(), acked.clone(), count.clone());
                    async move {
                        let (key, value) = (format!("durable/{i:03}"), format!("value {i}"));
                        if let Ok(true) = put(&client, &base, &key, &value).await {
                            acked.lock().unwrap().push((key, value));
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<()>>()
                .await;
        })
    };
    // Kill while writes are still in flight: half acknowledged, the rest racing the kill.
    wait_for(&count, N / 2, "acknowledged writes before the kill").await;
    cave.child.kill().expect("SIGKILL");
    let status = cave.child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal, not exited: {status}");
    tokio::time::timeout(DEADLINE, writes)
        .await
        .expect("writes end once the server is gone")
        .unwrap();
    drop(cave);

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= N / 2);
    let cave = Cave::start(&data, &[]).await;
    assert_all_readable(&cave, &acked).await;
    cave.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Cave::start(&data, &[]).await;
    let client = common::client();
    assert!(put(&client, &first.base, "mine", "first").await.unwrap());

    let mut second = launch(&data, free_port(), &[]);
    let (status, log) = second.wait_exit().await;
    assert!(!status.success(), "the second process must fail: {status}\n{log}");
    assert!(status.code().is_some_and(|c| c != 0), "{status}");
    assert!(log.contains("is in use by another Cave process"), "{log}");
    assert!(
        log.contains(data.to_str().unwrap()),
        "the message names the directory: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // The first is unaffected, and once it is gone the directory is free again.
    let response = client
        .get(format!("{}/api/v1/kv/mine", first.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "first");
    first.stop().await;
    let third = Cave::start(&data, &[]).await;
    let response = client
        .get(format!("{}/api/v1/kv/mine", third.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "first");
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_an_open_watch_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut cave = Cave::start(&dir.path().join("data"), &[]).await;
    let client = common::client();
    let response = client.get(format!("{}/api/v1/watch/", cave.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: ready") && !seen.contains("event:ready") {
        let chunk = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("ready in time");
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("stream open").unwrap()));
    }
    cave.sigterm();
    let (status, log) = cave.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
    drop(stream);
}
