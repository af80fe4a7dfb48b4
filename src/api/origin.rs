//! Requests from browsers that are not this node's own pages: DNS rebinding and cross-site writes.
//!
//! **Host check** ([`allowed_host`], every request). A page on `evil.example` can make its name resolve to
//! `127.0.0.1` (DNS rebinding); the browser then treats the node as part of that site, sends
//! `Host: evil.example:2001` and lets the page read the answers, secrets included. Only the `Host` names the
//! node is known by are answered; any other gets 421. Known are: any IP address (a browser sends an IP as
//! `Host` only for a page loaded from that IP, which no rebinding can arrange), `localhost` and its
//! subdomains (browsers resolve them to loopback themselves), this machine's host name (read at start-up),
//! the hosts of `advertise_addr` and of the advertised HTTP address, and `allowed_hosts` (`*`: any).
//! A request without `Host` (HTTP/1.0) is not a browser's and passes.
//!
//! **Cross-site writes** ([`same_origin_writes`]). A page on any website can make the browser of an operator
//! who runs Cave send `POST` requests with a `text/plain` body to `localhost:2001` (no CORS preflight is
//! needed for that), so without a check any site could write keys, run batches or import data. Browsers
//! label such requests: `Sec-Fetch-Site: cross-site` (or `same-site` from a sibling subdomain) and an
//! `Origin` naming the other site. Requests that change something (every method but GET, HEAD and OPTIONS)
//! carrying either mark are refused with 403. Clients that are not browsers (curl, SDKs, other nodes) send
//! neither header and are not affected; the web UI is same-origin and passes. The origins configured in
//! `cors_origins` are apps the operator chose to let in ([`cors`]): their requests pass.
//!
//! **CORS** ([`cors`]). A browser app served from another origin needs the node to answer its preflight
//! (`OPTIONS` with `Access-Control-Request-Method`) and to mark the answers as readable by it. Only the
//! configured origins get that; with none configured there is no CORS layer at all and `OPTIONS` answers
//! 405, as any route does for a method it lacks. A preflight carries no credentials (browsers never send
//! `Authorization` on one), so the layer must sit outside any authentication, which would refuse it.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::gate::Inner;
use crate::config::Config;
use crate::error::Error;

/// The host names a node answers besides IP addresses and `localhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    any: bool,
    names: Vec<String>,
}

impl AllowedHosts {
    /// The names `config` and this machine give the node.
    pub fn of(config: &Config) -> AllowedHosts {
        let advertised = [config.advertise_http(), config.advertise_grpc()];
        let names = std::iter::once(crate::config::hostname())
            .chain(advertised.iter().map(|addr| host_part(addr).to_string()))
            .chain(config.allowed_hosts.iter().cloned())
            .map(|name| normalize(&name))
            .collect();
        AllowedHosts {
            any: config.allowed_hosts.iter().any(|h| h == "*"),
            names,
        }
    }

    /// Whether a request with `Host: host` (a port allowed) is for this node.
    pub fn allows(&self, host: &str) -> bool {
        let name = normalize(host_part(host));
        self.any || name == "localhost" || name.ends_with(".localhost") || is_ip(&name) || self.names.contains(&name)
    }
}

/// `host` of `host:port`, `[v6]` of `[v6]:port`; the whole text when there is no port.
fn host_part(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Host names compare without case and without a final dot (`localhost.` is `localhost`).
fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn is_ip(name: &str) -> bool {
    match name.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => name.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4()),
    }
}

/// The host check: 421 for a `Host` (or, in HTTP/2, an `:authority`) the node is not known by.
pub async fn allowed_host(hosts: &AllowedHosts, request: Request, next: impl Inner) -> Response {
    let host = match request.headers().get(HOST) {
        Some(value) => Some(value.to_str().unwrap_or("")),
        None => request.uri().authority().map(|a| a.as_str()),
    };
    if let Some(host) = host {
        if !hosts.allows(host) {
            let shown: String = host.chars().take(100).collect();
            return Error::MisdirectedRequest(format!(
                "this node does not serve host `{shown}`; if it should, add the name to allowed_hosts \
                 (--allowed-hosts)"
            ))
            .into_response();
        }
    }
    next.call(request).await
}

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The request headers a cross-origin app may send: tokens (`Authorization`, `X-Cave-Token`), the body's
/// type and the conditional-request headers.
const CORS_REQUEST_HEADERS: [&str; 5] = [
    "authorization",
    "x-cave-token",
    "content-type",
    "if-match",
    "if-none-match",
];

/// The response headers a cross-origin app may read besides the CORS-safelisted ones.
const CORS_EXPOSED_HEADERS: [&str; 4] = ["etag", "x-cave-version", "x-cave-secret", "x-cave-stale"];

/// The CORS layer for `origins` (validated by the config: `scheme://host[:port]`, lower case); `None` when
/// there are none, so that the node answers as it does without CORS.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::POST,
                Method::DELETE,
                Method::PATCH,
            ])
            .allow_headers(CORS_REQUEST_HEADERS.map(HeaderName::from_static))
            .expose_headers(CORS_EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// The origins whose requests pass the cross-site check (`cors_origins`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedOrigins(pub Vec<String>);

/// The cross-site check.
pub async fn same_origin_writes(trusted: &TrustedOrigins, request: Request, next: impl Inner) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.call(request).await;
    }
    let headers = request.headers();
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    if origin.is_some_and(|origin| trusted.0.iter().any(|t| t.eq_ignore_ascii_case(origin))) {
        return next.call(request).await;
    }
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let cross_fetch = matches!(fetch_site, Some("cross-site") | Some("same-site"));
    // HTTP/2 (browsers speak it over TLS) carries the host as `:authority`, which lands in the URI, not `Host`.
    let host = match headers.get(HOST) {
        Some(value) => Some(value.as_bytes()),
        None => request.uri().authority().map(|a| a.as_str().as_bytes()),
    };
    let cross_origin = match (headers.get(ORIGIN), host) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or("");
            // `Origin: null` (sandboxed frames, file: pages) is never our own page.
            let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
            origin == "null" || origin_host.as_bytes() != host
        }
        (Some(_), None) => true,
        (None, _) => false,
    };
    if cross_fetch || cross_origin {
        return Error::Forbidden("cross-site requests may not change data".into()).into_response();
    }
    next.call(request).await
}

#[cfg(test)]
mod tests {
    use super::AllowedHosts;
    use crate::config::Config;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::middleware::Next;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    async fn status(headers: &[(&str, &str)], method: &str) -> u16 {
        let app = Router::new()
            .route("/w", post(|| async { "ok" }).get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(|r: Request, n: Next| async move {
                let trusted = super::TrustedOrigins(vec!["https://app.example".into()]);
                super::same_origin_writes(&trusted, r, |r| n.run(r)).await
            }));
        let mut req = axum::http::Request::builder().method(method).uri("/w");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        app.oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn cross_site_writes_are_refused_and_everything_else_passes() {
        assert_eq!(status(&[], "POST").await, 200);
        assert_eq!(
            status(
                &[("host", "localhost:2001"), ("origin", "http://localhost:2001")],
                "POST"
            )
            .await,
            200
        );
        assert_eq!(status(&[("sec-fetch-site", "same-origin")], "POST").await, 200);
        assert_eq!(
            status(
                &[("host", "localhost:2001"), ("origin", "https://evil.example")],
                "POST"
            )
            .await,
            403
        );
        assert_eq!(status(&[("sec-fetch-site", "cross-site")], "POST").await, 403);
        assert_eq!(
            status(&[("host", "localhost:2001"), ("origin", "null")], "POST").await,
            403
        );
        assert_eq!(
            status(&[("host", "localhost:2001"), ("origin", "https://evil.example")], "GET").await,
            200
        );
        // A configured CORS origin may write; its neighbours may not.
        let app = [
            ("host", "localhost:2001"),
            ("origin", "https://app.example"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert_eq!(status(&app, "POST").await, 200);
        let sibling = [("host", "localhost:2001"), ("origin", "https://app.example.evil")];
        assert_eq!(status(&sibling, "POST").await, 403);
    }

    /// HTTP/2 has no `Host`: the host is the request URI's authority (`:authority`), and counts the same.
    #[tokio::test]
    async fn an_http2_request_is_judged_by_its_authority() {
        let app = Router::new()
            .route("/w", post(|| async { "ok" }))
            .layer(axum::middleware::from_fn(|r: Request, n: Next| async move {
                super::same_origin_writes(&super::TrustedOrigins(Vec::new()), r, |r| n.run(r)).await
            }));
        for (origin, expected) in [("https://127.0.0.1:2001", 200), ("https://evil.example", 403)] {
            let request = axum::http::Request::builder()
                .method("POST")
                .uri("https://127.0.0.1:2001/w")
                .version(axum::http::Version::HTTP_2)
                .header("origin", origin)
                .body(Body::empty())
                .unwrap();
            let status = app.clone().oneshot(request).await.unwrap().status().as_u16();
            assert_eq!(status, expected, "{origin}");
        }
    }

    fn hosts(allowed: &[&str]) -> AllowedHosts {
        AllowedHosts::of(&Config {
            allowed_hosts: allowed.iter().map(|h| h.to_string()).collect(),
            advertise_addr: Some("node1.internal:2000".into()),
            ..Config::default()
        })
    }

    #[test]
    fn only_the_names_of_the_node_are_allowed_hosts() {
        let allowed = hosts(&["cave.example.com"]);
        for good in [
            "localhost",
            "localhost:2001",
            "LOCALHOST.:2001",
            "ui.localhost:2001",
            "127.0.0.1:2001",
            "10.1.2.3",
            "[::1]:2001",
            "[fd00::5]",
            "node1.internal:2001",
            "cave.example.com:443",
            &crate::config::hostname(),
        ] {
            assert!(allowed.allows(good), "{good} should be allowed");
        }
        for bad in [
            "evil.example:2001",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "cave.example.com.evil.example",
            "",
            "[::1",
            "::1",
        ] {
            assert!(!allowed.allows(bad), "{bad} should be refused");
        }
        assert!(hosts(&["*"]).allows("evil.example:2001"));
    }

    #[tokio::test]
    async fn a_foreign_host_gets_421_on_reads_and_writes() {
        let app = || {
            Router::new()
                .route("/w", post(|| async { "ok" }).get(|| async { "ok" }))
                .layer(axum::middleware::from_fn(|r: Request, n: Next| async move {
                    super::allowed_host(&hosts(&[]), r, |r| n.run(r)).await
                }))
        };
        for (method, host, want) in [
            ("GET", Some("evil.example:2001"), 421),
            ("POST", Some("evil.example:2001"), 421),
            ("GET", Some("127.0.0.1:2001"), 200),
            ("POST", Some("localhost:2001"), 200),
            ("GET", None, 200),
        ] {
            let mut req = axum::http::Request::builder().method(method).uri("/w");
            if let Some(host) = host {
                req = req.header("host", host);
            }
            let response = app().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status().as_u16(), want, "{method} {host:?}");
        }
    }
}
