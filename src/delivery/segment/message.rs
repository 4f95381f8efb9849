//! The Segment `track` message as queued and as sent.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::{INTEGRATION_NAME, INTEGRATION_VERSION};

/// A `track` call without `userId`: the form in which events are queued. The
/// user id is added at delivery by [`with_user_id`], because it may be resolved
/// from an identify call that arrives after the event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'a str,
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'a str>,
    timestamp: &'a str,
    properties: &'a Map<String, Value>,
    context: &'a Context,
}

impl<'a> TrackMessage<'a> {
    pub fn new(
        event: &'a str,
        message_id: &'a str,
        anonymous_id: Option<&'a str>,
        timestamp: &'a str,
        properties: &'a Map<String, Value>,
        context: &'a Context,
    ) -> Self {
        TrackMessage { kind: "track", event, message_id, anonymous_id, timestamp, properties, context }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a track message always serializes")
    }
}

/// A message's `context`: what the browser sent, with the fields this source
/// owns set on top (`integration` always, written as a constant when
/// serialized rather than built for every event). `library` is the browser
/// SDK's when it names itself (`{"name", "version"}`, strings), else this
/// service's.
#[derive(Debug)]
pub struct Context(Map<String, Value>);

/// The `integration` and `library` objects of every context.
#[derive(Serialize)]
struct Named {
    name: &'static str,
    version: &'static str,
}

const INTEGRATION: Named = Named { name: INTEGRATION_NAME, version: INTEGRATION_VERSION };
const LIBRARY: Named = Named { name: env!("CARGO_PKG_NAME"), version: env!("CARGO_PKG_VERSION") };

impl Context {
    /// The fields this source sets; the browser's values for them are replaced.
    pub const OWNED: [&'static str; 3] = ["integration", "ip", "userAgent"];

    pub fn new(mut fields: Map<String, Value>) -> Context {
        for key in Self::OWNED {
            fields.remove(key);
        }
        if !fields.get("library").is_some_and(names_a_library) {
            fields.remove("library");
        }
        Context(fields)
    }

    /// Sets a field unless the browser already sent one.
    pub fn set_default(&mut self, key: &str, value: Value) {
        self.0.entry(key).or_insert(value);
    }

    /// Sets a field this source owns.
    pub fn set(&mut self, key: &'static str, value: Value) {
        debug_assert!(Self::OWNED.contains(&key));
        self.0.insert(key.into(), value);
    }
}

impl Serialize for Context {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len() + 2))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("integration", &INTEGRATION)?;
        if !self.0.contains_key("library") {
            map.serialize_entry("library", &LIBRARY)?;
        }
        map.end()
    }
}

/// `{"name": "…", "version": "…"}` and nothing else, each at most 100 characters.
fn names_a_library(library: &Value) -> bool {
    let Value::Object(fields) = library else { return false };
    let text =
        |key: &str| fields.get(key).and_then(Value::as_str).is_some_and(|t| !t.is_empty() && t.chars().count() <= 100);
    fields.len() == 2 && text("name") && text("version")
}

/// The event name of a queued payload, which [`TrackMessage`] writes first
/// after the type: `{"type":"track","event":"…"`.
pub fn queued_event_name(payload: &str) -> Option<&str> {
    let rest = payload.strip_prefix(r#"{"type":"track","event":""#)?;
    rest.find('"').map(|end| &rest[..end])
}

/// The message as sent: the queued JSON with `userId` in front when known.
/// Takes the payload by value: without a user id it is sent as it is.
pub fn with_user_id(payload: String, user_id: Option<&str>) -> String {
    let Some(user_id) = user_id else {
        return payload;
    };
    let user_id = serde_json::to_string(user_id).expect("a string always serializes");
    // A queued payload is always a non-empty JSON object (`{"type":...`).
    let rest = payload.strip_prefix('{').unwrap_or(&payload);
    let mut message = String::with_capacity(payload.len() + user_id.len() + USER_ID_FRAME.len());
    message.push_str("{\"userId\":");
    message.push_str(&user_id);
    message.push(',');
    message.push_str(rest);
    message
}

/// The length of `with_user_id(payload, user_id)`, without building it.
pub fn sent_len(payload: &str, user_id: Option<&str>) -> usize {
    match user_id {
        None => payload.len(),
        Some(user_id) => {
            let quoted = serde_json::to_string(user_id).expect("a string always serializes");
            payload.len() + quoted.len() + USER_ID_FRAME.len()
        }
    }
}

/// What `with_user_id` adds besides the quoted id: `"userId":` and a comma.
const USER_ID_FRAME: &str = "\"userId\":,";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_id_is_spliced_into_the_queued_json() {
        let context = Context::new(Map::new());
        let properties = Map::new();
        let payload =
            TrackMessage::new("tour_start", "m1", Some("a1"), "2026-01-01T00:00:00.000Z", &properties, &context)
                .to_json();
        let sent = with_user_id(payload.clone(), Some("u\"1"));
        assert_eq!(sent.len(), sent_len(&payload, Some("u\"1")));
        let sent: Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(sent["userId"], "u\"1");
        assert_eq!(sent["type"], "track");
        assert_eq!(sent["anonymousId"], "a1");
        assert_eq!(sent["context"]["integration"]["name"], "produktly");
        assert_eq!(with_user_id(payload.clone(), None), payload);
        assert_eq!(sent_len(&payload, None), payload.len());
    }

    #[test]
    fn the_browser_cannot_set_owned_context_fields() {
        let mut fields = Map::new();
        fields.insert("ip".into(), json!("1.2.3.4"));
        fields.insert("integration".into(), json!("spoofed"));
        fields.insert("locale".into(), json!("fi-FI"));
        let mut context = Context::new(fields);
        context.set_default("locale", json!("en-US"));
        let value = serde_json::to_value(&context).unwrap();
        assert!(value.get("ip").is_none());
        assert_eq!(value["integration"]["name"], "produktly");
        assert_eq!(value["locale"], "fi-FI");
    }

    #[test]
    fn the_library_is_the_browser_sdks_when_it_names_itself() {
        let with = |library: Value| {
            let context = Context::new(Map::from_iter([("library".to_owned(), library)]));
            serde_json::to_value(&context).unwrap()["library"].clone()
        };
        let sdk = json!({"name": "@produktly/segment-browser", "version": "1.0.0"});
        assert_eq!(with(sdk.clone()), sdk);
        let ours = json!({"name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION")});
        for odd in [
            json!("x"),
            json!({"name": "x"}),
            json!({"name": "x", "version": 1}),
            json!({"name": "x", "version": "1", "more": 1}),
        ] {
            assert_eq!(with(odd.clone()), ours, "{odd}");
        }
        assert_eq!(serde_json::to_value(Context::new(Map::new())).unwrap()["library"], ours);
    }
}
