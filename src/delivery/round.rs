//! One delivery round for one leased workspace: read its oldest events, pack,
//! send, and settle each one as delivered or dead-lettered; what is not
//! settled stays queued for the workspace's next round.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::pacing::{Pace, backoff};
use super::regions::ProbeClaim;
use super::{Delivery, Regions};
use crate::metrics::{Reason, Status};
use crate::segment::{self, Batch, Outcome};
use crate::store::{LastError, Millis, Rejection, RoundEnd, StoreError, WorkspaceLease};
use crate::time::{iso8601, millis, now_millis};

/// How often a lease is offered back to a store that failed.
const GIVE_BACK_RETRY: Duration = Duration::from_secs(1);

/// Time a lease must have left, beyond one request's timeout, for a round
/// to send on without extending it.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// Acks and dead letters of at most this many events are small enough not
/// to wait for a turn at the store.
const SMALL_OPERATION: usize = 100;

/// Reason of a message Segment refused.
const REJECTED: &str = "rejected";
/// Reason of a message over Segment's per-message limit.
const TOO_LARGE: &str = "message_too_large";

impl Delivery {
    /// A `probe` round is the one request trying a Segment region that is down.
    pub(super) async fn round(&self, lease: WorkspaceLease, probe: Option<ProbeClaim>) {
        let recorded = match self.deliver(&lease, probe.is_some()).await {
            Ok(end) => self.store.end_round(&lease, &end).await,
            Err(e) => Err(e),
        };
        if let Some(claim) = probe {
            self.regions.end_probe(claim).await;
        }
        if let Err(e) = recorded {
            tracing::warn!(workspace = %lease.workspace_id, error = %e, "delivery round failed on the store");
            self.cursors.reset(&lease.workspace_id);
            self.give_back(&lease).await;
        }
    }

    /// After a store failure: gives the workspace lease back as soon as the
    /// store answers again, so that delivery resumes then rather than when the
    /// lease runs out. Unsettled events are simply read again.
    async fn give_back(&self, lease: &WorkspaceLease) {
        let deadline = tokio::time::Instant::now() + self.settings.lease();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(GIVE_BACK_RETRY).await;
            if self.store.release_lease(lease).await.is_ok() {
                return;
            }
        }
    }

    async fn deliver(&self, lease: &WorkspaceLease, probe: bool) -> Result<RoundEnd, StoreError> {
        let write_key = match self.sealer.unseal(&lease.workspace_id, &lease.sealed_write_key) {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(workspace = %lease.workspace_id, error = %e, "cannot unseal the write key");
                return Ok(self.failure(lease, None, e.to_string(), now_millis()));
            }
        };
        let version = self.backlog.version();
        let mut held_until = Instant::now() + self.settings.lease();
        let after = self.cursors.start(&lease.workspace_id);
        let events = {
            // A caught-up workspace's read is small: it need not wait behind a drain's.
            let _turn = self.store_turn(!self.backlog.is_caught_up(&lease.workspace_id)).await;
            let reading = Instant::now();
            let events = self.store.queued_events(lease, after, self.limits.max_messages).await?;
            self.metrics.store_op("read", reading.elapsed());
            events
        };
        let read = events.len();
        let last_read = events.last().map(|e| e.id);
        let received_at: HashMap<i64, Millis> = events.iter().map(|e| (e.id, e.received_at)).collect();
        let messages = events.into_iter().map(|e| (e.id, segment::with_user_id(e.payload, e.user_id.as_deref())));
        let packed = segment::pack(messages, self.limits);
        if !packed.oversized.is_empty() {
            let detail = format!("the message is over Segment's limit of {} bytes", segment::MAX_MESSAGE_BYTES);
            self.dead_letter(lease, &packed.oversized, TOO_LARGE, None, &detail).await?;
        }

        let mut pending: VecDeque<Batch> = packed.batches.into();
        let mut delivered_any = false;
        let mut pace = Pace::new(self.settings.workspace_request_interval());
        while let Some(batch) = pending.pop_front() {
            pace.wait().await;
            if !self.hold_lease(lease, &mut held_until).await? {
                tracing::warn!(workspace = %lease.workspace_id, "the workspace lease passed to another worker during delivery");
                self.cursors.reset(&lease.workspace_id);
                return Ok(RoundEnd::Delivered {
                    delivered_at: delivered_any.then(now_millis),
                    next_attempt_at: now_millis(),
                });
            }
            self.metrics.batch_size.observe(batch.len() as f64);
            let outcome = self.client.send(lease.region, &write_key, batch.body(&iso8601(Utc::now()))).await;
            let status = match &outcome {
                Outcome::Delivered { status }
                | Outcome::Rejected { status, .. }
                | Outcome::RateLimited { status, .. } => *status,
                Outcome::Failed { status, .. } => status.unwrap_or(0),
            };
            self.metrics.segment_responses.get_or_create(&Status { status }).inc();
            let region_failed = matches!(&outcome, Outcome::Failed { status, .. } if Regions::is_region_wide(*status));
            if !region_failed {
                // Segment answered: whatever it said of this batch, the region is up.
                self.regions.succeeded(lease.region).await?;
            }
            match outcome {
                Outcome::Delivered { .. } => {
                    self.ack(lease, &batch, &received_at).await?;
                    delivered_any = true;
                }
                Outcome::Rejected { status, body } => match batch.split() {
                    // Halve until the refused message is alone; the rest goes through.
                    Ok((first, second)) => {
                        pending.push_front(second);
                        pending.push_front(first);
                    }
                    Err(single) => {
                        self.dead_letter(lease, single.event_ids(), REJECTED, Some(status), &body).await?;
                    }
                },
                // What was not delivered stays queued for the workspace's next round.
                Outcome::RateLimited { status, retry_after } => {
                    self.cursors.reset(&lease.workspace_id);
                    self.count_retried(std::iter::once(&batch).chain(&pending));
                    return Ok(self.rate_limited(status, retry_after, pace.next_allowed()));
                }
                Outcome::Failed { status, message } => {
                    self.cursors.reset(&lease.workspace_id);
                    self.count_retried(std::iter::once(&batch).chain(&pending));
                    if region_failed && self.regions.failed(lease.region, probe).await? {
                        self.backlog.all_behind();
                        return Ok(waiting_for_region(status, message));
                    }
                    return Ok(self.failure(lease, status, message, pace.next_allowed()));
                }
            }
        }
        if let Some(last) = last_read {
            self.cursors.advance(&lease.workspace_id, last);
        }
        // A partial batch means the workspace is caught up: it leaves the
        // backlog until new events come, and the next batch gets time to fill.
        let next_attempt_at = if read < self.limits.max_messages {
            self.backlog.settle(&lease.workspace_id, version);
            pace.next_allowed().max(now_millis() + millis(self.settings.linger()))
        } else {
            self.backlog.behind(&lease.workspace_id);
            pace.next_allowed()
        };
        Ok(RoundEnd::Delivered { delivered_at: delivered_any.then(now_millis), next_attempt_at })
    }

    /// Extends the lease when what is left of it might not cover the next
    /// request, so that a long round keeps its workspace while a crashed
    /// worker's lease still runs out soon. `false`: the lease is lost.
    async fn hold_lease(&self, lease: &WorkspaceLease, held_until: &mut Instant) -> Result<bool, StoreError> {
        let needed = self.client.request_timeout() + LEASE_MARGIN;
        if held_until.saturating_duration_since(Instant::now()) >= needed {
            return Ok(true);
        }
        let renewed = Instant::now();
        let held = self.store.extend_lease(lease, now_millis() + millis(self.settings.lease())).await?;
        *held_until = renewed + self.settings.lease();
        Ok(held)
    }

    async fn ack(
        &self,
        lease: &WorkspaceLease,
        batch: &Batch,
        received_at: &HashMap<i64, Millis>,
    ) -> Result<(), StoreError> {
        let acked = {
            let _turn = self.store_turn(batch.len() > SMALL_OPERATION).await;
            let started = Instant::now();
            let acked = self.store.ack(lease, batch.event_ids()).await?;
            self.metrics.store_op("ack", started.elapsed());
            acked
        };
        if acked < batch.len() as u64 {
            // The lease ran out and another worker took the workspace; it sends these
            // again with the same messageIds, which Segment de-duplicates.
            tracing::warn!(workspace = %lease.workspace_id, unacked = batch.len() as u64 - acked, "the workspace lease passed to another worker during delivery");
        }
        self.metrics.events_delivered.inc_by(acked);
        self.metrics.dequeued(acked);
        let now = now_millis();
        for id in batch.event_ids() {
            if let Some(received) = received_at.get(id) {
                self.metrics.delivery_latency.observe((now - received).max(0) as f64 / 1000.0);
            }
        }
        Ok(())
    }

    fn count_retried<'b>(&self, batches: impl Iterator<Item = &'b Batch>) {
        self.metrics.events_retried.inc_by(batches.map(|b| b.len() as u64).sum());
    }

    async fn dead_letter(
        &self,
        lease: &WorkspaceLease,
        ids: &[i64],
        reason: &'static str,
        status: Option<u16>,
        detail: &str,
    ) -> Result<(), StoreError> {
        let rejections: Vec<Rejection> = ids
            .iter()
            .map(|&event_id| Rejection { event_id, reason: reason.to_owned(), status, detail: detail.to_owned() })
            .collect();
        let moved = {
            let _turn = self.store_turn(rejections.len() > SMALL_OPERATION).await;
            self.store.dead_letter(lease, &rejections, now_millis()).await?
        };
        tracing::warn!(workspace = %lease.workspace_id, reason, status, detail, moved, "events dead-lettered");
        self.metrics.events_dead_lettered.get_or_create(&Reason { reason }).inc_by(moved);
        self.metrics.dequeued(moved);
        Ok(())
    }

    /// A 5xx, timeout or connection error: the workspace backs off, alone,
    /// and not before `earliest`.
    fn failure(&self, lease: &WorkspaceLease, status: Option<u16>, message: String, earliest: Millis) -> RoundEnd {
        let failures = lease.consecutive_failures.saturating_add(1);
        let wait = backoff(failures, self.settings.backoff_base(), self.settings.backoff_max());
        tracing::warn!(workspace = %lease.workspace_id, status, failures, wait_ms = millis(wait), %message, "delivery failed; retrying later");
        let now = now_millis();
        RoundEnd::Failed {
            error: LastError { at: now, status, message },
            next_attempt_at: (now + millis(wait)).max(earliest),
            counts_as_failure: true,
        }
    }

    /// A 429 (or 503 with `Retry-After`): wait as asked, without counting a failure.
    fn rate_limited(&self, status: u16, retry_after: Duration, earliest: Millis) -> RoundEnd {
        let now = now_millis();
        RoundEnd::Failed {
            error: LastError {
                at: now,
                status: Some(status),
                message: format!("rate limited; retrying after {} ms", retry_after.as_millis()),
            },
            next_attempt_at: (now + millis(retry_after)).max(earliest),
            counts_as_failure: false,
        }
    }
}

/// A failure while the workspace's Segment region is down: the workspace
/// waits for the region without a failure of its own, and is due as soon as
/// the region is back (leases skip regions that are down).
fn waiting_for_region(status: Option<u16>, message: String) -> RoundEnd {
    let now = now_millis();
    RoundEnd::Failed { error: LastError { at: now, status, message }, next_attempt_at: now, counts_as_failure: false }
}
