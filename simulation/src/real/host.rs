//! The software of one simulated host: a whole Cave node (database writer task, cluster driver, tonic
//! gRPC server and clients, axum HTTP API) over a [`MemoryStore`], on turmoil's network and clock.
//!
//! Only three things differ from `cave serve` (the HTTP server is production's, `cave::api::server`): sockets come from `turmoil::net` (see [`super::net`]), time
//! from the host's simulated clock (plus a fixed skew), and the store is a [`MemoryStore`] "disk" that
//! outlives the host: a crash drops the runtime with every task and connection, and the restarted
//! incarnation reopens the disk, holding exactly what was committed.

use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cave::config::{Config, Mode};
use cave::crdt::Entry;
use cave::crdt::{Hlc, NodeId, TimeSource};
use cave::node::Node;
use cave::secrets::MasterKey;
use cave::storage::{AuditRecord, MemoryStore, Store};
use tokio::sync::Notify;

use super::net::{dialer, incoming, HttpListener, TransportFault};

/// Port of every host's replication (gRPC) endpoint.
pub const GRPC_PORT: u16 = 7001;
/// Port of every host's HTTP API.
pub const HTTP_PORT: u16 = 8001;

/// What a host is, across its restarts.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Host name (turmoil DNS).
    pub name: String,
    /// Node id, kept across restarts like `node.id` in a data directory.
    pub id: NodeId,
    /// The disk.
    pub disk: MemoryStore,
    /// The cluster key.
    pub key: MasterKey,
    /// Seed peers (`host:port`).
    pub seeds: Vec<String>,
    /// This host's clock minus true (simulated) time, in ms.
    pub skew_ms: i64,
    /// Mean anti-entropy interval.
    pub anti_entropy_interval: Duration,
    /// A weakened transport, or `None` for production's.
    pub fault: Option<TransportFault>,
    /// Notified to shut the node down gracefully, as SIGTERM does `cave serve`.
    pub stop: Arc<Notify>,
}

/// The host's clock: turmoil's simulated time since the epoch, plus the host's skew.
#[derive(Debug)]
struct SimClock {
    skew_ms: i64,
    last_ms: AtomicU64,
}

impl TimeSource for SimClock {
    fn now_ms(&self) -> u64 {
        match turmoil::since_epoch() {
            Some(now) => {
                let ms = (now.as_millis() as i64 + self.skew_ms).max(0) as u64;
                self.last_ms.store(ms, Ordering::Relaxed);
                ms
            }
            // Read outside a host's turn (nothing of the node should): the last reading.
            None => self.last_ms.load(Ordering::Relaxed),
        }
    }
}

/// The configuration `cave serve --mode=prod` would have on this host, with anti-entropy as given.
fn config(spec: &HostSpec) -> Config {
    Config {
        mode: Mode::Prod,
        http_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, HTTP_PORT)),
        grpc_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, GRPC_PORT)),
        advertise_addr: Some(format!("{}:{GRPC_PORT}", spec.name)),
        peers: spec.seeds.clone(),
        mdns: false,
        discovery_window: Duration::from_secs(2),
        cluster_key: Some(spec.key.clone()),
        acl_root_token: Some(cave::acl::token::SecretToken::parse(super::net::ROOT_TOKEN).expect("a valid token")),
        anti_entropy_interval: spec.anti_entropy_interval,
        shutdown_drain: if spec.fault == Some(TransportFault::NoDrain) {
            Duration::ZERO
        } else {
            cave::config::DEFAULT_SHUTDOWN_DRAIN
        },
        ..Config::default()
    }
}

/// Run the node until the host crashes, or until [`HostSpec::stop`] is notified: then shut down the way
/// `cave::node::serve_with` does (stop taking requests, leave the cluster, drain the writer).
pub async fn run(spec: Rc<HostSpec>) -> turmoil::Result {
    let clock = Arc::new(SimClock {
        skew_ms: spec.skew_ms,
        last_ms: AtomicU64::new(0),
    });
    let hlc = Arc::new(Hlc::new(clock));
    let config = config(&spec);
    let disk = spec.disk.reopen();
    let store: Arc<dyn Store> = match spec.fault {
        Some(TransportFault::AcksOnFullDisk) => Arc::new(AcksOnFullDisk(disk)),
        _ => Arc::new(disk),
    };
    let limits_config = config.clone();
    let node = Node::from_store(config, store, spec.id, hlc).await?;
    let grpc = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, GRPC_PORT)).await?;
    let cluster = node
        .start_cluster_on(incoming(grpc), format!("{}:{GRPC_PORT}", spec.name), dialer(spec.fault))
        .await?;
    let http = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, HTTP_PORT)).await?;
    let (stop, db) = (spec.stop.clone(), node.db.clone());
    let shutdown = async move {
        stop.notified().await;
        db.begin_shutdown();
    };
    // Production's HTTP server (timeouts, connection cap, graceful close), not `axum::serve`. The open-files
    // limit of the process running the simulation says nothing about a simulated host: the default cap.
    let limits = cave::api::server::Limits::of(&limits_config, None);
    let router = node.router_with(Some(cluster.clone()));
    cave::api::server::serve(
        HttpListener(http),
        router,
        limits,
        None,
        node.db.metrics().clone(),
        shutdown,
    )
    .await?;
    cluster.stop().await;
    node.close().await?;
    Ok(())
}

/// The store of [`TransportFault::AcksOnFullDisk`]: a [`MemoryStore`] whose commits on a full disk report
/// success and store nothing, as Cave's SQLite store did before it rolled back failed commits.
struct AcksOnFullDisk(MemoryStore);

#[async_trait::async_trait]
impl Store for AcksOnFullDisk {
    async fn load(&self) -> cave::Result<Vec<Entry>> {
        self.0.load().await
    }

    async fn apply_with_audit(&self, entries: &[Entry], audit: &[AuditRecord]) -> cave::Result<usize> {
        if self.0.is_full() {
            return Ok(0);
        }
        self.0.apply_with_audit(entries, audit).await
    }
    async fn audit_scan(&self, after: u64, limit: usize) -> cave::Result<Vec<AuditRecord>> {
        self.0.audit_scan(after, limit).await
    }
    async fn audit_time_at(&self, id: u64) -> cave::Result<Option<u64>> {
        self.0.audit_time_at(id).await
    }
    async fn audit_purge(&self, before_ms: u64, max_rows: usize) -> cave::Result<usize> {
        self.0.audit_purge(before_ms, max_rows).await
    }
    async fn audit_last_id(&self) -> cave::Result<u64> {
        self.0.audit_last_id().await
    }

    async fn purge_tombstones(&self, before_hlc: u64) -> cave::Result<Vec<String>> {
        self.0.purge_tombstones(before_hlc).await
    }

    async fn size_bytes(&self) -> cave::Result<u64> {
        self.0.size_bytes().await
    }

    async fn close(&self) -> cave::Result<()> {
        self.0.close().await
    }
}
