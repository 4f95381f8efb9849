//! Segment incidents: a region that fails for every workspace is held and
//! probed, not stampeded, and every workspace resumes as soon as it is back;
//! a single failing write key stays that workspace's own trouble. Batches go
//! gzip-compressed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use figment::Figment;
use figment::providers::Serialized;
use serde_json::{Value, json};

use crate::common::{self, Backend, Env, TestApp, TestWorkspace, WAIT, tour_start};

const REGION_UP: &str = "produktly_segment_region_up{region=\"us\"}";

/// Production's backoff (so that a workspace left to it would wait seconds,
/// then minutes) and a short probe interval.
fn incident_settings(figment: Figment) -> Figment {
    figment
        .merge(Serialized::default("delivery.backoff_base_ms", 1000))
        .merge(Serialized::default("delivery.backoff_max_ms", 300_000))
        .merge(Serialized::default("delivery.region_probe_interval_ms", 400))
}

async fn workspaces(app: &TestApp, prefix: &str, count: usize) -> Vec<TestWorkspace> {
    let mut workspaces = Vec::new();
    for i in 0..count {
        workspaces.push(app.workspace_with_segment(&format!("{prefix}_{i}")).await);
    }
    workspaces
}

async fn region_down(app: &TestApp) {
    common::eventually(WAIT, "the region to be down", || async { app.metric(REGION_UP).await == 0.0 }).await;
}

/// Twenty workspaces fail together: the region goes down, requests drop to
/// the probes (one at a time), the status says the workspace is waiting for
/// Segment, and once Segment answers every workspace resumes within seconds,
/// each event delivered once.
async fn an_outage_is_probed_and_every_workspace_resumes_at_once(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app_with(incident_settings).await;
    let all = workspaces(&app, "wk_incident", 20).await;
    env.segment.start_outage(500);
    let mut expected = Vec::new();
    for (i, workspace) in all.iter().enumerate() {
        let id = format!("before-{i}");
        assert_eq!(
            app.ingest("/v1/track", workspace, &common::tour_start_with_id(&format!("u{i}"), "t", &id)).await.0,
            202
        );
        expected.push(id);
    }
    region_down(&app).await;
    let status = app.integration(&all[7]).await["status"].clone();
    assert_eq!(status["state"], "waiting_for_segment", "{status}");
    assert!(status["segment_down_since"].is_string(), "{status}");

    // While it is down: only probes, at most one every 200-400 ms, whatever the number of workspaces.
    let held_from = Instant::now();
    for (i, workspace) in all.iter().enumerate() {
        let id = format!("during-{i}");
        assert_eq!(
            app.ingest("/v1/track", workspace, &common::tour_start_with_id(&format!("u{i}"), "t", &id)).await.0,
            202
        );
        expected.push(id);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = env.segment.attempts().iter().filter(|a| a.at >= held_from).count();
    assert!((3..=16).contains(&during), "{during} requests in 3 s while the region was down");
    let workspace_failures = app.metric("produktly_segment_responses_total{status=\"500\"}").await;
    assert!(workspace_failures < 60.0, "{workspace_failures} failed requests in all");

    env.segment.end_outage();
    let recovered = Instant::now();
    env.segment.wait_for(expected.len(), WAIT).await;
    let first_by_key = first_acceptance_by_key(&env);
    assert_eq!(first_by_key.len(), 20, "every workspace delivered");
    let slowest = first_by_key.values().map(|at| at.saturating_duration_since(recovered)).max().unwrap();
    assert!(slowest < Duration::from_secs(3), "the last workspace resumed {slowest:?} after Segment came back");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = common::count_by_message_id(&env.segment.accepted());
    assert!(expected.iter().all(|id| counts.get(id) == Some(&1)), "every event exactly once: {counts:?}");
    assert_eq!(app.metric(REGION_UP).await, 1.0);
    assert_eq!(app.integration(&all[7]).await["status"]["state"], "ok");
    assert!(env.segment.violations().is_empty(), "{:?}", env.segment.violations());
    app.stop().await;
}

fn first_acceptance_by_key(env: &Env) -> HashMap<String, Instant> {
    let mut first = HashMap::new();
    for received in env.segment.accepted() {
        first.entry(received.write_key).or_insert(received.at);
    }
    first
}

/// One write key answered `500` while two others keep succeeding: the region
/// stays up, the failing workspace backs off alone and the others are not
/// held up.
async fn one_failing_write_key_stays_that_workspaces_own(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app_with(incident_settings).await;
    let failing = app.workspace_with_segment("wk_alone_failing").await;
    let healthy = workspaces(&app, "wk_alone_healthy", 2).await;
    env.segment.start_key_outage("wk_alone_failing", 500);
    for i in 0..10 {
        app.ingest("/v1/track", &failing, &common::tour_start_with_id("f", "t", &format!("failing-{i}"))).await;
    }
    let mut waits = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    let mut sent = 0;
    while Instant::now() < until {
        for workspace in &healthy {
            let started = Instant::now();
            let id = format!("healthy-{sent}");
            app.ingest("/v1/track", workspace, &common::tour_start_with_id("h", "t", &id)).await;
            sent += 1;
            env.segment.wait_for(sent, WAIT).await;
            waits.push(started.elapsed());
        }
        assert_eq!(app.metric(REGION_UP).await, 1.0, "the region stays up");
    }
    // Held up by the failing workspace's backoff (1 s, doubling), most events
    // would wait a second or more; a stall of the machine shows in one or two.
    waits.sort();
    let p90 = waits[waits.len() * 9 / 10];
    assert!(p90 < Duration::from_millis(500), "healthy workspaces waited {p90:?} (p90) of {waits:?}");
    assert!(waits[waits.len() - 1] < Duration::from_secs(3), "a healthy workspace waited {:?}", waits.last());
    let failing_attempts: Vec<Instant> =
        env.segment.attempts().iter().filter(|a| a.write_key == "wk_alone_failing").map(|a| a.at).collect();
    // Backoff from 1 s doubling: a handful of attempts in 5 s, not one per probe.
    assert!((2..=6).contains(&failing_attempts.len()), "{} attempts of the failing key", failing_attempts.len());
    let status = app.integration(&failing).await["status"].clone();
    assert!(status["state"] == "retrying" || status["state"] == "failing", "{status}");
    assert!(status.get("segment_down_since").is_none(), "{status}");

    env.segment.end_key_outage("wk_alone_failing");
    env.segment.wait_for(sent + 10, Duration::from_secs(60)).await;
    app.stop().await;
}

/// Batches reach a stand-in that inflates them whole, with
/// `Content-Encoding: gzip`; with `segment.gzip = false` they go plain.
async fn batches_go_gzip_compressed_and_arrive_whole(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_gzip").await;
    let batch: Vec<Value> = (0..300).map(|i| tour_start(&format!("zipped-{i}"))).collect();
    app.ingest("/v1/batch", &workspace, &json!({"batch": batch})).await;
    let received = env.segment.wait_for(300, WAIT).await;
    assert!(received.iter().enumerate().all(|(i, r)| r.message["userId"] == format!("zipped-{i}")));
    let attempts = env.segment.attempts();
    assert!(attempts.iter().all(|a| a.gzip && a.status == 200), "{attempts:?}");
    assert!(env.segment.violations().is_empty(), "{:?}", env.segment.violations());
    app.stop().await;

    let plain = env.start_app_with(|f| f.merge(Serialized::default("segment.gzip", false))).await;
    plain.ingest("/v1/track", &workspace, &tour_start("plain")).await;
    env.segment.wait_for(301, WAIT).await;
    assert!(!env.segment.attempts().last().unwrap().gzip);
    plain.stop().await;
}

/// A second instance learns from the store that the region is down without
/// failing itself, and of the recovery without waiting out any backoff: with
/// backoff starting at 30 s, everything arrives within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_learns_of_the_outage_and_the_recovery() {
    let Some(env) = Env::new(Backend::Postgres).await else {
        return;
    };
    let slow_backoff = |f: Figment| {
        incident_settings(f)
            .merge(Serialized::default("delivery.backoff_base_ms", 30_000))
            .merge(Serialized::default("delivery.backoff_max_ms", 60_000))
    };
    let first = env.start_app_with(slow_backoff).await;
    let all = workspaces(&first, "wk_two", 6).await;
    env.segment.start_outage(503);
    let mut expected = Vec::new();
    for (i, workspace) in all.iter().enumerate() {
        expected.push(format!("first-{i}"));
        first.ingest("/v1/track", workspace, &common::tour_start_with_id("u", "t", &expected[i])).await;
    }
    region_down(&first).await;

    let second = env.start_app_with(slow_backoff).await;
    region_down(&second).await;
    for (i, workspace) in all.iter().enumerate() {
        let id = format!("second-{i}");
        second.ingest("/v1/track", workspace, &common::tour_start_with_id("u", "t", &id)).await;
        expected.push(id);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    env.segment.end_outage();
    let recovered = Instant::now();
    env.segment.wait_for(expected.len(), WAIT).await;
    assert!(recovered.elapsed() < Duration::from_secs(5), "all delivered {:?} after the recovery", recovered.elapsed());
    common::eventually(Duration::from_secs(3), "the second instance to see the region up", || async {
        second.metric(REGION_UP).await == 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = common::count_by_message_id(&env.segment.accepted());
    assert!(expected.iter().all(|id| counts.get(id) == Some(&1)), "every event exactly once: {counts:?}");
    first.stop().await;
    second.stop().await;
}

on_both_backends!(
    an_outage_is_probed_and_every_workspace_resumes_at_once,
    one_failing_write_key_stays_that_workspaces_own,
    batches_go_gzip_compressed_and_arrive_whole,
);
