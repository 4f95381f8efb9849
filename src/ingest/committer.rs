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

/// A commit of fewer events than this waits up to `GATHER_FOR` for more.
const SMALL_COMMIT: usize = 16;
const GATHER_FOR: Duration = Duration::from_millis(1);

struct Job {
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
}

impl Committer {
    /// Starts the commit task. At most `max_pending_events` events wait at once
    /// (the memory bound); beyond that, requests are refused with `queue_full`.
    /// One task commits at a time: measured, it beats several in parallel on
    /// both backends, since batches grow with the load and each commit's
    /// fixed cost is paid once per batch.
    pub fn spawn(queue: Queue, settings: &IngestSettings) -> (Committer, JoinHandle<()>) {
        let (jobs, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(rx, queue, settings.commit_max_rows, settings.commit_timeout()));
        let pending = Arc::new(Semaphore::new(settings.max_pending_events.min(Semaphore::MAX_PERMITS)));
        (Committer { jobs, pending }, task)
    }

    /// Commits the events and identity links; returns once they are durable.
    pub async fn commit(&self, events: Vec<NewEvent>, identities: Vec<IdentityLink>) -> Result<(), ApiError> {
        let weight = u32::try_from(events.len().max(identities.len()).max(1)).unwrap_or(u32::MAX);
        let permit = self.pending.clone().try_acquire_many_owned(weight).map_err(|_| ApiError::QueueFull)?;
        let (done, answer) = oneshot::channel();
        let job = Job { events, identities, done, _permit: permit };
        self.jobs.send(job).map_err(|_| ApiError::QueueFull)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::StoreUnavailable(e)),
            Err(_) => Err(ApiError::QueueFull),
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Job>, queue: Queue, max_rows: usize, bound: Duration) {
    let mut failing_since: Option<Instant> = None;
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        gather(&mut rx, &mut jobs, max_rows).await;
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

/// Adds the jobs waiting to `jobs`, up to `max_rows` events. While they are
/// fewer than `SMALL_COMMIT` events, waits up to `GATHER_FOR` for more: each
/// commit costs its page writes, flush and hand-overs whatever its size, so
/// under a light load a commit of a handful of events costs several times per
/// event what a fuller one does. Under a heavy load commits are full at once
/// and nothing waits.
async fn gather(rx: &mut mpsc::UnboundedReceiver<Job>, jobs: &mut Vec<Job>, max_rows: usize) {
    let mut rows: usize = jobs.iter().map(|job| job.events.len()).sum();
    let deadline = tokio::time::Instant::now() + GATHER_FOR;
    while rows < max_rows {
        let job = match rx.try_recv() {
            Ok(job) => job,
            Err(_) if rows >= SMALL_COMMIT => break,
            Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) | Err(_) => break,
            },
        };
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
