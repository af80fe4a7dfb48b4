//! The outer layers every request passes: limits on the request head, and one JSON shape for every error.
//!
//! Handlers report errors through [`crate::Error`], but some answers are written before a handler runs:
//! axum's extractor rejections (a path that is not UTF-8, a malformed query string) and its method and
//! route fallbacks answer in plain text. [`json_errors`] rewrites any error response that is not JSON into
//! `{"error", "code"}`, keeping the status and the message. [`head_limits`] answers a request line or header
//! block that is larger than any real client sends with 414 or 431, as JSON. What hyper refuses while
//! parsing (a URI over 64 KiB, a head over its buffer, more than 100 headers, bytes that are not HTTP) it
//! answers itself with an empty body, before any of this runs; `docs/api.md` lists those cases.
//!
//! [`drain_unread_body`] makes an early answer reach the client. A handler that refuses a request before
//! reading its body (413 on a `Content-Length` over the limit, 400, 403, 415) lets hyper close the connection
//! with the rest of the body unread, and the kernel then resets it: a client that writes the whole body
//! before it reads (Python's `http.client` and `requests`, most simple clients) gets "broken pipe" or
//! "connection reset" instead of the answer. (curl waits with `Expect: 100-continue` and sees it.) So the
//! rest of an unread HTTP/1 body is read and discarded before the answer goes out, up to
//! [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`]: a bounded cost, after which the connection is closed as before.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use axum::http::{HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;

use super::gate::Inner;

/// Longest request target (path and query) answered: a key of the largest size, percent-encoded throughout,
/// fits more than twice.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Largest total of header names and values answered.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Longest plain-text error body carried over into the JSON message; a longer one is replaced by the
/// status's reason.
const MAX_ERROR_TEXT_BYTES: usize = 1 << 10;

/// Most bytes of an unread request body read and discarded so that an early answer reaches the client: a
/// few times the default `max_value_bytes`, so that a value somewhat over the limit still gets its 413.
pub const DRAIN_MAX_BYTES: u64 = 4 << 20;
/// Longest time spent reading an unread request body before the connection is closed anyway.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

/// Read and discard what the handler left of an HTTP/1 request body, within [`DRAIN_MAX_BYTES`] and
/// [`DRAIN_MAX_TIME`], before the answer is sent (see the module docs). A body the handler read in full
/// costs nothing; a client that sent `Expect: 100-continue` has not sent its body and is not asked to,
/// HTTP/2 resets just the stream, and a body declared larger than the bound could not be drained anyway, so
/// none of those is read.
pub async fn drain_unread_body(request: Request, next: impl Inner) -> Response {
    let headers = request.headers();
    let continues = headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let too_long = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > DRAIN_MAX_BYTES);
    if request.version() >= Version::HTTP_2 || continues || too_long || request.body().is_end_stream() {
        return next.call(request).await;
    }
    let (parts, body) = request.into_parts();
    let slot = Arc::new(parking_lot::Mutex::new(Some(body)));
    let request = Request::from_parts(parts, Body::new(SharedBody(slot.clone())));
    let response = next.call(request).await;
    // The handler is done; whatever of the body it did not read is still in the slot.
    let rest = slot.lock().take();
    if let Some(rest) = rest.filter(|body| !body.is_end_stream()) {
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, discard(rest, DRAIN_MAX_BYTES)).await;
    }
    response
}

/// Read `body` to its end or until more than `limit` bytes came, keeping nothing.
async fn discard(body: Body, limit: u64) {
    let mut body = std::pin::pin!(body);
    let mut read = 0u64;
    while let Some(Ok(frame)) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        read += frame.data_ref().map_or(0, |data| data.len() as u64);
        if read > limit {
            return;
        }
    }
}

/// The request body as the handler sees it, while the middleware keeps hold of it: dropping this leaves the
/// body in the slot.
struct SharedBody(Arc<parking_lot::Mutex<Option<Body>>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.0.lock().as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0
            .lock()
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

/// 414 for a request target over [`MAX_URI_BYTES`], 431 for headers over [`MAX_HEADER_BYTES`].
pub async fn head_limits(request: Request, next: impl Inner) -> Response {
    let uri_bytes = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        let message = format!("the request target is {uri_bytes} bytes, the limit is {MAX_URI_BYTES}");
        return error(StatusCode::URI_TOO_LONG, "uri_too_long", message);
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        let message = format!("the headers are {header_bytes} bytes, the limit is {MAX_HEADER_BYTES}");
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_fields_too_large",
            message,
        );
    }
    next.call(request).await
}

/// Rewrite an error response that is not JSON into the JSON error shape.
pub async fn json_errors(request: Request, next: impl Inner) -> Response {
    let response = next.call(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, MAX_ERROR_TEXT_BYTES).collect().await {
        Ok(collected) => String::from_utf8(collected.to_bytes().to_vec()).ok(),
        Err(_) => None,
    };
    let reason = status.canonical_reason().unwrap_or("error");
    let message = text
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| reason.to_string());
    let body = serde_json::json!({"error": message, "code": code(status)});
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Response::from_parts(parts, Body::from(bytes))
}

/// The `code` of an error status, matching [`crate::Error::code`] where a category has this status.
fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid_input",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header_fields_too_large",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

fn error(status: StatusCode, code: &'static str, message: String) -> Response {
    (status, Json(serde_json::json!({"error": message, "code": code}))).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::Path;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::middleware::Next;
    use axum::routing::get;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(uri: &str, header: Option<(&str, String)>) -> (u16, serde_json::Value) {
        let app = Router::new()
            .route("/p/{name}", get(|Path(name): Path<String>| async move { name }))
            .route(
                "/plain",
                get(|| async { (StatusCode::BAD_GATEWAY, "upstream said no") }),
            )
            .layer(axum::middleware::from_fn(|r: Request, n: Next| {
                super::head_limits(r, |r| n.run(r))
            }))
            .layer(axum::middleware::from_fn(|r: Request, n: Next| {
                super::json_errors(r, |r| n.run(r))
            }));
        let mut request = axum::http::Request::builder().uri(uri);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn rejections_and_head_limits_answer_json() {
        let (status, body) = call("/p/%FF", None).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_input")), "{body}");
        assert!(body["error"].as_str().unwrap().contains("UTF-8"), "{body}");
        let (status, body) = call("/plain", None).await;
        assert_eq!((status, &body["error"]), (502, &serde_json::json!("upstream said no")));
        let (status, body) = call(&format!("/p/{}", "a".repeat(super::MAX_URI_BYTES)), None).await;
        assert_eq!((status, body["code"].as_str()), (414, Some("uri_too_long")));
        let big = ("x-big", "b".repeat(super::MAX_HEADER_BYTES));
        let (status, body) = call("/p/a", Some(big)).await;
        assert_eq!((status, body["code"].as_str()), (431, Some("header_fields_too_large")));
        let (status, _) = call("/p/fine", None).await;
        assert_eq!(status, 200);
    }
}
