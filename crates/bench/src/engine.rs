//! The engine's own figure: the queue life the store gives each event, with
//! the store's own statements (`QueueLife`), driven directly on each
//! database's plain synchronous client in one thread: no HTTP, no async, no
//! pool. Events are committed `COMMIT_ROWS` at a time over the bench's
//! workspaces, read back `READ_ROWS` at a time per workspace, and deleted by
//! id. Its CPU per event is the floor under the store's share of a durable
//! event; the bench prints it beside the service's figures.

use std::time::Instant;

use super::BenchError;
use super::cpu::CpuClock;
use produktly_segment::store::QueueLife;
use produktly_segment::store::db::Dialect;

/// Events per commit, as the group commit gathers them under load.
pub const COMMIT_ROWS: usize = 32;
/// Events per read, as a delivery round reads a workspace's.
pub const READ_ROWS: usize = 300;
/// Events each run takes through its life.
pub const EVENTS: usize = 200_000;
/// The lease the engine's workspaces are held under (the ack checks it).
const LEASE: &str = "engine-lease";

/// CPU per event of the engine run: the client's own, and PostgreSQL's
/// processes' (NaN on SQLite); and its rate.
pub struct EngineFigure {
    pub client_micros: f64,
    pub postgres_micros: f64,
    pub events_per_sec: f64,
}

/// The engine's queue life on the SQLite database at `path`, which the store
/// created (and migrated) beforehand.
pub fn sqlite(path: &std::path::Path, workspaces: usize, payload: &str) -> Result<EngineFigure, BenchError> {
    let failed = |e: rusqlite::Error| BenchError(format!("the SQLite engine run failed: {e}"));
    let connection = rusqlite::Connection::open(path).map_err(failed)?;
    connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;").map_err(failed)?;
    let life = QueueLife::of(Dialect::Sqlite);
    let ids = workspace_ids(workspaces);
    for id in &ids {
        connection.execute_batch(&seed_sql(id)).map_err(failed)?;
    }
    run(
        false,
        |batch| {
            connection.execute_batch("BEGIN IMMEDIATE")?;
            {
                let mut insert = connection.prepare_cached(life.commit)?;
                for (i, workspace) in batch {
                    let message_id = format!("engine-{i}");
                    insert.execute(rusqlite::params![workspace, message_id, "user-1", "anon-1", payload, 1_i64])?;
                }
            }
            connection.execute_batch("COMMIT")
        },
        |workspace, after| {
            let mut read = connection.prepare_cached(life.read)?;
            let rows = read.query_map(rusqlite::params![workspace, after, READ_ROWS as i64], |row| {
                // Decoded as the store decodes them: every column into its own value.
                let event: (i64, String, Option<String>, Option<String>, String, i64) =
                    (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?);
                Ok(event.0)
            })?;
            let read: Vec<i64> = rows.collect::<Result<_, _>>()?;
            let list = serde_json::to_string(&read).expect("ids serialize");
            connection.prepare_cached(life.ack)?.execute(rusqlite::params![list, workspace, LEASE])?;
            Ok(read.last().copied())
        },
        &ids,
    )
    .map_err(failed)
}

/// The engine's queue life on the PostgreSQL database at `url`, which the
/// store created (and migrated) beforehand.
pub fn postgres(url: &str, workspaces: usize, payload: &str) -> Result<EngineFigure, BenchError> {
    let failed = |e: postgres::Error| BenchError(format!("the PostgreSQL engine run failed: {e}"));
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(failed)?;
    let life = QueueLife::of(Dialect::Postgres);
    let ids = workspace_ids(workspaces);
    for id in &ids {
        client.batch_execute(&seed_sql(id)).map_err(failed)?;
    }
    let commit = client.prepare(life.commit).map_err(failed)?;
    let read = client.prepare(life.read).map_err(failed)?;
    let ack = client.prepare(life.ack).map_err(failed)?;
    let client = std::cell::RefCell::new(client);
    run(
        true,
        |batch| {
            let workspace: Vec<&str> = batch.iter().map(|(_, w)| w.as_str()).collect();
            let message: Vec<String> = batch.iter().map(|(i, _)| format!("engine-{i}")).collect();
            let rows = batch.len();
            let (user, anon, body) = (vec!["user-1"; rows], vec!["anon-1"; rows], vec![payload; rows]);
            let empty: Vec<&str> = Vec::new();
            let no_times: Vec<i64> = Vec::new();
            let received = vec![1_i64; rows];
            client.borrow_mut().execute(
                &commit,
                &[
                    &workspace,
                    &message,
                    &user,
                    &anon,
                    &produktly_segment::domain::LINK_REFRESH_MILLIS,
                    &body,
                    &received,
                    &empty,
                    &empty,
                    &empty,
                    &no_times,
                    &"engine",
                    &"",
                ],
            )?;
            Ok(())
        },
        |workspace, after| {
            let rows = client.borrow_mut().query(&read, &[&workspace, &after, &(READ_ROWS as i64)])?;
            let mut ids = Vec::with_capacity(rows.len());
            for row in &rows {
                let event: (i64, String, Option<String>, Option<String>, String, i64) =
                    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
                ids.push(event.0);
            }
            client.borrow_mut().execute(&ack, &[&ids, &workspace, &LEASE])?;
            Ok(ids.last().copied())
        },
        &ids,
    )
    .map_err(failed)
}

/// The queue life itself: commits over the workspaces in turn, and whenever a
/// workspace has `READ_ROWS` waiting (and at the end), its read and ack.
fn run<E>(
    with_postgres: bool,
    mut commit: impl FnMut(&[(usize, String)]) -> Result<(), E>,
    mut read_and_ack: impl FnMut(&str, i64) -> Result<Option<i64>, E>,
    workspaces: &[String],
) -> Result<EngineFigure, E> {
    let started =
        (Instant::now(), thread_cpu_micros(), with_postgres.then(|| CpuClock::read(std::process::id(), true)));
    let mut waiting = vec![0usize; workspaces.len()];
    let mut after = vec![0i64; workspaces.len()];
    let mut inserted = 0;
    while inserted < EVENTS {
        let batch: Vec<(usize, String)> = (inserted..(inserted + COMMIT_ROWS).min(EVENTS))
            .map(|i| (i, workspaces[i % workspaces.len()].clone()))
            .collect();
        commit(&batch)?;
        inserted += batch.len();
        for (i, _) in &batch {
            waiting[i % workspaces.len()] += 1;
        }
        for (w, workspace) in workspaces.iter().enumerate() {
            while waiting[w] >= READ_ROWS || (inserted == EVENTS && waiting[w] > 0) {
                let Some(last) = read_and_ack(workspace, after[w])? else { break };
                waiting[w] = waiting[w].saturating_sub(READ_ROWS);
                after[w] = last;
            }
        }
    }
    let elapsed = started.0.elapsed().as_secs_f64();
    let postgres_micros = started.2.map_or(f64::NAN, |before| {
        let used = CpuClock::read(std::process::id(), true).since(&before);
        used.per_event(EVENTS as u64)[1]
    });
    Ok(EngineFigure {
        client_micros: (thread_cpu_micros() - started.1) / EVENTS as f64,
        postgres_micros,
        events_per_sec: EVENTS as f64 / elapsed,
    })
}

fn workspace_ids(count: usize) -> Vec<String> {
    (0..count.max(1)).map(|i| format!("engine-{i}")).collect()
}

/// A workspace with an enabled integration, held under `LEASE`.
fn seed_sql(id: &str) -> String {
    format!(
        "INSERT INTO workspaces (id, name, ingest_key, created_at) VALUES ('{id}', '{id}', 'key-{id}', 0); \
         INSERT INTO integrations (workspace_id, sealed_write_key, write_key_hint, region, enabled, updated_at, \
           next_attempt_at, lease_id) VALUES ('{id}', 'sealed', 'hint', 'us', TRUE, 0, 0, '{LEASE}')"
    )
}

/// This thread's CPU time (user and system) so far, in microseconds.
fn thread_cpu_micros() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // After the command name in parentheses, utime and stime are the 12th and 13th fields.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 * 1e6 / 100.0
}
