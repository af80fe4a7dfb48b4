//! The TLS instruments of the REST API: which certificate is served (its expiry, so that an alert can fire
//! weeks before it lapses), reloads on SIGHUP, and handshakes that failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::metrics::{Counter, Meter, ObservableGauge};
use opentelemetry::KeyValue;

/// The instruments; the expiry gauge has no series until a certificate is loaded (a plain-HTTP node has none).
pub(super) struct TlsMetrics {
    /// `notAfter` of the certificate served, in seconds since the Unix epoch; 0 while none is.
    not_after_s: Arc<AtomicU64>,
    _expiry: ObservableGauge<u64>,
    reloads: Counter<u64>,
    handshake_failures: Counter<u64>,
}

impl TlsMetrics {
    pub(super) fn new(meter: &Meter) -> TlsMetrics {
        let not_after_s = Arc::new(AtomicU64::new(0));
        let expiry = {
            let not_after_s = not_after_s.clone();
            meter
                .u64_observable_gauge("cave_tls_certificate_expiry_timestamp")
                .with_unit("s")
                .with_description("When the certificate the REST API serves expires (notAfter, Unix time)")
                .with_callback(move |o| match not_after_s.load(Ordering::Relaxed) {
                    0 => {}
                    at => o.observe(at, &[]),
                })
                .build()
        };
        let reloads = meter
            .u64_counter("cave_tls_reloads")
            .with_unit("{reload}")
            .with_description("Re-reads of the TLS certificate and key on SIGHUP, by result (ok, failed)")
            .build();
        for result in ["ok", "failed"] {
            reloads.add(0, &[KeyValue::new("result", result)]);
        }
        let handshake_failures = meter
            .u64_counter("cave_tls_handshake_failures")
            .with_unit("{handshake}")
            .with_description(
                "TLS handshakes that failed (plain HTTP to the HTTPS port, a client refusing the certificate)",
            )
            .build();
        handshake_failures.add(0, &[]);
        TlsMetrics {
            not_after_s,
            _expiry: expiry,
            reloads,
            handshake_failures,
        }
    }

    pub(super) fn certificate(&self, not_after_s: u64) {
        self.not_after_s.store(not_after_s, Ordering::Relaxed);
    }

    pub(super) fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.add(1, &[KeyValue::new("result", result)]);
    }

    pub(super) fn handshake_failed(&self) {
        self.handshake_failures.add(1, &[]);
    }
}
