use super::*;

/// The value of the sample `name` (exact series text, labels included) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn counters_exist_before_their_first_event() {
    let metrics = Metrics::new();
    let text = metrics.render();
    for series in [
        "cave_kv_reads_total",
        "cave_kv_writes_total",
        "cave_kv_deletes_total",
        "cave_commit_failures_total",
        "cave_deltas_sent_total",
        "cave_deltas_received_total",
        "cave_deltas_dropped_total",
        "cave_anti_entropy_rounds_total{result=\"ok\"}",
        "cave_anti_entropy_rounds_total{result=\"failed\"}",
        "cave_anti_entropy_bytes_total{direction=\"sent\"}",
        "cave_anti_entropy_entries_repaired_total",
        "cave_clock_drift_rejections_total",
        "cave_seal_failures_total",
        "cave_audit_records_total",
        "cave_audit_write_failures_total",
        "cave_watch_subscribers",
        "cave_peers{status=\"alive\"}",
        "cave_peers{status=\"dead\"}",
        "cave_clock_fenced",
        "cave_clock_offset_seconds",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    // No state source yet: no invented numbers.
    assert!(!text.contains("cave_keys"), "{text}");
}

#[test]
fn recording_methods_reach_the_exposition() {
    let metrics = Metrics::new();
    metrics.set_state_source(|| {
        Some(StateGauges {
            keys: 3,
            tombstones: 2,
            expiring: 1,
            leases: 2,
            locks: 1,
            db_size_bytes: 4096,
        })
    });
    metrics.http_request("GET", Some("/api/v1/kv/{*key}"), 200, Duration::from_millis(2));
    metrics.http_request("BREW", None, 404, Duration::from_micros(50));
    metrics.kv_reads(2);
    metrics.kv_writes(5);
    metrics.kv_deletes(1);
    metrics.commit(5, Duration::from_millis(1));
    metrics.deltas_sent("00000000000000aa", 4);
    metrics.anti_entropy_round(RoundResult::Failed);
    metrics.anti_entropy_bytes(Direction::Received, 100);
    metrics.set_peers(PeerCounts {
        alive: 2,
        suspect: 1,
        dead: 0,
    });
    let guard = metrics.watch_subscriber();
    let text = metrics.render();
    let expect = [
        ("cave_keys", 3.0),
        ("cave_tombstones", 2.0),
        ("cave_expiring_keys", 1.0),
        ("cave_leases", 2.0),
        ("cave_locks", 1.0),
        ("cave_db_size_bytes", 4096.0),
        (
            "cave_http_requests_total{method=\"GET\",route=\"/api/v1/kv/{*key}\",status=\"200\"}",
            1.0,
        ),
        (
            "cave_http_requests_total{method=\"OTHER\",route=\"unmatched\",status=\"404\"}",
            1.0,
        ),
        (
            "cave_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/kv/{*key}\",status=\"200\"}",
            1.0,
        ),
        ("cave_kv_reads_total", 2.0),
        ("cave_kv_writes_total", 5.0),
        ("cave_kv_deletes_total", 1.0),
        ("cave_commit_batch_entries_sum", 5.0),
        ("cave_commit_batch_entries_bucket{le=\"4\"}", 0.0),
        ("cave_commit_batch_entries_bucket{le=\"8\"}", 1.0),
        ("cave_commit_duration_seconds_count", 1.0),
        ("cave_deltas_sent_total{peer=\"00000000000000aa\"}", 4.0),
        ("cave_anti_entropy_rounds_total{result=\"failed\"}", 1.0),
        ("cave_anti_entropy_bytes_total{direction=\"received\"}", 100.0),
        ("cave_peers{status=\"alive\"}", 2.0),
        ("cave_peers{status=\"suspect\"}", 1.0),
        ("cave_watch_subscribers", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    drop(guard);
    assert_eq!(sample(&metrics.render(), "cave_watch_subscribers"), Some(0.0));
}

#[test]
fn nodes_do_not_share_numbers() {
    let a = Metrics::new();
    let b = Metrics::new();
    a.kv_writes(7);
    assert_eq!(sample(&a.render(), "cave_kv_writes_total"), Some(7.0));
    assert_eq!(sample(&b.render(), "cave_kv_writes_total"), Some(0.0));
}

#[test]
fn route_labels_are_bounded() {
    let metrics = Metrics::new();
    for i in 0..MAX_ROUTES + 10 {
        let route = format!("/r{i}");
        metrics.http_request("GET", Some(&route), 200, Duration::ZERO);
    }
    assert_eq!(metrics.routes.read().len(), MAX_ROUTES);
    let text = metrics.render();
    assert!(text.contains("route=\"other\""));
}

#[test]
fn the_clock_gauges_say_whether_this_node_is_fenced_and_who_is_skewed() {
    let metrics = Metrics::new();
    metrics.set_clock(true, Some(30_000), vec![("00000000000000aa".into(), -12)]);
    let text = metrics.render();
    assert_eq!(sample(&text, "cave_clock_fenced"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "cave_clock_offset_seconds"), Some(30.0), "{text}");
    assert_eq!(
        sample(&text, "cave_peer_clock_offset_seconds{peer=\"00000000000000aa\"}"),
        Some(-0.012),
        "{text}"
    );
    metrics.set_clock(false, Some(3), Vec::new());
    let text = metrics.render();
    assert_eq!(sample(&text, "cave_clock_fenced"), Some(0.0), "{text}");
    assert!(!text.contains("cave_peer_clock_offset_seconds{"), "{text}");
}
