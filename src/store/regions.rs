//! Each Segment region's health, shared by every instance, and the probes of
//! a region that is down.

use const_format::concatcp;

use super::rows::REGION_COLUMNS;
use super::{Millis, RegionHealth, Store, StoreError, WorkspaceLease};
use crate::domain::Region;
use crate::domain::WorkspaceId;
use crate::store::db::{Sql, params};

static HEALTH: Sql = Sql::new(concatcp!("SELECT ", REGION_COLUMNS, " FROM segment_regions ORDER BY region"));
static FAILED: Sql = Sql::new(concatcp!(
    "UPDATE segment_regions SET failures = failures + 1, \
       down_since = CASE WHEN down_since IS NULL AND failures + 1 >= $2 THEN $3 ELSE down_since END, \
       next_probe_at = CASE WHEN (down_since IS NULL AND failures + 1 >= $2) OR $5 THEN $4 \
                            ELSE next_probe_at END \
     WHERE region = $1 RETURNING ",
    REGION_COLUMNS
));
static DOWN_SINCE: Sql = Sql::new("SELECT down_since FROM segment_regions WHERE region = $1 LOCK_ROW");
static UP: Sql =
    Sql::new("UPDATE segment_regions SET failures = 0, down_since = NULL, next_probe_at = 0 WHERE region = $1");
static FAILED_WORKSPACES_DUE: Sql = Sql::new(
    "UPDATE integrations SET next_attempt_at = $2, consecutive_failures = 0 \
     WHERE region = $1 AND enabled AND consecutive_failures > 0",
);
static CLAIM_PROBE: Sql = Sql::new(
    "UPDATE segment_regions SET next_probe_at = $3 \
     WHERE region = $1 AND down_since IS NOT NULL AND next_probe_at <= $2",
);
/// The region's candidate to probe with, the least recently attempted,
/// whether due or not (the region being down held it back).
static PROBE_CANDIDATE: Sql = Sql::new(
    "SELECT workspace_id FROM integrations \
     WHERE workspace_id IN_LIST($1) AND region = $2 AND enabled AND (leased_until IS NULL OR leased_until < $3) \
     ORDER BY next_attempt_at LIMIT 1",
);
static END_PROBE: Sql =
    Sql::new("UPDATE segment_regions SET next_probe_at = $3 WHERE region = $1 AND next_probe_at = $2");

impl Store {
    /// Every region's health.
    pub async fn region_health(&self) -> Result<Vec<RegionHealth>, StoreError> {
        Ok(self.db.all(&HEALTH, params![]).await?)
    }

    /// Counts a region-wide failure. The region goes down at `down_after`
    /// consecutive failures (the caller whose failure it is sees `failures ==
    /// down_after`), and may be probed from `next_probe_at`; a failed `probe`
    /// sets when the next one may go. Returns the region's health after.
    pub async fn region_failed(
        &self,
        region: Region,
        now: Millis,
        down_after: u32,
        next_probe_at: Millis,
        probe: bool,
    ) -> Result<RegionHealth, StoreError> {
        let values = params![region.as_str(), i64::from(down_after), now, next_probe_at, probe];
        Ok(self.db.one(&FAILED, values).await?)
    }

    /// A success in the region: it is up, its failures forgotten. If it was
    /// down, every workspace of the region that failed is due at once, on every
    /// instance (PostgreSQL also announces it). Returns since when the region
    /// had been down, if it was.
    pub async fn region_succeeded(&self, region: Region, now: Millis) -> Result<Option<Millis>, StoreError> {
        let mut tx = self.db.begin().await?;
        let down_since: Option<Millis> = tx.optional(&DOWN_SINCE, params![region.as_str()]).await?.flatten();
        tx.execute(&UP, params![region.as_str()]).await?;
        if down_since.is_some() {
            tx.execute(&FAILED_WORKSPACES_DUE, params![region.as_str(), now]).await?;
            self.announce_in(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(down_since)
    }

    /// While the region is down and its probe due: claims the probe until
    /// `lease_until` and leases one of the region's `candidates` for it, the
    /// least recently attempted. `None` when there is nothing to probe now.
    pub async fn lease_probe(
        &self,
        region: Region,
        candidates: &[WorkspaceId],
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<WorkspaceLease>, StoreError> {
        if self.db.execute(&CLAIM_PROBE, params![region.as_str(), now, lease_until]).await? == 0 {
            return Ok(None);
        }
        let candidate: Option<WorkspaceId> =
            self.db.optional(&PROBE_CANDIDATE, params![candidates, region.as_str(), now]).await?;
        let lease = match candidate {
            Some(workspace) => self.claim(&workspace, Millis::MAX, now, lease_until).await?,
            None => None,
        };
        if lease.is_none() {
            // Nothing to probe with after all: the probe is due again at once.
            self.end_probe(region, lease_until, now).await?;
        }
        Ok(lease)
    }

    /// Ends a probe that still holds its claim (`next_probe_at == claimed_until`,
    /// it sent nothing): the next probe may go from `next_probe_at`.
    pub async fn end_probe(
        &self,
        region: Region,
        claimed_until: Millis,
        next_probe_at: Millis,
    ) -> Result<(), StoreError> {
        self.db.execute(&END_PROBE, params![region.as_str(), claimed_until, next_probe_at]).await?;
        Ok(())
    }
}
