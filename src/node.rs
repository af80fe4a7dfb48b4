//! A node: opens the data directory, wires storage, database and API together, serves until told to
//! stop, and shuts down gracefully.
//!
//! # Lifecycle
//! 1. [`Node::open`]: create/lock the data directory, load or create the node id and key material, open
//!    the store (running migrations) and load it into memory.
//! 2. [`serve`]: accept HTTP connections on a listener the caller bound (port 0 in tests).
//! 3. Shutdown (the `shutdown` future resolves, e.g. on SIGINT/SIGTERM): stop accepting, let in-flight
//!    requests finish (their writes commit and are acknowledged), then let the writer drain its queue, close
//!    the store (checkpointing the WAL) and release the directory lock.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::crdt::{Hlc, NodeId};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::secrets::{MasterKey, SECRETS_DOMAIN};
use crate::storage::SqliteStore;

/// File in the data directory holding the node id.
pub const NODE_ID_FILE: &str = "node.id";
/// File in the data directory holding the local key (dev mode, no cluster key).
pub const NODE_KEY_FILE: &str = "node.key";
/// The SQLite database file.
pub const DB_FILE: &str = "cave.db";
/// Held (locked) while a process uses the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// An open node: its database and the state handlers share.
pub struct Node {
    /// The local database.
    pub db: Db,
    config: Arc<Config>,
    started: Instant,
    /// Keeps the data directory locked for this process.
    _lock: std::fs::File,
}

impl Node {
    /// Open the data directory and the database.
    pub async fn open(config: Config) -> Result<Node> {
        let dir = &config.data_dir;
        create_private_dir(dir)?;
        let lock = lock_dir(dir)?;
        let node_id = load_or_create_node_id(&dir.join(NODE_ID_FILE))?;
        let master = match &config.cluster_key {
            Some(key) => key.clone(),
            None => MasterKey::load_or_create(&dir.join(NODE_KEY_FILE))?,
        };
        let store = SqliteStore::open(&dir.join(DB_FILE), config.durability).await?;
        let db = Db::open(
            Arc::new(store),
            node_id,
            Arc::new(Hlc::system()),
            master.sealer(SECRETS_DOMAIN),
        )
        .await?;
        let stats = db.stats();
        tracing::info!(node = %node_id, keys = stats.keys, tombstones = stats.tombstones, data_dir = %dir.display(), "node opened");
        Ok(Node {
            db,
            config: Arc::new(config),
            started: Instant::now(),
            _lock: lock,
        })
    }

    /// The HTTP router of this node.
    pub fn router(&self) -> axum::Router {
        api::router(AppState {
            db: self.db.clone(),
            config: self.config.clone(),
            started: self.started,
        })
    }

    /// Drain writes and close storage.
    pub async fn close(self) -> Result<()> {
        self.db.close().await
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
    let node = Node::open(config).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving HTTP");
    axum::serve(listener, node.router())
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("shutting down: draining writes");
    node.close().await?;
    tracing::info!("shut down cleanly");
    Ok(())
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

/// Two processes on one data directory would corrupt each other's view; refuse the second.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Unavailable(format!(
            "data_dir {} is in use by another Cave process",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Unavailable(format!("cannot lock {}: {e}", path.display()))),
    }
}

fn load_or_create_node_id(path: &PathBuf) -> Result<NodeId> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<NodeId>()
            .map_err(|e| Error::Corrupt(format!("node id file {} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId::random();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{id}\n"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(id)
        }
        Err(e) => Err(Error::internal(format!(
            "cannot read node id file {}: {e}",
            path.display()
        ))),
    }
}
