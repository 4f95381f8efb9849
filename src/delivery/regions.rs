//! Segment's health per region, shared by every workspace sending there and
//! by every instance (through the store).
//!
//! Segment's edge fails for everyone at once, so a 5xx, a timeout or a
//! connection error counts against the region as well as the workspace. After
//! `down_after` of them in a row with no success in between, the region is
//! down: its workspaces are held (no failures of their own pile up) and one
//! probe at a time, across instances, tries it every few seconds with one of
//! their batches. The first success, probe or not, brings the region up and
//! makes every held workspace due at once. A `429`, a `400` or a failure
//! that successes of other workspaces interleave stays the workspace's own.
//!
//! This instance keeps what it last knew of each region, so that a success
//! writes to the store only when the region had failures, and so that it
//! knows when to probe; `refresh` reads what the other instances did.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

use crate::domain::Region;
use crate::domain::time::{Millis, millis, now_millis};
use crate::metrics::Metrics;
use crate::store::{RegionHealth, Store, StoreError};

/// A probe's hold on its region: no other probe goes before `until`.
#[derive(Clone, Copy, Debug)]
pub struct ProbeClaim {
    pub region: Region,
    pub until: Millis,
}

pub struct Regions {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    down_after: u32,
    probe_interval: Duration,
    known: Mutex<HashMap<Region, RegionHealth>>,
}

impl Regions {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, down_after: u32, probe_interval: Duration) -> Regions {
        Regions { store, metrics, down_after, probe_interval, known: Mutex::default() }
    }

    /// Reads every region's health as the store has it.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        for health in self.store.region_health().await? {
            self.remember(health);
        }
        Ok(())
    }

    /// Counts a region-wide failure; `true` when the region is down after it,
    /// so that the workspace is held rather than failing on its own.
    pub async fn failed(&self, region: Region, probe: bool) -> Result<bool, StoreError> {
        let now = now_millis();
        let next_probe_at = now + millis(self.probe_wait());
        let health = self.store.region_failed(region, now, self.down_after, next_probe_at, probe).await?;
        if health.is_down() && health.failures == self.down_after {
            tracing::warn!(%region, failures = health.failures, "Segment region is down: its workspaces wait while one probe at a time tries it");
        } else if probe {
            tracing::debug!(%region, "Segment region still down after a probe");
        }
        let down = health.is_down();
        self.remember(health);
        Ok(down)
    }

    /// A success in the region: forgets its failures, and brings it up if it
    /// was down (every workspace waiting there is then due at once).
    pub async fn succeeded(&self, region: Region) -> Result<(), StoreError> {
        let troubled = self.lock().get(&region).is_some_and(|h| h.failures > 0 || h.is_down());
        if !troubled {
            return Ok(());
        }
        let now = now_millis();
        if let Some(since) = self.store.region_succeeded(region, now).await? {
            tracing::warn!(%region, down_for_ms = now - since, "Segment region is back: every waiting workspace is due");
        }
        self.remember(RegionHealth { region, failures: 0, down_since: None, next_probe_at: 0 });
        Ok(())
    }

    /// After a probe round: when it sent nothing (no events left, a store
    /// error), the next probe may go at once; a probe that got an answer has
    /// already moved or cleared the claim.
    pub async fn end_probe(&self, claim: ProbeClaim) {
        if let Err(e) = self.store.end_probe(claim.region, claim.until, now_millis()).await {
            tracing::warn!(region = %claim.region, error = %e, "could not end the probe; it ends when its lease does");
        }
    }

    /// Whether a region is down, as this instance knows.
    pub fn any_down(&self) -> bool {
        self.lock().values().any(RegionHealth::is_down)
    }

    /// The regions down whose probe is due at `now`, as this instance knows.
    pub fn probes_due(&self, now: Millis) -> Vec<Region> {
        self.lock().values().filter(|h| h.is_down() && h.next_probe_at <= now).map(|h| h.region).collect()
    }

    /// The earliest probe of a region that is down.
    pub fn next_probe_at(&self) -> Option<Millis> {
        self.lock().values().filter(|h| h.is_down()).map(|h| h.next_probe_at).min()
    }

    /// Not before `until` will this instance try to probe the region again
    /// (a probe is in flight, or another instance holds it).
    pub fn postpone_probe(&self, region: Region, until: Millis) {
        if let Some(health) = self.lock().get_mut(&region) {
            health.next_probe_at = health.next_probe_at.max(until);
        }
    }

    fn remember(&self, health: RegionHealth) {
        self.metrics.set_region_up(health.region, !health.is_down());
        self.lock().insert(health.region, health);
    }

    /// Between half the probe interval and all of it, so that instances and
    /// regions do not probe in step.
    fn probe_wait(&self) -> Duration {
        let interval = millis(self.probe_interval).max(2);
        Duration::from_millis(rand::rng().random_range(interval / 2..=interval) as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Region, RegionHealth>> {
        self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
