//! One browser event → a queued Segment `track` message, or the reason why not.
//!
//! Checks the event against the catalog, picks the identity, corrects the
//! browser's clock to the server's and builds the message's `context`.

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, de};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::delivery::segment::{self, Context, TrackMessage};
use crate::domain::catalog;
use crate::domain::pattern::shown;
use crate::domain::{MAX_ID_CHARS, WorkspaceId};
use crate::http::error::{self, EventError, EventErrorCode as Code};
use crate::http::openapi::{date_time, present_ingest_id};
use crate::store::{IdentityLink, NewEvent};

/// What the request adds to each of its events.
#[derive(Clone, Debug)]
pub struct Envelope<'a> {
    pub workspace_id: &'a WorkspaceId,
    /// The server's clock when the request arrived.
    pub received_at: DateTime<Utc>,
    /// The batch's `sentAt`, used for events without their own.
    pub sent_at: Option<DateTime<Utc>>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<IpAddr>,
    /// The browser's preferred language, for events without `context.locale`.
    pub locale: Option<&'a str>,
    /// Properties the workspace leaves out of every event.
    pub omit_properties: &'a [String],
}

/// An event ready to queue, and the identity link it carries, if any.
#[derive(Debug)]
pub struct Accepted {
    /// Its catalog name.
    pub name: &'static str,
    pub event: NewEvent,
    pub identity: Option<IdentityLink>,
}

/// Who the event is about. At least one of the two is set.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
}

pub fn parse_event(value: Value, envelope: &Envelope) -> Result<Accepted, EventError> {
    let Value::Object(mut fields) = value else {
        return Err(EventError::new(Code::InvalidEvent, None, "an event must be a JSON object".into()));
    };
    let name = event_name(&fields)?;
    let definition = catalog::find_event(name).ok_or_else(|| {
        EventError::new(Code::UnknownEvent, Some("event"), format!("{:?} is not an event of the catalog", shown(name)))
    })?;
    let identity = parse_identity(&fields)?;
    let message_id = match optional_string(&fields, "messageId", segment::MAX_MESSAGE_ID_CHARS)? {
        Some(id) => id,
        // Time-ordered (v7): the queue's unique (workspace, messageId) index
        // then grows at its end instead of at random pages (about 2× the
        // commit's cost on SQLite for batches of 100 with random v4 ids).
        None => Uuid::now_v7().to_string(),
    };
    let timestamp = time(fields.get("timestamp"), "timestamp")?;
    let sent_at = time(fields.get("sentAt"), "sentAt")?.or(envelope.sent_at);
    let timestamp = corrected_timestamp(envelope.received_at, timestamp, sent_at);
    let mut properties = catalog_properties(definition, take_object(&mut fields, "properties")?)?;
    for omitted in envelope.omit_properties {
        properties.remove(omitted);
    }
    let context = context(take_object(&mut fields, "context")?, envelope)?;

    let timestamp = timestamp.to_rfc3339_opts(SecondsFormat::Millis, true);
    let anonymous_id = identity.anonymous_id.as_deref();
    let payload =
        TrackMessage::new(definition.name, &message_id, anonymous_id, &timestamp, &properties, &context).to_json();
    let size = segment::sent_len(&payload, identity.user_id.as_deref());
    if size > segment::MAX_MESSAGE_BYTES {
        return Err(EventError::new(
            Code::MessageTooLarge,
            None,
            format!("the event is {size} bytes as a Segment message; the limit is {}", segment::MAX_MESSAGE_BYTES),
        ));
    }

    let received_at = envelope.received_at.timestamp_millis();
    let identity_link = identity_link(envelope.workspace_id, &identity, received_at);
    let event = NewEvent {
        workspace_id: envelope.workspace_id.clone(),
        message_id,
        user_id: identity.user_id,
        anonymous_id: identity.anonymous_id,
        payload,
        received_at,
    };
    Ok(Accepted { name: definition.name, event, identity: identity_link })
}

// Each field is checked by the same rule as an event's.
/// Records that this browser's anonymous id belongs to that user.
#[derive(Deserialize, ToSchema)]
#[schema(examples(json!({"userId": "customer-user-42", "anonymousId": "a1b2c3"})))]
pub struct IdentifyRequest {
    #[serde(rename = "userId", default, deserialize_with = "user_id")]
    #[schema(required = true, schema_with = present_ingest_id)]
    user_id: Option<String>,
    #[serde(rename = "anonymousId", default, deserialize_with = "anonymous_id")]
    #[schema(required = true, schema_with = present_ingest_id)]
    anonymous_id: Option<String>,
    /// Checked, not used: a link takes the time it arrived.
    #[serde(rename = "sentAt", default, deserialize_with = "sent_at")]
    #[schema(value_type = Option<String>, schema_with = date_time)]
    _sent_at: Option<DateTime<Utc>>,
}

fn user_id<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    checked(field, |value| ingest_id(value, "userId"))
}

fn anonymous_id<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    checked(field, |value| ingest_id(value, "anonymousId"))
}

fn sent_at<'de, D: Deserializer<'de>>(field: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    checked(field, |value| time(value, "sentAt"))
}

/// Reads a field and applies `rule` to it, its error passed on as serde's.
fn checked<'de, T, D: Deserializer<'de>>(
    field: D,
    rule: impl FnOnce(Option<&Value>) -> Result<T, EventError>,
) -> Result<T, D::Error> {
    let value = Option::<Value>::deserialize(field)?;
    rule(value.as_ref()).map_err(|e| de::Error::custom(e.message))
}

/// The body of `/v1/identify`: both ids are required.
pub fn parse_identify(value: Value, workspace_id: &WorkspaceId, at: DateTime<Utc>) -> Result<IdentityLink, EventError> {
    if !value.is_object() {
        return Err(EventError::new(Code::InvalidEvent, None, "the body must be a JSON object".into()));
    }
    let request: IdentifyRequest = serde_path_to_error::deserialize(value).map_err(|e| {
        EventError::new(Code::InvalidField, error::field_at(e.path()).as_deref(), e.into_inner().to_string())
    })?;
    let (Some(user_id), Some(anonymous_id)) = (request.user_id, request.anonymous_id) else {
        return Err(EventError::new(Code::MissingIdentity, None, "identify needs both userId and anonymousId".into()));
    };
    Ok(IdentityLink { workspace_id: workspace_id.clone(), anonymous_id, user_id, at: at.timestamp_millis() })
}

/// An event with both ids tells which user the anonymous id belongs to.
fn identity_link(workspace_id: &WorkspaceId, identity: &Identity, at: i64) -> Option<IdentityLink> {
    let (Some(user_id), Some(anonymous_id)) = (&identity.user_id, &identity.anonymous_id) else {
        return None;
    };
    Some(IdentityLink {
        workspace_id: workspace_id.clone(),
        anonymous_id: anonymous_id.clone(),
        user_id: user_id.clone(),
        at,
    })
}

fn event_name(fields: &Map<String, Value>) -> Result<&str, EventError> {
    match fields.get("event") {
        Some(Value::String(name)) => Ok(name),
        None | Some(Value::Null) => {
            Err(EventError::new(Code::MissingField, Some("event"), "the event name (`event`) is missing".into()))
        }
        Some(_) => Err(EventError::new(Code::InvalidField, Some("event"), "`event` must be a string".into())),
    }
}

/// `userId` and `anonymousId`: strings (numbers are taken as strings); an empty
/// one counts as absent; at least one is required.
fn parse_identity(fields: &Map<String, Value>) -> Result<Identity, EventError> {
    let user_id = ingest_id(fields.get("userId"), "userId")?;
    let anonymous_id = ingest_id(fields.get("anonymousId"), "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(EventError::new(Code::MissingIdentity, None, "an event needs a userId or an anonymousId".into()));
    }
    Ok(Identity { user_id, anonymous_id })
}

fn ingest_id(value: Option<&Value>, field: &'static str) -> Result<Option<String>, EventError> {
    let id = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(EventError::new(Code::InvalidField, Some(field), format!("`{field}` must be a string")));
        }
    };
    check_length(field, &id, MAX_ID_CHARS)?;
    Ok(Some(id).filter(|id| !id.is_empty()))
}

fn optional_string(
    fields: &Map<String, Value>,
    field: &'static str,
    max_chars: usize,
) -> Result<Option<String>, EventError> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => check_length(field, s, max_chars).map(|()| Some(s.clone())),
        Some(_) => Err(EventError::new(Code::InvalidField, Some(field), format!("`{field}` must be a string"))),
    }
}

fn check_length(field: &'static str, value: &str, max_chars: usize) -> Result<(), EventError> {
    if value.chars().count() > max_chars {
        return Err(EventError::new(
            Code::InvalidField,
            Some(field),
            format!("`{field}` must be at most {max_chars} characters"),
        ));
    }
    Ok(())
}

/// An RFC 3339 / ISO-8601 time such as `2026-11-29T10:00:00.000Z`.
pub fn time(value: Option<&Value>, field: &'static str) -> Result<Option<DateTime<Utc>>, EventError> {
    let invalid =
        || EventError::new(Code::InvalidField, Some(field), format!("`{field}` must be an ISO-8601 timestamp"));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            DateTime::parse_from_rfc3339(s).map(|t| Some(t.with_timezone(&Utc))).map_err(|_| invalid())
        }
        Some(_) => Err(invalid()),
    }
}

/// The event time on the server's clock. The browser's clock may be off by any
/// amount; the delay between the event and its sending (both on the browser's
/// clock) is not, so the event happened that long before the request arrived.
/// Without `sentAt` the browser's time is all there is. Never in the future.
pub fn corrected_timestamp(
    received_at: DateTime<Utc>,
    timestamp: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let corrected = match (timestamp, sent_at) {
        (None, _) => received_at,
        (Some(timestamp), Some(sent_at)) => received_at - (sent_at - timestamp),
        (Some(timestamp), None) => timestamp,
    };
    corrected.min(received_at)
}

fn take_object(fields: &mut Map<String, Value>, field: &'static str) -> Result<Map<String, Value>, EventError> {
    match fields.remove(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(EventError::new(Code::InvalidField, Some(field), format!("`{field}` must be an object"))),
    }
}

/// The event's properties with the catalog's checked (and ids normalized to
/// strings); other properties are forwarded unchanged.
fn catalog_properties(
    event: &catalog::Event,
    mut properties: Map<String, Value>,
) -> Result<Map<String, Value>, EventError> {
    // Named only when refused: no allocation per property of a valid event.
    let field = |name: &str| format!("properties.{name}");
    for (property, required) in event.properties() {
        match properties.get(property.name) {
            None | Some(Value::Null) if required => {
                return Err(EventError::new(
                    Code::MissingProperty,
                    Some(&field(property.name)),
                    format!("`{}` requires the property `{}`", event.name, property.name),
                ));
            }
            None | Some(Value::Null) => {}
            Some(value) => {
                let normalized = property.kind.normalize(value).ok_or_else(|| {
                    EventError::new(
                        Code::InvalidProperty,
                        Some(&field(property.name)),
                        format!("`{}` of `{}` must be {}", property.name, event.name, property.kind.describe()),
                    )
                })?;
                properties.insert(property.name.to_owned(), normalized);
            }
        }
    }
    Ok(properties)
}

/// The browser's context (`page`, `locale`, anything else it sent) with the
/// fields this source owns: `userAgent` and `ip` from the request.
fn context(fields: Map<String, Value>, envelope: &Envelope) -> Result<Context, EventError> {
    if fields.get("page").is_some_and(|page| !page.is_object() && !page.is_null()) {
        return Err(EventError::new(
            Code::InvalidField,
            Some("context.page"),
            "`context.page` must be an object".into(),
        ));
    }
    if fields.get("locale").is_some_and(|locale| !locale.is_string() && !locale.is_null()) {
        return Err(EventError::new(
            Code::InvalidField,
            Some("context.locale"),
            "`context.locale` must be a string".into(),
        ));
    }
    let mut context = Context::new(fields);
    if let Some(locale) = envelope.locale {
        context.set_default("locale", json!(locale));
    }
    if let Some(user_agent) = envelope.user_agent {
        context.set("userAgent", json!(user_agent));
    }
    if let Some(ip) = envelope.ip {
        context.set("ip", json!(ip.to_string()));
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    static WORKSPACE: std::sync::LazyLock<WorkspaceId> = std::sync::LazyLock::new(|| WorkspaceId::stored("ws".into()));

    fn envelope() -> Envelope<'static> {
        Envelope {
            workspace_id: &WORKSPACE,
            received_at: at("2026-11-29T10:00:05Z"),
            sent_at: None,
            user_agent: Some("Mozilla/5.0"),
            ip: Some("203.0.113.9".parse().unwrap()),
            locale: Some("en-US"),
            omit_properties: &[],
        }
    }

    fn payload(accepted: &Accepted) -> Value {
        serde_json::from_str(&accepted.event.payload).unwrap()
    }

    #[test]
    fn browser_clock_skew_is_removed() {
        // The browser's clock is 1 hour ahead; the event happened 2 s before sending.
        let received = at("2026-11-29T10:00:05Z");
        let ts = at("2026-11-29T11:00:01Z");
        let sent = at("2026-11-29T11:00:03Z");
        assert_eq!(corrected_timestamp(received, Some(ts), Some(sent)), received - TimeDelta::seconds(2));
        assert_eq!(corrected_timestamp(received, None, Some(sent)), received);
        assert_eq!(corrected_timestamp(received, Some(ts), None), received, "never in the future");
        let past = at("2026-11-29T09:00:00Z");
        assert_eq!(corrected_timestamp(received, Some(past), None), past);
    }

    #[test]
    fn a_valid_event_becomes_a_track_message() {
        let value = json!({
            "event": "tour_step", "messageId": "m-1", "anonymousId": "a1", "userId": 42,
            "timestamp": "2026-11-29T11:00:01Z", "sentAt": "2026-11-29T11:00:03Z",
            "properties": {"tour_id": 7, "step_id": "s", "step_index": 2, "custom": [1]},
            "context": {"page": {"url": "https://app.example.com/x"}, "ip": "6.6.6.6"}
        });
        let accepted = parse_event(value, &envelope()).unwrap();
        let message = payload(&accepted);
        assert_eq!(message["type"], "track");
        assert_eq!(message["event"], "tour_step");
        assert_eq!(message["messageId"], "m-1");
        assert_eq!(message["timestamp"], "2026-11-29T10:00:03.000Z");
        assert_eq!(message["properties"]["tour_id"], "7");
        assert_eq!(message["properties"]["custom"], json!([1]));
        assert_eq!(message["context"]["ip"], "203.0.113.9");
        assert_eq!(message["context"]["userAgent"], "Mozilla/5.0");
        assert_eq!(message["context"]["locale"], "en-US");
        assert_eq!(message["context"]["page"]["url"], "https://app.example.com/x");
        assert!(message.get("userId").is_none(), "userId is added at delivery");
        assert_eq!(accepted.event.user_id.as_deref(), Some("42"));
        let link = accepted.identity.unwrap();
        assert_eq!((link.anonymous_id.as_str(), link.user_id.as_str()), ("a1", "42"));
    }

    #[test]
    fn each_rule_has_its_code_and_field() {
        let cases = [
            (json!([]), Code::InvalidEvent, None),
            (json!({"userId": "u"}), Code::MissingField, Some("event")),
            (json!({"event": 1, "userId": "u"}), Code::InvalidField, Some("event")),
            (json!({"event": "nope", "userId": "u"}), Code::UnknownEvent, Some("event")),
            (json!({"event": "tour_start", "properties": {"tour_id": "t"}}), Code::MissingIdentity, None),
            (json!({"event": "tour_start", "userId": "", "properties": {"tour_id": "t"}}), Code::MissingIdentity, None),
            (json!({"event": "tour_start", "userId": "u"}), Code::MissingProperty, Some("properties.tour_id")),
            (
                json!({"event": "tour_step", "userId": "u", "properties": {"tour_id": "t", "step_id": "s", "step_index": "2"}}),
                Code::InvalidProperty,
                Some("properties.step_index"),
            ),
            (json!({"event": "tour_start", "userId": "u", "properties": 3}), Code::InvalidField, Some("properties")),
            (
                json!({"event": "tour_start", "userId": "u", "timestamp": "yesterday", "properties": {"tour_id": "t"}}),
                Code::InvalidField,
                Some("timestamp"),
            ),
            (
                json!({"event": "tour_start", "userId": "u", "messageId": "x".repeat(100), "properties": {"tour_id": "t"}}),
                Code::InvalidField,
                Some("messageId"),
            ),
            (
                json!({"event": "tour_start", "userId": ["u"], "properties": {"tour_id": "t"}}),
                Code::InvalidField,
                Some("userId"),
            ),
            (
                json!({"event": "tour_start", "userId": "u", "properties": {"tour_id": "t", "big": "x".repeat(33_000)}}),
                Code::MessageTooLarge,
                None,
            ),
        ];
        for (value, code, field) in cases {
            let error = parse_event(value.clone(), &envelope()).unwrap_err();
            assert_eq!((error.code, error.field.as_deref()), (code, field), "{value}");
        }
    }

    #[test]
    fn a_message_id_is_generated_when_missing() {
        let value = json!({"event": "tour_start", "anonymousId": "a", "properties": {"tour_id": "t"}});
        let accepted = parse_event(value, &envelope()).unwrap();
        assert_eq!(accepted.event.message_id.len(), 36);
        assert!(accepted.identity.is_none());
    }
}
