//! Public ingest under hostile input: rate limits, browser origins, client
//! addresses, thousands of malformed requests, and property tests of body
//! decoding and validation over the running server.

use std::io::Write;

use figment::providers::Serialized;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::common::{self, Backend, Env, TestApp, TestWorkspace, WAIT, tour_start};

async fn post_track(app: &TestApp, key: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.http.post(app.url("/v1/track")).header("x-produktly-key", key).json(&tour_start("u"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn rate_limits_answer_429_with_retry_after(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env
        .start_app_with(|f| {
            f.merge(Serialized::default("ingest.ip_requests_per_sec", 5))
                .merge(Serialized::default("admin_requests_per_sec", 5))
        })
        .await;
    let workspace = app.workspace_with_segment("wk_limited").await;
    // A burst of twice the rate passes; the next request is refused.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(post_track(&app, &workspace.ingest_key, &[]).await.status().as_u16());
    }
    assert!(statuses.iter().filter(|s| **s == 202).count() >= 8, "{statuses:?}");
    let refused = post_track(&app, &workspace.ingest_key, &[]).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "rate_limited");

    let mut admin_statuses = Vec::new();
    for _ in 0..15 {
        let path = format!("/admin/v1/workspaces/{}", workspace.id);
        admin_statuses.push(app.admin(reqwest::Method::GET, &path).send().await.unwrap().status().as_u16());
    }
    assert!(admin_statuses.contains(&429), "the admin API is limited separately: {admin_statuses:?}");
    app.stop().await;

    // The per-key limit holds whatever the address.
    let app = env.start_app_with(|f| f.merge(Serialized::default("ingest.key_requests_per_sec", 2))).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(post_track(&app, &workspace.ingest_key, &[]).await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    app.stop().await;
}

async fn browser_origins_are_checked_per_workspace(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app().await;
    let created: Value = common::json_answer(
        app.admin(reqwest::Method::POST, "/admin/v1/workspaces")
            .json(&json!({"name": "Acme", "allowed_origins": ["https://app.acme.com", "https://ACME.com:8443/", "http://127.0.0.1:80"]})),
    )
    .await;
    assert_eq!(
        created["allowed_origins"],
        json!(["https://app.acme.com", "https://acme.com:8443", "http://127.0.0.1"]),
        "origins are kept as browsers send them"
    );
    let workspace = TestWorkspace {
        id: created["id"].as_str().unwrap().into(),
        ingest_key: created["ingest_key"].as_str().unwrap().into(),
    };
    app.put_integration(&workspace, json!({"write_key": "wk_origins"})).await;

    let allowed = post_track(&app, &workspace.ingest_key, &[("origin", "https://app.acme.com")]).await;
    assert_eq!(allowed.status(), 202);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.acme.com");
    let refused = post_track(&app, &workspace.ingest_key, &[("origin", "https://evil.example")]).await;
    assert_eq!(refused.status(), 403);
    // The page can read why: it stops instead of retrying.
    assert_eq!(refused.headers()["access-control-allow-origin"], "https://evil.example");
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "origin_not_allowed");
    let server_side = post_track(&app, &workspace.ingest_key, &[]).await;
    assert_eq!(server_side.status(), 202, "no Origin: not a browser");

    let preflight = |query: String, origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url(&format!("/v1/batch{query}")))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let keyed = format!("?key={}", workspace.ingest_key);
    assert_eq!(preflight(keyed.clone(), "https://app.acme.com").await.unwrap().status(), 204);
    assert_eq!(preflight(keyed, "https://evil.example").await.unwrap().status(), 403);
    assert_eq!(preflight(String::new(), "https://evil.example").await.unwrap().status(), 204, "no key to check");

    let bad = app
        .admin(reqwest::Method::PUT, &format!("/admin/v1/workspaces/{}", workspace.id))
        .json(&json!({"name": "Acme", "allowed_origins": ["https://app.acme.com/path"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let open = app
        .admin(reqwest::Method::PUT, &format!("/admin/v1/workspaces/{}", workspace.id))
        .json(&json!({"name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(open.json::<Value>().await.unwrap()["allowed_origins"], Value::Null);
    let now_open = post_track(&app, &workspace.ingest_key, &[("origin", "https://evil.example")]).await;
    assert_eq!(now_open.status(), 202, "the change applies at once");
    app.stop().await;
}

async fn client_addresses_follow_the_proxy_and_ip_policy(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let cases = [
        ("", "forward", Some("127.0.0.1"), "an untrusted peer's X-Forwarded-For is ignored"),
        ("127.0.0.1", "forward", Some("203.0.113.77"), "a trusted proxy's is believed"),
        ("127.0.0.0/8", "anonymize", Some("203.0.113.0"), "the last octet zeroed"),
        ("127.0.0.1", "omit", None, "no address"),
    ];
    for (i, (proxies, policy, expected, why)) in cases.into_iter().enumerate() {
        let app = env
            .start_app_with(|f| {
                f.merge(Serialized::default("ingest.trusted_proxies", proxies))
                    .merge(Serialized::default("ingest.ip_policy", policy))
            })
            .await;
        let workspace = app.workspace_with_segment("wk_ips").await;
        let user = format!("ip-user-{i}");
        app.http
            .post(app.url("/v1/track"))
            .header("x-produktly-key", &workspace.ingest_key)
            .header("x-forwarded-for", "198.51.100.1, 203.0.113.77")
            .json(&tour_start(&user))
            .send()
            .await
            .unwrap();
        common::eventually(WAIT, why, || async {
            env.segment.accepted().iter().any(|r| r.message["userId"] == user.as_str())
        })
        .await;
        let message = env.segment.accepted().into_iter().find(|r| r.message["userId"] == user.as_str()).unwrap();
        assert_eq!(message.message["context"]["ip"].as_str(), expected, "{why}");
        app.stop().await;
    }
}

/// 10,000 random and malformed requests: no 5xx, the server still answers,
/// and events stored before are delivered intact.
async fn thousands_of_malformed_requests_break_nothing(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_hostile").await;
    env.segment.start_outage(503);
    let before: Vec<Value> = (0..20)
        .map(|i| {
            json!({"event": "tour_step", "userId": format!("kept-{i}"), "messageId": format!("kept-{i}"),
                   "properties": {"tour_id": "t", "step_id": "s", "step_index": i}})
        })
        .collect();
    let (status, _) = app.ingest("/v1/batch", &workspace, &json!({"batch": before})).await;
    assert_eq!(status, 202);

    let mut rng = StdRng::seed_from_u64(0x5eed);
    let requests: Vec<Malformed> = (0..10_000).map(|_| Malformed::random(&mut rng, &workspace.ingest_key)).collect();
    let mut statuses = std::collections::BTreeMap::new();
    for chunk in requests.chunks(50) {
        let mut sending = tokio::task::JoinSet::new();
        for request in chunk {
            sending.spawn(request.clone().send(app.http.clone(), app.base.clone()));
        }
        while let Some(status) = sending.join_next().await {
            *statuses.entry(status.unwrap()).or_insert(0) += 1;
        }
    }
    let server_errors: Vec<_> = statuses.iter().filter(|(status, _)| **status >= 500 || **status == 0).collect();
    assert!(server_errors.is_empty(), "5xx answers or no answer: {statuses:?}");
    assert!(statuses.len() >= 6, "the requests met many different answers: {statuses:?}");
    eprintln!("answers to 10,000 malformed requests: {statuses:?}");
    assert!(app.http.get(app.url("/healthz")).send().await.unwrap().status().is_success());

    env.segment.end_outage();
    common::eventually(WAIT, "the events stored before", || async {
        let received = env.segment.accepted();
        (0..20).all(|i| received.iter().any(|r| r.message["messageId"] == format!("kept-{i}")))
    })
    .await;
    for i in 0..20 {
        let message =
            env.segment.accepted().into_iter().find(|r| r.message["messageId"] == format!("kept-{i}")).unwrap().message;
        assert_eq!(message["userId"], format!("kept-{i}"));
        assert_eq!(message["event"], "tour_step");
        assert_eq!(message["properties"], json!({"tour_id": "t", "step_id": "s", "step_index": i}));
    }
    assert!(env.segment.violations().is_empty(), "{:?}", env.segment.violations());
    app.stop().await;
}

/// One hostile request.
#[derive(Clone)]
struct Malformed {
    method: reqwest::Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Malformed {
    fn random(rng: &mut StdRng, key: &str) -> Malformed {
        let paths = ["/v1/track", "/v1/batch", "/v1/identify", "/v1/nope", "/admin/v1/workspaces", "/"];
        let methods = [reqwest::Method::POST, reqwest::Method::POST, reqwest::Method::GET, reqwest::Method::PUT];
        let types = ["application/json", "text/plain;charset=UTF-8", "application/xml", "", "multipart/form-data"];
        let mut path = paths[rng.random_range(0..paths.len())].to_owned();
        let mut headers = vec![];
        match rng.random_range(0..4) {
            0 => headers.push(("x-produktly-key", key.to_owned())),
            1 => path.push_str(&format!("?key={key}")),
            2 => headers.push(("x-produktly-key", "pk_".to_owned() + &"z".repeat(rng.random_range(0..300)))),
            _ => {}
        }
        let content_type = types[rng.random_range(0..types.len())];
        if !content_type.is_empty() {
            headers.push(("content-type", content_type.to_owned()));
        }
        let mut body = match rng.random_range(0..9) {
            0 => (0..rng.random_range(0..2000)).map(|_| rng.random()).collect(),
            1 => format!("{{\"batch\": [{}]}}", "[".repeat(rng.random_range(1..5000))).into_bytes(),
            2 => json!({"event": "tour_start", "userId": "x".repeat(rng.random_range(0..40_000)),
                        "properties": {"tour_id": "t"}})
            .to_string()
            .into_bytes(),
            3 => json!({"event": rng.random::<u32>(), "userId": [], "properties": "nope", "context": 5})
                .to_string()
                .into_bytes(),
            4 => json!({"batch": (0..rng.random_range(0..700)).map(|i| json!({"event": "tour_start", "anonymousId": i,
                 "properties": {"tour_id": i, "unknown": {"deep": [i]}}, "extra": true})).collect::<Vec<_>>()})
            .to_string()
            .into_bytes(),
            5 => b"\x1f\x8b\x08\x00garbage".to_vec(),
            6 => br#"{"event":"tour_start","userId":"u","properties":{"tour_id":"a","tour_id":"b"}}"#.to_vec(),
            7 => json!({"userId": "\u{0000}\u{ffff}", "anonymousId": "\u{202e}", "sentAt": "not a date"})
                .to_string()
                .into_bytes(),
            _ => json!({"event": "nps_submitted", "userId": "u",
                        "properties": {"nps_widget_id": "n", "score": rng.random_range(-5..20)}})
            .to_string()
            .into_bytes(),
        };
        if rng.random_bool(0.15) {
            headers.push(("content-encoding", "gzip".to_owned()));
            if rng.random_bool(0.5) {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(&body).unwrap();
                body = encoder.finish().unwrap();
            }
        }
        let method = methods[rng.random_range(0..methods.len())].clone();
        Malformed { method, path, headers, body }
    }

    /// The status of the answer; 0 when there was none.
    async fn send(self, http: reqwest::Client, base: String) -> u16 {
        let mut request = http.request(self.method, format!("{base}{}", self.path)).body(self.body);
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        request.send().await.map_or(0, |response| response.status().as_u16())
    }
}

/// Arbitrary JSON, up to a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![Just("tour_start"), Just("tour_step"), Just("nps_submitted"), Just("userId")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("event".to_owned()),
                    Just("userId".to_owned()),
                    Just("anonymousId".to_owned()),
                    Just("properties".to_owned()),
                    Just("context".to_owned()),
                    Just("timestamp".to_owned()),
                    Just("batch".to_owned()),
                    Just("tour_id".to_owned()),
                    ".{0,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Property tests through the running server: arbitrary bytes and arbitrary
/// JSON on every ingest endpoint always get a 2xx or 4xx, never a 5xx.
#[test]
fn arbitrary_bodies_never_get_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some(env) = runtime.block_on(Env::new(Backend::Sqlite)) else { return };
    let app = runtime.block_on(env.start_app());
    let workspace = runtime.block_on(app.workspace_with_segment("wk_properties"));
    let post = |path: &str, body: Vec<u8>| {
        runtime.block_on(async {
            app.http
                .post(app.url(path))
                .header("x-produktly-key", &workspace.ingest_key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let mut runner = TestRunner::new(Config { cases: 400, failure_persistence: None, ..Config::default() });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            for path in ["/v1/track", "/v1/batch", "/v1/identify"] {
                let status = post(path, bytes.clone());
                prop_assert!((200..500).contains(&status), "{path} answered {status}");
            }
            Ok(())
        })
        .unwrap();
    runner
        .run(&any_json(), |value| {
            let batch = json!({"batch": [value.clone(), value.clone()]});
            for (path, body) in [("/v1/track", &value), ("/v1/batch", &batch), ("/v1/identify", &value)] {
                let status = post(path, body.to_string().into_bytes());
                prop_assert!((200..500).contains(&status), "{path} answered {status} to {body}");
            }
            Ok(())
        })
        .unwrap();
    runtime.block_on(app.stop());
}

on_both_backends!(
    rate_limits_answer_429_with_retry_after,
    browser_origins_are_checked_per_workspace,
    client_addresses_follow_the_proxy_and_ip_policy,
    thousands_of_malformed_requests_break_nothing,
);
