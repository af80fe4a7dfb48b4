//! `/api/v1/acl/...`: policies, tokens and `whoami` (docs/api.md, "Access control").
//!
//! Every route here but `whoami` needs `admin` (the access-control layer checks that before a handler
//! runs). A token's secret appears in exactly one response, the one that made it; listings show accessors.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::encoding::JsonBody;
use super::kv::read_body;
use super::AppState;
use crate::acl::policy::{self, Policy, ADMIN_POLICY};
use crate::acl::store::TokenRecord;
use crate::acl::token::{self, TokenHash};
use crate::acl::Access;
use crate::error::{Error, Result};

/// Largest body of a policy or token request.
const MAX_ACL_BODY_BYTES: usize = 1 << 20;

fn policy_json(name: &str, policy: &Policy) -> Value {
    json!({"name": name, "rules": policy.rules})
}

/// `GET /api/v1/acl/policies`.
pub async fn list_policies(State(app): State<Arc<AppState>>) -> Json<Value> {
    let all: Vec<Value> = app.acl.policies().iter().map(|(n, p)| policy_json(n, p)).collect();
    Json(Value::Array(all))
}

/// `GET /api/v1/acl/policies/{name}`.
pub async fn get_policy(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>> {
    let policy = app
        .acl
        .policy(&name)
        .ok_or_else(|| Error::NotFound(format!("no policy named {name:?}")))?;
    Ok(Json(policy_json(&name, &policy)))
}

/// `PUT /api/v1/acl/policies/{name}`.
pub async fn put_policy(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: JsonBody,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    policy::validate_name(&name)?;
    if name == ADMIN_POLICY {
        return Err(Error::invalid(format!(
            "{ADMIN_POLICY:?} is built in and cannot be changed"
        )));
    }
    let body = read_body(&headers, body, MAX_ACL_BODY_BYTES).await?;
    let policy = Policy::parse(&body)?;
    app.acl.put_policy(&name, &policy).await?;
    Ok(Json(json!({"message": "ok", "name": name})))
}

/// `DELETE /api/v1/acl/policies/{name}`. Tokens that name it keep working with their other policies.
pub async fn delete_policy(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>> {
    app.acl.delete_policy(&name).await?;
    Ok(Json(json!({"message": "ok"})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    policies: Vec<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    ttl: Option<String>,
}

fn record_json(record: &TokenRecord) -> Value {
    json!({
        "accessor": record.accessor,
        "policies": record.policies,
        "description": record.description,
        "created_ms": record.created_ms,
        "expires_ms": record.expires_ms,
    })
}

/// `POST /api/v1/acl/tokens`: `{"policies": [...], "description"?, "ttl"?}` → the token, shown this once.
pub async fn create_token(
    State(app): State<Arc<AppState>>,
    _: JsonBody,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    let body = read_body(&headers, body, MAX_ACL_BODY_BYTES).await?;
    let new: NewToken =
        serde_json::from_slice(&body).map_err(|e| Error::invalid(format!("malformed token request: {e}")))?;
    if new.policies.is_empty() {
        return Err(Error::invalid("a token needs at least one policy"));
    }
    for name in &new.policies {
        if name != ADMIN_POLICY && app.acl.policy(name).is_none() {
            return Err(Error::invalid(format!("no policy named {name:?} (make it first)")));
        }
    }
    if new.description.len() > 1024 || new.description.chars().any(char::is_control) {
        return Err(Error::invalid(
            "a description is at most 1024 bytes, without control characters",
        ));
    }
    let now_ms = app.db.hlc().time_ms();
    let expires_ms = match &new.ttl {
        None => None,
        Some(text) => {
            let ttl = crate::config::parse_duration(text).map_err(|e| Error::invalid(format!("ttl: {e}")))?;
            if ttl.is_zero() {
                return Err(Error::invalid("ttl: must be longer than 0"));
            }
            Some(now_ms.saturating_add(ttl.as_millis() as u64))
        }
    };
    let secret = token::generate();
    let record = TokenRecord {
        accessor: token::generate_accessor(),
        policies: new.policies,
        description: new.description,
        created_ms: now_ms,
        expires_ms,
    };
    app.acl.put_token(&TokenHash::of(&secret), &record).await?;
    let mut answer = record_json(&record);
    answer["token"] = Value::String(secret);
    Ok(Json(answer))
}

/// `GET /api/v1/acl/tokens`: every stored token's accessor, policies, description and expiry.
pub async fn list_tokens(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(Value::Array(app.acl.tokens().iter().map(record_json).collect()))
}

/// `DELETE /api/v1/acl/tokens/{accessor}`: revoke.
pub async fn revoke_token(State(app): State<Arc<AppState>>, Path(accessor): Path<String>) -> Result<Json<Value>> {
    app.acl.revoke(&accessor).await?;
    Ok(Json(json!({"message": "ok"})))
}

/// `GET /api/v1/acl/whoami`: the caller's token (never its secret) and what it may do.
pub async fn whoami(State(app): State<Arc<AppState>>, access: Access) -> Json<Value> {
    match access {
        Access::Token(auth) => {
            let mut answer = record_json(&auth.record);
            answer["acl"] = Value::Bool(true);
            answer["admin"] = Value::Bool(auth.grant.admin());
            answer["rules"] = json!(auth.grant.rules());
            Json(answer)
        }
        Access::Open | Access::Anonymous => Json(json!({
            "acl": app.acl.enabled(),
            "accessor": "anonymous",
            "admin": !app.acl.enabled(),
            "rules": [{"prefix": "", "allow": crate::acl::Capability::ALL}],
        })),
    }
}
