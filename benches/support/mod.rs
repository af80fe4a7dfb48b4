//! What the HTTP benchmarks share: their settings from the environment, and a dev node served in the
//! benchmark's own process on a free loopback port.

use std::time::Duration;

use cave::config::Config;

/// The environment variable `name` parsed, or `default` when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A dev node on a fresh data directory, logging warnings only; stopped (and awaited) by [`BenchNode::stop`].
pub struct BenchNode {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl BenchNode {
    /// Start the node and wait until `client` gets an answer from its `/healthz`.
    pub async fn start(client: &reqwest::Client) -> BenchNode {
        let dir = tempfile::tempdir().unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", http.local_addr().unwrap());
        let config = Config {
            data_dir: dir.path().join("data"),
            http_addr: http.local_addr().unwrap(),
            log_level: "warn".into(),
            ..Config::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            cave::node::serve(config, http, shutdown).await.unwrap();
        });
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        BenchNode {
            base,
            stop,
            task,
            _dir: dir,
        }
    }

    /// Shut the node down and wait until it has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}
