//! What is kept only for a while: dead letters and identity links.

use super::{Millis, Store, StoreError};
use crate::store::db::{Sql, params};

static PURGE_DEAD_LETTERS: Sql =
    Sql::new("DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE failed_at < $1 LIMIT $2)");
/// By key: a `ctid` means nothing across Citus shards.
static PURGE_IDENTITIES: Sql = Sql::new(
    "DELETE FROM identities WHERE (workspace_id, anonymous_id) IN \
       (SELECT workspace_id, anonymous_id FROM identities WHERE updated_at < $1 LIMIT $2)",
);

impl Store {
    /// Deletes up to `limit` dead letters that failed before `dead_before` and
    /// up to `limit` identity links last renewed before `identities_before`;
    /// returns how many of each.
    pub async fn purge(
        &self,
        dead_before: Millis,
        identities_before: Millis,
        limit: usize,
    ) -> Result<(u64, u64), StoreError> {
        let dead = self.db.execute(&PURGE_DEAD_LETTERS, params![dead_before, limit as i64]).await?;
        let identities = self.db.execute(&PURGE_IDENTITIES, params![identities_before, limit as i64]).await?;
        Ok((dead, identities))
    }
}
