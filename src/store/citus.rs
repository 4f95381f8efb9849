//! The way past one PostgreSQL server: on a Citus coordinator, the
//! per-workspace tables become tables distributed by `workspace_id`, all
//! colocated, so that each statement that names one workspace runs on one
//! shard; the small shared tables become reference tables (a copy on every
//! node). The statements themselves are the same on PostgreSQL and Citus.

use super::{Store, StoreError};
use crate::store::db::{Db, Dialect, Sql, Value, params};

/// Shared by every workspace (or by none): a copy on every node.
const REFERENCE_TABLES: [&str; 3] = ["workspaces", "segment_regions", "deleted_workspaces"];
/// Distributed by `workspace_id`; the first is the one the others are colocated with.
const DISTRIBUTED_TABLES: [&str; 4] = ["integrations", "events", "dead_letters", "identities"];

static HAS_CITUS: Sql = Sql::new("SELECT COUNT(*) FROM pg_extension WHERE extname = 'citus'");
/// Whether the table is of this kind already, by Citus's partition method and
/// replication model: `n`/`t` a reference table, `h`/`s` one distributed by
/// hash. (A table with a foreign key to a reference table is a Citus "local"
/// table, `n`/`s`, until it is distributed.)
static IS_ALREADY: Sql = Sql::new(
    "SELECT COUNT(*) FROM pg_dist_partition \
     WHERE logicalrelid = $1::regclass AND partmethod::text = $2 AND repmodel::text = $3",
);
const REFERENCE: (&str, &str) = ("n", "t");
const DISTRIBUTED: (&str, &str) = ("h", "s");
static MAKE_REFERENCE: Sql = Sql::new("SELECT 1 FROM create_reference_table($1)");
static MAKE_DISTRIBUTED: Sql =
    Sql::new("SELECT 1 FROM create_distributed_table($1, 'workspace_id', colocate_with => $2)");

/// What `distribute_on_citus` did: the tables it changed (those already
/// distributed are left as they are).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Distributed {
    pub reference: Vec<&'static str>,
    pub distributed: Vec<&'static str>,
}

/// Whether `db` is a Citus coordinator (PostgreSQL with the citus extension).
pub(super) async fn is_coordinator(db: &Db) -> Result<bool, StoreError> {
    Ok(db.dialect() == Dialect::Postgres && db.one::<i64>(&HAS_CITUS, params![]).await? > 0)
}

impl Store {
    /// Makes the store's tables Citus tables, as above; a run again changes
    /// nothing. Refuses, changing nothing, where the database is not a Citus
    /// coordinator.
    pub async fn distribute_on_citus(&self) -> Result<Distributed, StoreError> {
        if !is_coordinator(&self.db).await? {
            return Err(StoreError::NotCitus);
        }
        let mut done = Distributed::default();
        for table in REFERENCE_TABLES {
            if self.make(table, REFERENCE, &MAKE_REFERENCE, params![table]).await? {
                done.reference.push(table);
            }
        }
        let colocated_with = DISTRIBUTED_TABLES[0];
        for table in DISTRIBUTED_TABLES {
            // A colocation group of its own: one shared with other tables of the
            // same key type ("default") ties their shard moves and locks to ours.
            let colocate = if table == colocated_with { "none" } else { colocated_with };
            if self.make(table, DISTRIBUTED, &MAKE_DISTRIBUTED, params![table, colocate]).await? {
                done.distributed.push(table);
            }
        }
        Ok(done)
    }

    /// Runs `make` for `table` unless it is of that kind (partition method,
    /// replication model) already; whether it ran.
    async fn make(
        &self,
        table: &str,
        (partition, replication): (&str, &str),
        make: &'static Sql,
        values: Vec<Value>,
    ) -> Result<bool, StoreError> {
        if self.db.one::<i64>(&IS_ALREADY, params![table, partition, replication]).await? > 0 {
            return Ok(false);
        }
        self.db.one::<i64>(make, values).await?;
        Ok(true)
    }
}
