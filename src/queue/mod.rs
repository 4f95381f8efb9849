//! The event queue between ingest and delivery: the store's queue operations
//! with what each one changes beside the rows, in one place. Every way events
//! enter or leave (commit, ack, dead letter, expiry, replay, erasure, a
//! deleted integration or workspace) goes through [`Queue`], which keeps
//! this instance's count of waiting events (`depth`, which gates ingest),
//! marks the workspaces that have some (`backlog`, which wakes delivery) and
//! counts them in the metrics. Callers cannot forget one of the three.

mod backlog;
pub mod depth;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

pub use backlog::{Backlog, Gathering};
use depth::QueueDepth;

use crate::domain::{DeadLetterReason, WorkspaceId};
use crate::metrics::{Metrics, StoreOperation};
use crate::store::{
    Erased, ErasureSubject, IdentityLink, Millis, NewEvent, OnEvents, Rejection, Store, StoreError, WorkspaceLease,
};

#[derive(Clone)]
pub struct Queue {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    depth: QueueDepth,
    backlog: Arc<Backlog>,
}

impl Queue {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, depth: QueueDepth, gathering: Gathering) -> Queue {
        Queue { store, metrics, depth, backlog: Arc::new(Backlog::new(gathering)) }
    }

    /// Undelivered events of every instance, as far as this one knows.
    pub fn depth(&self) -> u64 {
        self.depth.get()
    }

    /// The workspaces with events waiting, which delivery serves.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Marks the workspaces other instances commit events for, until `stop`.
    pub async fn listen_for_announcements(&self, stop: CancellationToken) {
        let backlog = self.backlog.clone();
        let on_events: OnEvents = Arc::new(move |workspaces| backlog.arrived(workspaces.iter().map(|id| (id, 1))));
        self.store.listen_for_events(on_events, stop).await
    }

    /// Events of this workspace may be deliverable now (its integration changed).
    pub fn wake(&self, workspace: &WorkspaceId) {
        self.backlog.mark([workspace]);
    }

    /// Commits events and identity links in one transaction.
    pub async fn enqueue(&self, events: Vec<NewEvent>, identities: Vec<IdentityLink>) -> Result<(), StoreError> {
        let count = events.len() as u64;
        let arrivals = per_workspace(&events);
        let started = Instant::now();
        let stored = self.store.enqueue(events, identities).await;
        self.metrics.store_op(StoreOperation::Enqueue, started.elapsed());
        let stored = stored?;
        self.metrics.events_accepted.inc_by(count);
        self.metrics.events_already_queued.inc_by(count - stored);
        self.depth.added(stored);
        self.backlog.arrived(arrivals.iter().map(|(id, n)| (id, *n)));
        Ok(())
    }

    /// Deletes what Segment took, if the lease is still held; how many.
    pub async fn ack(&self, lease: &WorkspaceLease, event_ids: &[i64]) -> Result<u64, StoreError> {
        let started = Instant::now();
        let acked = self.store.ack(lease, event_ids).await;
        self.metrics.store_op(StoreOperation::Ack, started.elapsed());
        let acked = acked?;
        self.metrics.events_delivered.inc_by(acked);
        self.depth.removed(acked);
        Ok(acked)
    }

    /// Moves events to the dead letters for one reason, if the lease is still
    /// held; how many.
    pub async fn dead_letter(
        &self,
        lease: &WorkspaceLease,
        event_ids: &[i64],
        why: &Rejection,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let moved = self.store.dead_letter(lease, event_ids, why, now).await?;
        self.metrics.dead_lettered(why.reason, moved);
        self.depth.removed(moved);
        Ok(moved)
    }

    /// Moves up to `limit` events received before `cutoff` to the dead letters (`expired`).
    pub async fn expire(&self, cutoff: Millis, now: Millis, limit: usize) -> Result<u64, StoreError> {
        let expired = self.store.expire_events(cutoff, now, limit).await?;
        self.metrics.dead_lettered(DeadLetterReason::Expired, expired);
        self.depth.removed(expired);
        Ok(expired)
    }

    /// Requeues every dead letter of the workspace; how many.
    pub async fn replay(&self, workspace: &WorkspaceId, now: Millis) -> Result<u64, StoreError> {
        let replayed = self.store.replay_dead_letters(workspace, now).await?;
        self.depth.added(replayed);
        self.backlog.mark([workspace]);
        Ok(replayed)
    }

    /// Removes a person's queued events, dead letters and identity links.
    pub async fn erase(&self, workspace: &WorkspaceId, subject: &ErasureSubject) -> Result<Erased, StoreError> {
        let erased = self.store.erase(workspace, subject).await?;
        self.depth.removed(erased.events);
        self.metrics.erasures.inc();
        Ok(erased)
    }

    /// Deletes the workspace's integration and its queued events; whether it had one.
    pub async fn delete_integration(&self, workspace: &WorkspaceId) -> Result<bool, StoreError> {
        let dropped = self.store.delete_integration(workspace).await?;
        if let Some(events) = dropped {
            self.depth.removed(events);
        }
        Ok(dropped.is_some())
    }

    /// Deletes the workspace and everything of it; what went, if it existed.
    pub async fn delete_workspace(&self, workspace: &WorkspaceId, now: Millis) -> Result<Option<Erased>, StoreError> {
        let erased = self.store.delete_workspace(workspace, now).await?;
        if let Some(erased) = &erased {
            self.depth.removed(erased.events);
            self.metrics.workspaces_deleted.inc();
        }
        Ok(erased)
    }

    /// Sets the depth to the store's own count of every instance's events.
    pub async fn recount(&self) -> Result<(), StoreError> {
        self.depth.counted(self.store.queue_depth().await?);
        Ok(())
    }
}

/// How many of the events each workspace has (a commit holds a few workspaces' events).
fn per_workspace(events: &[NewEvent]) -> HashMap<WorkspaceId, usize> {
    let mut counts: HashMap<WorkspaceId, usize> = HashMap::new();
    for event in events {
        match counts.get_mut(&event.workspace_id) {
            Some(count) => *count += 1,
            None => {
                counts.insert(event.workspace_id.clone(), 1);
            }
        }
    }
    counts
}
