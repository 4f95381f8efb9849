//! The event catalog: the one place where Produktly's events and their
//! properties are defined. Ingest validation, the partner documentation's
//! tables and the OpenAPI description are all derived from these two lists.
//!
//! A property keeps one type forever: every property becomes a warehouse column
//! in the customer's Segment warehouse, and a type change breaks it.

use serde_json::Value;

use crate::domain::pattern::Pattern;

/// The highest NPS score.
pub const MAX_SCORE: u64 = 10;

/// An absolute `http` or `https` URL: the scheme, a host, then anything
/// without spaces or control characters.
pub static URL: Pattern = Pattern::new("^https?://[^\\x00-\\x20\\x7f/?#]+([/?#][^\\x00-\\x20\\x7f]*)?$");

/// The type a property's value must have, and how it is forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyType {
    /// A non-empty string; a JSON number is accepted and forwarded as a string.
    Id,
    /// Any string.
    Text,
    /// A non-negative integer (`2.0` counts; forwarded as `2`).
    Count,
    /// An integer from 0 to 10 (forwarded as an integer).
    Score,
    /// An absolute `http` or `https` URL.
    Url,
}

impl PropertyType {
    /// The expected type in words, for error messages and documentation.
    pub fn describe(self) -> &'static str {
        match self {
            PropertyType::Id => "a non-empty string (or a number, forwarded as a string)",
            PropertyType::Text => "a string",
            PropertyType::Count => "a non-negative integer",
            PropertyType::Score => "an integer from 0 to 10",
            PropertyType::Url => "an absolute http(s) URL",
        }
    }

    /// The value as it is forwarded to Segment, or `None` when it has the wrong type.
    pub fn normalize(self, value: &Value) -> Option<Value> {
        match (self, value) {
            (PropertyType::Id, Value::String(s)) if !s.is_empty() => Some(value.clone()),
            (PropertyType::Id, Value::Number(n)) => Some(Value::String(n.to_string())),
            (PropertyType::Text, Value::String(_)) => Some(value.clone()),
            (PropertyType::Count, Value::Number(n)) => whole_number(n).map(Value::from),
            (PropertyType::Score, Value::Number(n)) => whole_number(n).filter(|s| *s <= MAX_SCORE).map(Value::from),
            (PropertyType::Url, Value::String(s)) if URL.is_match(s) => Some(value.clone()),
            _ => None,
        }
    }
}

/// A number from 0 to `u64::MAX` without a fraction. JSON does not tell
/// integers from other numbers, so `2.0` is one (as JSON Schema counts it).
fn whole_number(n: &serde_json::Number) -> Option<u64> {
    const TWO_TO_THE_64: f64 = 18_446_744_073_709_551_616.0;
    n.as_u64().or_else(|| {
        let f = n.as_f64()?;
        // In range and without a fraction, the conversion is exact.
        (f.fract() == 0.0 && (0.0..TWO_TO_THE_64).contains(&f)).then_some(f as u64)
    })
}

/// A property that catalog events carry.
#[derive(Debug)]
pub struct Property {
    pub name: &'static str,
    pub kind: PropertyType,
    pub description: &'static str,
}

/// An event of the catalog, with the properties it must and may carry.
#[derive(Debug)]
pub struct Event {
    pub name: &'static str,
    pub description: &'static str,
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
}

impl Event {
    /// The catalog properties of this event, required ones first.
    pub fn properties(&self) -> impl Iterator<Item = (&'static Property, bool)> {
        let required = self.required.iter().map(|name| (name, true));
        let optional = self.optional.iter().map(|name| (name, false));
        required.chain(optional).map(|(name, is_required)| (property(name).expect("catalog property"), is_required))
    }
}

/// Every property of the catalog.
pub const PROPERTIES: &[Property] = &[
    prop("tour_id", PropertyType::Id, "ID of the tour"),
    prop("tour_name", PropertyType::Text, "Name of the tour"),
    prop("step_id", PropertyType::Id, "ID of the tour or checklist step"),
    prop("step_index", PropertyType::Count, "Position of the step, starting at 0"),
    prop("step_title", PropertyType::Text, "Title of the step"),
    prop("step_count", PropertyType::Count, "Number of steps in the tour"),
    prop("checklist_id", PropertyType::Id, "ID of the checklist"),
    prop("checklist_name", PropertyType::Text, "Name of the checklist"),
    prop("smart_tip_id", PropertyType::Id, "ID of the smart tip"),
    prop("smart_tip_name", PropertyType::Text, "Name of the smart tip"),
    prop("announcement_id", PropertyType::Id, "ID of the announcement"),
    prop("announcement_name", PropertyType::Text, "Name of the announcement"),
    prop("action_label", PropertyType::Text, "Label of the announcement action clicked"),
    prop("link", PropertyType::Url, "URL of the link clicked"),
    prop("nps_widget_id", PropertyType::Id, "ID of the NPS widget"),
    prop("nps_widget_name", PropertyType::Text, "Name of the NPS widget"),
    prop("score", PropertyType::Score, "NPS score the user gave, from 0 to 10"),
    prop("feedback", PropertyType::Text, "Feedback the user wrote with the NPS score"),
];

/// Every event of the catalog.
pub const EVENTS: &[Event] = &[
    event("tour_available", "Tour was available for user", &["tour_id"], &["tour_name"]),
    event("tour_start", "Tour was started by user", &["tour_id"], &["tour_name"]),
    event("tour_auto_start", "Tour was automatically started", &["tour_id"], &["tour_name"]),
    event("tour_continue", "Tour was continued by user", &["tour_id"], &["tour_name", "step_index"]),
    event("tour_finish", "Tour was finished by user", &["tour_id"], &["tour_name", "step_count"]),
    event(
        "tour_step",
        "User saw a specific step of a tour",
        &["tour_id", "step_id", "step_index"],
        &["tour_name", "step_title", "step_count"],
    ),
    event(
        "checklist_step_completed",
        "User completed a step of a checklist",
        &["checklist_id", "step_id"],
        &["checklist_name", "step_title", "step_index"],
    ),
    event("checklist_finished", "User completed all the steps in a checklist", &["checklist_id"], &["checklist_name"]),
    event("smart_tip_available", "Smart tip was available for user", &["smart_tip_id"], &["smart_tip_name"]),
    event("smart_tip_open", "Smart tip was opened", &["smart_tip_id"], &["smart_tip_name"]),
    event("announcement_shown", "Announcement was shown to user", &["announcement_id"], &["announcement_name"]),
    event(
        "announcement_action_clicked",
        "User clicked on announcement action",
        &["announcement_id"],
        &["announcement_name", "action_label", "link"],
    ),
    event("announcement_closed", "Announcement was closed by user", &["announcement_id"], &["announcement_name"]),
    event("nps_widget_shown", "NPS widget was shown to user", &["nps_widget_id"], &["nps_widget_name"]),
    event(
        "nps_submitted",
        "User submitted an NPS score",
        &["nps_widget_id", "score"],
        &["nps_widget_name", "feedback"],
    ),
];

const fn prop(name: &'static str, kind: PropertyType, description: &'static str) -> Property {
    Property { name, kind, description }
}

const fn event(
    name: &'static str,
    description: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
) -> Event {
    Event { name, description, required, optional }
}

/// The catalog event of that name.
pub fn find_event(name: &str) -> Option<&'static Event> {
    EVENTS.iter().find(|e| e.name == name)
}

/// The catalog property of that name.
pub fn property(name: &str) -> Option<&'static Property> {
    PROPERTIES.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_event_property_is_defined_and_every_property_is_used() {
        for event in EVENTS {
            assert_eq!(event.properties().count(), event.required.len() + event.optional.len());
        }
        for property in PROPERTIES {
            let used = EVENTS.iter().any(|e| e.properties().any(|(p, _)| p.name == property.name));
            assert!(used, "{} is not used by any event", property.name);
        }
    }

    #[test]
    fn catalog_has_fifteen_uniquely_named_events() {
        let mut names: Vec<_> = EVENTS.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 15);
    }

    #[test]
    fn ids_accept_numbers_and_forward_them_as_strings() {
        assert_eq!(PropertyType::Id.normalize(&json!(42)), Some(json!("42")));
        assert_eq!(PropertyType::Id.normalize(&json!("t_1")), Some(json!("t_1")));
        assert_eq!(PropertyType::Id.normalize(&json!("")), None);
        assert_eq!(PropertyType::Id.normalize(&json!(true)), None);
    }

    #[test]
    fn counts_scores_and_urls_are_checked() {
        assert!(PropertyType::Count.normalize(&json!(0)).is_some());
        assert!(PropertyType::Count.normalize(&json!(-1)).is_none());
        assert!(PropertyType::Count.normalize(&json!(1.5)).is_none());
        assert_eq!(PropertyType::Count.normalize(&json!(2.0)), Some(json!(2)));
        assert_eq!(PropertyType::Count.normalize(&json!(u64::MAX)), Some(json!(u64::MAX)));
        assert!(PropertyType::Count.normalize(&json!(18_446_744_073_709_551_616.0)).is_none());
        assert!(PropertyType::Score.normalize(&json!(10.0)).is_some());
        assert!(PropertyType::Count.normalize(&json!("2")).is_none());
        assert!(PropertyType::Score.normalize(&json!(10)).is_some());
        assert!(PropertyType::Score.normalize(&json!(11)).is_none());
        assert!(PropertyType::Url.normalize(&json!("https://example.com/x")).is_some());
        assert!(PropertyType::Url.normalize(&json!("javascript:alert(1)")).is_none());
        assert!(PropertyType::Url.normalize(&json!("/relative")).is_none());
        assert!(PropertyType::Url.normalize(&json!("https://example.com/a b")).is_none());
        assert!(PropertyType::Url.normalize(&json!("https://example.com\n")).is_none());
        assert!(PropertyType::Url.normalize(&json!("http://localhost:3000?q=1#top")).is_some());
    }
}
