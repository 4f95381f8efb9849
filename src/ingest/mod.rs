//! The public ingest API the browser calls: `POST /v1/track`, `/v1/batch` and
//! `/v1/identify`. Events are validated, then committed (group commit) before
//! the `202` is sent.

mod activity;
mod body;
pub mod committer;
mod cors;
pub mod event;
pub mod keys;
mod state;
mod strict_json;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity::{Outcome, bounded};
use crate::domain::time::now_millis;
use crate::http::error::{self, ApiError, IndexedEventError};
use crate::http::openapi::{BatchRequest, CatalogEvent};
use crate::metrics::{NOT_CONFIGURED, NOT_SELECTED, Reason, Status};
use crate::store::IngestTarget;
use body::JsonBody;
pub use body::read_first;
pub use cors::cors;
use event::{Envelope, IdentifyRequest, parse_event, parse_identify};
pub use state::{Ingest, IngestState};

/// A request body, or why it could not be read (recorded as the request's refusal).
type Body = Result<JsonBody, ApiError>;

const KEY_HEADER: &str = "x-produktly-key";
/// Longest user agent forwarded, in bytes.
const MAX_USER_AGENT: usize = 512;

/// The ingest routes and their part of the OpenAPI document.
pub fn router(state: IngestState) -> (Router<IngestState>, utoipa::openapi::OpenApi) {
    let (router, api) =
        OpenApiRouter::new().routes(routes!(track)).routes(routes!(batch)).routes(routes!(identify)).split_for_parts();
    let router = router
        .layer(middleware::from_fn_with_state(state, count_responses))
        .method_not_allowed_fallback(error::method_not_allowed);
    (router, api)
}

/// Counts the response by status, and the request as under way meanwhile
/// (the group commit waits for those under way, see [`committer`]).
async fn count_responses(State(app): State<IngestState>, request: Request, next: Next) -> Response {
    let _under_way = app.committer.arrival();
    let response = next.run(request).await;
    app.metrics.ingest_responses.inc_by(&Status { status: response.status().as_u16() }, 1);
    response
}

/// What ingest answers with `202`.
#[derive(Debug, Default, Serialize, ToSchema)]
struct Answer {
    /// Events committed to the queue.
    accepted: usize,
    /// Valid events not stored: the workspace has no enabled Segment
    /// integration, or does not forward these events.
    #[serde(skip_serializing_if = "Option::is_none")]
    discarded: Option<usize>,
    /// With `discarded`: `segment_not_configured` or `event_not_selected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// Events of the batch that were refused, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected: Vec<IndexedEventError>,
}

/// One event; `202` once it is stored.
#[utoipa::path(
    post, path = "/v1/track", tag = "ingest", operation_id = "track",
    request_body(content((CatalogEvent = "application/json"), (CatalogEvent = "text/plain"))),
    responses((status = 202, description = "Stored (or discarded; see the body)", body = Answer)),
)]
async fn track(State(app): State<IngestState>, request: IngestRequest, body: Body) -> Result<Response, ApiError> {
    let body = body.map_err(|e| request.refused(&app, e))?;
    let event = body.json().map_err(|e| request.refused(&app, e))?;
    accept(&app, &request, vec![event], None, Shape::Single).await
}

/// Several events; `202` once the valid ones are stored, with the refused ones listed.
#[utoipa::path(
    post, path = "/v1/batch", tag = "ingest", operation_id = "batch",
    request_body(content((BatchRequest = "application/json"), (BatchRequest = "text/plain"))),
    responses((status = 202, description = "Stored (or discarded; see the body)", body = Answer)),
)]
async fn batch(State(app): State<IngestState>, request: IngestRequest, body: Body) -> Result<Response, ApiError> {
    let body = body.map_err(|e| request.refused(&app, e))?;
    let (events, sent_at) = body
        .json()
        .and_then(|json| split_batch(json, app.settings.max_batch_events))
        .map_err(|e| request.refused(&app, e))?;
    accept(&app, &request, events, sent_at, Shape::Batch).await
}

/// Records which user an anonymous id belongs to (no Segment call).
#[utoipa::path(
    post, path = "/v1/identify", tag = "ingest", operation_id = "identify",
    request_body(content((IdentifyRequest = "application/json"), (IdentifyRequest = "text/plain"))),
    responses((status = 202, description = "Recorded (or discarded; see the body)", body = Answer)),
)]
async fn identify(State(app): State<IngestState>, request: IngestRequest, body: Body) -> Result<Response, ApiError> {
    let link = body
        .and_then(|body| Ok(strict_json::parse(body.json()?.get(), &app.json_limits())?))
        .and_then(|body| Ok(parse_identify(body, &request.target.workspace_id, request.received_at)?))
        .map_err(|e| request.refused(&app, e))?;
    if !request.target.segment_enabled {
        // Nothing to deliver; an identify is not an event, so not counted as one.
        return Ok(answer(Answer {
            accepted: 0,
            discarded: Some(1),
            reason: Some(NOT_CONFIGURED),
            ..Answer::default()
        }));
    }
    app.committer.commit(Vec::new(), vec![link]).await.map_err(|e| request.refused(&app, e))?;
    Ok(answer(Answer { accepted: 1, ..Answer::default() }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Single,
    Batch,
}

async fn accept(
    app: &IngestState,
    request: &IngestRequest,
    events: Vec<&RawValue>,
    sent_at: Option<DateTime<Utc>>,
    shape: Shape,
) -> Result<Response, ApiError> {
    let envelope = request.envelope(sent_at);
    app.metrics.events_received.inc_by(events.len() as u64);
    let mut accepted = Vec::with_capacity(events.len());
    let mut identities = Vec::new();
    let mut rejected = Vec::new();
    let mut not_selected = 0;
    // What the debugger shows of each event; `queued` until the commit says otherwise.
    let mut seen = Vec::with_capacity(events.len());
    // One event's tree at a time: a batch is never held parsed as a whole.
    let limits = app.json_limits();
    for (index, raw) in events.into_iter().enumerate() {
        match strict_json::parse(raw.get(), &limits).and_then(|value| parse_event(value, &envelope)) {
            // Valid, but not one the workspace forwards: never stored.
            Ok(event) if !request.target.selection.forwards(event.name) => {
                not_selected += 1;
                seen.push(activity::seen(&event, Outcome::NotSelected { reason: NOT_SELECTED }));
            }
            Ok(event) => {
                seen.push(activity::seen(&event, Outcome::Queued));
                identities.extend(event.identity);
                accepted.push(event.event);
            }
            Err(error) => {
                app.metrics.rejected(error.code.as_str());
                seen.push(activity::refused_event(raw, request.received_at, &error));
                rejected.push(IndexedEventError { index, error });
            }
        }
    }
    if accepted.is_empty() && not_selected == 0 {
        app.activity.record(&request.target.workspace_id, seen);
        return Err(match shape {
            Shape::Single => ApiError::Validation(rejected.remove(0).error),
            Shape::Batch => ApiError::NoValidEvents(rejected),
        });
    }
    if !request.target.segment_enabled {
        let not_configured = Outcome::NotSelected { reason: NOT_CONFIGURED };
        app.activity.record(&request.target.workspace_id, activity::instead_of_queued(seen, &not_configured));
        return Ok(not_configured_answer(app, accepted.len() + not_selected, rejected));
    }
    let discarded = (not_selected > 0).then_some(not_selected);
    let reason = discarded.map(|_| NOT_SELECTED);
    if let Some(count) = discarded {
        app.metrics.events_discarded.inc_by(&Reason { reason: NOT_SELECTED }, count as u64);
    }
    let count = accepted.len();
    if count > 0 {
        let committed = if app.queue.depth() >= app.settings.max_queue_depth {
            Err(ApiError::QueueFull)
        } else {
            app.committer.commit(accepted, identities).await
        };
        if let Err(e) = committed {
            let refused = Outcome::refused(e.code(), &e.to_string(), None);
            app.activity.record(&request.target.workspace_id, activity::instead_of_queued(seen, &refused));
            return Err(e);
        }
    }
    app.activity.record(&request.target.workspace_id, seen);
    Ok(answer(Answer { accepted: count, discarded, reason, rejected }))
}

/// Valid events answered but not stored: the workspace has no enabled
/// Segment integration (there is nowhere to deliver them).
fn not_configured_answer(app: &IngestState, count: usize, rejected: Vec<IndexedEventError>) -> Response {
    app.metrics.events_discarded.inc_by(&Reason { reason: NOT_CONFIGURED }, count as u64);
    answer(Answer { accepted: 0, discarded: Some(count), reason: Some(NOT_CONFIGURED), rejected })
}

fn answer(answer: Answer) -> Response {
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

/// `{"batch": [...], "sentAt"?: "..."}` → the events (unparsed) and the
/// batch's `sentAt`.
fn split_batch(body: &RawValue, max_events: usize) -> Result<(Vec<&RawValue>, Option<DateTime<Utc>>), ApiError> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        batch: Option<&'a RawValue>,
        #[serde(rename = "sentAt")]
        sent_at: Option<Value>,
    }
    let not_an_object = || ApiError::InvalidBody("the body must be an object with a `batch` array".into());
    let envelope: Envelope = serde_json::from_str(body.get()).map_err(|_| not_an_object())?;
    let sent_at = match envelope.sent_at {
        Some(value) => event::time(Some(&value), "sentAt")?,
        None => None,
    };
    let batch = envelope.batch.ok_or_else(not_an_object)?;
    let events: Vec<&RawValue> = serde_json::from_str(batch.get())
        .map_err(|_| ApiError::InvalidBody("`batch` must be an array of events".into()))?;
    if events.is_empty() {
        return Err(ApiError::InvalidBody("`batch` holds no events".into()));
    }
    if events.len() > max_events {
        return Err(ApiError::TooManyEvents { count: events.len(), max: max_events });
    }
    Ok((events, sent_at))
}

/// The authenticated workspace of an ingest request and what the request
/// itself tells about the browser.
#[derive(Debug)]
pub struct IngestRequest {
    target: Arc<IngestTarget>,
    received_at: DateTime<Utc>,
    user_agent: Option<String>,
    locale: Option<String>,
    ip: Option<IpAddr>,
}

impl IngestRequest {
    /// Records a refusal of the whole request in the workspace's activity.
    fn refused(&self, app: &IngestState, error: ApiError) -> ApiError {
        let at = self.received_at.timestamp_millis();
        app.activity.record_refusal(&self.target.workspace_id, at, error.code(), &error.to_string());
        error
    }

    fn envelope(&self, sent_at: Option<DateTime<Utc>>) -> Envelope<'_> {
        Envelope {
            workspace_id: &self.target.workspace_id,
            received_at: self.received_at,
            sent_at,
            user_agent: self.user_agent.as_deref(),
            ip: self.ip,
            locale: self.locale.as_deref(),
            omit_properties: self.target.selection.omitted(),
        }
    }
}

impl FromRequestParts<IngestState> for IngestRequest {
    type Rejection = ApiError;

    /// Who is calling: the client address (rate limited), the workspace of the
    /// key (rate limited, origin checked) and what the headers tell.
    async fn from_request_parts(parts: &mut Parts, app: &IngestState) -> Result<Self, ApiError> {
        let received_at = Utc::now();
        let client = app.client_ips.of(parts);
        let target =
            find_workspace(parts, app, client).await.inspect_err(|e| app.metrics.refused_unattributed(e.code()))?;
        let refused = |error: ApiError, message: String| {
            let at = received_at.timestamp_millis();
            app.activity.record_refusal(&target.workspace_id, at, error.code(), &message);
            error
        };
        if let Err(e) = app.per_workspace.check(&target.workspace_id) {
            let message = e.to_string();
            return Err(refused(e, message));
        }
        if let Some(origin) = parts.headers.get(header::ORIGIN)
            && !target.allows(origin.to_str().unwrap_or_default())
        {
            let origin = bounded(origin.to_str().unwrap_or("(not text)"));
            return Err(refused(
                ApiError::OriginNotAllowed,
                format!("the page's origin {origin} is not in allowed_origins"),
            ));
        }
        let ip = client.and_then(|client| app.client_ips.forwarded(client, target.ip));
        Ok(IngestRequest {
            target,
            received_at,
            user_agent: header_text(&parts.headers, header::USER_AGENT, MAX_USER_AGENT),
            locale: preferred_language(&parts.headers),
            ip,
        })
    }
}

/// A request refused before its body was read (too large, too slow): shown in
/// the workspace's activity when its key is known, else counted.
pub async fn refused_unread(app: &IngestState, parts: &Parts, error: ApiError) -> ApiError {
    if !parts.uri.path().starts_with("/v1/") {
        return error;
    }
    let target = match ingest_key(parts) {
        Some(key) => app.keys.resolve(&key).await.ok().flatten(),
        None => None,
    };
    match target {
        Some(target) => {
            app.activity.record_refusal(&target.workspace_id, now_millis(), error.code(), &error.to_string())
        }
        None => app.metrics.refused_unattributed(error.code()),
    }
    error
}

/// The workspace whose key the request carries, once the client's own rate
/// limit lets it through. Refusals before it is known cannot be shown in any
/// workspace's activity; they are counted (`ingest_refused_unattributed_total`).
async fn find_workspace(
    parts: &Parts,
    app: &IngestState,
    client: Option<IpAddr>,
) -> Result<Arc<IngestTarget>, ApiError> {
    if let Some(client) = client {
        app.per_client.check(&client)?;
    }
    let key = ingest_key(parts).ok_or(ApiError::MissingIngestKey)?;
    app.keys.resolve(&key).await?.ok_or(ApiError::InvalidIngestKey)
}

/// The key from `X-Produktly-Key`, or from `?key=` (sendBeacon cannot set headers).
fn ingest_key(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(KEY_HEADER) {
        return value.to_str().ok().map(|k| k.trim().to_owned()).filter(|k| !k.is_empty());
    }
    query_key(&parts.uri)
}

/// The `key` query parameter.
fn query_key(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, key)| key.into_owned())
        .filter(|k| !k.is_empty())
}

fn header_text(headers: &HeaderMap, name: header::HeaderName, max_len: usize) -> Option<String> {
    // `to_str` only succeeds for visible ASCII, so any byte index is a character boundary.
    let text = headers.get(name)?.to_str().ok()?.trim();
    Some(text[..text.len().min(max_len)].to_owned()).filter(|t| !t.is_empty())
}

/// The first language of `Accept-Language`, e.g. `en-US`.
fn preferred_language(headers: &HeaderMap) -> Option<String> {
    let value = header_text(headers, header::ACCEPT_LANGUAGE, 256)?;
    let first = value.split(',').next()?.split(';').next()?.trim();
    let plausible = !first.is_empty()
        && first != "*"
        && first.len() <= 35
        && first.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    plausible.then(|| first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::{EventError, EventErrorCode};
    use serde_json::json;

    #[test]
    fn batch_shape_is_checked() {
        let split = |body: Value, max| {
            let raw = serde_json::value::to_raw_value(&body).unwrap();
            split_batch(&raw, max).map(|(events, sent_at)| (events.len(), sent_at))
        };
        assert!(matches!(split(json!([]), 10), Err(ApiError::InvalidBody(_))));
        assert!(matches!(split(json!({"batch": {}}), 10), Err(ApiError::InvalidBody(_))));
        assert!(matches!(split(json!({"batch": []}), 10), Err(ApiError::InvalidBody(_))));
        assert!(matches!(split(json!({"batch": [1, 2, 3]}), 2), Err(ApiError::TooManyEvents { .. })));
        let error = split(json!({"batch": [{}], "sentAt": 5}), 2).unwrap_err();
        assert!(matches!(error, ApiError::Validation(EventError { code: EventErrorCode::InvalidField, .. })));
        assert_eq!(split(json!({"batch": [{}], "other": 1}), 2).unwrap(), (1, None));
        let (count, sent_at) = split(json!({"batch": [{}, {}], "sentAt": "2026-11-29T10:00:00Z"}), 2).unwrap();
        assert_eq!((count, sent_at.map(|t| t.timestamp())), (2, Some(1_795_946_400)));
    }

    #[test]
    fn preferred_language_takes_the_first_plausible_tag() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_LANGUAGE, "fi-FI,fi;q=0.9,en;q=0.8".parse().unwrap());
        assert_eq!(preferred_language(&headers).as_deref(), Some("fi-FI"));
        headers.insert(header::ACCEPT_LANGUAGE, "*".parse().unwrap());
        assert_eq!(preferred_language(&headers), None);
    }

    #[test]
    fn long_headers_are_cut() {
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, "a".repeat(600).parse().unwrap());
        assert_eq!(header_text(&headers, header::USER_AGENT, 512).unwrap().len(), 512);
    }
}
