//! Delivery: leases workspaces that have queued events, sends their events to
//! Segment in batches and records each outcome.
//!
//! The scheduler leases due workspaces (longest-waiting first, so a big
//! backlog is served in turns with the others) and runs one round per leased
//! workspace, up to the limit of concurrent requests. A round claims a batch's
//! worth of events under the lease, sends them, and acks, dead-letters or
//! releases each one. No transaction is open while Segment is called.

mod backoff;
mod janitor;
mod round;

use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::DeliverySettings;
use crate::metrics::Metrics;
use crate::secrets::Sealer;
use crate::segment::{BatchLimits, SegmentClient};
use crate::store::Store;
use crate::time::now_millis;

pub use janitor::Janitor;

pub struct Delivery {
    pub store: Arc<dyn Store>,
    pub client: SegmentClient,
    pub sealer: Sealer,
    pub metrics: Arc<Metrics>,
    pub settings: DeliverySettings,
    pub limits: BatchLimits,
    /// Signalled when new events are committed.
    pub wake: Arc<Notify>,
}

impl Delivery {
    /// Delivers until `stop`; then lets the rounds in flight finish (each is
    /// bounded by the request timeout) so that none leaves its leases behind.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.max_concurrent_requests));
        let mut rounds = JoinSet::new();
        while !stop.is_cancelled() {
            while rounds.try_join_next().is_some() {}
            let leased = self.lease(slots.available_permits()).await;
            let found_work = !leased.is_empty();
            for lease in leased {
                // Never waits: no more workspaces were leased than slots were free.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let delivery = self.clone();
                rounds.spawn(async move {
                    delivery.round(lease).await;
                    drop(slot);
                });
            }
            if found_work {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = self.wake.notified() => tokio::time::sleep(self.settings.linger()).await,
                Some(_) = rounds.join_next(), if !rounds.is_empty() => {}
                _ = tokio::time::sleep(self.settings.poll_interval()) => {}
            }
        }
        while rounds.join_next().await.is_some() {}
    }

    /// Up to `free` due workspaces, leased for one round each.
    async fn lease(&self, free: usize) -> Vec<crate::store::WorkspaceLease> {
        if free == 0 {
            return Vec::new();
        }
        let now = now_millis();
        let until = now + self.settings.lease_ms as i64;
        match self.store.lease_workspaces(now, until, free).await {
            Ok(leases) => leases,
            Err(e) => {
                tracing::warn!(error = %e, "could not lease workspaces for delivery; retrying at the next poll");
                Vec::new()
            }
        }
    }
}
