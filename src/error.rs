//! One error type for the whole crate, by *category* rather than by origin.
//!
//! Callers decide what to do from the category (retry, report to the client, give up); the message says
//! what happened in words an operator can act on. Adapters map categories to their wire protocols in one
//! place each: HTTP status codes in `api::error`, `tonic::Status` in the gRPC adapter.
//!
//! Messages must never carry a value, a secret or key material: they end up in logs and HTTP responses.

use std::fmt;

/// The categories of failure Cave distinguishes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed: a bad key, a bad version, unparsable JSON, a bad config value.
    #[error("{0}")]
    InvalidInput(String),
    /// The thing asked for does not exist (or is deleted).
    #[error("{0}")]
    NotFound(String),
    /// The caller did not prove who it is.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is known but not allowed, or holds the wrong key.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the state of the resource.
    #[error("{0}")]
    Conflict(String),
    /// A condition the caller attached to a write (`?cas=`) does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The request is well-formed but cannot be applied to the resource as it is (a document patch whose path
    /// does not exist or whose `test` fails): nothing was changed.
    #[error("{0}")]
    Unprocessable(String),
    /// A body or message exceeds a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The node cannot serve right now (shutting down, storage closed); retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The disk is full: nothing of the request was stored. Writes succeed again once space is freed.
    #[error("{0}")]
    StorageFull(String),
    /// This node's clock is too far from the cluster's to order writes: it refuses them until it is back.
    #[error("{0}")]
    ClockSkew(String),
    /// The request body has a media type the route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request names a host this node does not serve (DNS rebinding, a misrouted request).
    #[error("{0}")]
    MisdirectedRequest(String),
    /// Stored or received data failed an integrity check.
    #[error("{0}")]
    Corrupt(String),
    /// A bug or an environment failure (disk, I/O) that the caller cannot fix.
    #[error("{0}")]
    Internal(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable, machine-readable name of the category, used as the `code` of JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::NotFound(_) => "not_found",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::Conflict(_) => "conflict",
            Error::PreconditionFailed(_) => "precondition_failed",
            Error::Unprocessable(_) => "unprocessable",
            Error::TooLarge(_) => "too_large",
            Error::Unavailable(_) => "unavailable",
            Error::StorageFull(_) => "insufficient_storage",
            Error::ClockSkew(_) => "clock_skew",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::MisdirectedRequest(_) => "misdirected_request",
            Error::Corrupt(_) => "corrupt",
            Error::Internal(_) => "internal",
        }
    }

    /// Shorthand for [`Error::InvalidInput`] from anything printable.
    pub fn invalid(msg: impl fmt::Display) -> Error {
        Error::InvalidInput(msg.to_string())
    }

    /// The same error, its message prefixed with `op INDEX: `: for an error one op of a batch caused.
    pub fn in_op(self, index: usize) -> Error {
        let at = |message: String| format!("op {index}: {message}");
        match self {
            Error::InvalidInput(m) => Error::InvalidInput(at(m)),
            Error::NotFound(m) => Error::NotFound(at(m)),
            Error::Unauthorized(m) => Error::Unauthorized(at(m)),
            Error::Forbidden(m) => Error::Forbidden(at(m)),
            Error::Conflict(m) => Error::Conflict(at(m)),
            Error::PreconditionFailed(m) => Error::PreconditionFailed(at(m)),
            Error::Unprocessable(m) => Error::Unprocessable(at(m)),
            Error::TooLarge(m) => Error::TooLarge(at(m)),
            Error::Unavailable(m) => Error::Unavailable(at(m)),
            Error::StorageFull(m) => Error::StorageFull(at(m)),
            Error::ClockSkew(m) => Error::ClockSkew(at(m)),
            Error::UnsupportedMediaType(m) => Error::UnsupportedMediaType(at(m)),
            Error::MisdirectedRequest(m) => Error::MisdirectedRequest(at(m)),
            Error::Corrupt(m) => Error::Corrupt(at(m)),
            Error::Internal(m) => Error::Internal(at(m)),
        }
    }

    /// Shorthand for [`Error::Internal`] from anything printable.
    pub fn internal(msg: impl fmt::Display) -> Error {
        Error::Internal(msg.to_string())
    }
}

/// SQLite's result code for a full disk (`SQLITE_FULL`; it has no extended codes, so the extended code is 13
/// too).
const SQLITE_FULL: &str = "13";

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolClosed | sqlx::Error::PoolTimedOut => {
                Error::Unavailable(format!("storage unavailable: {err}"))
            }
            sqlx::Error::Database(ref db) if db.code().as_deref() == Some(SQLITE_FULL) => {
                Error::StorageFull(format!("storage is full: {err}"))
            }
            sqlx::Error::Io(ref io) if io.kind() == std::io::ErrorKind::StorageFull => {
                Error::StorageFull(format!("storage is full: {err}"))
            }
            // sqlx never puts bound parameters (our values) into its messages, so this is safe to show.
            other => Error::Internal(format!("storage error: {other}")),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Error::StorageFull(format!("storage is full: {err}")),
            // rusqlite's messages name the statement and the column, never a bound value.
            _ => Error::Internal(format!("storage error: {err}")),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Error::Internal(format!("database migration failed: {err}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::StorageFull {
            return Error::StorageFull(format!("storage is full: {err}"));
        }
        Error::Internal(format!("I/O error: {err}"))
    }
}
