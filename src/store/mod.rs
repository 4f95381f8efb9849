//! Durable state behind one trait, with one implementation per database:
//! workspaces, Segment integrations (sealed write keys and delivery state), the
//! event queue, dead letters and identity mappings. All SQL lives in
//! `postgres.rs` and `sqlite.rs`; times are Unix milliseconds.

pub mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::config::{Backend, Settings};
use crate::segment::Region;
use crate::selection::EventSelection;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub use crate::time::Millis;

/// Told the workspace ids of events another instance committed.
pub type OnEvents = Arc<dyn Fn(Vec<String>) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database schema is not at the version this build expects")]
    SchemaOutdated,
    #[error("the database failed a moment ago; not tried again yet")]
    RecentlyFailed,
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub ingest_key: String,
    pub created_at: Millis,
    /// Browser origins allowed to send events, space-separated; `None`: any.
    pub allowed_origins: Option<String>,
}

/// What ingest needs to know about the workspace an ingest key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestTarget {
    pub workspace_id: String,
    pub segment_enabled: bool,
    /// As in [`Workspace::allowed_origins`].
    pub allowed_origins: Option<String>,
    /// What of the catalog goes to the workspace's Segment.
    pub selection: EventSelection,
}

impl IngestTarget {
    /// Whether a browser on `origin` may send events for this workspace.
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.as_deref().is_none_or(|allowed| allowed.split(' ').any(|o| o == origin))
    }
}

/// An accepted event, ready to queue. `payload` is the Segment `track` message
/// as JSON without `userId`, which is added at delivery (own or resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub workspace_id: String,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub payload: String,
    pub received_at: Millis,
}

/// "This browser's anonymous id belongs to that user."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityLink {
    pub workspace_id: String,
    pub anonymous_id: String,
    pub user_id: String,
    pub at: Millis,
}

/// A stored link seen again with the same user is rewritten (its time
/// refreshed, for retention) only once it is this old: most events of a
/// signed-in user carry the same link, and rewriting it on every commit cost a
/// row update per commit. Retention (months) ends at most this much earlier.
pub const LINK_REFRESH_MILLIS: Millis = 24 * 60 * 60 * 1000;

/// A workspace's Segment integration: the sealed write key, its settings and
/// the state of delivery to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Integration {
    pub workspace_id: String,
    pub sealed_write_key: String,
    pub write_key_hint: String,
    pub region: Region,
    pub enabled: bool,
    pub selection: EventSelection,
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
    pub workspace_id: String,
    pub lease_id: String,
    pub sealed_write_key: String,
    pub region: Region,
    pub consecutive_failures: u32,
}

/// A queued event read for delivery. `user_id` is the event's own, or the one
/// last recorded for its `anonymous_id`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedEvent {
    pub id: i64,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub payload: String,
    pub received_at: Millis,
}

/// Why one queued event becomes a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub event_id: i64,
    pub reason: String,
    pub status: Option<u16>,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub payload: String,
    pub reason: String,
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Ok when the database answers and its schema is this build's.
    async fn check_ready(&self) -> Result<(), StoreError>;

    /// Inserts a workspace; `false` when its id is taken.
    async fn insert_workspace(&self, workspace: &Workspace) -> Result<bool, StoreError>;
    /// Inserts a workspace or renames the existing one (keeping its ingest key);
    /// returns it and whether it was created.
    async fn upsert_workspace(&self, workspace: &Workspace) -> Result<(Workspace, bool), StoreError>;
    async fn workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError>;
    async fn rotate_ingest_key(&self, id: &str, new_key: &str) -> Result<Option<Workspace>, StoreError>;
    async fn ingest_target(&self, ingest_key: &str) -> Result<Option<IngestTarget>, StoreError>;

    /// Sets a workspace's integration; delivery resumes at once (backoff reset).
    async fn put_integration(
        &self,
        workspace_id: &str,
        config: &IntegrationConfig,
        now: Millis,
    ) -> Result<Integration, StoreError>;
    async fn integration(&self, workspace_id: &str) -> Result<Option<Integration>, StoreError>;
    /// Deletes the integration and drops the workspace's queued and dead events.
    async fn delete_integration(&self, workspace_id: &str) -> Result<bool, StoreError>;
    async fn queue_counts(&self, workspace_id: &str) -> Result<QueueCounts, StoreError>;
    /// Every integration's workspace and sealed write key.
    async fn sealed_write_keys(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Replaces a workspace's sealed write key if it is still `old`; whether it was.
    async fn replace_sealed_write_key(&self, workspace_id: &str, old: &str, new: &str) -> Result<bool, StoreError>;

    /// Commits events and identity links in one transaction.
    async fn enqueue(&self, events: &[NewEvent], identities: &[IdentityLink]) -> Result<(), StoreError>;

    /// The workspaces with an enabled integration and queued events. This
    /// probes the queue per workspace: delivery polls it, it does not ask it
    /// at every turn.
    async fn workspaces_with_events(&self) -> Result<Vec<String>, StoreError>;
    /// Leases up to `limit` of the `candidates` that are enabled, due,
    /// unleased and in a region that is up, longest-waiting first.
    async fn lease_workspaces(
        &self,
        candidates: &[String],
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<WorkspaceLease>, StoreError>;
    /// The earliest time one of the enabled `candidates` in a region that is
    /// up may be leased (its next attempt, or the end of its current lease).
    async fn next_due(&self, candidates: &[String], now: Millis) -> Result<Option<Millis>, StoreError>;
    /// Every region's health.
    async fn region_health(&self) -> Result<Vec<RegionHealth>, StoreError>;
    /// Counts a region-wide failure. The region goes down at `down_after`
    /// consecutive failures (the caller whose failure it is sees `failures ==
    /// down_after`), and may be probed from `next_probe_at`; a failed `probe`
    /// sets when the next one may go. Returns the region's health after.
    async fn region_failed(
        &self,
        region: Region,
        now: Millis,
        down_after: u32,
        next_probe_at: Millis,
        probe: bool,
    ) -> Result<RegionHealth, StoreError>;
    /// A success in the region: it is up, its failures forgotten. If it was
    /// down, every workspace of the region that failed is due at once, on every
    /// instance (PostgreSQL also announces it). Returns since when the region
    /// had been down, if it was.
    async fn region_succeeded(&self, region: Region, now: Millis) -> Result<Option<Millis>, StoreError>;
    /// While the region is down and its probe due: claims the probe until
    /// `lease_until` and leases one of the region's `candidates` for it, the
    /// least recently attempted. `None` when there is nothing to probe now.
    async fn lease_probe(
        &self,
        region: Region,
        candidates: &[String],
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<WorkspaceLease>, StoreError>;
    /// Ends a probe that still holds its claim (`next_probe_at == claimed_until`,
    /// it sent nothing): the next probe may go from `next_probe_at`.
    async fn end_probe(&self, region: Region, claimed_until: Millis, next_probe_at: Millis) -> Result<(), StoreError>;
    /// The leased workspace's `limit` oldest queued events with an id above
    /// `after` (0: from the front). Reading takes no lock and writes nothing:
    /// the workspace lease makes them this worker's.
    async fn queued_events(
        &self,
        lease: &WorkspaceLease,
        after: i64,
        limit: usize,
    ) -> Result<Vec<QueuedEvent>, StoreError>;
    /// Deletes delivered events, if the lease is still held.
    async fn ack(&self, lease: &WorkspaceLease, event_ids: &[i64]) -> Result<u64, StoreError>;
    /// Moves events to the dead letters, if the lease is still held.
    async fn dead_letter(
        &self,
        lease: &WorkspaceLease,
        rejections: &[Rejection],
        now: Millis,
    ) -> Result<u64, StoreError>;
    /// Extends the workspace lease to `until`, if it is still held; `false`
    /// when another worker has taken the workspace.
    async fn extend_lease(&self, lease: &WorkspaceLease, until: Millis) -> Result<bool, StoreError>;
    /// Gives the workspace lease back at once, so another worker may take the
    /// workspace without waiting for the lease to run out.
    async fn release_lease(&self, lease: &WorkspaceLease) -> Result<(), StoreError>;
    /// Records how the round went and gives the workspace lease back.
    async fn end_round(&self, lease: &WorkspaceLease, end: &RoundEnd) -> Result<(), StoreError>;

    /// Calls `on_events` with the workspaces of events other instances commit,
    /// until `stop`: a hint only, since delivery also polls. Without
    /// cross-instance notification (SQLite serves one instance) it returns at once.
    async fn listen_for_events(&self, on_events: OnEvents, stop: CancellationToken);

    /// Deletes up to `limit` dead letters that failed before `dead_before` and
    /// up to `limit` identity links last renewed before `identities_before`;
    /// returns how many of each.
    async fn purge(
        &self,
        dead_before: Millis,
        identities_before: Millis,
        limit: usize,
    ) -> Result<(u64, u64), StoreError>;

    /// Moves up to `limit` events received before `cutoff`, of workspaces not
    /// leased at `now`, to the dead letters as `expired`.
    async fn expire_events(&self, cutoff: Millis, now: Millis, limit: usize) -> Result<u64, StoreError>;
    /// Undelivered events of all workspaces.
    async fn queue_depth(&self) -> Result<u64, StoreError>;
    /// When the oldest undelivered event was received, if any is waiting.
    async fn oldest_queued_at(&self) -> Result<Option<Millis>, StoreError>;
    async fn dead_letters(&self, workspace_id: &str, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// Requeues every dead letter of the workspace, with a fresh age.
    async fn replay_dead_letters(&self, workspace_id: &str, now: Millis) -> Result<u64, StoreError>;
}

/// Opens the configured database and brings its schema up to date.
pub async fn connect(settings: &Settings) -> Result<Arc<dyn Store>, StoreError> {
    let url = settings.database_url();
    let (connections, wait) = (settings.database_max_connections, settings.database_acquire_timeout());
    let store: Arc<dyn Store> = match settings.backend().unwrap_or(Backend::Sqlite) {
        Backend::Postgres => Arc::new(PostgresStore::connect(&url, connections, wait).await?),
        Backend::Sqlite => Arc::new(SqliteStore::connect(&url, connections, wait).await?),
    };
    Ok(store)
}

/// Reason and detail of events that outlived the maximum age.
const EXPIRED: (&str, &str) = ("expired", "not delivered before the maximum age");

/// Whether the database's newest applied migration is the newest this build has.
fn schema_is_current(migrator: &sqlx::migrate::Migrator, applied: Option<i64>) -> Result<(), StoreError> {
    // A newer schema is fine: migrations only add, so the instances of the
    // previous release stay ready during a rolling upgrade.
    let latest = migrator.iter().map(|m| m.version).max();
    if applied >= latest { Ok(()) } else { Err(StoreError::SchemaOutdated) }
}

/// Identity links with one per anonymous id, the latest, as one upsert takes them.
fn latest_links(links: &[IdentityLink]) -> Vec<&IdentityLink> {
    let mut latest: std::collections::HashMap<(&str, &str), &IdentityLink> = std::collections::HashMap::new();
    for link in links {
        let key = (link.workspace_id.as_str(), link.anonymous_id.as_str());
        match latest.get(&key) {
            Some(existing) if existing.at > link.at => {}
            _ => {
                latest.insert(key, link);
            }
        }
    }
    latest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

    #[test]
    fn the_schema_is_current_at_or_past_the_binarys_latest_migration() {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap();
        assert!(schema_is_current(&MIGRATOR, Some(latest)).is_ok());
        assert!(schema_is_current(&MIGRATOR, Some(latest + 1)).is_ok(), "a rolling upgrade ran ahead");
        assert!(matches!(schema_is_current(&MIGRATOR, Some(latest - 1)), Err(StoreError::SchemaOutdated)));
        assert!(matches!(schema_is_current(&MIGRATOR, None), Err(StoreError::SchemaOutdated)));
    }
}
