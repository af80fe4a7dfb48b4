//! `/api/v1/lease`: grant, inspect, renew and revoke leases ([`crate::crdt::lease`]); `PUT /api/v1/kv/...?lease=ID`
//! binds a value to one.
//!
//! Any token that may write some key may hold leases: a lease is only a clock, what it guards is checked where
//! a key is bound to it (the write needs the key's `write`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::encoding::{parse_ttl, JsonBody};
use super::kv::read_body;
use super::AppState;
use crate::acl::policy::Capability;
use crate::acl::Access;
use crate::crdt::LeaseId;
use crate::error::{Error, Result};

/// Largest request body of a grant (`{"ttl":"10s"}`).
const MAX_LEASE_BODY_BYTES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    /// `"10s"`, `"1m30s"`, or a number of seconds (etcd's habit).
    ttl: TtlJson,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TtlJson {
    Text(String),
    Seconds(u64),
}

impl TtlJson {
    /// The duration, between `min` and `max` (the `min_ttl`, `max_ttl` settings).
    fn within(&self, min: std::time::Duration, max: std::time::Duration) -> Result<std::time::Duration> {
        match self {
            TtlJson::Text(text) => parse_ttl(text, min, max, "ttl"),
            TtlJson::Seconds(s) => parse_ttl(&format!("{s}s"), min, max, "ttl"),
        }
    }
}

fn holder(access: &Access) -> Result<()> {
    access.require_some_below(Capability::Write, "")
}

fn id_of(text: &str) -> Result<LeaseId> {
    text.parse()
}

/// `POST /api/v1/lease` `{"ttl":"10s"}`: a new lease, `{"id","ttl","ttl_ms","expires_ms",...}`.
pub async fn grant(
    State(app): State<Arc<AppState>>,
    access: Access,
    _: JsonBody,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    holder(&access)?;
    let body = read_body(&headers, body, MAX_LEASE_BODY_BYTES).await?;
    let grant: Grant = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("a lease request is {{\"ttl\":\"10s\"}}: {e}")))?;
    let ttl = grant.ttl.within(app.config.min_ttl, app.config.max_ttl)?;
    let lease = app.db.grant_lease(ttl).await?;
    Ok(Json(json!(lease)))
}

/// `GET /api/v1/lease`: the live leases.
pub async fn list(State(app): State<Arc<AppState>>, access: Access) -> Result<Json<Value>> {
    holder(&access)?;
    Ok(Json(json!({ "leases": app.db.leases()? })))
}

/// `GET /api/v1/lease/{id}`: a live lease and the keys bound to it.
pub async fn show(State(app): State<Arc<AppState>>, access: Access, Path(id): Path<String>) -> Result<Json<Value>> {
    holder(&access)?;
    Ok(Json(json!(app.db.lease(id_of(&id)?)?)))
}

/// `POST /api/v1/lease/{id}/renew`: extend a live lease by its TTL from now (404 once it has ended).
pub async fn renew(State(app): State<Arc<AppState>>, access: Access, Path(id): Path<String>) -> Result<Json<Value>> {
    holder(&access)?;
    let id = id_of(&id)?;
    let lease = app.db.renew_lease(id).await?;
    // A lease that holds locks extends their holds too, through the agreement (503 if it cannot).
    let locks = super::lock::extend_with(&app, id, lease.expires_ms).await?;
    let mut body = json!(lease);
    body["locks"] = json!(locks);
    Ok(Json(body))
}

/// `DELETE /api/v1/lease/{id}`: end a lease now, and every key bound to it with it.
pub async fn revoke(State(app): State<Arc<AppState>>, access: Access, Path(id): Path<String>) -> Result<Json<Value>> {
    holder(&access)?;
    let id = id_of(&id)?;
    let locks = app.locks.locks_of(id);
    let keys = app.db.revoke_lease(id).await?;
    let locks = super::lock::release_with(&app, id, locks).await;
    Ok(Json(json!({ "id": id, "revoked": true, "keys": keys, "locks": locks })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ttl_of(body: &str, min: Duration, max: Duration) -> Result<Duration> {
        let grant: Grant = serde_json::from_str(body).map_err(|e| Error::invalid(e.to_string()))?;
        grant.ttl.within(min, max)
    }

    #[test]
    fn a_grant_takes_a_duration_or_seconds_within_the_bounds() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(3600));
        assert_eq!(ttl_of(r#"{"ttl":"10s"}"#, min, max).unwrap(), Duration::from_secs(10));
        assert_eq!(ttl_of(r#"{"ttl":90}"#, min, max).unwrap(), Duration::from_secs(90));
        for bad in [
            r#"{"ttl":"0s"}"#,
            r#"{"ttl":"2h"}"#,
            r#"{"ttl":-1}"#,
            r#"{"ttl":"x"}"#,
            r#"{}"#,
            r#"{"ttl":"1s","x":1}"#,
        ] {
            assert!(ttl_of(bad, min, max).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_hex_and_never_zero() {
        assert!(
            id_of("0").is_err() && id_of("").is_err() && id_of("xyz").is_err() && id_of("12345678901234567").is_err()
        );
        assert_eq!(id_of("00000000000000ab").unwrap().get(), 0xab);
    }
}
