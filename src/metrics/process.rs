//! The process gauges every Prometheus exporter is expected to have, read from `/proc/self` at scrape time:
//! `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`.
//!
//! They are what an operator compares with the node's own figures: the key space's estimated size
//! (`data_bytes` in `/api/v1/system/info`) counts keys and values, while the resident set also holds the
//! allocator's slack, the digest tree, indexes, buffers and the binary, and is the number that decides
//! whether the process fits. Reading `/proc` is Linux only; elsewhere the gauges report nothing rather
//! than a made-up zero (and [`resident_bytes`] is `None`). The names and units follow the Prometheus client
//! conventions, so dashboards written for other services work unchanged.

use opentelemetry::metrics::{Meter, ObservableCounter, ObservableGauge};

/// One reading of the process's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// Resident set size in bytes.
    pub resident_bytes: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
}

/// This process's resource use now, or `None` where `/proc/self` cannot be read (not Linux).
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (cpu_ticks, resident_pages) = parse_stat(&stat)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(ProcessStats {
        resident_bytes: resident_pages * page_size_bytes(),
        cpu_seconds: cpu_ticks as f64 / clock_ticks_per_second() as f64,
        open_fds,
    })
}

/// This process's resident set size in bytes, or `None` where `/proc/self` cannot be read (not Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size_bytes())
}

/// `(utime + stime in clock ticks, rss in pages)` from the text of `/proc/PID/stat`. The command name (field
/// 2) is in parentheses and may itself hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(24)?))
}

#[cfg(target_os = "linux")]
fn page_size_bytes() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(not(target_os = "linux"))]
fn page_size_bytes() -> u64 {
    4096
}

#[cfg(target_os = "linux")]
fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

#[cfg(not(target_os = "linux"))]
fn clock_ticks_per_second() -> u64 {
    100
}

/// The registered instruments; they report while this lives.
pub(super) struct ProcessInstruments {
    _resident: ObservableGauge<u64>,
    _open_fds: ObservableGauge<u64>,
    _cpu: ObservableCounter<f64>,
}

impl ProcessInstruments {
    /// Register the three process instruments on `meter`.
    pub(super) fn new(meter: &Meter) -> ProcessInstruments {
        ProcessInstruments {
            _resident: meter
                .u64_observable_gauge("process_resident_memory")
                .with_unit("By")
                .with_description("Resident memory size in bytes")
                .with_callback(|o| {
                    if let Some(bytes) = resident_bytes() {
                        o.observe(bytes, &[]);
                    }
                })
                .build(),
            _open_fds: meter
                .u64_observable_gauge("process_open_fds")
                .with_unit("{fd}")
                .with_description("Number of open file descriptors")
                .with_callback(|o| {
                    if let Some(stats) = read() {
                        o.observe(stats.open_fds, &[]);
                    }
                })
                .build(),
            _cpu: meter
                .f64_observable_counter("process_cpu")
                .with_unit("s")
                .with_description("Total user and system CPU time spent in seconds")
                .with_callback(|o| {
                    if let Some(stats) = read() {
                        o.observe(stats.cpu_seconds, &[]);
                    }
                })
                .build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A name with spaces and parentheses; utime 700, stime 50, rss 2000 pages.
        let stat = "4242 (cave (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 700 50 0 0 20 0 9 0 \
                    100 123456789 2000 18446744073709551615 1 1 0 0 0 0 0 4096 17000 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(stat), Some((750, 2000)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read_from_proc() {
        let stats = read().expect("linux has /proc/self");
        let rss = resident_bytes().unwrap();
        // Both are readings of the same process moments apart: within a few MiB of each other.
        assert!(stats.resident_bytes > 0 && rss > 0);
        assert!(stats.resident_bytes.abs_diff(rss) < 64 << 20, "{stats:?} vs {rss}");
        // stdin/stdout/stderr and the directory being read, at least.
        assert!(stats.open_fds >= 3, "{stats:?}");
        assert!(stats.cpu_seconds >= 0.0);
    }
}
