//! What of the catalog a workspace sends to its Segment: which events (all
//! unless it chose), and which properties are left out of every event. Set on
//! the Segment integration, applied at ingest (events not chosen are not
//! stored; left-out properties are removed before the event is stored).

use std::collections::HashSet;

use crate::domain::catalog;

const EVENTS: &str = "events";
const OMIT_PROPERTIES: &str = "omit_properties";

/// Most properties a workspace may leave out, and their longest name.
pub const MAX_OMITTED: usize = 100;
pub const MAX_PROPERTY_NAME_CHARS: usize = 128;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventSelection {
    /// The catalog events forwarded; `None`: all of them.
    pub events: Option<Vec<String>>,
    /// Properties removed from every event; `None`: none.
    pub omit_properties: Option<Vec<String>>,
}

/// Why a selection is refused, naming the entry.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("{0:?} is not an event of the catalog")]
    UnknownEvent(String),
    #[error("{entry:?} is listed twice in {field}")]
    Duplicate { field: &'static str, entry: String },
    #[error("{property:?} cannot be left out: `{event}` requires it")]
    RequiredProperty { property: String, event: &'static str },
    #[error("a property name is 1 to {MAX_PROPERTY_NAME_CHARS} characters")]
    BadPropertyName,
    #[error("at most {MAX_OMITTED} properties can be left out")]
    TooManyOmitted,
}

impl SelectionError {
    /// The field of the request the entry is in.
    pub fn field(&self) -> &'static str {
        match self {
            SelectionError::UnknownEvent(_) => EVENTS,
            SelectionError::Duplicate { field, .. } => field,
            SelectionError::RequiredProperty { .. }
            | SelectionError::BadPropertyName
            | SelectionError::TooManyOmitted => OMIT_PROPERTIES,
        }
    }
}

impl EventSelection {
    /// A selection as the admin asks for it, checked against the catalog.
    pub fn new(
        events: Option<Vec<String>>,
        omit_properties: Option<Vec<String>>,
    ) -> Result<EventSelection, SelectionError> {
        if let Some(events) = &events {
            no_duplicates(EVENTS, events)?;
            if let Some(unknown) = events.iter().find(|name| catalog::find_event(name).is_none()) {
                return Err(SelectionError::UnknownEvent(unknown.clone()));
            }
        }
        if let Some(omitted) = &omit_properties {
            if omitted.len() > MAX_OMITTED {
                return Err(SelectionError::TooManyOmitted);
            }
            no_duplicates(OMIT_PROPERTIES, omitted)?;
            if omitted.iter().any(|name| name.is_empty() || name.chars().count() > MAX_PROPERTY_NAME_CHARS) {
                return Err(SelectionError::BadPropertyName);
            }
            if let Some((property, event)) = required_by_some_event(omitted) {
                return Err(SelectionError::RequiredProperty { property, event });
            }
        }
        Ok(EventSelection { events, omit_properties })
    }

    /// Whether events of this name go to Segment.
    pub fn forwards(&self, event: &str) -> bool {
        self.events.as_ref().is_none_or(|events| events.iter().any(|e| e == event))
    }

    /// The properties removed from every event.
    pub fn omitted(&self) -> &[String] {
        self.omit_properties.as_deref().unwrap_or_default()
    }
}

/// The properties some catalog event requires; none of them can be left out.
pub fn required_properties() -> impl Iterator<Item = &'static str> {
    let mut seen = HashSet::new();
    catalog::EVENTS.iter().flat_map(|e| e.required.iter().copied()).filter(move |name| seen.insert(*name))
}

fn required_by_some_event(omitted: &[String]) -> Option<(String, &'static str)> {
    omitted.iter().find_map(|property| {
        let event = catalog::EVENTS.iter().find(|e| e.required.contains(&property.as_str()))?;
        Some((property.clone(), event.name))
    })
}

fn no_duplicates(field: &'static str, entries: &[String]) -> Result<(), SelectionError> {
    let mut seen = HashSet::new();
    match entries.iter().find(|entry| !seen.insert(entry.as_str())) {
        Some(twice) => Err(SelectionError::Duplicate { field, entry: twice.clone() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_selection_forwards_its_events_and_omits_its_properties() {
        let selection = EventSelection::new(list(&["tour_start", "nps_submitted"]), list(&["feedback"])).unwrap();
        assert!(selection.forwards("nps_submitted"));
        assert!(!selection.forwards("tour_available"));
        assert_eq!(selection.omitted(), ["feedback"]);
        let all = EventSelection::default();
        assert!(all.forwards("tour_available"));
        assert!(all.omitted().is_empty());
    }

    #[test]
    fn every_refusal_names_its_entry() {
        let refused = |events: &[&str], omit: &[&str]| EventSelection::new(list(events), list(omit)).unwrap_err();
        assert_eq!(refused(&["tour_start", "tour_begin"], &[]), SelectionError::UnknownEvent("tour_begin".into()));
        let twice = |field, entry: &str| SelectionError::Duplicate { field, entry: entry.into() };
        assert_eq!(refused(&["tour_start", "tour_start"], &[]), twice("events", "tour_start"));
        assert_eq!(refused(&[], &["feedback", "feedback"]), twice("omit_properties", "feedback"));
        assert_eq!(
            refused(&[], &["score"]),
            SelectionError::RequiredProperty { property: "score".into(), event: "nps_submitted" }
        );
        assert_eq!(refused(&[], &[""]), SelectionError::BadPropertyName);
        assert!(refused(&[], &["score"]).to_string().contains("\"score\""));
    }

    #[test]
    fn the_required_properties_are_each_listed_once() {
        let required: Vec<_> = required_properties().collect();
        assert!(required.contains(&"tour_id") && required.contains(&"score"));
        assert_eq!(required.len(), required.iter().collect::<HashSet<_>>().len());
        assert!(!required.contains(&"feedback"));
    }
}
