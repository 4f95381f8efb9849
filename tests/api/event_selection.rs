//! A workspace chooses what reaches its Segment: which catalog events, and
//! which properties are left out. Checked at Segment and in the store itself.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, Backend, Env, TestDb, TestWorkspace, WAIT};

const FEEDBACK: &str = "the onboarding tour was far too long";

fn tour_start(user: &str) -> Value {
    json!({"event": "tour_start", "userId": user, "properties": {"tour_id": "t"}})
}

fn tour_available(user: &str) -> Value {
    json!({"event": "tour_available", "userId": user, "properties": {"tour_id": "t"}})
}

fn nps_submitted(user: &str) -> Value {
    json!({"event": "nps_submitted", "userId": user,
           "properties": {"nps_widget_id": "w", "score": 9, "feedback": FEEDBACK, "nps_widget_name": "NPS"}})
}

/// The payloads of the events queued in the store.
async fn stored_payloads(db: &TestDb) -> Vec<String> {
    common::sql_column(db, "SELECT payload FROM events ORDER BY id").await
}

async fn selecting(app: &common::TestApp, workspace: &TestWorkspace, selection: Value) -> Value {
    let response = app.put_integration(workspace, selection.clone()).await;
    assert_eq!(response.status(), 200, "{selection}");
    response.json().await.unwrap()
}

/// Events outside the selection are answered as discarded and never stored;
/// the selected ones reach Segment, without the omitted property, which is
/// not stored either.
async fn only_selected_events_are_stored_and_omitted_properties_never_are(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_selected").await;
    let view = selecting(
        &app,
        &workspace,
        json!({"events": ["tour_start", "nps_submitted"], "omit_properties": ["feedback"]}),
    )
    .await;
    assert_eq!(view["events"], json!(["tour_start", "nps_submitted"]));
    assert_eq!(view["omit_properties"], json!(["feedback"]));
    assert_eq!(app.integration(&workspace).await["events"], json!(["tour_start", "nps_submitted"]));

    // Segment is down for now, so that what is stored stays in the store.
    env.segment.start_outage(503);
    let (status, answer) = app.ingest("/v1/track", &workspace, &tour_available("u1")).await;
    assert_eq!(status, 202);
    assert_eq!(answer, json!({"accepted": 0, "discarded": 1, "reason": "event_not_selected"}));
    let batch = json!({"batch": [tour_start("u1"), tour_available("u2"), nps_submitted("u1"), {"event": "nope"}]});
    let (status, answer) = app.ingest("/v1/batch", &workspace, &batch).await;
    assert_eq!(status, 202);
    assert_eq!((answer["accepted"].as_u64(), answer["discarded"].as_u64()), (Some(2), Some(1)), "{answer}");
    assert_eq!(answer["reason"], "event_not_selected");
    assert_eq!(answer["rejected"][0]["index"], 3, "invalid events are still refused");

    let stored = stored_payloads(&env.db).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.iter().all(|p| !p.contains("tour_available")), "{stored:?}");
    assert!(stored.iter().all(|p| !p.contains(FEEDBACK)), "the omitted text was stored: {stored:?}");
    let discarded = app.metric("produktly_events_discarded_total{reason=\"event_not_selected\"}").await;
    assert_eq!(discarded, 2.0);

    env.segment.end_outage();
    env.segment.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // and nothing more
    let received = env.segment.accepted();
    let events: Vec<&str> = received.iter().map(|r| r.message["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["tour_start", "nps_submitted"]);
    let nps = &received[1].message["properties"];
    assert_eq!((nps["score"].as_u64(), nps["nps_widget_name"].as_str()), (Some(9), Some("NPS")));
    assert!(nps.get("feedback").is_none(), "{nps}");

    // The test call always goes, whatever the selection.
    let test = app
        .admin(reqwest::Method::POST, &format!("/admin/v1/workspaces/{}/integrations/segment/test", workspace.id))
        .send()
        .await
        .unwrap();
    assert_eq!(test.json::<Value>().await.unwrap()["outcome"], "delivered");

    // `null` forwards every event again, with every property.
    let view = selecting(&app, &workspace, json!({"events": null, "omit_properties": null})).await;
    assert_eq!((view["events"].clone(), view["omit_properties"].clone()), (Value::Null, Value::Null));
    assert_eq!(app.ingest("/v1/track", &workspace, &tour_available("u3")).await.1["accepted"], 1);
    assert_eq!(env.segment.wait_for(4, WAIT).await[3].message["event"], "tour_available");
    app.stop().await;
}

/// A selection naming an unknown event, an entry twice, or a property an
/// event requires is refused with the entry named, and the stored one stays.
async fn invalid_selections_are_refused_naming_the_entry(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_invalid").await;
    selecting(&app, &workspace, json!({"events": ["tour_start"], "omit_properties": ["feedback"]})).await;
    for (body, field, named) in [
        (json!({"events": ["tour_start", "tour_begin"]}), "events", "tour_begin"),
        (json!({"events": ["nps_submitted", "nps_submitted"]}), "events", "nps_submitted"),
        (json!({"omit_properties": ["feedback", "feedback"]}), "omit_properties", "feedback"),
        (json!({"omit_properties": ["score"]}), "omit_properties", "nps_submitted"),
        (json!({"omit_properties": [""]}), "omit_properties", "property name"),
        (json!({"events": "tour_start"}), "events", "list"),
        (json!({"events": [1]}), "events", "list"),
    ] {
        let response = app.put_integration(&workspace, body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_request", "{body}");
        assert_eq!(error["error"]["field"], field, "{body}");
        assert!(error["error"]["message"].as_str().unwrap().contains(named), "{body}: {error}");
    }
    let kept = app.integration(&workspace).await;
    assert_eq!((kept["events"].clone(), kept["omit_properties"].clone()), (json!(["tour_start"]), json!(["feedback"])));
    // Fields left out keep what is set.
    let view = selecting(&app, &workspace, json!({"enabled": true})).await;
    assert_eq!(view["events"], json!(["tour_start"]));
    app.stop().await;
}

/// An instance that did not make the change applies it once its cached
/// entry for the ingest key expires.
async fn another_instance_honours_a_changed_selection_within_the_key_cache_ttl(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let ttl = Duration::from_millis(500);
    let with_ttl = |figment: figment::Figment| {
        figment.merge(figment::providers::Serialized::default("ingest.key_cache_ttl_ms", ttl.as_millis() as u64))
    };
    let first = env.start_app_with(with_ttl).await;
    let second = env.start_app_with(with_ttl).await;
    let workspace = first.workspace_with_segment("wk_instances").await;
    // The second instance caches the key with every event forwarded.
    assert_eq!(second.ingest("/v1/track", &workspace, &tour_available("u1")).await.1["accepted"], 1);

    selecting(&first, &workspace, json!({"events": ["tour_start"]})).await;
    let changed = std::time::Instant::now();
    // Until its cache entry expires, the second instance forwards as before.
    let mut forwarded = vec!["u1".to_owned()];
    for poll in 0.. {
        let user = format!("poll-{poll}");
        let answer = second.ingest("/v1/track", &workspace, &tour_available(&user)).await.1;
        if answer["reason"] == "event_not_selected" {
            break;
        }
        assert_eq!(answer["accepted"], 1);
        forwarded.push(user);
        assert!(changed.elapsed() < ttl * 4, "the second instance still forwards after {:?}", changed.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(second.ingest("/v1/track", &workspace, &tour_start("u3")).await.1["accepted"], 1);
    forwarded.push("u3".into());
    env.segment.wait_for(forwarded.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // and nothing more
    let received = env.segment.accepted();
    let mut users: Vec<String> = received.iter().map(|r| r.message["userId"].as_str().unwrap().to_owned()).collect();
    users.sort();
    forwarded.sort();
    assert_eq!(users, forwarded, "exactly what was answered as accepted reached Segment");
    first.stop().await;
    second.stop().await;
}

on_both_backends!(
    only_selected_events_are_stored_and_omitted_properties_never_are,
    invalid_selections_are_refused_naming_the_entry,
    another_instance_honours_a_changed_selection_within_the_key_cache_ttl,
);
