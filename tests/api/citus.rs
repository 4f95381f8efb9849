//! Past one PostgreSQL: the store on Citus, distributed by workspace.
//! `scripts/citus-lab.sh` runs the `on_citus` tests here, and the store
//! conformance, instances, fairness and faults tests, on a real Citus
//! (a coordinator and two workers) through `PRODUKTLY_TEST_CITUS_URL`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::load::{self, Load, Shape};
use crate::common::{self, ADMIN_TOKEN, Backend, Env, SECRET_KEY, citus_coordinator};

/// `citus-distribute` where there is no Citus: a failure that says why, and
/// the store serves as before.
async fn citus_distribute_refuses_where_there_is_no_citus(backend: Backend) {
    if backend == Backend::Postgres && citus_coordinator().is_some() {
        return; // the PostgreSQL tests are on Citus in this run
    }
    let Some(env) = Env::new(backend).await else { return };
    let output = Command::new(env!("CARGO_BIN_EXE_produktly-segment"))
        .arg("citus-distribute")
        .env("DATABASE_URL", &env.db.url)
        .env("PRODUKTLY_DATA_DIR", env.db.dir.path())
        .env("PRODUKTLY_ADMIN_TOKENS", ADMIN_TOKEN)
        .env("PRODUKTLY_SECRET_KEY", SECRET_KEY)
        .output()
        .unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "{printed}");
    assert!(printed.contains("not a Citus coordinator") && printed.contains("distributed nothing"), "{printed}");

    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_not_citus").await;
    let (status, _) = app.ingest("/v1/track", &workspace, &common::tour_start_with_id("u", "t", "nc-1")).await;
    assert_eq!(status, 202);
    common::every_event_arrives(&env.segment, &["nc-1".to_owned()]).await;
    app.stop().await;
}

on_both_backends!(citus_distribute_refuses_where_there_is_no_citus);

/// Where each shard of the store's colocation group is: `(shard, port)`.
async fn placements(pool: &sqlx::PgPool) -> Vec<(i64, i32)> {
    sqlx::query_as(
        "SELECT shardid, nodeport FROM citus_shards WHERE table_name = 'integrations'::regclass ORDER BY shardid",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Steady ingest over 50 workspaces into two instances while Citus's
/// rebalancer moves shards between the workers: every `202` reaches Segment,
/// and none twice (no workspace was leased by two workers at once, and no
/// delete was lost in a move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Citus: scripts/citus-lab.sh runs it"]
async fn on_citus_shards_move_under_steady_ingest_and_every_event_arrives_once() {
    assert!(citus_coordinator().is_some(), "PRODUKTLY_TEST_CITUS_URL is not set: run scripts/citus-lab.sh");
    let env = Env::new(Backend::Postgres).await.expect("Citus");
    let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
    // Unbalance the workers first: move half of one worker's shards to the other.
    let before = placements(&pool).await;
    let ports: std::collections::BTreeSet<i32> = before.iter().map(|(_, port)| *port).collect();
    let (to, from) = (*ports.first().unwrap(), *ports.last().unwrap());
    let on_from: Vec<i64> = before.iter().filter(|(_, port)| *port == from).map(|(shard, _)| *shard).collect();
    for shard in &on_from[..on_from.len() / 2] {
        sqlx::query(
            "SELECT citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3, shard_transfer_mode => 'block_writes')",
        )
        .bind(shard)
        .bind(from)
        .bind(to)
        .execute(&pool)
        .await
        .unwrap();
    }
    let unbalanced = placements(&pool).await;

    let instances = [env.start_app().await, env.start_app().await];
    let mut loads = Vec::new();
    for n in 0..50 {
        let instance = &instances[n % 2];
        let workspace = instance.workspace_with_segment(&format!("wk_citus_{n}")).await;
        let shape = Shape { events: 1, every: Duration::from_millis(100), retry: true };
        loads.push(Load::start(&instance.base, &workspace.ingest_key, &format!("citus{n}"), shape));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rebalance = Instant::now();
    sqlx::query("SELECT citus_rebalance_start(shard_transfer_mode => 'force_logical')").execute(&pool).await.unwrap();
    sqlx::query("SELECT citus_rebalance_wait()").execute(&pool).await.unwrap();
    let rebalanced = rebalance.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut attempts = Vec::new();
    for load in loads {
        attempts.extend(load.stop(Duration::from_secs(20)).await);
    }
    let after = placements(&pool).await;

    let moved = unbalanced.iter().zip(&after).filter(|(a, b)| a.1 != b.1).count();
    let acknowledged = load::acknowledged(&attempts);
    let refused = attempts.iter().filter(|a| a.status != Some(202)).count();
    common::every_event_arrives(&env.segment, &acknowledged).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = common::count_by_message_id(&env.segment.accepted());
    let twice: Vec<&String> = counts.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    let per_node =
        |placed: &[(i64, i32)]| ports.iter().map(|p| placed.iter().filter(|s| s.1 == *p).count()).collect::<Vec<_>>();
    eprintln!(
        "citus rebalance: shards per worker {:?} -> {:?}, {moved} shard groups moved in {rebalanced:?} under \
         ingest; {} requests, {} answered other than 202 (retried); {} events acknowledged, all delivered, {} twice",
        per_node(&unbalanced),
        per_node(&after),
        attempts.len(),
        refused,
        acknowledged.len(),
        twice.len(),
    );
    assert!(moved > 0, "the rebalancer moved nothing");
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert!(env.segment.violations().is_empty());
    for instance in instances {
        instance.stop().await;
    }
}
