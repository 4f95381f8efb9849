//! The browser SDK (`clients/browser`) in a real browser: Debian's Chromium,
//! driven by playwright-core (`clients/browser/test/scenarios.mjs`), loads the
//! script the service serves into a customer's page on another origin and
//! tracks; the events go through a gate that can put the service out of reach
//! or answer `503`, to the service and a strict mock Segment. Each test runs
//! one scenario and checks what reached Segment (by `messageId`) and the gate.
//! Without Node.js or Chromium the tests are skipped, except with `CI=true`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::common::gate::{Logged, TestGate};
use crate::common::{Backend, Env, TestApp, TestWorkspace, skip};

const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/browser");

/// The customer's page: the SDK from the service, a tracker posting through
/// the gate, and a link that tracks its click and leaves at once. The query
/// may give the key (`?key=`, after a rotation), consent first
/// (`?consent_first`) and a cookie domain (`?cookie_domain=`).
const PAGE: &str = r#"<!doctype html>
<html><head><title>Customer app</title><script src="{SDK}"></script></head><body>
<button id="go">Open the announcement's link</button>
<script>
const query = new URLSearchParams(location.search);
window.tracker = Produktly.createTracker({
  endpoint: "{ENDPOINT}",
  key: query.get("key") ?? "{KEY}",
  workspace: "{WORKSPACE}",
  getUserId: () => window.signedInUser ?? null,
  startOptedOut: query.has("consent_first"),
  cookieDomain: query.get("cookie_domain") ?? undefined,
});
// The clicks are numbered across pages (where the page may keep a number).
let seq = 0;
try { seq = Number(localStorage.getItem("test_seq") ?? 0); } catch {}
document.getElementById("go").addEventListener("click", () => {
  try { localStorage.setItem("test_seq", String(seq + 1)); } catch {}
  const id = window.tracker.track("announcement_action_clicked", { announcement_id: "a1", link: "{AWAY}/away", test_seq: seq });
  console.log("tracked " + id);
  location.href = "{AWAY}/away";
});
</script></body></html>
"#;

/// What a scenario's page tracked and logged.
struct Report(Value);

impl Report {
    fn tracked(&self) -> Vec<String> {
        self.0["tracked"].as_array().unwrap().iter().filter_map(|id| id.as_str().map(str::to_owned)).collect()
    }
    fn warnings(&self) -> Vec<String> {
        self.0["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).collect()
    }
}

/// One scenario's world: the service, its workspace, the gate, the pages.
struct World {
    chromium: PathBuf,
    env: Env,
    app: TestApp,
    gate: TestGate,
    workspace: TestWorkspace,
    site: String,
    /// The site under two subdomains of a test host Chromium maps to 127.0.0.1.
    app_host: String,
    www_host: String,
    away: String,
}

impl World {
    /// `None` (a skip) without Node.js or Chromium, except in CI.
    async fn new(allowed_origins: Option<&[&str]>) -> Option<World> {
        let chromium = chromium()?;
        node_modules().await?;
        let env = Env::new(Backend::Sqlite).await?;
        let app = env.start_app().await;
        let workspace = app.workspace_with_segment("wk_browser").await;
        let gate = TestGate::start(&app.base).await;
        let (site, site_listener) = listener().await;
        let port = site_listener.local_addr().unwrap().port();
        let (app_host, www_host) = (format!("http://app.shop.test:{port}"), format!("http://www.shop.test:{port}"));
        let (away, away_listener) = listener().await;
        let origins: Vec<&str> =
            allowed_origins.map_or_else(|| vec![site.as_str(), app_host.as_str(), www_host.as_str()], <[&str]>::to_vec);
        let response = app
            .admin(reqwest::Method::PUT, &format!("/admin/v1/workspaces/{}", workspace.id))
            .json(&json!({"name": "Browser workspace", "allowed_origins": origins}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let page = PAGE
            .replace("{SDK}", &app.url("/sdk/v1/produktly-segment.js"))
            .replace("{ENDPOINT}", &gate.url)
            .replace("{KEY}", &workspace.ingest_key)
            .replace("{WORKSPACE}", &workspace.id)
            .replace("{AWAY}", &away);
        let pages = Router::new()
            .route("/app", get(move || async move { ([(CONTENT_TYPE, "text/html")], page) }))
            .route("/plain", get(|| async { ([(CONTENT_TYPE, "text/html")], "<!doctype html><title>Plain</title>") }));
        tokio::spawn(async move { axum::serve(site_listener, pages).await });
        let elsewhere = Router::new()
            .route("/away", get(|| async { ([(CONTENT_TYPE, "text/html")], "<!doctype html><title>Away</title>") }));
        tokio::spawn(async move { axum::serve(away_listener, elsewhere).await });
        Some(World { chromium, env, app, gate, workspace, site, app_host, www_host, away })
    }

    /// Runs the scenario in Chromium and returns its report.
    async fn run(&self, scenario: &str) -> Report {
        let output = tokio::time::timeout(
            Duration::from_secs(240),
            tokio::process::Command::new("node")
                .arg("test/scenarios.mjs")
                .arg(scenario)
                .current_dir(PACKAGE)
                .env("SITE", &self.site)
                .env("APP_HOST", &self.app_host)
                .env("WWW_HOST", &self.www_host)
                .env("AWAY", &self.away)
                .env("CONTROL", &self.gate.control)
                .env("SERVICE", &self.app.base)
                .env("TOKEN", crate::common::ADMIN_TOKEN)
                .env("WORKSPACE", &self.workspace.id)
                .env("CHROMIUM", &self.chromium)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the scenario ends within 4 minutes")
        .expect("node runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().find_map(|line| line.strip_prefix("RESULT ")).unwrap_or_else(|| {
            panic!("{scenario}: no result\nstdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr))
        });
        let report: Value = serde_json::from_str(line).unwrap();
        eprintln!("{scenario}: {report}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(report["errors"], json!([]), "{scenario}: {report}");
        Report(report)
    }

    /// Times each `messageId` reached Segment, once `count` distinct ones have.
    async fn delivered(&self, count: usize) -> HashMap<String, Vec<Value>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.by_message_id().len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} events reached Segment; the gate saw {:?}",
                self.by_message_id().len(),
                self.gate.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Time for a late duplicate to show.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.by_message_id()
    }

    /// What reached Segment, once each of `tracked` has, each exactly once.
    async fn each_delivered_once(&self, tracked: &[String]) -> HashMap<String, Vec<Value>> {
        let delivered = self.delivered(tracked.len()).await;
        for id in tracked {
            assert_eq!(delivered.get(id).map(Vec::len), Some(1), "{id} arrived once");
        }
        delivered
    }

    fn by_message_id(&self) -> HashMap<String, Vec<Value>> {
        let mut seen: HashMap<String, Vec<Value>> = HashMap::new();
        for received in self.env.segment.accepted() {
            let id = received.message["messageId"].as_str().unwrap().to_owned();
            seen.entry(id).or_default().push(received.message);
        }
        seen
    }

    /// The event requests that reached the gate (preflights aside).
    fn posts(&self) -> Vec<Logged> {
        self.gate.log().into_iter().filter(|logged| logged.method == "POST").collect()
    }
}

async fn listener() -> (String, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (format!("http://{}", listener.local_addr().unwrap()), listener)
}

/// Debian's Chromium; `None` (a skip) where it is missing, except in CI.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.exists());
    found.or_else(|| skip("no Chromium (apt-get install chromium; .ci/run installs it)"))
}

/// The package's locked dev dependencies (playwright-core), installed once by
/// `npm ci` when missing; `None` (a skip) without Node.js, except in CI.
async fn node_modules() -> Option<()> {
    static INSTALLED: OnceCell<bool> = OnceCell::const_new();
    let installed = *INSTALLED
        .get_or_init(|| async {
            if Path::new(PACKAGE).join("node_modules/playwright-core/package.json").exists() {
                return true;
            }
            let npm = tokio::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(PACKAGE)
                .status()
                .await;
            match npm {
                Ok(status) if status.success() => true,
                other => {
                    eprintln!("npm ci in clients/browser failed: {other:?}");
                    false
                }
            }
        })
        .await;
    if installed { Some(()) } else { skip("no Node.js or npm, or `npm ci` in clients/browser failed") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_that_leaves_the_page_at_once_is_delivered_20_times_of_20() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("click_then_navigate").await;
    let delivered = world.delivered(20).await;
    let mut seqs: Vec<i64> =
        delivered.values().map(|copies| copies[0]["properties"]["test_seq"].as_i64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "each click arrived");
    for id in report.tracked() {
        assert!(delivered.contains_key(&id), "{id} was tracked and not delivered");
    }
    let copies: usize = delivered.values().map(Vec::len).sum();
    eprintln!("click then navigate: 20 of 20 delivered, {copies} copies in all");
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_kept_while_the_service_is_out_of_reach_go_with_the_next_page_once_each() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("out_of_reach_then_next_page").await;
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 10);
    let delivered = world.each_delivered_once(&tracked).await;
    assert_eq!(delivered.len(), 10);
    assert_eq!(report.0["kept"], json!({}), "nothing is kept once sent");
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_is_waited_out_and_nothing_is_lost() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("retry_after").await;
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 30);
    let delivered = world.delivered(30).await;
    for id in &tracked {
        assert!(delivered.contains_key(id), "{id} was not delivered after recovery");
    }
    let refused: Vec<Logged> = world.posts().into_iter().filter(|logged| logged.status == 503).collect();
    assert!(!refused.is_empty() && refused.len() <= 10, "{} requests while the service answered 503", refused.len());
    let posts = world.posts();
    let gaps: Vec<u64> = posts.windows(2).map(|pair| pair[1].at_ms - pair[0].at_ms).collect();
    assert!(gaps.iter().all(|gap| *gap >= 5000), "a request came sooner than Retry-After: {gaps:?}");
    eprintln!(
        "retry-after: {} requests during the 503s, gaps {gaps:?} ms; all 30 delivered {} ms after recovery",
        refused.len(),
        report.0["flushedAfterMs"]
    );
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_and_one_too_large_do_not_hold_up_the_valid_ones() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("refused_and_too_large").await;
    let valid = report.tracked();
    assert_eq!(valid.len(), 2);
    let delivered = world.delivered(2).await;
    for id in &valid {
        assert!(delivered.contains_key(id), "the valid event {id} was not delivered");
    }
    assert_eq!(delivered.len(), 2, "only the valid events reach Segment");
    assert!(report.0["refused"].is_string(), "the service's refusal comes back from the service, not the SDK");
    assert_eq!(report.0["tooLarge"], Value::Null, "the event over 32 KB is refused in the page");
    assert_eq!(report.0["dropped"], 2);
    let warnings = report.warnings();
    assert!(warnings.iter().any(|w| w.contains("unknown_event")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("32000-byte limit")), "{warnings:?}");
    assert_eq!(report.0["kept"], json!({}));
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_the_workspace_refuses_gets_at_most_two_requests_and_a_warning() {
    let Some(world) = World::new(Some(&["https://only-this.example"])).await else { return };
    let report = world.run("origin_not_allowed").await;
    // The page tracks 30 times; what it tracked before the refusal came back
    // is dropped with it, and the tracker stops on the page.
    assert!(report.tracked().len() <= 2, "{} tracked after the refusal", report.tracked().len());
    let requests = world.gate.log();
    assert!(!requests.is_empty() && requests.len() <= 2, "{requests:?}");
    assert!(requests.iter().any(|r| r.status == 403));
    let warnings = report.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("allowed_origins"), "{warnings:?}");
    assert_eq!(world.app.integration(&world.workspace).await["status"]["queued"], 0);
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_works_when_local_storage_throws() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("storage_throws").await;
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 3);
    let delivered = world.delivered(3).await;
    for id in &tracked {
        assert!(delivered.contains_key(id));
    }
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identify_while_out_of_reach_gives_the_earlier_event_its_user() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("identify_while_out_of_reach").await;
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 1);
    let delivered = world.delivered(1).await;
    let message = &delivered[&tracked[0]][0];
    assert_eq!(message["userId"], "signed-in-user", "{message}");
    assert!(message["anonymousId"].is_string());
    assert_eq!(report.0["kept"], json!({}));
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_opt_out_nothing_is_sent_or_kept() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("opt_out").await;
    assert_eq!(report.0["optedOutTracks"], json!([null, null]));
    for kept in [&report.0["keptAfterOptOut"], &report.0["keptOnNextPage"]] {
        let names: Vec<&String> = kept.as_object().unwrap().keys().collect();
        assert_eq!(names, [&format!("produktly:{}:consent", world.workspace.id)], "{kept}");
    }
    let after_opt_in = report.0["afterOptIn"].as_str().expect("tracking resumes after optIn").to_owned();
    let delivered = world.delivered(1).await;
    assert!(delivered.contains_key(&after_opt_in), "the event after optIn arrives");
    // The event tracked just before optOut was still waiting: it was dropped.
    assert_eq!(delivered.keys().collect::<Vec<_>>(), [&after_opt_in]);
    world.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_opening_at_once_send_kept_events_once() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("two_tabs").await;
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 5);
    world.each_delivered_once(&tracked).await;
    assert_eq!(report.0["kept"], json!({}));
    world.app.stop().await;
}

/// The same on plain http (a test host), where Chromium has no Web Locks:
/// adoption by claim still sends each kept event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_without_web_locks_send_kept_events_once() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("two_tabs_without_locks").await;
    assert_eq!(report.0["locks"], false, "the test host's pages have no Web Locks");
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 5);
    world.each_delivered_once(&tracked).await;
    assert_eq!(report.0["kept"], json!({}));
    world.app.stop().await;
}

/// The anonymous id each delivered event of `ids` carried.
fn anonymous_ids(delivered: &HashMap<String, Vec<Value>>, ids: &[String]) -> Vec<String> {
    ids.iter().map(|id| delivered[id][0]["anonymousId"].as_str().unwrap().to_owned()).collect()
}

/// The host app filled localStorage's quota: the anonymous id kept before is
/// still the one sent, and a user who opted out stays opted out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_storage_full_the_anonymous_id_and_the_opt_out_hold() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("full_quota").await;
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 2, "{}", report.0);
    let delivered = world.delivered(2).await;
    let ids = anonymous_ids(&delivered, &tracked);
    assert_eq!(ids[0], ids[1], "the anonymous id survives the full quota");
    assert_eq!(report.0["optedOutTracks"], json!([null, null, null]), "the opt-out survives it");
    assert_eq!(delivered.len(), 2, "nothing after the opt-out");
    let warnings = report.warnings();
    assert!(warnings.iter().any(|w| w.contains("storage is full")), "{warnings:?}");
    let stored = report.0["stored"]["local"].as_array().unwrap();
    assert!(stored.contains(&json!(format!("produktly:{}:consent", world.workspace.id))), "{stored:?}");
    eprintln!(
        "full quota: {} host entries filled it; {} events, one anonymous id, 3 of 3 opted-out tracks refused",
        report.0["fillers"],
        tracked.len()
    );
    world.app.stop().await;
}

/// After `…/ingest-key/rotate`, the next page (with the new key) sends what
/// was kept under the old one, with the same anonymous id; an opt-out
/// outlives the next rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_keeps_the_anonymous_id_the_kept_events_and_the_opt_out() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("key_rotation").await;
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 5);
    let delivered = world.each_delivered_once(&tracked).await;
    let ids = anonymous_ids(&delivered, &tracked);
    assert!(ids.iter().all(|id| *id == ids[0]), "one anonymous id across the rotation: {ids:?}");
    assert!(
        world.posts().iter().all(|logged| logged.status != 401),
        "nothing went with a rotated key: {:?}",
        world.posts()
    );
    assert_eq!(report.0["kept"], json!({}));
    assert_eq!(report.0["optedOutTracks"], json!([null]));
    let stored = report.0["stored"]["local"].as_array().unwrap();
    assert_eq!(stored, &[json!(format!("produktly:{}:consent", world.workspace.id))]);
    eprintln!("key rotation: 3 events kept under the old key delivered with the new one, 5 of 5 with one anonymous id");
    world.app.stop().await;
}

/// `startOptedOut`: before `optIn()` nothing reaches the service and nothing
/// is stored, not a localStorage key, not a cookie; after it, events go, and
/// the next page remembers the consent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_first_stores_and_sends_nothing_before_opt_in() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("consent_first").await;
    assert_eq!(report.0["optedOutTracks"], json!([null, null]));
    assert_eq!(report.0["storedBeforeOptIn"], json!({"local": [], "cookie": ""}));
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 2);
    let delivered = world.delivered(2).await;
    assert_eq!(delivered.len(), 2, "only what was tracked after optIn");
    let after = &report.0["storedAfterOptIn"];
    assert!(after["local"].as_array().unwrap().contains(&json!(format!("produktly:{}:consent", world.workspace.id))));
    assert!(after["cookie"].as_str().unwrap().contains("produktly_anonymous_id="), "{after}");
    world.app.stop().await;
}

/// One visitor across `app.` and `www.` of a site: the SDK's id in a cookie
/// on the parent domain, and analytics.js's `ajs_anonymous_id` (its
/// localStorage entry, its cookie) where the site has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anonymous_id_is_shared_across_subdomains_and_with_analytics_js() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("shared_anonymous_id").await;
    let field = |name: &str| report.0[name].as_str().unwrap().to_owned();
    let delivered = world.delivered(4).await;
    let ids = anonymous_ids(&delivered, &[field("own"), field("ownOnWww"), field("ajsLocal"), field("ajsCookie")]);
    assert_eq!(ids[0], ids[1], "app. and www. send one anonymous id");
    assert!(report.0["cookie"].as_str().unwrap().contains(&format!("produktly_anonymous_id={}", ids[0])));
    assert_eq!(ids[2], "ajs-visitor-local");
    assert_eq!(ids[3], "ajs-visitor-cookie");
    eprintln!("shared anonymous id: app. and www. {}, then analytics.js's {} and {}", ids[0], ids[2], ids[3]);
    world.app.stop().await;
}

/// A tab frozen while it held kept events, long enough for another tab to
/// adopt and send them: back, it sends none of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_back_from_frozen_does_not_resend_what_another_tab_adopted() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("frozen_tab").await;
    assert_eq!(report.0["aged"], 1, "the frozen tab had its record kept");
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 3);
    world.each_delivered_once(&tracked).await;
    assert_eq!(report.0["kept"], json!({}));
    world.app.stop().await;
}

/// Each event carries the context Segment's libraries send: the campaign from
/// `utm_*`, the URL without its fragment (no token leaves the page), the
/// timezone, the screen and the SDK as `library`; a 10 KB URL is cut, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_campaign_and_never_the_fragment_and_a_long_url_is_cut() {
    let Some(world) = World::new(None).await else { return };
    let report = world.run("context").await;
    let tracked = report.tracked();
    assert_eq!(tracked.len(), 2);
    let delivered = world.delivered(2).await;
    let campaign = &delivered[&tracked[0]][0];
    let text = campaign.to_string();
    assert!(!text.contains("secret") && !text.contains("token"), "{text}");
    let context = &campaign["context"];
    assert_eq!(context["campaign"], json!({"source": "x", "medium": "email", "name": "spring"}));
    assert_eq!(context["page"]["search"], "?utm_source=x&utm_medium=email&utm_campaign=spring");
    assert!(
        context["page"]["url"].as_str().unwrap().ends_with("/app?utm_source=x&utm_medium=email&utm_campaign=spring")
    );
    assert!(context["timezone"].as_str().is_some_and(|zone| !zone.is_empty()), "{context}");
    assert!(context["screen"]["width"].as_u64().is_some_and(|width| width > 0), "{context}");
    assert!(context["screen"]["density"].as_f64().is_some(), "{context}");
    assert_eq!(context["library"]["name"], "@produktly/segment-browser");
    let long = &delivered[&tracked[1]][0]["context"]["page"];
    assert_eq!(long["url"].as_str().unwrap().len(), 2000, "the URL is cut to the SDK's limit");
    eprintln!(
        "context: campaign {}, screen {}, timezone {}",
        context["campaign"], context["screen"], context["timezone"]
    );
    world.app.stop().await;
}

/// The delivery debugger's page (`/debugger/`) under its CSP: the token typed
/// in, a refused event and a good one posted, both rows shown with their reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debugger_page_shows_a_refusal_with_its_fix_and_a_good_event() {
    let Some(chromium) = chromium() else { return };
    if node_modules().await.is_none() {
        return;
    }
    let Some(env) = Env::new(Backend::Sqlite).await else { return };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_debugger_page").await;
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg("test/debugger.mjs")
            .current_dir(PACKAGE)
            .env("SERVICE", &app.base)
            .env("TOKEN", crate::common::ADMIN_TOKEN)
            .env("WORKSPACE", &workspace.id)
            .env("KEY", &workspace.ingest_key)
            .env("CHROMIUM", &chromium)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the page test ends within 2 minutes")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|line| line.strip_prefix("RESULT ")).unwrap_or_else(|| {
        panic!("no result\nstdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr))
    });
    let report: Value = serde_json::from_str(line).unwrap();
    assert_eq!(report["errors"], json!([]), "{report}");
    let refused = report["rows"]["m-page-refused"].to_string();
    assert!(refused.contains("refused (unknown_event)"), "{refused}");
    assert!(refused.contains("is not an event of the catalog") && refused.contains("Fix:"), "{refused}");
    let good = report["rows"]["m-page-good"].to_string();
    assert!(good.contains("queued") || good.contains("delivered"), "{good}");
    assert_eq!(report["sessionToken"], crate::common::ADMIN_TOKEN, "the token is kept for the tab");
    assert_eq!(report["localKeys"], json!([]), "and nowhere else");
    app.stop().await;
}
