//! The identity rules of the catalog: `userId` wins; an anonymous event gets
//! the `userId` last recorded for its `anonymousId`, looked up at delivery;
//! neither id is refused.

use serde_json::{Value, json};

use crate::common::{self, Backend, Env, WAIT};

fn anonymous(anonymous_id: &str, tour: &str) -> Value {
    json!({"event": "tour_start", "anonymousId": anonymous_id, "properties": {"tour_id": tour}})
}

fn delivered_with_tour<'a>(received: &'a [common::segment::Received], tour: &str) -> &'a Value {
    &received.iter().find(|r| r.message["properties"]["tour_id"] == tour).expect("delivered").message
}

async fn the_event_user_id_wins_over_a_recorded_one(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_identity").await;
    let (status, _) = app.ingest("/v1/identify", &workspace, &json!({"userId": "recorded", "anonymousId": "a1"})).await;
    assert_eq!(status, 202);
    let event = json!({"event": "tour_start", "userId": "own", "anonymousId": "a1", "properties": {"tour_id": "t1"}});
    app.ingest("/v1/track", &workspace, &event).await;
    let received = env.segment.wait_for(1, WAIT).await;
    let message = delivered_with_tour(&received, "t1");
    assert_eq!(message["userId"], "own");
    assert_eq!(message["anonymousId"], "a1");
    app.stop().await;
}

async fn anonymous_events_get_the_user_of_an_earlier_identify(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_identity").await;
    app.ingest("/v1/identify", &workspace, &json!({"userId": "u-old", "anonymousId": "a2"})).await;
    app.ingest("/v1/identify", &workspace, &json!({"userId": "u-new", "anonymousId": "a2"})).await;
    app.ingest("/v1/track", &workspace, &anonymous("a2", "t2")).await;
    app.ingest("/v1/track", &workspace, &anonymous("stranger", "t3")).await;
    let received = env.segment.wait_for(2, WAIT).await;
    let identified = delivered_with_tour(&received, "t2");
    assert_eq!(identified["userId"], "u-new", "the latest identify wins");
    assert_eq!(identified["anonymousId"], "a2");
    let stranger = delivered_with_tour(&received, "t3");
    assert!(stranger.get("userId").is_none());
    assert_eq!(stranger["anonymousId"], "stranger");
    app.stop().await;
}

async fn an_event_with_both_ids_identifies_later_anonymous_ones(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_identity").await;
    let both = json!({"event": "tour_start", "userId": "u4", "anonymousId": "a4", "properties": {"tour_id": "t4"}});
    app.ingest("/v1/track", &workspace, &both).await;
    env.segment.wait_for(1, WAIT).await;
    app.ingest("/v1/track", &workspace, &anonymous("a4", "t5")).await;
    let received = env.segment.wait_for(2, WAIT).await;
    assert_eq!(delivered_with_tour(&received, "t5")["userId"], "u4");
    app.stop().await;
}

/// The user id is looked up at delivery, so an identify that arrives after
/// anonymous events, while they still wait, still gives them the user.
async fn an_identify_after_the_event_applies_while_it_is_queued(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_identity").await;
    env.segment.start_outage(500);
    app.ingest("/v1/track", &workspace, &anonymous("a6", "t6")).await;
    common::eventually(WAIT, "a delivery attempt", || async { env.segment.request_count().await >= 1 }).await;
    app.ingest("/v1/identify", &workspace, &json!({"userId": "u6", "anonymousId": "a6"})).await;
    // A round that read the event before the identify may still be sending;
    // the round after the next answer read it after.
    let seen = env.segment.request_count().await;
    common::eventually(WAIT, "a round begun after the identify", || async {
        env.segment.request_count().await >= seen + 2
    })
    .await;
    env.segment.end_outage();
    let received = env.segment.wait_for(1, WAIT).await;
    assert_eq!(received[0].message["userId"], "u6");
    assert_eq!(received[0].message["anonymousId"], "a6");
    app.stop().await;
}

async fn an_event_without_any_id_is_refused(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_identity").await;
    let event = json!({"event": "tour_start", "userId": "", "anonymousId": null, "properties": {"tour_id": "t"}});
    let (status, body) = app.ingest("/v1/track", &workspace, &event).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "missing_identity");
    app.stop().await;
}

on_both_backends!(
    the_event_user_id_wins_over_a_recorded_one,
    anonymous_events_get_the_user_of_an_earlier_identify,
    an_event_with_both_ids_identifies_later_anonymous_ones,
    an_identify_after_the_event_applies_while_it_is_queued,
    an_event_without_any_id_is_refused,
);
