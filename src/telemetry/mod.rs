//! Operator-facing telemetry that is not a metric: the recent-log ring buffer behind `/api/v1/perf/logs`
//! and the Grafana dashboard behind `/api/v1/perf/dashboard`. (Metrics live in [`crate::metrics`], a leaf
//! module every layer records into.)
//!
//! Both exist so that an operator with nothing but HTTP access to a node can see what it is doing: the last
//! few thousand log records without shell access to its journal, and a dashboard to import into Grafana
//! that is guaranteed (by a test) to use only metric names the node exports. [`limiter`] keeps warnings that
//! outside input can trigger from flooding either (a leaf, used by every layer).

pub mod dashboard;
pub mod limiter;
pub mod logs;
