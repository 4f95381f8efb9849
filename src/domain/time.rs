//! Time as the service stores and sends it.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// Unix time in milliseconds, as stored.
pub type Millis = i64;

/// Now, as stored: Unix milliseconds.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// ISO-8601 with milliseconds, as Segment and the admin API show times.
pub fn iso8601(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A stored time as ISO-8601.
pub fn millis_to_iso8601(millis: Millis) -> String {
    iso8601(DateTime::from_timestamp_millis(millis).unwrap_or_default())
}

/// A duration in stored units (milliseconds), saturating.
pub fn millis(duration: Duration) -> Millis {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
