//! `GET /api/v1/cluster/nodes`: every node this one knows, itself first.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::AppState;
use crate::db::Stats;
use crate::replication::Core;

/// One row of `GET /api/v1/cluster/nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Replication address.
    pub grpc_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// alive, suspect, dead or left (`self` for this node).
    pub status: String,
    /// Milliseconds since its heartbeat last advanced, as seen here.
    pub last_seen_ms: u64,
    /// Its clock minus ours, in ms, estimated from its recent direct gossip.
    pub clock_skew_ms: Option<i64>,
    /// Its clock minus the cluster's (the median of the members' clocks as seen here), in ms; for this node,
    /// known once a majority of the cluster could be compared.
    pub clock_offset_ms: Option<i64>,
    /// Whether that offset exceeds what a serving node may have (for this node: whether it is fenced and
    /// refuses writes).
    pub clock_skewed: bool,
    /// Process start time of the member (ms since the epoch).
    pub incarnation: u64,
    /// Its software version; `None` from a member too old to gossip it.
    pub version: Option<String>,
    /// Live keys it held at its last heartbeat, as gossiped (this node's: now).
    pub keys: Option<u64>,
    /// Live leases as this node holds them (leases replicate, so once converged this is the cluster's count);
    /// `None` for the other members, which do not gossip it.
    pub leases: Option<u64>,
    /// Held locks as this node sees them (lock records replicate); `None` for the other members.
    pub locks: Option<u64>,
}

/// Every node `core` knows at local time `now_ms`, this one first; `keys` is this node's live key count.
fn node_list(core: &Core, now_ms: u64, stats: Stats) -> Vec<NodeView> {
    let me = core.membership().me();
    let clock = core.clock_view();
    let bound = clock.bound_ms as i64;
    let mut out = vec![NodeView {
        id: me.id.to_string(),
        grpc_addr: me.grpc_addr.clone(),
        http_addr: me.http_addr.clone(),
        status: "self".into(),
        last_seen_ms: 0,
        clock_skew_ms: Some(0),
        clock_offset_ms: clock.offset_ms,
        clock_skewed: clock.fenced.is_some(),
        incarnation: me.incarnation,
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        keys: Some(stats.keys as u64),
        leases: Some(stats.leases as u64),
        locks: Some(stats.locks as u64),
    }];
    out.extend(core.membership().members().map(|m| {
        // Relative to the median only once there is one; before that, unknown.
        let offset = clock.members.iter().find(|(id, _)| *id == m.record.id).map(|(_, o)| *o);
        NodeView {
            id: m.record.id.to_string(),
            grpc_addr: m.record.grpc_addr.clone(),
            http_addr: m.record.http_addr.clone(),
            status: m.status.as_str().into(),
            last_seen_ms: now_ms.saturating_sub(m.last_progress_ms),
            clock_skew_ms: m.clock_skew_ms,
            clock_offset_ms: offset.filter(|_| clock.offset_ms.is_some()),
            clock_skewed: clock.offset_ms.is_some() && offset.is_some_and(|o| o.abs() > bound),
            incarnation: m.record.incarnation,
            version: Some(m.record.version.clone()).filter(|v| !v.is_empty()),
            // A member gossips its count from its first heartbeat on; before it, it has said nothing.
            keys: (m.record.heartbeat > 0 || m.record.keys > 0).then_some(m.record.keys),
            leases: None,
            locks: None,
        }
    }));
    out
}

/// The node list: id, addresses, status (`self`, alive, suspect, dead, left), milliseconds since last seen,
/// estimated clock skew (relative to this node, and relative to the cluster's median clock) and whether that
/// makes the member skewed (for this node: fenced). A node that does not replicate lists only itself.
pub async fn nodes(State(app): State<Arc<AppState>>) -> Json<Vec<NodeView>> {
    let stats = app.db.stats();
    Json(match &app.cluster {
        Some(cluster) => cluster.with_core(|core, now_ms| node_list(core, now_ms, stats)),
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
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            keys: Some(stats.keys as u64),
            leases: Some(stats.leases as u64),
            locks: Some(stats.locks as u64),
        }],
    })
}

/// The other members, for `/api/v1/system/info`.
pub fn peers(app: &AppState) -> Vec<Value> {
    let Some(cluster) = &app.cluster else { return Vec::new() };
    cluster
        .with_core(|core, now_ms| node_list(core, now_ms, Stats::default()))
        .into_iter()
        .skip(1)
        .map(|n| json!({"id": n.id, "grpc_addr": n.grpc_addr, "status": n.status}))
        .collect()
}
