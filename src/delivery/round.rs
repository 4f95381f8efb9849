//! One delivery round for one leased workspace: read its oldest events, pack,
//! send, and settle each one as delivered or dead-lettered; what is not
//! settled stays queued for the workspace's next round.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::Delivery;
use super::pacing::{Pace, backoff};
use super::regions::ProbeClaim;
use crate::activity::{self, Activity, DeliveryEntry, EventEntry, Outcome as ActivityOutcome};
use crate::config::DeliverySettings;
use crate::delivery::segment::{self, Batch, Outcome};
use crate::domain::DeadLetterReason;
use crate::domain::time::{iso8601, millis, millis_to_iso8601, now_millis};
use crate::metrics::{Status, StoreOperation};
use crate::secrets::WriteKey;
use crate::store::{LastError, Millis, QueuedEvent, Rejection, RoundEnd, StoreError, WorkspaceLease};

/// How often a lease is offered back to a store that failed.
const GIVE_BACK_RETRY: Duration = Duration::from_secs(1);

/// Time a lease must have left, beyond one request's timeout, for a round
/// to send on without extending it.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// Acks and dead letters of at most this many events are small enough not
/// to wait for a turn at the store.
const SMALL_OPERATION: usize = 100;

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
                return Ok(failure(lease, &self.settings, None, e.to_string(), now_millis(), now_millis()));
            }
        };
        let version = self.backlog.version();
        self.backlog.taken(&lease.workspace_id);
        let held_until = Instant::now() + self.settings.lease();
        let Read { batches, count, last_id, events } = self.read(lease).await?;
        let mut pace = Pace::new(self.settings.workspace_request_interval());
        let sending = Sending { write_key: &write_key, probe, held_until, events: &events };
        match self.send(lease, sending, batches, &mut pace).await? {
            Sent::Stopped(end) => {
                self.cursors.reset(&lease.workspace_id);
                Ok(end)
            }
            sent => Ok(self.settle(lease, (count, last_id), sent == Sent::Delivered, version, pace.next_allowed())),
        }
    }

    /// The workspace's oldest events after its cursor, packed into batches;
    /// those over Segment's per-message limit dead-lettered at once.
    async fn read(&self, lease: &WorkspaceLease) -> Result<Read, StoreError> {
        let after = self.cursors.start(&lease.workspace_id);
        let events = {
            // A caught-up workspace's read is small: it need not wait behind a drain's.
            let _turn = self.store_turn(!self.backlog.is_caught_up(&lease.workspace_id)).await;
            let reading = Instant::now();
            let events = self.store.queued_events(lease, after, self.limits.max_messages).await?;
            self.metrics.store_op(StoreOperation::Read, reading.elapsed());
            events
        };
        let count = events.len();
        let last_id = events.last().map(|e| e.id);
        let mut sent = HashMap::with_capacity(count);
        let mut messages = Vec::with_capacity(count);
        for QueuedEvent { id, message_id, user_id, anonymous_id, payload, received_at } in events {
            let event = segment::queued_event_name(&payload).map(Into::into);
            messages.push((id, segment::with_user_id(payload, user_id.as_deref())));
            sent.insert(id, SentEvent { received_at, event, message_id, user_id, anonymous_id });
        }
        let packed = segment::pack(messages, self.limits);
        if !packed.oversized.is_empty() {
            let detail = format!("the message is over Segment's limit of {} bytes", segment::MAX_MESSAGE_BYTES);
            let why = (DeadLetterReason::MessageTooLarge, None);
            self.dead_letter(lease, &packed.oversized, why, &detail, &sent).await?;
        }
        Ok(Read { batches: packed.batches, count, last_id, events: sent })
    }

    /// Sends the batches in turn, paced, while the lease holds, and acts on
    /// each answer as [`next_step`] says.
    async fn send(
        &self,
        lease: &WorkspaceLease,
        mut sending: Sending<'_>,
        batches: Vec<Batch>,
        pace: &mut Pace,
    ) -> Result<Sent, StoreError> {
        let mut pending: VecDeque<Batch> = batches.into();
        let mut sent = Sent::Nothing;
        while let Some(batch) = pending.pop_front() {
            pace.wait().await;
            if !self.hold_lease(lease, &mut sending.held_until).await? {
                tracing::warn!(workspace = %lease.workspace_id, "the workspace lease passed to another worker during delivery");
                let delivered_at = (sent == Sent::Delivered).then(now_millis);
                return Ok(Sent::Stopped(RoundEnd::Delivered { delivered_at, next_attempt_at: now_millis() }));
            }
            self.metrics.batch_size.observe(batch.len() as f64);
            let body = batch.body(&iso8601(Utc::now()));
            let mut attempt = Attempt::start(&self.activity, &batch, body.len());
            let outcome = self.client.send(lease.region, sending.write_key, body).await;
            attempt.answered(&outcome);
            self.metrics.segment_responses.get_or_create(&Status { status: outcome.status() }).inc();
            if !outcome.is_region_wide_failure() {
                // Segment answered: whatever it said of this batch, the region is up.
                self.regions.succeeded(lease.region).await?;
            }
            match next_step(outcome, batch) {
                Step::Acknowledge(batch) => {
                    self.record_attempt(lease, &attempt, "acknowledged", None);
                    self.ack(lease, &batch, &attempt, sending.events).await?;
                    sent = Sent::Delivered;
                }
                Step::Split(first, second) => {
                    self.record_attempt(lease, &attempt, "split", None);
                    pending.push_front(second);
                    pending.push_front(first);
                }
                Step::DeadLetter { batch, status, body } => {
                    self.record_attempt(lease, &attempt, "dead_lettered", None);
                    let why = (DeadLetterReason::Rejected, Some(status));
                    self.dead_letter(lease, batch.event_ids(), why, &body, sending.events).await?;
                }
                // What was not delivered stays queued for the workspace's next round.
                Step::Stop { batch, why } => {
                    self.count_retried(std::iter::once(&batch).chain(&pending));
                    let decision = if matches!(why, Stop::RateLimited { .. }) { "rate_limited" } else { "retry" };
                    let end = self.stopped(lease, why, sending.probe, pace.next_allowed()).await?;
                    let retry_at = match &end {
                        RoundEnd::Failed { next_attempt_at, .. } | RoundEnd::Delivered { next_attempt_at, .. } => {
                            *next_attempt_at
                        }
                    };
                    self.record_attempt(lease, &attempt, decision, Some(retry_at));
                    return Ok(Sent::Stopped(end));
                }
            }
        }
        Ok(sent)
    }

    /// How a round that Segment stopped ends: rate limited, the region down
    /// (the workspace waits for it), or the workspace's own failure.
    async fn stopped(
        &self,
        lease: &WorkspaceLease,
        why: Stop,
        probe: bool,
        earliest: Millis,
    ) -> Result<RoundEnd, StoreError> {
        let now = now_millis();
        Ok(match why {
            Stop::RateLimited { status, retry_after } => rate_limited(status, retry_after, now, earliest),
            Stop::Failed { status, message, region_wide } => {
                if region_wide && self.regions.failed(lease.region, probe).await? {
                    self.backlog.all_behind();
                    waiting_for_region(status, message, now)
                } else {
                    failure(lease, &self.settings, status, message, now, earliest)
                }
            }
        })
    }

    /// After a round that sent everything it read: the cursor moves on, and a
    /// partial read means the workspace is caught up: it leaves the backlog
    /// until new events come (which then gather for the linger).
    fn settle(
        &self,
        lease: &WorkspaceLease,
        (count, last_id): (usize, Option<i64>),
        delivered: bool,
        version: u64,
        earliest: Millis,
    ) -> RoundEnd {
        if let Some(last) = last_id {
            self.cursors.advance(&lease.workspace_id, last);
        }
        if count < self.limits.max_messages {
            self.backlog.settle(&lease.workspace_id, version);
        } else {
            self.backlog.behind(&lease.workspace_id);
        }
        RoundEnd::Delivered { delivered_at: delivered.then(now_millis), next_attempt_at: earliest }
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
        attempt: &Attempt,
        events: &HashMap<i64, SentEvent>,
    ) -> Result<(), StoreError> {
        let acked = {
            let _turn = self.store_turn(batch.len() > SMALL_OPERATION).await;
            self.queue.ack(lease, batch.event_ids()).await?
        };
        if acked < batch.len() as u64 {
            // The lease ran out and another worker took the workspace; it sends these
            // again with the same messageIds, which Segment de-duplicates.
            tracing::warn!(workspace = %lease.workspace_id, unacked = batch.len() as u64 - acked, "the workspace lease passed to another worker during delivery");
        }
        let now = now_millis();
        for event in batch.event_ids().iter().filter_map(|id| events.get(id)) {
            self.metrics.delivery_latency.observe((now - event.received_at).max(0) as f64 / 1000.0);
        }
        let delivered =
            ActivityOutcome::Delivered { attempt: attempt.number, status: attempt.status.unwrap_or_default() };
        self.record_events(lease, batch.event_ids(), events, &delivered, now);
        Ok(())
    }

    fn count_retried<'b>(&self, batches: impl Iterator<Item = &'b Batch>) {
        self.metrics.events_retried.inc_by(batches.map(|b| b.len() as u64).sum());
    }

    async fn dead_letter(
        &self,
        lease: &WorkspaceLease,
        ids: &[i64],
        (reason, status): (DeadLetterReason, Option<u16>),
        detail: &str,
        events: &HashMap<i64, SentEvent>,
    ) -> Result<(), StoreError> {
        let why = Rejection { reason, status, detail: detail.to_owned() };
        let moved = {
            let _turn = self.store_turn(ids.len() > SMALL_OPERATION).await;
            self.queue.dead_letter(lease, ids, &why, now_millis()).await?
        };
        tracing::warn!(workspace = %lease.workspace_id, reason = reason.as_str(), status, detail, moved, "events dead-lettered");
        let outcome = ActivityOutcome::DeadLettered { reason: reason.as_str(), status };
        self.record_events(lease, ids, events, &outcome, now_millis());
        Ok(())
    }

    /// Tells the debugger what became of these events.
    fn record_events(
        &self,
        lease: &WorkspaceLease,
        ids: &[i64],
        events: &HashMap<i64, SentEvent>,
        outcome: &ActivityOutcome,
        at: Millis,
    ) {
        let entries = ids.iter().filter_map(|id| events.get(id)).map(|event| EventEntry {
            at,
            event: event.event.clone(),
            message_id: Some(event.message_id.as_str().into()),
            user_id: event.user_id.as_deref().map(Into::into),
            anonymous_id: event.anonymous_id.as_deref().map(Into::into),
            outcome: outcome.clone(),
        });
        self.activity.record(&lease.workspace_id, entries);
    }

    fn record_attempt(
        &self,
        lease: &WorkspaceLease,
        attempt: &Attempt,
        decision: &'static str,
        retry_at: Option<Millis>,
    ) {
        self.activity.record_delivery(&lease.workspace_id, attempt.entry(decision, retry_at));
    }
}

/// What a round read: its batches, how many events, the last id, and when
/// each event was received (for the delivery latency).
struct Read {
    batches: Vec<Batch>,
    count: usize,
    last_id: Option<i64>,
    events: HashMap<i64, SentEvent>,
}

/// What a round keeps of each event it sends: for the delivery latency and
/// for the debugger.
struct SentEvent {
    received_at: Millis,
    event: Option<Box<str>>,
    message_id: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
}

/// One request to Segment as the debugger shows it.
struct Attempt {
    number: u64,
    at: Millis,
    started: Instant,
    events: usize,
    bytes: usize,
    latency: Duration,
    status: Option<u16>,
    error: Option<Box<str>>,
}

impl Attempt {
    fn start(activity: &Activity, batch: &Batch, bytes: usize) -> Attempt {
        Attempt {
            number: activity.next_attempt(),
            at: now_millis(),
            started: Instant::now(),
            events: batch.len(),
            bytes,
            latency: Duration::ZERO,
            status: None,
            error: None,
        }
    }

    fn answered(&mut self, outcome: &Outcome) {
        self.latency = self.started.elapsed();
        self.status = Some(outcome.status()).filter(|&status| status != 0);
        self.error = match outcome {
            Outcome::Rejected { body: message, .. } | Outcome::Failed { message, .. } => {
                Some(activity::bounded(message))
            }
            Outcome::Delivered { .. } | Outcome::RateLimited { .. } => None,
        };
    }

    fn entry(&self, decision: &'static str, retry_at: Option<Millis>) -> DeliveryEntry {
        DeliveryEntry {
            attempt: self.number,
            at: self.at,
            events: self.events,
            bytes: self.bytes,
            status: self.status,
            latency_ms: self.latency.as_millis() as u64,
            decision,
            retry_at: retry_at.map(millis_to_iso8601),
            error: self.error.clone(),
        }
    }
}

/// What sending a round's batches needs besides them.
struct Sending<'a> {
    write_key: &'a WriteKey,
    /// The one request trying a Segment region that is down.
    probe: bool,
    /// Until when the lease is known to hold.
    held_until: Instant,
    events: &'a HashMap<i64, SentEvent>,
}

/// How sending went: nothing delivered (all refused, or nothing read),
/// something delivered, or stopped before the end, and how the round ends.
#[derive(Debug, PartialEq)]
enum Sent {
    Nothing,
    Delivered,
    Stopped(RoundEnd),
}

/// What one Segment answer to a batch makes the round do next.
#[derive(Debug)]
enum Step {
    /// Segment has them: acknowledge them in the store.
    Acknowledge(Batch),
    /// A message of the batch was refused: send the halves, until the refused
    /// one is alone and the rest goes through.
    Split(Batch, Batch),
    /// The refused message, alone: a dead letter.
    DeadLetter { batch: Batch, status: u16, body: String },
    /// Stop the round; this batch and those after it stay queued.
    Stop { batch: Batch, why: Stop },
}

#[derive(Debug)]
enum Stop {
    RateLimited {
        status: u16,
        retry_after: Duration,
    },
    /// A 5xx, timeout or connection error; `region_wide` when it speaks for
    /// the whole Segment region rather than this workspace.
    Failed {
        status: Option<u16>,
        message: String,
        region_wide: bool,
    },
}

fn next_step(outcome: Outcome, batch: Batch) -> Step {
    let region_wide = outcome.is_region_wide_failure();
    match outcome {
        Outcome::Delivered { .. } => Step::Acknowledge(batch),
        Outcome::Rejected { status, body } => match batch.split() {
            Ok((first, second)) => Step::Split(first, second),
            Err(single) => Step::DeadLetter { batch: single, status, body },
        },
        Outcome::RateLimited { status, retry_after } => {
            Step::Stop { batch, why: Stop::RateLimited { status, retry_after } }
        }
        Outcome::Failed { status, message } => Step::Stop { batch, why: Stop::Failed { status, message, region_wide } },
    }
}

/// A 5xx, timeout or connection error: the workspace backs off, alone,
/// and not before `earliest`.
fn failure(
    lease: &WorkspaceLease,
    settings: &DeliverySettings,
    status: Option<u16>,
    message: String,
    now: Millis,
    earliest: Millis,
) -> RoundEnd {
    let failures = lease.consecutive_failures.saturating_add(1);
    let wait = backoff(failures, settings.backoff_base(), settings.backoff_max());
    tracing::warn!(workspace = %lease.workspace_id, status, failures, wait_ms = millis(wait), %message, "delivery failed; retrying later");
    RoundEnd::Failed {
        error: LastError { at: now, status, message },
        next_attempt_at: (now + millis(wait)).max(earliest),
        counts_as_failure: true,
    }
}

/// A 429 (or 503 with `Retry-After`): wait as asked, without counting a failure.
fn rate_limited(status: u16, retry_after: Duration, now: Millis, earliest: Millis) -> RoundEnd {
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

/// A failure while the workspace's Segment region is down: the workspace
/// waits for the region without a failure of its own, and is due as soon as
/// the region is back (leases skip regions that are down).
fn waiting_for_region(status: Option<u16>, message: String, now: Millis) -> RoundEnd {
    RoundEnd::Failed { error: LastError { at: now, status, message }, next_attempt_at: now, counts_as_failure: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::segment::BatchLimits;
    use crate::domain::{Region, WorkspaceId};

    const NOW: Millis = 1_800_000_000_000;

    fn batch(ids: &[i64]) -> Batch {
        let messages = ids.iter().map(|&id| (id, format!("{{\"messageId\":\"m{id}\"}}")));
        segment::pack(messages, BatchLimits { max_messages: 100, max_bytes: 100_000 }).batches.remove(0)
    }

    fn lease(consecutive_failures: u32) -> WorkspaceLease {
        WorkspaceLease {
            workspace_id: WorkspaceId::stored("w".into()),
            lease_id: "l".into(),
            sealed_write_key: "sealed".into(),
            region: Region::Us,
            consecutive_failures,
        }
    }

    fn settings() -> DeliverySettings {
        crate::Settings::extract(crate::Settings::defaults()).unwrap().delivery
    }

    fn failed(status: Option<u16>) -> Outcome {
        Outcome::Failed { status, message: "no".into() }
    }

    #[test]
    fn a_delivered_batch_is_acknowledged_and_a_refused_one_halved_down_to_the_refused_message() {
        assert!(
            matches!(next_step(Outcome::Delivered { status: 200 }, batch(&[1, 2])), Step::Acknowledge(b) if b.event_ids() == [1, 2])
        );
        let refused = || Outcome::Rejected { status: 400, body: "bad".into() };
        let Step::Split(first, second) = next_step(refused(), batch(&[1, 2, 3])) else { panic!("halved") };
        assert_eq!([first.event_ids(), second.event_ids()].concat(), [1, 2, 3]);
        assert!(
            matches!(next_step(refused(), batch(&[7])), Step::DeadLetter { batch, status: 400, .. } if batch.event_ids() == [7])
        );
    }

    #[test]
    fn rate_limits_and_failures_stop_the_round_and_only_5xx_or_no_answer_speak_of_the_region() {
        let limited = Outcome::RateLimited { status: 429, retry_after: Duration::from_secs(3) };
        assert!(matches!(
            next_step(limited, batch(&[1])),
            Step::Stop { why: Stop::RateLimited { status: 429, .. }, .. }
        ));
        for (status, region_wide) in
            [(None, true), (Some(500), true), (Some(503), true), (Some(401), false), (Some(404), false)]
        {
            let Step::Stop { why: Stop::Failed { region_wide: found, .. }, .. } =
                next_step(failed(status), batch(&[1]))
            else {
                panic!("{status:?} stops the round")
            };
            assert_eq!(found, region_wide, "{status:?}");
        }
        assert!(!Outcome::Rejected { status: 400, body: String::new() }.is_region_wide_failure());
        assert_eq!(failed(None).status(), 0);
    }

    #[test]
    fn a_failure_backs_off_within_the_doubled_base_and_counts_while_a_rate_limit_waits_as_asked_and_does_not() {
        let settings = settings();
        for failures in 0..6 {
            let RoundEnd::Failed { next_attempt_at, counts_as_failure, error } =
                failure(&lease(failures), &settings, Some(503), "down".into(), NOW, NOW)
            else {
                panic!("a failure")
            };
            let ceiling = settings.backoff_base().saturating_mul(2u32.pow(failures)).min(settings.backoff_max());
            assert!((NOW..=NOW + millis(ceiling)).contains(&next_attempt_at), "after {failures} failures");
            assert!(counts_as_failure);
            assert_eq!((error.at, error.status), (NOW, Some(503)));
        }
        let paced = failure(&lease(0), &settings, None, "timeout".into(), NOW, NOW + 60_000);
        assert!(
            matches!(paced, RoundEnd::Failed { next_attempt_at, .. } if next_attempt_at >= NOW + 60_000),
            "never before the pace allows"
        );

        let limited = rate_limited(429, Duration::from_secs(3), NOW, NOW);
        assert!(
            matches!(limited, RoundEnd::Failed { next_attempt_at, counts_as_failure: false, .. } if next_attempt_at == NOW + 3000)
        );
        let waiting = waiting_for_region(None, "timeout".into(), NOW);
        assert!(
            matches!(waiting, RoundEnd::Failed { next_attempt_at: NOW, counts_as_failure: false, .. }),
            "due when the region is back"
        );
    }
}
