//! Request rate limits: per workspace (ingest key) and per client address for
//! ingest, per client address for the admin API. Over a limit: `429` with
//! `Retry-After`. Each limit allows bursts of twice its rate.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Settings;
use crate::error::ApiError;

pub struct RateLimits {
    ingest_workspace: Option<DefaultKeyedRateLimiter<String>>,
    ingest_client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    admin_client: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimits {
    pub fn new(settings: &Settings) -> RateLimits {
        RateLimits {
            ingest_workspace: limiter(settings.ingest.key_requests_per_sec),
            ingest_client: limiter(settings.ingest.ip_requests_per_sec),
            admin_client: limiter(settings.admin_requests_per_sec),
        }
    }

    pub fn ingest_client(&self, client: IpAddr) -> Result<(), ApiError> {
        check(self.ingest_client.as_ref(), &client)
    }

    pub fn ingest_workspace(&self, workspace_id: &str) -> Result<(), ApiError> {
        check(self.ingest_workspace.as_ref(), &workspace_id.to_owned())
    }

    pub fn admin_client(&self, client: IpAddr) -> Result<(), ApiError> {
        check(self.admin_client.as_ref(), &client)
    }

    /// Forgets keys that have not been seen lately, so that a flood of
    /// addresses does not grow memory without bound.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.ingest_workspace {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in [&self.ingest_client, &self.admin_client].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// A limiter of `per_sec` with bursts of twice that; none for 0.
fn limiter<K: Hash + Eq + Clone>(per_sec: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not 0"));
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

fn check<K: Hash + Eq + Clone>(limiter: Option<&DefaultKeyedRateLimiter<K>>, key: &K) -> Result<(), ApiError> {
    let Some(limiter) = limiter else { return Ok(()) };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
    })
}
