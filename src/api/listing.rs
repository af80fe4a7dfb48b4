//! Folder listings, `GET /api/v1/kv/{prefix}/`: direct children, `?recurse=true`, `?tree=true`, `?count=true`.
//!
//! Every listing answers one page, never the whole folder: an answer is built in memory, and a folder of a
//! million keys would be a 100 MB body that a few requests could use to exhaust memory. Pages are cursors in
//! key order: `?after=K` continues strictly after `K` (the `next` of the previous answer) and `?limit=N`
//! bounds the page. Each page is a seek in the ordered map plus its own size (a direct listing jumps over
//! every sub-folder in one seek), so the thousandth page of a huge folder costs what the first does.
//!
//! - A plain listing without paging parameters keeps its historic shape, a JSON array of child paths, but
//!   holds at most [`DEFAULT_LISTING_LIMIT`]; when more are left the cursor comes in `X-Cave-Next` and a
//!   `Link: <...>; rel="next"`, so old clients keep working on small folders and can find the rest of big
//!   ones. With `limit`/`after` (or `?meta=true`, which adds each child's metadata) it is wrapped as
//!   `{"children"|"entries": [...], "next": K|null}`.
//! - `?recurse`/`?tree` without paging answer at most [`MAX_LISTING_ENTRIES`] keys or refuse (413) with how
//!   to page; `?contains=TEXT` filters them (case-insensitively, on the path below the folder) and examines
//!   at most [`MAX_SCANNED_KEYS`] keys per request, so `next` is the last key *examined* and a page may hold
//!   fewer matches than `limit`, even none.
//!
//! Access control filters a page after it was cut, so `next` still walks every key and a token learns
//! nothing about what it may not list beyond the page boundaries.

use axum::http::header::LINK;
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::encoding::{ChildMeta, EntryMeta, Params};
use super::AppState;
use crate::acl::{Access, Capability};
use crate::crdt::Entry;
use crate::db::{Listed, Page};
use crate::error::{Error, Result};
use crate::key;

/// Most keys a listing answers in one response (the bound of `?limit=`).
pub const MAX_LISTING_ENTRIES: usize = 10_000;
/// Children a plain listing answers when the request names no `limit`.
pub const DEFAULT_LISTING_LIMIT: usize = 1_000;
/// Most keys one `?contains=` request examines before it answers with what it found and a `next`.
pub const MAX_SCANNED_KEYS: usize = 100_000;
/// Header carrying the cursor of a plain listing's next page (percent-encoded as a query value).
pub const NEXT_HEADER: &str = "x-cave-next";

/// What a cursor may carry unescaped in a query value (RFC 3986 unreserved characters and `/`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// A page of entries as JSON, serialised from typed values (a `json!` value tree would cost an allocation
/// per field of every entry first).
#[derive(Serialize)]
struct EntriesPage<T: Serialize> {
    entries: Vec<T>,
    next: Option<String>,
}

/// A page of child paths as JSON.
#[derive(Serialize)]
struct ChildrenPage<'a> {
    children: Vec<&'a str>,
    next: Option<String>,
}

/// Answer the listing of the folder `prefix` (`""` or ending in `/`) that `params` ask for.
pub fn list(app: &AppState, access: &Access, uri: &Uri, prefix: &str, params: &Params) -> Result<Response> {
    let recurse = params.flag("recurse")?;
    let tree = params.flag("tree")?;
    let meta = params.flag("meta")?;
    let count = params.flag("count")?;
    let contains = params.get("contains");
    let (limit, after) = page_params(params)?;
    access.require_some_below(Capability::List, prefix)?;
    if count {
        if tree || meta || limit.is_some() || after.is_some() || contains.is_some() {
            return Err(Error::invalid(
                "count=true counts every key below the folder: it takes no tree, meta, limit, after or contains",
            ));
        }
        return Ok(Json(json!({"count": count_below(app, access, prefix)})).into_response());
    }
    if tree || recurse {
        return deep(app, access, prefix, tree, limit, after, contains);
    }
    if contains.is_some() {
        return Err(Error::invalid("contains filters a ?recurse=true or ?tree=true listing"));
    }
    let wrapped = meta || limit.is_some() || after.is_some();
    let page = app
        .db
        .children_page(prefix, after, limit.unwrap_or(DEFAULT_LISTING_LIMIT));
    if page.items.is_empty() && page.next.is_none() && !prefix.is_empty() && after.is_none() {
        return Err(Error::NotFound("no keys under this prefix".into()));
    }
    let Page { mut items, next } = page;
    items.retain(|child| match child {
        Listed::Folder(path) => access.may_some_below(Capability::List, path),
        Listed::Key(entry) => access.may(Capability::List, &entry.key),
    });
    if meta {
        let entries: Vec<ChildMeta> = items.iter().map(ChildMeta::from).collect();
        return Ok(Json(EntriesPage { entries, next }).into_response());
    }
    let children: Vec<&str> = items.iter().map(Listed::path).collect();
    if wrapped {
        return Ok(Json(ChildrenPage { children, next }).into_response());
    }
    let mut response = Json(children).into_response();
    if let Some(next) = next {
        let cursor = utf8_percent_encode(&next, QUERY_VALUE).to_string();
        let link = format!(
            "<{}?after={cursor}&limit={DEFAULT_LISTING_LIMIT}>; rel=\"next\"",
            uri.path()
        );
        let headers = response.headers_mut();
        // Both are percent-encoded ASCII, which a header value always takes.
        headers.insert(NEXT_HEADER, HeaderValue::from_str(&cursor).map_err(Error::internal)?);
        headers.insert(LINK, HeaderValue::from_str(&link).map_err(Error::internal)?);
    }
    Ok(response)
}

/// `?recurse=true` or `?tree=true`: every live key below the folder, one page of them.
fn deep(
    app: &AppState,
    access: &Access,
    prefix: &str,
    tree: bool,
    limit: Option<usize>,
    after: Option<&str>,
    contains: Option<&str>,
) -> Result<Response> {
    let needle = contains.map(str::to_lowercase);
    let keep = |entry: &Entry| match &needle {
        Some(needle) => entry.key[prefix.len()..].to_lowercase().contains(needle.as_str()),
        None => true,
    };
    let paged = limit.is_some() || after.is_some() || contains.is_some();
    let (limit, max_scanned) = match (paged, contains) {
        (false, _) => (MAX_LISTING_ENTRIES + 1, usize::MAX),
        (true, None) => (limit.unwrap_or(MAX_LISTING_ENTRIES), usize::MAX),
        (true, Some(_)) => (limit.unwrap_or(MAX_LISTING_ENTRIES), MAX_SCANNED_KEYS),
    };
    let Page { mut items, next } = app.db.scan(prefix, after, limit, max_scanned, keep);
    if !paged && items.len() > MAX_LISTING_ENTRIES {
        return Err(Error::TooLarge(format!(
            "the listing holds more than {MAX_LISTING_ENTRIES} keys; page it with ?limit=N (at most \
             {MAX_LISTING_ENTRIES}) and then ?after= the \"next\" key of each answer"
        )));
    }
    let missing = match contains {
        // A filter that matches nothing is an empty page; only a folder without any key is a 404.
        Some(_) => app.db.page(prefix, None, 1, false).is_empty(),
        None => items.is_empty() && after.is_none(),
    };
    if missing && !prefix.is_empty() {
        return Err(Error::NotFound("no keys under this prefix".into()));
    }
    // Listings skip what the token may not list (after paging, so that `next` still walks every key).
    items.retain(|e| access.may(Capability::List, &e.key));
    Ok(match (paged, tree) {
        (false, true) => Json(build_tree(prefix, &items)).into_response(),
        (false, false) => Json(metas(&items)).into_response(),
        (true, true) => Json(json!({"tree": build_tree(prefix, &items), "next": next})).into_response(),
        (true, false) => Json(EntriesPage {
            entries: metas(&items),
            next,
        })
        .into_response(),
    })
}

/// `?count=true`: live keys below the folder that the token may list.
fn count_below(app: &AppState, access: &Access, prefix: &str) -> usize {
    if access.require_all_below(Capability::List, prefix).is_ok() {
        app.db.count(prefix, None)
    } else {
        app.db
            .count(prefix, Some(&|key: &str| access.may(Capability::List, key)))
    }
}

/// `?limit=&after=`: the limit if given (1 to [`MAX_LISTING_ENTRIES`]), the cursor if given.
fn page_params(params: &Params) -> Result<(Option<usize>, Option<&str>)> {
    let after = params.get("after");
    let limit = match params.get("limit") {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LISTING_ENTRIES).contains(&n) => Some(n),
            _ => {
                return Err(Error::invalid(format!(
                    "limit must be a number from 1 to {MAX_LISTING_ENTRIES}, got {text:?}"
                )))
            }
        },
    };
    if let Some(after) = after {
        // A folder cursor (the last child of a page may be one) is a path with a trailing slash.
        let path = after.strip_suffix('/').unwrap_or(after);
        key::validate_prefix(path).map_err(|e| Error::invalid(format!("after: {e}")))?;
    }
    Ok((limit, after))
}

fn metas(entries: &[Entry]) -> Vec<EntryMeta> {
    entries.iter().map(EntryMeta::from).collect()
}

/// Nest entries below `prefix` as JSON objects: folders as `"name/": {...}`, keys as `"name": {metadata}`.
/// The trailing slash keeps a key `a` and a folder `a/` apart (both may exist).
fn build_tree(prefix: &str, entries: &[Entry]) -> Value {
    let mut root = Map::new();
    for entry in entries {
        let rest = &entry.key[prefix.len()..];
        let mut node = &mut root;
        let mut segments = rest.split('/').peekable();
        while let Some(segment) = segments.next() {
            if segments.peek().is_none() {
                let meta = serde_json::to_value(EntryMeta::from(entry)).unwrap_or(Value::Null);
                node.insert(segment.to_string(), meta);
            } else {
                let child = node
                    .entry(format!("{segment}/"))
                    .or_insert_with(|| Value::Object(Map::new()));
                node = match child {
                    Value::Object(map) => map,
                    _ => unreachable!("folder names end in '/', leaf names never do"),
                };
            }
        }
    }
    Value::Object(root)
}
