//! `/api/v1/kv/{key}`: single keys (GET/PUT/POST/DELETE) and, with a trailing slash, folders (listings,
//! which [`super::listing`] answers page by page, and the recursive delete).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::encoding::{
    content_type, expires_header, path_after, version_headers, written_response, Params, SECRET_HEADER,
};
use super::AppState;
use crate::acl::{Access, Capability};
use crate::db::{Op, Outcome};
use crate::error::{Error, Result};
use crate::key;

const ROUTE: &str = "/api/v1/kv";

/// What a request path names: one key, or a folder (trailing slash; `""` is the root).
enum Target {
    Key(String),
    Folder(String),
}

fn target(uri: &Uri) -> Result<Target> {
    let path = path_after(uri.path(), ROUTE)?;
    if path.is_empty() {
        return Ok(Target::Folder(String::new()));
    }
    if let Some(folder) = path.strip_suffix('/') {
        key::validate_folder(folder)?;
        return Ok(Target::Folder(key::folder_prefix(folder)));
    }
    key::validate(&path)?;
    Ok(Target::Key(path))
}

/// GET (and HEAD): a value, or a folder listing.
pub async fn get(
    State(app): State<Arc<AppState>>,
    access: Access,
    uri: Uri,
    params: Params,
    headers: HeaderMap,
) -> Result<Response> {
    match target(&uri)? {
        Target::Key(key) => read_key(&app, &access, &key, &params, &headers),
        Target::Folder(prefix) => super::listing::list(&app, &access, &uri, &prefix, &params),
    }
}

fn read_key(app: &AppState, access: &Access, key: &str, params: &Params, headers: &HeaderMap) -> Result<Response> {
    let open = params.flag("secret")?;
    access.require(Capability::Read, key)?;
    if open {
        access.require(Capability::Secret, key)?;
    }
    let entry = app.db.get(key).ok_or_else(|| not_found(app, access, key))?;
    let history = params.flag("history")?;
    if history && entry.doc.is_none() {
        return Err(Error::Conflict(format!(
            "{key} holds a plain value: only documents have a history"
        )));
    }
    let etag = format!("\"{}\"", entry.version);
    if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        version_headers(response.headers_mut(), entry.version);
        return Ok(response);
    }
    if entry.doc.is_some() {
        return super::docs::read(app, &entry, open, history);
    }
    let (body, content_type, secret_state) = if entry.secret && open {
        (app.db.open_secret(&entry)?, entry.content_type.as_str(), Some("opened"))
    } else if entry.secret {
        (entry.value.clone(), "text/plain; charset=utf-8", Some("sealed"))
    } else {
        (entry.value.clone(), entry.content_type.as_str(), None)
    };
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).map_err(Error::internal)?,
    );
    version_headers(h, entry.version);
    expires_header(h, &entry);
    if let Some(state) = secret_state {
        h.insert(SECRET_HEADER, HeaderValue::from_static(state));
    }
    Ok(response)
}

/// Whether live keys exist below `key/`: the path names a folder, which a trailing slash lists.
fn is_folder(app: &AppState, access: &Access, key: &str) -> bool {
    let prefix = key::folder_prefix(key);
    // Only a token that may list the folder learns that it exists.
    access.may_some_below(Capability::List, &prefix) && !app.db.page(&prefix, None, 1, false).is_empty()
}

/// The 404 of a key without a live value, pointing at the folder of the same name if there is one (the
/// trailing slash is easy to miss).
fn not_found(app: &AppState, access: &Access, key: &str) -> Error {
    if is_folder(app, access, key) {
        return Error::NotFound(format!(
            "key not found: {key} is a folder: list it with a trailing slash ({ROUTE}/{key}/)"
        ));
    }
    Error::NotFound("key not found".into())
}

/// PUT and POST: store the raw body.
pub async fn put(
    State(app): State<Arc<AppState>>,
    access: Access,
    uri: Uri,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let key = match target(&uri)? {
        Target::Key(key) => key,
        Target::Folder(prefix) if prefix.is_empty() => return Err(Error::invalid("key is empty")),
        Target::Folder(_) => return Err(Error::invalid("cannot write a folder: a key must not end with '/'")),
    };
    access.require(Capability::Write, &key)?;
    if params.flag("doc")? {
        if params.get("ttl").is_some() {
            return Err(Error::invalid("ttl applies to plain values; documents do not expire"));
        }
        if params.get("lease").is_some() {
            return Err(Error::invalid(
                "lease applies to plain values; a document is not bound to a lease",
            ));
        }
        return super::docs::put(&app, key, &params, &headers, body).await;
    }
    let secret = params.flag("secret")?;
    let cas = params.cas()?;
    let ttl = params.ttl(app.config.min_ttl, app.config.max_ttl)?;
    let lease = params.lease()?;
    let content_type = content_type(&headers)?;
    let limit = app.config.max_value_bytes;
    let body = read_body(&headers, body, limit).await?;
    // A sealed value is a new allocation anyway; a plain one is copied into an allocation of exactly its size:
    // the body is usually a slice of hyper's read buffer (8 KiB and more), and a stored value would keep that
    // whole buffer alive for as long as the key exists (measured: ~9 KiB of memory per 100-byte value).
    let value = if secret {
        app.db.seal(&body)
    } else {
        bytes::Bytes::copy_from_slice(&body)
    };
    let op = Op::Put {
        key,
        value,
        content_type,
        secret,
        cas,
        ttl,
        lease,
    };
    let entry = written(app.db.write(vec![op]).await?)?;
    Ok(written_response(entry.version))
}

/// DELETE: a tombstone for one key, or for a whole folder with `?recurse=true`. The answer says whether a
/// live value was there (`existed`; for a folder, the count `deleted`): deleting an absent key still writes
/// a tombstone (another node may hold a value this one has not received yet) and answers 200.
pub async fn delete(State(app): State<Arc<AppState>>, access: Access, uri: Uri, params: Params) -> Result<Response> {
    match target(&uri)? {
        Target::Key(key) => {
            // A recursive delete names a folder; without the slash it would tombstone the one key of that
            // name, which usually does not even exist.
            if params.flag("recurse")? {
                let hint = if is_folder(&app, &access, &key) {
                    format!("{key} is a folder: delete it with a trailing slash ({ROUTE}/{key}/?recurse=true)")
                } else {
                    format!("{key} is not a folder (a folder is named with a trailing slash, and {key}/ holds no keys)")
                };
                return Err(Error::invalid(format!(
                    "recurse=true deletes a folder, not a key: {hint}"
                )));
            }
            access.require(Capability::Delete, &key)?;
            let op = Op::Delete {
                key,
                cas: params.cas()?,
            };
            let (tombstone, existed) = match app.db.write(vec![op]).await?.into_iter().next() {
                Some(Outcome::Deleted { tombstone, existed }) => (tombstone, existed),
                _ => return Err(Error::internal("delete returned no outcome")),
            };
            let body = json!({"message": "ok", "version": tombstone.version, "existed": existed});
            let mut response = Json(body).into_response();
            version_headers(response.headers_mut(), tombstone.version);
            Ok(response)
        }
        Target::Folder(prefix) => {
            if !params.flag("recurse")? {
                return Err(Error::invalid("deleting a folder needs ?recurse=true"));
            }
            if prefix.is_empty() {
                return Err(Error::invalid(
                    "refusing to delete the whole key space; delete its folders instead",
                ));
            }
            access.require_all_below(Capability::Delete, &prefix)?;
            let outcomes = app.db.write(vec![Op::DeletePrefix { prefix }]).await?;
            let deleted = match outcomes.into_iter().next() {
                Some(Outcome::DeletedPrefix(tombs)) => tombs.len(),
                _ => return Err(Error::internal("prefix delete returned no outcome")),
            };
            Ok(Json(json!({"message": "ok", "deleted": deleted})).into_response())
        }
    }
}

fn written(outcomes: Vec<Outcome>) -> Result<crate::crdt::Entry> {
    match outcomes.into_iter().next() {
        Some(Outcome::Written(entry)) => Ok(entry),
        _ => Err(Error::internal("write returned no outcome")),
    }
}

/// Read a request body of at most `limit` bytes. A declared `Content-Length` over the limit is refused before
/// reading anything; a body that grows past it while streaming is cut off. The bytes may share hyper's read
/// buffer: a caller that keeps them (a stored value) copies them first.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<bytes::Bytes> {
    let too_large = || Error::TooLarge(format!("body exceeds the limit of {limit} bytes"));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
        if e.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            Error::invalid(format!("could not read the request body: {e}"))
        }
    };
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(body, limit);
    match declared {
        // A large body (an import) is copied chunk by chunk into one buffer of its declared size, each chunk
        // dropped as soon as it is copied, so that hyper reads the next into the same memory. Collected
        // whole, every chunk stayed alive until the end and then was copied once more: twice the body in
        // fresh pages the kernel zeroes, on every request. (The buffer is only reserved: a client that
        // declares more than it sends costs address space, not memory; and a reservation the allocator
        // refuses, under a huge configured limit, is no error: the buffer then grows as the body comes.)
        Some(len) if len >= LARGE_BODY_BYTES => {
            let mut buf = Vec::new();
            let _ = buf.try_reserve_exact(len as usize);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map_err(failed)?.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Ok(buf.into())
        }
        // Parsed and dropped by every caller but one (`put`, which copies): not copied here.
        _ => Ok(body.collect().await.map_err(failed)?.to_bytes()),
    }
}

/// Declared body size from which [`read_body`] reads into one buffer of that size.
const LARGE_BODY_BYTES: u64 = 1024 * 1024;
