//! The one mapping from [`Error`] categories to HTTP responses: a status and a JSON body
//! `{"error": "<message>", "code": "<category>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::Error;
use crate::telemetry::limiter::LogLimiter;
use std::sync::LazyLock;

/// The HTTP status of each category.
pub fn status(err: &Error) -> StatusCode {
    match err {
        Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
        Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unavailable(_) | Error::ClockSkew(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
        Error::Corrupt(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(&self);
        // Every request of a flood against a full disk fails alike: one line per category per interval.
        static FAILURES: LazyLock<LogLimiter> = LazyLock::new(LogLimiter::default);
        if status.is_server_error() {
            if let Some(suppressed) = FAILURES.check(self.code()) {
                tracing::warn!(code = self.code(), error = %self, suppressed, "request failed");
            }
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string(), "code": self.code() })),
        )
            .into_response()
    }
}
