//! `/api/v1/system/*`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::error::Result;

/// Node identity and state. Never the environment, never key material (the cluster id is a one-way
/// fingerprint of the cluster key). `peers` lists the other known members with their status.
pub async fn info(State(app): State<Arc<AppState>>) -> Result<Json<Value>> {
    let stats = app.db.stats();
    let db_size = app.db.size_bytes().await.unwrap_or(0);
    Ok(Json(json!({
        "node_id": app.db.node_id().to_string(),
        "cluster_id": &*app.cluster_id,
        "mode": app.config.mode.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "keys": stats.keys,
        "tombstones": stats.tombstones,
        "memory_bytes": stats.bytes,
        "db_size_bytes": db_size,
        "http_addr": app.config.http_addr.to_string(),
        "grpc_addr": app.config.grpc_addr.to_string(),
        "peers": super::cluster::peers(&app),
    })))
}

/// The effective configuration, secrets redacted.
pub async fn config(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(app.config.redacted())
}

/// Liveness: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: storage is open (the router only runs once it is) and takes writes (the last commit did not
/// fail on a full disk: `storage_full` until one succeeds again), and, for a cluster member, the first
/// anti-entropy round is done (or there was nobody to sync with): a load balancer should not send reads to
/// a node that has not caught up yet.
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.db.storage_full() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "storage_full"}))).into_response();
    }
    match &app.cluster {
        Some(cluster) if !cluster.synced() => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "syncing"}))).into_response()
        }
        _ => Json(json!({"status": "ready"})).into_response(),
    }
}
