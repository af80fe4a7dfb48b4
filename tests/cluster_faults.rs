//! Faults at the replication port: garbage, oversized frames, strangers, and a peer whose clock is an hour
//! ahead. A test plays a peer itself through the real gRPC client, sealing frames with `cave::grpc::Codec`.

mod common;

use std::time::{Duration, Instant};

use cave::config::{Config, Mode};
use cave::crdt::hlc::from_physical_ms;
use cave::crdt::{Entry, NodeId, Version};
use cave::grpc::pb::replication_client::ReplicationClient;
use cave::grpc::{pb, Codec};
use cave::replication::Message;
use cave::secrets::{MasterKey, TRANSPORT_DOMAIN};
use common::TestNode;
use tokio::io::AsyncWriteExt;

async fn node(key: &MasterKey) -> (tempfile::TempDir, TestNode) {
    let dir = tempfile::tempdir().unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = Config {
        mode: Mode::Prod,
        data_dir: dir.path().join("data"),
        cluster_key: Some(key.clone()),
        mdns: false,
        grpc_addr: grpc.local_addr().unwrap(),
        discovery_window: Duration::ZERO,
        ..Config::default()
    };
    let node = TestNode::start_config_with_grpc(config, Some(grpc)).await;
    (dir, node)
}

async fn client(n: &TestNode) -> ReplicationClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", n.config.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ReplicationClient::new(channel).max_encoding_message_size(64 * 1024 * 1024)
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_are_refused_and_counted_without_harm() {
    let key = MasterKey::generate();
    let (_dir, n) = node(&key).await;
    // Raw garbage on the TCP port (not even HTTP/2).
    let mut raw = tokio::net::TcpStream::connect(n.config.grpc_addr).await.unwrap();
    raw.write_all(b"\x00\xffGET / HTTP/1.1\r\n\r\n garbage garbage")
        .await
        .unwrap();
    drop(raw);
    let mut c = client(&n).await;
    // Well-formed gRPC, garbage payload.
    let err = c.deliver(pb::Frame { sealed: vec![7; 100] }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // Sealed with the right key, but not an envelope.
    let sealed = key.sealer(TRANSPORT_DOMAIN).seal(b"\xff\xff\xff not protobuf");
    let err = c.deliver(pb::Frame { sealed }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    // A well-sealed message carrying an invalid key.
    let codec = Codec::new(key.sealer(TRANSPORT_DOMAIN), key.cluster_id(), NodeId(99));
    let bad = Message::Delta {
        entries: vec![Entry::value("a//b", "x", Version::new(1, NodeId(99)))],
    };
    let err = c
        .deliver(pb::Frame {
            sealed: codec.seal(&bad),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    // Oversized: beyond the 16 MiB frame limit.
    let err = c
        .deliver(pb::Frame {
            sealed: vec![0; 17 * 1024 * 1024],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(n.metric("cave_seal_failures_total").await >= 3.0);
    // The node is fine and nothing was stored.
    assert_eq!(n.get_json("/api/v1/system/info").await["keys"], 0);
    n.put("still/works", "yes").await;
    // A well-sealed valid delta is applied: the port works for real peers.
    let good = Message::Delta {
        entries: vec![Entry::value(
            "from/peer",
            "ok",
            Version::new(from_physical_ms(now()), NodeId(99)),
        )],
    };
    c.deliver(pb::Frame {
        sealed: codec.seal(&good),
    })
    .await
    .unwrap();
    eventually("the valid delta is applied", || async {
        n.get("from/peer").await.as_deref() == Some(&b"ok"[..])
    })
    .await;
    n.stop().await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_from_a_peer_an_hour_ahead_are_held_back_not_applied() {
    let key = MasterKey::generate();
    let (_dir, n) = node(&key).await;
    let mut c = client(&n).await;
    let codec = Codec::new(key.sealer(TRANSPORT_DOMAIN), key.cluster_id(), NodeId(42));
    let ahead = Version::new(from_physical_ms(now() + 3_600_000), NodeId(42));
    let fine = Version::new(from_physical_ms(now()), NodeId(42));
    let delta = Message::Delta {
        entries: vec![
            Entry::value("skewed", "from the future", ahead),
            Entry::value("normal", "on time", fine),
        ],
    };
    c.deliver(pb::Frame {
        sealed: codec.seal(&delta),
    })
    .await
    .unwrap();
    eventually("the on-time entry is applied", || async {
        n.get("normal").await.is_some()
    })
    .await;
    assert!(
        n.get("skewed").await.is_none(),
        "an entry an hour ahead must not be applied"
    );
    eventually("the rejection is counted", || async {
        n.metric("cave_clock_drift_rejections_total").await >= 1.0
    })
    .await;
    // Local writes keep the local clock: they are not dragged an hour ahead.
    let v = n.put("local", "x").await;
    let hlc: u64 = v.split_once('-').unwrap().0.parse().unwrap();
    assert!(hlc < ahead.hlc);
    n.stop().await;
}
