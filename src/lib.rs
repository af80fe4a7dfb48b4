//! Cave: a master-less, secrets-capable, eventually-consistent key-value database.
//!
//! The crate is layered; each layer uses only the ones below it (see `docs/architecture.md`):
//!
//! ```text
//! node          wires everything, owns tasks, graceful shutdown
//! api           REST (axum)
//! telemetry     recent-log ring buffer, Grafana dashboard (metrics: the leaf module `metrics`)
//! db            the local database: in-memory state, group-commit writer, watch events
//! secrets       key material and sealing
//! crdt, key     Version, Hlc, Entry::merge, LwwMap, key syntax
//! storage       Store trait: SqliteStore and MemoryStore
//! ```

pub mod acl;
pub mod api;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod crdt;
pub mod db;
pub mod discovery;
pub mod error;
pub mod grpc;
pub mod identity;
pub mod key;
pub mod metrics;
pub mod node;
pub mod repair;
pub mod replication;
pub mod secrets;
pub mod storage;
pub mod telemetry;

pub use error::{Error, Result};
