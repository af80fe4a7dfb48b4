//! The node's metrics: OpenTelemetry instruments exported in the Prometheus text format.
//!
//! # Why OpenTelemetry behind a Prometheus registry
//! Code records through the vendor-neutral OTel API; `opentelemetry-prometheus` turns the SDK's aggregates
//! into Prometheus families on every scrape of `GET /api/v1/perf/metrics`. Each [`Metrics`] owns its *own*
//! `SdkMeterProvider` and `prometheus::Registry` (no global provider): several nodes in one process (the
//! integration tests, the simulation) then never mix their numbers.
//!
//! # Why a leaf module
//! Every layer records something (the HTTP middleware, the db writer, later the replication core), so this
//! module depends on nothing else of the crate and exposes typed methods (`http_request`, `commit`, ...)
//! rather than instruments: names, units, buckets and label sets are decided once, here.
//!
//! # Cost and cardinality
//! Instruments are created once, in [`Metrics::new`]. Recording builds its attribute array on the stack
//! from `&'static str`s, integers and an interned route template, so the hot path allocates nothing beyond
//! what the SDK itself does. Label values are bounded: route *templates* (`/api/v1/kv/{*key}`, never a raw
//! key), methods folded to a fixed set, status codes, peer node ids (bounded by the cluster size) and a few
//! enumerations. No value, key or token ever becomes a label. (The per-peer counters copy the peer id into
//! their label: they are recorded per replication batch, not per request.)
//!
//! # Families (Prometheus names after the exporter adds unit and `_total` suffixes)
//! | family | type | labels |
//! |---|---|---|
//! | `cave_http_requests_total` | counter | method, route, status |
//! | `cave_http_request_duration_seconds` | histogram | method, route, status |
//! | `cave_kv_reads_total`, `cave_kv_writes_total`, `cave_kv_deletes_total` | counter | |
//! | `cave_keys`, `cave_tombstones`, `cave_expiring_keys`, `cave_leases`, `cave_locks` | gauge | |
//! | `cave_db_size_bytes` | gauge | |
//! | `cave_commit_batch_entries` | histogram | |
//! | `cave_commit_duration_seconds` | histogram | |
//! | `cave_commit_failures_total` | counter | |
//! | `cave_watch_subscribers` | gauge | |
//! | `cave_deltas_sent_total`, `cave_deltas_received_total`, `cave_deltas_dropped_total` | counter | peer |
//! | `cave_anti_entropy_rounds_total` | counter | result (ok, failed) |
//! | `cave_anti_entropy_bytes_total` | counter | direction (sent, received) |
//! | `cave_anti_entropy_entries_repaired_total` | counter | |
//! | `cave_anti_entropy_conflicts_total` | counter | |
//! | `cave_peers` | gauge | status (alive, suspect, dead) |
//! | `cave_clock_drift_rejections_total` | counter | |
//! | `cave_duplicate_node_id_total` | counter | |
//! | `cave_clock_fenced` | gauge (0 or 1) | |
//! | `cave_clock_offset_seconds` | gauge | |
//! | `cave_peer_clock_offset_seconds` | gauge | peer |
//! | `cave_seal_failures_total` | counter | |
//! | `cave_tls_certificate_expiry_timestamp_seconds` | gauge (only with TLS) | |
//! | `cave_tls_reloads_total` | counter | result (ok, failed) |
//! | `cave_tls_handshake_failures_total` | counter | |
//! | `cave_audit_records_total`, `cave_audit_write_failures_total` | counter | |
//!
//! Counters are created with a zero sample (for labelled families: the label-less series, or every value of
//! a closed enumeration), so dashboards and alerts see them before their first event.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, ObservableGauge, UpDownCounter};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use parking_lot::RwLock;

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Bucket bounds (seconds) of request and commit latencies: 100 µs (a read served from memory) to 5 s (a
/// commit stuck behind a slow disk).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Bucket bounds of entries per group commit: powers of two up to the writer's largest group.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Route label of requests no route matched (404 fallbacks): one value, whatever the path was.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// Route label once [`MAX_ROUTES`] distinct templates were seen (a guard; routers have far fewer).
pub const OTHER_ROUTE: &str = "other";
/// Most distinct route templates interned as labels.
pub const MAX_ROUTES: usize = 256;

/// Outcome of one anti-entropy round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundResult {
    /// The round compared digests and repaired what differed (possibly nothing).
    Ok,
    /// The round failed (peer unreachable, bad answer, timeout).
    Failed,
}

impl RoundResult {
    fn label(self) -> &'static str {
        match self {
            RoundResult::Ok => "ok",
            RoundResult::Failed => "failed",
        }
    }
}

/// Direction of anti-entropy traffic, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes this node sent.
    Sent,
    /// Bytes this node received.
    Received,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// How many known peers are in each membership state (reported by the membership layer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Peers answering.
    pub alive: u64,
    /// Peers suspected of having failed.
    pub suspect: u64,
    /// Peers declared dead.
    pub dead: u64,
}

/// Sizes of the local state, read at scrape time from the source given to [`Metrics::set_state_source`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateGauges {
    /// Live keys.
    pub keys: u64,
    /// Tombstones not yet purged.
    pub tombstones: u64,
    /// Live values that expire.
    pub expiring: u64,
    /// Live leases.
    pub leases: u64,
    /// Held locks.
    pub locks: u64,
    /// Bytes the store occupies on disk.
    pub db_size_bytes: u64,
}

type StateSource = Box<dyn Fn() -> Option<StateGauges> + Send + Sync>;

/// The metrics of one node. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: prometheus::Registry,
    /// Owns the pipeline the instruments feed; dropping it would silence them.
    _provider: SdkMeterProvider,
    http_requests: Counter<u64>,
    http_duration: Histogram<f64>,
    kv_reads: Counter<u64>,
    kv_writes: Counter<u64>,
    kv_deletes: Counter<u64>,
    commit_entries: Histogram<u64>,
    commit_duration: Histogram<f64>,
    commit_failures: Counter<u64>,
    watch_subscribers: UpDownCounter<i64>,
    http_connections: UpDownCounter<i64>,
    http_connections_refused: Counter<u64>,
    http_connections_evicted: Counter<u64>,
    http_connection_timeouts: Counter<u64>,
    deltas_sent: Counter<u64>,
    deltas_received: Counter<u64>,
    deltas_dropped: Counter<u64>,
    anti_entropy_rounds: Counter<u64>,
    anti_entropy_bytes: Counter<u64>,
    anti_entropy_repaired: Counter<u64>,
    anti_entropy_conflicts: Counter<u64>,
    clock_drift_rejections: Counter<u64>,
    duplicate_node_ids: Counter<u64>,
    seal_failures: Counter<u64>,
    audit: audit::AuditCounters,
    peers: Arc<[AtomicU64; 3]>,
    state: Arc<RwLock<Option<StateSource>>>,
    /// Route templates seen so far, so a label value is an `Arc` clone rather than a fresh `String`.
    routes: RwLock<HashMap<Box<str>, Arc<str>>>,
    clock: Arc<clock::ClockState>,
    tls: tls::TlsMetrics,
    _process: process::ProcessInstruments,
    /// Observable gauges stay registered while their handles live.
    _gauges: Vec<ObservableGauge<u64>>,
    _offset_gauges: Vec<ObservableGauge<f64>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every family in the Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|err| format!("# cannot encode metrics: {err}\n"))
    }

    /// Read the state gauges (`cave_keys`, `cave_tombstones`, `cave_db_size_bytes`) from `source` at each
    /// scrape. `None` from the source (e.g. the database is gone) reports nothing rather than a made-up zero.
    /// The source must not hold the node's state alive forever: it is owned by these metrics, which the
    /// state usually owns too, so capture a weak handle.
    pub fn set_state_source(&self, source: impl Fn() -> Option<StateGauges> + Send + Sync + 'static) {
        *self.state.write() = Some(Box::new(source));
    }

    /// One answered HTTP request. `route` is the matched route *template* (`None`: no route matched);
    /// `elapsed` runs until the response head.
    pub fn http_request(&self, method: &str, route: Option<&str>, status: u16, elapsed: Duration) {
        let attributes = [
            KeyValue::new("method", method_label(method)),
            KeyValue::new("route", self.route_label(route)),
            KeyValue::new("status", i64::from(status)),
        ];
        self.http_requests.add(1, &attributes);
        self.http_duration.record(elapsed.as_secs_f64(), &attributes);
    }

    /// `n` single-key reads.
    pub fn kv_reads(&self, n: u64) {
        self.kv_reads.add(n, &[]);
    }

    /// `n` committed local puts.
    pub fn kv_writes(&self, n: u64) {
        self.kv_writes.add(n, &[]);
    }

    /// `n` committed local deletes (tombstones written by a delete or a prefix delete).
    pub fn kv_deletes(&self, n: u64) {
        self.kv_deletes.add(n, &[]);
    }

    /// One group commit of `entries` entries that took `elapsed`.
    pub fn commit(&self, entries: usize, elapsed: Duration) {
        self.commit_entries.record(entries as u64, &[]);
        self.commit_duration.record(elapsed.as_secs_f64(), &[]);
    }

    /// One group commit the store refused.
    pub fn commit_failed(&self) {
        self.commit_failures.add(1, &[]);
    }

    /// A watch stream opened; it counts as a subscriber until the guard is dropped.
    pub fn watch_subscriber(&self) -> WatchGuard {
        self.watch_subscribers.add(1, &[]);
        WatchGuard {
            gauge: self.watch_subscribers.clone(),
        }
    }

    /// An HTTP connection opened; it counts as open until the guard is dropped.
    pub fn http_connection(&self) -> ConnectionGuard {
        self.http_connections.add(1, &[]);
        ConnectionGuard {
            gauge: self.http_connections.clone(),
        }
    }

    /// An HTTP connection refused because the connection cap was reached.
    pub fn http_connection_refused(&self) {
        self.http_connections_refused.add(1, &[]);
    }

    /// An idle HTTP connection closed to make room for a new one at the connection cap.
    pub fn http_connection_evicted(&self) {
        self.http_connections_evicted.add(1, &[]);
    }

    /// An HTTP connection closed by the server because it stayed in `phase` too long.
    pub fn http_connection_timeout(&self, phase: ConnectionTimeout) {
        self.http_connection_timeouts
            .add(1, &[KeyValue::new("phase", phase.label())]);
    }

    /// The REST API now serves a certificate that expires at `not_after_s` (seconds since the Unix epoch).
    pub fn tls_certificate(&self, not_after_s: u64) {
        self.tls.certificate(not_after_s);
    }

    /// A re-read of the TLS certificate and key on SIGHUP: `ok` if the new pair is served now.
    pub fn tls_reload(&self, ok: bool) {
        self.tls.reload(ok);
    }

    /// A TLS handshake failed.
    pub fn tls_handshake_failed(&self) {
        self.tls.handshake_failed();
    }

    /// `n` entry versions sent to `peer` (its node id).
    pub fn deltas_sent(&self, peer: &str, n: u64) {
        self.deltas_sent.add(n, &[peer_label(peer)]);
    }

    /// `n` entry versions received from `peer`.
    pub fn deltas_received(&self, peer: &str, n: u64) {
        self.deltas_received.add(n, &[peer_label(peer)]);
    }

    /// `n` entry versions that could not be delivered to `peer` (anti-entropy will repair them).
    pub fn deltas_dropped(&self, peer: &str, n: u64) {
        self.deltas_dropped.add(n, &[peer_label(peer)]);
    }

    /// One anti-entropy round finished.
    pub fn anti_entropy_round(&self, result: RoundResult) {
        self.anti_entropy_rounds
            .add(1, &[KeyValue::new("result", result.label())]);
    }

    /// `bytes` of anti-entropy traffic.
    pub fn anti_entropy_bytes(&self, direction: Direction, bytes: u64) {
        self.anti_entropy_bytes
            .add(bytes, &[KeyValue::new("direction", direction.label())]);
    }

    /// `n` entries repaired by anti-entropy.
    pub fn anti_entropy_repaired(&self, n: u64) {
        self.anti_entropy_repaired.add(n, &[]);
    }

    /// The current number of peers in each membership state.
    pub fn set_peers(&self, counts: PeerCounts) {
        for (slot, value) in self.peers.iter().zip([counts.alive, counts.suspect, counts.dead]) {
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// The clock view: fenced or not, this node's offset from the cluster's median (ms), and each member's
    /// (peer id, ms).
    pub fn set_clock(&self, fenced: bool, offset_ms: Option<i64>, peers: Vec<(String, i64)>) {
        self.clock.set(fenced, offset_ms, peers);
    }

    /// Another live process found under this node's id.
    pub fn duplicate_node_id(&self) {
        self.duplicate_node_ids.add(1, &[]);
    }

    /// `n` keys found at one version with different contents (repaired to the deterministic winner).
    pub fn content_conflicts(&self, n: u64) {
        self.anti_entropy_conflicts.add(n, &[]);
    }

    /// One message rejected for clock drift.
    pub fn clock_drift_rejection(&self) {
        self.clock_drift_rejections.add(1, &[]);
    }

    /// One sealed value or message that failed to open.
    pub fn seal_failure(&self) {
        self.seal_failures.add(1, &[]);
    }

    /// The label of a route template: interned, so recording clones an `Arc` instead of allocating.
    /// `n` audit records written.
    pub fn audit_records(&self, n: u64) {
        self.audit.records.add(n, &[]);
    }

    /// One request whose audit record could not be written.
    pub fn audit_write_failed(&self) {
        self.audit.failures.add(1, &[]);
    }

    fn route_label(&self, route: Option<&str>) -> Value {
        let Some(route) = route else {
            return Value::from(UNMATCHED_ROUTE);
        };
        if let Some(label) = self.routes.read().get(route) {
            return Value::from(label.clone());
        }
        let mut routes = self.routes.write();
        if let Some(label) = routes.get(route) {
            return Value::from(label.clone());
        }
        if routes.len() >= MAX_ROUTES {
            return Value::from(OTHER_ROUTE);
        }
        let label: Arc<str> = Arc::from(route);
        routes.insert(route.into(), label.clone());
        Value::from(label)
    }
}

/// Counts one open watch stream until dropped.
#[derive(Debug)]
pub struct WatchGuard {
    gauge: UpDownCounter<i64>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.gauge.add(-1, &[]);
    }
}

/// Counts one open HTTP connection until dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: UpDownCounter<i64>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.add(-1, &[]);
    }
}

/// The phase in which an HTTP connection was closed for taking too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionTimeout {
    /// No request for `http_idle_timeout`.
    Idle,
    /// A request head not complete within `http_header_timeout` of its first byte.
    Header,
    /// A TLS handshake not complete within `http_header_timeout` of the connection's accept.
    Handshake,
}

impl ConnectionTimeout {
    fn label(self) -> &'static str {
        match self {
            ConnectionTimeout::Idle => "idle",
            ConnectionTimeout::Header => "header",
            ConnectionTimeout::Handshake => "handshake",
        }
    }
}

fn peer_label(peer: &str) -> KeyValue {
    KeyValue::new("peer", peer.to_owned())
}

/// Methods folded to a fixed set: a client inventing methods must not invent label values.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

mod audit;
mod clock;
pub mod process;
mod register;
#[cfg(test)]
mod tests;
mod tls;
