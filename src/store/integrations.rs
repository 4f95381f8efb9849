//! A workspace's Segment integration: its sealed write key and settings, and
//! what waits for it.

use const_format::concatcp;

use super::erasure::{DELETE_DEAD_LETTERS, DELETE_EVENTS, DELETE_INTEGRATION};
use super::rows::{INTEGRATION_COLUMNS, stored_list};
use super::{Integration, IntegrationConfig, Millis, QueueCounts, Store, StoreError};
use crate::store::db::{Sql, params};

static PUT: Sql = Sql::new(concatcp!(
    "INSERT INTO integrations \
       (workspace_id, sealed_write_key, write_key_hint, region, enabled, updated_at, next_attempt_at, \
        forwarded_events, omitted_properties, ip) \
     VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9) \
     ON CONFLICT (workspace_id) DO UPDATE SET sealed_write_key = excluded.sealed_write_key, \
       write_key_hint = excluded.write_key_hint, region = excluded.region, enabled = excluded.enabled, \
       forwarded_events = excluded.forwarded_events, omitted_properties = excluded.omitted_properties, ip = excluded.ip, \
       updated_at = excluded.updated_at, next_attempt_at = excluded.next_attempt_at, consecutive_failures = 0 \
     RETURNING ",
    INTEGRATION_COLUMNS
));
static SELECT: Sql = Sql::new(concatcp!("SELECT ", INTEGRATION_COLUMNS, " FROM integrations WHERE workspace_id = $1"));
static COUNTS: Sql = Sql::new(
    "SELECT (SELECT COUNT(*) FROM events WHERE workspace_id = $1), \
            (SELECT COUNT(*) FROM dead_letters WHERE workspace_id = $1)",
);
static SEALED_KEYS: Sql = Sql::new("SELECT workspace_id, sealed_write_key FROM integrations ORDER BY workspace_id");
static REPLACE_SEALED_KEY: Sql =
    Sql::new("UPDATE integrations SET sealed_write_key = $1 WHERE workspace_id = $2 AND sealed_write_key = $3");

impl Store {
    /// Sets a workspace's integration; delivery resumes at once (backoff reset).
    pub async fn put_integration(
        &self,
        workspace_id: &str,
        config: &IntegrationConfig,
        now: Millis,
    ) -> Result<Integration, StoreError> {
        let values = params![
            workspace_id,
            &config.sealed_write_key,
            &config.write_key_hint,
            config.region.as_str(),
            config.enabled,
            now,
            stored_list(&config.selection.events),
            stored_list(&config.selection.omit_properties),
            config.ip.as_str(),
        ];
        Ok(self.db.one(&PUT, values).await?)
    }

    pub async fn integration(&self, workspace_id: &str) -> Result<Option<Integration>, StoreError> {
        Ok(self.db.optional(&SELECT, params![workspace_id]).await?)
    }

    /// Deletes the integration and drops the workspace's queued and dead
    /// events; the queued events dropped, if it had an integration.
    pub async fn delete_integration(&self, workspace_id: &str) -> Result<Option<u64>, StoreError> {
        let mut tx = self.db.begin().await?;
        let deleted = tx.execute(&DELETE_INTEGRATION, params![workspace_id]).await?;
        let events = tx.execute(&DELETE_EVENTS, params![workspace_id]).await?;
        tx.execute(&DELETE_DEAD_LETTERS, params![workspace_id]).await?;
        tx.commit().await?;
        Ok((deleted == 1).then_some(events))
    }

    /// Undelivered and dead-lettered events of one workspace.
    pub async fn queue_counts(&self, workspace_id: &str) -> Result<QueueCounts, StoreError> {
        let (queued, dead): (i64, i64) = self.db.one(&COUNTS, params![workspace_id]).await?;
        Ok(QueueCounts { queued: queued as u64, dead: dead as u64 })
    }

    /// Every integration's workspace and sealed write key.
    pub async fn sealed_write_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.db.all(&SEALED_KEYS, params![]).await?)
    }

    /// Replaces a workspace's sealed write key if it is still `old`; whether it was.
    pub async fn replace_sealed_write_key(&self, workspace_id: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        Ok(self.db.execute(&REPLACE_SEALED_KEY, params![new, workspace_id, old]).await? == 1)
    }
}
