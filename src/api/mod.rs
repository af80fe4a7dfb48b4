//! The REST API (axum), as `docs/api.md` and DESIGN.md section 6 describe it.
//!
//! Handlers are thin: they decode the request (strictly: a malformed key, parameter or body is a 400 naming
//! the problem, never a guess), call the database, and encode the answer. All errors leave through
//! [`crate::Error`]'s one HTTP mapping in [`error`], so every failure has the same JSON shape.

mod access;
mod acl;
mod audit;
mod cluster;
mod docs;
mod encoding;
pub mod error;
mod gate;
mod guard;
mod kv;
mod lease;
mod listing;
mod lock;
mod origin;
mod perf;
mod query;
mod safe;
pub mod server;
mod system;
pub mod tls;
mod transfer;
mod ui;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;

use crate::config::Config;
use crate::db::Db;
use crate::error::Error;
use crate::metrics::Metrics;

pub use encoding::EntryJson;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The local database.
    pub db: Db,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// When the node started (for uptime).
    pub started: Instant,
    /// This node's metrics (rendered by `/api/v1/perf/metrics`, fed by every layer).
    pub metrics: Arc<Metrics>,
    /// The cluster's public id (see [`crate::secrets::MasterKey::cluster_id`]).
    pub cluster_id: Arc<str>,
    /// The running cluster member, when this node replicates (prod mode, or dev mode with peers).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Access control: the tokens and policies requests are checked against.
    pub acl: Arc<crate::acl::Acl>,
    /// Where lock attempts are decided (the cluster's agreement, or this node alone).
    pub locks: crate::cluster::Locker,
}

/// The complete HTTP router of a node.
///
/// Every route passes the gate (`api/gate.rs`): its inner stages (access control first), CORS (configured
/// origins only), then its outer stages (metrics outermost, so that it sees each route's template and both
/// fallbacks).
pub fn router(state: AppState) -> Router {
    let outer = Arc::new(gate::OuterGate {
        metrics: state.metrics.clone(),
        access_log: state.config.access_log,
        db: state.db.clone(),
        hosts: origin::AllowedHosts::of(&state.config),
    });
    let inner = Arc::new(gate::InnerGate {
        enforcer: crate::acl::Enforcer {
            acl: state.acl.clone(),
            metrics_public: state.config.metrics_public,
        },
        hlc: state.db.hlc().clone(),
        trusted: origin::TrustedOrigins(state.config.cors_origins.clone()),
    });
    let cors = origin::cors(&state.config.cors_origins);
    let kv_methods = || {
        get(kv::get)
            .head(kv::get)
            .put(kv::put)
            .post(kv::put)
            .delete(kv::delete)
            .patch(docs::patch)
    };
    let router = Router::new()
        .route("/api/v1/kv", kv_methods())
        .route("/api/v1/kv/", kv_methods())
        .route("/api/v1/kv/{*key}", kv_methods())
        .route("/api/v1/query", post(query::query))
        .route("/api/v1/watch", get(watch::watch))
        .route("/api/v1/watch/", get(watch::watch))
        .route("/api/v1/watch/{*prefix}", get(watch::watch))
        .route("/api/v1/lease", get(lease::list).post(lease::grant))
        .route("/api/v1/lease/{id}", get(lease::show).delete(lease::revoke))
        .route("/api/v1/lease/{id}/renew", post(lease::renew))
        .route("/api/v1/lock", get(lock::list))
        .route(
            "/api/v1/lock/{*name}",
            get(lock::show).post(lock::acquire).delete(lock::release),
        )
        .route("/api/v1/export", get(transfer::export))
        .route("/api/v1/import", post(transfer::import))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/cluster/nodes", get(cluster::nodes))
        .route("/api/v1/system/info", get(system::info))
        .route("/api/v1/system/config", get(system::config))
        .route("/api/v1/perf/metrics", get(perf::metrics))
        .route("/api/v1/perf/logs", get(perf::logs))
        .route("/api/v1/perf/dashboard", get(perf::dashboard))
        .route("/api/v1/acl/policies", get(acl::list_policies))
        .route(
            "/api/v1/acl/policies/{name}",
            put(acl::put_policy).get(acl::get_policy).delete(acl::delete_policy),
        )
        .route("/api/v1/acl/tokens", get(acl::list_tokens).post(acl::create_token))
        .route(
            "/api/v1/acl/tokens/{accessor}",
            axum::routing::delete(acl::revoke_token),
        )
        .route("/api/v1/acl/whoami", get(acl::whoami))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/", get(ui::redirect))
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .fallback(|| async { Error::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            let err = Error::invalid("method not allowed on this route");
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({"error": err.to_string(), "code": "method_not_allowed"})),
            )
        })
        // Inside CORS (when configured), so that a refusal still carries the CORS headers a browser app needs
        // to read it, and a preflight is answered before anything asks for credentials.
        .layer(axum::middleware::from_fn_with_state(inner, gate::inner));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(axum::middleware::from_fn_with_state(outer, gate::outer))
        .with_state(Arc::new(state))
}
