//! The gate every request passes on its way to a route and back: the checks, rewrites and records of the
//! other modules (metrics, access log, body draining, safe values, JSON errors, audit, head limits, host
//! check, access control, stale-read mark, cross-site check), run as two middlewares instead of one each.
//!
//! Why not a layer each: axum's `Router::layer` wraps every route in the layer, boxed, and a `from_fn`
//! layer clones the service inside it on every call (which clones everything under it again), boxes its
//! future and boxes a `Next`. With eleven layers that was about eighty allocations per request and a third
//! of its CPU (`/healthz`: 73 µs of CPU per request with them, 51 µs with this gate; `docs/benchmarks.md`).
//! Here each stage is a plain `async fn` that takes what comes after it as an [`Inner`] (a closure), so the
//! stages compile into one future.
//!
//! Two middlewares, not one, because CORS (a `tower-http` layer) sits between them when it is configured:
//! the [`outer`] stages answer and record outside it, the [`inner`] ones (authentication first) inside it,
//! so that a browser's preflight is answered without credentials and a refusal still carries the CORS
//! headers. The order of the stages is the order of the layers they replace, outermost first; each
//! module's docs say why its stage sits where it does.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{access, audit, guard, origin, perf, safe, system};
use crate::acl::middleware::{authenticate, with_caller, Enforcer};
use crate::crdt::Hlc;
use crate::db::Db;
use crate::metrics::Metrics;

/// What a stage calls to go on: the next stage, or at the end the route itself. Any
/// `FnOnce(Request) -> impl Future<Output = Response>` is one.
pub trait Inner {
    /// The answer of everything after this stage.
    type Answer: Future<Output = Response>;

    /// Hand `request` on.
    fn call(self, request: Request) -> Self::Answer;
}

impl<N, F> Inner for N
where
    N: FnOnce(Request) -> F,
    F: Future<Output = Response>,
{
    type Answer = F;

    fn call(self, request: Request) -> F {
        self(request)
    }
}

/// What the outer stages need.
pub struct OuterGate {
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
    pub db: Db,
    pub hosts: origin::AllowedHosts,
}

/// The stages outside CORS, outermost first: metrics, access log, body draining, safe values, JSON errors,
/// audit, head limits, host check.
pub async fn outer(State(gate): State<Arc<OuterGate>>, request: Request, next: Next) -> Response {
    let gate = &*gate;
    perf::track(&gate.metrics, request, |r| {
        logged(gate.access_log, r, |r| {
            guard::drain_unread_body(r, |r| {
                safe::values(r, |r| {
                    guard::json_errors(r, |r| {
                        audit::record(&gate.db, r, |r| {
                            guard::head_limits(r, |r| origin::allowed_host(&gate.hosts, r, |r| next.run(r)))
                        })
                    })
                })
            })
        })
    })
    .await
}

/// The access log's stage when it is on; nothing when it is off.
async fn logged(on: bool, request: Request, next: impl Inner) -> Response {
    if on {
        access::log(request, next).await
    } else {
        next.call(request).await
    }
}

/// What the inner stages need.
pub struct InnerGate {
    pub enforcer: Enforcer,
    pub hlc: Arc<Hlc>,
    pub trusted: origin::TrustedOrigins,
}

/// The stages inside CORS, outermost first: access control, the stale-read mark, the cross-site check, and
/// the hand-over of the caller to the pending audit record.
pub async fn inner(State(gate): State<Arc<InnerGate>>, mut request: Request, next: Next) -> Response {
    let caller = match authenticate(&gate.enforcer, &mut request) {
        Ok(caller) => caller,
        Err(refusal) => return *refusal,
    };
    let response = system::mark_stale_reads(&gate.hlc, request, |r| {
        origin::same_origin_writes(&gate.trusted, r, |r| audit::capture_caller(r, |r| next.run(r)))
    })
    .await;
    with_caller(response, caller)
}
