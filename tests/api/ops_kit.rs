//! The ops kit holds to the service: every series the Grafana dashboard and
//! the Prometheus alerts name is one the service exports; the alerting rules
//! pass their unit tests and the live `/metrics` passes `promtool check
//! metrics` (Debian's `prometheus` package; without it these are skipped,
//! except with `CI=true`, where that is a failure).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use produktly_segment::metrics::Metrics;
use produktly_segment::queue::depth::QueueDepth;
use produktly_segment::store::db::ConnectionCounts;
use serde_json::Value;

use crate::common::{Backend, Env, skip, tour_start};

const DASHBOARD: &str = include_str!("../../ops/grafana/produktly-segment.json");
const ALERTS: &str = include_str!("../../ops/prometheus/alerts.yml");
const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/prometheus");

/// Every series name the service exports, as Prometheus stores them.
fn exported_series() -> BTreeSet<String> {
    let mut series = BTreeSet::new();
    for line in
        Metrics::new([QueueDepth::default().collector(), ConnectionCounts::default().collector()]).encode().lines()
    {
        let Some(declaration) = line.strip_prefix("# TYPE ") else { continue };
        let mut words = declaration.split(' ');
        let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        series.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    series
}

/// The `produktly_…` names a text mentions.
fn named_series(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("produktly_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn dashboard_queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("every target has a query").to_owned())
        .collect()
}

#[test]
fn the_dashboard_queries_only_series_the_service_exports() {
    let exported = exported_series();
    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "{} queries", queries.len());
    let mut covered = BTreeSet::new();
    for query in &queries {
        let named = named_series(query);
        assert!(!named.is_empty(), "the query {query:?} names no series of the service");
        for name in named {
            assert!(exported.contains(&name), "the dashboard queries {name}, which the service does not export");
            covered.insert(name);
        }
    }
    for needed in [
        "produktly_events_received_total",
        "produktly_events_rejected_total",
        "produktly_queue_depth",
        "produktly_queue_oldest_age_seconds",
        "produktly_events_delivered_total",
        "produktly_delivery_latency_seconds_bucket",
        "produktly_segment_responses_total",
        "produktly_segment_region_up",
        "produktly_events_dead_lettered_total",
    ] {
        assert!(covered.contains(needed), "the dashboard shows nothing of {needed}");
    }
}

#[test]
fn the_alerts_name_only_series_the_service_exports() {
    let exported = exported_series();
    let named = named_series(ALERTS);
    assert!(named.len() >= 10, "{named:?}");
    for name in named {
        assert!(exported.contains(&name), "alerts.yml names {name}, which the service does not export");
    }
}

/// `promtool`, or `None` outside CI when it is not installed.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if found.is_ok_and(|status| status.success()) {
        return Some("promtool");
    }
    skip("promtool is not installed (apt-get install prometheus)")
}

fn run_promtool(promtool: &str, args: &[&str], directory: &Path, input: Option<&str>) {
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(directory)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?} failed:\n{said}");
    assert!(!said.contains("WARNING"), "promtool {args:?} warned:\n{said}");
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let directory = Path::new(RULES_DIR);
    run_promtool(promtool, &["check", "rules", "alerts.yml"], directory, None);
    run_promtool(promtool, &["test", "rules", "alerts.test.yml"], directory, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_metrics_pass_promtool() {
    let Some(promtool) = promtool() else { return };
    let Some(env) = Env::new(Backend::Sqlite).await else { return };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_metrics").await;
    app.ingest("/v1/track", &workspace, &tour_start("metrics")).await;
    app.ingest("/v1/track", &workspace, &serde_json::json!({"event": "no_such_event", "userId": "u"})).await;
    env.segment.wait_for(1, std::time::Duration::from_secs(20)).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("produktly_segment_responses_total{status=\"200\"}"), "{metrics}");
    run_promtool(promtool, &["check", "metrics"], Path::new(RULES_DIR), Some(&metrics));
    let openmetrics = reqwest::Client::new()
        .get(app.url("/metrics"))
        .header("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .unwrap();
    assert!(openmetrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    assert!(openmetrics.text().await.unwrap().ends_with("# EOF\n"), "Prometheus gets OpenMetrics");
    app.stop().await;
}
