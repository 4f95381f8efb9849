//! The OpenAPI document served at `/openapi.json`, exactly as strict as the
//! server. Routes and their schemas come from the handlers' annotations (the
//! routers are built from them, so what is served is what is documented); a
//! rule on strings is a [`Pattern`](crate::domain::pattern::Pattern) both the handler
//! and the document use; the event schema comes from the catalog. What applies
//! across operations is added here, in one place: security and error answers
//! by tag, the links a stateful client follows, the configured batch limit.

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::http::error::{ApiError, ErrorBody};

mod schemas;

pub use schemas::{BatchRequest, CatalogEvent, date_time, nullable, nullable_array, present_ingest_id};

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
        (name = "sdk", description = "The browser SDK, for customers' pages to load."),
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// The whole document: the routers' parts, then what applies across them.
pub fn document(parts: impl IntoIterator<Item = Document>, max_batch_events: usize) -> Document {
    let mut document = ApiDoc::openapi();
    for part in parts {
        document.merge(part);
    }
    secure_by_tag(&mut document);
    add_error_answers(&mut document);
    link_operations(&mut document);
    limit_batch(&mut document, max_batch_events);
    document
}

fn operations(document: &mut Document) -> impl Iterator<Item = &mut Operation> {
    document.paths.paths.values_mut().flat_map(|item| {
        [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
    })
}

fn has_tag(operation: &Operation, tag: &str) -> bool {
    operation.tags.as_deref().unwrap_or_default().iter().any(|t| t == tag)
}

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
fn secure_by_tag(document: &mut Document) {
    let requirement = |name: &str| SecurityRequirement::new(name, Vec::<String>::new());
    for operation in operations(document) {
        if has_tag(operation, "ingest") {
            operation.security = Some(vec![requirement(INGEST_KEY_HEADER), requirement(INGEST_KEY_QUERY)]);
        } else if has_tag(operation, "admin") {
            operation.security = Some(vec![requirement(ADMIN_TOKEN)]);
        }
    }
}

/// An error answer shared by many operations: its status, the name of its
/// entry under `components/responses`, and when it comes. All have the body
/// `ErrorBody`.
struct ErrorAnswer {
    status: &'static str,
    name: &'static str,
    description: &'static str,
}

const fn error(status: &'static str, name: &'static str, description: &'static str) -> ErrorAnswer {
    ErrorAnswer { status, name, description }
}

impl ErrorAnswer {
    /// The description, with the codes the service answers this status with.
    fn described(&self) -> String {
        let status = axum::http::StatusCode::from_bytes(self.status.as_bytes()).expect("a status code");
        let codes: Vec<String> = ApiError::codes(status).iter().map(|code| format!("`{code}`")).collect();
        format!("{} Codes: {}.", self.description, codes.join(", "))
    }
}

const ERROR_ANSWERS: &[ErrorAnswer] = &[
    error(
        "400",
        "BadRequest",
        "The request is invalid; `code` says how and `field` where (`no_valid_events` lists each event's in `rejected`).",
    ),
    error("401", "Unauthorized", "No valid ingest key (ingest) or admin token (admin)."),
    error("403", "Forbidden", "The workspace does not accept events from this origin."),
    error("404", "NotFound", "No such workspace (or integration), or no such path."),
    error("405", "MethodNotAllowed", "The path does not serve this method; `Allow` lists those it does."),
    error(
        "408",
        "RequestTimeout",
        "The request body did not arrive within `ingest.body_timeout_ms`, or the request head within \
         `http.header_timeout_ms` (the connection is then closed).",
    ),
    error(
        "413",
        "BodyTooLarge",
        "The body is over `ingest.max_body_bytes` (or, inflated, over `ingest.max_decompressed_bytes`).",
    ),
    error(
        "415",
        "UnsupportedMediaType",
        "The content type is not `application/json` or `text/plain`, or the encoding not gzip.",
    ),
    error("429", "RateLimited", "Retry after `Retry-After` seconds."),
    error("503", "Unavailable", "Nothing was stored; retry after `Retry-After` seconds."),
];

/// The shared error answers each kind of operation can give.
fn error_statuses(operation: &Operation) -> &'static [&'static str] {
    if has_tag(operation, "ingest") {
        &["400", "401", "403", "405", "408", "413", "415", "429", "503"]
    } else if has_tag(operation, "admin") {
        &["400", "401", "404", "405", "408", "413", "429", "503"]
    } else {
        &["405", "408", "413"]
    }
}

/// Documents the shared error answers once, under `components/responses`, and
/// refers each operation to those it can give (keeping its own description of
/// a status where it has one).
fn add_error_answers(document: &mut Document) {
    for operation in operations(document) {
        for status in error_statuses(operation) {
            let name = ERROR_ANSWERS.iter().find(|e| e.status == *status).expect("a shared error answer").name;
            operation
                .responses
                .responses
                .entry((*status).to_owned())
                .or_insert_with(|| Ref::from_response_name(name).into());
        }
    }
    let components = document.components.get_or_insert_with(Default::default);
    for answer in ERROR_ANSWERS {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(ErrorBody::name()))).build();
        let mut response = ResponseBuilder::new().description(answer.described()).content("application/json", content);
        let seconds = || ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
        response = match answer.status {
            "429" | "503" => response.header(
                "Retry-After",
                HeaderBuilder::new().schema(seconds()).description(Some("Seconds to wait before retrying.")).build(),
            ),
            "405" => response.header(
                "Allow",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some("The methods the path serves."))
                    .build(),
            ),
            _ => response,
        };
        components.responses.insert(answer.name.to_owned(), response.build().into());
    }
}

/// Where a link finds the workspace id: the answer's body, or the request's path.
const BODY_ID: &str = "$response.body#/id";
const PATH_ID: &str = "$request.path.id";

/// How a stateful client walks the admin API: once `from` answered `status`,
/// `to` can be called for the same workspace. Create a workspace, put its
/// integration, test it, read its status, its dead letters, replay them.
/// (No link leads to `deleteSegmentIntegration`: after it, the integration's
/// `GET` still answers, with `configured: false`.)
const LINKS: &[(&str, &str, &str, &str)] = &[
    ("createWorkspace", "201", "getWorkspace", BODY_ID),
    ("createWorkspace", "201", "putSegmentIntegration", BODY_ID),
    ("createWorkspace", "201", "getSegmentIntegration", BODY_ID),
    ("createWorkspace", "201", "rotateIngestKey", BODY_ID),
    ("createWorkspace", "201", "listDeadLetters", BODY_ID),
    ("putWorkspace", "200", "getWorkspace", BODY_ID),
    ("putWorkspace", "200", "putSegmentIntegration", BODY_ID),
    ("putWorkspace", "201", "getWorkspace", BODY_ID),
    ("putWorkspace", "201", "putSegmentIntegration", BODY_ID),
    ("putSegmentIntegration", "200", "testSegmentIntegration", PATH_ID),
    ("putSegmentIntegration", "200", "getSegmentIntegration", PATH_ID),
    ("putSegmentIntegration", "200", "listDeadLetters", PATH_ID),
    ("testSegmentIntegration", "200", "getSegmentIntegration", PATH_ID),
    ("getSegmentIntegration", "200", "listDeadLetters", PATH_ID),
    ("listDeadLetters", "200", "replayDeadLetters", PATH_ID),
    ("replayDeadLetters", "200", "getSegmentIntegration", PATH_ID),
];

fn link_operations(document: &mut Document) {
    for (from, status, to, id) in LINKS {
        let operation = operations(document)
            .find(|o| o.operation_id.as_deref() == Some(*from))
            .unwrap_or_else(|| panic!("LINKS names {from}, an operation the document does not have"));
        let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) else {
            panic!("LINKS names answer {status} of {from}, which the document does not have");
        };
        // utoipa 5.5 writes a link's `operationId` in snake case; as an
        // extension (written into the link as it is) it keeps its name.
        let target = Extensions::from_iter([("operationId", *to)]);
        let link = LinkBuilder::new().parameter("id", *id).extensions(Some(target)).build();
        response.links.insert((*to).to_owned(), link.into());
    }
}

/// The batch's `maxItems` is a setting.
fn limit_batch(document: &mut Document, max_batch_events: usize) {
    let schemas = &mut document.components.get_or_insert_with(Default::default).schemas;
    if let Some(RefOr::T(Schema::Object(batch))) = schemas.get_mut(BatchRequest::name().as_ref())
        && let Some(RefOr::T(Schema::Array(events))) = batch.properties.get_mut("batch")
    {
        events.max_items = Some(max_batch_events);
    }
}
