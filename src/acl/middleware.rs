//! Enforcement: the check that authenticates every HTTP request, and the [`Access`] handlers check keys
//! against.
//!
//! The check classifies the request by its path ([`classify`]) before anything else runs:
//! - **open** routes (`/healthz`, `/readyz`, the UI's static files and `/` (its redirect), CORS preflights, and metrics with
//!   `metrics_public`) pass without a token;
//! - every other route needs a valid token (401 `unauthorized` without one, or with an unknown, revoked
//!   or expired one);
//! - **admin** routes (the ACL endpoints but `whoami`, `system/config`, `perf/logs`, the audit trail, the
//!   cluster view) need the global `admin` capability (403 naming it);
//! - **keyed** routes (KV, query, watch, export, import) let the handler check each key it touches, through
//!   the request's [`Access`], because only the handler has parsed the key, the batch or the import.
//!
//! The check puts the [`Caller`] (the token's public accessor, never the token) into the request's
//! extensions, and the HTTP gate puts it into the response's ([`with_caller`]), where the audit stage
//! outside reads it.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use super::policy::Capability;
use super::store::{Acl, Authority, Refusal};
use super::token::{TokenHash, MAX_TOKEN_CHARS};
use super::Caller;
use crate::error::{Error, Result};

/// The alternative to `Authorization: Bearer`.
pub const TOKEN_HEADER: &str = "x-cave-token";

/// What a route needs before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// Nothing.
    Open,
    /// A valid token.
    Authenticated,
    /// A valid token; the handler checks each key.
    Keyed,
    /// A token with `admin`.
    Admin,
}

/// The class of a request (see the module docs). Prefixes rather than exact paths for the admin routes, so
/// that a route added below one of them is guarded from the start.
pub fn classify(method: &Method, path: &str, metrics_public: bool) -> RouteClass {
    let under = |root: &str| path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'));
    if method == Method::OPTIONS || path == "/healthz" || path == "/readyz" || path == "/" || under("/ui") {
        return RouteClass::Open;
    }
    if path == "/api/v1/perf/metrics" && metrics_public {
        return RouteClass::Open;
    }
    if path == "/api/v1/acl/whoami" {
        return RouteClass::Authenticated;
    }
    let admin = [
        "/api/v1/acl",
        "/api/v1/audit",
        "/api/v1/cluster",
        "/api/v1/system/config",
        "/api/v1/perf/logs",
    ];
    if admin.iter().any(|root| under(root)) {
        return RouteClass::Admin;
    }
    let keyed = [
        "/api/v1/kv",
        "/api/v1/watch",
        "/api/v1/query",
        "/api/v1/export",
        "/api/v1/import",
        "/api/v1/lease",
        "/api/v1/lock",
    ];
    if keyed.iter().any(|root| under(root)) {
        return RouteClass::Keyed;
    }
    RouteClass::Authenticated
}

/// What the handler of a request may let it do.
#[derive(Debug, Clone)]
pub enum Access {
    /// Access control is off: everything.
    Open,
    /// An open route reached without a token: nothing keyed.
    Anonymous,
    /// An authenticated token.
    Token(Arc<Authority>),
}

impl Access {
    fn denied(cap: Capability, what: &str) -> Error {
        Error::Forbidden(format!("this token lacks the {cap} capability {what}"))
    }

    /// Whether `cap` is allowed on `key`.
    pub fn may(&self, cap: Capability, key: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Anonymous => false,
            Access::Token(auth) => auth.grant.allows(cap, key),
        }
    }

    /// Refuse (403) unless `cap` is allowed on `key`.
    pub fn require(&self, cap: Capability, key: &str) -> Result<()> {
        if self.may(cap, key) {
            Ok(())
        } else {
            Err(Access::denied(cap, &format!("on {key:?}")))
        }
    }

    /// Whether `cap` is allowed on some key starting with `prefix`.
    pub fn may_some_below(&self, cap: Capability, prefix: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Anonymous => false,
            Access::Token(auth) => auth.grant.allows_some_below(cap, prefix),
        }
    }

    /// Refuse (403) unless `cap` is allowed on some key starting with `prefix` (listings, watches, exports,
    /// which then skip what is not allowed).
    pub fn require_some_below(&self, cap: Capability, prefix: &str) -> Result<()> {
        if self.may_some_below(cap, prefix) {
            Ok(())
        } else {
            Err(Access::denied(cap, &format!("on any key under {prefix:?}")))
        }
    }

    /// Refuse (403) unless `cap` is allowed on every key starting with `prefix` (a recursive delete).
    pub fn require_all_below(&self, cap: Capability, prefix: &str) -> Result<()> {
        let allowed = match self {
            Access::Open => true,
            Access::Anonymous => false,
            Access::Token(auth) => auth.grant.allows_all_below(cap, prefix),
        };
        if allowed {
            Ok(())
        } else {
            Err(Access::denied(cap, &format!("on every key under {prefix:?}")))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = Error;

    /// Fails closed: a handler reached without the layer (a wiring bug) refuses rather than allows.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Access> {
        parts
            .extensions
            .get::<Access>()
            .cloned()
            .ok_or_else(|| Error::internal("the access-control layer is missing from the router"))
    }
}

/// Settings of the layer.
#[derive(Clone)]
pub struct Enforcer {
    /// The node's ACL.
    pub acl: Arc<Acl>,
    /// Whether `/api/v1/perf/metrics` is open.
    pub metrics_public: bool,
}

/// The token a request carries: `Authorization: Bearer <token>`, else `X-Cave-Token`. `Ok(None)` when there
/// is none; a malformed header is refused (never echoed back).
fn presented(headers: &HeaderMap) -> Result<Option<&str>> {
    let malformed = || Error::Unauthorized("the token header is malformed".into());
    let token = if let Some(value) = headers.get(AUTHORIZATION) {
        let text = value.to_str().map_err(|_| malformed())?;
        let (scheme, token) = text.trim().split_once(' ').ok_or_else(malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Unauthorized(
                "only bearer tokens are accepted: send Authorization: Bearer <token>".into(),
            ));
        }
        token.trim()
    } else if let Some(value) = headers.get(TOKEN_HEADER) {
        value.to_str().map_err(|_| malformed())?.trim()
    } else {
        return Ok(None);
    };
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Err(malformed());
    }
    Ok(Some(token))
}

fn unauthorized(err: Error) -> Response {
    let mut response = err.into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"cave\""));
    response
}

/// The access-control check (see the module docs): the caller it names, with the request's [`Access`] and
/// [`Caller`] in its extensions, or the refusal to send instead (which already names its caller).
///
/// Synchronous and no middleware of its own: the HTTP gate (`crate::api`) runs it before the route, and puts
/// the caller on the route's answer with [`with_caller`].
pub fn authenticate(enforcer: &Enforcer, request: &mut Request) -> Result<Caller, Box<Response>> {
    let acl = &enforcer.acl;
    let (access, caller) = if !acl.enabled() {
        (Access::Open, Caller::anonymous())
    } else {
        let class = classify(request.method(), request.uri().path(), enforcer.metrics_public);
        match (class, presented(request.headers())) {
            (RouteClass::Open, Ok(None) | Err(_)) => (Access::Anonymous, Caller::anonymous()),
            (_, Err(err)) => return Err(refused(unauthorized(err), Caller::anonymous())),
            (RouteClass::Open, Ok(Some(token))) => match acl.authenticate(&TokenHash::of(token)) {
                // An open route with a valid token: named in the audit trail, allowed nothing more.
                Ok(auth) => (
                    Access::Anonymous,
                    Caller {
                        accessor: auth.accessor.clone(),
                    },
                ),
                Err(_) => (Access::Anonymous, Caller::anonymous()),
            },
            (_, Ok(None)) => {
                let err = Error::Unauthorized(
                    "this request needs a token: send Authorization: Bearer <token> (or X-Cave-Token)".into(),
                );
                return Err(refused(unauthorized(err), Caller::anonymous()));
            }
            (class, Ok(Some(token))) => match acl.authenticate(&TokenHash::of(token)) {
                Err(refusal) => {
                    let why = match refusal {
                        Refusal::Unknown => "the token is not valid (unknown or revoked)",
                        Refusal::Expired => "the token has expired",
                    };
                    return Err(refused(
                        unauthorized(Error::Unauthorized(why.into())),
                        Caller::anonymous(),
                    ));
                }
                Ok(auth) => {
                    let caller = Caller {
                        accessor: auth.accessor.clone(),
                    };
                    if class == RouteClass::Admin && !auth.grant.admin() {
                        let err = Error::Forbidden("this token lacks the admin capability this route needs".into());
                        return Err(refused(err.into_response(), caller));
                    }
                    (Access::Token(auth), caller)
                }
            },
        }
    };
    request.extensions_mut().insert(access);
    request.extensions_mut().insert(caller.clone());
    Ok(caller)
}

/// A refusal naming `caller`, boxed: refusals are rare, and a `Response` is big to return by value.
fn refused(response: Response, caller: Caller) -> Box<Response> {
    Box::new(with_caller(response, caller))
}

/// `response` naming `caller` in its extensions, where the audit layer reads it.
pub fn with_caller(mut response: Response, caller: Caller) -> Response {
    response.extensions_mut().insert(caller);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_by_path() {
        let get = Method::GET;
        let cases = [
            ("/healthz", RouteClass::Open),
            ("/readyz", RouteClass::Open),
            ("/ui", RouteClass::Open),
            ("/ui/app.js", RouteClass::Open),
            ("/uix", RouteClass::Authenticated),
            ("/api/v1/perf/metrics", RouteClass::Authenticated),
            ("/api/v1/perf/dashboard", RouteClass::Authenticated),
            ("/api/v1/system/info", RouteClass::Authenticated),
            ("/api/v1/acl/whoami", RouteClass::Authenticated),
            ("/api/v1/acl/tokens", RouteClass::Admin),
            ("/api/v1/acl/policies/x", RouteClass::Admin),
            ("/api/v1/audit", RouteClass::Admin),
            ("/api/v1/cluster/nodes", RouteClass::Admin),
            ("/api/v1/system/config", RouteClass::Admin),
            ("/api/v1/perf/logs", RouteClass::Admin),
            ("/api/v1/kv/a/b", RouteClass::Keyed),
            ("/api/v1/kv", RouteClass::Keyed),
            ("/api/v1/watch/", RouteClass::Keyed),
            ("/api/v1/query", RouteClass::Keyed),
            ("/api/v1/export", RouteClass::Keyed),
            ("/api/v1/import", RouteClass::Keyed),
            ("/api/v1/nothing", RouteClass::Authenticated),
        ];
        for (path, class) in cases {
            assert_eq!(classify(&get, path, false), class, "{path}");
        }
        assert_eq!(classify(&get, "/api/v1/perf/metrics", true), RouteClass::Open);
        assert_eq!(classify(&Method::OPTIONS, "/api/v1/kv/a", false), RouteClass::Open);
    }

    #[test]
    fn tokens_come_from_either_header_and_bad_ones_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h).unwrap(), None);
        h.insert(TOKEN_HEADER, HeaderValue::from_static("abc"));
        assert_eq!(presented(&h).unwrap(), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  xyz "));
        assert_eq!(presented(&h).unwrap(), Some("xyz"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcg=="));
        assert!(matches!(presented(&h), Err(Error::Unauthorized(_))));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer"));
        let err = presented(&h).unwrap_err();
        assert!(!err.to_string().contains("Bearer"), "{err}");
    }
}
