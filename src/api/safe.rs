//! Values served safely: a stored value must never run as a page of Cave's origin.
//!
//! Anyone who may write one key could otherwise store `<script>` as `text/html` (or an SVG with a script)
//! and have an operator's browser open it: the script would run with the operator's access to every route.
//! So every response under `/api/` (value reads, export, and every JSON answer alike) carries:
//!
//! - `X-Content-Type-Options: nosniff`, so a browser renders it only as its declared type;
//! - `Content-Security-Policy: sandbox; default-src 'none'; frame-ancestors 'none'`: even rendered, the
//!   document is put in a unique opaque origin with scripts, forms and plugins off, loads nothing and cannot
//!   be framed;
//! - `Content-Disposition: attachment` unless its type is one a browser shows inertly (plain text, JSON,
//!   raster images, event streams: [`INLINE`]). HTML, SVG, XML, PDF and every type not on that list are
//!   downloaded rather than rendered.
//!
//! The stored `Content-Type` itself is served unchanged, so API clients see exactly what was written; fetch
//! and other programmatic clients ignore `Content-Disposition` and the CSP. The UI's own files (`/ui/`)
//! carry their own, script-allowing policy (see `ui.rs`).

use axum::extract::Request;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

/// The policy of every API response: no script, no subresource, no framing, an opaque origin.
pub const CSP: &str = "sandbox; default-src 'none'; frame-ancestors 'none'";

/// Media types (essence, lower case) a browser displays without running anything: everything else is served
/// as an attachment. `+json` types are inline too.
pub const INLINE: &[&str] = &[
    "text/plain",
    "text/csv",
    "text/event-stream",
    "application/json",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
];

/// The middleware: [`protect`] every response to a path under `/api/`.
pub async fn values(request: Request, next: impl super::gate::Inner) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.call(request).await;
    if api {
        protect(response.headers_mut());
    }
    response
}

/// Add the headers of this module's essay to a response's `headers`.
pub fn protect(headers: &mut HeaderMap) {
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    let inline = headers
        .get(CONTENT_TYPE)
        .is_none_or(|value| is_inline(value.as_bytes()));
    if !inline && !headers.contains_key(CONTENT_DISPOSITION) {
        headers.insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
}

/// Whether a `Content-Type` value is one of [`INLINE`] (parameters such as `charset` aside).
fn is_inline(content_type: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(content_type) else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    INLINE.contains(&essence.as_str()) || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        }
        protect(&mut headers);
        headers
    }

    #[test]
    fn active_types_are_attachments_and_every_response_is_sandboxed() {
        for active in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "application/pdf",
            "text/javascript",
            "application/octet-stream",
            "multipart/x-mixed-replace; boundary=x",
            "nonsense",
        ] {
            let headers = served(Some(active));
            assert_eq!(headers[CONTENT_DISPOSITION], "attachment", "{active}");
            assert_eq!(headers[CONTENT_TYPE], active, "the stored type is served unchanged");
        }
        for inert in [
            "text/plain; charset=utf-8",
            "application/json",
            "application/problem+json",
            "image/png",
            "text/event-stream",
        ] {
            assert!(!served(Some(inert)).contains_key(CONTENT_DISPOSITION), "{inert}");
        }
        for headers in [
            served(None),
            served(Some("text/html")),
            served(Some("application/json")),
        ] {
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
            let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("sandbox") && csp.contains("default-src 'none'"), "{csp}");
        }
    }
}
