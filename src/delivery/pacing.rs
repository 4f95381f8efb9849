//! When a workspace may be called next: backoff after failures, and pacing
//! under the per-workspace request rate cap.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::domain::time::{millis, now_millis};
use crate::store::Millis;

/// Capped exponential backoff with full jitter: a uniformly random wait up to
/// `base * 2^(failures - 1)`, capped at `max`. Jitter keeps many workspaces
/// that failed together (a Segment outage) from retrying in lockstep.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    let ceiling = base.saturating_mul(2u32.saturating_pow(doublings)).min(max);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// Spaces one workspace's requests at least `interval` apart. Only one worker
/// serves a workspace at a time (it holds the workspace's lease), and the next
/// round may start no earlier than [`Pace::next_allowed`], so the cap holds
/// across rounds and instances.
pub struct Pace {
    interval: Duration,
    next: Instant,
}

impl Pace {
    pub fn new(interval: Duration) -> Pace {
        Pace { interval, next: Instant::now() }
    }

    /// Waits until the next request may go, and books the one after it.
    pub async fn wait(&mut self) {
        tokio::time::sleep_until(self.next).await;
        self.next = Instant::now() + self.interval;
    }

    /// The earliest time of the next request, as stored.
    pub fn next_allowed(&self) -> Millis {
        let wait = self.next.saturating_duration_since(Instant::now());
        now_millis() + millis(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_ceiling_that_doubles_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for failures in 1..40 {
            let ceiling = (base * 2u32.pow((failures - 1).min(20))).min(max);
            for _ in 0..50 {
                assert!(backoff(failures, base, max) <= ceiling);
            }
        }
        let late: Vec<_> = (0..200).map(|_| backoff(30, base, max)).collect();
        assert!(late.iter().any(|d| *d > Duration::from_secs(5)), "the cap is reached");
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_spaces_requests_by_the_interval() {
        let mut pace = Pace::new(Duration::from_millis(20));
        let start = Instant::now();
        for _ in 0..5 {
            pace.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(80), "the first request goes at once");
        assert!(pace.next_allowed() >= now_millis() + 19);
    }
}
