//! Periodic housekeeping: undelivered events past the maximum age become dead
//! letters (never dropped silently), dead letters and identity links past
//! their retention are deleted, so is what other instances committed for a
//! workspace after it was deleted, and the queue's gauges (depth, oldest age) and
//! the store's reachability are refreshed.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::time::{millis, now_millis};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::{Store, StoreError};

/// Rows moved or deleted per statement, to keep transactions short.
const BATCH: usize = 10_000;
/// How long a deleted workspace's rows are still swept: far longer than any
/// instance's ingest key cache keeps its key.
const DELETED_WORKSPACES_SWEPT_FOR: Duration = Duration::from_secs(3600);

pub struct Janitor {
    pub store: Arc<Store>,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub max_age: Duration,
    pub dead_letter_retention: Duration,
    pub identity_retention: Duration,
}

impl Janitor {
    pub async fn run(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let swept = self.sweep().await;
            self.metrics.store_up.set(i64::from(swept.is_ok()));
            if let Err(e) = swept {
                tracing::warn!(error = %e, "housekeeping failed; retrying at the next tick");
            }
        }
    }

    async fn sweep(&self) -> Result<(), StoreError> {
        let now = now_millis();
        loop {
            let expired = self.queue.expire(now - millis(self.max_age), now, BATCH).await?;
            if expired > 0 {
                tracing::warn!(expired, "undelivered events passed the maximum age and became dead letters");
            }
            if expired < BATCH as u64 {
                break;
            }
        }
        loop {
            let dead_before = now - millis(self.dead_letter_retention);
            let identities_before = now - millis(self.identity_retention);
            let (dead, identities) = self.store.purge(dead_before, identities_before, BATCH).await?;
            if dead > 0 || identities > 0 {
                tracing::info!(dead, identities, "deleted dead letters and identity links past their retention");
            }
            if dead < BATCH as u64 && identities < BATCH as u64 {
                break;
            }
        }
        let swept = self.store.sweep_deleted_workspaces(now - millis(DELETED_WORKSPACES_SWEPT_FOR)).await?;
        if swept.events + swept.dead_letters + swept.identities > 0 {
            tracing::info!(
                events = swept.events,
                dead_letters = swept.dead_letters,
                identities = swept.identities,
                "deleted what was committed for deleted workspaces after they went"
            );
        }
        self.queue.recount().await?;
        let oldest = self.store.oldest_queued_at().await?;
        self.metrics.queue_oldest_age.set(oldest.map_or(0, |at| (now_millis() - at).max(0) / 1000));
        Ok(())
    }
}
