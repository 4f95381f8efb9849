//! The engine's own figure: the queue life the store gives each event (inserted
//! in commits of `COMMIT_ROWS`, read back `READ_ROWS` at a time by workspace
//! and id, deleted by id), driven directly on the database's own client in one
//! thread: no HTTP, no async, no pool. What it costs per event is the floor
//! under the store's share of a durable event; the bench prints it beside the
//! service's figures so that every change shows how far the store is from it.

use std::path::Path;
use std::time::Instant;

use super::BenchError;

mod statements {
    pub const INSERT_EVENT: &str = "INSERT INTO events (workspace_id, message_id, user_id, anonymous_id, payload, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    pub const READ_EVENTS: &str = "SELECT e.id, e.message_id, COALESCE(e.user_id, i.user_id) AS user_id, e.anonymous_id, e.payload, e.received_at FROM events e LEFT JOIN identities i ON e.user_id IS NULL AND i.workspace_id = e.workspace_id AND i.anonymous_id = e.anonymous_id WHERE e.workspace_id = ?1 AND e.id > ?2 ORDER BY e.id LIMIT ?3";
    pub const DELETE_EVENTS: &str = "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1)) AND workspace_id = ?2 AND EXISTS (SELECT 1 FROM integrations WHERE workspace_id = ?2 AND lease_id = ?3)";
    pub const BENCH_WORKSPACE: &str = "INSERT INTO workspaces (id, name, ingest_key, created_at) VALUES ('engine', 'engine', 'engine-key', 0); INSERT INTO integrations (workspace_id, sealed_write_key, write_key_hint, region, enabled, updated_at, next_attempt_at, lease_id) VALUES ('engine', 'x', 'x', 'us', 1, 0, 0, 'engine-lease')";
    pub fn configure(c: &rusqlite::Connection) -> rusqlite::Result<()> {
        c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
    }
}

/// Events per commit, as the group commit gathers them under load.
pub const COMMIT_ROWS: usize = 32;
/// Events per read, as a delivery round reads them.
pub const READ_ROWS: usize = 300;

/// CPU per event of the engine's queue life, and the time it took.
pub struct EngineFigure {
    pub micros_per_event: f64,
    pub events_per_sec: f64,
}

/// `events` events' queue life on a SQLite database of the store's schema at
/// `path` (created by the store beforehand), each with `payload`.
pub fn sqlite(path: &Path, events: usize, payload: &str) -> Result<EngineFigure, BenchError> {
    let failed = |e: rusqlite::Error| BenchError(format!("the SQLite engine run failed: {e}"));
    let connection = rusqlite::Connection::open(path).map_err(failed)?;
    statements::configure(&connection).map_err(failed)?;
    connection.execute_batch(statements::BENCH_WORKSPACE).map_err(failed)?;
    let started = (Instant::now(), thread_cpu_micros());
    let mut inserted = 0;
    let mut after = 0;
    while inserted < events {
        let commit_rows: usize =
            std::env::var("ENGINE_COMMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(COMMIT_ROWS);
        let rows = commit_rows.min(events - inserted);
        connection.execute_batch("BEGIN IMMEDIATE").map_err(failed)?;
        {
            let mut insert = connection.prepare_cached(statements::INSERT_EVENT).map_err(failed)?;
            for i in inserted..inserted + rows {
                let message_id = format!("engine-{i}");
                insert
                    .execute(rusqlite::params!["engine", message_id, "user-1", "anon-1", payload, 1_i64])
                    .map_err(failed)?;
            }
        }
        connection.execute_batch("COMMIT").map_err(failed)?;
        inserted += rows;
        while inserted - after >= READ_ROWS || (inserted == events && after < inserted) {
            let ids = read(&connection, after).map_err(failed)?;
            let Some(&last) = ids.last() else { break };
            let list = serde_json::to_string(&ids).expect("ids serialize");
            let mut delete = connection.prepare_cached(statements::DELETE_EVENTS).map_err(failed)?;
            delete.execute(rusqlite::params![list, "engine", "engine-lease"]).map_err(failed)?;
            after += ids.len();
            let _ = last;
        }
    }
    let elapsed = started.0.elapsed().as_secs_f64();
    let cpu = thread_cpu_micros() - started.1;
    Ok(EngineFigure { micros_per_event: cpu / events as f64, events_per_sec: events as f64 / elapsed })
}

/// One read of the delivery: the oldest `READ_ROWS` events, decoded as the store does.
fn read(connection: &rusqlite::Connection, _after: usize) -> rusqlite::Result<Vec<i64>> {
    let mut select = connection.prepare_cached(statements::READ_EVENTS)?;
    let rows = select.query_map(rusqlite::params!["engine", 0_i64, READ_ROWS as i64], |row| {
        let id: i64 = row.get(0)?;
        let _message_id: String = row.get(1)?;
        let _user_id: Option<String> = row.get(2)?;
        let _anonymous_id: Option<String> = row.get(3)?;
        let _payload: String = row.get(4)?;
        Ok(id)
    })?;
    rows.collect()
}

/// This thread's CPU time (user and system) so far, in microseconds.
fn thread_cpu_micros() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // After the command name in parentheses: fields 14 and 15 are utime and stime.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 * 1e6 / 100.0
}
