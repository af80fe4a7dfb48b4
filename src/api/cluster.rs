//! `GET /api/v1/cluster/nodes`: every node this one knows, itself first.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::cluster::NodeView;

/// The node list: id, addresses, status (`self`, alive, suspect, dead, left), milliseconds since last seen,
/// estimated clock skew (relative to this node, and relative to the cluster's median clock) and whether that
/// makes the member skewed (for this node: fenced). A node that does not replicate lists only itself.
pub async fn nodes(State(app): State<Arc<AppState>>) -> Json<Vec<NodeView>> {
    Json(match &app.cluster {
        Some(cluster) => cluster.nodes(),
        None => vec![NodeView {
            id: app.db.node_id().to_string(),
            grpc_addr: app.config.grpc_addr.to_string(),
            http_addr: app.config.http_addr.to_string(),
            status: "self".into(),
            last_seen_ms: 0,
            clock_skew_ms: Some(0),
            clock_offset_ms: None,
            clock_skewed: false,
            incarnation: 0,
        }],
    })
}

/// The other members, for `/api/v1/system/info`.
pub fn peers(app: &AppState) -> Vec<Value> {
    let Some(cluster) = &app.cluster else { return Vec::new() };
    cluster
        .nodes()
        .into_iter()
        .skip(1)
        .map(|n| json!({"id": n.id, "grpc_addr": n.grpc_addr, "status": n.status}))
        .collect()
}
