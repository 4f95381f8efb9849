//! Group commit: requests hand their validated events to one task that commits
//! everything waiting as one transaction, then answers every request in it.
//! While one commit runs, the next batch gathers, so the database sees few,
//! large transactions instead of one per request.
//!
//! A commit has a bound (`ingest.commit_timeout_ms`): past it, its requests
//! are answered `503` while the commit goes on by itself, never cancelled.
//! (A commit waiting for a synchronous standby that is gone would otherwise
//! hold every request; and PostgreSQL reports a commit cancelled during that
//! wait as committed, on one disk only.) If it lands later, the clients'
//! retries carry the same messageIds and are not stored again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::IngestSettings;
use crate::http::error::ApiError;
use crate::queue::Queue;
use crate::store::{IdentityLink, NewEvent, StoreError};

type CommitResult = Result<(), Arc<StoreError>>;

/// After a failed commit, commits fail at once for this long before the next
/// one is tried: with the database down, requests get their 503 at once
/// instead of each waiting out a connection timeout.
const FAIL_FAST_FOR: Duration = Duration::from_secs(1);

/// A commit of fewer events than this waits up to `GATHER_FOR` for more, when more are coming.
const SMALL_COMMIT: usize = 16;
const GATHER_FOR: Duration = Duration::from_millis(1);

struct Job {
    /// When the request handed it over.
    at: Instant,
    events: Vec<NewEvent>,
    identities: Vec<IdentityLink>,
    done: oneshot::Sender<CommitResult>,
    /// Holds the job's share of the pending-events budget until it is answered.
    _permit: OwnedSemaphorePermit,
}

/// The handle requests commit through. Dropping every handle stops the task
/// once what was handed over is committed.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
    pending: Arc<Semaphore>,
    /// Ingest requests under way (see [`Committer::arrival`]).
    under_way: Arc<AtomicUsize>,
}

/// An ingest request under way, counted until it is dropped.
pub struct Arrival(Arc<AtomicUsize>);

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Committer {
    /// Starts the commit task. At most `max_pending_events` events wait at once
    /// (the memory bound); beyond that, requests are refused with `queue_full`.
    /// One task commits at a time: measured, it beats several in parallel on
    /// both backends, since batches grow with the load and each commit's
    /// fixed cost is paid once per batch.
    pub fn spawn(queue: Queue, settings: &IngestSettings) -> (Committer, JoinHandle<()>) {
        let (jobs, rx) = mpsc::unbounded_channel();
        let under_way = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(rx, queue, settings.commit_max_rows, settings.commit_timeout(), under_way.clone()));
        let pending = Arc::new(Semaphore::new(settings.max_pending_events.min(Semaphore::MAX_PERMITS)));
        (Committer { jobs, pending, under_way }, task)
    }

    /// Counts an ingest request as under way while the value lives: a commit
    /// waits briefly for the jobs of requests under way.
    pub fn arrival(&self) -> Arrival {
        self.under_way.fetch_add(1, Ordering::Relaxed);
        Arrival(self.under_way.clone())
    }

    /// Commits the events and identity links; returns once they are durable.
    pub async fn commit(&self, events: Vec<NewEvent>, identities: Vec<IdentityLink>) -> Result<(), ApiError> {
        let weight = u32::try_from(events.len().max(identities.len()).max(1)).unwrap_or(u32::MAX);
        let permit = self.pending.clone().try_acquire_many_owned(weight).map_err(|_| ApiError::QueueFull)?;
        let (done, answer) = oneshot::channel();
        let job = Job { at: Instant::now(), events, identities, done, _permit: permit };
        self.jobs.send(job).map_err(|_| ApiError::QueueFull)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::StoreUnavailable(e)),
            Err(_) => Err(ApiError::QueueFull),
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Job>,
    queue: Queue,
    max_rows: usize,
    bound: Duration,
    under_way: Arc<AtomicUsize>,
) {
    let mut failing_since: Option<Instant> = None;
    let mut pace = Pace::default();
    while let Some(first) = rx.recv().await {
        pace.saw(&first);
        let mut jobs = vec![first];
        gather(&mut rx, &mut jobs, max_rows, &under_way, &mut pace).await;
        let result = match failing_since {
            Some(since) if since.elapsed() < FAIL_FAST_FOR => Err(Arc::new(StoreError::RecentlyFailed)),
            _ => commit_jobs(&mut jobs, &queue, bound).await,
        };
        match &result {
            Ok(()) => failing_since = None,
            Err(e) if !matches!(**e, StoreError::RecentlyFailed) => failing_since = Some(Instant::now()),
            Err(_) => {}
        }
        for job in jobs {
            // A request that gave up waiting has nobody to answer.
            let _ = job.done.send(result.clone());
        }
    }
}

/// The pace jobs arrive at: a moving average of the gaps between them.
#[derive(Default)]
struct Pace {
    last: Option<Instant>,
    gap: Option<Duration>,
}

impl Pace {
    fn saw(&mut self, job: &Job) {
        if let Some(last) = self.last {
            let gap = job.at.saturating_duration_since(last);
            self.gap = Some(self.gap.map_or(gap, |average| (average * 7 + gap) / 8));
        }
        self.last = Some(job.at);
    }

    /// Whether the next job is likely within `GATHER_FOR`.
    fn next_soon(&self) -> bool {
        self.gap.is_some_and(|gap| gap < GATHER_FOR)
    }
}

/// Adds the jobs waiting to `jobs`, up to `max_rows` events. While they are
/// fewer than `SMALL_COMMIT` events and more jobs are on their way (ingest requests under way beyond those gathered, as
/// PostgreSQL's `commit_siblings`), or arrive closer together than
/// `GATHER_FOR`, the commit waits up to `GATHER_FOR` for them: each commit
/// costs its page writes, flush and hand-overs whatever its size. Under a
/// heavy load commits are full at once and nothing waits. A lone
/// request, as at a customer's steady few events a second, commits at once:
/// no timer, and no wait added to its answer.
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<Job>,
    jobs: &mut Vec<Job>,
    max_rows: usize,
    under_way: &AtomicUsize,
    pace: &mut Pace,
) {
    let mut rows: usize = jobs.iter().map(|job| job.events.len()).sum();
    let deadline = tokio::time::Instant::now() + GATHER_FOR;
    while rows < max_rows {
        let job = match rx.try_recv() {
            Ok(job) => job,
            Err(_) if rows >= SMALL_COMMIT => break,
            Err(_) if under_way.load(Ordering::Relaxed) <= jobs.len() && !pace.next_soon() => break,
            Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) | Err(_) => break,
            },
        };
        pace.saw(&job);
        rows += job.events.len();
        jobs.push(job);
    }
}

/// Commits the jobs' events and identity links as one transaction, waiting
/// for it at most `bound`; a commit past its bound goes on by itself.
async fn commit_jobs(jobs: &mut [Job], queue: &Queue, bound: Duration) -> CommitResult {
    let events: Vec<NewEvent> = jobs.iter_mut().flat_map(|job| std::mem::take(&mut job.events)).collect();
    let identities: Vec<IdentityLink> = jobs.iter_mut().flat_map(|job| std::mem::take(&mut job.identities)).collect();
    let count = events.len();
    let queue = queue.clone();
    let mut commit = Box::pin(async move { queue.enqueue(events, identities).await });
    match tokio::time::timeout(bound, &mut commit).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, events = count, "group commit failed");
            Err(Arc::new(e))
        }
        Err(_) => {
            tracing::error!(events = count, bound_ms = bound.as_millis() as u64, "group commit past its bound");
            tokio::spawn(async move {
                match commit.await {
                    Ok(()) => tracing::warn!(
                        events = count,
                        "a commit answered 503 past its bound has landed; retries of its events are not stored again"
                    ),
                    Err(e) => tracing::warn!(error = %e, events = count, "a commit past its bound failed"),
                }
            });
            Err(Arc::new(StoreError::CommitTimedOut(bound)))
        }
    }
}
