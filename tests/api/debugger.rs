//! The delivery debugger: each outcome in a workspace's activity with its
//! code, delivery attempts, the live tail (fast, bounded, ended at stop), and
//! one workspace never seeing another's events.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{self, Env, TestApp, TestWorkspace};

const WAIT: Duration = Duration::from_secs(10);
const ORIGIN: &str = "https://app.example.com";

on_both_backends!(each_outcome_is_shown_with_its_code, the_live_tail_is_prompt_bounded_and_ends_at_stop);

async fn activity(app: &TestApp, workspace: &TestWorkspace, query: &str) -> Vec<Value> {
    let path = format!("/admin/v1/workspaces/{}/activity?{query}", workspace.id);
    let page = common::json_answer(app.admin(Method::GET, &path)).await;
    page["events"].as_array().unwrap().clone()
}

fn event(name: &str, message_id: &str, user_id: &str) -> Value {
    json!({"event": name, "messageId": message_id, "userId": user_id, "properties": {"tour_id": "t1"}})
}

/// The entry for this messageId with this outcome, once it is there.
async fn entry(app: &TestApp, workspace: &TestWorkspace, message_id: &str, outcome: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = activity(app, workspace, &format!("outcome={outcome}"))
            .await
            .into_iter()
            .find(|e| e["messageId"] == message_id);
        match found {
            Some(entry) => return entry,
            None if Instant::now() > deadline => panic!("no {outcome} entry for {message_id}"),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn each_outcome_is_shown_with_its_code(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app_with(|f| f.merge(("ingest.max_body_bytes", 2000))).await;
    let workspace = app.workspace_with_segment("wk_debugger").await;
    let other = app.workspace_with_segment("wk_debugger_other").await;
    let put = app.admin(Method::PUT, &format!("/admin/v1/workspaces/{}", workspace.id));
    let answer = put.json(&json!({"name": "Debugged", "allowed_origins": [ORIGIN]})).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let selection = json!({"events": ["tour_start", "tour_finish"]});
    assert_eq!(app.put_integration(&workspace, selection).await.status(), 200);
    env.segment.refuse_messages_where(|message| message["messageId"] == "m-dead");

    let post = |body: Value, origin: &'static str| {
        app.http
            .post(app.url("/v1/track"))
            .header("x-produktly-key", &workspace.ingest_key)
            .header("origin", origin)
            .json(&body)
            .send()
    };
    assert_eq!(post(event("tour_start", "m-good", "customer-user-42"), ORIGIN).await.unwrap().status(), 202);
    assert_eq!(post(event("tour_begin", "m-unknown", "u1"), ORIGIN).await.unwrap().status(), 400);
    let missing = json!({"event": "tour_start", "messageId": "m-missing", "userId": "u1", "properties": {}});
    assert_eq!(post(missing, ORIGIN).await.unwrap().status(), 400);
    assert_eq!(post(event("tour_start", "m-origin", "u1"), "https://evil.example").await.unwrap().status(), 403);
    let selected_out = json!({"event": "announcement_shown", "messageId": "m-unselected", "userId": "u1", "properties": {"announcement_id": "a1"}});
    assert_eq!(post(selected_out, ORIGIN).await.unwrap().status(), 202);
    assert_eq!(post(event("tour_finish", "m-dead", "u1"), ORIGIN).await.unwrap().status(), 202);
    let large = json!({"event": "tour_start", "userId": "u1", "properties": {"tour_id": "x".repeat(5000)}});
    assert_eq!(post(large, ORIGIN).await.unwrap().status(), 413);
    let (status, _) = app.ingest("/v1/track", &other, &event("tour_start", "m-other", "u2")).await;
    assert_eq!(status, 202);
    let wrong_key = app
        .http
        .post(app.url("/v1/track"))
        .header("x-produktly-key", "pk_wrong")
        .json(&event("tour_start", "m-x", "u"))
        .send();
    assert_eq!(wrong_key.await.unwrap().status(), 401);

    let delivered = entry(&app, &workspace, "m-good", "delivered").await;
    assert_eq!(delivered["event"], "tour_start");
    assert_eq!(delivered["userId"], "cu…42", "ids are masked by default");
    assert_eq!(delivered["status"], 200);
    let queued = entry(&app, &workspace, "m-good", "queued").await;
    assert!(queued["instance"].as_str().is_some_and(|i| !i.is_empty()), "{queued}");
    let unknown = entry(&app, &workspace, "m-unknown", "refused").await;
    assert_eq!((unknown["code"].as_str(), unknown["event"].as_str()), (Some("unknown_event"), Some("tour_begin")));
    assert_eq!(entry(&app, &workspace, "m-missing", "refused").await["code"], "missing_property");
    let unselected = entry(&app, &workspace, "m-unselected", "not_selected").await;
    assert_eq!(unselected["reason"], "event_not_selected");
    let dead = entry(&app, &workspace, "m-dead", "dead_lettered").await;
    assert_eq!((dead["reason"].as_str(), dead["status"].as_u64()), (Some("rejected"), Some(400)));
    // Refusals of a whole request have no messageId, only their code.
    let refused = activity(&app, &workspace, "outcome=refused").await;
    let origin = refused.iter().find(|e| e["code"] == "origin_not_allowed").expect("the origin refusal");
    assert!(origin["message"].as_str().unwrap().contains("https://evil.example"), "{origin}");
    assert!(refused.iter().any(|e| e["code"] == "body_too_large"), "{refused:?}");

    let erasure = app.admin(Method::POST, &format!("/admin/v1/workspaces/{}/erasures", workspace.id));
    assert_eq!(erasure.json(&json!({"user_id": "customer-user-42"})).send().await.unwrap().status(), 200);
    let after = activity(&app, &workspace, "").await;
    assert!(after.iter().any(|e| e["outcome"] == "erased"), "{after:?}");
    assert!(!after.iter().any(|e| e["messageId"] == "m-good"), "the erased person's entries are forgotten");

    let by_event = activity(&app, &workspace, "event=tour_begin").await;
    assert!(!by_event.is_empty() && by_event.iter().all(|e| e["event"] == "tour_begin"), "{by_event:?}");
    let page = app.admin(Method::GET, &format!("/admin/v1/workspaces/{}/activity?outcome=lost", workspace.id));
    assert_eq!(page.send().await.unwrap().status(), 400);

    let path = format!("/admin/v1/workspaces/{}/deliveries", workspace.id);
    let deliveries = common::json_answer(app.admin(Method::GET, &path)).await["deliveries"].as_array().unwrap().clone();
    assert!(deliveries.iter().any(|d| d["decision"] == "acknowledged" && d["status"] == 200), "{deliveries:?}");
    assert!(deliveries.iter().any(|d| d["decision"] == "dead_lettered" && d["status"] == 400), "{deliveries:?}");
    assert!(deliveries.iter().all(|d| d["bytes"].as_u64() > Some(0) && d["events"].as_u64() > Some(0)));

    // Each workspace sees only its own.
    let theirs = activity(&app, &other, "").await;
    assert!(theirs.iter().any(|e| e["messageId"] == "m-other"));
    assert!(theirs.iter().all(|e| e["messageId"] == "m-other"), "{theirs:?}");
    assert!(!activity(&app, &workspace, "").await.iter().any(|e| e["messageId"] == "m-other"));
    let unattributed = "produktly_ingest_refused_unattributed_total{reason=\"invalid_ingest_key\"}";
    assert_eq!(app.metric(unattributed).await, 1.0, "a wrong key is counted, not shown");
    let text = serde_json::to_string(&activity(&app, &workspace, "").await).unwrap();
    assert!(!text.contains("wk_debugger"), "never a write key");
    app.stop().await;
}

/// Reads a live tail until `until` holds for what it has read, or panics.
async fn read_until(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<impl AsRef<[u8]>>> + Unpin),
    read: &mut String,
    until: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !until(read) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => read.push_str(&String::from_utf8_lossy(chunk.unwrap().as_ref())),
            Ok(None) => panic!("the stream ended; read: {read}"),
            Err(_) => panic!("timed out; read: {read}"),
        }
    }
}

async fn the_live_tail_is_prompt_bounded_and_ends_at_stop(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app =
        env.start_app_with(|f| f.merge(("activity.heartbeat_ms", 200)).merge(("activity.stream_buffer", 16))).await;
    let workspace = app.workspace_with_segment("wk_stream").await;
    let other = app.workspace_with_segment("wk_stream_other").await;
    let tail = |workspace: &TestWorkspace| {
        app.admin(Method::GET, &format!("/admin/v1/workspaces/{}/activity/stream", workspace.id)).send()
    };
    let response = tail(&workspace).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    // A client that never reads: it falls behind and is dropped, never slowing ingest.
    let stalled = tail(&workspace).await.unwrap();
    let mut read = String::new();
    read_until(&mut stream, &mut read, |r| r.contains(": heartbeat")).await;

    let sent = Instant::now();
    let (status, _) = app.ingest("/v1/track", &workspace, &event("tour_start", "m-live", "u1")).await;
    assert_eq!(status, 202);
    read_until(&mut stream, &mut read, |r| r.contains("\"m-live\"")).await;
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "the tail shows an event within 1 s of its 202: {:?}",
        sent.elapsed()
    );
    assert!(read.contains("event: activity"), "{read}");
    app.ingest("/v1/track", &other, &event("tour_start", "m-elsewhere", "u2")).await;

    let started = Instant::now();
    for round in 0..5 {
        let batch: Vec<Value> = (0..100).map(|i| event("tour_start", &format!("m-burst-{round}-{i}"), "u1")).collect();
        let (status, _) = app.ingest("/v1/batch", &workspace, &json!({"batch": batch})).await;
        assert_eq!(status, 202);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "ingest went on beside a stalled tail");
    read_until(&mut stream, &mut read, |r| r.contains("event: dropped") || r.contains("m-burst-4-99")).await;
    assert!(!read.contains("m-elsewhere"), "another workspace's events never reach this tail");

    // A tail open when the service stops ends then (opened once all is delivered, so it lags not).
    env.segment.wait_for(502, WAIT).await;
    entry(&app, &workspace, "m-burst-4-99", "delivered").await;
    let mut last = tail(&workspace).await.unwrap().bytes_stream();
    let mut last_read = String::new();
    read_until(&mut last, &mut last_read, |r| r.contains(": heartbeat")).await;
    let mut stalled = stalled.bytes_stream();
    let stopping = tokio::spawn(app.stop());
    let ended = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = last.next().await {} });
    assert!(ended.await.is_ok(), "the tail ends when the service stops");
    let mut stalled_read = String::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(WAIT, stalled.next()).await {
        stalled_read.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(stalled_read.contains("event: dropped"), "the stalled tail was dropped: {stalled_read}");
    tokio::time::timeout(WAIT, stopping).await.expect("the service stops with tails open").unwrap();
}

use common::Backend;
