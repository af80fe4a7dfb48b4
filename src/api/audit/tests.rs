//! The audit middleware around a fake access-control layer: what it records, with which caller and
//! status, and the 503 when a record cannot be stored.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::crdt::{Hlc, ManualTime, NodeId};
use crate::db::Op;
use crate::secrets::{MasterKey, SECRETS_DOMAIN};
use crate::storage::MemoryStore;

async fn db_on(store: &MemoryStore) -> Db {
    Db::open(
        Arc::new(store.clone()),
        NodeId(9),
        Arc::new(Hlc::new(ManualTime::new(5_000))),
        MasterKey::generate().sealer(SECRETS_DOMAIN),
        crate::metrics::Metrics::new(),
    )
    .await
    .unwrap()
}

/// What an access-control layer does: names the caller in the request's and the response's extensions;
/// `x-deny` makes it answer 401 itself.
async fn fake_acl(mut request: Request, next: Next) -> Response {
    let caller = Caller {
        accessor: Arc::from("acc-1"),
    };
    if request.headers().contains_key("x-deny") {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.extensions_mut().insert(caller);
        return response;
    }
    request.extensions_mut().insert(caller.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(caller);
    response
}

/// Routes like the real ones: a write (answering `x-status` if given), a secret read, a 403.
fn app(db: &Db) -> Router {
    let writer = db.clone();
    let write = move |request: Request| {
        let db = writer.clone();
        async move {
            let op = Op::Put {
                key: "k".into(),
                value: "v".into(),
                content_type: "text/plain".into(),
                secret: false,
                cas: None,
                ttl: None,
                lease: None,
            };
            let status = request
                .headers()
                .get("x-status")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            match db.write(vec![op]).await {
                Ok(_) => StatusCode::from_u16(status.unwrap_or(200)).unwrap().into_response(),
                Err(err) => err.into_response(),
            }
        }
    };
    let secret = || async {
        let mut response = "the plaintext".into_response();
        response
            .headers_mut()
            .insert(SECRET_HEADER, HeaderValue::from_static("opened"));
        response
    };
    Router::new()
        .route("/api/v1/kv/{*key}", put(write).get(secret))
        .route("/api/v1/plain", get(|| async { "plain" }))
        .route("/api/v1/refused", get(|| async { StatusCode::FORBIDDEN }))
        .layer(axum::middleware::from_fn(|r: Request, n: Next| {
            capture_caller(r, |r| n.run(r))
        }))
        .layer(axum::middleware::from_fn(fake_acl))
        .layer(axum::middleware::from_fn_with_state(
            db.clone(),
            |State(db): State<Db>, r: Request, n: Next| async move { record(&db, r, |r| n.run(r)).await },
        ))
}

async fn call(app: &Router, method: &str, uri: &str, headers: &[(&'static str, &'static str)]) -> (u16, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn records(db: &Db) -> Vec<AuditRecord> {
    let query = AuditQuery {
        after: 0,
        since_ms: None,
        accessor: None,
        limit: 100,
    };
    db.audit_read(&query).await.unwrap().records
}

fn metric(db: &Db, name: &str) -> f64 {
    db.metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_write_commits_its_record_with_the_caller_and_a_refusal_is_recorded_too() {
    let store = MemoryStore::new();
    let db = db_on(&store).await;
    let app = app(&db);
    assert_eq!(call(&app, "PUT", "/api/v1/kv/a%20b/c", &[]).await.0, 200);
    assert_eq!(call(&app, "PUT", "/api/v1/kv/x", &[("x-deny", "1")]).await.0, 401);
    assert_eq!(call(&app, "GET", "/api/v1/kv/x", &[("x-deny", "1")]).await.0, 401);
    assert_eq!(call(&app, "GET", "/api/v1/refused", &[]).await.0, 403);
    // Plain reads are not recorded.
    assert_eq!(call(&app, "GET", "/api/v1/plain", &[]).await.0, 200);
    let got = records(&db).await;
    let summary: Vec<(&str, &str, Option<&str>, u16, &str)> = got
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.route.as_str(),
                r.key.as_deref(),
                r.status,
                r.accessor.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("PUT", "/api/v1/kv/{*key}", Some("a b/c"), 200, "acc-1"),
            ("PUT", "/api/v1/kv/{*key}", Some("x"), 401, "acc-1"),
            ("GET", "/api/v1/kv/{*key}", Some("x"), 401, "acc-1"),
            ("GET", "/api/v1/refused", None, 403, "acc-1"),
        ]
    );
    assert!(got
        .iter()
        .all(|r| r.node == NodeId(9) && r.time_ms == 5_000 && r.remote_addr.is_none()));
    assert_eq!(ids(&got), [1, 2, 3, 4]);
    // The write's record rode in the write's own commit: one record each, no correction.
    assert_eq!(metric(&db, "cave_audit_records_total"), 4.0);
}

fn ids(records: &[AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn a_write_answered_otherwise_is_corrected_to_its_final_status() {
    let store = MemoryStore::new();
    let db = db_on(&store).await;
    let app = app(&db);
    assert_eq!(call(&app, "PUT", "/api/v1/kv/k", &[("x-status", "201")]).await.0, 201);
    let got = records(&db).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].status, got[0].accessor.as_str()), (201, "acc-1"));
}

#[tokio::test]
async fn a_record_that_cannot_be_stored_refuses_the_request() {
    let store = MemoryStore::new();
    let db = db_on(&store).await;
    let app = app(&db);
    store.set_full(true);
    // A secret read: the plaintext is not sent.
    let (status, body) = call(&app, "GET", "/api/v1/kv/s?secret=true", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("the plaintext"), "{body}");
    assert!(body.contains("audit trail"), "{body}");
    // A refusal cannot be recorded either.
    assert_eq!(call(&app, "GET", "/api/v1/refused", &[]).await.0, 503);
    // A write on a full disk: nothing stored, and the answer says so (507, not 503).
    assert_eq!(call(&app, "PUT", "/api/v1/kv/k", &[]).await.0, 507);
    assert_eq!(db.get("k"), None);
    assert_eq!(metric(&db, "cave_audit_write_failures_total"), 3.0);
    store.set_full(false);
    let (status, body) = call(&app, "GET", "/api/v1/kv/s?secret=true", &[]).await;
    assert_eq!((status, body.as_str()), (200, "the plaintext"));
    let got = records(&db).await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].method.as_str(), got[0].status), ("GET", 200));
}
