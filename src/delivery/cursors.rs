//! Where each workspace's next read of the queue may start.
//!
//! Delivered events are deleted from the front of a workspace's part of the
//! queue, and PostgreSQL keeps deleted rows in its index until a vacuum: a read
//! from the front wades through all of them. So after a round that settled
//! every event it read, the next read starts after the last of them. Ids are
//! taken at insert and commits of several instances can land out of order, so
//! an event may appear behind a cursor; cursors therefore expire, and a read
//! from the front finds such an event within `MAX_AGE`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long reads may follow cursors before one starts from the front again.
const MAX_AGE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Cursors {
    /// Per workspace: read after this id; the chain of cursors began then.
    entries: Mutex<HashMap<String, (i64, Instant)>>,
}

impl Cursors {
    /// The id the workspace's next read starts after; 0 (the front) when there
    /// is no cursor or it has expired.
    pub fn start(&self, workspace_id: &str) -> i64 {
        let mut entries = self.lock();
        match entries.get(workspace_id) {
            Some((after, since)) if since.elapsed() < MAX_AGE => *after,
            Some(_) => {
                entries.remove(workspace_id);
                0
            }
            None => 0,
        }
    }

    /// Every event up to `last_id` that the round read is settled.
    pub fn advance(&self, workspace_id: &str, last_id: i64) {
        let mut entries = self.lock();
        match entries.get_mut(workspace_id) {
            Some((after, _)) => *after = last_id,
            None => {
                entries.insert(workspace_id.to_owned(), (last_id, Instant::now()));
            }
        }
    }

    /// Events the round read stay queued: the next read starts from the front.
    pub fn reset(&self, workspace_id: &str) {
        self.lock().remove(workspace_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Instant)>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_advance_reset_and_expire() {
        let cursors = Cursors::default();
        assert_eq!(cursors.start("w"), 0);
        cursors.advance("w", 10);
        cursors.advance("w", 20);
        assert_eq!(cursors.start("w"), 20);
        cursors.reset("w");
        assert_eq!(cursors.start("w"), 0);
        cursors.entries.lock().unwrap().insert("w".into(), (30, Instant::now() - MAX_AGE));
        assert_eq!(cursors.start("w"), 0, "an expired cursor reads from the front");
    }
}
