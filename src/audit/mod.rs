//! The audit trail: a durable record, on the node that served it, of every request that changes something
//! or reveals a secret, and of every request refused for want of credentials or permission.
//!
//! # What is recorded
//! Every request with a method other than `GET`, `HEAD` and `OPTIONS` (writes, deletes, batches, imports,
//! access-control changes), every read that opened a secret (answered with `X-Cave-Secret: opened`), and every
//! 401 and 403, as an [`AuditRecord`] `{time, node, accessor, method, route, key, status, remote_addr}`. Never
//! a value, a query string or a token: the caller is named by its token's public accessor. Plain reads are not
//! recorded (they are most of the traffic; the access log and metrics count them).
//!
//! # Order: the record commits with the write
//! A write's record rides in the same storage transaction as the write itself ([`context`]): both are stored
//! or neither. Recording after the commit would answer a stored write with 503 whenever the record failed;
//! recording before it would cost a second commit on every write. The committed record carries
//! [`context::COMMITTED_STATUS`]; if the request ends with another status (or another caller), the middleware
//! rewrites the record with the final one. Requests that wrote nothing (refused, failed, a secret read) are
//! recorded by the middleware once their answer is known and *before* it is sent: if that record cannot be
//! stored, the answer is replaced by 503 (a secret read then reveals nothing), like Vault's. Only an answer
//! that already reports a server error keeps its status (a write refused for a full disk stays 507: nothing
//! was done, and the record could not be stored for the same reason); the failure is counted either way
//! (`cave_audit_write_failures_total`).
//!
//! # Layout
//! - [`context`]: the pending record of the request a task serves, where [`crate::db`] claims it.
//! - [`query`]: reading the trail a page at a time, with the filters of `GET /api/v1/audit`.
//! - [`retention`]: the task that deletes records older than `audit_retention`, in bounded batches.
//! - The records themselves are stored by [`crate::storage::Store`] (`audit` table); the HTTP middleware and
//!   `GET /api/v1/audit` live in `api/audit.rs`.

pub mod context;
pub mod query;
pub mod retention;

pub use crate::storage::AuditRecord;
pub use query::{AuditPage, AuditQuery};
pub use retention::Retention;
