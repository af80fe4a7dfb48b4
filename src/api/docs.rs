//! Document values over HTTP: `PUT /api/v1/kv/{key}?doc=true`, `PATCH /api/v1/kv/{key}` and reading a
//! document (`GET`, `?history=true`). The merge rule and the edits are in [`crate::crdt::doc`]; this adapter
//! parses bodies, checks access and shapes answers.
//!
//! Every answer about a document carries `X-Cave-Type: doc`. A secret document is sealed at rest and in
//! transit like any secret: without `?secret=true` a reader gets the envelope, as for any secret value.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::encoding::{path_after, version_headers, Params, SECRET_HEADER};
use super::kv::read_body;
use super::AppState;
use crate::acl::{Access, Capability};
use crate::crdt::doc::{Doc, PatchOp};
use crate::crdt::{Entry, NodeId};
use crate::db::{DocPatch, Op, Outcome};
use crate::error::{Error, Result};

/// The header that tells a document from a plain value.
pub const TYPE_HEADER: HeaderName = HeaderName::from_static("x-cave-type");
/// The media type of an RFC 7396 merge patch.
pub const MERGE_PATCH: &str = "application/merge-patch+json";
/// The media type of an RFC 6902 JSON Patch.
pub const JSON_PATCH: &str = "application/json-patch+json";

/// A patch body as the writer takes it: an array of JSON Patch ops, or a merge-patch object.
pub fn doc_patch(value: serde_json::Value) -> Result<DocPatch> {
    match value {
        serde_json::Value::Array(_) => serde_json::from_value::<Vec<PatchOp>>(value)
            .map(DocPatch::Json)
            .map_err(|e| {
                Error::invalid(format!(
                    "malformed JSON Patch (ops: add, remove, replace, test, increment): {e}"
                ))
            }),
        value => Ok(DocPatch::Merge(value)),
    }
}

fn mark(response: &mut Response) {
    response
        .headers_mut()
        .insert(TYPE_HEADER, HeaderValue::from_static("doc"));
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(body).map_err(|e| Error::invalid(format!("the body is not JSON: {e}")))
}

fn answer(outcomes: Vec<Outcome>) -> Result<Response> {
    let Some(Outcome::Written(entry)) = outcomes.into_iter().next() else {
        return Err(Error::internal("document write returned no outcome"));
    };
    let mut response = Json(json!({"message": "ok", "version": entry.version})).into_response();
    version_headers(response.headers_mut(), entry.version);
    mark(&mut response);
    Ok(response)
}

/// `PUT ?doc=true` (the caller checked the write capability).
pub async fn put(app: &AppState, key: String, params: &Params, headers: &HeaderMap, body: Body) -> Result<Response> {
    let limit = app.config.max_value_bytes;
    let json = parse_json(&read_body(headers, body, limit).await?)?;
    if !json.is_object() {
        return Err(Error::invalid("a document is a JSON object"));
    }
    let op = Op::PutDoc {
        key,
        json,
        secret: params.flag("secret")?,
        cas: params.cas()?,
        max_bytes: limit,
    };
    answer(app.db.write(vec![op]).await?)
}

/// `PATCH /api/v1/kv/{key}`: a merge patch or a JSON Patch, by `Content-Type`.
pub async fn patch(
    State(app): State<Arc<AppState>>,
    access: Access,
    uri: Uri,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let key = path_after(uri.path(), "/api/v1/kv")?;
    crate::key::validate(&key)?;
    access.require(Capability::Write, &key)?;
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let json = parse_json(&read_body(&headers, body, app.config.max_value_bytes).await?)?;
    let patch = match media.as_deref() {
        Some(MERGE_PATCH) => DocPatch::Merge(json),
        Some(JSON_PATCH) if json.is_array() => doc_patch(json)?,
        Some(JSON_PATCH) => return Err(Error::invalid("a JSON Patch is a JSON array of operations")),
        _ => {
            return Err(Error::UnsupportedMediaType(format!(
                "PATCH takes {MERGE_PATCH} or {JSON_PATCH}"
            )))
        }
    };
    let op = Op::Patch {
        key,
        patch,
        cas: params.cas()?,
        max_bytes: app.config.max_value_bytes,
    };
    answer(app.db.write(vec![op]).await?)
}

/// The loaded document of a document entry (opening a secret one).
fn load(app: &AppState, entry: &Entry) -> Result<Doc> {
    let bytes = if entry.secret {
        app.db.open_secret(entry)?
    } else {
        entry.value.clone()
    };
    Doc::load(&bytes, NodeId(0))
}

/// `GET` of a document: its JSON, or with `history` its changes. `open` is `?secret=true` (checked by the
/// caller); a secret read without it answers the envelope, like any secret.
pub fn read(app: &AppState, entry: &Entry, open: bool, history: bool) -> Result<Response> {
    let mut response = if entry.secret && !open {
        let mut response = Response::new(Body::from(entry.value.clone()));
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert(SECRET_HEADER, HeaderValue::from_static("sealed"));
        response
    } else {
        let mut doc = load(app, entry)?;
        let mut response = if history {
            Json(json!({"changes": doc.history()})).into_response()
        } else {
            Json(doc.to_json()).into_response()
        };
        if entry.secret {
            response
                .headers_mut()
                .insert(SECRET_HEADER, HeaderValue::from_static("opened"));
        }
        response
    };
    version_headers(response.headers_mut(), entry.version);
    mark(&mut response);
    Ok(response)
}
