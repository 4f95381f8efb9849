//! The embedded SQLite store (WAL): the zero-setup default for one instance.
//!
//! SQLite allows one writer at a time, so every write goes through a pool of
//! one connection (the writer task never waits on a lock held by a sibling);
//! reads use a separate read-only pool. Lists of ids are bound as one JSON
//! array and expanded with `json_each`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};
use tokio_util::sync::CancellationToken;

use super::rows::{
    DEAD_LETTER_COLUMNS, DeadLetterRow, INTEGRATION_COLUMNS, IngestTargetRow, IntegrationRow, LeaseRow, REGION_COLUMNS,
    REGION_UP, RegionRow, WORKSPACE_COLUMNS, convert, stored_list,
};
use super::{
    DeadLetter, EXPIRED, IdentityLink, IngestTarget, Integration, IntegrationConfig, LINK_REFRESH_MILLIS, Millis,
    NewEvent, OnEvents, QueueCounts, QueuedEvent, RegionHealth, Rejection, RoundEnd, Store, StoreError, Workspace,
    WorkspaceLease, latest_links, schema_is_current,
};
use crate::segment::Region;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row INSERT, well under SQLite's limit on bound variables.
const ROWS_PER_INSERT: usize = 1000;
/// Events deleted per statement of an ack (a millisecond or two of the writer).
const ACK_CHUNK: usize = 250;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies the migrations.
    pub async fn connect(url: &str, max_readers: u32, acquire_timeout: Duration) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(folder) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(max_readers.clamp(1, 8))
            .acquire_timeout(acquire_timeout)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }
}

/// The condition under which a worker's writes to events take effect: its
/// workspace lease (`?2` workspace, `?3` lease id) is still the current one.
const LEASE_HELD: &str = "workspace_id = ?2 \
     AND EXISTS (SELECT 1 FROM integrations WHERE workspace_id = ?2 AND lease_id = ?3)";

/// A list of ids as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn json_ids(ids: &[i64]) -> String {
    json_list(ids)
}

/// A list as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).expect("ids and strings always serialize")
}

#[async_trait]
impl Store for SqliteStore {
    async fn check_ready(&self) -> Result<(), StoreError> {
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.reader)
            .await?;
        schema_is_current(&MIGRATOR, applied)
    }

    async fn insert_workspace(&self, workspace: &Workspace) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO workspaces (id, name, ingest_key, created_at, allowed_origins) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&workspace.id)
        .bind(&workspace.name)
        .bind(&workspace.ingest_key)
        .bind(workspace.created_at)
        .bind(&workspace.allowed_origins)
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn upsert_workspace(&self, workspace: &Workspace) -> Result<(Workspace, bool), StoreError> {
        let stored: Workspace = sqlx::query_as(&format!(
            "INSERT INTO workspaces (id, name, ingest_key, created_at, allowed_origins) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, allowed_origins = excluded.allowed_origins \
             RETURNING {WORKSPACE_COLUMNS}"
        ))
        .bind(&workspace.id)
        .bind(&workspace.name)
        .bind(&workspace.ingest_key)
        .bind(workspace.created_at)
        .bind(&workspace.allowed_origins)
        .fetch_one(&self.writer)
        .await?;
        let created = stored.ingest_key == workspace.ingest_key;
        Ok((stored, created))
    }

    async fn workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError> {
        let workspace = sqlx::query_as(&format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(workspace)
    }

    async fn rotate_ingest_key(&self, id: &str, new_key: &str) -> Result<Option<Workspace>, StoreError> {
        let workspace =
            sqlx::query_as(&format!("UPDATE workspaces SET ingest_key = ? WHERE id = ? RETURNING {WORKSPACE_COLUMNS}"))
                .bind(new_key)
                .bind(id)
                .fetch_optional(&self.writer)
                .await?;
        Ok(workspace)
    }

    async fn ingest_target(&self, ingest_key: &str) -> Result<Option<IngestTarget>, StoreError> {
        let target: Option<IngestTargetRow> = sqlx::query_as(
            "SELECT w.id AS workspace_id, COALESCE(i.enabled, 0) AS segment_enabled, w.allowed_origins, \
               i.forwarded_events, i.omitted_properties \
             FROM workspaces w LEFT JOIN integrations i ON i.workspace_id = w.id WHERE w.ingest_key = ?",
        )
        .bind(ingest_key)
        .fetch_optional(&self.reader)
        .await?;
        target.map(IngestTarget::try_from).transpose()
    }

    async fn put_integration(
        &self,
        workspace_id: &str,
        config: &IntegrationConfig,
        now: Millis,
    ) -> Result<Integration, StoreError> {
        let row: IntegrationRow = sqlx::query_as(&format!(
            "INSERT INTO integrations \
               (workspace_id, sealed_write_key, write_key_hint, region, enabled, updated_at, next_attempt_at, \
                forwarded_events, omitted_properties) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8) \
             ON CONFLICT (workspace_id) DO UPDATE SET sealed_write_key = excluded.sealed_write_key, \
               write_key_hint = excluded.write_key_hint, region = excluded.region, enabled = excluded.enabled, \
               forwarded_events = excluded.forwarded_events, omitted_properties = excluded.omitted_properties, \
               updated_at = excluded.updated_at, next_attempt_at = excluded.next_attempt_at, consecutive_failures = 0 \
             RETURNING {INTEGRATION_COLUMNS}"
        ))
        .bind(workspace_id)
        .bind(&config.sealed_write_key)
        .bind(&config.write_key_hint)
        .bind(config.region.as_str())
        .bind(config.enabled)
        .bind(now)
        .bind(stored_list(&config.selection.events))
        .bind(stored_list(&config.selection.omit_properties))
        .fetch_one(&self.writer)
        .await?;
        row.try_into()
    }

    async fn integration(&self, workspace_id: &str) -> Result<Option<Integration>, StoreError> {
        let row: Option<IntegrationRow> =
            sqlx::query_as(&format!("SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE workspace_id = ?"))
                .bind(workspace_id)
                .fetch_optional(&self.reader)
                .await?;
        row.map(Integration::try_from).transpose()
    }

    async fn delete_integration(&self, workspace_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let deleted = sqlx::query("DELETE FROM integrations WHERE workspace_id = ?")
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for table in ["events", "dead_letters"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE workspace_id = ?"))
                .bind(workspace_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn queue_counts(&self, workspace_id: &str) -> Result<QueueCounts, StoreError> {
        let (queued, dead): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM events WHERE workspace_id = ?1), \
                    (SELECT COUNT(*) FROM dead_letters WHERE workspace_id = ?1)",
        )
        .bind(workspace_id)
        .fetch_one(&self.reader)
        .await?;
        Ok(QueueCounts { queued: queued as u64, dead: dead as u64 })
    }

    async fn sealed_write_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let keys = sqlx::query_as("SELECT workspace_id, sealed_write_key FROM integrations ORDER BY workspace_id")
            .fetch_all(&self.reader)
            .await?;
        Ok(keys)
    }

    async fn replace_sealed_write_key(&self, workspace_id: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE integrations SET sealed_write_key = ? WHERE workspace_id = ? AND sealed_write_key = ?")
                .bind(new)
                .bind(workspace_id)
                .bind(old)
                .execute(&self.writer)
                .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn enqueue(&self, events: &[NewEvent], identities: &[IdentityLink]) -> Result<(), StoreError> {
        // The whole transaction is one multi-statement query, so it costs one
        // hand-over to the connection's thread instead of one per statement.
        let mut sql = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
        for chunk in events.chunks(ROWS_PER_INSERT) {
            sql.push("INSERT INTO events (workspace_id, message_id, user_id, anonymous_id, payload, received_at) ");
            sql.push_values(chunk, |mut row, event| {
                row.push_bind(&event.workspace_id)
                    .push_bind(&event.message_id)
                    .push_bind(&event.user_id)
                    .push_bind(&event.anonymous_id)
                    .push_bind(&event.payload)
                    .push_bind(event.received_at);
            });
            sql.push("; ");
        }
        let links = latest_links(identities);
        for chunk in links.chunks(ROWS_PER_INSERT) {
            sql.push("INSERT INTO identities (workspace_id, anonymous_id, user_id, updated_at) ");
            sql.push_values(chunk, |mut row, link| {
                row.push_bind(&link.workspace_id)
                    .push_bind(&link.anonymous_id)
                    .push_bind(&link.user_id)
                    .push_bind(link.at);
            });
            sql.push(
                " ON CONFLICT (workspace_id, anonymous_id) DO UPDATE SET user_id = excluded.user_id, \
                 updated_at = excluded.updated_at WHERE excluded.updated_at >= identities.updated_at \
                 AND (excluded.user_id <> identities.user_id OR excluded.updated_at >= identities.updated_at + ",
            );
            sql.push_bind(LINK_REFRESH_MILLIS);
            sql.push("); ");
        }
        sql.push("COMMIT;");
        let mut connection = self.writer.acquire().await?;
        if let Err(e) = sql.build().execute(&mut *connection).await {
            // A statement failed inside the transaction: undo it, so that the
            // connection is clean for the next commit. (Fails harmlessly when
            // the transaction never began.)
            let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn workspaces_with_events(&self) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT workspace_id FROM integrations i \
             WHERE enabled AND EXISTS (SELECT 1 FROM events e WHERE e.workspace_id = i.workspace_id)",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(ids)
    }

    async fn lease_workspaces(
        &self,
        candidates: &[String],
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<WorkspaceLease>, StoreError> {
        let rows: Vec<LeaseRow> = sqlx::query_as(&format!(
            "UPDATE integrations SET lease_id = lower(hex(randomblob(16))), leased_until = ?1 \
             WHERE workspace_id IN ( \
               SELECT workspace_id FROM integrations \
               WHERE workspace_id IN (SELECT value FROM json_each(?4)) AND enabled AND next_attempt_at <= ?2 \
                 AND {REGION_UP} AND (leased_until IS NULL OR leased_until < ?2) \
               ORDER BY next_attempt_at LIMIT ?3) \
             RETURNING workspace_id, lease_id, sealed_write_key, region, consecutive_failures"
        ))
        .bind(lease_until)
        .bind(now)
        .bind(limit as i64)
        .bind(json_list(candidates))
        .fetch_all(&self.writer)
        .await?;
        convert(rows)
    }

    async fn next_due(&self, candidates: &[String], now: Millis) -> Result<Option<Millis>, StoreError> {
        let due = sqlx::query_scalar(&format!(
            "SELECT MIN(CASE WHEN leased_until >= ?1 THEN leased_until ELSE next_attempt_at END) \
             FROM integrations WHERE enabled AND workspace_id IN (SELECT value FROM json_each(?2)) AND {REGION_UP}"
        ))
        .bind(now)
        .bind(json_list(candidates))
        .fetch_one(&self.reader)
        .await?;
        Ok(due)
    }

    async fn region_health(&self) -> Result<Vec<RegionHealth>, StoreError> {
        let rows: Vec<RegionRow> =
            sqlx::query_as(&format!("SELECT {REGION_COLUMNS} FROM segment_regions ORDER BY region"))
                .fetch_all(&self.reader)
                .await?;
        convert(rows)
    }

    async fn region_failed(
        &self,
        region: Region,
        now: Millis,
        down_after: u32,
        next_probe_at: Millis,
        probe: bool,
    ) -> Result<RegionHealth, StoreError> {
        let row: RegionRow = sqlx::query_as(&format!(
            "UPDATE segment_regions SET failures = failures + 1, \
               down_since = CASE WHEN down_since IS NULL AND failures + 1 >= ?2 THEN ?3 ELSE down_since END, \
               next_probe_at = CASE WHEN (down_since IS NULL AND failures + 1 >= ?2) OR ?5 THEN ?4 \
                                    ELSE next_probe_at END \
             WHERE region = ?1 RETURNING {REGION_COLUMNS}"
        ))
        .bind(region.as_str())
        .bind(i64::from(down_after))
        .bind(now)
        .bind(next_probe_at)
        .bind(probe)
        .fetch_one(&self.writer)
        .await?;
        row.try_into()
    }

    async fn region_succeeded(&self, region: Region, now: Millis) -> Result<Option<Millis>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let down_since: Option<Millis> = sqlx::query_scalar("SELECT down_since FROM segment_regions WHERE region = ?1")
            .bind(region.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
        sqlx::query("UPDATE segment_regions SET failures = 0, down_since = NULL, next_probe_at = 0 WHERE region = ?1")
            .bind(region.as_str())
            .execute(&mut *tx)
            .await?;
        if down_since.is_some() {
            sqlx::query(
                "UPDATE integrations SET next_attempt_at = ?2, consecutive_failures = 0 \
                 WHERE region = ?1 AND enabled AND consecutive_failures > 0",
            )
            .bind(region.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(down_since)
    }

    async fn lease_probe(
        &self,
        region: Region,
        candidates: &[String],
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<WorkspaceLease>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let claimed = sqlx::query(
            "UPDATE segment_regions SET next_probe_at = ?3 \
             WHERE region = ?1 AND down_since IS NOT NULL AND next_probe_at <= ?2",
        )
        .bind(region.as_str())
        .bind(now)
        .bind(lease_until)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            return Ok(None);
        }
        let row: Option<LeaseRow> = sqlx::query_as(
            "UPDATE integrations SET lease_id = lower(hex(randomblob(16))), leased_until = ?3 \
             WHERE workspace_id IN ( \
               SELECT workspace_id FROM integrations \
               WHERE workspace_id IN (SELECT value FROM json_each(?4)) AND region = ?1 AND enabled \
                 AND (leased_until IS NULL OR leased_until < ?2) \
               ORDER BY next_attempt_at LIMIT 1) \
             RETURNING workspace_id, lease_id, sealed_write_key, region, consecutive_failures",
        )
        .bind(region.as_str())
        .bind(now)
        .bind(lease_until)
        .bind(json_list(candidates))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None); // the transaction rolls back: the probe stays unclaimed
        };
        tx.commit().await?;
        Ok(Some(row.try_into()?))
    }

    async fn end_probe(&self, region: Region, claimed_until: Millis, next_probe_at: Millis) -> Result<(), StoreError> {
        sqlx::query("UPDATE segment_regions SET next_probe_at = ?3 WHERE region = ?1 AND next_probe_at = ?2")
            .bind(region.as_str())
            .bind(claimed_until)
            .bind(next_probe_at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn queued_events(
        &self,
        lease: &WorkspaceLease,
        after: i64,
        limit: usize,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        // A read: on the reader pool, so it never holds up the writer (ingest).
        let events = sqlx::query_as(
            "SELECT e.id, e.message_id, COALESCE(e.user_id, i.user_id) AS user_id, e.anonymous_id, e.payload, \
                    e.received_at \
             FROM events e LEFT JOIN identities i \
               ON e.user_id IS NULL AND i.workspace_id = e.workspace_id AND i.anonymous_id = e.anonymous_id \
             WHERE e.workspace_id = ? AND e.id > ? ORDER BY e.id LIMIT ?",
        )
        .bind(&lease.workspace_id)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(events)
    }

    async fn ack(&self, lease: &WorkspaceLease, event_ids: &[i64]) -> Result<u64, StoreError> {
        // A statement per chunk, each taking the writer anew: a commit of ingest
        // waiting for the writer gets it between two chunks. (If a chunk fails,
        // its events stay queued and go to Segment once more, same messageId.)
        let mut deleted = 0;
        for chunk in event_ids.chunks(ACK_CHUNK) {
            let sql = format!("DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1)) AND {LEASE_HELD}");
            let result = sqlx::query(&sql)
                .bind(json_ids(chunk))
                .bind(&lease.workspace_id)
                .bind(&lease.lease_id)
                .execute(&self.writer)
                .await?;
            deleted += result.rows_affected();
        }
        Ok(deleted)
    }

    async fn dead_letter(
        &self,
        lease: &WorkspaceLease,
        rejections: &[Rejection],
        now: Millis,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut moved = 0;
        for rejection in rejections {
            moved += sqlx::query(&format!(
                "INSERT INTO dead_letters (workspace_id, message_id, user_id, anonymous_id, payload, received_at, \
                                           reason, status, detail, failed_at) \
                 SELECT workspace_id, message_id, user_id, anonymous_id, payload, received_at, \
                        ?4, ?5, ?6, ?7 \
                 FROM events WHERE id = ?1 AND {LEASE_HELD}"
            ))
            .bind(rejection.event_id)
            .bind(&lease.workspace_id)
            .bind(&lease.lease_id)
            .bind(&rejection.reason)
            .bind(rejection.status.map(i32::from))
            .bind(&rejection.detail)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(&format!("DELETE FROM events WHERE id = ?1 AND {LEASE_HELD}"))
                .bind(rejection.event_id)
                .bind(&lease.workspace_id)
                .bind(&lease.lease_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    async fn extend_lease(&self, lease: &WorkspaceLease, until: Millis) -> Result<bool, StoreError> {
        let extended = sqlx::query("UPDATE integrations SET leased_until = ? WHERE workspace_id = ? AND lease_id = ?")
            .bind(until)
            .bind(&lease.workspace_id)
            .bind(&lease.lease_id)
            .execute(&self.writer)
            .await?;
        Ok(extended.rows_affected() == 1)
    }

    async fn release_lease(&self, lease: &WorkspaceLease) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE integrations SET lease_id = NULL, leased_until = NULL WHERE workspace_id = ? AND lease_id = ?",
        )
        .bind(&lease.workspace_id)
        .bind(&lease.lease_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn end_round(&self, lease: &WorkspaceLease, end: &RoundEnd) -> Result<(), StoreError> {
        let query = match end {
            RoundEnd::Delivered { delivered_at, next_attempt_at } => sqlx::query(
                "UPDATE integrations SET lease_id = NULL, leased_until = NULL, consecutive_failures = 0, \
                   next_attempt_at = ?, last_delivery_at = COALESCE(?, last_delivery_at) \
                 WHERE workspace_id = ? AND lease_id = ?",
            )
            .bind(next_attempt_at)
            .bind(delivered_at),
            RoundEnd::Failed { error, next_attempt_at, counts_as_failure } => sqlx::query(
                "UPDATE integrations SET lease_id = NULL, leased_until = NULL, \
                   consecutive_failures = consecutive_failures + ?, next_attempt_at = ?, \
                   last_error_at = ?, last_error_status = ?, last_error_message = ? \
                 WHERE workspace_id = ? AND lease_id = ?",
            )
            .bind(i32::from(*counts_as_failure))
            .bind(next_attempt_at)
            .bind(error.at)
            .bind(error.status.map(i32::from))
            .bind(&error.message),
        };
        query.bind(&lease.workspace_id).bind(&lease.lease_id).execute(&self.writer).await?;
        Ok(())
    }

    async fn expire_events(&self, cutoff: Millis, now: Millis, limit: usize) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM events WHERE received_at < ?1 \
               AND workspace_id NOT IN (SELECT workspace_id FROM integrations WHERE leased_until >= ?2) \
             LIMIT ?3",
        )
        .bind(cutoff)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = json_ids(&ids);
        let (reason, detail) = EXPIRED;
        let moved = sqlx::query(
            "INSERT INTO dead_letters (workspace_id, message_id, user_id, anonymous_id, payload, received_at, \
                                       reason, status, detail, failed_at) \
             SELECT workspace_id, message_id, user_id, anonymous_id, payload, received_at, ?, NULL, ?, ? \
             FROM events WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(reason)
        .bind(detail)
        .bind(now)
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(moved)
    }

    async fn listen_for_events(&self, _on_events: OnEvents, _stop: CancellationToken) {}

    async fn purge(
        &self,
        dead_before: Millis,
        identities_before: Millis,
        limit: usize,
    ) -> Result<(u64, u64), StoreError> {
        let dead = sqlx::query(
            "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE failed_at < ? LIMIT ?)",
        )
        .bind(dead_before)
        .bind(limit as i64)
        .execute(&self.writer)
        .await?
        .rows_affected();
        let identities = sqlx::query(
            "DELETE FROM identities WHERE rowid IN (SELECT rowid FROM identities WHERE updated_at < ? LIMIT ?)",
        )
        .bind(identities_before)
        .bind(limit as i64)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok((dead, identities))
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let depth: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&self.reader).await?;
        Ok(depth as u64)
    }

    async fn oldest_queued_at(&self) -> Result<Option<Millis>, StoreError> {
        let oldest = sqlx::query_scalar("SELECT MIN(received_at) FROM events").fetch_one(&self.reader).await?;
        Ok(oldest)
    }

    async fn dead_letters(&self, workspace_id: &str, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows: Vec<DeadLetterRow> = sqlx::query_as(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE workspace_id = ? ORDER BY id LIMIT ?"
        ))
        .bind(workspace_id)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(DeadLetter::from).collect())
    }

    async fn replay_dead_letters(&self, workspace_id: &str, now: Millis) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let replayed = sqlx::query(
            "INSERT INTO events (workspace_id, message_id, user_id, anonymous_id, payload, received_at) \
             SELECT workspace_id, message_id, user_id, anonymous_id, payload, ? \
             FROM dead_letters WHERE workspace_id = ? ORDER BY id",
        )
        .bind(now)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM dead_letters WHERE workspace_id = ?").bind(workspace_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(replayed)
    }
}
