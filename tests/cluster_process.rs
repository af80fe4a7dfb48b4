//! Two `cave` processes in prod mode: one is killed with SIGKILL while writes flow to the other, then
//! restarted; every acknowledged write reaches it.
#![cfg(unix)]

mod common;

use common::child::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(40);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn launch(dir: &Path, http: u16, grpc: u16, key: &str, peers: &[u16]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cave"));
    cmd.env_clear()
        .args([
            "--mode",
            "prod",
            "--mdns=false",
            "--discovery-window",
            "0s",
            "--anti-entropy-interval",
            "500ms",
        ])
        .args(["--data-dir", dir.to_str().unwrap()])
        .args([
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
        ])
        .env("CAVE_CLUSTER_KEY", key)
        .env("CAVE_ACL_ROOT_TOKEN", common::ROOT_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !peers.is_empty() {
        let peers: Vec<String> = peers.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        cmd.args(["--peers", &peers.join(",")]);
    }
    Proc(cmd.spawn().expect("spawn cave"))
}

async fn wait_healthy(client: &reqwest::Client, http: u16) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{http}/healthz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "node on {http} did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_stream_restarts_and_receives_every_acknowledged_write() {
    let key = cave::secrets::MasterKey::generate().to_base64();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (h1, g1, h2, g2) = (free_port(), free_port(), free_port(), free_port());
    let client = common::client_with_token(common::ROOT_TOKEN);
    let _n1 = launch(d1.path(), h1, g1, &key, &[]);
    wait_healthy(&client, h1).await;
    let n2 = launch(d2.path(), h2, g2, &key, &[g1]);
    wait_healthy(&client, h2).await;

    // A stream of writes to node 1; node 2 is killed in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("http://127.0.0.1:{h1}/api/v1/kv/stream/{i}");
                if let Ok(r) = client.put(url).body(format!("v{i}")).send().await {
                    if r.status() == 200 {
                        acked.push(i);
                    }
                }
                i += 1;
            }
            acked
        })
    };
    let deadline = Instant::now() + DEADLINE;
    while client
        .get(format!("http://127.0.0.1:{h2}/api/v1/kv/stream/20"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "writes never reached node 2");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(n2); // SIGKILL
    tokio::time::sleep(Duration::from_millis(300)).await; // writes keep flowing while node 2 is dead
    let n2 = launch(d2.path(), h2, g2, &key, &[g1]);
    wait_healthy(&client, h2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());

    // Every acknowledged write reaches the restarted node (through broadcast or anti-entropy).
    let deadline = Instant::now() + DEADLINE;
    let mut missing: Vec<usize> = acked.clone();
    while !missing.is_empty() {
        let mut still = Vec::new();
        for &i in &missing {
            let r = client
                .get(format!("http://127.0.0.1:{h2}/api/v1/kv/stream/{i}"))
                .send()
                .await
                .unwrap();
            if r.status() != 200 || r.text().await.unwrap() != format!("v{i}") {
                still.push(i);
            }
        }
        missing = still;
        assert!(
            Instant::now() < deadline,
            "{} acknowledged writes never reached node 2: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("{} acknowledged writes, all on the restarted node", acked.len());
    drop(n2);
}
