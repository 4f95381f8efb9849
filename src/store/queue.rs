//! The event queue: committing accepted events (and the identity links they
//! carry), reading a leased workspace's oldest events, acknowledging what
//! Segment took, dead letters, expiry and replay, and the announcements of
//! new events to other instances (PostgreSQL).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use const_format::concatcp;
use tokio_util::sync::CancellationToken;

use super::rows::{DEAD_LETTER_COLUMNS, QUEUED_EVENT_COLUMNS};
use super::{
    DeadLetter, EXPIRED, IdentityLink, LINK_REFRESH_MILLIS, Millis, NewEvent, OnEvents, QueuedEvent, Rejection, Store,
    StoreError, WorkspaceLease, latest_links,
};
use crate::domain::WorkspaceId;
use crate::domain::time::now_millis;
use crate::store::db::{Db, Dialect, Sql, Tx, params};

/// The condition under which a worker's writes to events take effect: its
/// workspace lease (`$2` workspace, `$3` lease id) is still the current one.
const LEASE_HELD: &str = "workspace_id = $2 \
     AND EXISTS (SELECT 1 FROM integrations WHERE workspace_id = $2 AND lease_id = $3)";

/// An event whose messageId the workspace's queue already holds is a retry
/// of one stored before (its answer was lost): it is not stored again.
const ALREADY_QUEUED: &str = " ON CONFLICT (workspace_id, message_id) DO NOTHING";

/// An identity link is rewritten when its user changed, or once it is a day
/// old (`$5`), and never by an older one.
const LINK_CONFLICT: &str = " ON CONFLICT (workspace_id, anonymous_id) DO UPDATE SET user_id = excluded.user_id, \
     updated_at = excluded.updated_at WHERE excluded.updated_at >= identities.updated_at \
     AND (excluded.user_id <> identities.user_id OR excluded.updated_at >= identities.updated_at + $5)";

static INSERT_EVENT: Sql = Sql::new(concatcp!(
    "INSERT INTO events (workspace_id, message_id, user_id, anonymous_id, payload, received_at) \
     VALUES ($1, $2, $3, $4, $5, $6)",
    ALREADY_QUEUED
));
static UPSERT_LINK: Sql = Sql::new(concatcp!(
    "INSERT INTO identities (workspace_id, anonymous_id, user_id, updated_at) VALUES ($1, $2, $3, $4)",
    LINK_CONFLICT
));
/// PostgreSQL takes a commit's rows as column arrays, in one round trip,
/// announces them in the same statement, and answers how many were new.
/// (`pg_notify` is called in FROM: Citus cannot keep a `void` column as the
/// intermediate result of a subquery.)
static ENQUEUE_ARRAYS: Sql = Sql::new(concatcp!(
    "WITH new_events AS ( \
       INSERT INTO events (workspace_id, message_id, user_id, anonymous_id, payload, received_at) \
       SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $6::text[], $7::bigint[])",
    ALREADY_QUEUED,
    " RETURNING 1), \
     new_links AS ( \
       INSERT INTO identities (workspace_id, anonymous_id, user_id, updated_at) \
       SELECT * FROM UNNEST($8::text[], $9::text[], $10::text[], $11::bigint[])",
    LINK_CONFLICT,
    ") SELECT (SELECT COUNT(*) FROM new_events), \
              (SELECT COUNT(*) FROM pg_notify($12, $13) WHERE $13 <> '')"
));
static WORKSPACES_WITH_EVENTS: Sql = Sql::new(
    "SELECT workspace_id FROM integrations i \
     WHERE enabled AND EXISTS (SELECT 1 FROM events e WHERE e.workspace_id = i.workspace_id)",
);
static READ: Sql = Sql::new(concatcp!(
    "SELECT ",
    QUEUED_EVENT_COLUMNS,
    " FROM events e LEFT JOIN identities i \
       ON e.user_id IS NULL AND i.workspace_id = e.workspace_id AND i.anonymous_id = e.anonymous_id \
     WHERE e.workspace_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3"
));
static ACK: Sql = Sql::new(concatcp!("DELETE FROM events WHERE id IN_LIST($1) AND ", LEASE_HELD));
static ACK_WITHOUT_FLUSH: Sql = Sql::new("SET LOCAL synchronous_commit = off");
/// On Citus, passes the transaction's `SET LOCAL`s on to the workers that hold
/// its shards (on plain PostgreSQL a setting that nothing reads).
static PASS_SETTINGS_ON: Sql = Sql::new("SET LOCAL citus.propagate_set_commands = 'local'");
static DEAD_LETTER: Sql = Sql::new(concatcp!(
    "INSERT INTO dead_letters (workspace_id, message_id, user_id, anonymous_id, payload, received_at, \
                               reason, status, detail, failed_at) \
     SELECT workspace_id, message_id, user_id, anonymous_id, payload, received_at, $4, $5, $6, $7 \
     FROM events WHERE id = $1 AND ",
    LEASE_HELD
));
static DELETE_EVENT: Sql = Sql::new(concatcp!("DELETE FROM events WHERE id = $1 AND ", LEASE_HELD));
/// Workspaces with events received before `$1`: where expiry looks, one
/// workspace at a time.
static EXPIRING_WORKSPACES: Sql =
    Sql::new("SELECT DISTINCT workspace_id FROM events WHERE received_at < $1 ORDER BY workspace_id LIMIT $2");
/// The workspace's events received before `$2`, unless it is leased at `$3`
/// (its worker may be sending them).
static EXPIRING: Sql = Sql::new(
    "SELECT id FROM events WHERE workspace_id = $1 AND received_at < $2 \
       AND NOT EXISTS (SELECT 1 FROM integrations WHERE workspace_id = $1 AND leased_until >= $3) \
     ORDER BY id LIMIT $4 SKIP_LOCKED",
);
static EXPIRE: Sql = Sql::new(
    "INSERT INTO dead_letters (workspace_id, message_id, user_id, anonymous_id, payload, received_at, \
                               reason, status, detail, failed_at) \
     SELECT workspace_id, message_id, user_id, anonymous_id, payload, received_at, $3, NULL, $4, $5 \
     FROM events WHERE workspace_id = $1 AND id IN_LIST($2)",
);
static DELETE_EVENTS: Sql = Sql::new("DELETE FROM events WHERE workspace_id = $1 AND id IN_LIST($2)");
static DEPTH: Sql = Sql::new("SELECT COUNT(*) FROM events");
static OLDEST: Sql = Sql::new("SELECT MIN(received_at) FROM events");
static DEAD_LETTERS: Sql = Sql::new(concatcp!(
    "SELECT ",
    DEAD_LETTER_COLUMNS,
    " FROM dead_letters WHERE workspace_id = $1 ORDER BY id LIMIT $2"
));
static DEAD_LETTER_IDS: Sql = Sql::new("SELECT id FROM dead_letters WHERE workspace_id = $1 ORDER BY id LOCK_ROW");
/// Counted by the rows it returns: Citus runs an INSERT … SELECT into a
/// table with an identity column through the coordinator, and its row count
/// is then what was selected, not what was stored.
static REPLAY: Sql = Sql::new(concatcp!(
    "INSERT INTO events (workspace_id, message_id, user_id, anonymous_id, payload, received_at) \
     SELECT workspace_id, message_id, user_id, anonymous_id, payload, $3 \
     FROM dead_letters WHERE workspace_id = $1 AND id IN_LIST($2) ORDER BY id",
    ALREADY_QUEUED,
    " RETURNING 1"
));
static DELETE_DEAD_LETTERS: Sql = Sql::new("DELETE FROM dead_letters WHERE workspace_id = $1 AND id IN_LIST($2)");
static ANNOUNCE: Sql = Sql::new("SELECT pg_notify($1, '')");

/// The channel on which commits of new events are announced to all instances.
const EVENTS_CHANNEL: &str = "produktly_events";
/// Least time between two announcements from one instance. A notification
/// roughly doubles the cost of a commit, and it is only a hint: the instance
/// that commits wakes its own delivery at once anyway.
const ANNOUNCE_INTERVAL_MS: Millis = 100;
/// NOTIFY payloads are limited to 8,000 bytes; the rest is found by polling.
const MAX_ANNOUNCEMENT: usize = 7_900;
/// Events deleted per statement of an ack on SQLite: each chunk is a write of
/// its own, so an ingest commit waiting for the writer goes between two.
const SQLITE_ACK_CHUNK: usize = 250;

/// The statements of an event's life in the queue, as the store runs them on
/// one dialect: for the benchmark's figure of the database engine alone.
pub struct QueueLife {
    /// SQLite: one event's row; PostgreSQL: a commit's rows as arrays.
    pub commit: &'static str,
    pub read: &'static str,
    pub ack: &'static str,
}

impl QueueLife {
    pub fn of(dialect: Dialect) -> QueueLife {
        let commit = match dialect {
            Dialect::Postgres => &ENQUEUE_ARRAYS,
            Dialect::Sqlite => &INSERT_EVENT,
        };
        QueueLife { commit: commit.text(dialect), read: READ.text(dialect), ack: ACK.text(dialect) }
    }
}

impl Store {
    /// Commits events and identity links in one transaction; the number of
    /// events stored (the others were already queued: retries).
    pub async fn enqueue(&self, events: Vec<NewEvent>, identities: Vec<IdentityLink>) -> Result<u64, StoreError> {
        let links = latest_links(identities);
        match self.db.dialect() {
            // On Citus, one statement per workspace, all at once: a commit that
            // spans shards would be a two-phase commit (4.7x the cost of an
            // event at 8 workspaces). Each is atomic; if one fails, the
            // requests are answered 503 and their retries find the events of
            // the others already queued. Every statement is waited for, none
            // dropped half-way: a commit is never cancelled (docs/operations.md).
            Dialect::Postgres if self.on_citus => {
                let mut announcement = self.announcement(&events);
                let mut by_workspace: HashMap<WorkspaceId, (Vec<NewEvent>, Vec<IdentityLink>)> = HashMap::new();
                for event in events {
                    by_workspace.entry(event.workspace_id.clone()).or_default().0.push(event);
                }
                for link in links {
                    by_workspace.entry(link.workspace_id.clone()).or_default().1.push(link);
                }
                let commits = by_workspace
                    .into_values()
                    .map(|(events, links)| self.enqueue_arrays(events, links, std::mem::take(&mut announcement)));
                futures_util::future::join_all(commits).await.into_iter().sum()
            }
            Dialect::Postgres => {
                let announcement = self.announcement(&events);
                self.enqueue_arrays(events, links, announcement).await
            }
            // Prepared single-row inserts in one transaction: no statement to
            // parse, and no statement journal as a multi-row insert needs.
            Dialect::Sqlite => {
                let event_rows = events
                    .into_iter()
                    .map(|e| params![e.workspace_id, e.message_id, e.user_id, e.anonymous_id, e.payload, e.received_at])
                    .collect();
                let link_rows = links
                    .into_iter()
                    .map(|l| params![l.workspace_id, l.anonymous_id, l.user_id, l.at, LINK_REFRESH_MILLIS])
                    .collect();
                let changed = self.db.write_rows(vec![(&INSERT_EVENT, event_rows), (&UPSERT_LINK, link_rows)]).await?;
                Ok(changed[0])
            }
        }
    }

    /// PostgreSQL: the rows as column arrays, in one round trip, with the
    /// announcement (empty for none); how many events were new.
    async fn enqueue_arrays(
        &self,
        events: Vec<NewEvent>,
        links: Vec<IdentityLink>,
        announcement: String,
    ) -> Result<u64, StoreError> {
        let mut columns = EventColumns::default();
        for event in events {
            columns.push(event);
        }
        let mut link_columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for link in links {
            link_columns.0.push(link.workspace_id.into_string());
            link_columns.1.push(link.anonymous_id);
            link_columns.2.push(link.user_id);
            link_columns.3.push(link.at);
        }
        let EventColumns { workspace, message, user, anonymous, payload, received } = columns;
        let values = params![
            workspace,
            message,
            user,
            anonymous,
            LINK_REFRESH_MILLIS,
            payload,
            received,
            link_columns.0,
            link_columns.1,
            link_columns.2,
            link_columns.3,
            EVENTS_CHANNEL,
            announcement,
        ];
        let (stored, _): (i64, i64) = self.db.one(&ENQUEUE_ARRAYS, values).await?;
        Ok(stored as u64)
    }

    /// The workspaces with an enabled integration and queued events. This
    /// probes the queue per workspace: delivery polls it, it does not ask it
    /// at every turn.
    pub async fn workspaces_with_events(&self) -> Result<Vec<WorkspaceId>, StoreError> {
        Ok(self.db.all(&WORKSPACES_WITH_EVENTS, params![]).await?)
    }

    /// The leased workspace's `limit` oldest queued events with an id above
    /// `after` (0: from the front). Reading takes no lock and writes nothing:
    /// the workspace lease makes them this worker's.
    pub async fn queued_events(
        &self,
        lease: &WorkspaceLease,
        after: i64,
        limit: usize,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        Ok(self.db.all(&READ, params![&lease.workspace_id, after, limit as i64]).await?)
    }

    /// Deletes delivered events, if the lease is still held.
    pub async fn ack(&self, lease: &WorkspaceLease, event_ids: &[i64]) -> Result<u64, StoreError> {
        let held = |ids: &[i64]| params![ids, &lease.workspace_id, &lease.lease_id];
        match &self.db {
            // Without waiting for the disk: an ack lost in a crash only means its
            // events go to Segment once more (same messageId), and ingest's
            // commits, which must wait for the disk, do not queue behind acks'.
            Db::Postgres(_) => {
                let mut tx = self.db.begin().await?;
                tx.execute(&PASS_SETTINGS_ON, params![]).await?;
                tx.execute(&ACK_WITHOUT_FLUSH, params![]).await?;
                let deleted = tx.execute(&ACK, held(event_ids)).await?;
                tx.commit().await?;
                Ok(deleted)
            }
            // (If a chunk fails, its events stay queued and go to Segment once
            // more, same messageId.)
            Db::Sqlite(_) => {
                let mut deleted = 0;
                for chunk in event_ids.chunks(SQLITE_ACK_CHUNK) {
                    deleted += self.db.execute(&ACK, held(chunk)).await?;
                }
                Ok(deleted)
            }
        }
    }

    /// Moves events to the dead letters, if the lease is still held.
    pub async fn dead_letter(
        &self,
        lease: &WorkspaceLease,
        event_ids: &[i64],
        why: &Rejection,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut moved = 0;
        let (workspace, lease_id) = (&lease.workspace_id, &lease.lease_id);
        let status = why.status.map(i64::from);
        for &id in event_ids {
            let values = params![id, workspace.as_str(), lease_id, why.reason.as_str(), status, &why.detail, now];
            moved += tx.execute(&DEAD_LETTER, values).await?;
            tx.execute(&DELETE_EVENT, params![id, workspace.as_str(), lease_id]).await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// Moves up to `limit` events received before `cutoff`, of workspaces not
    /// leased at `now`, to the dead letters as `expired`.
    pub async fn expire_events(&self, cutoff: Millis, now: Millis, limit: usize) -> Result<u64, StoreError> {
        let workspaces: Vec<WorkspaceId> = self.db.all(&EXPIRING_WORKSPACES, params![cutoff, limit as i64]).await?;
        let mut moved = 0;
        for workspace in &workspaces {
            let left = limit - moved as usize;
            if left == 0 {
                break;
            }
            moved += self.expire_in(workspace, cutoff, now, left).await?;
        }
        Ok(moved)
    }

    /// Expires up to `limit` of one workspace's events, in one transaction.
    async fn expire_in(
        &self,
        workspace: &WorkspaceId,
        cutoff: Millis,
        now: Millis,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db.begin().await?;
        let ids: Vec<i64> = tx.all(&EXPIRING, params![workspace, cutoff, now, limit as i64]).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let (reason, detail) = EXPIRED;
        let moved = tx.execute(&EXPIRE, params![workspace, ids.as_slice(), reason.as_str(), detail, now]).await?;
        tx.execute(&DELETE_EVENTS, params![workspace, ids.as_slice()]).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Undelivered events of all workspaces.
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        Ok(self.db.one::<i64>(&DEPTH, params![]).await? as u64)
    }

    /// When the oldest undelivered event was received, if any is waiting.
    pub async fn oldest_queued_at(&self) -> Result<Option<Millis>, StoreError> {
        Ok(self.db.one(&OLDEST, params![]).await?)
    }

    pub async fn dead_letters(&self, workspace_id: &str, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self.db.all(&DEAD_LETTERS, params![workspace_id, limit as i64]).await?)
    }

    /// Requeues every dead letter of the workspace, with a fresh age.
    pub async fn replay_dead_letters(&self, workspace_id: &str, now: Millis) -> Result<u64, StoreError> {
        let mut tx = self.db.begin().await?;
        // By id: exactly what is requeued is deleted, whatever another instance adds meanwhile.
        let ids: Vec<i64> = tx.all(&DEAD_LETTER_IDS, params![workspace_id]).await?;
        let replayed = tx.all::<i64>(&REPLAY, params![workspace_id, ids.as_slice(), now]).await?.len() as u64;
        tx.execute(&DELETE_DEAD_LETTERS, params![workspace_id, ids.as_slice()]).await?;
        self.announce_in(&mut tx).await?;
        tx.commit().await?;
        Ok(replayed)
    }

    /// Calls `on_events` with the workspaces of events other instances commit,
    /// until `stop`: a hint only, since delivery also polls. Without
    /// cross-instance notification (SQLite serves one instance) it returns at once.
    pub async fn listen_for_events(&self, on_events: OnEvents, stop: CancellationToken) {
        if self.db.dialect() == Dialect::Sqlite {
            return;
        }
        let relay = |payload: &str| {
            on_events(
                payload.split(',').filter(|id| !id.is_empty()).map(|id| WorkspaceId::stored(id.to_owned())).collect(),
            )
        };
        loop {
            let listened = tokio::select! {
                _ = stop.cancelled() => return,
                listened = self.db.listen(EVENTS_CHANNEL, relay) => listened,
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

    /// Announces new events to every instance when the transaction commits
    /// (PostgreSQL; SQLite serves one instance).
    pub(super) async fn announce_in(&self, tx: &mut Tx) -> Result<(), StoreError> {
        if matches!(tx, Tx::Postgres(_)) {
            tx.execute(&ANNOUNCE, params![EVENTS_CHANNEL]).await?;
        }
        Ok(())
    }

    /// What this commit announces to other instances: the workspaces of its
    /// events, comma-separated (ids hold no comma), at most one announcement
    /// every `ANNOUNCE_INTERVAL_MS`; empty for none.
    fn announcement(&self, events: &[NewEvent]) -> String {
        let now = now_millis();
        let last = self.announced.load(Ordering::Relaxed);
        let due = !events.is_empty()
            && now - last >= ANNOUNCE_INTERVAL_MS
            && self.announced.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        if !due {
            return String::new();
        }
        let mut ids: Vec<&str> = events.iter().map(|e| e.workspace_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut payload = String::new();
        for id in ids {
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
}

/// A commit's events as the column arrays PostgreSQL takes.
#[derive(Default)]
struct EventColumns {
    workspace: Vec<String>,
    message: Vec<String>,
    user: Vec<Option<String>>,
    anonymous: Vec<Option<String>>,
    payload: Vec<String>,
    received: Vec<i64>,
}

impl EventColumns {
    fn push(&mut self, event: NewEvent) {
        self.workspace.push(event.workspace_id.into_string());
        self.message.push(event.message_id);
        self.user.push(event.user_id);
        self.anonymous.push(event.anonymous_id);
        self.payload.push(event.payload);
        self.received.push(event.received_at);
    }
}
