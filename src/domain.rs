//! The domain's own types, shared by every layer (config, store, ingest,
//! delivery, admin): they depend on nothing of the service.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest `userId` / `anonymousId` accepted, in characters.
pub const MAX_ID_CHARS: usize = 255;

/// A stored identity link seen again with the same user is rewritten (its
/// time refreshed, for retention) only once it is this old, in milliseconds:
/// most events of a signed-in user carry the same link, and rewriting it on
/// every commit cost a row update per commit. Retention (months) ends at most
/// this much earlier.
pub const LINK_REFRESH_MILLIS: i64 = 24 * 60 * 60 * 1000;

/// The Segment region a workspace's data lives in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    #[default]
    Us,
    Eu,
}

impl Region {
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Region {
    type Err = ();
    fn from_str(s: &str) -> Result<Region, ()> {
        match s {
            "us" => Ok(Region::Us),
            "eu" => Ok(Region::Eu),
            _ => Err(()),
        }
    }
}

/// Why an event left the queue undelivered, as dead letters and the
/// `events_dead_lettered` metric name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Segment refused the message (`400`, `413`).
    Rejected,
    /// Over Segment's limit for one message.
    MessageTooLarge,
    /// Not delivered before `delivery.max_age_secs`.
    Expired,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::MessageTooLarge => "message_too_large",
            DeadLetterReason::Expired => "expired",
        }
    }
}

/// How delivery to a workspace's Segment fares, as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationState {
    /// Delivering (or nothing to deliver).
    Ok,
    /// An attempt that failed or was rate limited waits for its retry.
    Retrying,
    /// 5 or more failures in a row.
    Failing,
    /// Disabled.
    Paused,
    /// Segment's region is down for every workspace; delivery resumes as soon
    /// as a probe finds it back.
    WaitingForSegment,
}

/// What `context.ip` carries of the browser's address. The service's
/// `ingest.ip_policy` and each workspace's integration (`ip`) choose one; the
/// stricter of the two applies, before the event is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub enum IpPolicy {
    /// The address as it is.
    #[default]
    #[serde(rename = "full", alias = "forward")]
    Full,
    /// The last IPv4 octet, or the last 80 bits of IPv6, zeroed (as analytics
    /// tools truncate addresses).
    #[serde(rename = "truncated", alias = "anonymize")]
    Truncated,
    /// No address at all.
    #[serde(rename = "none", alias = "omit")]
    Omitted,
}

impl IpPolicy {
    pub const ALL: [IpPolicy; 3] = [IpPolicy::Full, IpPolicy::Truncated, IpPolicy::Omitted];

    pub fn as_str(self) -> &'static str {
        match self {
            IpPolicy::Full => "full",
            IpPolicy::Truncated => "truncated",
            IpPolicy::Omitted => "none",
        }
    }

    /// The stricter of two policies.
    pub fn and(self, other: IpPolicy) -> IpPolicy {
        self.max(other)
    }

    /// What of `address` is kept under this policy.
    pub fn apply(self, address: IpAddr) -> Option<IpAddr> {
        match (self, address) {
            (IpPolicy::Full, _) => Some(address),
            (IpPolicy::Truncated, IpAddr::V4(v4)) => {
                let [a, b, c, _] = v4.octets();
                Some(IpAddr::from([a, b, c, 0]))
            }
            (IpPolicy::Truncated, IpAddr::V6(v6)) => {
                let s = v6.segments();
                Some(IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0]))
            }
            (IpPolicy::Omitted, _) => None,
        }
    }
}

impl FromStr for IpPolicy {
    type Err = ();
    fn from_str(s: &str) -> Result<IpPolicy, ()> {
        IpPolicy::ALL.into_iter().find(|policy| policy.as_str() == s).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn policies_keep_all_a_prefix_or_nothing_of_the_address() {
        assert_eq!(IpPolicy::Full.apply(ip("203.0.113.77")), Some(ip("203.0.113.77")));
        assert_eq!(IpPolicy::Truncated.apply(ip("203.0.113.77")), Some(ip("203.0.113.0")));
        assert_eq!(IpPolicy::Truncated.apply(ip("2001:db8:85a3:1:2:3:4:5")), Some(ip("2001:db8:85a3::")));
        assert_eq!(IpPolicy::Omitted.apply(ip("203.0.113.77")), None);
    }

    #[test]
    fn the_stricter_policy_applies() {
        assert_eq!(IpPolicy::Full.and(IpPolicy::Truncated), IpPolicy::Truncated);
        assert_eq!(IpPolicy::Omitted.and(IpPolicy::Truncated), IpPolicy::Omitted);
        assert_eq!(IpPolicy::Full.and(IpPolicy::Full), IpPolicy::Full);
    }

    #[test]
    fn names_read_back() {
        for policy in IpPolicy::ALL {
            assert_eq!(policy.as_str().parse::<IpPolicy>(), Ok(policy));
        }
        assert!("anonymize".parse::<IpPolicy>().is_err(), "the old names are only the settings' aliases");
    }
}
