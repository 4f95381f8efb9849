//! Workspaces and their ingest keys.

use const_format::concatcp;

use super::erasure::FORGET_DELETED;
use super::rows::{INGEST_TARGET_COLUMNS, WORKSPACE_COLUMNS};
use super::{IngestTarget, Store, StoreError, Workspace};
use crate::domain::AllowedOrigins;
use crate::store::db::{Sql, params};

static INSERT: Sql = Sql::new(
    "INSERT INTO workspaces (id, name, ingest_key, created_at, allowed_origins) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO NOTHING",
);
static UPSERT: Sql = Sql::new(concatcp!(
    "INSERT INTO workspaces (id, name, ingest_key, created_at, allowed_origins) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO UPDATE SET name = excluded.name, allowed_origins = excluded.allowed_origins \
     RETURNING ",
    WORKSPACE_COLUMNS
));
static SELECT: Sql = Sql::new(concatcp!("SELECT ", WORKSPACE_COLUMNS, " FROM workspaces WHERE id = $1"));
static PAGE: Sql =
    Sql::new(concatcp!("SELECT ", WORKSPACE_COLUMNS, " FROM workspaces WHERE id > $1 ORDER BY id LIMIT $2"));
static ROTATE_KEY: Sql =
    Sql::new(concatcp!("UPDATE workspaces SET ingest_key = $1 WHERE id = $2 RETURNING ", WORKSPACE_COLUMNS));
static INGEST_TARGET: Sql = Sql::new(concatcp!(
    "SELECT ",
    INGEST_TARGET_COLUMNS,
    " FROM workspaces w LEFT JOIN integrations i ON i.workspace_id = w.id WHERE w.ingest_key = $1"
));

impl Store {
    /// Inserts a workspace; `false` when its id is taken.
    pub async fn insert_workspace(&self, workspace: &Workspace) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let inserted = tx.execute(&INSERT, fields(workspace)).await? == 1;
        tx.execute(&FORGET_DELETED, params![&workspace.id]).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Inserts a workspace or renames the existing one (keeping its ingest key);
    /// returns it and whether it was created.
    pub async fn upsert_workspace(&self, workspace: &Workspace) -> Result<(Workspace, bool), StoreError> {
        let mut tx = self.db.begin().await?;
        let stored: Workspace = tx.one(&UPSERT, fields(workspace)).await?;
        tx.execute(&FORGET_DELETED, params![&workspace.id]).await?;
        tx.commit().await?;
        let created = stored.ingest_key == workspace.ingest_key;
        Ok((stored, created))
    }

    pub async fn workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError> {
        Ok(self.db.optional(&SELECT, params![id]).await?)
    }

    /// Up to `limit` workspaces in id order, from the first id after `after`.
    pub async fn workspaces(&self, after: &str, limit: usize) -> Result<Vec<Workspace>, StoreError> {
        Ok(self.db.all(&PAGE, params![after, limit as i64]).await?)
    }

    pub async fn rotate_ingest_key(&self, id: &str, new_key: &str) -> Result<Option<Workspace>, StoreError> {
        Ok(self.db.optional(&ROTATE_KEY, params![new_key, id]).await?)
    }

    /// The workspace an ingest key belongs to, with what ingest needs of it.
    pub async fn ingest_target(&self, ingest_key: &str) -> Result<Option<IngestTarget>, StoreError> {
        Ok(self.db.optional(&INGEST_TARGET, params![ingest_key]).await?)
    }
}

fn fields(workspace: &Workspace) -> Vec<crate::store::db::Value> {
    params![
        &workspace.id,
        &workspace.name,
        &workspace.ingest_key,
        workspace.created_at,
        workspace.allowed_origins.as_ref().map(AllowedOrigins::to_stored)
    ]
}
