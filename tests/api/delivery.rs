//! Delivery to a strict mock of Segment: retries keep the messageId, refused
//! messages become dead letters (and can be replayed), regions and keys apply
//! to queued events, old events expire into dead letters.

use std::collections::HashMap;
use std::time::Duration;

use figment::providers::Serialized;
use serde_json::{Value, json};

use crate::common::{self, Backend, Env, TestApp, TestWorkspace, WAIT, tour_start};

async fn dead_letters(app: &TestApp, workspace: &TestWorkspace) -> Vec<Value> {
    let body: Value = common::json_answer(
        app.admin(reqwest::Method::GET, &format!("/admin/v1/workspaces/{}/dead-letters", workspace.id)),
    )
    .await;
    body["dead_letters"].as_array().unwrap().clone()
}

async fn two_failures_then_success_deliver_each_event_once_with_its_message_id(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_retry").await;
    env.segment.fail_next(2, 500, &[]).await;
    let batch: Vec<Value> = (0..5).map(|i| common::tour_start_with_id("u", "t", &format!("m-{i}"))).collect();
    let (status, _) = app.ingest("/v1/batch", &workspace, &json!({"batch": batch})).await;
    assert_eq!(status, 202);

    env.segment.wait_for(5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = common::count_by_message_id(&env.segment.accepted());
    let expected: HashMap<String, usize> = (0..5).map(|i| (format!("m-{i}"), 1)).collect();
    assert_eq!(counts, expected);
    assert_eq!(env.segment.request_count().await, 3, "two refused attempts, then one delivery");
    assert_eq!(app.metric("produktly_events_retried_total").await, 10.0);
    assert_eq!(app.metric("produktly_segment_responses_total{status=\"500\"}").await, 2.0);

    let integration = app.integration(&workspace).await;
    assert_eq!(integration["status"]["state"], "ok");
    assert_eq!(integration["status"]["queued"], 0);
    assert_eq!(integration["status"]["last_error"]["status"], 500);
    assert!(integration["status"]["last_delivery_at"].is_string());
    app.stop().await;
}

async fn a_refused_message_is_dead_lettered_and_the_rest_delivered(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_refusals").await;
    env.segment.refuse_messages_where(|m| m["properties"]["tour_id"] == "poison");
    let mut batch: Vec<Value> = (0..10).map(|i| common::tour_start_with_id("u", "fine", &format!("ok-{i}"))).collect();
    batch[6] = common::tour_start_with_id("u", "poison", "bad-1");
    app.ingest("/v1/batch", &workspace, &json!({"batch": batch})).await;

    env.segment.wait_for(9, WAIT).await;
    common::eventually(WAIT, "the dead letter", || async { app.integration(&workspace).await["status"]["dead"] == 1 })
        .await;
    assert_eq!(env.segment.accepted().len(), 9);
    let letters = dead_letters(&app, &workspace).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["message_id"], "bad-1");
    assert_eq!(letters[0]["reason"], "rejected");
    assert_eq!(letters[0]["status"], 400);
    assert!(letters[0]["detail"].as_str().unwrap().contains("refused message"));
    assert_eq!(letters[0]["message"]["properties"]["tour_id"], "poison");
    assert_eq!(app.metric("produktly_events_dead_lettered_total{reason=\"rejected\"}").await, 1.0);

    // Once Segment would take it, a replay delivers it with its messageId.
    env.segment.refuse_messages_where(|_| false);
    let replay: Value = common::json_answer(
        app.admin(reqwest::Method::POST, &format!("/admin/v1/workspaces/{}/dead-letters/replay", workspace.id)),
    )
    .await;
    assert_eq!(replay, json!({"replayed": 1}));
    let received = env.segment.wait_for(10, WAIT).await;
    assert_eq!(received.last().unwrap().message["messageId"], "bad-1");
    assert!(dead_letters(&app, &workspace).await.is_empty());
    assert!(env.segment.violations().is_empty());
    app.stop().await;
}

async fn an_eu_workspace_is_delivered_to_the_eu_url_only(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.create_workspace().await;
    let response = app.put_integration(&workspace, json!({"write_key": "wk_eu", "region": "eu"})).await;
    assert_eq!(response.status(), 200);
    app.ingest("/v1/track", &workspace, &tour_start("eu-user")).await;
    let received = env.eu_segment.wait_for(1, WAIT).await;
    assert_eq!(received[0].write_key, "wk_eu");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.segment.request_count().await, 0);
    app.stop().await;
}

/// A new region or write key applies to events already waiting.
async fn region_and_key_changes_apply_to_queued_events(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_old").await;
    env.segment.start_outage(503);
    app.ingest("/v1/track", &workspace, &tour_start("waiting")).await;
    common::eventually(WAIT, "a failed attempt", || async { env.segment.request_count().await >= 1 }).await;
    let response = app.put_integration(&workspace, json!({"write_key": "wk_new", "region": "eu"})).await;
    assert_eq!(response.status(), 200);
    let received = env.eu_segment.wait_for(1, WAIT).await;
    assert_eq!(received[0].write_key, "wk_new");
    assert_eq!(received[0].message["userId"], "waiting");
    app.stop().await;
}

/// Disabling keeps what is queued (ingest then discards new events); enabling
/// again delivers it. Deleting the integration drops what is queued.
async fn disabling_keeps_queued_events_and_deleting_drops_them(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_toggle").await;
    env.segment.start_outage(500);
    app.ingest("/v1/batch", &workspace, &json!({"batch": [tour_start("a"), tour_start("b")]})).await;
    let response = app.put_integration(&workspace, json!({"enabled": false})).await;
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["enabled"], false);
    assert_eq!(view["write_key_hint"], "…ggle", "the key is kept");
    assert_eq!(view["status"]["state"], "paused");
    assert_eq!(view["status"]["queued"], 2);
    let (_, body) = app.ingest("/v1/track", &workspace, &tour_start("c")).await;
    assert_eq!(body["discarded"], 1);

    env.segment.end_outage();
    app.put_integration(&workspace, json!({"enabled": true})).await;
    let received = env.segment.wait_for(2, WAIT).await;
    assert_eq!(received.len(), 2);

    env.segment.start_outage(500);
    app.ingest("/v1/track", &workspace, &tour_start("d")).await;
    let delete = app
        .admin(reqwest::Method::DELETE, &format!("/admin/v1/workspaces/{}/integrations/segment", workspace.id))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    app.put_integration(&workspace, json!({"write_key": "wk_again"})).await;
    assert_eq!(app.integration(&workspace).await["status"]["queued"], 0);
    app.stop().await;
}

async fn events_past_the_maximum_age_become_dead_letters(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app_with(|f| f.merge(Serialized::default("delivery.max_age_secs", 1))).await;
    let workspace = app.workspace_with_segment("wk_expiry").await;
    env.segment.start_outage(500);
    app.ingest("/v1/track", &workspace, &common::tour_start_with_id("u", "t", "too-old")).await;
    common::eventually(WAIT, "the event to expire", || async {
        app.integration(&workspace).await["status"]["dead"] == 1
    })
    .await;
    let letters = dead_letters(&app, &workspace).await;
    assert_eq!(letters[0]["message_id"], "too-old");
    assert_eq!(letters[0]["reason"], "expired");
    assert_eq!(app.integration(&workspace).await["status"]["queued"], 0);
    app.stop().await;
}

async fn the_test_call_sends_one_event_and_reports_segments_answer(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_test_call").await;
    let path = format!("/admin/v1/workspaces/{}/integrations/segment/test", workspace.id);
    let body: Value = common::json_answer(app.admin(reqwest::Method::POST, &path)).await;
    assert_eq!(body["outcome"], "delivered");
    assert_eq!(body["status"], 200);
    let received = env.segment.wait_for(1, WAIT).await;
    assert_eq!(received[0].message["event"], "produktly_test_event");
    assert_eq!(received[0].message["messageId"], body["message_id"]);
    assert_eq!(received[0].write_key, "wk_test_call");

    env.segment.start_outage(500);
    let body: Value = common::json_answer(app.admin(reqwest::Method::POST, &path)).await;
    assert_eq!(body["outcome"], "failed");
    assert_eq!(body["status"], 500);
    app.stop().await;
}

on_both_backends!(
    two_failures_then_success_deliver_each_event_once_with_its_message_id,
    a_refused_message_is_dead_lettered_and_the_rest_delivered,
    an_eu_workspace_is_delivered_to_the_eu_url_only,
    region_and_key_changes_apply_to_queued_events,
    disabling_keeps_queued_events_and_deleting_drops_them,
    events_past_the_maximum_age_become_dead_letters,
    the_test_call_sends_one_event_and_reports_segments_answer,
);
