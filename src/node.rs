//! A node: opens the data directory, wires storage, database and API together, serves until told to
//! stop, and shuts down gracefully.
//!
//! # Lifecycle
//! 1. [`Node::open`]: create/lock the data directory, check that it has not lost state it had (see
//!    "Damaged data directories"), load or create the node id and key material, open the store (running
//!    migrations) and load it into memory.
//! 2. [`serve`]: accept HTTP connections on a listener the caller bound (port 0 in tests).
//! 3. Shutdown (the `shutdown` future resolves, e.g. on SIGINT/SIGTERM): stop accepting, let in-flight
//!    requests finish (their writes commit and are acknowledged), then let the writer drain its queue, close
//!    the store (checkpointing the WAL) and release the directory lock.
//!
//! # The directory lock
//! `LOCK` is locked (`flock`) for the life of the process, and so is the data directory itself, opened as a
//! file. `LOCK` can be deleted while held, and a second process would then create and lock a new one; the
//! directory cannot be replaced while it holds the node's files, so its lock still refuses that process.
//!
//! # Damaged data directories
//! `node.id` is written on the first start, before the database. So a directory with `node.id` but a missing
//! or empty `cave.db` has lost its data (a bad restore, a deleted file): serving would present an empty node
//! under the old identity, which then replicates the emptiness as if it were new. A `cave.db` this process
//! cannot write would pass every check and fail every write. In each case the node refuses to start and names
//! the file; `allow_empty_start` starts the first anyway. A key that does not belong to the directory's
//! cluster, or none (the key file lost), is refused too, see [`crate::identity`]; `new_cluster` overrides
//! that.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::api::{self, AppState};
use crate::cluster::{Cluster, ClusterOptions};
use crate::config::{Config, Mode};
use crate::crdt::{Hlc, NodeId};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::grpc::Dialer;
use crate::metrics::{Metrics, StateGauges};
use crate::replication::CoreConfig;
use crate::secrets::{MasterKey, SECRETS_DOMAIN};
use crate::storage::{SqliteStore, Store};

/// File in the data directory holding the node id.
pub const NODE_ID_FILE: &str = "node.id";
/// File in the data directory holding the local key (dev mode, no cluster key).
pub const NODE_KEY_FILE: &str = "node.key";
/// File in the data directory holding the cluster key a prod node generated for a new cluster.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
/// The SQLite database file.
pub const DB_FILE: &str = "cave.db";
/// Held (locked) while a process uses the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// File in the data directory holding the root token a founding prod node made (mode 0600).
pub const ROOT_TOKEN_FILE: &str = "acl-root.token";

/// `cave repair-clock`: with the data directory locked (no node may run on it), restamp the stored entries
/// more than `max_clock_drift` ahead of the wall clock (see [`crate::repair`]). Returns them.
pub async fn repair_clock(config: &Config) -> Result<Vec<crate::repair::FarAhead>> {
    let dir = &config.data_dir;
    if !dir.exists() {
        return Err(Error::InvalidInput(format!(
            "data_dir {} does not exist",
            dir.display()
        )));
    }
    // Held until the repair is done: no node may open the directory meanwhile.
    let _lock = DirLock::take(dir)?;
    let node_id = load_or_create_node_id(&dir.join(NODE_ID_FILE))?;
    crate::repair::repair_clock(config, node_id).await
}

/// `cave reset-node-id`: with the data directory locked (no node may run on it), replace its node id with a
/// fresh one, keeping the data (for a copy of another node's directory: two live nodes must not share an
/// id). Returns the old id and the new one.
pub fn reset_node_id(config: &Config) -> Result<(NodeId, NodeId)> {
    let dir = &config.data_dir;
    let path = dir.join(NODE_ID_FILE);
    if !path.exists() {
        return Err(Error::InvalidInput(format!(
            "{} does not exist: this data_dir has no node id to reset",
            path.display()
        )));
    }
    let _lock = DirLock::take(dir)?;
    let old = load_or_create_node_id(&path)?;
    let new = NodeId::random();
    crate::identity::write_durably(&path, &format!("{new}\n"))?;
    Ok((old, new))
}

/// An open node: its database and the state handlers share.
pub struct Node {
    /// The local database.
    pub db: Db,
    config: Arc<Config>,
    started: Instant,
    metrics: Arc<Metrics>,
    cluster_id: Arc<str>,
    master: MasterKey,
    /// Access control, and the task that keeps its cache current (ends when the database shuts down).
    acl: Arc<crate::acl::Acl>,
    acl_follower: tokio::task::JoinHandle<()>,
    /// The data directory (none for a node over a given store).
    data_dir: Option<PathBuf>,
    /// Keeps the data directory locked for this process.
    _lock: Option<DirLock>,
}

/// What [`Node::open`] and [`Node::from_store`] gather before assembling a node.
struct Parts {
    store: Arc<dyn Store>,
    node_id: NodeId,
    hlc: Arc<Hlc>,
    master: MasterKey,
    data_dir: Option<PathBuf>,
    lock: Option<DirLock>,
}

impl Node {
    /// Open the data directory and the database.
    pub async fn open(config: Config) -> Result<Node> {
        let dir = config.data_dir.clone();
        create_private_dir(&dir)?;
        let lock = DirLock::take(&dir)?;
        let db_path = dir.join(DB_FILE);
        check_database(&dir, &db_path, config.allow_empty_start)?;
        let used = used(&dir, &db_path);
        if let Some(path) = &config.cluster_key_file {
            crate::identity::check_key_file_mode(path);
        }
        let identity = crate::identity::resolve(&config, &dir, used)?;
        let node_id = load_or_create_node_id(&dir.join(NODE_ID_FILE))?;
        let master = identity.master.clone();
        let store = SqliteStore::open(&db_path, config.durability).await?;
        let mode = config.mode;
        let parts = Parts {
            store: Arc::new(store),
            node_id,
            hlc: Arc::new(Hlc::system()),
            master: master.clone(),
            data_dir: Some(dir.clone()),
            lock: Some(lock),
        };
        let size_path = db_path.clone();
        let node = Node::assemble(config, parts, move || disk_bytes(&size_path)).await?;
        // The key file first, then the cluster id: a crash in between leaves a key and no record, which the
        // next start records; the other order would leave a record and no key, which it refuses.
        let kept = identity
            .new_key_file
            .as_deref()
            .map_or(Ok(()), |path| write_new_key(&master, path, mode))
            .and_then(|()| match identity.record {
                true => crate::identity::record(&dir, &master),
                false => Ok(()),
            });
        if let Err(err) = kept {
            let _ = node.close().await;
            return Err(err);
        }
        if let Err(err) = make_root_token(&node, &dir).await {
            let _ = node.close().await;
            return Err(err);
        }
        // Versions from the future on disk would drag the clock along (see `repair`): refuse to serve them.
        let drift_ms = node.config.max_clock_drift.as_millis() as u64;
        let now_ms = node.db.hlc().time_ms();
        if let Err(e) = node
            .db
            .with_state(|state| crate::repair::check_loaded(state, now_ms, drift_ms))
        {
            let _ = node.close().await;
            return Err(e);
        }
        let stats = node.db.stats();
        tracing::info!(node = %node_id, keys = stats.keys, tombstones = stats.tombstones, data_dir = %dir.display(), "node opened");
        Ok(node)
    }

    /// A node over `store`, without a data directory: the simulation runs real nodes this way, on
    /// simulated time (`hlc`) over a [`crate::storage::MemoryStore`] that outlives their crashes. The
    /// configuration must carry the cluster key (there is no directory to keep one in) and its `data_dir` is
    /// not used.
    pub async fn from_store(config: Config, store: Arc<dyn Store>, node_id: NodeId, hlc: Arc<Hlc>) -> Result<Node> {
        let master = config
            .cluster_key
            .clone()
            .ok_or_else(|| Error::InvalidInput("a node without a data directory needs cluster_key".into()))?;
        let parts = Parts {
            store,
            node_id,
            hlc,
            master,
            data_dir: None,
            lock: None,
        };
        Node::assemble(config, parts, || 0).await
    }

    async fn assemble(
        config: Config,
        parts: Parts,
        db_size_bytes: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<Node> {
        let metrics = Metrics::new();
        let db = Db::open(
            parts.store,
            parts.node_id,
            parts.hlc,
            parts.master.sealer(SECRETS_DOMAIN),
            metrics.clone(),
        )
        .await?;
        let acl = crate::acl::Acl::new(db.clone(), config.acl_enabled(), config.acl_root_token.as_ref());
        let acl_follower = tokio::spawn(acl.clone().follow(db.subscribe()));
        if !config.acl_enabled() {
            tracing::warn!(
                "ACCESS CONTROL IS OFF (acl = false): anyone who reaches the REST API can read, write and \
                 delete every key and open every secret"
            );
        }
        db.start_audit_retention(config.audit_retention).await;
        let weak = db.downgrade();
        metrics.set_state_source(move || {
            let stats = weak.upgrade()?.stats();
            Some(StateGauges {
                keys: stats.keys as u64,
                tombstones: stats.tombstones as u64,
                expiring: stats.expiring as u64,
                leases: stats.leases as u64,
                locks: stats.locks as u64,
                db_size_bytes: db_size_bytes(),
            })
        });
        Ok(Node {
            db,
            config: Arc::new(config),
            started: Instant::now(),
            metrics,
            cluster_id: parts.master.cluster_id().into(),
            master: parts.master,
            acl,
            acl_follower,
            data_dir: parts.data_dir,
            _lock: parts.lock,
        })
    }

    /// Whether this node replicates: always in prod mode, in dev mode when it was given peers.
    pub fn replicates(&self) -> bool {
        self.config.mode == Mode::Prod || !self.config.peers.is_empty()
    }

    /// Start replication: serve gRPC on `grpc` (or bind `grpc_addr`), gossip with the seeds and, if
    /// enabled, peers found by mDNS.
    pub async fn start_cluster(&self, grpc: Option<TcpListener>) -> Result<Arc<Cluster>> {
        let listener = match grpc {
            Some(l) => l,
            None => {
                let addr = self.config.grpc_addr;
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Unavailable(format!("cannot listen on grpc_addr {addr}: {e}")))?
            }
        };
        let bound = listener.local_addr()?;
        let advertised = advertise(self.config.advertise_addr.as_deref(), bound);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        self.start_cluster_on(incoming, advertised, Dialer::default()).await
    }

    /// Start replication on the connections `incoming` yields, announcing `advertise_grpc` to peers and
    /// reaching them with `dialer`: the seam through which the simulation runs real nodes on its network.
    pub async fn start_cluster_on<I, IO, IE>(
        &self,
        incoming: I,
        advertise_grpc: String,
        dialer: Dialer,
    ) -> Result<Arc<Cluster>>
    where
        I: Stream<Item = std::result::Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let core = CoreConfig {
            anti_entropy_interval_ms: self.config.anti_entropy_interval.as_millis() as u64,
            max_clock_drift_ms: self.config.max_clock_drift.as_millis() as u64,
            tombstone_ttl_ms: self.config.tombstone_ttl.as_millis() as u64,
            lock_voters: self.config.cluster_size,
            ..CoreConfig::default()
        };
        let options = ClusterOptions {
            core,
            seeds: self.config.peers.clone(),
            key: self.master.clone(),
            advertise_grpc,
            advertise_http: self.config.advertise_http(),
            discovery_window: self.config.discovery_window,
            mdns: self.config.mdns,
            data_dir: self.data_dir.clone(),
            dialer,
            shutdown_drain: self.config.shutdown_drain,
        };
        Ok(Arc::new(Cluster::start_on(self.db.clone(), options, incoming).await?))
    }

    /// The HTTP router of this node.
    pub fn router(&self) -> axum::Router {
        self.router_with(None)
    }

    /// The HTTP router, showing `cluster` in the node list and readiness.
    pub fn router_with(&self, cluster: Option<Arc<Cluster>>) -> axum::Router {
        let locks = crate::cluster::Locker::of(cluster.clone(), &self.db);
        api::router(AppState {
            locks,
            db: self.db.clone(),
            config: self.config.clone(),
            started: self.started,
            metrics: self.metrics.clone(),
            cluster_id: self.cluster_id.clone(),
            cluster,
            acl: self.acl.clone(),
        })
    }

    /// The node's access control.
    pub fn acl(&self) -> &Arc<crate::acl::Acl> {
        &self.acl
    }

    /// Drain writes and close storage.
    pub async fn close(self) -> Result<()> {
        let closed = self.db.close().await;
        // Closing the database ends the follower (it waits for the shutdown signal).
        let _ = self.acl_follower.await;
        closed
    }
}

/// Bind the configured HTTP address and [`serve`] on it.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let addr = config.http_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on http_addr {addr}: {e}")))?;
    serve(config, listener, shutdown).await
}

/// Open a node and serve HTTP on `listener` until `shutdown` resolves, then shut down gracefully.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(config, listener, None, shutdown).await
}

/// [`serve`], with the gRPC listener given by the caller (port 0 in tests) instead of bound from
/// `grpc_addr`. Shutdown order: stop accepting HTTP and end watch streams, finish in-flight requests, leave
/// the cluster (stop replication so nothing more is merged), drain the writer, close the store.
pub async fn serve_with(
    config: Config,
    listener: TcpListener,
    grpc: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Before the data directory is touched: a bad certificate or key is a configuration error to fix first.
    let tls = config.tls().map(|files| api::tls::Tls::load(&files)).transpose()?;
    let node = Node::open(config).await?;
    let cluster = if node.replicates() {
        Some(node.start_cluster(grpc).await?)
    } else {
        None
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tls = tls.is_some(), "serving HTTP");
    let db = node.db.clone();
    let shutdown = async move {
        shutdown.await;
        db.begin_shutdown();
    };
    let limits = api::server::Limits::of(&node.config, api::server::raise_fd_limit());
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        // Responses leave in one write; Nagle would only hold back the last segment of a large one.
        let _ = tcp.set_nodelay(true);
    });
    let router = node.router_with(cluster.clone());
    let served = api::server::serve(listener, router, limits, tls, node.metrics.clone(), shutdown).await;
    tracing::info!("shutting down: draining writes");
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    node.close().await?;
    served?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The gRPC address to announce: the configured one, else the bound one, with an unspecified IP (0.0.0.0)
/// replaced by the host name so that peers on other machines can reach it.
fn advertise(configured: Option<&str>, bound: SocketAddr) -> String {
    configured.map_or_else(|| crate::config::advertised(bound), str::to_string)
}

/// Write a newly made key to `path` (mode 0600). The cluster key of a prod node without a configured one
/// belongs to a new cluster: it is printed once, as the join token the other nodes need.
fn write_new_key(key: &MasterKey, path: &Path, mode: Mode) -> Result<()> {
    key.write_new(path)?;
    if mode == Mode::Dev {
        return Ok(());
    }
    println!(
        "Created a new cluster {id}. To add nodes, give them this cluster key (join token), e.g. as \
         CAVE_CLUSTER_KEY; it is stored in {path} (mode 0600) and not shown again:\n{token}",
        id = key.cluster_id(),
        path = path.display(),
        token = key.to_base64()
    );
    Ok(())
}

/// Make the root token of a new cluster: on a prod node with access control on and no configured root
/// token, that has no seed peers to join, whose ACL holds no token yet and that made none before (no
/// [`ROOT_TOKEN_FILE`]). It is stored like any token (so every node that joins accepts it once
/// replicated), kept in the data directory (mode 0600) and printed once, beside the join token.
async fn make_root_token(node: &Node, dir: &Path) -> Result<()> {
    let config = &node.config;
    let path = dir.join(ROOT_TOKEN_FILE);
    if config.mode != Mode::Prod
        || !config.acl_enabled()
        || config.acl_root_token.is_some()
        || !config.peers.is_empty()
        || node.acl.has_tokens()
        || path.exists()
    {
        return Ok(());
    }
    let token = crate::acl::token::generate();
    let record = crate::acl::store::TokenRecord {
        accessor: crate::acl::store::ROOT_ACCESSOR.into(),
        policies: vec![crate::acl::policy::ADMIN_POLICY.into()],
        description: "root token made by the founding node".into(),
        created_ms: node.db.hlc().time_ms(),
        expires_ms: None,
    };
    write_private_file(&path, &format!("{token}\n"))?;
    node.acl
        .put_token(&crate::acl::token::TokenHash::of(&token), &record)
        .await?;
    println!(
        "Access control is on. The root token (a management token every node accepts) is stored in {path} \
         (mode 0600) and not shown again; use it as CAVE_TOKEN or Authorization: Bearer:\n{token}",
        path = path.display()
    );
    Ok(())
}

/// Write `text` to a new file at `path` readable by this user only.
fn write_private_file(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Refuse a data directory whose database is gone while its identity is not (unless `allow_empty_start`),
/// and a database this process cannot write. See "Damaged data directories" in the module docs.
fn check_database(dir: &Path, db_path: &Path, allow_empty_start: bool) -> Result<()> {
    let used = dir.join(NODE_ID_FILE).exists();
    let db_bytes = match std::fs::metadata(db_path) {
        Ok(meta) => Some(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::Unavailable(format!("cannot read {}: {e}", db_path.display()))),
    };
    if used && !allow_empty_start && db_bytes.unwrap_or(0) == 0 {
        let state = if db_bytes.is_some() { "empty" } else { "missing" };
        return Err(Error::Corrupt(format!(
            "database {} is {state}, but this data_dir has been used ({} exists): restore the database from a \
             backup, or start with --allow-empty-start to serve an empty one (peers then fill it in)",
            db_path.display(),
            dir.join(NODE_ID_FILE).display()
        )));
    }
    if db_bytes.is_some() {
        // SQLite would open a file it cannot write read-only, and every write would fail.
        std::fs::OpenOptions::new().write(true).open(db_path).map_err(|e| {
            Error::Unavailable(format!(
                "database {} is not writable by this process ({e}): make it writable (file mode, owner, a \
                 read-only mount or the immutable attribute)",
                db_path.display()
            ))
        })?;
    }
    Ok(())
}

/// Bytes of the SQLite file and its WAL, read synchronously (two `stat`s) for the metrics scrape: the
/// same quantity `Store::size_bytes` reports, without an async round trip to the store.
fn disk_bytes(db_path: &Path) -> u64 {
    let mut wal = db_path.as_os_str().to_owned();
    wal.push("-wal");
    [db_path.as_os_str(), wal.as_os_str()]
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .sum()
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| Error::Unavailable(format!("cannot create data_dir {}: {e}", dir.display())))
}

/// The locks that keep a second process off the data directory (see "The directory lock" in the module
/// docs), held until dropped.
struct DirLock {
    /// The directory opened as a file (Unix only: elsewhere a directory cannot be opened like this).
    _dir: Option<std::fs::File>,
    _file: std::fs::File,
}

impl DirLock {
    /// Two processes on one data directory would diverge under one node id; refuse the second.
    fn take(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let dir_file = if cfg!(unix) {
            let opened = std::fs::File::open(dir);
            let dir_file = opened.map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", dir.display())))?;
            lock(&dir_file, dir, dir)?;
            Some(dir_file)
        } else {
            None
        };
        lock(&file, &path, dir)?;
        Ok(DirLock {
            _dir: dir_file,
            _file: file,
        })
    }
}

/// An exclusive `flock` on `file` (which is `path`, in data directory `dir`), without waiting.
fn lock(file: &std::fs::File, path: &Path, dir: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Unavailable(format!(
            "data_dir {} is in use by another Cave process",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Unavailable(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// Whether a node has used `dir` before: it holds a node id, a cluster id or a non-empty database.
fn used(dir: &Path, db_path: &Path) -> bool {
    dir.join(NODE_ID_FILE).exists()
        || dir.join(crate::identity::CLUSTER_ID_FILE).exists()
        || std::fs::metadata(db_path).is_ok_and(|m| m.len() > 0)
}

fn load_or_create_node_id(path: &Path) -> Result<NodeId> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<NodeId>()
            .map_err(|e| Error::Corrupt(format!("node id file {} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId::random();
            crate::identity::write_durably(path, &format!("{id}\n"))?;
            Ok(id)
        }
        Err(e) => Err(Error::internal(format!(
            "cannot read node id file {}: {e}",
            path.display()
        ))),
    }
}
