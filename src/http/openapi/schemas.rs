//! The schemas the handlers share and those written by hand: the catalog's
//! events (with the identity rule), the batch, ids, times, and `null` where
//! the server takes it as absent.

use std::borrow::Cow;

use serde_json::json;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::delivery::segment::MAX_MESSAGE_ID_CHARS;
use crate::domain::MAX_ID_CHARS;
use crate::domain::catalog::{self, PropertyType};

/// The schema of a value that may also be `null` (taken as absent).
pub fn nullable(schema: ObjectBuilder) -> ObjectBuilder {
    let mut schema = schema.build();
    schema.schema_type = with_null(schema.schema_type);
    schema.into()
}

pub fn nullable_array(schema: ArrayBuilder) -> ArrayBuilder {
    let mut schema = schema.build();
    schema.schema_type = with_null(schema.schema_type);
    schema.into()
}

fn with_null(schema_type: SchemaType) -> SchemaType {
    match schema_type {
        SchemaType::Type(single) => SchemaType::from_iter([single, Type::Null]),
        SchemaType::Array(mut types) => {
            types.push(Type::Null);
            SchemaType::Array(types)
        }
        SchemaType::AnyValue => SchemaType::AnyValue,
    }
}

/// A `userId` or `anonymousId`: a string (empty counts as absent) or a number.
fn ingest_id() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Number])).max_length(Some(MAX_ID_CHARS))
}

/// An id that counts: a number, or a string that is not empty.
pub fn present_ingest_id() -> ObjectBuilder {
    ingest_id().min_length(Some(1))
}

/// An RFC 3339 time, or `null`. (As `type: [string, null]` beside `format`,
/// Schemathesis reads the format as optional; a `oneOf` keeps it.)
pub fn date_time() -> OneOfBuilder {
    let time =
        ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
    OneOfBuilder::new().item(time).item(ObjectBuilder::new().schema_type(Type::Null))
}

/// An event of the catalog: one variant per event, with its required and
/// optional properties and their types, and the identity rule on top.
pub struct CatalogEvent;

impl ToSchema for CatalogEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Event")
    }
}

impl PartialSchema for CatalogEvent {
    fn schema() -> RefOr<Schema> {
        let mut variants = OneOfBuilder::new().description(Some(
            "One of the catalog's events, by `event`. `messageId` is the client's id, kept as Segment's \
             (generated when absent or empty). `timestamp` and `sentAt` are the browser's clock. Properties \
             beyond the catalog's are forwarded, as are fields of `context`. `null` counts as absent. \
             Beyond what this schema says: the event is at most 32 KB as a Segment message, and its JSON at \
             most `ingest.max_json_depth` deep, with strings of at most `ingest.max_string_bytes` bytes, \
             objects of at most `ingest.max_object_keys` keys and no key twice.",
        ));
        for event in catalog::EVENTS {
            variants = variants.item(variant(event));
        }
        let schema = AllOfBuilder::new().item(identity_rule()).item(variants).examples([example_event()]);
        RefOr::T(Schema::AllOf(schema.build()))
    }
}

fn example_event() -> serde_json::Value {
    json!({
        "event": "tour_step", "userId": "customer-user-42", "anonymousId": "a1b2c3",
        "timestamp": "2026-11-29T10:00:00.000Z", "sentAt": "2026-11-29T10:00:01.000Z",
        "properties": {"tour_id": "t_1", "step_id": "s_3", "step_index": 2},
        "context": {"page": {"url": "https://app.example.com/start"}, "locale": "en-US"}
    })
}

/// At least one of `userId` and `anonymousId` counts (see `present_ingest_id`).
fn identity_rule() -> AnyOfBuilder {
    let having = |field: &str| ObjectBuilder::new().property(field, present_ingest_id()).required(field);
    AnyOfBuilder::new()
        .description(Some("`missing_identity` unless `userId` or `anonymousId` is a number or a non-empty string."))
        .item(having("userId"))
        .item(having("anonymousId"))
}

fn variant(event: &catalog::Event) -> ObjectBuilder {
    let mut properties = ObjectBuilder::new().additional_properties(Some(AdditionalProperties::FreeForm(true)));
    for (property, required) in event.properties() {
        let schema = property_schema(property.kind).description(Some(format!(
            "{}. {}",
            property.description,
            property.kind.describe()
        )));
        properties = if required {
            properties.property(property.name, schema).required(property.name)
        } else {
            properties.property(property.name, nullable(schema))
        };
    }
    let free_object = || ObjectBuilder::new().additional_properties(Some(AdditionalProperties::FreeForm(true)));
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let context = free_object()
        .property("page", nullable(free_object()))
        .property("locale", nullable(string()))
        .description(Some("Forwarded as Segment's `context`; `userAgent` and `ip` are set by the service."));
    let variant = ObjectBuilder::new()
        .title(Some(event.name))
        .description(Some(event.description))
        .property("event", string().enum_values(Some([event.name])))
        .required("event")
        .property("messageId", nullable(string().max_length(Some(MAX_MESSAGE_ID_CHARS))))
        .property("userId", nullable(ingest_id()))
        .property("anonymousId", nullable(ingest_id()))
        .property("timestamp", date_time())
        .property("sentAt", date_time())
        .property("context", nullable(context));
    // Without `properties`, an event with required properties misses them.
    if event.required.is_empty() {
        variant.property("properties", nullable(properties))
    } else {
        variant.property("properties", properties).required("properties")
    }
}

fn property_schema(kind: PropertyType) -> ObjectBuilder {
    let typed = |kind: Type| ObjectBuilder::new().schema_type(kind);
    match kind {
        PropertyType::Id => {
            ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Number])).min_length(Some(1))
        }
        PropertyType::Text => typed(Type::String),
        PropertyType::Count => typed(Type::Integer).minimum(Some(0)).maximum(Some(u64::MAX)),
        PropertyType::Score => typed(Type::Integer).minimum(Some(0)).maximum(Some(catalog::MAX_SCORE)),
        PropertyType::Url => typed(Type::String).pattern(Some(catalog::URL.source())),
    }
}

/// The body of `/v1/batch`.
pub struct BatchRequest;

impl ToSchema for BatchRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("BatchRequest")
    }
}

impl PartialSchema for BatchRequest {
    fn schema() -> RefOr<Schema> {
        // Each event stands alone: those that are not valid are listed in the
        // answer's `rejected`, the others stored. So the batch is valid when
        // one of its items is an `Event` (`contains`; utoipa has no builder
        // for it, and extensions are written into the schema object as they are).
        let at_least_one_event = Extensions::from_iter([("contains", json!({"$ref": "#/components/schemas/Event"}))]);
        let events = ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(SchemaType::AnyValue))
            .min_items(Some(1))
            .extensions(Some(at_least_one_event))
            .description(Some(
                "Events (see `Event`), at most `ingest.max_batch_events`; at least one must be valid, and those \
                 that are not are answered in `rejected` with their index.",
            ));
        let batch = ObjectBuilder::new()
            .examples([json!({"batch": [example_event()], "sentAt": "2026-11-29T10:00:01.000Z"})])
            .property("batch", events)
            .required("batch")
            .property("sentAt", date_time().description(Some("The browser's clock when it sent the batch.")));
        RefOr::T(Schema::Object(batch.build()))
    }
}
