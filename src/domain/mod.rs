//! The domain's own types, shared by every layer (config, store, ingest,
//! delivery, admin): they depend on nothing of the service but the string
//! rules of `pattern`.

pub mod catalog;
pub mod partner_docs;
pub mod pattern;
pub mod selection;
pub mod time;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::pattern::{Pattern, shown};

/// Longest `userId` / `anonymousId` accepted, in characters.
pub const MAX_ID_CHARS: usize = 255;

/// A stored identity link seen again with the same user is rewritten (its
/// time refreshed, for retention) only once it is this old, in milliseconds:
/// most events of a signed-in user carry the same link, and rewriting it on
/// every commit cost a row update per commit. Retention (months) ends at most
/// this much earlier.
pub const LINK_REFRESH_MILLIS: i64 = 24 * 60 * 60 * 1000;

/// Letters, digits, `-`, `_` and `.`, starting with a letter or digit (so that
/// no id is a dot segment, `.` or `..`, which clients remove from URL paths).
pub static WORKSPACE_ID: Pattern = Pattern::new("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$");

/// A workspace's id: the admin app may choose its own, within [`WorkspaceId::RULE`].
/// It reads as the `str` it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WorkspaceId(String);

#[derive(Debug, thiserror::Error)]
#[error("{}", WorkspaceId::RULE)]
pub struct InvalidWorkspaceId;

impl WorkspaceId {
    pub const RULE: &str =
        "a workspace id is 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit";

    pub fn parse(id: String) -> Result<WorkspaceId, InvalidWorkspaceId> {
        if WORKSPACE_ID.is_match(&id) { Ok(WorkspaceId(id)) } else { Err(InvalidWorkspaceId) }
    }

    /// An id as the store keeps it: checked when it was stored.
    pub fn stored(id: String) -> WorkspaceId {
        WorkspaceId(id)
    }

    /// A new id for a workspace created without one: `ws_` and 128 random bits.
    pub fn generate() -> WorkspaceId {
        WorkspaceId(format!("ws_{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::ops::Deref for WorkspaceId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for WorkspaceId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::borrow::Borrow<str> for WorkspaceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Most origins a workspace may list.
pub const MAX_ORIGINS: usize = 100;

macro_rules! octet {
    () => {
        "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    };
}
macro_rules! label {
    ($first:literal) => {
        concat!($first, "([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
    };
}
/// An origin as browsers send it: `http` or `https`, a host name or IPv4
/// address, and a port when it is not the default; a final `/` is allowed.
pub static ORIGIN: Pattern = Pattern::new(concat!(
    "^https?://(",
    concat!("(", octet!(), "\\.){3}", octet!()),
    "|",
    // The last label starts with a letter: one that does not reads as an IPv4 address.
    concat!("(", label!("[A-Za-z0-9]"), "\\.)*", label!("[A-Za-z]")),
    ")(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?/?$",
));

/// The browser origins a workspace accepts events from, each as a browser's
/// `Origin` header spells it (lower case, no final `/`, no default port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOrigins {
    #[error("at most {MAX_ORIGINS} origins may be listed")]
    TooMany,
    /// The first entry that is not an origin.
    #[error("{:?} is not an origin such as https://app.example.com", shown(.0))]
    NotAnOrigin(String),
}

impl AllowedOrigins {
    /// Origins as an admin lists them, checked against [`ORIGIN`] and normalized.
    pub fn parse(origins: Vec<String>) -> Result<AllowedOrigins, InvalidOrigins> {
        if origins.len() > MAX_ORIGINS {
            return Err(InvalidOrigins::TooMany);
        }
        let normalized = origins.into_iter().map(|origin| {
            if ORIGIN.is_match(&origin) {
                Ok(normalized_origin(&origin))
            } else {
                Err(InvalidOrigins::NotAnOrigin(origin))
            }
        });
        Ok(AllowedOrigins(normalized.collect::<Result<_, _>>()?))
    }

    /// Whether a browser sending `origin` is let in.
    pub fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|allowed| allowed == origin)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// As stored: space-separated (an origin holds no space).
    pub fn to_stored(&self) -> String {
        self.0.join(" ")
    }

    /// As read back from [`AllowedOrigins::to_stored`].
    pub fn from_stored(stored: &str) -> AllowedOrigins {
        AllowedOrigins(stored.split(' ').filter(|o| !o.is_empty()).map(str::to_owned).collect())
    }
}

/// An origin (already matched) as a browser's `Origin` header spells it.
fn normalized_origin(origin: &str) -> String {
    let origin = origin.strip_suffix('/').unwrap_or(origin).to_ascii_lowercase();
    let default_port = if origin.starts_with("https:") { ":443" } else { ":80" };
    match origin.strip_suffix(default_port) {
        Some(without_port) => without_port.to_owned(),
        None => origin,
    }
}

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Segment refused the message (`400`, `413`).
    Rejected,
    /// Over Segment's limit for one message.
    MessageTooLarge,
    /// Not delivered before `delivery.max_age_secs`.
    Expired,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 3] =
        [DeadLetterReason::Rejected, DeadLetterReason::MessageTooLarge, DeadLetterReason::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::MessageTooLarge => "message_too_large",
            DeadLetterReason::Expired => "expired",
        }
    }
}

impl FromStr for DeadLetterReason {
    type Err = ();
    fn from_str(s: &str) -> Result<DeadLetterReason, ()> {
        DeadLetterReason::ALL.into_iter().find(|reason| reason.as_str() == s).ok_or(())
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
    fn workspace_ids() {
        let parse = |id: &str| WorkspaceId::parse(id.to_owned());
        assert!(parse("ws_1.a-b").is_ok());
        assert!(parse("").is_err());
        assert!(parse("a/b").is_err());
        assert!(parse(&"x".repeat(64)).is_ok());
        assert!(parse(&"x".repeat(65)).is_err());
        assert!(parse(".").is_err());
        assert!(parse("ws\n").is_err());
        assert!(WORKSPACE_ID.is_match(WorkspaceId::generate().as_str()));
    }

    #[test]
    fn origins_are_normalized_as_browsers_send_them() {
        let listed = ["https://App.Acme.com/", "http://127.0.0.1:80", "https://acme.com:8443"].map(str::to_owned);
        let origins = AllowedOrigins::parse(listed.to_vec()).unwrap();
        assert_eq!(origins.as_slice(), ["https://app.acme.com", "http://127.0.0.1", "https://acme.com:8443"]);
        assert!(origins.allows("http://127.0.0.1") && !origins.allows("https://acme.com"));
        assert_eq!(AllowedOrigins::from_stored(&origins.to_stored()), origins);
        let bad = AllowedOrigins::parse(vec!["https://a.example/path".into()]);
        assert_eq!(bad, Err(InvalidOrigins::NotAnOrigin("https://a.example/path".into())));
        assert_eq!(AllowedOrigins::parse(vec!["https://a.example".into(); 101]), Err(InvalidOrigins::TooMany));
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
