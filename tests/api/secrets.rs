//! Secrets stay inside: no write key, admin token or sealing key in the logs
//! (at trace level), the metrics or any response; the sealing key rotates;
//! a rotated ingest key stops working on every instance.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use figment::providers::Serialized;
use serde_json::{Value, json};

use crate::common::process::ServiceProcess;
use crate::common::{self, ADMIN_TOKEN, Backend, Env, SECRET_KEY, TestWorkspace, WAIT, tour_start};

const WRITE_KEY: &str = "wk_LEAKCHECK_9f8e7d6c5b4a";
async fn no_secret_reaches_logs_metrics_or_responses(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let service = ServiceProcess::start(&env, &[("RUST_LOG", "trace")]).await;
    let client = service.client();
    let mut seen = String::new();
    let mut record = |text: String| seen.push_str(&text);

    let workspace = client.create_workspace().await;
    let base = format!("/admin/v1/workspaces/{}", workspace.id);
    let put = client.put_integration(&workspace, json!({"write_key": WRITE_KEY})).await;
    record(put.text().await.unwrap());
    client.ingest("/v1/track", &workspace, &tour_start("leak-user")).await;
    env.segment.refuse_messages_where(|m| m["userId"] == "refused-user");
    let (_, body) = client.ingest("/v1/track", &workspace, &tour_start("refused-user")).await;
    record(body.to_string());
    env.segment.wait_for(1, WAIT).await;
    common::eventually(WAIT, "the dead letter", || async {
        client.integration(&workspace).await["status"]["dead"] == 1
    })
    .await;
    for (method, path) in [
        (reqwest::Method::GET, format!("{base}/integrations/segment")),
        (reqwest::Method::POST, format!("{base}/integrations/segment/test")),
        (reqwest::Method::GET, format!("{base}/dead-letters")),
        (reqwest::Method::POST, format!("{base}/ingest-key/rotate")),
        (reqwest::Method::GET, base.clone()),
        (reqwest::Method::PUT, format!("{base}/integrations/segment")),
    ] {
        let response = client.admin(method, &path).json(&json!({"region": 5})).send().await.unwrap();
        record(format!("{:?}", response.headers()));
        record(response.text().await.unwrap());
    }
    let unauthorized = client.http.get(client.url(&base)).bearer_auth("wrong").send().await.unwrap();
    record(unauthorized.text().await.unwrap());
    record(client.metrics().await);
    record(client.http.get(client.url("/readyz")).send().await.unwrap().text().await.unwrap());

    let log = service.log.clone();
    assert!(service.terminate(Duration::from_secs(10)).await.success());
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.lines().count() > 100, "trace logging was on");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
    for secret in [WRITE_KEY, "LEAKCHECK", basic.as_str(), ADMIN_TOKEN, SECRET_KEY] {
        assert!(!log.contains(secret), "{secret} is in the log");
        assert!(!seen.contains(secret), "{secret} is in a response or the metrics");
    }
    // The key does reach Segment, where it belongs.
    assert!(env.segment.accepted().iter().all(|r| r.write_key == WRITE_KEY));
}

/// Sealed write keys survive a rotation of the sealing key: the service
/// opens them with the previous key, and `reseal` re-seals them all.
async fn the_sealing_key_can_be_rotated(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let new_key = "bmV3LXNlYWxpbmcta2V5LWZvci1yb3RhdGlvbi0wMDE=";
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment(WRITE_KEY).await;
    app.stop().await;

    // Without the old key the sealed write key does not open: nothing is sent.
    env.segment.start_outage(500);
    let with_new_key_only = |previous: &'static str| {
        move |f: figment::Figment| {
            f.merge(Serialized::default("secret_key", new_key))
                .merge(Serialized::default("previous_secret_keys", previous))
        }
    };
    let app = env.start_app_with(with_new_key_only("")).await;
    app.ingest("/v1/track", &workspace, &tour_start("before-reseal")).await;
    common::eventually(WAIT, "a failed round", || async {
        let status = app.integration(&workspace).await["status"].clone();
        status["last_error"]["message"].as_str().is_some_and(|m| m.contains("not configured"))
    })
    .await;
    assert_eq!(env.segment.request_count().await, 0);
    app.stop().await;
    env.segment.end_outage();

    let output = Command::new(env!("CARGO_BIN_EXE_produktly-segment"))
        .arg("reseal")
        .env("DATABASE_URL", &env.db.url)
        .env("PRODUKTLY_DATA_DIR", env.db.dir.path())
        .env("PRODUKTLY_ADMIN_TOKENS", ADMIN_TOKEN)
        .env("PRODUKTLY_SECRET_KEY", new_key)
        .env("PRODUKTLY_PREVIOUS_SECRET_KEYS", SECRET_KEY)
        .env("PRODUKTLY_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{log}{}", String::from_utf8_lossy(&output.stderr));
    assert!(log.contains("\"resealed\":1"), "{log}");

    let app = env.start_app_with(with_new_key_only("")).await;
    let received = env.segment.wait_for(1, WAIT).await;
    assert_eq!(received[0].message["userId"], "before-reseal");
    assert_eq!(received[0].write_key, WRITE_KEY);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ingest_key_stops_working_on_every_instance() {
    let Some(env) = Env::new(Backend::Postgres).await else { return };
    let first = env.start_app().await;
    let second = env.start_app().await;
    let workspace = first.workspace_with_segment(WRITE_KEY).await;
    assert_eq!(second.ingest("/v1/track", &workspace, &tour_start("u")).await.0, 202, "the key is cached");
    let rotated: Value = common::json_answer(
        first.admin(reqwest::Method::POST, &format!("/admin/v1/workspaces/{}/ingest-key/rotate", workspace.id)),
    )
    .await;
    let rotated_at = Instant::now();
    assert_eq!(first.ingest("/v1/track", &workspace, &tour_start("u")).await.0, 401, "at once where rotated");
    common::eventually(Duration::from_secs(5), "the old key refused on the other instance", || async {
        second.ingest("/v1/track", &workspace, &tour_start("u")).await.0 == 401
    })
    .await;
    assert!(rotated_at.elapsed() < Duration::from_secs(3), "within the key cache's lifetime");
    let new = TestWorkspace { id: workspace.id.clone(), ingest_key: rotated["ingest_key"].as_str().unwrap().into() };
    assert_eq!(second.ingest("/v1/track", &new, &tour_start("u")).await.0, 202);
    first.stop().await;
    second.stop().await;
}

on_both_backends!(no_secret_reaches_logs_metrics_or_responses, the_sealing_key_can_be_rotated);
