//! The Grafana dashboard served at `GET /api/v1/perf/dashboard`.
//!
//! The JSON is `docs/grafana-dashboard.json`, compiled into the binary, so the dashboard an operator
//! downloads from a node always matches the metrics that node's version exports; the integration tests
//! check every metric name in its expressions against a live node's `/api/v1/perf/metrics`. It selects its
//! Prometheus data source through a `datasource` template variable (so it imports into any Grafana, by UI,
//! API or provisioning) and its nodes through an `instance` variable.

/// Content type of the dashboard.
pub const CONTENT_TYPE: &str = "application/json";

/// The dashboard JSON, byte for byte the checked-in `docs/grafana-dashboard.json`.
pub const DASHBOARD_JSON: &str = include_str!("../../docs/grafana-dashboard.json");

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_dashboard_has_what_grafana_imports() {
        let dashboard: Value = serde_json::from_str(DASHBOARD_JSON).expect("valid JSON");
        assert!(dashboard["uid"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(dashboard["title"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(dashboard["schemaVersion"].as_u64().is_some());
        let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
        assert!(variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource"));
        let panels = dashboard["panels"].as_array().expect("panels");
        let mut ids = std::collections::HashSet::new();
        let mut exprs = 0;
        for panel in panels {
            assert!(
                ids.insert(panel["id"].as_u64().expect("panel id")),
                "duplicate id: {panel}"
            );
            for field in ["x", "y", "w", "h"] {
                assert!(panel["gridPos"][field].as_u64().is_some(), "gridPos.{field}: {panel}");
            }
            assert!(panel["gridPos"]["x"].as_u64().unwrap() + panel["gridPos"]["w"].as_u64().unwrap() <= 24);
            match panel["type"].as_str().expect("type") {
                "row" => continue,
                "timeseries" | "stat" => {}
                other => panic!("unexpected panel type {other}"),
            }
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{panel}");
            for target in targets {
                let expr = target["expr"].as_str().expect("expr");
                assert!(expr.contains("cave_"), "{expr}");
                exprs += 1;
            }
        }
        assert!(exprs >= 20, "only {exprs} expressions");
    }
}
