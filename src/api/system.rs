//! `/api/v1/system/*`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::crdt::Hlc;
use crate::error::Result;

/// Header on reads served while this node is fenced for clock skew: it takes no writes, so what it holds
/// may be behind the cluster.
pub const STALE_HEADER: &str = "x-cave-stale";

/// Node identity and state. Never the environment, never key material (the cluster id is a one-way
/// fingerprint of the cluster key). `peers` lists the other known members with their status.
pub async fn info(State(app): State<Arc<AppState>>) -> Result<Json<Value>> {
    let stats = app.db.stats();
    let db_size = app.db.size_bytes().await.unwrap_or(0);
    let rss_bytes = crate::metrics::process::resident_bytes();
    Ok(Json(json!({
        "node_id": app.db.node_id().to_string(),
        "cluster_id": &*app.cluster_id,
        "mode": app.config.mode.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "keys": stats.keys,
        "tombstones": stats.tombstones,
        "leases": stats.leases,
        "locks": stats.locks,
        // What the key space is estimated to take (keys, values, metadata), and what the process really
        // holds: the resident set (`null` where it cannot be read). `memory_bytes` is the resident set too.
        "data_bytes": stats.bytes,
        "rss_bytes": rss_bytes,
        "memory_bytes": rss_bytes,
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
/// fail on a full disk: `storage_full` until one succeeds again), the clock is not fenced (a node whose
/// clock is the outlier of its cluster refuses writes: `{"status": "clock_skew"}`) and, for a cluster
/// member, the first anti-entropy round is done (or there was nobody to sync with): a load balancer should
/// not send requests to a node that has not caught up yet. A node that found another live process under its
/// id, and is the one to stop, says `duplicate_node_id` (503). A member whose seeds all fail to answer and that
/// knows no live member says `isolated` (200, or 503 with `isolated_unready`).
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.db.hlc().retired() {
        let body = json!({"status": "duplicate_node_id", "action": "stop this node and run `cave reset-node-id`"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if app.db.storage_full() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "storage_full"}))).into_response();
    }
    if let Some(offset_ms) = app.db.hlc().fenced() {
        let body = json!({"status": "clock_skew", "offset_ms": offset_ms});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    match &app.cluster {
        Some(cluster) if !cluster.synced() => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "syncing"}))).into_response()
        }
        // Serving, but on its own: 200 unless configured otherwise (see `Config::isolated_unready`).
        Some(cluster) if cluster.isolated() => {
            let status = match app.config.isolated_unready {
                true => StatusCode::SERVICE_UNAVAILABLE,
                false => StatusCode::OK,
            };
            (status, Json(json!({"status": "isolated"}))).into_response()
        }
        _ => Json(json!({"status": "ready"})).into_response(),
    }
}

/// Middleware: while the clock is fenced, every read (GET, HEAD, and `POST /api/v1/query`) carries
/// `X-Cave-Stale: clock_skew`.
pub async fn mark_stale_reads(hlc: &Hlc, request: Request, next: impl super::gate::Inner) -> Response {
    let read = matches!(*request.method(), Method::GET | Method::HEAD) || request.uri().path() == "/api/v1/query";
    let mut response = next.call(request).await;
    if read && hlc.fenced().is_some() && response.status().is_success() {
        response
            .headers_mut()
            .insert(STALE_HEADER, HeaderValue::from_static("clock_skew"));
    }
    response
}
