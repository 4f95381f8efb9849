//! Recent activity per workspace, for the delivery debugger: what this
//! instance saw become of each event (queued, delivered, refused, …) and each
//! request to Segment. Kept in memory and bounded: a ring of events and one of
//! delivery attempts per workspace, for at most `activity.max_workspaces`
//! workspaces (the least recently active forgotten first). Entries hold ids
//! and codes, never a write key or a token. Each instance answers for what it
//! saw; a live tail gets what is recorded from then on, and is dropped when it
//! falls behind rather than slowing the recorder.

mod entry;

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use entry::{DeliveryEntry, DeliveryView, EventEntry, EventView, Outcome, bounded};

use crate::config::{ActivitySettings, IdDisplay};
use crate::domain::WorkspaceId;
use crate::store::Millis;

/// What a live tail receives.
#[derive(Clone, Debug)]
pub enum Live {
    Event(Arc<EventEntry>),
    Delivery(Arc<DeliveryEntry>),
}

pub struct Activity {
    instance: String,
    settings: ActivitySettings,
    workspaces: Mutex<LruCache<WorkspaceId, Rings>>,
    attempts: AtomicU64,
    /// Cancelled when the service stops: live tails end.
    closing: CancellationToken,
}

#[derive(Default)]
struct Rings {
    events: VecDeque<Arc<EventEntry>>,
    deliveries: VecDeque<Arc<DeliveryEntry>>,
    /// Present while someone tails the workspace.
    live: Option<broadcast::Sender<Live>>,
}

/// Which events a reader wants.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub outcome: Option<&'a str>,
    pub event: Option<&'a str>,
}

impl Activity {
    pub fn new(settings: ActivitySettings) -> Activity {
        let instance = match settings.instance.as_str() {
            "" => std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("instance-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])),
            name => name.to_owned(),
        };
        let capacity = NonZeroUsize::new(settings.max_workspaces).unwrap_or(NonZeroUsize::MIN);
        Activity {
            instance,
            settings,
            workspaces: Mutex::new(LruCache::new(capacity)),
            attempts: AtomicU64::new(0),
            closing: CancellationToken::new(),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn ids(&self) -> IdDisplay {
        self.settings.ids
    }

    /// Records what became of events of one workspace, in one turn of the lock.
    pub fn record(&self, workspace: &WorkspaceId, entries: impl IntoIterator<Item = EventEntry>) {
        let max = self.settings.events_per_workspace;
        self.with_rings(workspace, |rings| {
            for entry in entries {
                let entry = Arc::new(entry);
                push_bounded(&mut rings.events, entry.clone(), max);
                rings.announce(Live::Event(entry));
            }
        });
    }

    /// Records that a whole request of the workspace was refused: the error
    /// code the client got and what to tell of it.
    pub fn record_refusal(&self, workspace: &WorkspaceId, at: Millis, code: &'static str, message: &str) {
        self.record(workspace, [EventEntry::about_request(at, Outcome::refused(code, message, None))]);
    }

    /// A number for the next request to Segment.
    pub fn next_attempt(&self) -> u64 {
        self.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn record_delivery(&self, workspace: &WorkspaceId, attempt: DeliveryEntry) {
        let max = self.settings.deliveries_per_workspace;
        self.with_rings(workspace, |rings| {
            let attempt = Arc::new(attempt);
            push_bounded(&mut rings.deliveries, attempt.clone(), max);
            rings.announce(Live::Delivery(attempt));
        });
    }

    /// Forgets a deleted workspace (its live tails end).
    pub fn remove(&self, workspace: &WorkspaceId) {
        self.workspaces.lock().expect("activity lock").pop(workspace);
    }

    /// Drops the entries of a person whose data was erased.
    pub fn forget(&self, workspace: &WorkspaceId, user_id: Option<&str>, anonymous_ids: &[String]) {
        let mut workspaces = self.workspaces.lock().expect("activity lock");
        let Some(rings) = workspaces.peek_mut(workspace) else { return };
        let theirs = |e: &EventEntry| {
            (user_id.is_some() && e.user_id.as_deref() == user_id)
                || e.anonymous_id.as_deref().is_some_and(|a| anonymous_ids.iter().any(|id| id == a))
        };
        rings.events.retain(|e| !theirs(e));
    }

    /// The workspace's recent events, newest first.
    pub fn events(&self, workspace: &WorkspaceId, filter: &Filter<'_>, limit: usize) -> Vec<Arc<EventEntry>> {
        let workspaces = self.workspaces.lock().expect("activity lock");
        let Some(rings) = workspaces.peek(workspace) else { return Vec::new() };
        let wanted = |e: &&Arc<EventEntry>| {
            filter.outcome.is_none_or(|o| e.outcome.name() == o)
                && filter.event.is_none_or(|n| e.event.as_deref() == Some(n))
        };
        rings.events.iter().rev().filter(wanted).take(limit).cloned().collect()
    }

    /// The workspace's recent requests to Segment, newest first.
    pub fn deliveries(&self, workspace: &WorkspaceId, limit: usize) -> Vec<Arc<DeliveryEntry>> {
        let workspaces = self.workspaces.lock().expect("activity lock");
        let Some(rings) = workspaces.peek(workspace) else { return Vec::new() };
        rings.deliveries.iter().rev().take(limit).cloned().collect()
    }

    /// What is recorded for the workspace from now on. The receiver lags
    /// (and its tail is dropped) when it falls `activity.stream_buffer` behind.
    pub fn subscribe(&self, workspace: &WorkspaceId) -> broadcast::Receiver<Live> {
        let buffer = self.settings.stream_buffer;
        self.with_rings(workspace, |rings| match &rings.live {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(buffer);
                rings.live = Some(sender);
                receiver
            }
        })
    }

    /// Ends every live tail (the service is stopping).
    pub fn close(&self) {
        self.closing.cancel();
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    pub fn heartbeat(&self) -> std::time::Duration {
        self.settings.heartbeat()
    }

    fn with_rings<T>(&self, workspace: &WorkspaceId, f: impl FnOnce(&mut Rings) -> T) -> T {
        let mut workspaces = self.workspaces.lock().expect("activity lock");
        // Looked up first: the key is cloned only for a workspace new to the cache.
        if !workspaces.contains(workspace) {
            workspaces.put(workspace.clone(), Rings::default());
        }
        f(workspaces.get_mut(workspace).expect("just put"))
    }
}

impl Rings {
    /// Sends to the live tails, if any; the sender goes with the last of them.
    fn announce(&mut self, live: Live) {
        if let Some(sender) = &self.live
            && sender.send(live).is_err()
        {
            self.live = None;
        }
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, max: usize) {
    if max == 0 {
        return;
    }
    if ring.len() == max {
        ring.pop_front();
    }
    ring.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(events: usize, workspaces: usize) -> ActivitySettings {
        ActivitySettings {
            instance: "test".into(),
            events_per_workspace: events,
            deliveries_per_workspace: 2,
            max_workspaces: workspaces,
            ids: IdDisplay::Masked,
            stream_buffer: 4,
            heartbeat_ms: 1000,
            debugger_frame_ancestors: String::new(),
        }
    }

    fn entry(at: i64) -> EventEntry {
        EventEntry::about_request(at, Outcome::Queued)
    }

    #[test]
    fn rings_keep_the_newest_and_workspaces_the_most_recent() {
        let activity = Activity::new(settings(3, 2));
        let (a, b, c) = (WorkspaceId::generate(), WorkspaceId::generate(), WorkspaceId::generate());
        activity.record(&a, (0..5).map(entry));
        let kept: Vec<i64> = activity.events(&a, &Filter::default(), 10).iter().map(|e| e.at).collect();
        assert_eq!(kept, [4, 3, 2]);
        activity.record(&b, [entry(1)]);
        activity.record(&c, [entry(1)]);
        assert!(activity.events(&a, &Filter::default(), 10).is_empty(), "the least recent workspace is forgotten");
        assert_eq!(activity.events(&c, &Filter::default(), 10).len(), 1);
    }

    #[test]
    fn a_lagging_tail_is_told_so_and_ingest_goes_on() {
        let activity = Activity::new(settings(10, 10));
        let workspace = WorkspaceId::generate();
        let mut tail = activity.subscribe(&workspace);
        activity.record(&workspace, (0..10).map(entry));
        assert!(matches!(tail.try_recv(), Err(broadcast::error::TryRecvError::Lagged(_))));
        drop(tail);
        activity.record(&workspace, [entry(11)]);
        assert!(activity.workspaces.lock().unwrap().peek(&workspace).unwrap().live.is_none());
    }
}
