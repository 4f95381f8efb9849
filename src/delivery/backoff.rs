//! How long a failing workspace waits before its next attempt.

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff with full jitter: a uniformly random wait up to
/// `base * 2^(failures - 1)`, capped at `max`. Jitter keeps many workspaces
/// that failed together (a Segment outage) from retrying in lockstep.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    let ceiling = base.saturating_mul(2u32.saturating_pow(doublings)).min(max);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
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
        assert!(
            late.iter().any(|d| *d > Duration::from_secs(5)),
            "the cap is reached"
        );
    }
}
