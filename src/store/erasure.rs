//! Erasure: a whole workspace when its customer leaves, or one person's data
//! within a workspace on request (GDPR). Each runs in one transaction. A
//! deleted workspace is remembered for a while (`deleted_workspaces`) so that
//! what other instances commit for it before their key caches expire is
//! swept too.

use super::{Millis, Store, StoreError};
use crate::store::db::{Sql, params};

// A workspace's rows, table by table (deleting an integration takes the first two).
pub(super) static DELETE_EVENTS: Sql = Sql::new("DELETE FROM events WHERE workspace_id = $1");
pub(super) static DELETE_DEAD_LETTERS: Sql = Sql::new("DELETE FROM dead_letters WHERE workspace_id = $1");
pub(super) static DELETE_INTEGRATION: Sql = Sql::new("DELETE FROM integrations WHERE workspace_id = $1");
static DELETE_IDENTITIES: Sql = Sql::new("DELETE FROM identities WHERE workspace_id = $1");
static DELETE_WORKSPACE: Sql = Sql::new("DELETE FROM workspaces WHERE id = $1");
static REMEMBER_DELETED: Sql = Sql::new(
    "INSERT INTO deleted_workspaces (id, deleted_at) VALUES ($1, $2) \
     ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at",
);
/// A workspace created again is no longer swept.
pub(super) static FORGET_DELETED: Sql = Sql::new("DELETE FROM deleted_workspaces WHERE id = $1");
static ANY_DELETED: Sql = Sql::new("SELECT COUNT(*) FROM deleted_workspaces");
static SWEEP_EVENTS: Sql = Sql::new("DELETE FROM events WHERE workspace_id IN (SELECT id FROM deleted_workspaces)");
static SWEEP_DEAD_LETTERS: Sql =
    Sql::new("DELETE FROM dead_letters WHERE workspace_id IN (SELECT id FROM deleted_workspaces)");
static SWEEP_IDENTITIES: Sql =
    Sql::new("DELETE FROM identities WHERE workspace_id IN (SELECT id FROM deleted_workspaces)");
static FORGET_DELETED_BEFORE: Sql = Sql::new("DELETE FROM deleted_workspaces WHERE deleted_at < $1");

static LINKED_ANONYMOUS_IDS: Sql =
    Sql::new("SELECT anonymous_id FROM identities WHERE workspace_id = $1 AND user_id = $2 ORDER BY anonymous_id");
// `$2` may be NULL (only anonymous ids given): `user_id = NULL` matches nothing.
static ERASE_EVENTS: Sql =
    Sql::new("DELETE FROM events WHERE workspace_id = $1 AND (user_id = $2 OR anonymous_id IN_LIST($3))");
static ERASE_DEAD_LETTERS: Sql =
    Sql::new("DELETE FROM dead_letters WHERE workspace_id = $1 AND (user_id = $2 OR anonymous_id IN_LIST($3))");
static ERASE_IDENTITIES: Sql =
    Sql::new("DELETE FROM identities WHERE workspace_id = $1 AND (user_id = $2 OR anonymous_id IN_LIST($3))");

/// Whom an erasure is for: a user id, anonymous ids, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureSubject {
    pub user_id: Option<String>,
    pub anonymous_ids: Vec<String>,
}

/// Rows an erasure removed, per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Erased {
    pub events: u64,
    pub dead_letters: u64,
    pub identities: u64,
}

impl Store {
    /// Deletes a workspace and everything of it: its integration (and sealed
    /// write key), queued events, dead letters and identity links. What was
    /// removed, or `None` when there was no such workspace.
    pub async fn delete_workspace(&self, id: &str, now: Millis) -> Result<Option<Erased>, StoreError> {
        let mut tx = self.db.begin().await?;
        let erased = Erased {
            events: tx.execute(&DELETE_EVENTS, params![id]).await?,
            dead_letters: tx.execute(&DELETE_DEAD_LETTERS, params![id]).await?,
            identities: tx.execute(&DELETE_IDENTITIES, params![id]).await?,
        };
        tx.execute(&DELETE_INTEGRATION, params![id]).await?;
        let existed = tx.execute(&DELETE_WORKSPACE, params![id]).await? == 1;
        if existed {
            tx.execute(&REMEMBER_DELETED, params![id, now]).await?;
        }
        tx.commit().await?;
        Ok(existed.then_some(erased))
    }

    /// Removes what was committed for recently deleted workspaces after they
    /// went (by instances that still knew their ingest key), and forgets the
    /// workspaces deleted before `forget_before`.
    pub async fn sweep_deleted_workspaces(&self, forget_before: Millis) -> Result<Erased, StoreError> {
        let deleted: i64 = self.db.one(&ANY_DELETED, params![]).await?;
        if deleted == 0 {
            return Ok(Erased::default());
        }
        let mut tx = self.db.begin().await?;
        let swept = Erased {
            events: tx.execute(&SWEEP_EVENTS, params![]).await?,
            dead_letters: tx.execute(&SWEEP_DEAD_LETTERS, params![]).await?,
            identities: tx.execute(&SWEEP_IDENTITIES, params![]).await?,
        };
        tx.execute(&FORGET_DELETED_BEFORE, params![forget_before]).await?;
        tx.commit().await?;
        Ok(swept)
    }

    /// Removes, within the workspace, the queued events and dead letters that
    /// carry the subject's user id, one of its anonymous ids or an anonymous id
    /// linked to the user, and the identity links of either.
    pub async fn erase(&self, workspace_id: &str, subject: &ErasureSubject) -> Result<Erased, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut anonymous_ids = subject.anonymous_ids.clone();
        if let Some(user_id) = &subject.user_id {
            let linked: Vec<String> = tx.all(&LINKED_ANONYMOUS_IDS, params![workspace_id, user_id]).await?;
            anonymous_ids.extend(linked);
        }
        anonymous_ids.sort_unstable();
        anonymous_ids.dedup();
        let user_id = subject.user_id.as_deref();
        let erased = Erased {
            events: tx.execute(&ERASE_EVENTS, params![workspace_id, user_id, &anonymous_ids[..]]).await?,
            dead_letters: tx.execute(&ERASE_DEAD_LETTERS, params![workspace_id, user_id, &anonymous_ids[..]]).await?,
            identities: tx.execute(&ERASE_IDENTITIES, params![workspace_id, user_id, &anonymous_ids[..]]).await?,
        };
        tx.commit().await?;
        Ok(erased)
    }
}
