//! Anti-entropy cost at scale: two nodes holding 1,000,000 keys that differ in 1,000.
//!
//! Two real cluster members run in this process (real `Db`, real replication core and driver, real gRPC
//! over loopback, sealed frames); their data is loaded directly into the database as replicated entries (so
//! nothing is broadcast) and the differences are made on purpose. The program measures:
//! - the time from starting replication between the loaded nodes until both digest roots are equal (it
//!   includes membership discovery: the second node syncs as soon as it sees the first alive);
//! - the bytes of sealed anti-entropy frames both nodes sent for it, against the data set's size;
//! - the bytes of one anti-entropy round between nodes already in sync.
//!
//! Run: `cargo bench --bench anti_entropy` (env KEYS and DIFF override 1000000 and 1000).
//! Storage is the in-memory store: anti-entropy touches storage only to commit the repaired entries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cave::cluster::{Cluster, ClusterOptions};
use cave::crdt::hlc::from_physical_ms;
use cave::crdt::{Entry, Hlc, NodeId, Version};
use cave::db::Db;
use cave::metrics::Metrics;
use cave::replication::CoreConfig;
use cave::secrets::{MasterKey, SECRETS_DOMAIN};
use cave::storage::MemoryStore;

const INTERVAL: Duration = Duration::from_millis(250);

fn counter(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Member {
    db: Db,
    metrics: Arc<Metrics>,
    cluster: Cluster,
}

async fn open(id: u64, key: &MasterKey) -> (Db, Arc<Metrics>) {
    let metrics = Metrics::new();
    let db = Db::open(
        Arc::new(MemoryStore::new()),
        NodeId(id),
        Arc::new(Hlc::system()),
        key.sealer(SECRETS_DOMAIN),
        metrics.clone(),
    )
    .await
    .unwrap();
    (db, metrics)
}

async fn member(db: Db, metrics: Arc<Metrics>, key: &MasterKey, seeds: Vec<String>) -> (Member, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let opts = ClusterOptions {
        core: CoreConfig {
            anti_entropy_interval_ms: INTERVAL.as_millis() as u64,
            ..CoreConfig::default()
        },
        seeds,
        key: key.clone(),
        advertise_grpc: addr.clone(),
        advertise_http: "127.0.0.1:0".into(),
        discovery_window: Duration::ZERO,
        mdns: false,
        data_dir: None,
        dialer: Default::default(),
        shutdown_drain: Duration::from_secs(5),
    };
    let cluster = Cluster::start(db.clone(), opts, listener).await.unwrap();
    (Member { db, metrics, cluster }, addr)
}

fn ae_bytes(m: &Member) -> f64 {
    counter(&m.metrics, "cave_anti_entropy_bytes_total{direction=\"sent\"")
}

fn rounds(m: &Member) -> f64 {
    counter(&m.metrics, "cave_anti_entropy_rounds_total{result=\"ok\"")
}

#[tokio::main]
async fn main() {
    let keys: usize = std::env::var("KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let diff: usize = std::env::var("DIFF").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let key = MasterKey::generate();
    let (a_db, a_metrics) = open(1, &key).await;
    let (b_db, b_metrics) = open(2, &key).await;

    // Load: the same keys on both, from a third "writer" node, except `diff` keys: half only on A, half
    // with a newer version on B. 100-byte values.
    let hlc = from_physical_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - 60_000,
    );
    let value = bytes::Bytes::from(vec![b'v'; 100]);
    let t0 = Instant::now();
    let mut data_bytes = 0usize;
    for chunk in (0..keys).collect::<Vec<_>>().chunks(8192) {
        let mut on_a = Vec::with_capacity(chunk.len());
        let mut on_b = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let e = Entry::value(
                format!("bench/key{i:07}"),
                value.clone(),
                Version::new(hlc + i as u64, NodeId(3)),
            );
            data_bytes += e.size();
            if i.is_multiple_of(keys / diff) {
                if (i / (keys / diff)).is_multiple_of(2) {
                    on_a.push(e); // missing on B
                } else {
                    on_a.push(e.clone());
                    let newer = Entry {
                        version: Version::new(hlc + keys as u64 + i as u64, NodeId(3)),
                        ..e
                    };
                    on_b.push(newer); // newer on B
                }
            } else {
                on_a.push(e.clone());
                on_b.push(e);
            }
        }
        a_db.merge(on_a).await.unwrap();
        b_db.merge(on_b).await.unwrap();
    }
    println!(
        "loaded {keys} keys ({:.1} MB) on each node in {:.1?}",
        data_bytes as f64 / 1e6,
        t0.elapsed()
    );

    // Only now do the two become cluster members: B knows A as a seed, and (never having synced) starts a
    // round as soon as it sees A alive. The time below includes that discovery.
    let (a, a_addr) = member(a_db, a_metrics, &key, vec![]).await;
    let (b, _) = member(b_db, b_metrics, &key, vec![a_addr]).await;

    let root = |m: &Member| m.db.with_state(|s| s.digest().root());
    let bytes_before = ae_bytes(&a) + ae_bytes(&b);
    let start = Instant::now();
    while root(&a) != root(&b) {
        assert!(start.elapsed() < Duration::from_secs(120), "no convergence");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    // Let the round's last messages land before reading the counters.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let repair_bytes = ae_bytes(&a) + ae_bytes(&b) - bytes_before;
    println!(
        "converged {diff} differing keys in {:.0?} (anti-entropy interval {:?}); anti-entropy bytes {:.0} = {:.3}% of the data set",
        took,
        INTERVAL,
        repair_bytes,
        100.0 * repair_bytes / data_bytes as f64
    );

    // In sync: the bytes of the rounds that follow.
    let (b0, r0) = (ae_bytes(&a) + ae_bytes(&b), rounds(&a) + rounds(&b));
    tokio::time::sleep(INTERVAL * 12).await;
    let (b1, r1) = (ae_bytes(&a) + ae_bytes(&b), rounds(&a) + rounds(&b));
    println!(
        "in sync: {} rounds, {:.0} bytes per round",
        r1 - r0,
        (b1 - b0) / (r1 - r0).max(1.0)
    );
    a.cluster.stop().await;
    b.cluster.stop().await;
}
