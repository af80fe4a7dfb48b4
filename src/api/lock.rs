//! `/api/v1/lock/{name}`: acquire, inspect and release locks held by leases, with fencing tokens.
//!
//! Acquiring and releasing go through the cluster's agreement ([`crate::replication::lock`]): a majority of
//! the members must accept, or the answer is 503. A lock's name is a key path, and its ACL is that key's:
//! acquiring and releasing need `write` on it, reading it `read`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::encoding::{path_after, JsonBody, Params};
use super::kv::read_body;
use super::AppState;
use crate::acl::policy::Capability;
use crate::acl::Access;
use crate::crdt::lock::Grant;
use crate::crdt::LeaseId;
use crate::error::{Error, Result};
use crate::replication::{LockOp, LockOutcome};

const ROUTE: &str = "/api/v1/lock";
/// Largest request body (`{"lease":"..."}`).
const MAX_LOCK_BODY_BYTES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Holder {
    lease: LeaseId,
}

/// The lock a request path names (a valid key path).
fn name_of(uri: &Uri) -> Result<String> {
    let name = path_after(uri.path(), ROUTE)?;
    if name.is_empty() {
        return Err(Error::invalid("a lock is named by a key path: /api/v1/lock/{name}"));
    }
    crate::key::validate(&name)?;
    Ok(name)
}

fn unavailable(name: &str, why: &str) -> Error {
    Error::Unavailable(format!(
        "lock {name:?} was not decided: {why} (a lock needs a majority of the cluster's members; retry)"
    ))
}

/// A 409 naming who holds the lock.
fn held_by(name: &str, g: &Grant) -> Response {
    let e = Error::Conflict(format!("lock {name:?} is held by another lease"));
    let body = json!({
        "error": e.to_string(),
        "code": e.code(),
        "lock": name,
        "holder": g.lease,
        "fence": g.fence,
        "expires_ms": g.expires_ms,
    });
    (super::error::status(&e), Json(body)).into_response()
}

fn grant_json(name: &str, g: &Grant) -> Value {
    json!({ "lock": name, "holder": g.lease, "fence": g.fence, "node": g.node, "expires_ms": g.expires_ms })
}

/// `POST /api/v1/lock/{name}` `{"lease":ID}`: take the lock for a live lease (or extend the hold of the lease
/// that has it): 200 `{"lock","holder","fence","node","expires_ms"}`, 409 with the holder, 503 without a
/// majority.
pub async fn acquire(
    State(app): State<Arc<AppState>>,
    access: Access,
    uri: Uri,
    _: JsonBody,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let name = name_of(&uri)?;
    access.require(Capability::Write, &name)?;
    let body = read_body(&headers, body, MAX_LOCK_BODY_BYTES).await?;
    let holder: Holder = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("a lock request is {{\"lease\":\"ID\"}}: {e}")))?;
    // The hold lasts as long as the lease does now; renewing the lease extends it.
    let lease = app.db.lease(holder.lease)?;
    let op = LockOp::Acquire {
        lease: holder.lease,
        expires_ms: lease.info.expires_ms,
    };
    match app.locks.lock(&name, op).await {
        LockOutcome::Granted(g) => Ok(Json(grant_json(&name, &g)).into_response()),
        LockOutcome::Held(g) => Ok(held_by(&name, &g)),
        LockOutcome::Unavailable(why) => Err(unavailable(&name, why)),
        other => Err(Error::internal(format!("an acquire ended as {other:?}"))),
    }
}

/// `DELETE /api/v1/lock/{name}?lease=ID` (or the body `{"lease":ID}`): release the lock, holder only:
/// 200 `{"lock","released":true,"fence"}`, 409 if another lease holds it, 404 if nobody does.
pub async fn release(
    State(app): State<Arc<AppState>>,
    access: Access,
    uri: Uri,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let name = name_of(&uri)?;
    access.require(Capability::Write, &name)?;
    let lease = match params.lease()? {
        Some(id) => id,
        None => {
            let body = read_body(&headers, body, MAX_LOCK_BODY_BYTES).await?;
            let holder: Holder = serde_json::from_slice(&body).map_err(|e| {
                Error::invalid(format!(
                    "say which lease releases the lock: ?lease=ID or {{\"lease\":\"ID\"}}: {e}"
                ))
            })?;
            holder.lease
        }
    };
    match app.locks.lock(&name, LockOp::Release { lease }).await {
        LockOutcome::Released(g) => {
            Ok(Json(json!({ "lock": name, "released": true, "fence": g.fence })).into_response())
        }
        LockOutcome::NotHeld(Some(g)) if g.lease.is_some() && g.lease != Some(lease) => Ok(held_by(&name, &g)),
        LockOutcome::NotHeld(_) => Err(Error::NotFound(format!("lock {name:?} is not held by lease {lease}"))),
        LockOutcome::Unavailable(why) => Err(unavailable(&name, why)),
        other => Err(Error::internal(format!("a release ended as {other:?}"))),
    }
}

/// `GET /api/v1/lock/{name}`: the lock as this node last heard of it (`held`, `holder`, `fence`); 404 if it
/// was never granted.
pub async fn show(State(app): State<Arc<AppState>>, access: Access, uri: Uri) -> Result<Json<Value>> {
    let name = name_of(&uri)?;
    access.require(Capability::Read, &name)?;
    let view = app
        .db
        .lock(&name)
        .ok_or_else(|| Error::NotFound(format!("lock {name:?} was never granted")))?;
    Ok(Json(json!(view)))
}

/// `GET /api/v1/lock`: the held locks this token may read.
pub async fn list(State(app): State<Arc<AppState>>, access: Access) -> Result<Json<Value>> {
    access.require_some_below(Capability::Read, "")?;
    let locks = app.db.locks(|name| access.may(Capability::Read, name));
    Ok(Json(json!({ "locks": locks })))
}

/// What a lease's renewal does to the locks it holds: extends each hold to the lease's new expiry, through
/// the agreement. Returns the locks extended, or 503 naming one that could not be (the lease itself was
/// renewed; a lock not extended ends at its old expiry).
pub async fn extend_with(app: &AppState, lease: LeaseId, expires_ms: u64) -> Result<Vec<Value>> {
    let mut extended = Vec::new();
    for name in app.locks.locks_of(lease) {
        match app.locks.lock(&name, LockOp::Acquire { lease, expires_ms }).await {
            LockOutcome::Granted(g) => extended.push(json!({ "lock": name, "fence": g.fence })),
            LockOutcome::Unavailable(why) => {
                return Err(Error::Unavailable(format!(
                    "lease {lease} was renewed, but its lock {name:?} could not be extended: {why}; it ends at its \
                     old expiry unless a renewal with a majority extends it"
                )))
            }
            _ => {} // lost meanwhile: not this lease's any more
        }
    }
    Ok(extended)
}

/// What a lease's revoke does to the locks it holds: releases them (best effort: a lock whose release finds
/// no majority ends at its expiry anyway). Returns how many were released.
pub async fn release_with(app: &AppState, lease: LeaseId, names: Vec<String>) -> usize {
    let mut released = 0;
    for name in names {
        if let LockOutcome::Released(_) = app.locks.lock(&name, LockOp::Release { lease }).await {
            released += 1;
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_named_by_a_valid_key_path() {
        let name = |p: &str| name_of(&p.parse::<Uri>().unwrap());
        assert_eq!(name("/api/v1/lock/jobs/nightly").unwrap(), "jobs/nightly");
        assert_eq!(name("/api/v1/lock/caf%C3%A9").unwrap(), "café");
        for bad in [
            "/api/v1/lock",
            "/api/v1/lock/",
            "/api/v1/lock/_system/x",
            "/api/v1/lock/a//b",
            "/api/v1/lock/%ff",
        ] {
            assert!(name(bad).is_err(), "{bad}");
        }
    }
}
