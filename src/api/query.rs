//! `POST /api/v1/query`: a batch of operations applied atomically on this node.
//!
//! The body is a JSON array of `{"key", "verb", "value"?, "secret"?, "cas"?, "content_type"?, "encoding"?}`
//! with verbs `get`, `set` (alias `put`), `delete` and `patch` (edit a document: `"patch"` holds an RFC 7396
//! merge patch object or an RFC 6902 JSON Patch array, see `PATCH /api/v1/kv/{key}`). Either every write of the batch commits, together, or
//! none does (a failed `cas` or an invalid op rejects the whole batch). Results come back one per op, in
//! request order; a `get` sees the writes of earlier ops in the same batch. The body must be sent as
//! `application/json` (or without a `Content-Type`); a form or text body is refused with 415.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::encoding::{decode_value_owned, encode_value, parse_ttl, validate_content_type, JsonBody, ValueEncoding};
use super::kv::read_body;
use super::AppState;
use crate::acl::{Access, Capability};
use crate::crdt::{Version, DEFAULT_CONTENT_TYPE};
use crate::db::{Op, Outcome};
use crate::error::{Error, Result};

/// Most ops one batch may carry.
pub const MAX_QUERY_OPS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryOp {
    key: String,
    verb: Verb,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    cas: Option<Version>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    encoding: ValueEncoding,
    /// For `patch`: a merge patch (object) or JSON Patch ops (array).
    #[serde(default)]
    patch: Option<serde_json::Value>,
    /// For `set`: expire the value after this long (`"30s"`), as `?ttl=` does.
    #[serde(default)]
    ttl: Option<String>,
    /// For `set`: bind the value to this lease (its id), as `?lease=` does.
    #[serde(default)]
    lease: Option<crate::crdt::LeaseId>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Verb {
    Get,
    #[serde(alias = "put")]
    Set,
    Delete,
    Patch,
}

#[derive(Debug, Serialize)]
struct QueryResult {
    key: String,
    verb: Verb,
    /// For `get`: whether the key exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    found: Option<bool>,
    /// For `delete`: whether the key had a live value.
    #[serde(skip_serializing_if = "Option::is_none")]
    existed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<ValueEncoding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    secret: bool,
    /// For a `get` with `secret: true` whose value cannot be opened here: why. The batch's writes have
    /// committed by then, so this is reported per op rather than failing the whole response.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The handler.
pub async fn query(
    State(app): State<Arc<AppState>>,
    access: Access,
    _: JsonBody,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>> {
    let body = read_body(&headers, body, app.config.max_request_bytes).await?;
    let ops: Vec<QueryOp> =
        serde_json::from_slice(&body).map_err(|e| Error::invalid(format!("malformed query JSON: {e}")))?;
    if ops.len() > MAX_QUERY_OPS {
        return Err(Error::TooLarge(format!(
            "a query carries at most {MAX_QUERY_OPS} ops, got {}",
            ops.len()
        )));
    }
    let mut plan = Vec::with_capacity(ops.len());
    let mut opens = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        // The whole batch is refused if any op is not allowed, before anything is applied.
        authorise(&access, &op).map_err(|e| e.in_op(i))?;
        opens.push(op.secret);
        plan.push(to_op(&app, op).map_err(|e| e.in_op(i))?);
    }
    let labels: Vec<(String, Verb)> = plan.iter().map(label_of).collect();
    let outcomes = app.db.write_batch(plan).await?;
    let mut results = Vec::with_capacity(outcomes.len());
    for ((outcome, (key, verb)), open) in outcomes.into_iter().zip(labels).zip(opens) {
        results.push(result_of(&app, outcome, key, verb, open)?);
    }
    Ok(Json(serde_json::to_value(results).map_err(Error::internal)?))
}

/// The capabilities an op needs: `read` for a get (and `secret` to open one), `write` for a set, `delete`.
fn authorise(access: &Access, op: &QueryOp) -> Result<()> {
    match op.verb {
        Verb::Get => {
            access.require(Capability::Read, &op.key)?;
            if op.secret {
                access.require(Capability::Secret, &op.key)?;
            }
            Ok(())
        }
        Verb::Set | Verb::Patch => access.require(Capability::Write, &op.key),
        Verb::Delete => access.require(Capability::Delete, &op.key),
    }
}

fn to_op(app: &AppState, op: QueryOp) -> Result<Op> {
    crate::key::validate(&op.key)?;
    Ok(match op.verb {
        Verb::Get => Op::Get { key: op.key },
        Verb::Delete => Op::Delete {
            key: op.key,
            cas: op.cas,
        },
        Verb::Set => {
            let text = op.value.ok_or_else(|| Error::invalid("set needs a value"))?;
            let value = decode_value_owned(text, op.encoding)?;
            if value.len() > app.config.max_value_bytes {
                return Err(Error::TooLarge(format!(
                    "value exceeds the limit of {} bytes",
                    app.config.max_value_bytes
                )));
            }
            let content_type = op.content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string());
            validate_content_type(&content_type)?;
            let ttl = op
                .ttl
                .as_deref()
                .map(|text| parse_ttl(text, app.config.min_ttl, app.config.max_ttl, "ttl"))
                .transpose()?;
            let value = if op.secret { app.db.seal(&value) } else { value };
            Op::Put {
                key: op.key,
                value,
                content_type: content_type.into(),
                secret: op.secret,
                cas: op.cas,
                ttl,
                lease: op.lease,
            }
        }
        Verb::Patch => {
            let patch = op
                .patch
                .ok_or_else(|| Error::invalid("patch needs a \"patch\": an object or an array"))?;
            Op::Patch {
                key: op.key,
                patch: super::docs::doc_patch(patch)?,
                cas: op.cas,
                max_bytes: app.config.max_value_bytes,
            }
        }
    })
}

fn label_of(op: &Op) -> (String, Verb) {
    match op {
        Op::Get { key } => (key.clone(), Verb::Get),
        Op::Put { key, .. } | Op::PutDoc { key, .. } => (key.clone(), Verb::Set),
        Op::Patch { key, .. } => (key.clone(), Verb::Patch),
        Op::Delete { key, .. } | Op::DeletePrefix { prefix: key } => (key.clone(), Verb::Delete),
        Op::RenewLease { id } => (id.key(), Verb::Set),
    }
}

fn result_of(app: &AppState, outcome: Outcome, key: String, verb: Verb, open: bool) -> Result<QueryResult> {
    let base = QueryResult {
        key,
        verb,
        found: None,
        existed: None,
        version: None,
        value: None,
        encoding: None,
        content_type: None,
        secret: false,
        error: None,
    };
    Ok(match outcome {
        Outcome::Got(None) => QueryResult {
            found: Some(false),
            ..base
        },
        Outcome::Got(Some(entry)) => {
            let opened = if entry.secret && open {
                app.db.open_secret(&entry)
            } else {
                Ok(entry.value.clone())
            };
            let raw = match opened {
                Ok(raw) => raw,
                Err(e) => {
                    let error = Some(e.to_string());
                    let (version, content_type) = (Some(entry.version), Some(entry.content_type.to_string()));
                    return Ok(QueryResult {
                        found: Some(true),
                        version,
                        content_type,
                        secret: true,
                        error,
                        ..base
                    });
                }
            };
            let (value, encoding) = encode_value(&raw);
            QueryResult {
                found: Some(true),
                version: Some(entry.version),
                value: Some(value),
                encoding: Some(encoding),
                content_type: Some(entry.content_type.to_string()),
                secret: entry.secret,
                ..base
            }
        }
        Outcome::Written(entry) => QueryResult {
            version: Some(entry.version),
            ..base
        },
        Outcome::Deleted { tombstone, existed } => QueryResult {
            version: Some(tombstone.version),
            existed: Some(existed),
            ..base
        },
        Outcome::DeletedPrefix(_) => base,
    })
}
