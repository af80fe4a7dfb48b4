//! Honest accounting (issue 12 item 2): `/api/v1/system/info` says what the process holds (`rss_bytes`, and
//! `memory_bytes` the same) apart from the estimated size of the key space (`data_bytes`), and the metrics
//! carry the standard process families. The node runs in this test process, so its resident set is the
//! process's.

mod common;

/// The value of the sample line `name value` (no labels) in a Prometheus exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn system_info_and_metrics_report_the_resident_set() {
    let (_dir, node) = common::start_prod().await;
    node.put("a/k", vec![b'x'; 1000]).await;

    let info = node.get_json("/api/v1/system/info").await;
    let rss = info["rss_bytes"].as_u64().expect("rss_bytes on Linux");
    assert_eq!(info["memory_bytes"], info["rss_bytes"], "{info}");
    let data = info["data_bytes"].as_u64().unwrap();
    assert!(data >= 1000 && data < rss, "{info}");
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_rss: u64 = own
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap();
    let vm_rss = vm_rss * 1024;
    // Two readings of one process moments apart: within 10% of each other.
    assert!(rss.abs_diff(vm_rss) * 10 < vm_rss, "{rss} vs VmRSS {vm_rss}");

    let metrics = node.text("/api/v1/perf/metrics").await;
    let resident = sample(&metrics, "process_resident_memory_bytes").expect("process_resident_memory_bytes");
    assert!(
        (resident as u64).abs_diff(vm_rss) * 10 < vm_rss,
        "{resident} vs {vm_rss}"
    );
    let cpu = sample(&metrics, "process_cpu_seconds_total").expect("process_cpu_seconds_total");
    assert!(cpu > 0.0, "{cpu}");
    let fds = sample(&metrics, "process_open_fds").expect("process_open_fds");
    // At least the listeners, the store's files and stdio.
    assert!(fds >= 5.0, "{fds}");
    assert!(
        metrics.contains("# TYPE process_cpu_seconds_total counter"),
        "{metrics}"
    );
    node.stop().await;
}
