//! PostgreSQL failing over under steady ingest: the service follows the
//! primary between the hosts of a multi-host URL, leaves a server that stops
//! taking writes, bounds a commit that hangs, and never stores a retried
//! messageId twice. Every `202` reaches Segment once; nothing is answered but
//! `202` or `503`; the service is never restarted. (`ha_lab` runs the same on
//! a real HA engine, pg_auto_failover: `scripts/failover-test.sh`.)

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use figment::providers::Serialized;
use scratch_db::run_on_server;

use crate::common::load::{self, Attempt, Load, Shape};
use crate::common::proxy::TcpProxy;
use crate::common::{self, Backend, Env, TestDb, TestWorkspace, WAIT, sql_column, tour_start_with_id};

const POSTGRES: &str = "127.0.0.1:5432";

/// How long each host serves in turn. Finding a host gone takes up to
/// `database_acquire_timeout_ms` (2 s): the pool tries to reconnect until then.
const PHASE: Duration = Duration::from_secs(6);

/// Steady ingest of about 1,100 events a second: batches of 20 and single events.
fn steady_loads(base: &str, workspace: &TestWorkspace, prefix: &str) -> Vec<Load> {
    let key = &workspace.ingest_key;
    let batches = Shape { events: 20, every: Duration::from_millis(20), retry: true };
    let singles = Shape { events: 1, every: Duration::from_millis(20), retry: true };
    vec![
        Load::start(base, key, &format!("{prefix}-batch"), batches),
        Load::start(base, key, &format!("{prefix}-single-a"), singles),
        Load::start(base, key, &format!("{prefix}-single-b"), singles),
    ]
}

async fn stop_all(loads: Vec<Load>) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    for load in loads {
        attempts.extend(load.stop(Duration::from_secs(20)).await);
    }
    attempts
}

/// How long after `since` the first request sent then was answered `202`.
fn first_202_after(attempts: &[Attempt], since: Instant) -> Option<Duration> {
    attempts.iter().filter(|a| a.sent >= since && a.status == Some(202)).map(|a| a.answered - since).min()
}

/// Answers by kind: `202`, `503`, no answer; any other status fails the test.
fn answers(attempts: &[Attempt]) -> (usize, usize, usize) {
    let count = |status: Option<u16>| attempts.iter().filter(|a| a.status == status).count();
    let other: Vec<_> = attempts.iter().filter_map(|a| a.status).filter(|s| ![202, 503].contains(s)).collect();
    assert!(other.is_empty(), "answers other than 202 and 503: {other:?}");
    (count(Some(202)), count(Some(503)), count(None))
}

/// Every acknowledged id is queued exactly once (Segment refuses everything
/// meanwhile, so nothing has left the queue).
async fn queued_once_each(db: &TestDb, acknowledged: &[String]) {
    let queued: Vec<String> = sql_column(db, "SELECT message_id FROM events").await;
    let mut rows: HashMap<&str, usize> = HashMap::new();
    for id in &queued {
        *rows.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = rows.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ids stored more than once: {twice:?}");
    let acknowledged: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let stored: HashSet<&str> = rows.keys().copied().collect();
    assert_eq!(stored, acknowledged, "the queue holds exactly what was acknowledged");
}

/// Segment gets every acknowledged event, each once.
async fn delivered_once_each(env: &Env, acknowledged: &[String]) {
    common::every_event_arrives(&env.segment, acknowledged).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = common::count_by_message_id(&env.segment.accepted());
    let twice = delivered.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "events delivered twice");
}

/// Two hosts in the URL, each a way to the same server: the first goes away
/// (the primary died and the other was promoted), later the second (a
/// planned switchover back). Ingest follows each move within seconds, with
/// `503`s meanwhile, and nothing is lost or stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_follows_the_primary_from_host_to_host() {
    let Some(env) = Env::new(Backend::Postgres).await else { return };
    let server = POSTGRES.parse().unwrap();
    let (first, second) = (TcpProxy::start(server).await, TcpProxy::start(server).await);
    let url = env.db.url.replace(POSTGRES, &format!("{},{}", first.addr, second.addr));
    let app = env.start_app_with(|f| f.merge(Serialized::default("database_url", url))).await;
    let workspace = app.workspace_with_segment("wk_follow").await;
    env.segment.start_outage(503);
    let loads = steady_loads(&app.base, &workspace, "follow");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let crashed = Instant::now();
    first.cut();
    tokio::time::sleep(PHASE).await;
    let switched = Instant::now();
    first.restore().await;
    second.cut();
    tokio::time::sleep(PHASE).await;
    let attempts = stop_all(loads).await;

    let (ok, refused, cut) = answers(&attempts);
    let after_crash = first_202_after(&attempts, crashed).expect("ingest recovered after the first host went");
    let after_switch = first_202_after(&attempts, switched).expect("ingest recovered after the switchover");
    eprintln!(
        "follow the primary: {ok} answered 202, {refused} 503, {cut} unanswered; first 202 {after_crash:?} after \
         the first host went, {after_switch:?} after the second"
    );
    assert!(after_crash < Duration::from_secs(5) && after_switch < Duration::from_secs(5));
    assert!(app.metric("produktly_database_failovers_total").await >= 2.0);
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);

    let acknowledged = load::acknowledged(&attempts);
    queued_once_each(&env.db, &acknowledged).await;
    env.segment.end_outage();
    delivered_once_each(&env, &acknowledged).await;
    app.stop().await;
}

/// The first host of the URL does not answer: the service starts on the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_starts_on_the_host_that_answers() {
    let Some(env) = Env::new(Backend::Postgres).await else { return };
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = env.db.url.replace(POSTGRES, &format!("{unused},{POSTGRES}"));
    let url = format!("{url}?target_session_attrs=read-write");
    let app = env.start_app_with(|f| f.merge(Serialized::default("database_url", url))).await;
    let workspace = app.workspace_with_segment("wk_second_host").await;
    let (status, body) = app.ingest("/v1/track", &workspace, &tour_start_with_id("u", "t", "second-1")).await;
    assert_eq!(status, 202, "{body}");
    common::every_event_arrives(&env.segment, &["second-1".to_owned()]).await;
    app.stop().await;
}

/// The server stops taking writes (as a primary turned standby behind an
/// endpoint that stays): its connections close, ingest answers `503` (never
/// `500`), `/readyz` says not ready; once it takes writes again, everything
/// recovers without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_taking_writes_is_left_until_it_takes_them_again() {
    let Some(env) = Env::new(Backend::Postgres).await else { return };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_read_only").await;
    let (status, _) = app.ingest("/v1/track", &workspace, &tour_start_with_id("u", "t", "ro-0")).await;
    assert_eq!(status, 202);
    let opened = app.metric("produktly_database_connections_opened_total").await;

    let name = env.db.name().to_owned();
    env.db.on_server(&format!("ALTER DATABASE \"{name}\" SET default_transaction_read_only = on")).await.unwrap();
    env.db
        .on_server(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        .await
        .unwrap();
    for n in 1..=3 {
        let started = Instant::now();
        let (status, body) =
            app.ingest("/v1/track", &workspace, &tour_start_with_id("u", "t", &format!("ro-{n}"))).await;
        assert_eq!(status, 503, "{body}");
        assert!(started.elapsed() < Duration::from_secs(4), "answered after {:?}", started.elapsed());
    }
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 503);

    env.db.on_server(&format!("ALTER DATABASE \"{name}\" RESET default_transaction_read_only")).await.unwrap();
    let writable = Instant::now();
    common::eventually(Duration::from_secs(15), "ingest to recover", || async {
        app.ingest("/v1/track", &workspace, &tour_start_with_id("u", "t", "ro-after")).await.0 == 202
    })
    .await;
    eprintln!("ingest recovered {:?} after the server took writes again", writable.elapsed());
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    assert!(app.metric("produktly_database_connections_opened_total").await > opened, "new connections were opened");
    common::every_event_arrives(&env.segment, &["ro-0".to_owned(), "ro-after".to_owned()]).await;
    app.stop().await;
}

/// A commit whose answer does not come (the server holds it, as one waiting
/// for a synchronous standby that is gone): the request is answered `503`
/// at the bound, the commit goes on and lands when the answer comes, and
/// the browser's retry of the same messageId is acknowledged, not stored
/// again: Segment gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_past_its_bound_answers_503_and_its_retry_is_stored_once() {
    let Some(env) = Env::new(Backend::Postgres).await else { return };
    let proxy = TcpProxy::start(POSTGRES.parse().unwrap()).await;
    let url = env.db.url.replace(POSTGRES, &proxy.addr.to_string());
    let app = env
        .start_app_with(|f| {
            f.merge(Serialized::default("database_url", url))
                .merge(Serialized::default("ingest.commit_timeout_ms", 1000))
                .merge(Serialized::default("ingest.key_cache_ttl_ms", 60_000))
                .merge(Serialized::default("database_acquire_timeout_ms", 20_000))
        })
        .await;
    let workspace = app.workspace_with_segment("wk_bound").await;
    let (status, _) = app.ingest("/v1/track", &workspace, &tour_start_with_id("u", "t", "bound-0")).await;
    assert_eq!(status, 202, "the ingest key is cached");
    common::every_event_arrives(&env.segment, &["bound-0".to_owned()]).await;
    let accepted = app.metric("produktly_events_accepted_total").await;
    // Nothing leaves the queue until the retry is in: it must find its event there.
    env.segment.start_outage(503);
    proxy.stall();
    let started = Instant::now();
    let response = app
        .http
        .post(app.url("/v1/track"))
        .header("x-produktly-key", &workspace.ingest_key)
        .json(&tour_start_with_id("u", "t", "bound-1"))
        .send()
        .await
        .unwrap();
    let answered = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(answered < Duration::from_millis(2500), "answered after {answered:?}, the bound is 1 s");

    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.resume();
    common::eventually(WAIT, "the commit to land by itself", || async {
        app.metric("produktly_events_accepted_total").await > accepted
    })
    .await;
    common::eventually(WAIT, "the retry to be acknowledged", || async {
        app.ingest("/v1/track", &workspace, &tour_start_with_id("u", "t", "bound-1")).await.0 == 202
    })
    .await;
    assert_eq!(app.metric("produktly_events_already_queued_total").await, 1.0, "the retry was not stored");
    env.segment.end_outage();
    delivered_once_each(&env, &["bound-0".to_owned(), "bound-1".to_owned()]).await;
    app.stop().await;
}

/// The HA lab `scripts/ha-lab.sh` runs: its commands and its database.
struct HaLab {
    script: String,
    url: String,
}

impl HaLab {
    fn from_env() -> HaLab {
        let var =
            |name| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/failover-test.sh"));
        HaLab { script: var("HA_LAB_SCRIPT"), url: var("HA_LAB_URL") }
    }

    /// Runs `ha-lab.sh command`; what it printed.
    async fn run(&self, command: &str) -> String {
        let output = tokio::process::Command::new("bash").arg(&self.script).arg(command).output().await.unwrap();
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(output.status.success(), "ha-lab.sh {command}: {printed} {}", String::from_utf8_lossy(&output.stderr));
        printed
    }

    /// The first moment a write to the server on `port` commits (probed
    /// every 50 ms; a probe whose commit hangs is left to finish by itself).
    async fn first_write(&self, port: u16) -> Instant {
        let url = format!("postgres://postgres@127.0.0.1:{port}/produktly?sslmode=disable");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let write = async {
                use sqlx::Connection;
                let mut connection = sqlx::PgConnection::connect(&url).await?;
                sqlx::query("INSERT INTO failover_probe VALUES (1)").execute(&mut connection).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), write).await {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "the server on port {port} took no write within 2 minutes");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `/readyz` every 200 ms until stopped: how long it said not ready; any
/// answer but `200` and `503` fails the test.
fn watch_readiness(base: String, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let mut not_ready = Duration::ZERO;
        while !stop.is_cancelled() {
            let status = http.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16());
            match status {
                Ok(200) => {}
                Ok(503) | Err(_) => not_ready += Duration::from_millis(200),
                Ok(other) => panic!("/readyz answered {other}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        not_ready
    })
}

/// What one failover did to ingest and delivery.
struct Recovery {
    /// From the new primary's first write to the first `202` answered after it.
    first_202: Duration,
    /// From the new primary's first write until Segment had every event
    /// acknowledged from the failover's start to one second after that first `202`.
    caught_up: Duration,
}

fn recovery(attempts: &[Attempt], delivered: &HashMap<String, Instant>, began: Instant, writable: Instant) -> Recovery {
    let first_202 = attempts
        .iter()
        .filter(|a| a.status == Some(202) && a.sent >= began && a.answered >= writable)
        .map(|a| a.answered - writable)
        .min()
        .expect("a 202 after the failover");
    let recovered = writable + first_202 + Duration::from_secs(1);
    let during = attempts.iter().filter(|a| a.status == Some(202) && a.answered >= began && a.answered < recovered);
    let last = during.flat_map(|a| a.ids.iter()).map(|id| delivered[id]).max().unwrap_or(writable);
    Recovery { first_202, caught_up: last.saturating_duration_since(writable) }
}

/// pg_auto_failover with synchronous replication: the primary's machine
/// dies (`kill -9` of its postmaster and keeper) under steady ingest, the
/// monitor promotes the standby; the old primary rejoins; a planned
/// switchover moves the primary back; then the standby goes, so that
/// commits wait for it until the monitor lets the primary go on alone.
/// Counted by messageId: every `202` reaches Segment; nothing but `202` and
/// `503` is answered; the service process is the same throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the HA lab: scripts/failover-test.sh starts it and runs this"]
async fn ha_lab_crash_switchover_and_standby_loss() {
    let lab = HaLab::from_env();
    let env = Env::on_database(&lab.url).await;
    let settings = [
        ("PRODUKTLY_DELIVERY_LEASE_MS", "5000"),
        ("PRODUKTLY_SEGMENT_REQUEST_TIMEOUT_MS", "2000"),
        ("PRODUKTLY_INGEST_COMMIT_TIMEOUT_MS", "2000"),
    ];
    let service = crate::common::process::ServiceProcess::start(&env, &settings).await;
    let pid = service.pid();
    let client = service.client();
    let mut loads = Vec::new();
    for n in 0..2 {
        let workspace = client.workspace_with_segment(&format!("wk_ha_{n}")).await;
        loads.extend(steady_loads(&service.base, &workspace, &format!("ha{n}")));
    }
    let primary: u16 = lab.run("primary").await.parse().unwrap();
    let standby = if primary == 5462 { 5463 } else { 5462 };
    let on_primary = format!("postgres://postgres@127.0.0.1:{primary}/produktly?sslmode=disable");
    run_on_server(&on_primary, "CREATE TABLE failover_probe (n int)").await.unwrap();
    let readiness_stop = tokio_util::sync::CancellationToken::new();
    let readiness = watch_readiness(service.base.clone(), readiness_stop.clone());
    tokio::time::sleep(Duration::from_secs(10)).await;

    let crashed = Instant::now();
    eprintln!("ha lab: {}", lab.run("crash").await);
    let promoted = lab.first_write(standby).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    eprintln!("ha lab: {}", lab.run("rejoin").await);
    lab.run("wait").await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let switching = Instant::now();
    lab.run("switchover").await;
    let switched = lab.first_write(primary).await;
    tokio::time::sleep(Duration::from_secs(10)).await;

    let standby_gone = Instant::now();
    eprintln!("ha lab: {}", lab.run("freeze-standby").await);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let attempts = stop_all(loads).await;
    readiness_stop.cancel();
    let not_ready = readiness.await.unwrap();

    let (ok, refused, cut) = answers(&attempts);
    let acknowledged = load::acknowledged(&attempts);
    common::every_event_arrives(&env.segment, &acknowledged).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = env.segment.accepted();
    let mut delivered: HashMap<String, Instant> = HashMap::new();
    let mut times: HashMap<String, Vec<Instant>> = HashMap::new();
    for r in &received {
        let id = r.message["messageId"].as_str().unwrap().to_owned();
        delivered.entry(id.clone()).or_insert(r.at);
        times.entry(id).or_default().push(r.at);
    }
    // Delivered twice, as documented (docs/operations.md, "Retries are stored once"):
    // - a batch Segment took just before the primary went, whose ack then
    //   failed or was lost with it (acks do not wait for the disk, by
    //   design), is sent again, with the same messageIds;
    // - a request answered 503 at the commit bound whose commit landed later
    //   and was delivered before the client sent it again: the resend finds
    //   nothing queued and is stored anew.
    // Any other second delivery (a retry stored twice while the first copy
    // was queued) is a failure.
    let twice: Vec<(&String, &Vec<Instant>)> = times.iter().filter(|(_, at)| at.len() > 1).collect();
    let windows = [(crashed, promoted), (switching, switched)];
    let near_a_failover =
        |at: Instant| windows.iter().any(|(began, ended)| at + Duration::from_secs(2) >= *began && at <= *ended);
    let resent_after_delivery = |id: &str, delivered: Instant| {
        attempts
            .iter()
            .any(|a| a.retry && a.status == Some(202) && a.sent >= delivered && a.ids.iter().any(|i| i == id))
    };
    let (at_failover, resent): (Vec<_>, Vec<_>) = twice.iter().partition(|(_, at)| near_a_failover(at[0]));
    let unexplained: Vec<&String> =
        resent.iter().filter(|(id, at)| !resent_after_delivery(id, at[0])).map(|(id, _)| *id).collect();
    let retried: HashSet<&str> =
        attempts.iter().filter(|a| a.retry).flat_map(|a| a.ids.iter().map(String::as_str)).collect();
    let crash = recovery(&attempts, &delivered, crashed, promoted);
    let switchover = recovery(&attempts, &delivered, switching, switched);
    let while_standby_gone: Vec<&Attempt> = attempts.iter().filter(|a| a.answered >= standby_gone).collect();
    let slowest_while_standby_gone = while_standby_gone.iter().map(|a| a.answered - a.sent).max().unwrap_or_default();
    let past_bound = while_standby_gone.iter().filter(|a| a.status == Some(503)).count();
    let failovers = client.metric("produktly_database_failovers_total").await;
    eprintln!(
        "ha lab figures:\n\
         - requests answered 202: {ok}, 503: {refused}, no answer: {cut}; events acknowledged: {}, retried by \
         the clients: {}\n\
         - acknowledged events lost: 0 (every one reached Segment); delivered twice: {}, of which at a \
         failover (acks lost as the primary went): {}, sent again by a client after their first delivery (a \
         commit past its bound that landed later): {}, otherwise: {}\n\
         - crash: the standby took writes {:?} after the kill; the first 202 {:?} after that; Segment had \
         every event acknowledged from the kill to a second after that 202 {:?} after the standby took writes\n\
         - switchover: the first 202 {:?} after the new primary took writes; delivery caught up the same way \
         {:?} after it\n\
         - standby frozen: slowest answer {:?}, {} answered 503 at the commit bound (2 s) until the monitor let \
         the primary go on alone\n\
         - /readyz not ready for about {not_ready:?}; database failovers counted: {failovers}",
        acknowledged.len(),
        retried.len(),
        twice.len(),
        at_failover.len(),
        resent.len() - unexplained.len(),
        unexplained.len(),
        promoted - crashed,
        crash.first_202,
        crash.caught_up,
        switchover.first_202,
        switchover.caught_up,
        slowest_while_standby_gone,
        past_bound,
    );
    assert!(
        unexplained.is_empty(),
        "delivered twice, neither at a failover nor resent after delivery: {unexplained:?}"
    );
    assert!(crash.first_202 < Duration::from_secs(10) && switchover.first_202 < Duration::from_secs(10));
    assert!(crash.caught_up < Duration::from_secs(30) && switchover.caught_up < Duration::from_secs(30));
    assert!(slowest_while_standby_gone < Duration::from_secs(4), "a request waited past the commit bound");
    assert!(failovers >= 2.0);
    assert!(env.segment.violations().is_empty());
    assert_eq!(service.pid(), pid);
    assert!(service.terminate(Duration::from_secs(20)).await.success(), "the same process, stopped cleanly");
}
