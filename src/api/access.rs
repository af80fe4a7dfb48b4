//! The optional access log (`access_log`, `--access-log`): one `info` record per HTTP request, target
//! `cave::access`, with the method, the matched route *template* (`/api/v1/kv/{*key}`, never the path, which
//! holds a key), the status, the duration and the body bytes sent. Never a query string (it may carry a
//! token), a header or a value.
//!
//! The record is written when the response body is done (sent in full, or dropped because the client went
//! away: `complete` tells which), so a streamed export or a watch is logged with its real length and size
//! rather than at its first byte.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};

use super::gate::Inner;
use crate::metrics::UNMATCHED_ROUTE;

/// The target of access log records, for log filters (`cave::access=off`).
pub const TARGET: &str = "cave::access";

/// The middleware: wraps the response body so that its end writes the record.
pub async fn log(request: Request, next: impl Inner) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.call(request).await;
    let status = response.status().as_u16();
    response.map(|body| {
        Body::new(Logged {
            body,
            record: Record {
                method,
                route,
                status,
                started,
                bytes: 0,
                complete: false,
            },
        })
    })
}

/// What the record says, gathered while the body is sent.
struct Record {
    method: Method,
    route: Option<MatchedPath>,
    status: u16,
    started: Instant,
    bytes: u64,
    complete: bool,
}

/// A response body that writes the access record when it is dropped.
struct Logged {
    body: Body,
    record: Record,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.record.bytes += frame.data_ref().map_or(0, |data| data.len() as u64);
            }
            Poll::Ready(None) => self.record.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let r = &self.record;
        // hyper does not poll a body it knows to be empty (HEAD, 304, `Content-Length: 0`).
        let complete = r.complete || self.body.is_end_stream();
        tracing::info!(
            target: TARGET,
            method = %r.method,
            route = r.route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str),
            status = r.status,
            duration_ms = r.started.elapsed().as_secs_f64() * 1000.0,
            bytes = r.bytes,
            complete,
            "request"
        );
    }
}
