//! The PostgreSQL store: production, and several instances on one database.
//!
//! Bulk writes bind column arrays and `UNNEST` them (one round trip per batch);
//! claims use `FOR UPDATE SKIP LOCKED` so instances never wait on each other.

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use super::rows::{
    DEAD_LETTER_COLUMNS, DeadLetterRow, INTEGRATION_COLUMNS, IngestTargetRow, IntegrationRow, LeaseRow, REGION_COLUMNS,
    REGION_UP, RegionRow, WORKSPACE_COLUMNS, convert, stored_list,
};
use crate::segment::Region;
use crate::time::now_millis;

use super::{
    DeadLetter, EXPIRED, IdentityLink, IngestTarget, Integration, IntegrationConfig, LINK_REFRESH_MILLIS, Millis,
    NewEvent, OnEvents, QueueCounts, QueuedEvent, RegionHealth, Rejection, RoundEnd, Store, StoreError, Workspace,
    WorkspaceLease, latest_links, schema_is_current,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
    /// When this instance last announced new events (Unix ms).
    last_announced: AtomicI64,
}

/// The channel on which commits of new events are announced to all instances.
const EVENTS_CHANNEL: &str = "produktly_events";
/// The condition under which a worker's writes to events take effect: its
/// workspace lease (`$2` workspace, `$3` lease id) is still the current one.
const LEASE_HELD: &str = "workspace_id = $2 \
     AND EXISTS (SELECT 1 FROM integrations WHERE workspace_id = $2 AND lease_id = $3)";

/// Least time between two announcements from one instance. A notification
/// roughly doubles the cost of a commit, and it is only a hint: the instance
/// that commits wakes its own delivery at once anyway.
const ANNOUNCE_INTERVAL_MS: Millis = 100;
const MAX_ANNOUNCEMENT: usize = 7_900;

impl PostgresStore {
    /// Connects and applies the migrations (sqlx holds an advisory lock while
    /// migrating, so instances starting together do not race).
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<PostgresStore, StoreError> {
        // JIT compilation pays off for long analytical queries; for these short
        // ones it costs milliseconds each time a cost estimate crosses its
        // threshold (as a growing queue's estimates do), so it is off.
        let options = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PostgresStore { pool, last_announced: AtomicI64::new(0) })
    }

    /// What this commit announces to other instances: the workspaces of its
    /// events, comma-separated (ids hold no comma), at most one announcement
    /// every `ANNOUNCE_INTERVAL_MS`; empty for none.
    fn announcement(&self, events: &[NewEvent]) -> String {
        let now = now_millis();
        let last = self.last_announced.load(Ordering::Relaxed);
        let due = !events.is_empty()
            && now - last >= ANNOUNCE_INTERVAL_MS
            && self.last_announced.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        if !due {
            return String::new();
        }
        let mut ids: Vec<&str> = events.iter().map(|e| e.workspace_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut payload = String::new();
        for id in ids {
            // NOTIFY payloads are limited to 8,000 bytes; the rest is found by polling.
            if payload.len() + id.len() + 1 > MAX_ANNOUNCEMENT {
                break;
            }
            if !payload.is_empty() {
                payload.push(',');
            }
            payload.push_str(id);
        }
        payload
    }

    /// Passes on every announcement until the connection fails.
    async fn relay_notifications(&self, on_events: &OnEvents) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        loop {
            let notification = listener.recv().await?;
            on_events(notification.payload().split(',').filter(|id| !id.is_empty()).map(str::to_owned).collect());
        }
    }
}

/// Creates an empty database `name` through the server at `url` (for tests
/// and the benchmark, which each use a database of their own).
pub async fn create_database(url: &str, name: &str) -> Result<(), sqlx::Error> {
    run_admin(url, &format!("CREATE DATABASE \"{name}\"")).await
}

/// Drops database `name`, disconnecting its sessions.
pub async fn drop_database(url: &str, name: &str) -> Result<(), sqlx::Error> {
    run_admin(url, &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
}

async fn run_admin(url: &str, statement: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let connect = sqlx::PgConnection::connect(url);
    let mut connection =
        tokio::time::timeout(Duration::from_secs(5), connect).await.map_err(|_| sqlx::Error::PoolTimedOut)??;
    sqlx::query(statement).execute(&mut connection).await?;
    connection.close().await
}

/// `url` with its database replaced by `name`.
pub fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// Announces new events to every instance when the transaction commits.
async fn notify_events(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')").bind(EVENTS_CHANNEL).execute(&mut **tx).await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn check_ready(&self) -> Result<(), StoreError> {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(&self.pool).await?;
        schema_is_current(&MIGRATOR, applied)
    }

    async fn insert_workspace(&self, workspace: &Workspace) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO workspaces (id, name, ingest_key, created_at, allowed_origins) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&workspace.id)
        .bind(&workspace.name)
        .bind(&workspace.ingest_key)
        .bind(workspace.created_at)
        .bind(&workspace.allowed_origins)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn upsert_workspace(&self, workspace: &Workspace) -> Result<(Workspace, bool), StoreError> {
        let stored: Workspace = sqlx::query_as(&format!(
            "INSERT INTO workspaces (id, name, ingest_key, created_at, allowed_origins) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, allowed_origins = excluded.allowed_origins \
             RETURNING {WORKSPACE_COLUMNS}"
        ))
        .bind(&workspace.id)
        .bind(&workspace.name)
        .bind(&workspace.ingest_key)
        .bind(workspace.created_at)
        .bind(&workspace.allowed_origins)
        .fetch_one(&self.pool)
        .await?;
        let created = stored.ingest_key == workspace.ingest_key;
        Ok((stored, created))
    }

    async fn workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError> {
        let workspace = sqlx::query_as(&format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(workspace)
    }

    async fn rotate_ingest_key(&self, id: &str, new_key: &str) -> Result<Option<Workspace>, StoreError> {
        let workspace = sqlx::query_as(&format!(
            "UPDATE workspaces SET ingest_key = $1 WHERE id = $2 RETURNING {WORKSPACE_COLUMNS}"
        ))
        .bind(new_key)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(workspace)
    }

    async fn ingest_target(&self, ingest_key: &str) -> Result<Option<IngestTarget>, StoreError> {
        let target: Option<IngestTargetRow> = sqlx::query_as(
            "SELECT w.id AS workspace_id, COALESCE(i.enabled, FALSE) AS segment_enabled, w.allowed_origins, \
               i.forwarded_events, i.omitted_properties \
             FROM workspaces w LEFT JOIN integrations i ON i.workspace_id = w.id WHERE w.ingest_key = $1",
        )
        .bind(ingest_key)
        .fetch_optional(&self.pool)
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
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8) \
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
        .fetch_one(&self.pool)
        .await?;
        row.try_into()
    }

    async fn integration(&self, workspace_id: &str) -> Result<Option<Integration>, StoreError> {
        let row: Option<IntegrationRow> =
            sqlx::query_as(&format!("SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE workspace_id = $1"))
                .bind(workspace_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Integration::try_from).transpose()
    }

    async fn delete_integration(&self, workspace_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM integrations WHERE workspace_id = $1")
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for table in ["events", "dead_letters"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE workspace_id = $1"))
                .bind(workspace_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn queue_counts(&self, workspace_id: &str) -> Result<QueueCounts, StoreError> {
        let (queued, dead): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM events WHERE workspace_id = $1), \
                    (SELECT COUNT(*) FROM dead_letters WHERE workspace_id = $1)",
        )
        .bind(workspace_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueCounts { queued: queued as u64, dead: dead as u64 })
    }

    async fn sealed_write_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let keys = sqlx::query_as("SELECT workspace_id, sealed_write_key FROM integrations ORDER BY workspace_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(keys)
    }

    async fn replace_sealed_write_key(&self, workspace_id: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE integrations SET sealed_write_key = $1 WHERE workspace_id = $2 AND sealed_write_key = $3",
        )
        .bind(new)
        .bind(workspace_id)
        .bind(old)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn enqueue(&self, events: &[NewEvent], identities: &[IdentityLink]) -> Result<(), StoreError> {
        // One statement, so one round trip and an implicit transaction: the
        // events, the identity links and the notification commit together.
        let column = |f: fn(&NewEvent) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
        let links = latest_links(identities);
        let link_column = |f: fn(&IdentityLink) -> &str| links.iter().map(|l| f(l)).collect::<Vec<_>>();
        sqlx::query(
            "WITH new_events AS ( \
               INSERT INTO events (workspace_id, message_id, user_id, anonymous_id, payload, received_at) \
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])), \
             new_links AS ( \
               INSERT INTO identities (workspace_id, anonymous_id, user_id, updated_at) \
               SELECT * FROM UNNEST($7::text[], $8::text[], $9::text[], $10::bigint[]) \
               ON CONFLICT (workspace_id, anonymous_id) DO UPDATE SET user_id = excluded.user_id, \
                 updated_at = excluded.updated_at WHERE excluded.updated_at >= identities.updated_at \
                 AND (excluded.user_id <> identities.user_id OR excluded.updated_at >= identities.updated_at + $13)) \
             SELECT pg_notify($11, $12) WHERE $12 <> ''",
        )
        .bind(column(|e| Some(&e.workspace_id)))
        .bind(column(|e| Some(&e.message_id)))
        .bind(column(|e| e.user_id.as_deref()))
        .bind(column(|e| e.anonymous_id.as_deref()))
        .bind(column(|e| Some(&e.payload)))
        .bind(events.iter().map(|e| e.received_at).collect::<Vec<_>>())
        .bind(link_column(|l| &l.workspace_id))
        .bind(link_column(|l| &l.anonymous_id))
        .bind(link_column(|l| &l.user_id))
        .bind(links.iter().map(|l| l.at).collect::<Vec<_>>())
        .bind(EVENTS_CHANNEL)
        .bind(self.announcement(events))
        .bind(LINK_REFRESH_MILLIS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn workspaces_with_events(&self) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT workspace_id FROM integrations i \
             WHERE enabled AND EXISTS (SELECT 1 FROM events e WHERE e.workspace_id = i.workspace_id)",
        )
        .fetch_all(&self.pool)
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
            "UPDATE integrations SET lease_id = gen_random_uuid()::text, leased_until = $1 \
             WHERE workspace_id IN ( \
               SELECT workspace_id FROM integrations \
               WHERE workspace_id = ANY($4) AND enabled AND next_attempt_at <= $2 AND {REGION_UP} \
                 AND (leased_until IS NULL OR leased_until < $2) \
               ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING workspace_id, lease_id, sealed_write_key, region, consecutive_failures"
        ))
        .bind(lease_until)
        .bind(now)
        .bind(limit as i64)
        .bind(candidates)
        .fetch_all(&self.pool)
        .await?;
        convert(rows)
    }

    async fn next_due(&self, candidates: &[String], now: Millis) -> Result<Option<Millis>, StoreError> {
        let due = sqlx::query_scalar(&format!(
            "SELECT MIN(CASE WHEN leased_until >= $1 THEN leased_until ELSE next_attempt_at END) \
             FROM integrations WHERE enabled AND workspace_id = ANY($2) AND {REGION_UP}"
        ))
        .bind(now)
        .bind(candidates)
        .fetch_one(&self.pool)
        .await?;
        Ok(due)
    }

    async fn region_health(&self) -> Result<Vec<RegionHealth>, StoreError> {
        let rows: Vec<RegionRow> =
            sqlx::query_as(&format!("SELECT {REGION_COLUMNS} FROM segment_regions ORDER BY region"))
                .fetch_all(&self.pool)
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
               down_since = CASE WHEN down_since IS NULL AND failures + 1 >= $2 THEN $3 ELSE down_since END, \
               next_probe_at = CASE WHEN (down_since IS NULL AND failures + 1 >= $2) OR $5 THEN $4 \
                                    ELSE next_probe_at END \
             WHERE region = $1 RETURNING {REGION_COLUMNS}"
        ))
        .bind(region.as_str())
        .bind(i32::try_from(down_after).unwrap_or(i32::MAX))
        .bind(now)
        .bind(next_probe_at)
        .bind(probe)
        .fetch_one(&self.pool)
        .await?;
        row.try_into()
    }

    async fn region_succeeded(&self, region: Region, now: Millis) -> Result<Option<Millis>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let down_since: Option<Millis> =
            sqlx::query_scalar("SELECT down_since FROM segment_regions WHERE region = $1 FOR UPDATE")
                .bind(region.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        sqlx::query("UPDATE segment_regions SET failures = 0, down_since = NULL, next_probe_at = 0 WHERE region = $1")
            .bind(region.as_str())
            .execute(&mut *tx)
            .await?;
        if down_since.is_some() {
            sqlx::query(
                "UPDATE integrations SET next_attempt_at = $2, consecutive_failures = 0 \
                 WHERE region = $1 AND enabled AND consecutive_failures > 0",
            )
            .bind(region.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            notify_events(&mut tx).await?;
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
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE segment_regions SET next_probe_at = $3 \
             WHERE region = $1 AND down_since IS NOT NULL AND next_probe_at <= $2",
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
            "UPDATE integrations SET lease_id = gen_random_uuid()::text, leased_until = $3 \
             WHERE workspace_id IN ( \
               SELECT workspace_id FROM integrations \
               WHERE workspace_id = ANY($4) AND region = $1 AND enabled \
                 AND (leased_until IS NULL OR leased_until < $2) \
               ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING workspace_id, lease_id, sealed_write_key, region, consecutive_failures",
        )
        .bind(region.as_str())
        .bind(now)
        .bind(lease_until)
        .bind(candidates)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None); // the transaction rolls back: the probe stays unclaimed
        };
        tx.commit().await?;
        Ok(Some(row.try_into()?))
    }

    async fn end_probe(&self, region: Region, claimed_until: Millis, next_probe_at: Millis) -> Result<(), StoreError> {
        sqlx::query("UPDATE segment_regions SET next_probe_at = $3 WHERE region = $1 AND next_probe_at = $2")
            .bind(region.as_str())
            .bind(claimed_until)
            .bind(next_probe_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn queued_events(
        &self,
        lease: &WorkspaceLease,
        after: i64,
        limit: usize,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        let events = sqlx::query_as(
            "SELECT e.id, e.message_id, COALESCE(e.user_id, i.user_id) AS user_id, e.anonymous_id, e.payload, \
                    e.received_at \
             FROM events e LEFT JOIN identities i \
               ON e.user_id IS NULL AND i.workspace_id = e.workspace_id AND i.anonymous_id = e.anonymous_id \
             WHERE e.workspace_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3",
        )
        .bind(&lease.workspace_id)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(events)
    }

    async fn ack(&self, lease: &WorkspaceLease, event_ids: &[i64]) -> Result<u64, StoreError> {
        // Without waiting for the disk: an ack lost in a crash only means its
        // events go to Segment once more (same messageId), and ingest's
        // commits, which must wait for the disk, do not queue behind acks'.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        let result = sqlx::query(&format!("DELETE FROM events WHERE id = ANY($1) AND {LEASE_HELD}"))
            .bind(event_ids)
            .bind(&lease.workspace_id)
            .bind(&lease.lease_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }

    async fn dead_letter(
        &self,
        lease: &WorkspaceLease,
        rejections: &[Rejection],
        now: Millis,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(&format!(
            "WITH r AS (SELECT * FROM UNNEST($1::bigint[], $4::text[], $5::int[], $6::text[]) \
                          AS r(id, reason, status, detail)), \
             moved AS (DELETE FROM events e USING r WHERE e.id = r.id AND {LEASE_HELD} \
                       RETURNING e.workspace_id, e.message_id, e.user_id, e.anonymous_id, e.payload, \
                                 e.received_at, r.reason, r.status, r.detail) \
             INSERT INTO dead_letters (workspace_id, message_id, user_id, anonymous_id, payload, received_at, \
                                       reason, status, detail, failed_at) \
             SELECT workspace_id, message_id, user_id, anonymous_id, payload, received_at, \
                    reason, status, detail, $7 FROM moved"
        ))
        .bind(rejections.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(&lease.workspace_id)
        .bind(&lease.lease_id)
        .bind(rejections.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
        .bind(rejections.iter().map(|r| r.status.map(i32::from)).collect::<Vec<_>>())
        .bind(rejections.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn extend_lease(&self, lease: &WorkspaceLease, until: Millis) -> Result<bool, StoreError> {
        let extended =
            sqlx::query("UPDATE integrations SET leased_until = $1 WHERE workspace_id = $2 AND lease_id = $3")
                .bind(until)
                .bind(&lease.workspace_id)
                .bind(&lease.lease_id)
                .execute(&self.pool)
                .await?;
        Ok(extended.rows_affected() == 1)
    }

    async fn release_lease(&self, lease: &WorkspaceLease) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE integrations SET lease_id = NULL, leased_until = NULL WHERE workspace_id = $1 AND lease_id = $2",
        )
        .bind(&lease.workspace_id)
        .bind(&lease.lease_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn end_round(&self, lease: &WorkspaceLease, end: &RoundEnd) -> Result<(), StoreError> {
        let query = match end {
            RoundEnd::Delivered { delivered_at, next_attempt_at } => sqlx::query(
                "UPDATE integrations SET lease_id = NULL, leased_until = NULL, consecutive_failures = 0, \
                   next_attempt_at = $1, last_delivery_at = COALESCE($2, last_delivery_at) \
                 WHERE workspace_id = $3 AND lease_id = $4",
            )
            .bind(next_attempt_at)
            .bind(delivered_at),
            RoundEnd::Failed { error, next_attempt_at, counts_as_failure } => sqlx::query(
                "UPDATE integrations SET lease_id = NULL, leased_until = NULL, \
                   consecutive_failures = consecutive_failures + $1, next_attempt_at = $2, \
                   last_error_at = $3, last_error_status = $4, last_error_message = $5 \
                 WHERE workspace_id = $6 AND lease_id = $7",
            )
            .bind(i32::from(*counts_as_failure))
            .bind(next_attempt_at)
            .bind(error.at)
            .bind(error.status.map(i32::from))
            .bind(&error.message),
        };
        query.bind(&lease.workspace_id).bind(&lease.lease_id).execute(&self.pool).await?;
        Ok(())
    }

    async fn expire_events(&self, cutoff: Millis, now: Millis, limit: usize) -> Result<u64, StoreError> {
        let (reason, detail) = EXPIRED;
        let result = sqlx::query(
            "WITH moved AS ( \
               DELETE FROM events WHERE (workspace_id, id) IN ( \
                 SELECT workspace_id, id FROM events WHERE received_at < $1 \
                   AND workspace_id NOT IN (SELECT workspace_id FROM integrations WHERE leased_until >= $2) \
                 LIMIT $3 FOR UPDATE SKIP LOCKED) \
               RETURNING workspace_id, message_id, user_id, anonymous_id, payload, received_at) \
             INSERT INTO dead_letters (workspace_id, message_id, user_id, anonymous_id, payload, received_at, \
                                       reason, status, detail, failed_at) \
             SELECT workspace_id, message_id, user_id, anonymous_id, payload, received_at, \
                    $4, NULL, $5, $2 FROM moved",
        )
        .bind(cutoff)
        .bind(now)
        .bind(limit as i64)
        .bind(reason)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn listen_for_events(&self, on_events: OnEvents, stop: CancellationToken) {
        loop {
            let listened = tokio::select! {
                _ = stop.cancelled() => return,
                listened = self.relay_notifications(&on_events) => listened,
            };
            if let Err(e) = listened {
                tracing::warn!(error = %e, "lost the event notifications; polling until they are back");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn purge(
        &self,
        dead_before: Millis,
        identities_before: Millis,
        limit: usize,
    ) -> Result<(u64, u64), StoreError> {
        let dead = sqlx::query(
            "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE failed_at < $1 LIMIT $2)",
        )
        .bind(dead_before)
        .bind(limit as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let identities = sqlx::query(
            "DELETE FROM identities WHERE ctid IN (SELECT ctid FROM identities WHERE updated_at < $1 LIMIT $2)",
        )
        .bind(identities_before)
        .bind(limit as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((dead, identities))
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let depth: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&self.pool).await?;
        Ok(depth as u64)
    }

    async fn oldest_queued_at(&self) -> Result<Option<Millis>, StoreError> {
        let oldest = sqlx::query_scalar("SELECT MIN(received_at) FROM events").fetch_one(&self.pool).await?;
        Ok(oldest)
    }

    async fn dead_letters(&self, workspace_id: &str, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows: Vec<DeadLetterRow> = sqlx::query_as(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE workspace_id = $1 ORDER BY id LIMIT $2"
        ))
        .bind(workspace_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(DeadLetter::from).collect())
    }

    async fn replay_dead_letters(&self, workspace_id: &str, now: Millis) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "WITH moved AS (DELETE FROM dead_letters WHERE workspace_id = $1 \
                            RETURNING id, workspace_id, message_id, user_id, anonymous_id, payload) \
             INSERT INTO events (workspace_id, message_id, user_id, anonymous_id, payload, received_at) \
             SELECT workspace_id, message_id, user_id, anonymous_id, payload, $2 FROM moved ORDER BY id",
        )
        .bind(workspace_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        notify_events(&mut tx).await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }
}
