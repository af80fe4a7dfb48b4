//! `/api/v1/perf/*` (metrics, recent logs, Grafana dashboard) and the middleware that measures every
//! HTTP request.
//!
//! The middleware labels requests with the *matched route template* (`/api/v1/kv/{*key}`), never the raw
//! path: a path carries a key, and one series per key would both leak keys into the monitoring system and
//! grow without bound. Requests no route matched share the label [`metrics::UNMATCHED_ROUTE`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::encoding::Params;
use super::gate::Inner;
use super::AppState;
use crate::error::Result;
use crate::metrics::{self, Metrics};
use crate::telemetry::dashboard;
use crate::telemetry::logs::{self, LogQuery, LogRecord};

/// `GET /api/v1/perf/metrics`: the Prometheus text exposition of this node's metrics.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE))],
        app.metrics.render(),
    )
        .into_response()
}

/// `GET /api/v1/perf/logs?level=&limit=&since=`: recent log records of this process, newest last.
pub async fn logs(params: Params) -> Result<Json<Value>> {
    let query = LogQuery::parse(params.get("level"), params.get("limit"), params.get("since"))?;
    let records = logs::global().query(&query);
    let records: Vec<&LogRecord> = records.iter().map(|r| &**r).collect();
    Ok(Json(json!({ "records": records })))
}

/// `GET /api/v1/perf/dashboard`: the Grafana dashboard JSON.
pub async fn dashboard() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(dashboard::CONTENT_TYPE))],
        dashboard::DASHBOARD_JSON,
    )
        .into_response()
}

/// Count and time every request by method, route template and status (until the response head: a watch
/// stream counts its set-up, not its lifetime).
pub async fn track(metrics: &Metrics, request: Request, next: impl Inner) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.call(request).await;
    metrics.http_request(
        method.as_str(),
        route.as_ref().map(MatchedPath::as_str),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
