//! The last-sync record decides whether a restarted node rejoins pull-first (peers decide about entries
//! older than the tombstone TTL). Losing or damaging it must never make a node that holds data look new
//! (authority 0), which would push keys its peers deleted and purged back to them.

use std::path::Path;

use cave::cluster::LAST_SYNC_FILE;
use cave::config::Config;
use cave::crdt::hlc::from_physical_ms;
use cave::crdt::{Entry, NodeId, Version};
use cave::node::Node;

fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

/// Open the node in `dir`, start its cluster member (alone, on a free port) and report whether it rejoined
/// pull-first; the start's error if it refused.
async fn start(dir: &Path) -> cave::Result<bool> {
    let node = Node::open(config(dir)).await?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = node.start_cluster(Some(grpc)).await;
    let pull_first = match started {
        Ok(cluster) => {
            let pull_first = cluster.pull_first();
            cluster.stop().await;
            Ok(pull_first)
        }
        Err(e) => Err(e),
    };
    node.close().await?;
    pull_first
}

/// A data directory whose node holds one entry.
async fn with_data(dir: &Path) {
    let node = Node::open(config(dir)).await.unwrap();
    let version = Version::new(from_physical_ms(node.db.hlc().time_ms()), NodeId(7));
    node.db.merge(vec![Entry::value("k", "v", version)]).await.unwrap();
    node.close().await.unwrap();
}

#[tokio::test]
async fn a_node_with_data_and_no_last_sync_record_rejoins_pull_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A new node (no data, no record) is new: nobody defers to it, and it has nothing to drop.
    assert!(!start(&data).await.unwrap());
    with_data(&data).await;
    assert!(!data.join(LAST_SYNC_FILE).exists());
    assert!(
        start(&data).await.unwrap(),
        "a node holding data without a last-sync record must rejoin pull-first"
    );
}

#[tokio::test]
async fn a_corrupt_last_sync_record_refuses_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    with_data(&data).await;
    for garbage in [&b"not a time"[..], b"", b"\xff\xff"] {
        std::fs::write(data.join(LAST_SYNC_FILE), garbage).unwrap();
        let err = start(&data)
            .await
            .expect_err("a corrupt last-sync record must refuse the start");
        let text = err.to_string();
        assert!(text.contains("last-sync record") && text.contains("corrupt"), "{text}");
        assert!(text.contains("delete it"), "the message says what to do: {text}");
    }
    // Deleted as the message says: the node starts, pull-first.
    std::fs::remove_file(data.join(LAST_SYNC_FILE)).unwrap();
    assert!(start(&data).await.unwrap());
    // A recent, well-formed record: the node is fresh.
    let now = cave::crdt::Hlc::system().time_ms();
    std::fs::write(data.join(LAST_SYNC_FILE), format!("{now}\n")).unwrap();
    assert!(!start(&data).await.unwrap());
}
