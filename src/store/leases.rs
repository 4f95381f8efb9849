//! Workspace leases: which worker (of all instances) delivers for a workspace
//! until when, and how its round ended. The lease id is the fencing token:
//! once a lease has passed to another worker, the old holder changes nothing.

use const_format::concatcp;

use super::rows::LEASE_COLUMNS;
use super::{Millis, RoundEnd, Store, StoreError, WorkspaceLease};
use crate::domain::WorkspaceId;
use crate::store::db::{Sql, params};

/// The condition that an integration's Segment region is not down.
pub(super) const REGION_UP: &str = "region NOT IN (SELECT region FROM segment_regions WHERE down_since IS NOT NULL)";

/// The candidates that may be leased now, longest-waiting first: a read
/// that locks nothing. Each is then claimed on its own ([`CLAIM`]), so that
/// every write touches one workspace (one shard on Citus).
static LEASABLE: Sql = Sql::new(concatcp!(
    "SELECT workspace_id FROM integrations \
     WHERE workspace_id IN_LIST($1) AND enabled AND next_attempt_at <= $2 AND ",
    REGION_UP,
    " AND (leased_until IS NULL OR leased_until < $2) \
     ORDER BY next_attempt_at LIMIT $3"
));
/// Claims one workspace with a lease id the service made: a compare-and-set
/// that one worker wins, while the workspace is still due by `$4` and
/// unleased at `$5`.
static CLAIM: Sql = Sql::new(concatcp!(
    "UPDATE integrations SET lease_id = $1, leased_until = $2 \
     WHERE workspace_id = $3 AND enabled AND next_attempt_at <= $4 \
       AND (leased_until IS NULL OR leased_until < $5) \
     RETURNING ",
    LEASE_COLUMNS
));
static NEXT_DUE: Sql = Sql::new(concatcp!(
    "SELECT MIN(CASE WHEN leased_until >= $1 THEN leased_until ELSE next_attempt_at END) \
     FROM integrations WHERE enabled AND workspace_id IN_LIST($2) AND ",
    REGION_UP
));
static EXTEND: Sql = Sql::new("UPDATE integrations SET leased_until = $1 WHERE workspace_id = $2 AND lease_id = $3");
static RELEASE: Sql =
    Sql::new("UPDATE integrations SET lease_id = NULL, leased_until = NULL WHERE workspace_id = $1 AND lease_id = $2");
static END_DELIVERED: Sql = Sql::new(
    "UPDATE integrations SET lease_id = NULL, leased_until = NULL, consecutive_failures = 0, \
       next_attempt_at = $1, last_delivery_at = COALESCE($2, last_delivery_at) \
     WHERE workspace_id = $3 AND lease_id = $4",
);
static END_FAILED: Sql = Sql::new(
    "UPDATE integrations SET lease_id = NULL, leased_until = NULL, \
       consecutive_failures = consecutive_failures + $1, next_attempt_at = $2, \
       last_error_at = $3, last_error_status = $4, last_error_message = $5 \
     WHERE workspace_id = $6 AND lease_id = $7",
);

impl Store {
    /// Leases up to `limit` of the `candidates` that are enabled, due,
    /// unleased and in a region that is up, longest-waiting first.
    pub async fn lease_workspaces(
        &self,
        candidates: &[WorkspaceId],
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<WorkspaceLease>, StoreError> {
        let leasable: Vec<WorkspaceId> = self.db.all(&LEASABLE, params![candidates, now, limit as i64]).await?;
        let mut leases = Vec::with_capacity(leasable.len());
        for workspace in &leasable {
            leases.extend(self.claim(workspace, now, now, lease_until).await?);
        }
        Ok(leases)
    }

    /// Leases the workspace until `lease_until` if it is enabled, due by
    /// `due_by` and unleased at `now`; `None` when another worker was first.
    pub(super) async fn claim(
        &self,
        workspace: &WorkspaceId,
        due_by: Millis,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<WorkspaceLease>, StoreError> {
        let lease_id = uuid::Uuid::new_v4().simple().to_string();
        Ok(self.db.optional(&CLAIM, params![lease_id, lease_until, workspace, due_by, now]).await?)
    }

    /// The earliest time one of the enabled `candidates` in a region that is
    /// up may be leased (its next attempt, or the end of its current lease).
    pub async fn next_due(&self, candidates: &[WorkspaceId], now: Millis) -> Result<Option<Millis>, StoreError> {
        Ok(self.db.one(&NEXT_DUE, params![now, candidates]).await?)
    }

    /// Extends the workspace lease to `until`, if it is still held; `false`
    /// when another worker has taken the workspace.
    pub async fn extend_lease(&self, lease: &WorkspaceLease, until: Millis) -> Result<bool, StoreError> {
        Ok(self.db.execute(&EXTEND, params![until, &lease.workspace_id, &lease.lease_id]).await? == 1)
    }

    /// Gives the workspace lease back at once, so another worker may take the
    /// workspace without waiting for the lease to run out.
    pub async fn release_lease(&self, lease: &WorkspaceLease) -> Result<(), StoreError> {
        self.db.execute(&RELEASE, params![&lease.workspace_id, &lease.lease_id]).await?;
        Ok(())
    }

    /// Records how the round went and gives the workspace lease back.
    pub async fn end_round(&self, lease: &WorkspaceLease, end: &RoundEnd) -> Result<(), StoreError> {
        let (workspace, lease_id) = (&lease.workspace_id, &lease.lease_id);
        match end {
            RoundEnd::Delivered { delivered_at, next_attempt_at } => {
                let values = params![*next_attempt_at, *delivered_at, workspace, lease_id];
                self.db.execute(&END_DELIVERED, values).await?
            }
            RoundEnd::Failed { error, next_attempt_at, counts_as_failure } => {
                let values = params![
                    i64::from(*counts_as_failure),
                    *next_attempt_at,
                    error.at,
                    error.status.map(i64::from),
                    &error.message,
                    workspace,
                    lease_id,
                ];
                self.db.execute(&END_FAILED, values).await?
            }
        };
        Ok(())
    }
}
