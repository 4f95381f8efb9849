//! The OpenAPI document served at `/openapi.json`. Routes and their schemas
//! come from the handlers' annotations (the routers are built from them, so
//! what is served is what is documented); the event schema comes from the
//! catalog.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{KnownFormat, OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::catalog::{self, PropertyType};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Produktly Segment source",
        description = "Guidance events in from the Produktly browser script; Segment `track` calls out.",
    ),
    tags(
        (name = "ingest", description = "Public; called from browsers with the workspace's ingest key."),
        (name = "admin", description = "The Produktly admin app; bearer token."),
        (name = "ops", description = "Health, readiness, metrics, this document."),
    ),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            INGEST_KEY_HEADER,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Produktly-Key",
                "The workspace's public ingest key.",
            ))),
        );
        components.add_security_scheme(
            INGEST_KEY_QUERY,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "key",
                "The ingest key, where a header cannot be set (sendBeacon).",
            ))),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

const INGEST_KEY_HEADER: &str = "ingest_key";
const INGEST_KEY_QUERY: &str = "ingest_key_query";
const ADMIN_TOKEN: &str = "admin_token";

/// Sets every operation's security from its tag, in one place rather than on
/// each handler: ingest takes the ingest key (header or query), admin the
/// bearer token, ops nothing.
pub fn secure_by_tag(document: &mut Document) {
    let requirement = |name: &str| SecurityRequirement::new(name, Vec::<String>::new());
    for item in document.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let tags = operation.tags.as_deref().unwrap_or_default();
            if tags.iter().any(|t| t == "ingest") {
                operation.security = Some(vec![requirement(INGEST_KEY_HEADER), requirement(INGEST_KEY_QUERY)]);
            } else if tags.iter().any(|t| t == "admin") {
                operation.security = Some(vec![requirement(ADMIN_TOKEN)]);
            }
        }
    }
}

/// An event of the catalog: one variant per event, with its required and
/// optional properties and their types.
pub struct CatalogEvent;

impl ToSchema for CatalogEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Event")
    }
}

impl PartialSchema for CatalogEvent {
    fn schema() -> RefOr<Schema> {
        let mut variants = OneOfBuilder::new().description(Some(
            "A guidance event. Besides the fields below, `messageId` (the client's id, kept as Segment's), \
             `userId` and/or `anonymousId` (one is required), `timestamp` and `sentAt` (ISO-8601, browser clock) \
             and `context` (`page`, `locale`, ...) may be given. Properties beyond the catalog's are forwarded.",
        ));
        for event in catalog::EVENTS {
            let mut properties = ObjectBuilder::new();
            for (property, required) in event.properties() {
                properties = properties.property(property.name, property_schema(property.kind, property.description));
                if required {
                    properties = properties.required(property.name);
                }
            }
            let string = || ObjectBuilder::new().schema_type(Type::String);
            let variant = ObjectBuilder::new()
                .title(Some(event.name))
                .description(Some(event.description))
                .property("event", string().enum_values(Some([event.name])))
                .required("event")
                .property("messageId", string().max_length(Some(99)))
                .property("userId", string().max_length(Some(255)))
                .property("anonymousId", string().max_length(Some(255)))
                .property("timestamp", string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))))
                .property("sentAt", string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))))
                .property("properties", properties.additional_properties(Some(AdditionalProperties::FreeForm(true))))
                .property(
                    "context",
                    ObjectBuilder::new().additional_properties(Some(AdditionalProperties::FreeForm(true))),
                );
            variants = variants.item(variant);
        }
        RefOr::T(Schema::OneOf(variants.build()))
    }
}

fn property_schema(kind: PropertyType, description: &str) -> ObjectBuilder {
    let described = |builder: ObjectBuilder| builder.description(Some(format!("{description}. {}", kind.describe())));
    match kind {
        PropertyType::Id => {
            described(ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Number])))
        }
        PropertyType::Text => described(ObjectBuilder::new().schema_type(Type::String)),
        PropertyType::Count => described(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0))),
        PropertyType::Score => {
            described(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(10)))
        }
        PropertyType::Url => {
            described(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::Custom("uri".into()))))
        }
    }
}
