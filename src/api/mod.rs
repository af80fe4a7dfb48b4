//! The REST API (axum), as `docs/api.md` and DESIGN.md section 6 describe it.
//!
//! Handlers are thin: they decode the request (strictly: a malformed key, parameter or body is a 400 naming
//! the problem, never a guess), call the database, and encode the answer. All errors leave through
//! [`crate::Error`]'s one HTTP mapping in [`error`], so every failure has the same JSON shape.

mod encoding;
pub mod error;
mod kv;
mod query;
mod system;
mod transfer;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::config::Config;
use crate::db::Db;
use crate::error::Error;

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
}

/// The complete HTTP router of a node.
pub fn router(state: AppState) -> Router {
    let kv_methods = || get(kv::get).head(kv::get).put(kv::put).post(kv::put).delete(kv::delete);
    Router::new()
        .route("/api/v1/kv", kv_methods())
        .route("/api/v1/kv/", kv_methods())
        .route("/api/v1/kv/{*key}", kv_methods())
        .route("/api/v1/query", post(query::query))
        .route("/api/v1/watch", get(watch::watch))
        .route("/api/v1/watch/", get(watch::watch))
        .route("/api/v1/watch/{*prefix}", get(watch::watch))
        .route("/api/v1/export", get(transfer::export))
        .route("/api/v1/import", post(transfer::import))
        .route("/api/v1/system/info", get(system::info))
        .route("/api/v1/system/config", get(system::config))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .fallback(|| async { Error::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            let err = Error::invalid("method not allowed on this route");
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({"error": err.to_string(), "code": "method_not_allowed"})),
            )
        })
        .with_state(state)
}
