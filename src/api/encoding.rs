//! Request decoding and response encoding shared by the handlers: key paths, query parameters, the JSON
//! form of an entry, version headers.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, ETAG};
use axum::http::request::Parts;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::crdt::{expiry, hlc, ContentType, DocMeta, Entry, LeaseId, Version};
use crate::error::{Error, Result};

/// Header carrying an entry's version.
pub const VERSION_HEADER: &str = "x-cave-version";
/// Header set on a secret's response: `sealed` (the envelope) or `opened` (plaintext).
pub const SECRET_HEADER: &str = "x-cave-secret";
/// Header of an expiring entry: when it expires (milliseconds since the Unix epoch, cluster clock).
pub const EXPIRES_HEADER: &str = "x-cave-expires";
/// Header of a value bound to a lease: the lease's id.
pub const LEASE_HEADER: &str = "x-cave-lease";
/// Longest content type accepted, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// The path after `route_prefix`, percent-decoded strictly: every `%` must start a valid escape and the
/// result must be UTF-8. (Lenient decoders pass `%zz` through, which would make two spellings of a key.)
pub fn path_after(parts_path: &str, route_prefix: &str) -> Result<String> {
    let raw = parts_path.strip_prefix(route_prefix).unwrap_or("");
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    let bytes = raw.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let ok = bytes.len() > i + 2 && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(Error::invalid(
                    "key has an invalid percent-encoding (a '%' must be followed by two hex digits)",
                ));
            }
        }
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode(bytes).collect();
    String::from_utf8(decoded).map_err(|_| Error::invalid("key is not valid UTF-8"))
}

/// Query-string parameters, decoded without rejecting unknown names.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| Error::invalid(format!("malformed query string: {e}")))?;
        Ok(Params(pairs.into_iter().collect()))
    }
}

impl Params {
    /// A boolean flag: absent = false; present without a value (`?secret`) = true; otherwise one of the
    /// spellings of [`crate::config::parse_bool_text`] (`true`/`1`/`yes`/`on`, `false`/`0`/`no`/`off`, in any
    /// case), and anything else a 400 naming the parameter.
    pub fn flag(&self, name: &str) -> Result<bool> {
        match self.0.get(name).map(String::as_str) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(text) => crate::config::parse_bool_text(text)
                .ok_or_else(|| Error::invalid(format!("parameter {name} must be {}", crate::config::BOOL_SPELLINGS))),
        }
    }

    /// `?cas=VERSION`.
    pub fn cas(&self) -> Result<Option<Version>> {
        self.0
            .get("cas")
            .map(|v| {
                v.parse::<Version>()
                    .map_err(|e| Error::invalid(format!("parameter cas: {e}")))
            })
            .transpose()
    }

    /// `?ttl=DURATION` (`30s`, `10m`, `1h30m`, ...), between `min` and `max`; absent = permanent.
    pub fn ttl(&self, min: Duration, max: Duration) -> Result<Option<Duration>> {
        self.0
            .get("ttl")
            .map(|text| parse_ttl(text, min, max, "parameter ttl"))
            .transpose()
    }

    /// `?lease=ID`: bind the value to a lease.
    pub fn lease(&self) -> Result<Option<LeaseId>> {
        self.0
            .get("lease")
            .map(|text| {
                text.parse()
                    .map_err(|e: Error| Error::invalid(format!("parameter lease: {e}")))
            })
            .transpose()
    }

    /// A raw string parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The content type of a write: the request's `Content-Type`, or the default.
pub fn content_type(headers: &HeaderMap) -> Result<ContentType> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(ContentType::default());
    };
    let text = value
        .to_str()
        .map_err(|_| Error::invalid("Content-Type must be visible ASCII"))?;
    validate_content_type(text)?;
    Ok(text.into())
}

/// The media types `POST /api/v1/query` takes. A request without `Content-Type` is read as JSON too: it
/// claims no other type, and scripts often send none.
pub const QUERY_MEDIA_TYPES: &[&str] = &["application/json"];
/// The media types `POST /api/v1/import` takes: NDJSON under its common names, and `application/json`, which
/// tools often use for JSON lines (an export of one entry is a JSON document). No `Content-Type` is taken too.
pub const IMPORT_MEDIA_TYPES: &[&str] = &["application/x-ndjson", "application/jsonl", "application/json"];

/// Refuse a body whose `Content-Type` is present and not one of `accepted` (compared without case and
/// parameters such as `charset`), with 415 naming what the route takes.
pub fn require_media_type(headers: &HeaderMap, accepted: &[&str]) -> Result<()> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .map(|text| text.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match essence {
        Some(essence) if accepted.contains(&essence.as_str()) => Ok(()),
        _ => Err(Error::UnsupportedMediaType(format!(
            "this route takes a body of type {}; send it with that Content-Type",
            accepted.join(" or ")
        ))),
    }
}

/// An extractor that only checks the request's `Content-Type` against [`QUERY_MEDIA_TYPES`].
#[derive(Debug, Clone, Copy)]
pub struct JsonBody;

impl<S: Send + Sync> FromRequestParts<S> for JsonBody {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<JsonBody> {
        require_media_type(&parts.headers, QUERY_MEDIA_TYPES).map(|()| JsonBody)
    }
}

/// An extractor that only checks the request's `Content-Type` against [`IMPORT_MEDIA_TYPES`].
#[derive(Debug, Clone, Copy)]
pub struct NdjsonBody;

impl<S: Send + Sync> FromRequestParts<S> for NdjsonBody {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<NdjsonBody> {
        require_media_type(&parts.headers, IMPORT_MEDIA_TYPES).map(|()| NdjsonBody)
    }
}

/// Content types end up in headers: keep them short, printable, one line.
pub fn validate_content_type(text: &str) -> Result<()> {
    if text.len() > MAX_CONTENT_TYPE_BYTES {
        return Err(Error::invalid(format!(
            "content type is longer than {MAX_CONTENT_TYPE_BYTES} bytes"
        )));
    }
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::invalid("content type must be visible ASCII"));
    }
    Ok(())
}

/// The answer to a write that stored `version`: `{"message":"ok","version":"V"}` with its version headers.
///
/// Every PUT answers this, so it is written straight into its buffers: going through a `serde_json::Value`
/// (a map, its keys and strings, then serialising it) and formatting the version once per header cost more
/// than the bytes themselves. A version's text is digits, `-` and hex digits: nothing in it needs escaping.
pub fn written_response(version: Version) -> Response {
    let (body, etag) = written_texts(version);
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&etag[1..etag.len() - 1]) {
        headers.insert(VERSION_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(etag)) {
        headers.insert(ETAG, v);
    }
    response
}

/// The body of [`written_response`] and the version in quotes (its `ETag`, and inside the body its JSON string).
fn written_texts(version: Version) -> (String, String) {
    use std::fmt::Write;
    let mut etag = String::with_capacity(40);
    let _ = write!(etag, "\"{version}\"");
    (format!("{{\"message\":\"ok\",\"version\":{etag}}}"), etag)
}

/// A TTL (`30s`, `1h30m`) within the configured bounds, or a 400 naming `what` or the bounds.
pub fn parse_ttl(text: &str, min: Duration, max: Duration, what: &str) -> Result<Duration> {
    let ttl = crate::config::parse_duration(text).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    if ttl < min || ttl > max {
        return Err(Error::invalid(format!(
            "ttl must be between {} and {} (min_ttl, max_ttl), got {}",
            crate::config::format_duration(min),
            crate::config::format_duration(max),
            crate::config::format_duration(ttl)
        )));
    }
    Ok(ttl)
}

/// `X-Cave-Expires` of an expiring entry: when it expires, in milliseconds since the Unix epoch on the
/// cluster's clock.
pub fn expires_header(headers: &mut HeaderMap, entry: &Entry) {
    if let Some(at) = entry.expires {
        headers.insert(EXPIRES_HEADER, HeaderValue::from(hlc::physical_ms(at.get())));
    }
    if let Some(lease) = entry.lease {
        if let Ok(v) = HeaderValue::from_str(&lease.to_string()) {
            headers.insert(LEASE_HEADER, v);
        }
    }
}

/// `X-Cave-Version` and `ETag` headers of a version.
pub fn version_headers(headers: &mut HeaderMap, version: Version) {
    let text = version.to_string();
    if let Ok(v) = HeaderValue::from_str(&text) {
        headers.insert(VERSION_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{text}\"")) {
        headers.insert(ETAG, v);
    }
}

/// How a value is written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// The value as a JSON string (it is valid UTF-8).
    #[default]
    Utf8,
    /// The value in standard base64 (binary data).
    Base64,
}

/// Encode a value for JSON: UTF-8 text as itself, anything else as base64.
pub fn encode_value(value: &[u8]) -> (String, ValueEncoding) {
    match std::str::from_utf8(value) {
        Ok(text) => (text.to_string(), ValueEncoding::Utf8),
        Err(_) => (B64.encode(value), ValueEncoding::Base64),
    }
}

/// Decode a JSON value written by [`encode_value`].
pub fn decode_value(text: &str, encoding: ValueEncoding) -> Result<Bytes> {
    match encoding {
        ValueEncoding::Utf8 => Ok(Bytes::copy_from_slice(text.as_bytes())),
        ValueEncoding::Base64 => B64
            .decode(text)
            .map(Bytes::from)
            .map_err(|_| Error::invalid("value is not valid base64")),
    }
}

/// [`decode_value`] of an owned text: a UTF-8 value becomes the bytes of `text` itself, not a copy. For an
/// import, where the copy freed the parsed string between the blocks that stay (keys and values), a
/// million times over, and left their pages half used.
pub fn decode_value_owned(text: String, encoding: ValueEncoding) -> Result<Bytes> {
    match encoding {
        ValueEncoding::Utf8 => Ok(Bytes::from(text.into_bytes())),
        ValueEncoding::Base64 => decode_value(&text, encoding),
    }
}

/// An entry as JSON: export/import lines, watch events. Secrets stay sealed (their value is the envelope).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryJson {
    /// The key.
    pub key: String,
    /// The value, per `encoding`; empty for a tombstone.
    #[serde(default)]
    pub value: String,
    /// How `value` is encoded.
    #[serde(default)]
    pub encoding: ValueEncoding,
    /// The stored content type.
    #[serde(default)]
    pub content_type: String,
    /// Whether the value is a sealed secret envelope.
    #[serde(default)]
    pub secret: bool,
    /// Whether this is a tombstone.
    #[serde(default)]
    pub deleted: bool,
    /// The version that wrote it.
    pub version: Version,
    /// For a document: what it says about itself (`value` holds its saved Automerge bytes, base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<DocJson>,
    /// For an expiring value: when it expires, in milliseconds since the Unix epoch on the cluster's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// For a value bound to a lease: the lease's id (16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
}

/// [`crate::crdt::DocMeta`] as JSON. `heads` is hex: a u64 does not survive JSON readers that use doubles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DocJson {
    /// The version that created the document (its epoch).
    pub created: Version,
    /// The number of changes in its history.
    pub changes: u64,
    /// The hash of its heads, 16 hex digits.
    pub heads: String,
}

impl From<DocMeta> for DocJson {
    fn from(d: DocMeta) -> DocJson {
        DocJson {
            created: d.created,
            changes: d.changes,
            heads: format!("{:016x}", d.heads),
        }
    }
}

impl DocJson {
    fn into_meta(self) -> Result<DocMeta> {
        let heads = u64::from_str_radix(&self.heads, 16)
            .ok()
            .filter(|_| self.heads.len() == 16)
            .ok_or_else(|| Error::invalid("doc.heads is 16 hex digits"))?;
        Ok(DocMeta {
            created: self.created,
            changes: self.changes,
            heads,
            delta: false,
        })
    }
}

impl From<&Entry> for EntryJson {
    fn from(e: &Entry) -> EntryJson {
        let (value, encoding) = encode_value(&e.value);
        EntryJson {
            key: e.key.to_string(),
            value,
            encoding,
            content_type: e.content_type.to_string(),
            secret: e.secret,
            deleted: e.deleted,
            version: e.version,
            doc: e.doc_meta().map(DocJson::from),
            expires_ms: e.expires.map(|at| hlc::physical_ms(at.get())),
            lease: e.lease,
        }
    }
}

impl EntryJson {
    /// Validate and convert back into an entry (import).
    pub fn into_entry(mut self) -> Result<Entry> {
        crate::key::validate(&self.key)?;
        if self.version == Version::ZERO {
            return Err(Error::invalid("version 0 is not a real version"));
        }
        let value = decode_value_owned(std::mem::take(&mut self.value), self.encoding)?;
        if self.deleted {
            if self.doc.is_some() {
                return Err(Error::invalid("a tombstone holds no document"));
            }
            return Ok(Entry {
                expires: self.expires_ms.map(|ms| expiry::at(hlc::from_physical_ms(ms))),
                lease: self.lease,
                ..Entry::tombstone(self.key, self.version)
            });
        }
        if self.doc.is_some() && self.expires_ms.is_some() {
            return Err(Error::invalid("a document does not expire"));
        }
        if self.doc.is_some() && self.lease.is_some() {
            return Err(Error::invalid("a document is not bound to a lease"));
        }
        let doc = match self.doc {
            None => None,
            Some(doc) => {
                let meta = doc.into_meta()?;
                if meta.created == Version::ZERO || meta.created > self.version {
                    return Err(Error::invalid("a document is created no later than its version"));
                }
                // A plain document must be what it says it is: its bytes load and have the heads it names.
                if !self.secret {
                    let mut loaded = crate::crdt::doc::Doc::load(&value, crate::crdt::NodeId(0))
                        .map_err(|_| Error::invalid("the document's value is not a saved Automerge document"))?;
                    if loaded.meta(meta.created) != meta {
                        return Err(Error::invalid("the document's heads do not match its value"));
                    }
                }
                Some(meta)
            }
        };
        validate_content_type(&self.content_type)?;
        if self.secret && !crate::secrets::is_envelope(&value) {
            return Err(Error::invalid("a secret's value must be a sealed envelope"));
        }
        let content_type = if self.content_type.is_empty() {
            ContentType::default()
        } else {
            self.content_type.into()
        };
        Ok(Entry {
            key: self.key.into(),
            value,
            content_type,
            secret: self.secret,
            deleted: false,
            version: self.version,
            doc: doc.map(Box::new),
            expires: self.expires_ms.map(|ms| expiry::at(hlc::from_physical_ms(ms))),
            lease: self.lease,
        })
    }
}

/// [`EntryJson`] borrowing from its entry: the same JSON, written without copying the key or a UTF-8 value
/// (an export writes millions of these).
#[derive(Debug, Serialize)]
pub struct EntryJsonRef<'a> {
    key: &'a str,
    value: std::borrow::Cow<'a, str>,
    encoding: ValueEncoding,
    content_type: &'a str,
    secret: bool,
    deleted: bool,
    version: Version,
    #[serde(skip_serializing_if = "Option::is_none")]
    doc: Option<DocJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseId>,
}

impl<'a> From<&'a Entry> for EntryJsonRef<'a> {
    fn from(e: &'a Entry) -> EntryJsonRef<'a> {
        let (value, encoding) = match std::str::from_utf8(&e.value) {
            Ok(text) => (std::borrow::Cow::Borrowed(text), ValueEncoding::Utf8),
            Err(_) => (std::borrow::Cow::Owned(B64.encode(&e.value)), ValueEncoding::Base64),
        };
        EntryJsonRef {
            key: &e.key,
            value,
            encoding,
            content_type: &e.content_type,
            secret: e.secret,
            deleted: e.deleted,
            version: e.version,
            doc: e.doc_meta().map(DocJson::from),
            expires_ms: e.expires.map(|at| hlc::physical_ms(at.get())),
            lease: e.lease,
        }
    }
}

/// Metadata of an entry for listings (no value).
#[derive(Debug, Clone, Serialize)]
pub struct EntryMeta {
    /// The key.
    pub key: String,
    /// Its version.
    pub version: Version,
    /// Stored content type.
    pub content_type: ContentType,
    /// Whether it is a secret.
    pub secret: bool,
    /// Size of the stored value in bytes.
    pub size: usize,
    /// When it was written: the physical milliseconds (Unix time) of its version's clock reading.
    pub modified_ms: u64,
    /// When an expiring value expires (Unix milliseconds, cluster clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// The lease a bound value lives by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
}

impl From<&Entry> for EntryMeta {
    fn from(e: &Entry) -> EntryMeta {
        EntryMeta {
            key: e.key.to_string(),
            version: e.version,
            content_type: e.content_type.clone(),
            secret: e.secret,
            size: e.value.len(),
            modified_ms: crate::crdt::hlc::physical_ms(e.version.hlc),
            expires_ms: e.expires.map(|at| crate::crdt::hlc::physical_ms(at.get())),
            lease: e.lease,
        }
    }
}

/// One child of a plain listing with `?meta=true`: a folder as `{"key": "a/b/", "folder": true}`, a key as
/// its [`EntryMeta`] with `"folder": false`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ChildMeta {
    /// A sub-folder.
    Folder {
        /// Its full path, ending in `/`.
        key: String,
        /// Always `true`.
        folder: bool,
    },
    /// A key directly in the folder.
    Key {
        /// Its metadata.
        #[serde(flatten)]
        meta: EntryMeta,
        /// Always `false`.
        folder: bool,
    },
}

impl From<&crate::db::Listed> for ChildMeta {
    fn from(child: &crate::db::Listed) -> ChildMeta {
        match child {
            crate::db::Listed::Folder(path) => ChildMeta::Folder {
                key: path.clone(),
                folder: true,
            },
            crate::db::Listed::Key(entry) => ChildMeta::Key {
                meta: EntryMeta::from(entry),
                folder: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The hand-written answer of a write is the JSON it always was, and its ETag the quoted version.
        #[test]
        fn written_answer_is_the_json_of_the_version(hlc: u64, node: u64) {
            let version = Version::new(hlc, crate::crdt::NodeId(node));
            let (body, etag) = written_texts(version);
            let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
            proptest::prop_assert_eq!(parsed, serde_json::json!({"message": "ok", "version": version}));
            proptest::prop_assert_eq!(etag, format!("\"{version}\""));
            let response = written_response(version);
            let text = version.to_string();
            proptest::prop_assert_eq!(&response.headers()[VERSION_HEADER], text.as_str());
            proptest::prop_assert_eq!(&response.headers()[CONTENT_TYPE], "application/json");
        }
    }

    #[test]
    fn path_decoding_is_strict() {
        assert_eq!(path_after("/api/v1/kv/a%20b/c", "/api/v1/kv").unwrap(), "a b/c");
        assert_eq!(path_after("/api/v1/kv/", "/api/v1/kv").unwrap(), "");
        assert_eq!(path_after("/api/v1/kv", "/api/v1/kv").unwrap(), "");
        for bad in ["/api/v1/kv/a%zz", "/api/v1/kv/a%2", "/api/v1/kv/%", "/api/v1/kv/%ff"] {
            assert!(path_after(bad, "/api/v1/kv").is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_take_the_usual_spellings_and_refuse_others() {
        let params = |query: &str| Params(serde_urlencoded::from_str(query).unwrap());
        for (query, want) in [
            ("secret=yes", true),
            ("secret=YES", true),
            ("secret=on", true),
            ("secret=1", true),
            ("secret=True", true),
            ("secret", true),
            ("secret=no", false),
            ("secret=Off", false),
            ("secret=0", false),
            ("secret=false", false),
            ("", false),
        ] {
            assert_eq!(params(query).flag("secret").unwrap(), want, "{query}");
        }
        for bad in ["secret=maybe", "secret=2", "secret=y"] {
            let err = params(bad).flag("secret").unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput(m) if m.contains("secret")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_borrowed_export_line_is_the_owned_one() {
        let version = Version::new(7, crate::crdt::NodeId(3));
        for entry in [
            Entry::value("a/é", "text \"quoted\"", version),
            Entry::value("bin", Bytes::from_static(&[0xff, 0, 1]), version),
            Entry::tombstone("gone", version),
            Entry {
                doc: Some(Box::new(crate::crdt::DocMeta {
                    created: version,
                    changes: 2,
                    heads: 0xfeed,
                    delta: false,
                })),
                ..Entry::value("doc", Bytes::from_static(&[0x85, 0x6f, 0x4a]), version)
            },
        ] {
            let owned = serde_json::to_string(&EntryJson::from(&entry)).unwrap();
            let borrowed = serde_json::to_string(&EntryJsonRef::from(&entry)).unwrap();
            assert_eq!(borrowed, owned);
        }
    }

    #[test]
    fn values_round_trip_through_json_encoding() {
        for value in [&b"plain text"[..], &[0xff, 0, 1][..], b""] {
            let (text, enc) = encode_value(value);
            assert_eq!(decode_value(&text, enc).unwrap(), value);
            assert_eq!(decode_value_owned(text, enc).unwrap(), value);
        }
    }
}
