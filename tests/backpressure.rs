//! Backpressure: a peer that floods a node with deltas far faster than the node can apply them costs the
//! node bounded work (tasks, queued messages, memory), the flooder is slowed down, the node keeps answering
//! reads, and it stops in bounded time.
//!
//! The node under test runs over a store that applies [`APPLY_ENTRIES_PER_SEC`] entries a second; the
//! flooder is a raw replication client (the cluster key, its own node id) that offers ten times that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cave::cluster::{INBOX_MESSAGES, MAX_PENDING_WORK};
use cave::config::Config;
use cave::crdt::hlc::from_physical_ms;
use cave::crdt::{Entry, Hlc, NodeId, Version};
use cave::grpc::pb::replication_client::ReplicationClient;
use cave::grpc::MAX_CONCURRENT_STREAMS;
use cave::grpc::{pb, Codec};
use cave::node::Node;
use cave::replication::Message;
use cave::secrets::{MasterKey, TRANSPORT_DOMAIN};
use cave::storage::{AuditRecord, MemoryStore, Store};
use cave::Result;
use futures::stream::{FuturesUnordered, StreamExt};

/// What the slow store applies per second.
const APPLY_ENTRIES_PER_SEC: u64 = 400;
/// Entries per flooded delta.
const ENTRIES_PER_DELTA: u64 = 10;
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(4);
/// Deliveries the flooder keeps open at once (far more than a real peer's 32).
const FLOOD_CONCURRENCY: usize = 512;
/// Alive tokio tasks of the node's runtime (the node, its servers, the test's reads) while flooding.
/// Without a bound the node spawns one task per delta it has not applied yet: thousands here.
const MAX_TASKS: usize = 250;
/// How long a read may take while the node is flooded.
const READ_DEADLINE: Duration = Duration::from_secs(1);

/// A memory store whose commits take as long as a slow disk's: `1 / APPLY_ENTRIES_PER_SEC` per entry.
struct SlowStore {
    inner: MemoryStore,
}

#[async_trait]
impl Store for SlowStore {
    async fn load(&self) -> Result<Vec<Entry>> {
        self.inner.load().await
    }
    async fn apply_with_audit(&self, entries: &[Entry], audit: &[AuditRecord]) -> Result<usize> {
        let cost = Duration::from_micros(1_000_000 * entries.len() as u64 / APPLY_ENTRIES_PER_SEC);
        tokio::time::sleep(cost).await;
        self.inner.apply_with_audit(entries, audit).await
    }
    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.inner.audit_scan(after, limit).await
    }
    async fn audit_time_at(&self, id: u64) -> Result<Option<u64>> {
        self.inner.audit_time_at(id).await
    }
    async fn audit_purge(&self, before_ms: u64, max_rows: usize) -> Result<usize> {
        self.inner.audit_purge(before_ms, max_rows).await
    }
    async fn audit_last_id(&self) -> Result<u64> {
        self.inner.audit_last_id().await
    }
    async fn purge_tombstones(&self, before_hlc: u64) -> Result<Vec<String>> {
        self.inner.purge_tombstones(before_hlc).await
    }
    async fn size_bytes(&self) -> Result<u64> {
        self.inner.size_bytes().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

/// Resident set size of this process, bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_flooding_deltas_gets_pushed_back_and_the_node_stays_bounded_and_readable() {
    let key = MasterKey::generate();
    let config = Config {
        cluster_key: Some(key.clone()),
        ..Config::default()
    };
    let store = Arc::new(SlowStore {
        inner: MemoryStore::new(),
    });
    let node = Node::from_store(config, store, NodeId(1), Arc::new(Hlc::system()))
        .await
        .unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let cluster = node.start_cluster(Some(grpc)).await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let router = node.router_with(Some(cluster.clone()));
    let server = tokio::spawn(async move { axum::serve(http, router).await });
    let client = reqwest::Client::new();
    let probe = format!("http://{http_addr}/api/v1/kv/probe");
    assert_eq!(client.put(&probe).body("here").send().await.unwrap().status(), 200);

    // The flood: deltas as fast as FLOOD_CONCURRENCY open deliveries allow, paced at ten times the apply
    // rate; a delivery the node holds back holds the flooder back.
    // The flooder runs on a runtime of its own, so that the tasks counted below are the node's.
    let codec = Codec::new(key.sealer(TRANSPORT_DOMAIN), key.cluster_id(), NodeId(99));
    let offered = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let clock = node.db.hlc().clone();
    let flood = {
        let (offered, accepted) = (offered.clone(), accepted.clone());
        let flooding = async move {
            let flooder = ReplicationClient::connect(format!("http://{grpc_addr}")).await.unwrap();
            let per_sec = 10 * APPLY_ENTRIES_PER_SEC / ENTRIES_PER_DELTA;
            let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / per_sec));
            let started = Instant::now();
            let mut open = FuturesUnordered::new();
            let mut n = 0u64;
            while started.elapsed() < FLOOD {
                tokio::select! {
                    _ = pace.tick(), if open.len() < FLOOD_CONCURRENCY => {
                        let hlc = from_physical_ms(clock.time_ms());
                        let entries = (0..ENTRIES_PER_DELTA)
                            .map(|i| Entry::value(format!("flood/{n}/{i}"), vec![b'x'; 64], Version::new(hlc, NodeId(99))))
                            .collect();
                        n += 1;
                        offered.fetch_add(ENTRIES_PER_DELTA, Ordering::Relaxed);
                        let sealed = codec.seal(&Message::Delta { entries });
                        let mut client = flooder.clone();
                        let accepted = accepted.clone();
                        open.push(async move {
                            let mut request = tonic::Request::new(pb::Frame { sealed });
                            request.set_timeout(Duration::from_secs(20));
                            if client.deliver(request).await.is_ok() {
                                accepted.fetch_add(ENTRIES_PER_DELTA, Ordering::Relaxed);
                            }
                        });
                    }
                    Some(()) = open.next(), if !open.is_empty() => {}
                }
            }
            // Deliveries still open are abandoned, as a peer giving up would.
        };
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(flooding)
        })
    };

    let rss_before = rss_bytes();
    let mut max_tasks = 0;
    let mut slowest_read = Duration::ZERO;
    let metrics = tokio::runtime::Handle::current().metrics();
    while !flood.is_finished() {
        max_tasks = max_tasks.max(metrics.num_alive_tasks());
        let asked = Instant::now();
        let read = tokio::time::timeout(READ_DEADLINE, client.get(&probe).send()).await;
        let took = asked.elapsed();
        slowest_read = slowest_read.max(took);
        let response = read.unwrap_or_else(|_| panic!("a read took longer than {READ_DEADLINE:?} during the flood"));
        assert_eq!(response.unwrap().text().await.unwrap(), "here");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flood.join().unwrap();
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let (offered, accepted) = (offered.load(Ordering::Relaxed), accepted.load(Ordering::Relaxed));
    eprintln!(
        "offered {offered} entries, the node took {accepted}; at most {max_tasks} tasks; slowest read \
         {slowest_read:?}; RSS grew {} MiB",
        rss_growth >> 20
    );
    assert!(
        max_tasks <= MAX_TASKS,
        "{max_tasks} tasks alive during the flood (bound {MAX_TASKS})"
    );
    // It was a flood: several times what the node can apply.
    let capacity = APPLY_ENTRIES_PER_SEC * FLOOD.as_secs();
    assert!(offered >= 4 * capacity, "only {offered} entries offered");
    // Pushed back: the node took what it applied plus what its bounded queues hold (the inbox, the work in
    // flight, the open streams), not what was offered.
    let queued = (INBOX_MESSAGES + MAX_PENDING_WORK + MAX_CONCURRENT_STREAMS as usize) as u64 * ENTRIES_PER_DELTA;
    assert!(
        accepted <= capacity + queued,
        "the flooder was not slowed down: {accepted} of {offered} entries taken (bound {})",
        capacity + queued
    );
    assert!(rss_growth < 256 << 20, "RSS grew by {} MiB", rss_growth >> 20);

    // Stopping waits for the work in flight, in bounded time.
    tokio::time::timeout(Duration::from_secs(20), cluster.stop())
        .await
        .expect("the cluster did not stop in time");
    server.abort();
    node.close().await.unwrap();
}
