//! The admin API: bearer auth, workspaces, the Segment integration, and the
//! write key never coming back out.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{self, ADMIN_TOKEN, Backend, Env, tour_start};

const WRITE_KEY: &str = "wk_admin_secret_3f9a";

async fn every_admin_route_requires_the_token(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.create_workspace().await;
    let id = &workspace.id;
    let routes = [
        (Method::POST, "/admin/v1/workspaces".to_owned()),
        (Method::PUT, format!("/admin/v1/workspaces/{id}")),
        (Method::GET, format!("/admin/v1/workspaces/{id}")),
        (Method::POST, format!("/admin/v1/workspaces/{id}/ingest-key/rotate")),
        (Method::PUT, format!("/admin/v1/workspaces/{id}/integrations/segment")),
        (Method::GET, format!("/admin/v1/workspaces/{id}/integrations/segment")),
        (Method::DELETE, format!("/admin/v1/workspaces/{id}/integrations/segment")),
        (Method::POST, format!("/admin/v1/workspaces/{id}/integrations/segment/test")),
        (Method::GET, format!("/admin/v1/workspaces/{id}/dead-letters")),
        (Method::POST, format!("/admin/v1/workspaces/{id}/dead-letters/replay")),
    ];
    for (method, path) in routes {
        for authorization in [None, Some("Bearer wrong-token"), Some(ADMIN_TOKEN)] {
            let mut request = app.http.request(method.clone(), app.url(&path));
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {authorization:?}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    app.stop().await;
}

async fn workspaces_are_created_upserted_read_and_rotated(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let create = |body: Value| app.admin(Method::POST, "/admin/v1/workspaces").json(&body).send();

    let response = create(json!({"id": "acme-1", "name": "Acme"})).await.unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["id"], "acme-1");
    assert_eq!(created["name"], "Acme");
    assert!(created["ingest_key"].as_str().unwrap().starts_with("pk_"));
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let response = create(json!({"id": "acme-1", "name": "Again"})).await.unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "workspace_exists");
    for (body, field) in [
        (json!({"id": "bad id!", "name": "x"}), Some("id")),
        (json!({"id": "..", "name": "x"}), Some("id")),
        (json!({"id": "-leading-dash", "name": "x"}), Some("id")),
        (json!({"name": "  "}), Some("name")),
        (json!({"name": " \t\r\n"}), Some("name")),
        (json!({"name": "x".repeat(201)}), Some("name")),
        (json!({"name": "x", "allowed_origins": ["HTTPS://upper.example"]}), Some("allowed_origins")),
        (json!({"name": "x", "allowed_origins": ["https://1.2.3.4.5"]}), Some("allowed_origins")),
        (json!({"name": "x", "allowed_origins": ["https://a.example:65536"]}), Some("allowed_origins")),
        (json!({"id": "x"}), None),
        (json!({"name": "x", "extra": 1}), Some("extra")),
    ] {
        let response = create(body.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_request", "{body}");
        assert_eq!(error["error"]["field"].as_str(), field, "{body}");
    }
    let generated: Value = create(json!({"name": "  Generated\n"})).await.unwrap().json().await.unwrap();
    assert!(generated["id"].as_str().unwrap().starts_with("ws_"));
    assert_eq!(generated["name"], "Generated", "blanks around the name are removed");

    let upsert =
        |id: &str, body: Value| app.admin(Method::PUT, &format!("/admin/v1/workspaces/{id}")).json(&body).send();
    let response = upsert("acme-1", json!({"name": "Acme Inc"})).await.unwrap();
    assert_eq!(response.status(), 200);
    let renamed: Value = response.json().await.unwrap();
    assert_eq!(renamed["name"], "Acme Inc");
    assert_eq!(renamed["ingest_key"], created["ingest_key"], "an upsert keeps the ingest key");
    assert_eq!(upsert("beta-2", json!({"name": "Beta"})).await.unwrap().status(), 201);
    assert_eq!(upsert("beta-2", json!({"id": "other", "name": "Beta"})).await.unwrap().status(), 400);

    let read: Value = common::json_answer(app.admin(Method::GET, "/admin/v1/workspaces/acme-1")).await;
    assert_eq!(read, renamed);
    let missing = app.admin(Method::GET, "/admin/v1/workspaces/nobody").send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], "not_found");

    // A rotated ingest key stops working at once; the new one works.
    app.put_integration(
        &common::TestWorkspace { id: "acme-1".into(), ingest_key: String::new() },
        json!({"write_key": WRITE_KEY}),
    )
    .await;
    let old = common::TestWorkspace { id: "acme-1".into(), ingest_key: created["ingest_key"].as_str().unwrap().into() };
    assert_eq!(app.ingest("/v1/track", &old, &tour_start("u")).await.0, 202);
    let rotated: Value =
        common::json_answer(app.admin(Method::POST, "/admin/v1/workspaces/acme-1/ingest-key/rotate")).await;
    assert_ne!(rotated["ingest_key"], created["ingest_key"]);
    let (status, body) = app.ingest("/v1/track", &old, &tour_start("u")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_ingest_key")));
    let new = common::TestWorkspace { id: "acme-1".into(), ingest_key: rotated["ingest_key"].as_str().unwrap().into() };
    assert_eq!(app.ingest("/v1/track", &new, &tour_start("u")).await.0, 202);
    let rotate_missing = app.admin(Method::POST, "/admin/v1/workspaces/nobody/ingest-key/rotate").send().await.unwrap();
    assert_eq!(rotate_missing.status(), 404);
    app.stop().await;
}

async fn the_integration_shows_only_a_hint_of_the_write_key(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.create_workspace().await;
    let mut bodies = Vec::new();

    let first = app.put_integration(&workspace, json!({"region": "eu"})).await;
    assert_eq!(first.status(), 409, "the key is required the first time");
    let first = first.text().await.unwrap();
    assert!(first.contains("write_key_required"), "{first}");
    bodies.push(first);
    for body in [
        json!({"write_key": ""}),
        json!({"write_key": "has space"}),
        json!({"write_key": "clé-non-ascii"}),
        json!({"write_key": "k".repeat(257)}),
        json!({"write_key": 12345}),
        json!({"write_key": WRITE_KEY, "region": "mars"}),
        json!({"write_key": WRITE_KEY, "enabled": "yes"}),
        json!({"write_key": WRITE_KEY, "colour": "blue"}),
        json!({"write_key": [WRITE_KEY]}),
        json!({"write_key": {"key": WRITE_KEY}}),
        json!({"write_key": WRITE_KEY, "ip": WRITE_KEY}),
        json!({"write_key": WRITE_KEY, "events": WRITE_KEY}),
        json!([WRITE_KEY]),
    ] {
        let response = app.put_integration(&workspace, body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains("invalid_request"), "{text}");
        bodies.push(text);
    }

    let response = app.put_integration(&workspace, json!({"write_key": WRITE_KEY, "region": "eu"})).await;
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["configured"], true);
    assert_eq!(view["write_key_hint"], "…3f9a");
    assert_eq!(view["region"], "eu");
    assert_eq!(view["enabled"], true);
    assert_eq!(view["status"]["state"], "ok");
    bodies.push(view.to_string());
    bodies.push(app.integration(&workspace).await.to_string());
    let path = format!("/admin/v1/workspaces/{}/integrations/segment", workspace.id);
    let missing = app
        .admin(Method::PUT, "/admin/v1/workspaces/nobody/integrations/segment")
        .json(&json!({"write_key": WRITE_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    assert_eq!(app.admin(Method::DELETE, &path).send().await.unwrap().status(), 204);
    let again = app.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(again.status(), 404);
    bodies.push(again.text().await.unwrap());
    assert_eq!(app.integration(&workspace).await, json!({"configured": false}));
    bodies.push(app.metrics().await);

    for body in bodies {
        assert!(!body.contains(WRITE_KEY) && !body.contains("wk_admin_secret"), "the write key leaked: {body}");
    }
    app.stop().await;
}

/// Delivery paced to the workspace's request rate is healthy: the state reads
/// `ok` right after a delivery, `retrying` only while a failed attempt waits.
async fn a_paced_delivery_reads_ok_and_a_failed_one_retrying(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let paced = |f: figment::Figment| {
        f.merge(figment::providers::Serialized::default("delivery.workspace_max_requests_per_sec", 1))
            .merge(figment::providers::Serialized::default("delivery.backoff_base_ms", 2000))
            .merge(figment::providers::Serialized::default("delivery.backoff_max_ms", 2000))
    };
    let app = env.start_app_with(paced).await;
    let workspace = app.workspace_with_segment(WRITE_KEY).await;
    assert_eq!(app.ingest("/v1/track", &workspace, &tour_start("u-1")).await.0, 202);
    // Right after the delivery is recorded, the next request may go only a
    // second later: paced, not retrying.
    let deadline = std::time::Instant::now() + common::WAIT;
    let status = loop {
        let status = app.integration(&workspace).await["status"].clone();
        if !status["last_delivery_at"].is_null() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the delivery was not recorded: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status["state"], "ok", "{status}");
    assert_eq!((status["queued"].as_u64(), status["last_error"].is_null()), (Some(0), true), "{status}");

    env.segment.start_outage(503);
    assert_eq!(app.ingest("/v1/track", &workspace, &tour_start("u-2")).await.0, 202);
    common::eventually(common::WAIT, "the failed attempt", || async {
        app.integration(&workspace).await["status"]["state"] == "retrying"
    })
    .await;
    env.segment.end_outage();
    app.stop().await;
}

async fn health_readiness_and_metrics(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");

    let workspace = app.workspace_with_segment(WRITE_KEY).await;
    app.ingest("/v1/track", &workspace, &tour_start("u")).await;
    app.ingest("/v1/track", &workspace, &json!({"event": "nope", "userId": "u"})).await;
    env.segment.wait_for(1, std::time::Duration::from_secs(10)).await;
    common::eventually(std::time::Duration::from_secs(5), "the delivered count", || async {
        app.metric("produktly_events_delivered_total").await == 1.0
    })
    .await;
    let metrics = app.metrics().await;
    for series in [
        "produktly_events_received_total 2",
        "produktly_events_accepted_total 1",
        "produktly_events_rejected_total{reason=\"unknown_event\"} 1",
        "produktly_ingest_responses_total{status=\"202\"} 1",
        "produktly_ingest_responses_total{status=\"400\"} 1",
        "produktly_queue_depth 0",
        "produktly_events_retried_total 0",
        "produktly_segment_responses_total{status=\"200\"} 1",
        "produktly_segment_batch_size_count 1",
        "produktly_delivery_latency_seconds_count 1",
        "produktly_store_latency_seconds_count{operation=\"enqueue\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    app.stop().await;
}

on_both_backends!(
    a_paced_delivery_reads_ok_and_a_failed_one_retrying,
    every_admin_route_requires_the_token,
    workspaces_are_created_upserted_read_and_rotated,
    the_integration_shows_only_a_hint_of_the_write_key,
    health_readiness_and_metrics,
);
