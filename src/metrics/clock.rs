//! The clock gauges: whether this node is fenced for clock skew, its offset from the cluster's clock, and
//! every member's offset (so that an operator sees *which* member is skewed, and by how much).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::metrics::{Meter, ObservableGauge};
use opentelemetry::KeyValue;
use parking_lot::RwLock;

/// The latest clock view, read at scrape time.
#[derive(Debug, Default)]
pub(super) struct ClockState {
    fenced: AtomicU64,
    offset_ms: AtomicI64,
    peers: RwLock<Vec<(String, i64)>>,
}

impl ClockState {
    pub(super) fn set(&self, fenced: bool, offset_ms: Option<i64>, peers: Vec<(String, i64)>) {
        self.fenced.store(u64::from(fenced), Ordering::Relaxed);
        self.offset_ms.store(offset_ms.unwrap_or(0), Ordering::Relaxed);
        *self.peers.write() = peers;
    }
}

/// Register the gauges (`cave_clock_fenced` and `cave_clock_offset_seconds` start at zero). Offsets are
/// exported in seconds, Prometheus' base unit (held in milliseconds).
pub(super) fn gauges(meter: &Meter, state: &Arc<ClockState>) -> (ObservableGauge<u64>, Vec<ObservableGauge<f64>>) {
    let fenced = {
        let state = state.clone();
        meter
            .u64_observable_gauge("cave_clock_fenced")
            .with_description("1 while this node refuses writes because its clock is the outlier of its cluster")
            .with_callback(move |o| o.observe(state.fenced.load(Ordering::Relaxed), &[]))
            .build()
    };
    let offset = {
        let state = state.clone();
        meter
            .f64_observable_gauge("cave_clock_offset")
            .with_unit("s")
            .with_description("This node's clock minus the median of its cluster's clocks")
            .with_callback(move |o| o.observe(seconds(state.offset_ms.load(Ordering::Relaxed)), &[]))
            .build()
    };
    let peers = {
        let state = state.clone();
        meter
            .f64_observable_gauge("cave_peer_clock_offset")
            .with_unit("s")
            .with_description("Each member's clock minus the median of the cluster's clocks, as estimated here")
            .with_callback(move |o| {
                for (peer, offset_ms) in state.peers.read().iter() {
                    o.observe(seconds(*offset_ms), &[KeyValue::new("peer", peer.clone())]);
                }
            })
            .build()
    };
    (fenced, vec![offset, peers])
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1_000.0
}
