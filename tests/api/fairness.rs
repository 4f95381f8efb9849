//! Delivery as a partner source for many workspaces: a failing or huge
//! workspace never holds up the others, Segment's rate limits are honoured,
//! and batches stay within Segment's limits.

use std::time::{Duration, Instant};

use figment::providers::Serialized;
use serde_json::{Value, json};

use crate::common::{self, Backend, Env, ServiceClient, TestWorkspace, WAIT, tour_start};

/// Posts one event for `user` and returns how long until the mock has it.
async fn latency(app: &ServiceClient, env: &Env, workspace: &TestWorkspace, user: &str) -> Duration {
    let posted = Instant::now();
    let (status, _) = app.ingest("/v1/track", workspace, &tour_start(user)).await;
    assert_eq!(status, 202);
    common::eventually(WAIT, &format!("{user} at the mock"), || async {
        env.segment.accepted().iter().any(|r| r.message["userId"] == user)
    })
    .await;
    posted.elapsed()
}

async fn a_failing_workspace_does_not_slow_the_others(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let a = app.workspace_with_segment("wk_failing_a").await;
    let b = app.workspace_with_segment("wk_healthy_b").await;

    let mut healthy = Vec::new();
    for i in 0..10 {
        healthy.push(latency(&app, &env, &b, &format!("b-before-{i}")).await);
    }
    env.segment.start_key_outage("wk_failing_a", 500);
    let batch: Vec<Value> = (0..200).map(|i| tour_start(&format!("a-{i}"))).collect();
    app.ingest("/v1/batch", &a, &json!({"batch": batch})).await;
    let mut during = Vec::new();
    for i in 0..10 {
        during.push(latency(&app, &env, &b, &format!("b-during-{i}")).await);
    }
    let a_attempts = env.segment.attempts().iter().filter(|t| t.write_key == "wk_failing_a").count();
    assert!(a_attempts >= 2, "A kept being retried ({a_attempts} attempts)");
    let worst = |latencies: &[Duration]| latencies.iter().max().copied().unwrap();
    assert!(
        worst(&during) <= worst(&healthy) + Duration::from_millis(300) && worst(&during) < Duration::from_secs(1),
        "B's latency with A failing {during:?} vs healthy {healthy:?}"
    );
    let state = app.integration(&a).await["status"]["state"].clone();
    assert!(state == "retrying" || state == "failing", "{state}");

    env.segment.end_key_outage("wk_failing_a");
    env.segment.wait_for(220, WAIT).await;
    let from_a = env.segment.accepted().iter().filter(|r| r.write_key == "wk_failing_a").count();
    assert_eq!(from_a, 200, "all of A's events arrive after the recovery");
    app.stop().await;
}

async fn a_big_backlog_is_served_in_turns_with_the_others(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app_with(|f| f.merge(Serialized::default("segment.max_batch_messages", 50))).await;
    let big = app.workspace_with_segment("wk_big").await;
    let small = app.workspace_with_segment("wk_small").await;
    // Rate limited (the workspace's own trouble, not Segment's) while the backlog builds.
    env.segment.start_key_outage("wk_big", 429);
    for chunk in 0..10 {
        let batch: Vec<Value> = (0..500).map(|i| tour_start(&format!("big-{chunk}-{i}"))).collect();
        assert_eq!(app.ingest("/v1/batch", &big, &json!({"batch": batch})).await.0, 202);
    }
    // 5,000 events in batches of 50 at 50 requests/s take 2 s at best.
    env.segment.end_key_outage("wk_big");
    common::eventually(WAIT, "the big backlog to start draining", || async {
        env.segment.accepted().iter().any(|r| r.write_key == "wk_big")
    })
    .await;
    let waited = latency(&app, &env, &small, "small-user").await;
    let big_so_far = env.segment.accepted().iter().filter(|r| r.write_key == "wk_big").count();
    assert!(waited < Duration::from_millis(500), "the small workspace waited {waited:?}");
    assert!(big_so_far < 4000, "the small workspace was served during the backlog ({big_so_far} delivered)");
    env.segment.wait_for(5001, WAIT).await;
    app.stop().await;
}

/// No request for a workspace before Segment's `Retry-After` has passed, and
/// rate limiting does not count as a failure.
async fn retry_after_is_honoured(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_limited").await;
    env.segment.fail_next(1, 429, &[("Retry-After", "2")]).await;
    app.ingest("/v1/track", &workspace, &tour_start("limited")).await;
    common::eventually(WAIT, "the first attempt", || async { env.segment.request_count().await >= 1 }).await;
    // The answer is recorded a moment after the mock has seen the request.
    common::eventually(Duration::from_secs(1), "the integration to show the 429", || async {
        let status = app.integration(&workspace).await["status"].clone();
        status["state"] == "retrying" && status["last_error"]["status"] == 429
    })
    .await;
    env.segment.wait_for(1, WAIT).await;
    let attempts = env.segment.attempts();
    assert_eq!(attempts.len(), 2);
    let gap = attempts[1].at - attempts[0].at;
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");

    env.segment.fail_next(1, 503, &[("Retry-After", "1")]).await;
    app.ingest("/v1/track", &workspace, &tour_start("unavailable")).await;
    env.segment.wait_for(2, WAIT).await;
    let attempts = env.segment.attempts();
    assert_eq!(attempts.len(), 4);
    assert!(attempts[3].at - attempts[2].at >= Duration::from_secs(1));
    assert_eq!(app.metric("produktly_segment_responses_total{status=\"429\"}").await, 1.0);
    app.stop().await;
}

/// One workspace gets at most its configured requests per second.
async fn the_workspace_request_rate_is_capped(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env
        .start_app_with(|f| {
            f.merge(Serialized::default("segment.max_batch_messages", 10))
                .merge(Serialized::default("delivery.workspace_max_requests_per_sec", 10))
        })
        .await;
    let workspace = app.workspace_with_segment("wk_paced").await;
    let batch: Vec<Value> = (0..100).map(|i| tour_start(&format!("p-{i}"))).collect();
    app.ingest("/v1/batch", &workspace, &json!({"batch": batch})).await;
    env.segment.wait_for(100, WAIT).await;
    let attempts = env.segment.attempts();
    assert_eq!(attempts.len(), 10);
    // Requests leave 100 ms apart; they arrive with the network's jitter (the
    // first also opens the connection), so each gap may be a little shorter,
    // but not the rate.
    for pair in attempts.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(75), "requests {gap:?} apart at 10/s");
    }
    let span = attempts[attempts.len() - 1].at - attempts[0].at;
    assert!(span >= Duration::from_millis(95 * 9), "10 requests within {span:?} at 10/s");
    app.stop().await;
}

/// Small messages fill batches up to the message limit (set to 1,000 here:
/// at about 330 bytes each, 2,500 would pass 500 KB first), large ones up to
/// 500 KB; the strict mock checks every request against Segment's limits.
async fn batches_stay_within_segments_limits(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env
        .start_app_with(|f| {
            f.merge(Serialized::default("segment.max_batch_messages", 1000))
                .merge(Serialized::default("ingest.max_string_bytes", 32_000))
        })
        .await;
    let workspace = app.workspace_with_segment("wk_limits").await;
    // Hold delivery until everything is queued, so that batches fill up.
    env.segment.start_outage(503);
    for chunk in 0..12 {
        let batch: Vec<Value> = (0..500).map(|i| tour_start(&format!("many-{chunk}-{i}"))).collect();
        assert_eq!(app.ingest("/v1/batch", &workspace, &json!({"batch": batch})).await.0, 202);
    }
    let large: Vec<Value> = (0..60)
        .map(|i| {
            json!({"event": "tour_start", "userId": format!("large-{i}"),
                   "properties": {"tour_id": "t", "notes": "x".repeat(30_000)}})
        })
        .collect();
    for chunk in large.chunks(10) {
        assert_eq!(app.ingest("/v1/batch", &workspace, &json!({"batch": chunk})).await.0, 202);
    }
    env.segment.end_outage();
    env.segment.wait_for(6060, WAIT).await;
    assert!(env.segment.violations().is_empty(), "{:?}", env.segment.violations());
    let delivered = env.segment.attempts().into_iter().filter(|a| a.status == 200).collect::<Vec<_>>();
    assert!(delivered.iter().all(|a| a.messages <= 1000 && a.bytes <= 500_000));
    assert!(delivered.iter().any(|a| a.messages == 1000), "batches fill up to the message limit");
    assert!(delivered.iter().any(|a| a.bytes > 450_000), "large messages fill batches up to 500 KB");
    app.stop().await;
}

on_both_backends!(
    a_failing_workspace_does_not_slow_the_others,
    a_big_backlog_is_served_in_turns_with_the_others,
    retry_after_is_honoured,
    the_workspace_request_rate_is_capped,
    batches_stay_within_segments_limits,
);
