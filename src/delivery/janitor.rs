//! Periodic housekeeping: undelivered events past the maximum age become dead
//! letters (never dropped silently), and the queue-depth gauge is refreshed.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Reason};
use crate::store::{Store, StoreError};
use crate::time::now_millis;

/// Events expired per statement, to keep transactions short.
const EXPIRE_BATCH: usize = 10_000;

pub struct Janitor {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub max_age: Duration,
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
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "housekeeping failed; retrying at the next tick");
            }
        }
    }

    async fn sweep(&self) -> Result<(), StoreError> {
        let now = now_millis();
        let cutoff = now - i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX);
        loop {
            let expired = self.store.expire_events(cutoff, now, EXPIRE_BATCH).await?;
            if expired > 0 {
                tracing::warn!(
                    expired,
                    "undelivered events passed the maximum age and became dead letters"
                );
                self.metrics
                    .events_dead_lettered
                    .get_or_create(&Reason { reason: "expired" })
                    .inc_by(expired);
            }
            if expired < EXPIRE_BATCH as u64 {
                break;
            }
        }
        let depth = self.store.queue_depth().await?;
        self.metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        Ok(())
    }
}
