//! What activity records: an event's outcome and a delivery attempt.

use serde::Serialize;

use crate::config::IdDisplay;
use crate::domain::time::millis_to_iso8601;
use crate::store::Millis;

/// Longest event name or message kept, in characters (refused input may be anything).
const MAX_TEXT_CHARS: usize = 200;

/// What became of one event on this instance. One event may have several
/// entries (`queued` here, `delivered` on the instance that sent it).
#[derive(Clone, Debug)]
pub struct EventEntry {
    pub at: Millis,
    /// The name as sent, known to the catalog or not.
    pub event: Option<Box<str>>,
    pub message_id: Option<Box<str>>,
    pub user_id: Option<Box<str>>,
    pub anonymous_id: Option<Box<str>>,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Committed to the queue.
    Queued,
    /// In a Segment request that Segment took.
    Delivered { attempt: u64, status: u16 },
    /// Refused before it was stored: the API's error code and message.
    Refused {
        code: &'static str,
        message: Box<str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<Box<str>>,
    },
    /// Valid, but not stored: `event_not_selected` or `segment_not_configured`.
    NotSelected { reason: &'static str },
    /// Moved to the dead letters.
    DeadLettered {
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
    /// Removed from the queue by an erasure request (`events` of them).
    Erased { events: u64 },
}

impl Outcome {
    /// The name a filter uses (`?outcome=`).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Delivered { .. } => "delivered",
            Outcome::Refused { .. } => "refused",
            Outcome::NotSelected { .. } => "not_selected",
            Outcome::DeadLettered { .. } => "dead_lettered",
            Outcome::Erased { .. } => "erased",
        }
    }

    pub const NAMES: [&'static str; 6] = ["queued", "delivered", "refused", "not_selected", "dead_lettered", "erased"];

    pub fn refused(code: &'static str, message: &str, field: Option<&str>) -> Outcome {
        Outcome::Refused { code, message: bounded(message), field: field.map(bounded) }
    }
}

impl EventEntry {
    /// An entry without an event of its own (a whole request refused, an erasure).
    pub fn about_request(at: Millis, outcome: Outcome) -> EventEntry {
        EventEntry { at, event: None, message_id: None, user_id: None, anonymous_id: None, outcome }
    }

    pub fn view(&self, instance: &str, ids: IdDisplay) -> EventView {
        let shown = |id: &Option<Box<str>>| id.as_deref().map(|id| display_id(id, ids));
        EventView {
            received_at: millis_to_iso8601(self.at),
            instance: instance.to_owned(),
            event: self.event.as_deref().map(str::to_owned),
            message_id: self.message_id.as_deref().map(str::to_owned),
            user_id: shown(&self.user_id),
            anonymous_id: shown(&self.anonymous_id),
            outcome: self.outcome.clone(),
        }
    }
}

/// A text kept short: refused input is whatever the client sent.
pub fn bounded(text: &str) -> Box<str> {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

/// An id as the debugger shows it.
fn display_id(id: &str, ids: IdDisplay) -> String {
    if ids == IdDisplay::Full {
        return id.to_owned();
    }
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 6 {
        return "…".to_owned();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail}")
}

/// An event entry as the activity API answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// When this instance saw it (received it, or settled its delivery).
    received_at: String,
    /// The instance that saw it (`activity.instance`).
    instance: String,
    event: Option<String>,
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    /// As configured by `activity.ids`: masked (`cu…42`) by default.
    #[serde(rename = "userId")]
    user_id: Option<String>,
    #[serde(rename = "anonymousId")]
    anonymous_id: Option<String>,
    /// `queued`, `delivered` (with `attempt` and `status`), `refused` (with
    /// `code`, `message`, `field`), `not_selected` (with `reason`),
    /// `dead_lettered` (with `reason`, `status`) or `erased` (with `events`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    outcome: Outcome,
}

/// One request to Segment.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryEntry {
    /// This instance's number for the request; `delivered` entries name it.
    pub attempt: u64,
    #[serde(skip)]
    pub at: Millis,
    pub events: usize,
    /// The request body's size, before compression.
    pub bytes: usize,
    /// Segment's HTTP status; `null`: no answer (timeout, connection error).
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// What the round did next: `acknowledged`, `split` (the halves sent
    /// apart to find the refused message), `dead_lettered`, `retry` (after a
    /// failure, with backoff) or `rate_limited` (after Segment's wait).
    pub decision: &'static str,
    /// When the events are tried again (`retry`, `rate_limited`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Segment's message or the error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<str>>,
}

/// A delivery attempt as the API answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    sent_at: String,
    instance: String,
    #[serde(flatten)]
    attempt: DeliveryEntry,
}

impl DeliveryEntry {
    pub fn view(&self, instance: &str) -> DeliveryView {
        DeliveryView { sent_at: millis_to_iso8601(self.at), instance: instance.to_owned(), attempt: self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_masked_unless_configured_in_full() {
        assert_eq!(display_id("customer-user-42", IdDisplay::Masked), "cu…42");
        assert_eq!(display_id("short", IdDisplay::Masked), "…");
        assert_eq!(display_id("éééééééé", IdDisplay::Masked), "éé…éé");
        assert_eq!(display_id("customer-user-42", IdDisplay::Full), "customer-user-42");
    }

    #[test]
    fn long_text_is_cut_at_a_character() {
        assert_eq!(&*bounded("short"), "short");
        let long = "é".repeat(300);
        assert_eq!(bounded(&long).chars().count(), MAX_TEXT_CHARS + 1);
    }
}
