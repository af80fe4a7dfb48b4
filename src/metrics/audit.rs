//! The audit trail's counters: records written, and requests whose record could not be written.

use opentelemetry::metrics::{Counter, Meter};

use super::register::{counter, zeroed};

/// `cave_audit_records_total` and `cave_audit_write_failures_total`.
pub(super) struct AuditCounters {
    pub(super) records: Counter<u64>,
    pub(super) failures: Counter<u64>,
}

impl AuditCounters {
    pub(super) fn new(meter: &Meter) -> AuditCounters {
        AuditCounters {
            records: zeroed(counter(
                meter,
                "cave_audit_records",
                "{record}",
                "Audit records written (a corrected status counts again)",
            )),
            failures: zeroed(counter(
                meter,
                "cave_audit_write_failures",
                "{request}",
                "Requests whose audit record could not be written (answered 503 unless already a server error)",
            )),
        }
    }
}
