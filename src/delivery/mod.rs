//! Delivery: leases workspaces that have queued events, sends their events to
//! Segment in batches and records each outcome.
//!
//! The scheduler leases due workspaces among those known to have events (the
//! backlog), longest-waiting first, so a big backlog is served in turns with
//! the others, and runs one round per leased workspace, up to the limit of
//! concurrent requests. A round reads a batch's worth of the workspace's
//! oldest events, sends them, and acks, dead-letters or keeps each one. No
//! transaction is open while Segment is called.

mod cursors;
mod janitor;
mod pacing;
mod regions;
mod round;
pub mod segment;

use segment::{BatchLimits, SegmentClient};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tokio::task::{self, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::activity::Activity;
use crate::config::DeliverySettings;
use crate::domain::WorkspaceId;
use crate::domain::time::{millis, now_millis};
use crate::metrics::Metrics;
use crate::queue::{Backlog, Queue};
use crate::secrets::Sealer;
use crate::store::{Store, WorkspaceLease};
use cursors::Cursors;
pub use janitor::Janitor;
use regions::ProbeClaim;
use regions::Regions;

/// Heavy reads and deletes of the queue by delivery that may run at once,
/// however many rounds are in flight: a drain after an outage then keeps the
/// database busy with one at a time, and ingest's commits (and the small
/// rounds of caught-up workspaces) never queue behind a crowd of them.
const STORE_TURNS: usize = 1;

/// After a wake-up, the time given to the commits that follow before leasing,
/// so that a stream of commits does not become a stream of lease queries.
const WAKE_COALESCE: Duration = Duration::from_millis(10);

pub struct Delivery {
    store: Arc<Store>,
    client: SegmentClient,
    sealer: Sealer,
    metrics: Arc<Metrics>,
    queue: Queue,
    settings: DeliverySettings,
    limits: BatchLimits,
    backlog: Arc<Backlog>,
    cursors: Cursors,
    regions: Regions,
    /// See [`STORE_TURNS`].
    store_turns: Semaphore,
    activity: Arc<Activity>,
}

/// What delivery works with: the store, the queue it takes events from,
/// Segment's client and the sealer of write keys.
pub struct DeliveryParts {
    pub store: Arc<Store>,
    pub queue: Queue,
    pub client: SegmentClient,
    pub sealer: Sealer,
    pub metrics: Arc<Metrics>,
    /// Where each request to Segment and each event's fate are told.
    pub activity: Arc<Activity>,
}

impl Delivery {
    pub fn new(parts: DeliveryParts, settings: DeliverySettings, limits: BatchLimits) -> Delivery {
        let DeliveryParts { store, queue, client, sealer, metrics, activity } = parts;
        let backlog = queue.backlog().clone();
        let regions = Regions::new(
            store.clone(),
            metrics.clone(),
            settings.region_down_after_failures,
            settings.region_probe_interval(),
        );
        Delivery {
            store,
            client,
            sealer,
            metrics,
            queue,
            settings,
            limits,
            backlog,
            cursors: Cursors::default(),
            regions,
            store_turns: Semaphore::new(STORE_TURNS),
            activity,
        }
    }

    /// Delivers until `stop`. Then lets the rounds in flight finish (each is
    /// bounded by the request timeout); those still running after
    /// `drain_timeout` are abandoned and their events given back to the queue.
    pub async fn run(self: Arc<Self>, stop: CancellationToken, drain_timeout: Duration) {
        let slots = Arc::new(Semaphore::new(self.settings.max_concurrent_requests));
        let mut rounds = Rounds::default();
        let mut next_poll = Instant::now();
        while !stop.is_cancelled() {
            if Instant::now() >= next_poll {
                self.poll().await;
                next_poll = Instant::now() + self.settings.poll_interval();
            }
            rounds.reap();
            let (mut candidates, next_gathered) = self.backlog.due();
            let leased = self.lease(&mut candidates, slots.available_permits()).await;
            let probes = self.lease_probes(&candidates, slots.available_permits() - leased.len()).await;
            let found_work = !leased.is_empty() || !probes.is_empty();
            let rounds_to_start =
                leased.into_iter().map(|l| (l, None)).chain(probes.into_iter().map(|(l, p)| (l, Some(p))));
            for (lease, probe) in rounds_to_start {
                // Never waits: no more workspaces were leased than slots were free.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                rounds.spawn(self.clone(), lease, probe, slot);
            }
            if found_work {
                continue;
            }
            let idle = self.idle_time(&candidates, slots.available_permits() > 0).await;
            let idle = idle.min(next_poll.saturating_duration_since(Instant::now()));
            let idle =
                next_gathered.map_or(idle, |at| idle.min(at.saturating_duration_since(std::time::Instant::now())));
            tokio::select! {
                _ = stop.cancelled() => {}
                // New events: let a few more commits land, then look again.
                _ = self.backlog.woken() => tokio::time::sleep(WAKE_COALESCE).await,
                Some(()) = rounds.next_finished(), if !rounds.is_empty() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
        if tokio::time::timeout(drain_timeout, rounds.finish_all()).await.is_err() {
            rounds.abandon(self.store.as_ref()).await;
        }
    }

    /// A turn for one of the queue's operations when it is `heavy` (see
    /// [`STORE_TURNS`]); a light one goes at once.
    async fn store_turn(&self, heavy: bool) -> Option<SemaphorePermit<'_>> {
        if heavy { self.store_turns.acquire().await.ok() } else { None }
    }

    /// Asks the database which workspaces have events and how the Segment
    /// regions fare: what this instance cannot know (events of instances that
    /// stopped, missed announcements, other instances' failures).
    async fn poll(&self) {
        let version = self.backlog.version();
        match self.store.workspaces_with_events().await {
            Ok(found) => self.backlog.refresh(found, version),
            Err(e) => tracing::warn!(error = %e, "could not poll for queued events; retrying at the next poll"),
        }
        match self.regions.refresh().await {
            Ok(()) if self.regions.any_down() => self.backlog.all_behind(),
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not read the Segment regions' health; retrying at the next poll")
            }
        }
    }

    /// How long to wait for the next workspace to fall due, when nothing is due
    /// now: until the earliest one may be leased, at most the poll interval.
    /// With no free slot, only a finishing round (or new events) matters.
    async fn idle_time(&self, candidates: &[WorkspaceId], slot_free: bool) -> Duration {
        let poll = self.settings.poll_interval();
        if !slot_free || candidates.is_empty() {
            return poll;
        }
        let now = now_millis();
        let due = match self.store.next_due(candidates, now).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read when delivery is next due; polling");
                None
            }
        };
        match due.into_iter().chain(self.regions.next_probe_at()).min() {
            Some(due) => Duration::from_millis((due - now).max(0) as u64).clamp(WAKE_COALESCE, poll),
            None => poll,
        }
    }

    /// For each Segment region that is down and due for a probe, one of its
    /// workspaces among the candidates, leased for a round that probes it.
    async fn lease_probes(&self, candidates: &[WorkspaceId], free: usize) -> Vec<(WorkspaceLease, ProbeClaim)> {
        if free == 0 || candidates.is_empty() {
            return Vec::new();
        }
        let now = now_millis();
        let until = now + millis(self.settings.lease());
        let mut probes = Vec::new();
        for region in self.regions.probes_due(now).into_iter().take(free) {
            let leased = self.store.lease_probe(region, candidates, now, until).await;
            let retry_at = match leased {
                Ok(Some(lease)) => {
                    probes.push((lease, ProbeClaim { region, until }));
                    until
                }
                // Not due by the store's account, or nothing of ours to probe with.
                Ok(None) => now + millis(self.settings.poll_interval()),
                Err(e) => {
                    tracing::warn!(error = %e, %region, "could not lease a probe of the Segment region");
                    now + millis(self.settings.poll_interval())
                }
            };
            self.regions.postpone_probe(region, retry_at);
        }
        probes
    }

    /// Up to `free` due workspaces among the candidates, leased for one round
    /// each: first those found caught up last time (their rounds are short, so
    /// a workspace with a few new events is not kept waiting behind a drain),
    /// then the others, longest-waiting first.
    async fn lease(&self, candidates: &mut [WorkspaceId], free: usize) -> Vec<WorkspaceLease> {
        let first = self.backlog.caught_up_first(candidates);
        let (caught_up, behind) = candidates.split_at(first);
        let mut leased = self.lease_among(caught_up, free).await;
        leased.extend(self.lease_among(behind, free - leased.len()).await);
        leased
    }

    async fn lease_among(&self, candidates: &[WorkspaceId], free: usize) -> Vec<WorkspaceLease> {
        if free == 0 || candidates.is_empty() {
            return Vec::new();
        }
        let now = now_millis();
        let until = now + millis(self.settings.lease());
        match self.store.lease_workspaces(candidates, now, until, free).await {
            Ok(leases) => leases,
            Err(e) => {
                tracing::warn!(error = %e, "could not lease workspaces for delivery; retrying at the next poll");
                Vec::new()
            }
        }
    }
}

/// The rounds in flight, with the lease each holds.
#[derive(Default)]
struct Rounds {
    tasks: JoinSet<()>,
    leases: HashMap<task::Id, WorkspaceLease>,
}

impl Rounds {
    fn spawn(
        &mut self,
        delivery: Arc<Delivery>,
        lease: WorkspaceLease,
        probe: Option<ProbeClaim>,
        slot: OwnedSemaphorePermit,
    ) {
        let held = lease.clone();
        let task = self.tasks.spawn(async move {
            delivery.round(lease, probe).await;
            drop(slot);
        });
        self.leases.insert(task.id(), held);
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Forgets the rounds that have finished.
    fn reap(&mut self) {
        while let Some(finished) = self.tasks.try_join_next_with_id() {
            self.forget(finished);
        }
    }

    /// Waits for the next round to finish; `None` when none is in flight.
    async fn next_finished(&mut self) -> Option<()> {
        let finished = self.tasks.join_next_with_id().await?;
        self.forget(finished);
        Some(())
    }

    async fn finish_all(&mut self) {
        while self.next_finished().await.is_some() {}
    }

    fn forget(&mut self, finished: Result<(task::Id, ()), task::JoinError>) {
        let id = match finished {
            Ok((id, ())) => id,
            Err(e) => {
                tracing::error!(error = %e, "a delivery round ended abnormally; its leases will expire");
                e.id()
            }
        };
        self.leases.remove(&id);
    }

    /// Stops the rounds still in flight and gives their events back to the
    /// queue at once. Segment may have received some of them already; those
    /// are sent again with the same messageId, which Segment de-duplicates.
    async fn abandon(&mut self, store: &Store) {
        self.tasks.abort_all();
        for (_, lease) in self.leases.drain() {
            tracing::warn!(workspace = %lease.workspace_id, "delivery still in flight at the shutdown deadline; releasing it");
            if let Err(e) = store.release_lease(&lease).await {
                tracing::warn!(workspace = %lease.workspace_id, error = %e, "could not release; the lease will expire");
            }
        }
    }
}
