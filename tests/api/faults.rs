//! Faults real deployments meet: the process killed, the database out of
//! reach, Segment down or slow, the disk full. Every event answered `202`
//! reaches Segment at least once, with its messageId.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use figment::providers::Serialized;
use serde_json::{Value, json};

use crate::common::load::{self, Attempt, Load, Shape};
use crate::common::process::ServiceProcess;
use crate::common::proxy::TcpProxy;
use crate::common::{self, Backend, Env, TestWorkspace, WAIT, tour_start};

fn batch(prefix: &str, n: usize, size: usize) -> (Vec<String>, Value) {
    let ids: Vec<String> = (0..size).map(|i| format!("{prefix}-{n}-{i}")).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| json!({"event": "tour_start", "userId": "u", "messageId": id, "properties": {"tour_id": "t"}}))
        .collect();
    (ids, json!({"batch": events}))
}

/// A steady load of batches of 10 that does not retry.
fn load(base: &str, workspace: &TestWorkspace, prefix: &str, every: Duration) -> Load {
    Load::start(base, &workspace.ingest_key, prefix, Shape { events: 10, every, retry: false })
}

/// A batch refused with `503`: when it went, and its ids.
type Refused = (Instant, Arc<Vec<String>>);

/// What a load got: the ids answered `202`, and each batch refused. Nothing
/// else is answered.
fn outcomes(attempts: &[Attempt]) -> (Vec<String>, Vec<Refused>) {
    for attempt in attempts {
        assert!(matches!(attempt.status, None | Some(202 | 503)), "unexpected answer {:?}", attempt.status);
    }
    let refused = attempts.iter().filter(|a| a.status == Some(503)).map(|a| (a.sent, a.ids.clone())).collect();
    (load::acknowledged(attempts), refused)
}

async fn kill_9_under_load_loses_nothing_acknowledged(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    // The killed process may hold the workspace's lease: it runs out after
    // `lease_ms`, and the restarted one takes the workspace over.
    let short_lease = [("PRODUKTLY_DELIVERY_LEASE_MS", "3000"), ("PRODUKTLY_SEGMENT_REQUEST_TIMEOUT_MS", "2000")];
    let service = ServiceProcess::start(&env, &short_lease).await;
    let port: u16 = service.base.rsplit(':').next().unwrap().parse().unwrap();
    let workspace = service.client().workspace_with_segment("wk_kill9").await;
    let load = load(&service.base, &workspace, "kill9", Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    service.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = ServiceProcess::start_on(&env, port, &short_lease).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (acknowledged, _) = outcomes(&load.stop(Duration::ZERO).await);
    assert!(acknowledged.len() > 500, "the load ran: {} acknowledged", acknowledged.len());

    common::every_event_arrives(&env.segment, &acknowledged).await;
    let sent: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let duplicates = common::count_by_message_id(&env.segment.accepted()).values().filter(|count| **count > 1).count();
    eprintln!("kill -9: {} acknowledged, all delivered, {duplicates} delivered twice", sent.len());
    assert!(env.segment.violations().is_empty());
    assert!(restarted.terminate(Duration::from_secs(10)).await.success());
}

/// The database out of reach (as in a restart): ingest answers 503 at once,
/// `/readyz` says so, and everything recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_out_of_reach_answers_503_and_recovers() {
    let Some(env) = Env::new(Backend::Postgres).await else { return };
    let server = env.postgres_server();
    let proxy = TcpProxy::start(server).await;
    let proxied = env.db.url.replace(&server.to_string(), &proxy.addr.to_string());
    let app = env.start_app_with(|f| f.merge(Serialized::default("database_url", proxied))).await;
    let workspace = app.workspace_with_segment("wk_pg_outage").await;
    let load = load(&app.base, &workspace, "pg", Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cut_at = Instant::now();
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = app.ingest("/v1/track", &workspace, &tour_start("during")).await;
        assert_eq!(status, 503, "{body}");
        assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    }
    let started = Instant::now();
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);

    proxy.restore().await;
    let restored = Instant::now();
    common::eventually(Duration::from_secs(15), "ingest to recover", || async {
        app.ingest("/v1/track", &workspace, &tour_start("after")).await.0 == 202
    })
    .await;
    eprintln!("ingest recovered {:?} after the database came back", restored.elapsed());
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acknowledged, refused) = outcomes(&load.stop(Duration::ZERO).await);
    assert!(!refused.is_empty(), "some batches were refused during the outage");
    common::every_event_arrives(&env.segment, &acknowledged).await;
    let delivered = common::count_by_message_id(&env.segment.accepted());
    for (sent_at, ids) in refused {
        // A commit in flight at the cut may have reached the database and lost
        // only its answer: that batch is stored whole or not at all. One sent
        // after the cut is not stored.
        let stored = ids.iter().filter(|id| delivered.contains_key(*id)).count();
        let in_flight_at_cut = sent_at < cut_at;
        assert!(
            stored == 0 || (in_flight_at_cut && stored == ids.len()),
            "a refused batch was stored: {stored} of {ids:?}"
        );
    }
    app.stop().await;
}

/// Segment refuses connections, then answers 500, then recovers: everything
/// queued meanwhile arrives, and the requests during the outage are few.
async fn segment_outage_then_recovery(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let target = env.segment.uri().trim_start_matches("http://").parse().unwrap();
    let proxy = TcpProxy::start(target).await;
    let app = env
        .start_app_with(|f| {
            f.merge(Serialized::default("segment.us_url", format!("http://{}", proxy.addr)))
                .merge(Serialized::default("delivery.backoff_base_ms", 200))
                .merge(Serialized::default("delivery.backoff_max_ms", 1000))
        })
        .await;
    let workspace = app.workspace_with_segment("wk_outage").await;
    proxy.cut();
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        let (ids, body) = batch("outage", n, 10);
        assert_eq!(app.ingest("/v1/batch", &workspace, &body).await.0, 202);
        acknowledged.extend(ids);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.segment.request_count().await, 0, "nothing gets through");

    env.segment.start_outage(500);
    proxy.restore().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = env.segment.request_count().await;
    assert!((1..=40).contains(&during), "{during} requests in 3 s of 500s");
    let status = app.integration(&workspace).await["status"].clone();
    assert_eq!(status["state"], "waiting_for_segment", "failures in a row with no success: the region is down");

    env.segment.end_outage();
    common::every_event_arrives(&env.segment, &acknowledged).await;
    common::eventually(WAIT, "the queue to empty", || async {
        app.integration(&workspace).await["status"]["queued"] == 0
    })
    .await;
    app.stop().await;
}

/// Answers slower than the request timeout are retried, and never hold up
/// another workspace.
async fn a_slow_segment_is_retried_and_blocks_no_one(backend: Backend) {
    let Some(env) = Env::new(backend).await else { return };
    let app = env.start_app().await;
    let slow = app.workspace_with_segment("wk_slow").await;
    let fast = app.workspace_with_segment("wk_fast").await;
    env.segment.set_key_delay("wk_slow", Some(Duration::from_secs(3)));
    let (slow_ids, body) = batch("slow", 0, 20);
    app.ingest("/v1/batch", &slow, &body).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (fast_ids, body) = batch("fast", 0, 5);
    app.ingest("/v1/batch", &fast, &body).await;
    common::every_event_arrives(&env.segment, &fast_ids).await;
    assert!(started.elapsed() < Duration::from_secs(2), "the fast workspace waited {:?}", started.elapsed());
    common::eventually(WAIT, "timeouts of the slow workspace", || async {
        app.metric("produktly_segment_responses_total{status=\"0\"}").await >= 1.0
    })
    .await;

    env.segment.set_key_delay("wk_slow", None);
    common::every_event_arrives(&env.segment, &slow_ids).await;
    let delivered = common::count_by_message_id(&env.segment.accepted());
    assert!(delivered.keys().all(|id| slow_ids.contains(id) || fast_ids.contains(id)));
    app.stop().await;
}

/// A full disk under SQLite: ingest answers 503, nothing is stored in part,
/// and ingest recovers when space is freed. Needs a tiny filesystem (root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_answers_503_and_recovers() {
    let Some(disk) = TinyDisk::mount(4 * 1024 * 1024) else { return };
    let Some(env) = Env::new(Backend::Sqlite).await else { return };
    let url = format!("sqlite://{}?mode=rwc", disk.path.join("events.db").display());
    let app = env
        .start_app_with(|f| {
            f.merge(Serialized::default("database_url", url))
                .merge(Serialized::default("data_dir", disk.path.display().to_string()))
        })
        .await;
    let workspace = app.workspace_with_segment("wk_disk").await;
    env.segment.start_outage(503); // keep what is stored, so that the disk fills
    disk.fill_leaving(256 * 1024);

    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for n in 0..400 {
        let (ids, body) = batch("disk", n, 20);
        match app.ingest("/v1/batch", &workspace, &body).await {
            (202, _) => acknowledged.extend(ids),
            (503, body) => {
                assert_eq!(body["error"]["code"], "store_unavailable");
                refused.push(ids);
            }
            (status, body) => panic!("{status}: {body}"),
        }
        if refused.len() >= 3 {
            break;
        }
    }
    assert!(!refused.is_empty(), "the disk filled up ({} acknowledged)", acknowledged.len());
    disk.free();
    let freed = Instant::now();
    loop {
        let (ids, body) = batch("after", acknowledged.len(), 1);
        if app.ingest("/v1/batch", &workspace, &body).await.0 == 202 {
            acknowledged.extend(ids);
            break;
        }
        assert!(freed.elapsed() < Duration::from_secs(10), "ingest did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.segment.end_outage();
    common::every_event_arrives(&env.segment, &acknowledged).await;
    let delivered = common::count_by_message_id(&env.segment.accepted());
    for ids in refused {
        assert!(ids.iter().all(|id| !delivered.contains_key(id)), "a refused batch was stored in part");
    }
    app.stop().await;
}

/// A small tmpfs, unmounted when dropped.
struct TinyDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TinyDisk {
    /// `None` (a skip) where mounting is not allowed, unless in CI.
    fn mount(bytes: u64) -> Option<TinyDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            return common::skip("cannot mount a tmpfs here (needs root)");
        }
        Some(TinyDisk { path: dir.path().to_owned(), _dir: dir })
    }

    fn filler(&self) -> std::path::PathBuf {
        self.path.join("filler")
    }

    /// Takes all but `free` bytes of the disk.
    fn fill_leaving(&self, free: u64) {
        let stats = free_bytes(&self.path);
        let size = stats.saturating_sub(free);
        std::fs::write(self.filler(), vec![0u8; size as usize]).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Free bytes on the filesystem holding `path` (from `df`).
fn free_bytes(path: &std::path::Path) -> u64 {
    let output = std::process::Command::new("df").args(["-B1", "--output=avail"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}

on_both_backends!(
    kill_9_under_load_loses_nothing_acknowledged,
    segment_outage_then_recovery,
    a_slow_segment_is_retried_and_blocks_no_one,
);
