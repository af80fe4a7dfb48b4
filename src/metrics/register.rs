//! [`Metrics::new`]: the provider, the registry and every instrument of a node, registered once (the
//! recording methods are in the parent module).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::metrics::{Counter, Meter, MeterProvider as _, ObservableGauge};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::Resource;
use parking_lot::RwLock;

use super::{
    audit, clock, process, tls, ConnectionTimeout, Direction, Metrics, RoundResult, StateGauges, StateSource,
    BATCH_BUCKETS, LATENCY_BUCKETS,
};

const PEER_STATUSES: [&str; 3] = ["alive", "suspect", "dead"];

impl Metrics {
    /// A fresh provider, registry and set of instruments.
    pub fn new() -> Arc<Metrics> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // Every series would carry `otel_scope_name="cave"`: a constant label is only noise.
            .scope_info_enabled(false)
            .build()
            .expect("a fresh registry accepts the exporter's collector");
        let provider = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(Resource::builder().with_service_name("cave").build())
            .build();
        let meter = provider.meter("cave");

        let state: Arc<RwLock<Option<StateSource>>> = Arc::new(RwLock::new(None));
        let peers: Arc<[AtomicU64; 3]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let clock = Arc::new(clock::ClockState::default());
        let (fenced_gauge, offset_gauges) = clock::gauges(&meter, &clock);
        let gauges = vec![
            fenced_gauge,
            state_gauge(
                &meter,
                &state,
                "cave_keys",
                "{key}",
                "Live keys held by this node",
                |s| s.keys,
            ),
            state_gauge(
                &meter,
                &state,
                "cave_tombstones",
                "{tombstone}",
                "Tombstones (deleted keys) not yet purged",
                |s| s.tombstones,
            ),
            state_gauge(
                &meter,
                &state,
                "cave_expiring_keys",
                "{key}",
                "Live keys that carry an expiry (?ttl=)",
                |s| s.expiring,
            ),
            state_gauge(
                &meter,
                &state,
                "cave_leases",
                "{lease}",
                "Live leases (POST /api/v1/lease)",
                |s| s.leases,
            ),
            state_gauge(
                &meter,
                &state,
                "cave_locks",
                "{lock}",
                "Held locks (POST /api/v1/lock)",
                |s| s.locks,
            ),
            state_gauge(
                &meter,
                &state,
                "cave_db_size",
                "By",
                "Bytes the database occupies on disk",
                |s| s.db_size_bytes,
            ),
            {
                let peers = peers.clone();
                meter
                    .u64_observable_gauge("cave_peers")
                    .with_unit("{peer}")
                    .with_description("Known peers by membership status")
                    .with_callback(move |observer| {
                        for (count, status) in peers.iter().zip(PEER_STATUSES) {
                            observer.observe(count.load(Ordering::Relaxed), &[KeyValue::new("status", status)]);
                        }
                    })
                    .build()
            },
        ];

        let watch_subscribers = meter
            .i64_up_down_counter("cave_watch_subscribers")
            .with_unit("{subscriber}")
            .with_description("Open watch (Server-Sent Events) streams")
            .build();
        watch_subscribers.add(0, &[]);
        let http_connections = meter
            .i64_up_down_counter("cave_http_connections")
            .with_unit("{connection}")
            .with_description("Open HTTP connections")
            .build();
        http_connections.add(0, &[]);
        let http_connection_timeouts = counter(
            &meter,
            "cave_http_connection_timeouts",
            "{connection}",
            "HTTP connections closed by the server for a timeout, by phase (idle, header, handshake)",
        );
        for phase in [
            ConnectionTimeout::Idle,
            ConnectionTimeout::Header,
            ConnectionTimeout::Handshake,
        ] {
            http_connection_timeouts.add(0, &[KeyValue::new("phase", phase.label())]);
        }

        let anti_entropy_rounds = counter(
            &meter,
            "cave_anti_entropy_rounds",
            "{round}",
            "Anti-entropy rounds by result",
        );
        for result in [RoundResult::Ok, RoundResult::Failed] {
            anti_entropy_rounds.add(0, &[KeyValue::new("result", result.label())]);
        }
        let anti_entropy_bytes = counter(
            &meter,
            "cave_anti_entropy",
            "By",
            "Bytes of anti-entropy traffic (digests and repairs) by direction",
        );
        for direction in [Direction::Sent, Direction::Received] {
            anti_entropy_bytes.add(0, &[KeyValue::new("direction", direction.label())]);
        }

        let metrics = Metrics {
            http_requests: meter
                .u64_counter("cave_http_requests")
                .with_unit("{request}")
                .with_description("HTTP requests answered, by method, route template and status")
                .build(),
            http_duration: meter
                .f64_histogram("cave_http_request_duration")
                .with_unit("s")
                .with_description(
                    "Time to answer an HTTP request (until the response head), by method, route and status",
                )
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            kv_reads: zeroed(counter(&meter, "cave_kv_reads", "{read}", "Single-key reads")),
            kv_writes: zeroed(counter(&meter, "cave_kv_writes", "{write}", "Committed local puts")),
            kv_deletes: zeroed(counter(
                &meter,
                "cave_kv_deletes",
                "{delete}",
                "Committed local deletes (tombstones written)",
            )),
            commit_entries: meter
                .u64_histogram("cave_commit_batch_entries")
                .with_unit("{entry}")
                .with_description("Entries persisted per group commit")
                .with_boundaries(BATCH_BUCKETS.to_vec())
                .build(),
            commit_duration: meter
                .f64_histogram("cave_commit_duration")
                .with_unit("s")
                .with_description("Time to persist one group commit")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            commit_failures: zeroed(counter(
                &meter,
                "cave_commit_failures",
                "{commit}",
                "Group commits the store refused (their writes were rejected)",
            )),
            watch_subscribers,
            http_connections,
            http_connections_refused: zeroed(counter(
                &meter,
                "cave_http_connections_refused",
                "{connection}",
                "HTTP connections closed at once because http_max_connections were open",
            )),
            http_connections_evicted: zeroed(counter(
                &meter,
                "cave_http_connections_evicted",
                "{connection}",
                "Idle HTTP connections closed to admit a new one while http_max_connections were open",
            )),
            http_connection_timeouts,
            deltas_sent: zeroed(counter(
                &meter,
                "cave_deltas_sent",
                "{delta}",
                "Entry versions sent to peers by replication, by peer",
            )),
            deltas_received: zeroed(counter(
                &meter,
                "cave_deltas_received",
                "{delta}",
                "Entry versions received from peers by replication, by peer",
            )),
            deltas_dropped: zeroed(counter(
                &meter,
                "cave_deltas_dropped",
                "{delta}",
                "Entry versions not delivered to a peer (queue full, peer down), by peer",
            )),
            anti_entropy_rounds,
            anti_entropy_bytes,
            anti_entropy_repaired: zeroed(counter(
                &meter,
                "cave_anti_entropy_entries_repaired",
                "{entry}",
                "Entries anti-entropy found missing or stale and repaired",
            )),
            anti_entropy_conflicts: zeroed(counter(
                &meter,
                "cave_anti_entropy_conflicts",
                "{entry}",
                "Keys anti-entropy found at the same version with different contents on two nodes",
            )),
            clock_drift_rejections: zeroed(counter(
                &meter,
                "cave_clock_drift_rejections",
                "{message}",
                "Messages rejected because the sender's clock is too far ahead",
            )),
            duplicate_node_ids: zeroed(counter(
                &meter,
                "cave_duplicate_node_id",
                "{event}",
                "Other live processes found running under this node's id",
            )),
            seal_failures: zeroed(counter(
                &meter,
                "cave_seal_failures",
                "{failure}",
                "Sealed data that failed to open (wrong key or tampering)",
            )),
            audit: audit::AuditCounters::new(&meter),
            peers,
            state,
            routes: RwLock::new(HashMap::new()),
            clock,
            tls: tls::TlsMetrics::new(&meter),
            _process: process::ProcessInstruments::new(&meter),
            _gauges: gauges,
            _offset_gauges: offset_gauges,
            registry,
            _provider: provider,
        };
        Arc::new(metrics)
    }
}

pub(super) fn counter(
    meter: &Meter,
    name: &'static str,
    unit: &'static str,
    description: &'static str,
) -> Counter<u64> {
    meter
        .u64_counter(name)
        .with_unit(unit)
        .with_description(description)
        .build()
}

/// Give a counter its label-less zero sample, so the family is exported before its first event.
pub(super) fn zeroed(counter: Counter<u64>) -> Counter<u64> {
    counter.add(0, &[]);
    counter
}

fn state_gauge(
    meter: &Meter,
    state: &Arc<RwLock<Option<StateSource>>>,
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    pick: fn(&StateGauges) -> u64,
) -> ObservableGauge<u64> {
    let state = state.clone();
    meter
        .u64_observable_gauge(name)
        .with_unit(unit)
        .with_description(description)
        .with_callback(move |observer| {
            if let Some(gauges) = state.read().as_ref().and_then(|source| source()) {
                observer.observe(pick(&gauges), &[]);
            }
        })
        .build()
}
