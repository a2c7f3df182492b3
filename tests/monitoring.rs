//! The monitoring shipped with regiondns (docs/monitoring): the alert rules pass promtool's
//! check and its unit tests, and every series the rules and the Grafana dashboard name is one a
//! running server exports (a renamed metric would leave an alert that can never fire).

use std::{collections::BTreeSet, process::Command};

use std::time::{Duration, Instant};

use crate::common::{Server, dublin_checked_zone, http, load_endpoint, repo_root};

fn promtool(args: &[&str]) -> String {
    let dir = repo_root().join("docs/monitoring");
    let output = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("14 rules found"), "{checked}");
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// The metric names in `text`: `regiondns_...`, without the suffixes Prometheus adds.
fn names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("regiondns_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(base.to_owned());
    }
    names
}

#[test]
fn every_series_the_rules_and_the_dashboard_name_is_exported() {
    // A checked region (its endpoint closed: probes fail) gives the probe series values.
    // And a region whose check reports its load, for a service with a load target: the load
    // series.
    let load = load_endpoint(&[], "0.9");
    let zone = dublin_checked_zone("http://127.0.0.1:9/health", "").replace(
        "  us-east: { location: { lat: 37.4, lon: -79.1 }, addresses: [203.0.113.10] }",
        &format!("  us-east: {{ location: {{ lat: 37.4, lon: -79.1 }}, addresses: [203.0.113.10], check: {{ http: \"{load}\", interval: 100ms, timeout: 80ms, load: {{ header: X-Load }} }} }}"),
    );
    let zone = zone.replace(
        "api: { regions: [us-east, eu-west] }",
        "api: { regions: [us-east, eu-west], load_target: 80% }",
    );
    let server = Server::start(&zone);
    let start = Instant::now();
    let metrics = loop {
        let (status, metrics) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
        assert_eq!(status, 200);
        if (metrics.contains("regiondns_probe_duration_seconds_count")
            && metrics.contains("regiondns_region_load{"))
            || start.elapsed() > Duration::from_secs(5)
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let exported: BTreeSet<String> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let dir = repo_root().join("docs/monitoring");
    for file in ["alerts.yml", "dashboard.json"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("read");
        let used = names(&text);
        assert!(used.len() >= 8, "{file}: {used:?}");
        let missing: Vec<&String> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} names series nobody exports: {missing:?}"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dashboard.json")).expect("read"))
            .expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8));
}
