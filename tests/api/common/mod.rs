//! Test harness: the real service on port 0 over a real database (a SQLite
//! file, or a fresh PostgreSQL database), and a strict mock of Segment's
//! Tracking API over real HTTP.

pub mod gate;
pub mod load;
pub mod process;
pub mod proxy;
pub mod segment;

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use figment::Figment;
use figment::providers::Serialized;
use produktly_segment::{App, Settings};
use scratch_db::{Engine, ScratchDb};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use segment::MockSegment;

/// The longest a test waits for the service to get something done (a
/// timeout against hangs, not a figure any test promises).
pub const WAIT: Duration = Duration::from_secs(30);

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// 32 bytes, base64.
pub const SECRET_KEY: &str = "dGVzdC1zZWFsaW5nLWtleS0wMTIzNDU2Nzg5YWJjZGU=";
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs each named `async fn(Backend)` as a test on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test, removed afterwards.
pub type TestDb = ScratchDb;

/// With this set (`scripts/citus-lab.sh` sets it), the PostgreSQL tests run
/// on this Citus coordinator instead.
const CITUS_URL: &str = "PRODUKTLY_TEST_CITUS_URL";

/// The Citus coordinator the PostgreSQL tests run on, if any.
pub fn citus_coordinator() -> Option<String> {
    std::env::var(CITUS_URL).ok().filter(|url| !url.is_empty())
}

/// A fresh database, or `None` when PostgreSQL is unreachable outside CI
/// (with `CI=true` that is a failure, not a skip). On Citus, a fresh schema
/// on the coordinator (`Env::new` distributes its tables).
pub async fn test_db(backend: Backend) -> Option<TestDb> {
    if let (Backend::Postgres, Some(coordinator)) = (backend, citus_coordinator()) {
        return Some(ScratchDb::create_schema(&coordinator, "produktly_test").await.expect("a schema on Citus"));
    }
    let engine = match backend {
        Backend::Sqlite => Engine::Sqlite,
        Backend::Postgres => Engine::Postgres,
    };
    let server = std::env::var("PRODUKTLY_TEST_POSTGRES_URL").unwrap_or(DEFAULT_POSTGRES.into());
    match ScratchDb::create(engine, &server, "produktly_test").await {
        Ok(db) => Some(db),
        Err(e) => skip(&format!("PostgreSQL at {server} is unreachable ({e})")),
    }
}

/// Whether this run is CI's, where a missing part fails a test instead of
/// skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// The end of a test whose real part (PostgreSQL, Chromium, …) is `missing`:
/// with `CI=true` a failure. Otherwise the test says `SKIPPED` and why, past
/// the harness's output capture (which would hide it behind an `ok`), and
/// the run ends by counting the skips.
pub fn skip<T>(missing: &str) -> Option<T> {
    assert!(!in_ci(), "{missing}, and CI=true: this is a failure, not a skip");
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {missing}");
    if SKIPPED.fetch_add(1, Ordering::SeqCst) == 0 {
        // SAFETY: registers a plain function with no state of its own, run once at exit.
        unsafe { libc::atexit(count_skips) };
    }
    None
}

extern "C" fn count_skips() {
    let skipped = SKIPPED.load(Ordering::SeqCst);
    let _ = writeln!(std::io::stderr(), "{skipped} tests SKIPPED (the lines above say why); with CI=true they fail");
}

/// The first column of every row `sql` selects, read from the test's database
/// directly (as an operator would check it).
pub async fn sql_column<T>(db: &TestDb, sql: &str) -> Vec<T>
where
    T: Send
        + Unpin
        + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>,
{
    if db.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
    }
}

/// A database and mock Segment endpoints (US and EU) for one test.
pub struct Env {
    pub db: TestDb,
    pub segment: MockSegment,
    pub eu_segment: MockSegment,
}

impl Env {
    pub async fn new(backend: Backend) -> Option<Env> {
        let db = test_db(backend).await?;
        let env = Env::with(db).await;
        if backend == Backend::Postgres && citus_coordinator().is_some() {
            // Migrated and distributed the way an operator does it (`citus-distribute`).
            let store = produktly_segment::store::connect(&env.settings(|f| f)).await.expect("the store opens");
            store.distribute_on_citus().await.expect("the tables are distributed on Citus");
        }
        Some(env)
    }

    /// The `host:port` of the PostgreSQL server this environment's database is on.
    pub fn postgres_server(&self) -> std::net::SocketAddr {
        let after_user = self.db.url.split_once('@').map_or(self.db.url.as_str(), |(_, rest)| rest);
        let server = after_user.split(['/', '?']).next().unwrap_or_default();
        server.parse().expect("a PostgreSQL URL with an IP address and a port")
    }

    /// On a database that exists (and stays): the HA lab's.
    pub async fn on_database(url: &str) -> Env {
        Env::with(ScratchDb::existing(url).expect("a temporary folder")).await
    }

    async fn with(db: TestDb) -> Env {
        Env { db, segment: MockSegment::start().await, eu_segment: MockSegment::start().await }
    }

    /// Settings for an instance on this environment: fast polling and
    /// backoff, so tests finish quickly; `configure` layers more on top.
    pub fn settings(&self, configure: impl FnOnce(Figment) -> Figment) -> Settings {
        let figment = Settings::defaults().merge(Serialized::defaults(json!({
            "listen": "127.0.0.1:0",
            "database_url": self.db.url,
            "database_max_connections": 4,
            "data_dir": self.db.dir.path(),
            "admin_tokens": ADMIN_TOKEN,
            "secret_key": SECRET_KEY,
            // Tests send from one address far faster than a browser: no rate
            // limits unless a test sets them.
            "admin_requests_per_sec": 0,
            "segment": {"us_url": self.segment.uri(), "eu_url": self.eu_segment.uri(), "request_timeout_ms": 2000},
            "ingest": {"ip_requests_per_sec": 0, "key_requests_per_sec": 0},
            "delivery": {
                "poll_interval_ms": 100,
                "linger_ms": 5,
                "lease_ms": 5000,
                "backoff_base_ms": 50,
                "backoff_max_ms": 200,
                "janitor_interval_ms": 200,
            },
        })));
        Settings::extract(configure(figment)).expect("valid test settings")
    }

    pub async fn start_app(&self) -> TestApp {
        self.start_app_with(|figment| figment).await
    }

    pub async fn start_app_with(&self, configure: impl FnOnce(Figment) -> Figment) -> TestApp {
        TestApp::start(self.settings(configure)).await
    }
}

/// A running instance of the service, in this process.
pub struct TestApp {
    client: ServiceClient,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestApp {
    pub async fn start(settings: Settings) -> TestApp {
        let app = App::build(settings).await.expect("the app starts");
        let client = ServiceClient::new(format!("http://{}", app.local_addr()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run(stop.clone()));
        TestApp { client, stop, task: Some(task) }
    }

    /// Stops as on SIGTERM and waits until it has drained.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("the app stops cleanly");
        }
    }
}

impl std::ops::Deref for TestApp {
    type Target = ServiceClient;
    fn deref(&self) -> &ServiceClient {
        &self.client
    }
}

/// A workspace as the admin API returned it.
#[derive(Clone, Debug)]
pub struct TestWorkspace {
    pub id: String,
    pub ingest_key: String,
}

/// Calls to a running service (in this process or a child process).
pub struct ServiceClient {
    pub base: String,
    pub http: reqwest::Client,
}

impl ServiceClient {
    pub fn new(base: String) -> ServiceClient {
        ServiceClient { base, http: reqwest::Client::new() }
    }
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN)
    }

    pub async fn create_workspace(&self) -> TestWorkspace {
        let response = self
            .admin(reqwest::Method::POST, "/admin/v1/workspaces")
            .json(&json!({"name": "Test workspace"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        TestWorkspace {
            id: body["id"].as_str().unwrap().to_owned(),
            ingest_key: body["ingest_key"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn put_integration(&self, workspace: &TestWorkspace, body: Value) -> reqwest::Response {
        self.admin(reqwest::Method::PUT, &format!("/admin/v1/workspaces/{}/integrations/segment", workspace.id))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A workspace with an enabled Segment integration (US) using `write_key`.
    pub async fn workspace_with_segment(&self, write_key: &str) -> TestWorkspace {
        let workspace = self.create_workspace().await;
        let response = self.put_integration(&workspace, json!({"write_key": write_key})).await;
        assert_eq!(response.status(), 200);
        workspace
    }

    pub async fn integration(&self, workspace: &TestWorkspace) -> Value {
        json_answer(
            self.admin(reqwest::Method::GET, &format!("/admin/v1/workspaces/{}/integrations/segment", workspace.id)),
        )
        .await
    }

    /// POSTs a JSON body to an ingest endpoint with the key in the header.
    pub async fn ingest(&self, path: &str, workspace: &TestWorkspace, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .header("x-produktly-key", &workspace.ingest_key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// The value of one metric line, e.g. `produktly_events_delivered_total`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }
}

/// Sends a request and returns its JSON answer.
pub async fn json_answer(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// A valid event of the catalog, for a user.
pub fn tour_start(user_id: &str) -> Value {
    json!({"event": "tour_start", "userId": user_id, "properties": {"tour_id": "t_1"}})
}

/// A `tour_start` of `tour` for a user, with its own `messageId`.
pub fn tour_start_with_id(user_id: &str, tour: &str, message_id: &str) -> Value {
    json!({"event": "tour_start", "userId": user_id, "messageId": message_id, "properties": {"tour_id": tour}})
}

/// How many times Segment accepted each `messageId`.
pub fn count_by_message_id(received: &[segment::Received]) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for r in received {
        *counts.entry(r.message["messageId"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Waits until Segment has every one of `ids`.
pub async fn every_event_arrives(segment: &MockSegment, ids: &[String]) {
    eventually(WAIT, "every acknowledged event at Segment", || async {
        let delivered = count_by_message_id(&segment.accepted());
        ids.iter().all(|id| delivered.contains_key(id))
    })
    .await;
}

/// Polls `check` until it holds, failing the test after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
