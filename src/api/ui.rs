//! `/ui/`: the web UI, plain HTML, CSS and JavaScript embedded into the binary at build time (the files live in
//! `ui/` at the top of the repository).
//!
//! Every file is served with its content type, `Cache-Control: no-cache` plus a content `ETag` (a browser
//! revalidates, and a new binary's files are never served stale), and a strict `Content-Security-Policy`: no
//! inline script or style, nothing from another origin, no framing.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The policy of every UI response: scripts, styles and connections only from this origin, no plugins, no
/// framing, no `<base>` tricks, no form posts (the UI talks to the API with `fetch`).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The embedded files: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "nodes.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/nodes.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/style.css"),
    ),
    ("icon.svg", "image/svg+xml", include_bytes!("../../ui/icon.svg")),
];

/// `GET /` and `GET /ui`: the UI lives below `/ui/` (its relative links need the slash); the bare address of
/// a node opens its console, as the original Cave's did.
pub async fn redirect() -> Redirect {
    Redirect::temporary("/ui/")
}

/// `GET /ui/`: the page.
pub async fn index(headers: HeaderMap) -> Result<Response> {
    serve("index.html", &headers)
}

/// `GET /ui/{file}`: one embedded file; 404 for any other name.
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Result<Response> {
    serve(&name, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Result<Response> {
    let index = FILES
        .iter()
        .position(|(file, _, _)| *file == name)
        .ok_or_else(|| Error::NotFound("no such UI file".into()))?;
    let (_, content_type, body) = FILES[index];
    let etag = &etags()[index];
    let mut response = if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
    };
    let h = response.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(ETAG, HeaderValue::from_str(etag).map_err(Error::internal)?);
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

/// The quoted `ETag` of each file (a prefix of its SHA-256), computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        FILES
            .iter()
            .map(|(_, _, body)| {
                let digest = Sha256::digest(body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}
