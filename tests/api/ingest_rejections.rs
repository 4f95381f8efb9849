//! Every rejection of the ingest contract, over real HTTP: status, error code,
//! message, and nothing stored.

use std::io::Write;
use std::time::Duration;

use figment::providers::Serialized;
use serde_json::{Value, json};

use crate::common::{Backend, Env, TestApp, TestWorkspace, tour_start};

/// How one case sends its request.
enum Send {
    /// A JSON body to a path, with the workspace's key in the header.
    Json(&'static str, Value),
    /// Raw bytes with the given headers; `key` says whether to send the workspace key.
    Raw {
        path: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: Vec<u8>,
        key: bool,
    },
    /// A JSON body with this ingest key instead of the workspace's.
    WithKey(Option<&'static str>, Value),
    Method(reqwest::Method, &'static str),
}

struct Case {
    name: &'static str,
    send: Send,
    status: u16,
    code: &'static str,
    message: &'static str,
    field: Option<&'static str>,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A value nested `levels` objects deep.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({"n": inner}))
}

fn many_properties(count: usize) -> Value {
    let mut properties: serde_json::Map<String, Value> = (0..count).map(|i| (format!("p{i}"), json!(i))).collect();
    properties.insert("tour_id".into(), json!("t"));
    Value::Object(properties)
}

fn json_headers() -> Vec<(&'static str, &'static str)> {
    vec![("content-type", "application/json")]
}

fn cases() -> Vec<Case> {
    let event = |value: Value| Send::Json("/v1/track", value);
    let case = |name, send, status, code, message, field| Case { name, send, status, code, message, field };
    vec![
        case("no key", Send::WithKey(None, tour_start("u")), 401, "missing_ingest_key", "X-Produktly-Key", None),
        case(
            "unknown key",
            Send::WithKey(Some("pk_nope"), tour_start("u")),
            401,
            "invalid_ingest_key",
            "not valid",
            None,
        ),
        case(
            "form body",
            Send::Raw {
                path: "/v1/track",
                headers: vec![("content-type", "application/x-www-form-urlencoded")],
                body: b"a=b".to_vec(),
                key: true,
            },
            415,
            "unsupported_media_type",
            "application/json or text/plain",
            None,
        ),
        case(
            "no content type",
            Send::Raw { path: "/v1/track", headers: vec![], body: b"{}".to_vec(), key: true },
            415,
            "unsupported_media_type",
            "Content-Type",
            None,
        ),
        case(
            "brotli",
            Send::Raw {
                path: "/v1/track",
                headers: vec![("content-type", "application/json"), ("content-encoding", "br")],
                body: b"{}".to_vec(),
                key: true,
            },
            415,
            "unsupported_encoding",
            "gzip",
            None,
        ),
        case(
            "broken gzip",
            Send::Raw {
                path: "/v1/track",
                headers: vec![("content-type", "application/json"), ("content-encoding", "gzip")],
                body: b"definitely not gzip".to_vec(),
                key: true,
            },
            400,
            "invalid_gzip",
            "gzip",
            None,
        ),
        case(
            "body over the limit",
            Send::Raw { path: "/v1/batch", headers: json_headers(), body: vec![b' '; 600_000], key: true },
            413,
            "body_too_large",
            "524288 bytes",
            None,
        ),
        case(
            "gzip bomb",
            Send::Raw {
                path: "/v1/batch",
                headers: vec![("content-type", "application/json"), ("content-encoding", "gzip")],
                body: gzip(&vec![b' '; 20_000_000]),
                key: true,
            },
            413,
            "body_too_large",
            "1048576 bytes",
            None,
        ),
        case(
            "not JSON",
            Send::Raw { path: "/v1/track", headers: json_headers(), body: b"{\"event\":".to_vec(), key: true },
            400,
            "invalid_json",
            "not valid JSON",
            None,
        ),
        case(
            "invalid UTF-8",
            Send::Raw { path: "/v1/track", headers: json_headers(), body: b"{\"event\":\"\xff\"}".to_vec(), key: true },
            400,
            "invalid_json",
            "not valid JSON",
            None,
        ),
        case("event not an object", event(json!([1])), 400, "invalid_event", "JSON object", None),
        case("batch not an object", Send::Json("/v1/batch", json!([])), 400, "invalid_body", "`batch` array", None),
        case("batch not an array", Send::Json("/v1/batch", json!({"batch": {}})), 400, "invalid_body", "array", None),
        case("empty batch", Send::Json("/v1/batch", json!({"batch": []})), 400, "invalid_body", "no events", None),
        case(
            "too many events",
            Send::Json("/v1/batch", json!({"batch": vec![tour_start("u"); 501]})),
            400,
            "too_many_events",
            "at most 500",
            None,
        ),
        case(
            "batch sentAt",
            Send::Json("/v1/batch", json!({"batch": [tour_start("u")], "sentAt": "later"})),
            400,
            "invalid_field",
            "ISO-8601",
            Some("sentAt"),
        ),
        case("no event name", event(json!({"userId": "u"})), 400, "missing_field", "is missing", Some("event")),
        case(
            "event name not a string",
            event(json!({"event": 5, "userId": "u"})),
            400,
            "invalid_field",
            "string",
            Some("event"),
        ),
        case(
            "unknown event",
            event(json!({"event": "tour_started", "userId": "u"})),
            400,
            "unknown_event",
            "\"tour_started\" is not an event of the catalog",
            Some("event"),
        ),
        case(
            "missing property",
            event(json!({"event": "tour_step", "userId": "u", "properties": {"tour_id": "t", "step_index": 1}})),
            400,
            "missing_property",
            "`tour_step` requires the property `step_id`",
            Some("properties.step_id"),
        ),
        case(
            "property of the wrong type",
            event(json!({"event": "nps_submitted", "userId": "u", "properties": {"nps_widget_id": "n", "score": 11}})),
            400,
            "invalid_property",
            "`score` of `nps_submitted` must be an integer from 0 to 10",
            Some("properties.score"),
        ),
        case(
            "link not a URL",
            event(
                json!({"event": "announcement_action_clicked", "userId": "u", "properties": {"announcement_id": "a", "link": "/x"}}),
            ),
            400,
            "invalid_property",
            "absolute http(s) URL",
            Some("properties.link"),
        ),
        case(
            "no identity",
            event(json!({"event": "tour_start", "properties": {"tour_id": "t"}})),
            400,
            "missing_identity",
            "userId or an anonymousId",
            None,
        ),
        case(
            "message over 32 KB",
            event(json!({"event": "tour_start", "userId": "u", "properties": {
                "tour_id": "t", "a": "x".repeat(8000), "b": "x".repeat(8000), "c": "x".repeat(8000),
                "d": "x".repeat(8000), "e": "x".repeat(8000)}})),
            400,
            "message_too_large",
            "the limit is 32000",
            None,
        ),
        case(
            "a string over the limit",
            event(
                json!({"event": "tour_start", "userId": "u", "properties": {"tour_id": "t", "notes": "x".repeat(8193)}}),
            ),
            400,
            "value_too_long",
            "longer than 8192 bytes",
            Some("notes"),
        ),
        case(
            "a key over the limit",
            event(json!({"event": "tour_start", "userId": "u", "properties": {"tour_id": "t", "k".repeat(8193): 1}})),
            400,
            "value_too_long",
            "a key is longer than 8192 bytes",
            Some(concat!("kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "…")),
        ),
        case(
            "nested too deep",
            event(json!({"event": "tour_start", "userId": "u", "properties": {"tour_id": "t", "deep": nested(20)}})),
            400,
            "too_deep",
            "deeper than 16 levels",
            Some("n"),
        ),
        case(
            "too many properties",
            event(json!({"event": "tour_start", "userId": "u", "properties": many_properties(201)})),
            400,
            "too_many_keys",
            "more than 200 keys",
            Some("properties"),
        ),
        case(
            "a duplicate property",
            Send::Raw {
                path: "/v1/track",
                headers: json_headers(),
                body: br#"{"event":"tour_start","userId":"u","properties":{"tour_id":"t","tour_id":"u"}}"#.to_vec(),
                key: true,
            },
            400,
            "duplicate_key",
            "appears twice",
            Some("tour_id"),
        ),
        case(
            "a deep body for a batch",
            Send::Raw { path: "/v1/batch", headers: json_headers(), body: "[".repeat(100_000).into_bytes(), key: true },
            400,
            "invalid_json",
            "not valid JSON",
            None,
        ),
        case(
            "bad timestamp",
            event(
                json!({"event": "tour_start", "userId": "u", "timestamp": 1700000000, "properties": {"tour_id": "t"}}),
            ),
            400,
            "invalid_field",
            "ISO-8601",
            Some("timestamp"),
        ),
        case(
            "messageId too long",
            event(
                json!({"event": "tour_start", "userId": "u", "messageId": "m".repeat(100), "properties": {"tour_id": "t"}}),
            ),
            400,
            "invalid_field",
            "at most 99 characters",
            Some("messageId"),
        ),
        case(
            "context not an object",
            event(json!({"event": "tour_start", "userId": "u", "context": "x", "properties": {"tour_id": "t"}})),
            400,
            "invalid_field",
            "object",
            Some("context"),
        ),
        case(
            "no valid event in the batch",
            Send::Json("/v1/batch", json!({"batch": [{"event": "nope", "userId": "u"}, {"event": "tour_start"}]})),
            400,
            "no_valid_events",
            "none of the 2 events",
            None,
        ),
        case(
            "identify without anonymousId",
            Send::Json("/v1/identify", json!({"userId": "u"})),
            400,
            "missing_identity",
            "both userId and anonymousId",
            None,
        ),
        case(
            "GET on ingest",
            Send::Method(reqwest::Method::GET, "/v1/track"),
            405,
            "method_not_allowed",
            "not allowed",
            None,
        ),
        case(
            "unknown path",
            Send::Method(reqwest::Method::POST, "/v1/page"),
            404,
            "not_found",
            "no such endpoint",
            None,
        ),
    ]
}

/// The customer's site the requests come from, as a browser's would.
const PAGE_ORIGIN: &str = "https://app.customer.example";

/// Every answer a page gets, errors too, carries what lets it read the answer.
fn assert_readable_by_the_page(response: &reqwest::Response, what: &str) {
    let headers = response.headers();
    assert_eq!(headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some(PAGE_ORIGIN), "{what}");
    assert_eq!(
        headers.get("access-control-expose-headers").map(|v| v.to_str().unwrap()),
        Some("Retry-After"),
        "{what}"
    );
}

async fn send(app: &TestApp, workspace: &TestWorkspace, send: Send) -> reqwest::Response {
    let key = workspace.ingest_key.as_str();
    let request = match send {
        Send::Json(path, body) => app.http.post(app.url(path)).header("x-produktly-key", key).json(&body),
        Send::Raw { path, headers, body, key: with_key } => {
            let mut request = app.http.post(app.url(path)).body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            if with_key { request.header("x-produktly-key", key) } else { request }
        }
        Send::WithKey(other, body) => {
            let request = app.http.post(app.url("/v1/track")).json(&body);
            match other {
                Some(other) => request.header("x-produktly-key", other),
                None => request,
            }
        }
        Send::Method(method, path) => app.http.request(method, app.url(path)).header("x-produktly-key", key),
    };
    request.header("origin", PAGE_ORIGIN).send().await.unwrap()
}

async fn every_rejection_has_its_status_code_and_message(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_rejections").await;
    for case in cases() {
        let response = send(&app, &workspace, case.send).await;
        assert_readable_by_the_page(&response, case.name);
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", case.name));
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(case.message), "{}: {message:?} lacks {:?}", case.name, case.message);
        assert_eq!(body["error"]["field"].as_str(), case.field, "{}: {body}", case.name);
        if case.code == "no_valid_events" {
            let rejected = body["rejected"].as_array().unwrap();
            assert_eq!(rejected[0]["index"], 0);
            assert_eq!(rejected[0]["code"], "unknown_event");
            assert_eq!(rejected[1]["code"], "missing_identity");
        }
    }

    // Nothing of the above was stored: the one valid event is all Segment gets.
    let (status, _) = app.ingest("/v1/track", &workspace, &tour_start("the-only-one")).await;
    assert_eq!(status, 202);
    let received = env.segment.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.segment.accepted().len(), 1);
    assert_eq!(received[0].message["userId"], "the-only-one");
    app.stop().await;
}

async fn events_of_a_workspace_without_segment_are_discarded(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app().await;
    let workspace = app.create_workspace().await;
    let (status, body) =
        app.ingest("/v1/batch", &workspace, &json!({"batch": [tour_start("a"), tour_start("b")]})).await;
    assert_eq!(status, 202);
    assert_eq!(body, json!({"accepted": 0, "discarded": 2, "reason": "segment_not_configured"}));
    let (status, body) = app.ingest("/v1/identify", &workspace, &json!({"userId": "u", "anonymousId": "a"})).await;
    assert_eq!((status, body["discarded"].clone()), (202, json!(1)));
    assert_eq!(app.integration(&workspace).await["configured"], false);

    // Configuring Segment afterwards delivers nothing from before: nothing was stored.
    app.put_integration(&workspace, json!({"write_key": "wk_later"})).await;
    let status = app.integration(&workspace).await["status"].clone();
    assert_eq!(status["queued"], 0);
    assert_eq!(app.metric("produktly_events_discarded_total{reason=\"segment_not_configured\"}").await, 2.0);
    app.stop().await;
}

async fn a_full_queue_answers_503_with_retry_after(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env.start_app_with(|f| f.merge(Serialized::default("ingest.max_queue_depth", 0))).await;
    let workspace = app.workspace_with_segment("wk_full").await;
    let response = send(&app, &workspace, Send::Json("/v1/track", tour_start("u"))).await;
    assert_eq!(response.status(), 503);
    assert_readable_by_the_page(&response, "503");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full");
    app.stop().await;
}

/// The answers of the body reader and of the rate limit, as a page sees them.
async fn a_slow_body_and_the_rate_limit_are_readable_by_the_page(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let app = env
        .start_app_with(|f| {
            f.merge(Serialized::default("ingest.body_timeout_ms", 300))
                .merge(Serialized::default("ingest.key_requests_per_sec", 1))
        })
        .await;
    let workspace = app.workspace_with_segment("wk_readable").await;

    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /v1/track HTTP/1.1\r\nHost: test\r\nOrigin: {PAGE_ORIGIN}\r\nX-Produktly-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event\"",
        workspace.ingest_key
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut stream, &mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 408 "), "{answer}");
    assert!(answer.contains(&format!("access-control-allow-origin: {PAGE_ORIGIN}")), "{answer}");
    assert!(answer.contains("access-control-expose-headers: retry-after"), "{answer}");

    let mut limited = None;
    for _ in 0..10 {
        let response = send(&app, &workspace, Send::Json("/v1/track", tour_start("u"))).await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the key's rate limit answered 429");
    assert_readable_by_the_page(&limited, "429");
    assert!(limited.headers().contains_key("retry-after"));
    app.stop().await;
}

on_both_backends!(
    every_rejection_has_its_status_code_and_message,
    events_of_a_workspace_without_segment_are_discarded,
    a_full_queue_answers_503_with_retry_after,
    a_slow_body_and_the_rate_limit_are_readable_by_the_page,
);
