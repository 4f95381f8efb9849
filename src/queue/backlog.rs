//! Which workspaces have events waiting, as this instance knows it, and the
//! wake-up that tells delivery so.
//!
//! Asking the database which workspaces have events means probing the queue
//! table per workspace, which gets slow under churn (deleted rows linger in
//! the index until vacuumed). So delivery keeps this set instead: commits of
//! this instance and announcements of other instances add to it, a periodic
//! poll of the database corrects it, and a round that finds its workspace
//! caught up takes the workspace out.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::domain::WorkspaceId;

#[derive(Default)]
pub struct Backlog {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Bumped at every mark; a workspace's entry is the value of its last mark.
    clock: u64,
    workspaces: HashMap<WorkspaceId, u64>,
    /// Workspaces whose last round found them caught up: their next read is small.
    caught_up: HashSet<WorkspaceId>,
}

impl Backlog {
    /// New events for these workspaces: remember them and wake delivery.
    pub fn mark<'a>(&self, workspace_ids: impl IntoIterator<Item = &'a WorkspaceId>) {
        {
            let mut state = self.lock();
            state.clock += 1;
            let clock = state.clock;
            for id in workspace_ids {
                match state.workspaces.get_mut(id) {
                    Some(version) => *version = clock,
                    None => {
                        state.workspaces.insert(id.clone(), clock);
                    }
                }
            }
        }
        self.wake.notify_one();
    }

    /// The workspaces known to have events waiting.
    pub fn workspaces(&self) -> Vec<WorkspaceId> {
        self.lock().workspaces.keys().cloned().collect()
    }

    /// A version to hand back to [`Backlog::settle`]: marks after it count.
    pub fn version(&self) -> u64 {
        self.lock().clock
    }

    /// The workspace was found caught up: forget it, unless new events were
    /// marked for it since `version`.
    pub fn settle(&self, workspace_id: &WorkspaceId, version: u64) {
        let mut state = self.lock();
        if state.workspaces.get(workspace_id).is_some_and(|marked| *marked <= version) {
            state.workspaces.remove(workspace_id);
        }
        if !state.caught_up.contains(workspace_id) {
            state.caught_up.insert(workspace_id.clone());
        }
    }

    /// A round found more waiting than one read takes: the workspace is behind.
    pub fn behind(&self, workspace_id: &str) {
        self.lock().caught_up.remove(workspace_id);
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
    /// what is known, except for workspaces marked since.
    pub fn refresh(&self, found: Vec<WorkspaceId>, version: u64) {
        let mut state = self.lock();
        state.workspaces.retain(|_, marked| *marked > version);
        for id in found {
            state.workspaces.entry(id).or_insert(version);
        }
    }

    /// Completes at the next mark (or at once if one came since the last wait).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> WorkspaceId {
        WorkspaceId::stored(name.to_owned())
    }

    fn ids<const N: usize>(names: [&str; N]) -> Vec<WorkspaceId> {
        names.map(id).to_vec()
    }

    fn sorted(backlog: &Backlog) -> Vec<String> {
        let mut ids: Vec<String> = backlog.workspaces().into_iter().map(WorkspaceId::into_string).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_settled_workspace_is_forgotten_unless_marked_again() {
        let backlog = Backlog::default();
        backlog.mark(&ids(["a", "b"]));
        let version = backlog.version();
        backlog.mark(&ids(["b"]));
        backlog.settle(&id("a"), version);
        backlog.settle(&id("b"), version);
        assert_eq!(sorted(&backlog), ["b"], "b got events during the round");
    }

    #[test]
    fn a_workspace_is_caught_up_from_a_settled_round_until_one_finds_it_behind() {
        let backlog = Backlog::default();
        backlog.mark(&ids(["a"]));
        assert!(!backlog.is_caught_up("a"), "not known yet");
        backlog.settle(&id("a"), backlog.version());
        assert!(backlog.is_caught_up("a"));
        backlog.mark(&ids(["a"]));
        assert!(backlog.is_caught_up("a"), "new events alone do not put it behind");
        let mut both = ids(["b", "a"]);
        assert_eq!(backlog.caught_up_first(&mut both), 1);
        assert_eq!(both, ids(["a", "b"]));
        backlog.behind("a");
        assert!(!backlog.is_caught_up("a"));
    }

    #[test]
    fn a_poll_replaces_what_is_known_except_fresh_marks() {
        let backlog = Backlog::default();
        backlog.mark(&ids(["stale"]));
        let version = backlog.version();
        backlog.mark(&ids(["fresh"]));
        backlog.refresh(ids(["found"]), version);
        assert_eq!(sorted(&backlog), ["found", "fresh"]);
    }

    #[tokio::test]
    async fn a_mark_wakes_the_waiter() {
        let backlog = Backlog::default();
        backlog.mark(&ids(["a"]));
        tokio::time::timeout(std::time::Duration::from_secs(1), backlog.woken()).await.unwrap();
    }
}
