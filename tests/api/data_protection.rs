//! Customers' data end to end: a deleted workspace leaves nothing behind, an
//! erased person is in no table and never reaches Segment, the workspace's IP
//! policy applies before an event is stored, and bad requests change nothing.
//! Checked over HTTP and in the database itself.

use std::time::Duration;

use figment::providers::Serialized;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{self, Backend, Env, TestApp, TestDb, TestWorkspace, WAIT};

/// One number from the database (`SELECT COUNT(*) …`).
async fn count(db: &TestDb, sql: &str) -> i64 {
    common::sql_column(db, sql).await[0]
}

/// The payloads queued for a workspace.
async fn payloads(db: &TestDb, workspace: &str) -> Vec<Value> {
    let sql = format!("SELECT payload FROM events WHERE workspace_id = '{workspace}' ORDER BY id");
    let texts: Vec<String> = common::sql_column(db, &sql).await;
    texts.iter().map(|text| serde_json::from_str(text).unwrap()).collect()
}

/// Rows of the workspace in every table that holds workspace data.
async fn rows_of(db: &TestDb, workspace: &str) -> Vec<(&'static str, i64)> {
    let mut rows = Vec::new();
    for (table, column) in [
        ("workspaces", "id"),
        ("integrations", "workspace_id"),
        ("events", "workspace_id"),
        ("dead_letters", "workspace_id"),
        ("identities", "workspace_id"),
    ] {
        rows.push((table, count(db, &format!("SELECT COUNT(*) FROM {table} WHERE {column} = '{workspace}'")).await));
    }
    rows
}

fn event(tour: &str, user: Option<&str>, anonymous: Option<&str>) -> Value {
    let mut event = json!({"event": "tour_start", "properties": {"tour_id": tour}});
    if let Some(user) = user {
        event["userId"] = json!(user);
    }
    if let Some(anonymous) = anonymous {
        event["anonymousId"] = json!(anonymous);
    }
    event
}

async fn track(app: &TestApp, workspace: &TestWorkspace, event: &Value) {
    let (status, answer) = app.ingest("/v1/track", workspace, event).await;
    assert_eq!(status, 202, "{answer}");
}

async fn dead_letter_count(app: &TestApp, workspace: &TestWorkspace) -> usize {
    let path = format!("/admin/v1/workspaces/{}/dead-letters", workspace.id);
    common::json_answer(app.admin(Method::GET, &path)).await["dead_letters"].as_array().unwrap().len()
}

/// Sends a `poison` event that the mock refuses, and waits for its dead letter.
async fn dead_letter_one(env: &Env, app: &TestApp, workspace: &TestWorkspace, user: Option<&str>, anonymous: &str) {
    env.segment.refuse_messages_where(|message| message["properties"]["tour_id"] == "poison");
    track(app, workspace, &event("poison", user, Some(anonymous))).await;
    common::eventually(WAIT, "the refused event's dead letter", || async {
        dead_letter_count(app, workspace).await == 1
    })
    .await;
}

async fn erase(app: &TestApp, workspace: &str, body: Value) -> (u16, Value) {
    let response = app
        .admin(Method::POST, &format!("/admin/v1/workspaces/{workspace}/erasures"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn a_deleted_workspace_leaves_nothing_and_its_key_is_refused(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let settings = |f: figment::Figment| f.merge(Serialized::default("ingest.key_cache_ttl_ms", 300));
    let app = env.start_app_with(settings).await;
    let gone = app.workspace_with_segment("wk_gone").await;
    let kept = app.workspace_with_segment("wk_kept").await;

    // Something of the workspace in every table: a dead letter, then queued
    // events (Segment is down for its key) with identity links.
    dead_letter_one(&env, &app, &gone, Some("u-gone"), "anon-gone-0").await;
    env.segment.start_key_outage("wk_gone", 503);
    for n in 0..3 {
        track(&app, &gone, &event("t", Some("u-gone"), Some(&format!("anon-gone-{n}")))).await;
    }
    track(&app, &kept, &event("t", Some("u-kept"), Some("anon-kept"))).await;
    env.segment.wait_for(1, WAIT).await;
    let before = rows_of(&env.db, &gone.id).await;
    assert!(before.iter().all(|(_, n)| *n > 0), "the workspace has rows in every table: {before:?}");

    // A second instance (PostgreSQL serves several) has the key in its cache.
    let other = match backend {
        Backend::Postgres => Some(env.start_app_with(settings).await),
        Backend::Sqlite => None,
    };
    if let Some(other) = &other {
        track(other, &gone, &event("t", None, Some("anon-gone-other"))).await;
    }

    let path = format!("/admin/v1/workspaces/{}", gone.id);
    for _ in 0..2 {
        let response = app.admin(Method::DELETE, &path).send().await.unwrap();
        assert_eq!(response.status(), 204, "deleting is idempotent");
    }
    let (status, answer) = app.ingest("/v1/track", &gone, &event("t", Some("u"), None)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("invalid_ingest_key")), "{answer}");
    if let Some(other) = &other {
        common::eventually(Duration::from_secs(5), "the other instance refuses the key", || async {
            other.ingest("/v1/track", &gone, &event("t", Some("u"), None)).await.0 == 401
        })
        .await;
    }
    // What the other instance committed before it refused the key is swept
    // by the janitor.
    common::eventually(Duration::from_secs(5), "nothing of the workspace left in any table", || async {
        rows_of(&env.db, &gone.id).await.iter().all(|(_, n)| *n == 0)
    })
    .await;
    assert_eq!(rows_of(&env.db, &kept.id).await[..2], [("workspaces", 1), ("integrations", 1)]);
    assert_eq!(app.admin(Method::GET, &path).send().await.unwrap().status(), 404);
    assert_eq!(app.metric("produktly_workspaces_deleted_total").await, 1.0);

    // The other workspace goes on as before.
    track(&app, &kept, &event("t2", Some("u-kept"), None)).await;
    env.segment.wait_for(2, WAIT).await;
    if let Some(other) = other {
        other.stop().await;
    }
    app.stop().await;
}

async fn an_erased_person_is_in_no_table_and_never_reaches_segment(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_erase").await;

    // A dead letter of the person, then their events wait (Segment is down)
    // beside another user's: under the user id, under two anonymous ids linked
    // to it, and under those anonymous ids alone.
    dead_letter_one(&env, &app, &workspace, None, "anon-erased-1").await;
    env.segment.start_key_outage("wk_erase", 503);
    let erased = [
        event("t", Some("u-erased"), Some("anon-erased-1")),
        event("t", Some("u-erased"), Some("anon-erased-2")),
        event("t", None, Some("anon-erased-1")),
        event("t", None, Some("anon-erased-2")),
        event("t", Some("u-erased"), None),
    ];
    for (n, erased_event) in erased.iter().enumerate() {
        track(&app, &workspace, erased_event).await;
        track(&app, &workspace, &event(&format!("kept-{n}"), Some("u-kept"), Some("anon-kept"))).await;
    }
    track(&app, &workspace, &event("kept-anonymously", None, Some("anon-kept"))).await;

    let (status, answer) = erase(&app, &workspace.id, json!({"user_id": "u-erased"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"events": 5, "dead_letters": 1, "identities": 2}));
    for table in ["events", "dead_letters", "identities"] {
        let sql = format!(
            "SELECT COUNT(*) FROM {table} WHERE user_id = 'u-erased' OR anonymous_id IN ('anon-erased-1', 'anon-erased-2')"
        );
        assert_eq!(count(&env.db, &sql).await, 0, "nothing of the person in {table}");
    }
    let stored = payloads(&env.db, &workspace.id).await;
    assert_eq!(stored.len(), 6, "the other user's events stay queued");
    assert!(stored.iter().all(|p| !p.to_string().contains("erased")), "{stored:?}");
    assert_eq!(count(&env.db, "SELECT COUNT(*) FROM identities WHERE user_id = 'u-kept'").await, 1);

    // Erasing by anonymous id alone; and again, which finds nothing.
    track(&app, &workspace, &event("t", None, Some("anon-only"))).await;
    let (status, answer) = erase(&app, &workspace.id, json!({"anonymous_ids": ["anon-only", "never-seen"]})).await;
    assert_eq!((status, answer), (200, json!({"events": 1, "dead_letters": 0, "identities": 0})));
    let (status, answer) = erase(&app, &workspace.id, json!({"user_id": "u-erased"})).await;
    assert_eq!((status, answer), (200, json!({"events": 0, "dead_letters": 0, "identities": 0})));
    assert_eq!(app.metric("produktly_erasures_total").await, 3.0);

    // Segment is back: the other user's events arrive (the last sent last),
    // and nothing of the erased person.
    env.segment.end_key_outage("wk_erase");
    let received = env.segment.wait_for(6, WAIT).await;
    let tours: Vec<&str> = received.iter().filter_map(|r| r.message["properties"]["tour_id"].as_str()).collect();
    assert_eq!(tours, ["kept-0", "kept-1", "kept-2", "kept-3", "kept-4", "kept-anonymously"]);
    assert!(received.iter().all(|r| r.message["userId"] == "u-kept"), "resolved through the kept link");
    assert!(received.iter().all(|r| !r.message.to_string().contains("erased")));
    app.stop().await;
}

async fn the_workspace_ip_policy_applies_before_storage(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app_with(|f| f.merge(Serialized::default("ingest.trusted_proxies", "127.0.0.1"))).await;
    let truncated = app.workspace_with_segment("wk_truncated").await;
    let none = app.workspace_with_segment("wk_none").await;
    for (workspace, ip) in [(&truncated, "truncated"), (&none, "none")] {
        let response = app.put_integration(workspace, json!({"ip": ip})).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap()["ip"], ip);
    }
    // Omitted, the policy is kept.
    assert_eq!(
        app.put_integration(&truncated, json!({"enabled": true})).await.json::<Value>().await.unwrap()["ip"],
        "truncated"
    );

    env.segment.start_outage(503);
    let send = |workspace: &TestWorkspace, address: &'static str, tour: &'static str| {
        app.http
            .post(app.url("/v1/track"))
            .header("x-produktly-key", &workspace.ingest_key)
            .header("x-forwarded-for", address)
            .json(&event(tour, Some("u"), None))
            .send()
    };
    for (workspace, address, tour) in [
        (&truncated, "203.0.113.77", "v4"),
        (&truncated, "2001:db8:85a3:1:2:3:4:5", "v6"),
        (&none, "203.0.113.77", "none"),
    ] {
        assert_eq!(send(workspace, address, tour).await.unwrap().status(), 202);
    }
    let ips = |payloads: Vec<Value>| payloads.iter().map(|p| p["context"]["ip"].clone()).collect::<Vec<_>>();
    assert_eq!(ips(payloads(&env.db, &truncated.id).await), [json!("203.0.113.0"), json!("2001:db8:85a3::")]);
    assert_eq!(ips(payloads(&env.db, &none.id).await), [Value::Null], "no address is stored");

    env.segment.end_outage();
    let received = env.segment.wait_for(3, WAIT).await;
    let delivered = |tour: &str| {
        received.iter().find(|r| r.message["properties"]["tour_id"] == tour).unwrap().message["context"].clone()
    };
    assert_eq!(delivered("v4")["ip"], "203.0.113.0");
    assert_eq!(delivered("v6")["ip"], "2001:db8:85a3::");
    assert!(delivered("none").get("ip").is_none(), "{}", delivered("none"));
    app.stop().await;
}

async fn bad_requests_are_refused_and_change_nothing(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_bad").await;
    env.segment.start_outage(503);
    track(&app, &workspace, &event("t", Some("u-1"), Some("anon-1"))).await;
    let stored = || async {
        (count(&env.db, "SELECT COUNT(*) FROM events").await, count(&env.db, "SELECT COUNT(*) FROM identities").await)
    };
    let before = stored().await;
    assert_eq!(before, (1, 1));

    let (status, answer) = erase(&app, "no-such-workspace", json!({"user_id": "u-1"})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")), "{answer}");
    for (body, field) in [
        (json!({}), None),
        (json!({"anonymous_ids": []}), None),
        (json!({"user_id": ""}), Some("user_id")),
        (json!({"user_id": " \t"}), Some("user_id")),
        (json!({"user_id": "x".repeat(256)}), Some("user_id")),
        (json!({"anonymous_ids": ["anon-1", ""]}), Some("anonymous_ids")),
        (json!({"user_id": "u-1", "email": "a@example.com"}), Some("email")),
        (json!({"user_id": 42}), Some("user_id")),
    ] {
        let (status, answer) = erase(&app, &workspace.id, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request", "{body}");
        assert_eq!(answer["error"]["field"].as_str(), field, "{body}: {answer}");
    }

    let response = app.put_integration(&workspace, json!({"ip": "partial"})).await;
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["field"], "ip");
    assert!(answer["error"]["message"].as_str().unwrap().contains("\"truncated\""), "{answer}");
    assert_eq!(app.integration(&workspace).await["ip"], "full", "the policy is unchanged");

    for query in ["limit=0", "limit=1001", "limit=many"] {
        let response = app.admin(Method::GET, &format!("/admin/v1/workspaces?{query}")).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
    }
    let response = app.admin(Method::DELETE, "/admin/v1/workspaces/no%20such").send().await.unwrap();
    assert_eq!(response.status(), 400, "not a workspace id");
    assert_eq!(stored().await, before, "nothing was removed");
    app.stop().await;
}

async fn workspaces_are_listed_a_page_at_a_time(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app().await;
    let mut created: Vec<String> = Vec::new();
    for _ in 0..5 {
        created.push(app.create_workspace().await.id);
    }
    created.sort();
    let mut listed: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = after.as_ref().map_or("limit=2".to_owned(), |a| format!("limit=2&after={a}"));
        let page = common::json_answer(app.admin(Method::GET, &format!("/admin/v1/workspaces?{query}"))).await;
        let ids: Vec<String> =
            page["workspaces"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap().to_owned()).collect();
        assert!(ids.len() <= 2, "{page}");
        assert!(page["workspaces"][0]["ingest_key"].is_string(), "{page}");
        listed.extend(ids);
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, created, "every workspace once, in id order");
    let all = common::json_answer(app.admin(Method::GET, "/admin/v1/workspaces")).await;
    assert_eq!(all["workspaces"].as_array().unwrap().len(), 5);
    assert_eq!(all["next"], Value::Null);
    app.stop().await;
}

on_both_backends!(
    a_deleted_workspace_leaves_nothing_and_its_key_is_refused,
    an_erased_person_is_in_no_table_and_never_reaches_segment,
    the_workspace_ip_policy_applies_before_storage,
    bad_requests_are_refused_and_change_nothing,
    workspaces_are_listed_a_page_at_a_time,
);
