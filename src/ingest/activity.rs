//! What ingest tells the delivery debugger of each event.

use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;

use super::event::Accepted;
use crate::activity::{EventEntry, Outcome};
use crate::http::error::EventError;

/// A valid event and what became of it.
pub fn seen(event: &Accepted, outcome: Outcome) -> EventEntry {
    let e = &event.event;
    EventEntry {
        at: e.received_at,
        event: Some(event.name.into()),
        message_id: Some(e.message_id.as_str().into()),
        user_id: e.user_id.as_deref().map(Into::into),
        anonymous_id: e.anonymous_id.as_deref().map(Into::into),
        outcome,
    }
}

/// A refused event, with what can be read of it (its name may be unknown to
/// the catalog, which is often why it was refused).
pub fn refused_event(raw: &RawValue, received_at: DateTime<Utc>, error: &EventError) -> EventEntry {
    let event: Value = serde_json::from_str(raw.get()).unwrap_or_default();
    let text = |field: &str| match event.get(field) {
        Some(Value::String(text)) => Some(crate::activity::bounded(text)),
        Some(Value::Number(n)) => Some(n.to_string().into()),
        _ => None,
    };
    EventEntry {
        at: received_at.timestamp_millis(),
        event: text("event"),
        message_id: text("messageId"),
        user_id: text("userId"),
        anonymous_id: text("anonymousId"),
        outcome: Outcome::refused(error.code.as_str(), &error.message, error.field.as_deref()),
    }
}

/// The entries, those that were to be queued given `outcome` instead (the
/// commit failed, or there is no integration to queue for).
pub fn instead_of_queued(entries: Vec<EventEntry>, outcome: &Outcome) -> Vec<EventEntry> {
    entries
        .into_iter()
        .map(|entry| match entry.outcome {
            Outcome::Queued => EventEntry { outcome: outcome.clone(), ..entry },
            _ => entry,
        })
        .collect()
}
