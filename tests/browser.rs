//! The browser path in a real browser: a page on another origin (a customer's
//! site) loads the reference client (docs/browser/produktly-segment.js) in
//! headless Chromium and sends events with `fetch` (CORS preflight) and with
//! `navigator.sendBeacon` (text/plain, key in the query string); they arrive
//! at the mock Segment. A workspace that allows only other origins is out of
//! the page's reach.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use common::{Backend, Env};
use serde_json::json;

const CLIENT: &str = include_str!("../docs/browser/produktly-segment.js");

const PAGE: &str = r#"<!doctype html>
<html><head><title>Customer app</title></head><body>
<p id="result">running</p>
<p id="elsewhere">running</p>
<script src="/produktly-segment.js"></script>
<script>
const tracker = createProduktlyTracker({ endpoint: "{ENDPOINT}", key: "{KEY}", getUserId: () => "browser-user" });
(async () => {
  try {
    tracker.track("tour_start", { tour_id: "fetch-tour" });
    tracker.track("tour_step", { tour_id: "fetch-tour", step_id: "s1", step_index: 0 });
    await tracker.flush();
    tracker.track("announcement_shown", { announcement_id: "beacon-announcement" });
    tracker.flushWithBeacon();
    document.getElementById("result").textContent = "sent";
  } catch (e) {
    document.getElementById("result").textContent = "error: " + e;
  }
  // A workspace that allows only another origin: the preflight is refused.
  let outcome = "not refused";
  try {
    await fetch("{ENDPOINT}/v1/track", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Produktly-Key": "{OTHER_KEY}" },
      body: JSON.stringify({ event: "tour_start", userId: "u", properties: { tour_id: "elsewhere" } }),
    });
  } catch (e) {
    outcome = "refused";
  }
  document.getElementById("elsewhere").textContent = outcome;
})();
</script>
</body></html>
"#;

/// Debian's Chromium; `None` (a skip) where it is missing, except in CI.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(std::env::var("CI").map_or(true, |ci| ci != "true"), "Chromium is missing in CI (.ci/run installs it)");
        eprintln!("skipping: no Chromium (apt-get install chromium)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sends_events_with_fetch_and_beacon() {
    let Some(chromium) = chromium() else { return };
    let Some(env) = Env::new(Backend::Sqlite).await else { return };
    let app = env.start_app().await;

    // The customer's site, on another origin than the service.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site_origin = format!("http://{}", listener.local_addr().unwrap());
    let site_url = format!("{site_origin}/");
    let workspace = app.workspace_with_segment("wk_browser").await;
    allow_origins(&app, &workspace, &[&site_origin]).await;
    let elsewhere = app.workspace_with_segment("wk_browser_elsewhere").await;
    allow_origins(&app, &elsewhere, &["https://elsewhere.example"]).await;

    let page = PAGE
        .replace("{ENDPOINT}", &app.base)
        .replace("{KEY}", &workspace.ingest_key)
        .replace("{OTHER_KEY}", &elsewhere.ingest_key);
    let site = Router::new()
        .route("/", get(move || async move { ([(CONTENT_TYPE, "text/html")], page) }))
        .route("/produktly-segment.js", get(|| async { ([(CONTENT_TYPE, "text/javascript")], CLIENT) }));
    tokio::spawn(async move { axum::serve(listener, site).await });

    let profile = tempfile::tempdir().unwrap();
    let url = site_url.clone();
    let dom = tokio::task::spawn_blocking(move || {
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .expect("Chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains(r#"<p id="result">sent</p>"#), "the page did not finish: {dom}");
    assert!(dom.contains(r#"<p id="elsewhere">refused</p>"#), "another origin's workspace took the event: {dom}");

    let received = env.segment.wait_for(3, Duration::from_secs(20)).await;
    let mut events: Vec<&str> = received.iter().map(|r| r.message["event"].as_str().unwrap()).collect();
    events.sort_unstable();
    assert_eq!(events, ["announcement_shown", "tour_start", "tour_step"]);
    for r in &received {
        let message = &r.message;
        assert_eq!(message["userId"], "browser-user");
        assert!(message["anonymousId"].as_str().is_some_and(|a| a.len() == 36));
        assert_eq!(message["context"]["page"]["url"], site_url.as_str());
        assert!(message["context"]["userAgent"].as_str().unwrap().contains("Chrome"));
    }
    let beacon = received.iter().find(|r| r.message["event"] == "announcement_shown").unwrap();
    assert_eq!(beacon.message["properties"], json!({"announcement_id": "beacon-announcement"}));
    assert_eq!(app.integration(&elsewhere).await["status"]["queued"], 0);
    app.stop().await;
}

async fn allow_origins(app: &common::TestApp, workspace: &common::TestWorkspace, origins: &[&str]) {
    let response = app
        .admin(reqwest::Method::PUT, &format!("/admin/v1/workspaces/{}", workspace.id))
        .json(&json!({"name": "Browser workspace", "allowed_origins": origins}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
