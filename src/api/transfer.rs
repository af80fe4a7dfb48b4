//! `GET /api/v1/export` and `POST /api/v1/import`: NDJSON of entries with their versions.
//!
//! An export is every entry (tombstones included, so that deletes travel too) as one [`EntryJson`] per
//! line; secrets stay sealed; keys reserved for Cave are left out (they replicate between nodes, they do not
//! leave through the client API). It walks the key space in chunks of [`EXPORT_CHUNK_ENTRIES`], each a seek
//! from the last key of the one before, serialised straight from the map under a short read lock: an export
//! is linear in its size, writers wait at most for one chunk, and the export never holds more than the chunk
//! the socket has not taken yet (hyper asks for the next chunk only when it wrote the last), however large
//! the key space. An import *merges by version*: an entry is applied only if it supersedes what
//! the node has, so importing an old export never clobbers newer data, and importing twice is harmless.
//! The import is validated completely before anything is applied: one bad line rejects the whole file.
//! It is then committed in chunks (see [`import`]) and pushed to the cluster's other nodes by this one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream;

use super::encoding::{EntryJson, EntryJsonRef, NdjsonBody, Params};
use super::kv::read_body;
use super::AppState;
use crate::acl::{Access, Capability};
use crate::error::{Error, Result};
use crate::key;

/// Entries read under one lock while streaming an export.
const EXPORT_CHUNK_ENTRIES: usize = 512;
/// Entries an import commits at a time in a cluster (see `import`).
const IMPORT_CHUNK_ENTRIES: usize = crate::db::EVENT_BUFFER / 4;

/// Stream the export, `?prefix=` optionally narrowing it to a folder.
pub async fn export(State(app): State<Arc<AppState>>, access: Access, params: Params) -> Result<Response> {
    let prefix = match params.get("prefix") {
        None | Some("") => String::new(),
        Some(p) => {
            let folder = p.strip_suffix('/').unwrap_or(p);
            key::validate_folder(folder)?;
            key::folder_prefix(folder)
        }
    };
    // An export carries values: it holds the keys the token may both list and read, and no others.
    access.require_some_below(Capability::List, &prefix)?;
    let exportable = move |key: &str| access.may(Capability::List, key) && access.may(Capability::Read, key);
    // Walk the key space in chunks, each under a short read lock: writers are never blocked for long, and a
    // large export never has to sit in memory at once.
    let chunks = stream::unfold(Some(None::<String>), move |cursor| {
        let db = app.db.clone();
        let prefix = prefix.clone();
        let exportable = exportable.clone();
        async move {
            let after = cursor?;
            // Each chunk is CPU work (copy, serialise) and hyper asks for the next as soon as the socket
            // takes the last: without a yield a long export runs chunk after chunk on one worker thread,
            // and the requests queued behind it (writes) wait.
            tokio::task::yield_now().await;
            // Serialised straight from the map under the read lock: no entry is copied, and the chunk's
            // buffer is the only allocation that grows with it.
            let mut buf = Vec::with_capacity(EXPORT_CHUNK_ENTRIES * 192);
            let mut any = false;
            let next = db.visit(&prefix, after.as_deref(), EXPORT_CHUNK_ENTRIES, true, |entry| {
                any = true;
                if exportable(&entry.key) {
                    // Serialising a plain struct of strings into a Vec cannot fail.
                    serde_json::to_writer(&mut buf, &EntryJsonRef::from(entry)).expect("entry serialises");
                    buf.push(b'\n');
                }
            });
            if !any {
                return None;
            }
            let next = next.map(Some);
            Some((Ok::<_, std::convert::Infallible>(buf), next))
        }
    });
    let mut response = Body::from_stream(chunks).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, "application/x-ndjson".parse().expect("valid header"));
    Ok(response)
}

/// Merge an NDJSON export.
pub async fn import(
    State(app): State<Arc<AppState>>,
    access: Access,
    _: NdjsonBody,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>> {
    // A node whose clock is fenced can apply no drift rule with it: it refuses imports as it refuses writes.
    if let Some(offset_ms) = app.db.hlc().fenced() {
        return Err(crate::crdt::hlc::fenced_error(offset_ms));
    }
    let body = read_body(&headers, body, app.config.max_request_bytes).await?;
    let text = std::str::from_utf8(&body).map_err(|_| Error::invalid("import is not valid UTF-8"))?;
    // One entry a line: sized once (a pass over the bytes) rather than grown by doubling, which copied an
    // import's entries about twice into fresh pages.
    let mut entries = Vec::with_capacity(text.bytes().filter(|&b| b == b'\n').count() + 1);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 1;
        let parsed: EntryJson =
            serde_json::from_str(line).map_err(|e| Error::invalid(format!("import line {line_no}: {e}")))?;
        let entry = parsed.into_entry().map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!("import line {line_no}: {m}")),
            Error::Forbidden(m) => Error::Forbidden(format!("import line {line_no}: {m}")),
            other => other,
        })?;
        access
            .require(Capability::Write, &entry.key)
            .map_err(|e| Error::Forbidden(format!("import line {line_no}: {e}")))?;
        if entry.value.len() > app.config.max_value_bytes {
            return Err(Error::TooLarge(format!(
                "import line {line_no}: value exceeds the limit"
            )));
        }
        // The drift rule of replication: a version this far ahead would drag the clock with it, and every
        // later write of the key (anywhere) would silently lose to it.
        let now_ms = app.db.hlc().time_ms();
        let max_drift_ms = app.config.max_clock_drift.as_millis() as u64;
        if let Some(ahead_ms) = crate::crdt::hlc::beyond_drift(entry.version.hlc, now_ms, max_drift_ms) {
            return Err(Error::InvalidInput(format!(
                "import line {line_no}: version {} is {ahead_ms} ms ahead of this node's clock (more than \
                 max_clock_drift)",
                entry.version
            )));
        }
        // An export does not carry leases (they are Cave's own, under `_system/`): a value bound to a lease
        // this node does not hold live is imported as what it would have become here, the tombstone of its
        // lease's end, rather than as a value that would stay hidden and never be collected.
        let entry = match entry.lease {
            Some(id) if !entry.deleted && !app.db.lease_live(id) => entry.expired(),
            _ => entry,
        };
        entries.push(entry);
    }
    let received = entries.len();
    // As an import, not a merge from a peer: this node pushes what it takes to its peers (see `Db::import`),
    // through the change stream, whose ring holds `EVENT_BUFFER` events. In a cluster the import is
    // committed in chunks of a quarter of that, one after the other, so that the cluster's driver reads each
    // chunk's events before the next overwrites them (it would otherwise lag, and leave the rest to
    // anti-entropy: 14 s for 200,000 keys in two requests to reach two peers, against 2.9 s in chunks). A
    // failure part way (a full disk) leaves the chunks before it applied; the answer is the error, and
    // importing the file again is harmless. A node on its own commits the request at once (one commit is
    // cheaper, and it fills the map's tree in bulk).
    let chunk = if app.cluster.is_some() {
        IMPORT_CHUNK_ENTRIES
    } else {
        usize::MAX
    };
    let mut applied = 0;
    let mut rest = entries;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(chunk));
        applied += app.db.import(rest).await?;
        rest = tail;
    }
    Ok(Json(
        serde_json::json!({"message": "ok", "received": received, "applied": applied}),
    ))
}
