//! The errors the HTTP API answers with, and their one mapping to a status
//! and the JSON body `{"error": {"code", "message", ...}}`.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{InvalidOrigins, InvalidWorkspaceId, WorkspaceId};
use crate::store::StoreError;

/// Seconds a client is asked to wait after a `503`.
const RETRY_AFTER_UNAVAILABLE: u64 = 1;

/// Why one event was refused; in a batch, the others may still be accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema, thiserror::Error)]
#[error("{message}")]
pub struct EventError {
    /// e.g. `unknown_event`, `missing_property`, `invalid_property`, `missing_identity`.
    #[schema(value_type = String)]
    pub code: EventErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventErrorCode {
    InvalidEvent,
    MissingField,
    InvalidField,
    UnknownEvent,
    MissingProperty,
    InvalidProperty,
    MissingIdentity,
    MessageTooLarge,
    TooDeep,
    ValueTooLong,
    DuplicateKey,
    TooManyKeys,
}

impl EventErrorCode {
    pub const ALL: [EventErrorCode; 12] = [
        EventErrorCode::InvalidEvent,
        EventErrorCode::MissingField,
        EventErrorCode::InvalidField,
        EventErrorCode::UnknownEvent,
        EventErrorCode::MissingProperty,
        EventErrorCode::InvalidProperty,
        EventErrorCode::MissingIdentity,
        EventErrorCode::MessageTooLarge,
        EventErrorCode::TooDeep,
        EventErrorCode::ValueTooLong,
        EventErrorCode::DuplicateKey,
        EventErrorCode::TooManyKeys,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventErrorCode::InvalidEvent => "invalid_event",
            EventErrorCode::MissingField => "missing_field",
            EventErrorCode::InvalidField => "invalid_field",
            EventErrorCode::UnknownEvent => "unknown_event",
            EventErrorCode::MissingProperty => "missing_property",
            EventErrorCode::InvalidProperty => "invalid_property",
            EventErrorCode::MissingIdentity => "missing_identity",
            EventErrorCode::MessageTooLarge => "message_too_large",
            EventErrorCode::TooDeep => "too_deep",
            EventErrorCode::ValueTooLong => "value_too_long",
            EventErrorCode::DuplicateKey => "duplicate_key",
            EventErrorCode::TooManyKeys => "too_many_keys",
        }
    }
}

impl Serialize for EventErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl EventError {
    pub fn new(code: EventErrorCode, field: Option<&str>, message: String) -> EventError {
        EventError { code, message, field: field.map(str::to_owned) }
    }
}

/// An event refused within a batch, located by its index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct IndexedEventError {
    pub index: usize,
    #[serde(flatten)]
    pub error: EventError,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(EventError),
    #[error("none of the {} events in the batch is valid", .0.len())]
    NoValidEvents(Vec<IndexedEventError>),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("the batch holds {count} events; at most {max} are accepted per request")]
    TooManyEvents { count: usize, max: usize },
    #[error("send the workspace's ingest key in the X-Produktly-Key header or the `key` query parameter")]
    MissingIngestKey,
    #[error("the ingest key is not valid")]
    InvalidIngestKey,
    #[error("the body is larger than the limit of {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the request head did not arrive in time")]
    HeaderTimeout,
    #[error("the Content-Type must be application/json or text/plain")]
    UnsupportedMediaType,
    #[error("the Content-Encoding {0:?} is not supported; use gzip or none")]
    UnsupportedEncoding(String),
    #[error("the body is not valid gzip")]
    InvalidGzip,
    #[error("too many events are waiting to be stored; retry shortly")]
    QueueFull,
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("this workspace does not accept events from this origin")]
    OriginNotAllowed,
    #[error("the event store is unavailable; retry shortly")]
    StoreUnavailable(#[source] Arc<StoreError>),
    #[error("the store is unavailable or its schema is not current")]
    NotReady,
    #[error("send a valid admin token as `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    #[error("workspace {0:?} already exists; use PUT to update it")]
    WorkspaceExists(WorkspaceId),
    #[error("write_key is required to set up the integration")]
    WriteKeyRequired,
    #[error("{message}")]
    InvalidRequest { field: Option<String>, message: String },
    #[error("an internal error occurred")]
    Internal(String),
}

/// The top-level field a serde error happened in, as a request body names it.
pub fn field_at(path: &serde_path_to_error::Path) -> Option<String> {
    match path.iter().next() {
        Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
        _ => None,
    }
}

impl ApiError {
    /// A request the admin API refuses, naming the field at fault where there is one.
    pub fn invalid(field: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest { field: field.map(str::to_owned), message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_)
            | ApiError::NoValidEvents(_)
            | ApiError::InvalidJson(_)
            | ApiError::InvalidBody(_)
            | ApiError::TooManyEvents { .. }
            | ApiError::InvalidGzip
            | ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::MissingIngestKey | ApiError::InvalidIngestKey | ApiError::Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ApiError::BodyTimeout | ApiError::HeaderTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::WorkspaceExists(_) | ApiError::WriteKeyRequired => StatusCode::CONFLICT,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::QueueFull | ApiError::StoreUnavailable(_) | ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(e) => e.code.as_str(),
            ApiError::NoValidEvents(_) => "no_valid_events",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::TooManyEvents { .. } => "too_many_events",
            ApiError::MissingIngestKey => "missing_ingest_key",
            ApiError::InvalidIngestKey => "invalid_ingest_key",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnsupportedEncoding(_) => "unsupported_encoding",
            ApiError::InvalidGzip => "invalid_gzip",
            ApiError::QueueFull => "queue_full",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::HeaderTimeout => "header_timeout",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::NotReady => "not_ready",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::WorkspaceExists(_) => "workspace_exists",
            ApiError::WriteKeyRequired => "write_key_required",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Every code answered with `status`: the API document lists them from
    /// here rather than spelling them again.
    pub fn codes(status: StatusCode) -> Vec<&'static str> {
        let mut codes: Vec<&'static str> =
            Self::kinds().iter().filter(|e| e.status() == status).map(ApiError::code).collect();
        if status == StatusCode::BAD_REQUEST {
            codes.extend(EventErrorCode::ALL.map(EventErrorCode::as_str));
        }
        codes
    }

    /// One error of every kind but `Validation` (whose codes are
    /// `EventErrorCode::ALL`), with placeholder details.
    fn kinds() -> [ApiError; 24] {
        // A new variant fails to compile here until it is listed below too.
        let _listed = |e: &ApiError| match e {
            ApiError::Validation(_)
            | ApiError::NoValidEvents(_)
            | ApiError::InvalidJson(_)
            | ApiError::InvalidBody(_)
            | ApiError::TooManyEvents { .. }
            | ApiError::MissingIngestKey
            | ApiError::InvalidIngestKey
            | ApiError::BodyTooLarge(_)
            | ApiError::BodyTimeout
            | ApiError::HeaderTimeout
            | ApiError::UnsupportedMediaType
            | ApiError::UnsupportedEncoding(_)
            | ApiError::InvalidGzip
            | ApiError::QueueFull
            | ApiError::RateLimited { .. }
            | ApiError::OriginNotAllowed
            | ApiError::StoreUnavailable(_)
            | ApiError::NotReady
            | ApiError::Unauthorized
            | ApiError::NotFound(_)
            | ApiError::MethodNotAllowed
            | ApiError::WorkspaceExists(_)
            | ApiError::WriteKeyRequired
            | ApiError::InvalidRequest { .. }
            | ApiError::Internal(_) => {}
        };
        [
            ApiError::NoValidEvents(Vec::new()),
            ApiError::InvalidJson(String::new()),
            ApiError::InvalidBody(String::new()),
            ApiError::TooManyEvents { count: 0, max: 0 },
            ApiError::MissingIngestKey,
            ApiError::InvalidIngestKey,
            ApiError::BodyTooLarge(0),
            ApiError::BodyTimeout,
            ApiError::HeaderTimeout,
            ApiError::UnsupportedMediaType,
            ApiError::UnsupportedEncoding(String::new()),
            ApiError::InvalidGzip,
            ApiError::QueueFull,
            ApiError::RateLimited { retry_after_secs: 0 },
            ApiError::OriginNotAllowed,
            ApiError::StoreUnavailable(Arc::new(StoreError::RecentlyFailed)),
            ApiError::NotReady,
            ApiError::Unauthorized,
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::WorkspaceExists(WorkspaceId::generate()),
            ApiError::WriteKeyRequired,
            ApiError::InvalidRequest { field: None, message: String::new() },
            ApiError::Internal(String::new()),
        ]
    }

    pub(crate) fn body(&self) -> ErrorBody {
        let field = match self {
            ApiError::Validation(e) => e.field.clone(),
            ApiError::InvalidRequest { field, .. } => field.clone(),
            ApiError::WriteKeyRequired => Some("write_key".to_owned()),
            _ => None,
        };
        let rejected = match self {
            ApiError::NoValidEvents(rejected) => rejected.clone(),
            _ => Vec::new(),
        };
        ErrorBody { error: ErrorDetail { code: self.code(), message: self.to_string(), field }, rejected }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// With `no_valid_events`: why each event of the batch was refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<IndexedEventError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: what went wrong.
    pub code: &'static str,
    /// One human sentence.
    pub message: String,
    /// The field of the request at fault, where one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The answer to a path no route serves.
pub async fn no_such_endpoint() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// The answer to a method a route does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

impl From<EventError> for ApiError {
    fn from(error: EventError) -> ApiError {
        ApiError::Validation(error)
    }
}

impl From<InvalidWorkspaceId> for ApiError {
    fn from(_: InvalidWorkspaceId) -> ApiError {
        ApiError::invalid(Some("id"), WorkspaceId::RULE)
    }
}

impl From<InvalidOrigins> for ApiError {
    fn from(e: InvalidOrigins) -> ApiError {
        ApiError::invalid(Some("allowed_origins"), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::StoreUnavailable(Arc::new(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The cause goes to the log only; the client gets the opaque message.
            tracing::error!(code = self.code(), error = ?self, "request failed");
        }
        let retry_after = match self {
            ApiError::RateLimited { retry_after_secs } => Some(retry_after_secs),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_UNAVAILABLE),
            _ => None,
        };
        let mut response = (status, Json(self.body())).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
