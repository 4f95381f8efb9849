//! Durable state: workspaces, Segment integrations (sealed write keys and
//! delivery state), the event queue, dead letters and identity mappings, on
//! PostgreSQL or SQLite behind one SQL layer (`crate::store::db`). Times are Unix
//! milliseconds.

mod citus;
pub mod db;
mod erasure;
mod integrations;
mod leases;
mod queue;
mod regions;
mod retention;
mod rows;
mod workspaces;

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use crate::config::Settings;
use crate::domain::selection::EventSelection;
use crate::domain::{AllowedOrigins, DeadLetterReason, IpPolicy, LINK_REFRESH_MILLIS, Region, WorkspaceId};
use crate::store::db::{ConnectionCounts, Db, DbError, Dialect, Sql};
pub use citus::Distributed;
pub use erasure::{Erased, ErasureSubject};
pub use queue::QueueLife;

pub use crate::domain::time::Millis;

/// Told the workspace ids of events another instance committed.
pub type OnEvents = Arc<dyn Fn(Vec<WorkspaceId>) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("the database schema is not at the version this build expects")]
    SchemaOutdated,
    #[error("the database failed a moment ago; not tried again yet")]
    RecentlyFailed,
    #[error("the commit did not complete within {0:?}")]
    CommitTimedOut(Duration),
    #[error(
        "this database is not a Citus coordinator (no citus extension in it), so citus-distribute distributed \
         nothing; on Citus, run CREATE EXTENSION citus and add the workers first"
    )]
    NotCitus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub ingest_key: String,
    pub created_at: Millis,
    /// Browser origins allowed to send events; `None`: any.
    pub allowed_origins: Option<AllowedOrigins>,
}

/// What ingest needs to know about the workspace an ingest key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestTarget {
    pub workspace_id: WorkspaceId,
    pub segment_enabled: bool,
    /// As in [`Workspace::allowed_origins`].
    pub allowed_origins: Option<AllowedOrigins>,
    /// What of the catalog goes to the workspace's Segment.
    pub selection: EventSelection,
    /// What `context.ip` keeps of the browser's address.
    pub ip: IpPolicy,
}

impl IngestTarget {
    /// Whether a browser on `origin` may send events for this workspace.
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.as_ref().is_none_or(|allowed| allowed.allows(origin))
    }
}

/// An accepted event, ready to queue. `payload` is the Segment `track` message
/// as JSON without `userId`, which is added at delivery (own or resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub workspace_id: WorkspaceId,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub payload: String,
    pub received_at: Millis,
}

/// "This browser's anonymous id belongs to that user."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityLink {
    pub workspace_id: WorkspaceId,
    pub anonymous_id: String,
    pub user_id: String,
    pub at: Millis,
}

/// A workspace's Segment integration: the sealed write key, its settings and
/// the state of delivery to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Integration {
    pub workspace_id: WorkspaceId,
    pub config: IntegrationConfig,
    pub consecutive_failures: u32,
    pub next_attempt_at: Millis,
    pub last_delivery_at: Option<Millis>,
    pub last_error: Option<LastError>,
}

/// The configuration part of an integration, as the admin sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrationConfig {
    pub sealed_write_key: String,
    pub write_key_hint: String,
    pub region: Region,
    pub enabled: bool,
    pub selection: EventSelection,
    pub ip: IpPolicy,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastError {
    pub at: Millis,
    pub status: Option<u16>,
    pub message: String,
}

/// Undelivered and dead-lettered events of one workspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub queued: u64,
    pub dead: u64,
}

/// A workspace this worker may deliver for until the lease ends. One worker
/// (of all instances) holds a workspace at a time; the lease id is the fencing
/// token: once the lease has passed to another worker, the old holder's acks
/// and dead letters change nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceLease {
    pub workspace_id: WorkspaceId,
    pub lease_id: String,
    pub sealed_write_key: String,
    pub region: Region,
    pub consecutive_failures: u32,
}

/// A queued event read for delivery. `user_id` is the event's own, or the one
/// last recorded for its `anonymous_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedEvent {
    pub id: i64,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub payload: String,
    pub received_at: Millis,
}

/// Why queued events become dead letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: DeadLetterReason,
    pub status: Option<u16>,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub payload: String,
    pub reason: DeadLetterReason,
    pub status: Option<u16>,
    pub detail: String,
    pub received_at: Millis,
    pub failed_at: Millis,
}

/// A Segment region's health, as every instance shares it: region-wide
/// failures (5xx, timeouts, connection errors) since the last success of any
/// workspace sending there, and since when the region counts as down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionHealth {
    pub region: Region,
    pub failures: u32,
    pub down_since: Option<Millis>,
    /// While down: when the next probe may go (a probe in flight holds it
    /// until its lease ends).
    pub next_probe_at: Millis,
}

impl RegionHealth {
    pub fn is_down(&self) -> bool {
        self.down_since.is_some()
    }
}

/// How a delivery round for a workspace ended, which sets when it is next served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoundEnd {
    /// Segment took what was sent, if anything was (`delivered_at`).
    Delivered { delivered_at: Option<Millis>, next_attempt_at: Millis },
    /// Segment failed or asked to slow down; try again at `next_attempt_at`.
    /// Rate limiting does not count as a failure.
    Failed { error: LastError, next_attempt_at: Millis, counts_as_failure: bool },
}

/// The durable state: one concrete store over either database. Each concern
/// has its file (`workspaces`, `integrations`, `queue`, `leases`, `regions`,
/// `retention`, `erasure`); each statement is written once there, and the few that the
/// dialects cannot share sit side by side in the same file.
#[derive(Clone)]
pub struct Store {
    db: Db,
    migrator: &'static sqlx::migrate::Migrator,
    /// When this instance last announced new events (PostgreSQL).
    announced: Arc<AtomicI64>,
    /// Whether the database is a Citus coordinator, where a commit that spans
    /// shards is a two-phase commit (`enqueue` then commits per workspace).
    on_citus: bool,
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The newest migration applied.
static APPLIED_VERSION: Sql = Sql::new("SELECT MAX(version) FROM _sqlx_migrations WHERE success");

impl Store {
    /// Opens the database `url` names and brings its schema up to date (as
    /// [`Db::open`] says).
    pub async fn open(url: &str, connections: u32, wait: Duration) -> Result<Store, StoreError> {
        let migrator = match Dialect::of_url(url) {
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
        };
        let db = Db::open(url, connections, wait, migrator).await?;
        let on_citus = citus::is_coordinator(&db).await?;
        Ok(Store { db, migrator, announced: Arc::new(AtomicI64::new(0)), on_citus })
    }

    /// Ok when the database answers, takes writes, and its schema is this build's.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        let applied: Option<i64> = self.db.one(&APPLIED_VERSION, vec![]).await?;
        self.db.check_writable().await?;
        schema_is_current(self.migrator, applied)
    }

    /// PostgreSQL's connection counts (none on SQLite), for the metrics.
    pub fn connection_counts(&self) -> ConnectionCounts {
        match &self.db {
            Db::Postgres(db) => db.connection_counts().clone(),
            Db::Sqlite(_) => ConnectionCounts::default(),
        }
    }
}

/// Opens the configured database and brings its schema up to date.
pub async fn connect(settings: &Settings) -> Result<Arc<Store>, StoreError> {
    let url = settings.database_url();
    Ok(Arc::new(Store::open(&url, settings.database_max_connections, settings.database_acquire_timeout()).await?))
}

/// Reason and detail of events that outlived the maximum age.
const EXPIRED: (DeadLetterReason, &str) = (DeadLetterReason::Expired, "not delivered before the maximum age");

/// Whether the database's newest applied migration is the newest this build has.
fn schema_is_current(migrator: &sqlx::migrate::Migrator, applied: Option<i64>) -> Result<(), StoreError> {
    // A newer schema is fine: migrations only add, so the instances of the
    // previous release stay ready during a rolling upgrade.
    let latest = migrator.iter().map(|m| m.version).max();
    if applied >= latest { Ok(()) } else { Err(StoreError::SchemaOutdated) }
}

/// Identity links with one per anonymous id, the latest, as one upsert takes them.
fn latest_links(links: Vec<IdentityLink>) -> Vec<IdentityLink> {
    let mut latest: std::collections::HashMap<(WorkspaceId, String), IdentityLink> = std::collections::HashMap::new();
    for link in links {
        match latest.entry((link.workspace_id.clone(), link.anonymous_id.clone())) {
            std::collections::hash_map::Entry::Occupied(mut kept) if link.at >= kept.get().at => {
                kept.insert(link);
            }
            std::collections::hash_map::Entry::Occupied(_) => {}
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(link);
            }
        }
    }
    latest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_current_at_or_past_the_binarys_latest_migration() {
        let latest = SQLITE_MIGRATIONS.iter().map(|m| m.version).max().unwrap();
        assert!(schema_is_current(&SQLITE_MIGRATIONS, Some(latest)).is_ok());
        assert!(schema_is_current(&SQLITE_MIGRATIONS, Some(latest + 1)).is_ok(), "a rolling upgrade ran ahead");
        assert!(matches!(schema_is_current(&SQLITE_MIGRATIONS, Some(latest - 1)), Err(StoreError::SchemaOutdated)));
        assert!(matches!(schema_is_current(&SQLITE_MIGRATIONS, None), Err(StoreError::SchemaOutdated)));
    }
}
