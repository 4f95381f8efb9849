//! Which workspaces have events waiting, as this instance knows it, when each
//! is due for a round, and the wake-up that tells delivery so.
//!
//! Asking the database which workspaces have events means probing the queue
//! table per workspace, which gets slow under churn (deleted rows linger in
//! the index until vacuumed). So delivery keeps this set instead: commits of
//! this instance and announcements of other instances add to it, a periodic
//! poll of the database corrects it, and a round that finds its workspace
//! caught up takes the workspace out.
//!
//! New events gather: a workspace is due once its oldest event not yet taken
//! by a round has waited the linger, or at once when a batch's worth has
//! arrived. At a customer's steady few events a second, a round and a request
//! to Segment then carry many events instead of one each. Delivery is woken
//! only when that changes what is due: a workspace starts gathering, or fills.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::domain::WorkspaceId;

/// How new events gather before their round.
#[derive(Clone, Copy, Debug)]
pub struct Gathering {
    /// The longest the oldest new event waits for others.
    pub linger: Duration,
    /// A batch's worth of events: the round goes at once.
    pub fill: usize,
}

pub struct Backlog {
    gathering: Gathering,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Bumped at every mark; a workspace's entry holds the value of its last mark.
    clock: u64,
    workspaces: HashMap<WorkspaceId, Entry>,
    /// Workspaces whose last round found them caught up: their next read is small.
    caught_up: HashSet<WorkspaceId>,
}

#[derive(Debug)]
struct Entry {
    version: u64,
    /// Due whatever has gathered: more is waiting than one round took, or
    /// what waits was learnt from elsewhere (a poll, a replay).
    now: bool,
    /// When the oldest event not yet taken by a round arrived, and how many have.
    since: Option<Instant>,
    arrived: usize,
}

impl Entry {
    /// When a round is due (`now` if it is), if one is.
    fn due_at(&self, gathering: Gathering, now: Instant) -> Option<Instant> {
        if self.now || self.arrived >= gathering.fill {
            return Some(now);
        }
        self.since.map(|since| since + gathering.linger)
    }
}

impl Backlog {
    pub fn new(gathering: Gathering) -> Backlog {
        Backlog { gathering, state: Mutex::default(), wake: Notify::new() }
    }

    /// New events: `(workspace, how many)`. They gather; delivery is woken
    /// when a workspace starts gathering or fills.
    pub fn arrived<'a>(&self, arrivals: impl IntoIterator<Item = (&'a WorkspaceId, usize)>) {
        let fill = self.gathering.fill;
        let mut wake = false;
        {
            let mut state = self.lock();
            let version = state.tick();
            for (id, count) in arrivals {
                let entry = state.entry(id, version);
                let before = entry.arrived;
                if entry.since.is_none() {
                    entry.since = Some(Instant::now());
                    wake = true;
                }
                entry.arrived += count;
                wake |= before < fill && entry.arrived >= fill;
            }
        }
        if wake {
            self.wake.notify_one();
        }
    }

    /// Events of these workspaces are due now (a replay, a changed integration).
    pub fn mark<'a>(&self, workspace_ids: impl IntoIterator<Item = &'a WorkspaceId>) {
        {
            let mut state = self.lock();
            let version = state.tick();
            for id in workspace_ids {
                state.entry(id, version).now = true;
            }
        }
        self.wake.notify_one();
    }

    /// The workspaces due for a round now, and when the next of the others is.
    pub fn due(&self) -> (Vec<WorkspaceId>, Option<Instant>) {
        let now = Instant::now();
        let state = self.lock();
        let mut due = Vec::new();
        let mut next = None::<Instant>;
        for (id, entry) in &state.workspaces {
            match entry.due_at(self.gathering, now) {
                Some(at) if at <= now => due.push(id.clone()),
                Some(at) => next = Some(next.map_or(at, |next| next.min(at))),
                None => {}
            }
        }
        (due, next)
    }

    /// A round takes the workspace's events: what arrives from now on gathers
    /// anew. Until the round settles, the workspace stays due: a round that
    /// ends short of settling (a failure, a rate limit) is tried again when
    /// the store says.
    pub fn taken(&self, workspace_id: &str) {
        if let Some(entry) = self.lock().workspaces.get_mut(workspace_id) {
            entry.now = true;
            entry.since = None;
            entry.arrived = 0;
        }
    }

    /// A version to hand back to [`Backlog::settle`]: marks after it count.
    pub fn version(&self) -> u64 {
        self.lock().clock
    }

    /// The workspace was found caught up: forget it, unless new events were
    /// marked for it since `version` (those gather).
    pub fn settle(&self, workspace_id: &WorkspaceId, version: u64) {
        let mut state = self.lock();
        match state.workspaces.get_mut(workspace_id) {
            Some(entry) if entry.version <= version => {
                state.workspaces.remove(workspace_id);
            }
            // What arrived during the round gathers from its arrival.
            Some(entry) => entry.now = false,
            None => {}
        }
        if !state.caught_up.contains(workspace_id) {
            state.caught_up.insert(workspace_id.clone());
        }
    }

    /// A round found more waiting than one read takes: the workspace is
    /// behind, and due again at once.
    pub fn behind(&self, workspace_id: &WorkspaceId) {
        let mut state = self.lock();
        state.caught_up.remove(workspace_id);
        let version = state.clock;
        state.entry(workspace_id, version).now = true;
    }

    /// Events pile up without rounds (a Segment region is down): no workspace
    /// counts as caught up until a round finds it so again.
    pub fn all_behind(&self) {
        self.lock().caught_up.clear();
    }

    /// Orders `ids` with the caught-up workspaces first (one look under the
    /// lock); returns how many they are.
    pub fn caught_up_first(&self, ids: &mut [WorkspaceId]) -> usize {
        let state = self.lock();
        ids.sort_unstable_by_key(|id| !state.caught_up.contains(id));
        ids.iter().take_while(|id| state.caught_up.contains(*id)).count()
    }

    /// Whether the workspace's last round found it caught up.
    pub fn is_caught_up(&self, workspace_id: &str) -> bool {
        self.lock().caught_up.contains(workspace_id)
    }

    /// What a poll of the database found (it started at `version`) replaces
    /// what is known, except for workspaces marked since; those it finds
    /// anew (events of other instances this one missed) are due at once.
    pub fn refresh(&self, found: Vec<WorkspaceId>, version: u64) {
        let found: HashSet<WorkspaceId> = found.into_iter().collect();
        let mut state = self.lock();
        state.workspaces.retain(|id, entry| entry.version > version || found.contains(id));
        for id in found {
            if !state.workspaces.contains_key(&id) {
                state.entry(&id, version).now = true;
            }
        }
    }

    /// Completes at the next wake-up (or at once if one came since the last wait).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The workspace's entry, created if new, marked at `version`.
    fn entry(&mut self, id: &WorkspaceId, version: u64) -> &mut Entry {
        if !self.workspaces.contains_key(id) {
            self.workspaces.insert(id.clone(), Entry { version, now: false, since: None, arrived: 0 });
        }
        let entry = self.workspaces.get_mut(id).expect("just inserted");
        entry.version = entry.version.max(version);
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(50);

    fn backlog() -> Backlog {
        Backlog::new(Gathering { linger: LINGER, fill: 10 })
    }

    fn id(name: &str) -> WorkspaceId {
        WorkspaceId::stored(name.to_owned())
    }

    fn ids<const N: usize>(names: [&str; N]) -> Vec<WorkspaceId> {
        names.map(id).to_vec()
    }

    fn due(backlog: &Backlog) -> Vec<String> {
        let mut ids: Vec<String> = backlog.due().0.into_iter().map(WorkspaceId::into_string).collect();
        ids.sort();
        ids
    }

    #[test]
    fn new_events_gather_for_the_linger_or_until_a_batch_fills() {
        let backlog = backlog();
        backlog.arrived([(&id("slow"), 1), (&id("busy"), 9)]);
        let (now, next) = backlog.due();
        assert!(now.is_empty(), "both gather");
        assert!(next.is_some_and(|at| at > Instant::now() && at <= Instant::now() + LINGER));
        backlog.arrived([(&id("busy"), 1)]);
        assert_eq!(due(&backlog), ["busy"], "a batch's worth goes at once");
        std::thread::sleep(LINGER);
        assert_eq!(due(&backlog), ["busy", "slow"], "the linger is over");
    }

    #[test]
    fn what_arrives_during_a_round_gathers_anew_and_is_kept_at_settle() {
        let backlog = backlog();
        backlog.arrived([(&id("a"), 1)]);
        std::thread::sleep(LINGER);
        let version = backlog.version();
        backlog.taken("a");
        assert_eq!(due(&backlog), ["a"], "due until the round settles");
        backlog.arrived([(&id("a"), 1)]);
        backlog.settle(&id("a"), version);
        assert!(due(&backlog).is_empty(), "kept, gathering from its own arrival");
        assert!(backlog.due().1.is_some());
        let caught_up = backlog.version();
        backlog.taken("a");
        backlog.settle(&id("a"), caught_up);
        assert_eq!(backlog.due(), (vec![], None), "forgotten once caught up");
    }

    #[test]
    fn a_workspace_is_caught_up_from_a_settled_round_until_one_finds_it_behind() {
        let backlog = backlog();
        backlog.mark(&ids(["a"]));
        assert!(!backlog.is_caught_up("a"), "not known yet");
        backlog.settle(&id("a"), backlog.version());
        assert!(backlog.is_caught_up("a"));
        backlog.arrived([(&id("a"), 1)]);
        assert!(backlog.is_caught_up("a"), "new events alone do not put it behind");
        let mut both = ids(["b", "a"]);
        assert_eq!(backlog.caught_up_first(&mut both), 1);
        assert_eq!(both, ids(["a", "b"]));
        backlog.behind(&id("a"));
        assert!(!backlog.is_caught_up("a"));
        assert_eq!(due(&backlog), ["a"], "behind: due again at once");
    }

    #[test]
    fn a_poll_keeps_what_gathers_drops_what_is_gone_and_adds_what_it_found_as_due() {
        let backlog = backlog();
        backlog.mark(&ids(["stale"]));
        backlog.arrived([(&id("gathering"), 1)]);
        let version = backlog.version();
        backlog.arrived([(&id("fresh"), 1)]);
        backlog.refresh(ids(["found", "gathering"]), version);
        assert_eq!(due(&backlog), ["found"], "stale is gone; gathering and fresh still gather");
        std::thread::sleep(LINGER);
        assert_eq!(due(&backlog), ["found", "fresh", "gathering"]);
    }

    #[tokio::test]
    async fn a_workspace_starting_to_gather_wakes_delivery_and_more_events_do_not() {
        let backlog = backlog();
        backlog.arrived([(&id("a"), 1)]);
        tokio::time::timeout(Duration::from_secs(1), backlog.woken()).await.unwrap();
        backlog.arrived([(&id("a"), 1)]);
        let woken = tokio::time::timeout(Duration::from_millis(20), backlog.woken()).await;
        assert!(woken.is_err(), "one wake-up per gathering, not per event");
        backlog.arrived([(&id("a"), 8)]);
        tokio::time::timeout(Duration::from_secs(1), backlog.woken()).await.expect("a full batch wakes");
    }
}
