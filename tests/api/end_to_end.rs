//! Guidance events in over real HTTP, Segment `track` calls out at a strict
//! mock of Segment, on both backends.

use std::io::Write;

use chrono::{DateTime, Utc};
use produktly_segment::domain::catalog::{self, PropertyType};
use serde_json::{Map, Value, json};

use crate::common::{self, Backend, Env, WAIT, tour_start};

const WRITE_KEY: &str = "wk_end_to_end_3f9a";
/// A value of the property's type, as the browser sends it.
fn sample(kind: PropertyType) -> Value {
    match kind {
        PropertyType::Id => json!(1234),
        PropertyType::Text => json!("Welcome tour"),
        PropertyType::Count => json!(3),
        PropertyType::Score => json!(9),
        PropertyType::Url => json!("https://docs.example.com/start"),
    }
}

/// The same value as Segment should receive it (ids become strings).
fn forwarded(kind: PropertyType) -> Value {
    match kind {
        PropertyType::Id => json!("1234"),
        other => sample(other),
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn every_catalog_event_reaches_segment_as_a_track_call(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment(WRITE_KEY).await;
    let started = Utc::now();
    // The browser's clock runs an hour ahead; each event happened 2 s before it was sent.
    let browser_now = started + chrono::TimeDelta::hours(1);
    let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    for (i, event) in catalog::EVENTS.iter().enumerate() {
        let properties: Map<String, Value> =
            event.properties().map(|(p, _)| (p.name.to_owned(), sample(p.kind))).collect();
        let body = json!({
            "event": event.name,
            "messageId": format!("msg-{}", event.name),
            "userId": format!("user-{i}"),
            "anonymousId": format!("anon-{i}"),
            "timestamp": iso(browser_now - chrono::TimeDelta::seconds(2)),
            "sentAt": iso(browser_now),
            "properties": properties,
            "context": {
                "page": {"url": "https://app.example.com/settings", "path": "/settings", "title": "Settings", "referrer": ""},
                "locale": "fi-FI"
            }
        });
        let response = app
            .http
            .post(app.url("/v1/track"))
            .header("x-produktly-key", &workspace.ingest_key)
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", event.name);
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"accepted": 1}));
    }

    let received = env.segment.wait_for(catalog::EVENTS.len(), WAIT).await;
    assert_eq!(env.segment.violations(), Vec::<String>::new());
    assert_eq!(received.len(), catalog::EVENTS.len());
    for (i, event) in catalog::EVENTS.iter().enumerate() {
        let got = received
            .iter()
            .find(|r| r.message["event"] == event.name)
            .unwrap_or_else(|| panic!("{} was not delivered", event.name));
        assert_eq!(got.write_key, WRITE_KEY);
        let message = &got.message;
        assert_eq!(message["type"], "track");
        assert_eq!(message["messageId"], format!("msg-{}", event.name));
        assert_eq!(message["userId"], format!("user-{i}"));
        assert_eq!(message["anonymousId"], format!("anon-{i}"));
        let expected: Map<String, Value> =
            event.properties().map(|(p, _)| (p.name.to_owned(), forwarded(p.kind))).collect();
        assert_eq!(message["properties"], Value::Object(expected), "{}", event.name);
        // The timestamp is on the server's clock: 2 s before arrival, not an hour ahead.
        let timestamp = at(message["timestamp"].as_str().unwrap());
        assert!(timestamp >= started - chrono::TimeDelta::seconds(3), "{timestamp} vs {started}");
        assert!(timestamp <= Utc::now() - chrono::TimeDelta::seconds(1), "{timestamp}");
        assert!(at(&got.sent_at) >= timestamp);
        let context = &message["context"];
        assert_eq!(context["integration"], json!({"name": "produktly", "version": "1.0.0"}));
        assert_eq!(context["library"], json!({"name": "produktly-segment", "version": env!("CARGO_PKG_VERSION")}));
        assert_eq!(context["userAgent"], "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0");
        assert_eq!(context["ip"], "127.0.0.1");
        assert_eq!(context["locale"], "fi-FI");
        assert_eq!(context["page"]["path"], "/settings");
    }
    common::eventually(WAIT, "the queue to drain", || async {
        app.metric("produktly_events_delivered_total").await == catalog::EVENTS.len() as f64
    })
    .await;
    app.stop().await;
}

async fn a_batch_delivers_its_valid_events_and_reports_the_invalid_ones(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment(WRITE_KEY).await;
    let mut events: Vec<Value> = (0..100).map(|i| tour_start(&format!("u{i}"))).collect();
    events[7] = json!({"event": "tour_start", "userId": "u7"});
    events[42] = json!({"event": "no_such_event", "userId": "u42"});
    let (status, body) = app.ingest("/v1/batch", &workspace, &json!({"batch": events})).await;
    assert_eq!(status, 202);
    assert_eq!(body["accepted"], 98);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 7);
    assert_eq!(rejected[0]["code"], "missing_property");
    assert_eq!(rejected[0]["field"], "properties.tour_id");
    assert_eq!(rejected[1]["index"], 42);
    assert_eq!(rejected[1]["code"], "unknown_event");

    let received = env.segment.wait_for(98, WAIT).await;
    let mut users: Vec<&str> = received.iter().map(|r| r.message["userId"].as_str().unwrap()).collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), 98);
    assert!(!users.contains(&"u7") && !users.contains(&"u42"));
    assert!(env.segment.violations().is_empty());
    app.stop().await;
}

/// What `navigator.sendBeacon` sends: `text/plain`, the key in the query
/// string; and a gzip-compressed body.
async fn beacon_and_gzip_bodies_are_accepted(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment(WRITE_KEY).await;

    let beacon = app
        .http
        .post(app.url(&format!("/v1/batch?key={}", workspace.ingest_key)))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(json!({"batch": [tour_start("beacon-user")]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), 202);

    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(tour_start("gzip-user").to_string().as_bytes()).unwrap();
    let gzipped = app
        .http
        .post(app.url("/v1/track"))
        .header("x-produktly-key", &workspace.ingest_key)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.status(), 202);

    let received = env.segment.wait_for(2, WAIT).await;
    let mut users: Vec<&str> = received.iter().map(|r| r.message["userId"].as_str().unwrap()).collect();
    users.sort_unstable();
    assert_eq!(users, ["beacon-user", "gzip-user"]);
    app.stop().await;
}

/// Browsers call ingest from customers' sites: the CORS preflight is answered.
async fn cors_preflight_is_answered(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let response = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/v1/track"))
        .header("origin", "https://app.customer.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-produktly-key")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let allowed = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_ascii_lowercase());
    assert_eq!(allowed("access-control-allow-origin").as_deref(), Some("https://app.customer.example"));
    assert!(allowed("access-control-allow-headers").unwrap().contains("x-produktly-key"));
    app.stop().await;
}

on_both_backends!(
    every_catalog_event_reaches_segment_as_a_track_call,
    a_batch_delivers_its_valid_events_and_reports_the_invalid_ones,
    beacon_and_gzip_bodies_are_accepted,
    cors_preflight_is_answered,
);
