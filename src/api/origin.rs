//! Cross-site request refusal: a browser page from another site must not change data in Cave.
//!
//! A page on any website can make the browser of an operator who runs Cave send `POST` requests with a
//! `text/plain` body to `localhost:2001` (no CORS preflight is needed for that), so without a check any site
//! could write keys, run batches or import data. Browsers label such requests: `Sec-Fetch-Site: cross-site`
//! (or `same-site` from a sibling subdomain) and an `Origin` naming the other site. Requests that change
//! something (every method but GET, HEAD and OPTIONS) carrying either mark are refused with 403. Clients
//! that are not browsers (curl, SDKs, other nodes) send neither header and are not affected; the web UI is
//! same-origin and passes.

use axum::extract::Request;
use axum::http::header::{HOST, ORIGIN};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// The middleware.
pub async fn same_origin_writes(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let cross_fetch = matches!(fetch_site, Some("cross-site") | Some("same-site"));
    let cross_origin = match (headers.get(ORIGIN), headers.get(HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or("");
            // `Origin: null` (sandboxed frames, file: pages) is never our own page.
            let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
            origin == "null" || origin_host.as_bytes() != host.as_bytes()
        }
        (Some(_), None) => true,
        (None, _) => false,
    };
    if cross_fetch || cross_origin {
        return Error::Forbidden("cross-site requests may not change data".into()).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    async fn status(headers: &[(&str, &str)], method: &str) -> u16 {
        let app = Router::new()
            .route("/w", post(|| async { "ok" }).get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(super::same_origin_writes));
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
    }
}
