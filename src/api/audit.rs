//! The audit trail over HTTP: the middleware that records requests (see `crate::audit` for what and in which
//! order) and `GET /api/v1/audit`.
//!
//! Two layers, on either side of the access-control layer: [`record`] sits outside it, so that it also sees
//! the 401s and 403s that layer answers, and reads the caller from the response's extensions;
//! [`capture_caller`] sits inside it (innermost), where the request's extensions name the caller before a
//! handler writes, so that the record committed with the write already carries the right accessor.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::encoding::{Params, SECRET_HEADER};
use super::gate::Inner;
use super::AppState;
use crate::acl::Caller;
use crate::audit::context::{self, Pending};
use crate::audit::{AuditQuery, AuditRecord};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::telemetry::logs::{format_rfc3339_micros, parse_rfc3339_micros};

/// Records a page of `GET /api/v1/audit` holds unless `?limit=` says otherwise.
pub const DEFAULT_PAGE_RECORDS: usize = 100;
/// Most records one page holds.
pub const MAX_PAGE_RECORDS: usize = 1000;
/// Longest route or key recorded, in bytes (longer ones are cut at a character boundary): a key is at most
/// 1 KiB, a path that matched no route could be up to the URI limit.
const MAX_FIELD_BYTES: usize = 2048;
/// Longest `?accessor=` accepted.
const MAX_ACCESSOR_BYTES: usize = 256;

/// Whether requests with `method` are recorded whatever their answer: everything but plain reads.
fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What the middleware knows of a request before it runs.
struct Seen {
    method: Method,
    uri: Uri,
    route: Option<MatchedPath>,
    remote: Option<SocketAddr>,
    time_ms: u64,
}

impl Seen {
    fn of(db: &Db, request: &Request) -> Seen {
        Seen {
            method: request.method().clone(),
            uri: request.uri().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
            remote: request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
            time_ms: db.hlc().time_ms(),
        }
    }

    /// The record of this request, its id, status and accessor still open.
    fn record(&self, db: &Db) -> AuditRecord {
        let path = self.uri.path();
        let (route, key) = match &self.route {
            Some(template) => (template.as_str().to_string(), key_of(template.as_str(), path)),
            None => (path.to_string(), None),
        };
        AuditRecord {
            id: 0,
            time_ms: self.time_ms,
            node: db.node_id(),
            accessor: Caller::anonymous().accessor.to_string(),
            method: self.method.as_str().to_string(),
            route: bounded(route),
            key: key.map(bounded),
            status: 0,
            remote_addr: self.remote.map(|addr| addr.to_string()),
        }
    }
}

/// The key (or other name) a route template names: the decoded path after the template's fixed part, for a
/// template that has a parameter (`/api/v1/kv/{*key}`, `/api/v1/acl/policies/{name}`).
fn key_of(template: &str, path: &str) -> Option<String> {
    let fixed = &template[..template.find('{')?];
    let raw = path.get(fixed.len()..).filter(|_| path.starts_with(fixed))?;
    if raw.is_empty() {
        return None;
    }
    Some(
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

fn bounded(mut text: String) -> String {
    if text.len() > MAX_FIELD_BYTES {
        let mut end = MAX_FIELD_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The caller the access-control layer named in `response`'s extensions (anonymous if none).
fn caller(response: &Response) -> Arc<str> {
    response
        .extensions()
        .get::<Caller>()
        .map_or_else(|| Caller::anonymous().accessor, |c| c.accessor.clone())
}

/// The outer audit layer: records what `crate::audit` says is recorded, and answers 503 instead when a
/// record that must precede the answer cannot be stored.
pub async fn record(db: &Db, request: Request, next: impl Inner) -> Response {
    let seen = Seen::of(db, &request);
    if changes(&seen.method) {
        let pending = Pending::new(seen.record(db));
        let response = pending.clone().scope(next.call(request)).await;
        let status = response.status().as_u16();
        let accessor = caller(&response);
        return match pending.committed() {
            Some((_, committed, ref by)) if committed == status && **by == *accessor => response,
            // The write committed, with its record: the answer stands whatever happens to the correction.
            Some((id, _, _)) => {
                if let Err(err) = db.audit(vec![pending.record(id, status, &accessor)]).await {
                    db.metrics().audit_write_failed();
                    tracing::warn!(error = %err, id, "cannot store the final status of an audit record");
                }
                response
            }
            None => store_then_answer(db, pending.record(0, status, &accessor), response).await,
        };
    }
    let response = next.call(request).await;
    let status = response.status();
    let opened = response
        .headers()
        .get(SECRET_HEADER)
        .is_some_and(|v| v.as_bytes() == b"opened");
    if !(opened || status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN) {
        return response;
    }
    let accessor = caller(&response);
    let record = AuditRecord {
        status: status.as_u16(),
        accessor: accessor.to_string(),
        ..seen.record(db)
    };
    store_then_answer(db, record, response).await
}

/// Store `record`, then answer `response`; if it cannot be stored, 503 instead (a server error keeps its
/// answer: it already says nothing was done).
async fn store_then_answer(db: &Db, record: AuditRecord, response: Response) -> Response {
    let Err(err) = db.audit(vec![record]).await else {
        return response;
    };
    db.metrics().audit_write_failed();
    if response.status().is_server_error() {
        tracing::warn!(error = %err, status = response.status().as_u16(), "cannot store the audit record of a failed request");
        return response;
    }
    tracing::warn!(error = %err, "cannot store an audit record: request refused");
    Error::Unavailable(format!(
        "the audit trail cannot be written ({}): the request is refused rather than served unrecorded",
        err.code()
    ))
    .into_response()
}

/// The inner audit layer: hands the caller the access-control layer established to the pending record,
/// before the handler's write commits it.
pub async fn capture_caller(request: Request, next: impl Inner) -> Response {
    if let Some(caller) = request.extensions().get::<Caller>() {
        context::set_accessor(&caller.accessor);
    }
    next.call(request).await
}

/// `GET /api/v1/audit?since=&limit=&accessor=&after=`: records of this node in commit order, a page at a
/// time; `next` is the `after` of the following page (`null` on the last). A filtered page may hold fewer
/// than `limit` records, or none, and still have a `next` (see `crate::audit::query`).
pub async fn list(State(app): State<Arc<AppState>>, params: Params) -> Result<Json<Value>> {
    let page = app.db.audit_read(&parse_query(&params)?).await?;
    let records: Vec<Value> = page.records.iter().map(to_json).collect();
    Ok(Json(json!({"records": records, "next": page.next})))
}

fn parse_query(params: &Params) -> Result<AuditQuery> {
    let limit = match params.get("limit") {
        None => DEFAULT_PAGE_RECORDS,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_RECORDS).contains(&n) => n,
            _ => {
                return Err(Error::invalid(format!(
                    "limit must be a number from 1 to {MAX_PAGE_RECORDS}, got {text:?}"
                )))
            }
        },
    };
    let after = match params.get("after") {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| Error::invalid(format!("after must be the \"next\" of a previous page, got {text:?}")))?,
    };
    let since_ms = params.get("since").map(parse_since).transpose()?;
    let accessor = match params.get("accessor") {
        Some(a) if a.is_empty() || a.len() > MAX_ACCESSOR_BYTES => {
            return Err(Error::invalid(format!(
                "accessor must be 1 to {MAX_ACCESSOR_BYTES} bytes"
            )))
        }
        other => other.map(str::to_string),
    };
    Ok(AuditQuery {
        after,
        since_ms,
        accessor,
        limit,
    })
}

/// `?since=`: all digits are Unix milliseconds, anything else RFC 3339 (as `perf/logs` takes it).
fn parse_since(text: &str) -> Result<u64> {
    let invalid = || Error::invalid(format!("since must be RFC 3339 or Unix milliseconds, got {text:?}"));
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().map_err(|_| invalid());
    }
    let micros = parse_rfc3339_micros(text).ok_or_else(invalid)?;
    Ok(u64::try_from(micros.div_euclid(1000)).unwrap_or(0))
}

fn to_json(r: &AuditRecord) -> Value {
    let micros = i64::try_from(r.time_ms).unwrap_or(i64::MAX / 1000).saturating_mul(1000);
    json!({
        "id": r.id,
        "time": format_rfc3339_micros(micros),
        "time_ms": r.time_ms,
        "node": r.node.to_string(),
        "accessor": r.accessor,
        "method": r.method,
        "route": r.route,
        "key": r.key,
        "status": r.status,
        "remote_addr": r.remote_addr,
    })
}

#[cfg(test)]
mod tests;
