//! The `cave` binary as a child process: start it on a data directory, wait until it answers, signal it,
//! wait for it to exit, read its log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a process may take to start answering or to exit.
pub const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// A running `cave` process. Killed if dropped while still running (a failing test leaves nothing behind).
pub struct Cave {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
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

/// The loopback ports tests hand to child processes: below the kernel's ephemeral range (32768–60999 by
/// default), so no outgoing connection's source port can take one between this check and the child's bind.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port that is free now and that no other caller in this test binary was given.
///
/// Port 0 is not good enough: the kernel hands a just-released port out again, so two calls (or two tests
/// running in parallel) got the same port, and a child died with "Address already in use" (a CI failure of
/// tests/clock.rs). Ports are walked from a point that depends on the process id, so test binaries that run
/// one after another start apart too.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = TEST_PORTS.start + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?}");
}

/// Start `cave` on `data_dir` and `port` without waiting for it.
pub fn launch(data_dir: &Path, port: u16, extra: &[&str]) -> Cave {
    spawn(data_dir, port, 0, &[], extra)
}

/// Start `cave` as a member of a cluster: replication on `grpc_port`, the cluster key in its environment,
/// seeded with `peers` (gRPC ports on loopback); `/healthz` answers when it returns.
pub async fn start_member(data_dir: &Path, grpc_port: u16, key: &str, peers: &[u16], extra: &[&str]) -> Cave {
    let peers: Vec<String> = peers.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peers = peers.join(",");
    let mut args = vec!["--peers", &peers, "--anti-entropy-interval", "500ms"];
    args.extend_from_slice(extra);
    let cave = spawn(data_dir, free_port(), grpc_port, &[("CAVE_CLUSTER_KEY", key)], &args);
    cave.until_healthy().await;
    cave
}

fn spawn(data_dir: &Path, port: u16, grpc_port: u16, env: &[(&str, &str)], extra: &[&str]) -> Cave {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cave"))
        .env_clear()
        .envs(env.iter().copied())
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc_port}"), "--log-level", "info"])
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
    /// Wait until `/healthz` answers (panics, with the log, if the process exits or the deadline passes).
    pub async fn until_healthy(&self) {
        let client = super::client();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let probe = client
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cave not ready in time:\n{}",
                self.log_text()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Start `cave` and wait until `/healthz` answers. The port is picked free just before; should another
    /// process grab it in between, the start is retried once on a new port.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Cave {
        let client = super::client();
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

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
    }

    /// `kill -9`: the process gets no chance to flush or close anything.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), None, "killed by a signal, not exited: {status}");
    }

    /// Wait for the process to exit (polling, with a deadline); returns its status and full log.
    pub async fn wait_exit(&mut self) -> (ExitStatus, String) {
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
    pub async fn stop(mut self) {
        self.sigterm();
        let (status, log) = self.wait_exit().await;
        assert_eq!(status.code(), Some(0), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The complete log of an exited process (stderr read to its end).
    pub fn finish_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log_text()
    }
}
