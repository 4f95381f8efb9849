//! The Segment integration of a workspace: the write key (sealed at rest, only
//! ever shown as a hint), the region, delivery status, a test call, and the
//! dead letters.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize, de};
use serde_json::value::RawValue;
use serde_json::{Map, json};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::extract::{AdminJson, DEFAULT_LIMIT, MAX_LIMIT, fitting, listing};
use super::workspaces::no_such_workspace;
use crate::delivery::segment::{self, BatchLimits, Context, Outcome, Region, TrackMessage};
use crate::domain::catalog;
use crate::domain::pattern::{BLANKS, Pattern};
use crate::domain::selection::{self, EventSelection};
use crate::domain::time::{iso8601, millis_to_iso8601, now_millis};
use crate::domain::{DeadLetterReason, IntegrationState, IpPolicy, WorkspaceId};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::openapi::{nullable, nullable_array};
use crate::secrets::WriteKey;
use crate::store::{DeadLetter, Integration, IntegrationConfig, LastError, Millis, QueueCounts};

/// A Segment write key: 1 to 256 visible ASCII characters; blanks around it
/// (as a paste brings) are removed.
static WRITE_KEY: Pattern = Pattern::new("^[ \\t\\r\\n]*[!-~]{1,256}[ \\t\\r\\n]*$");
/// Consecutive failures from which a workspace's delivery counts as failing.
const FAILING_AFTER: u32 = 5;
const TEST_EVENT: &str = "produktly_test_event";

#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    configured: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    write_key_hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<Region>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    /// The catalog events forwarded; `null`: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Option<Vec<String>>>,
    /// The properties left out of every event; `null`: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    omit_properties: Option<Option<Vec<String>>>,
    /// What `context.ip` keeps of the browser's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<IpPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusView>,
}

#[derive(Debug, Serialize, ToSchema)]
struct StatusView {
    state: IntegrationState,
    /// While the region is down: since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    segment_down_since: Option<String>,
    queued: u64,
    dead: u64,
    last_delivery_at: Option<String>,
    last_error: Option<ErrorView>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ErrorView {
    at: String,
    status: Option<u16>,
    message: String,
}

/// Whether the next attempt waits because the last one was refused or rate
/// limited (which is not counted as a failure), not merely because delivery
/// is paced to the workspace's request rate.
fn waits_after_error(integration: &Integration, now: Millis) -> bool {
    let error_since_delivery = integration
        .last_error
        .as_ref()
        .is_some_and(|error| integration.last_delivery_at.is_none_or(|delivered| error.at > delivered));
    integration.next_attempt_at > now && error_since_delivery
}

impl IntegrationView {
    fn new(integration: Integration, counts: QueueCounts, segment_down_since: Option<Millis>) -> IntegrationView {
        let now = now_millis();
        let state = if !integration.config.enabled {
            IntegrationState::Paused
        } else if segment_down_since.is_some() {
            IntegrationState::WaitingForSegment
        } else if integration.consecutive_failures >= FAILING_AFTER {
            IntegrationState::Failing
        } else if integration.consecutive_failures > 0 || waits_after_error(&integration, now) {
            IntegrationState::Retrying
        } else {
            IntegrationState::Ok
        };
        let config = integration.config;
        let last_error = integration.last_error.map(|LastError { at, status, message }| ErrorView {
            at: millis_to_iso8601(at),
            status,
            message,
        });
        IntegrationView {
            configured: true,
            write_key_hint: Some(config.write_key_hint),
            region: Some(config.region),
            enabled: Some(config.enabled),
            events: Some(config.selection.events),
            omit_properties: Some(config.selection.omit_properties),
            ip: Some(config.ip),
            status: Some(StatusView {
                state,
                segment_down_since: segment_down_since.map(millis_to_iso8601),
                queued: counts.queued,
                dead: counts.dead,
                last_delivery_at: integration.last_delivery_at.map(millis_to_iso8601),
                last_error,
            }),
        }
    }

    fn not_configured() -> IntegrationView {
        IntegrationView {
            configured: false,
            write_key_hint: None,
            region: None,
            enabled: None,
            events: None,
            omit_properties: None,
            ip: None,
            status: None,
        }
    }
}

// Each field's error messages are written here, so that none can echo the write key.
/// The Segment integration's settings; omitted fields keep their values.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"write_key": "SfG4uPhWHpTeYyTcnHCs4GOLbvXBrV3t", "region": "us"})))]
pub struct IntegrationRequest {
    /// The Segment source's write key; required the first time (else `409`), kept when omitted.
    #[serde(default)]
    #[schema(value_type = Option<String>, schema_with = write_key_schema)]
    write_key: Option<WriteKey>,
    /// Kept when omitted; `us` the first time.
    #[serde(default, deserialize_with = "region")]
    region: Option<Region>,
    /// Kept when omitted; `true` the first time.
    #[serde(default, deserialize_with = "enabled")]
    enabled: Option<bool>,
    /// The catalog events to forward; others are answered as discarded and not
    /// stored. `null`: all of them (the first time when omitted); kept when omitted.
    #[serde(default, deserialize_with = "events")]
    #[schema(schema_with = events_schema)]
    events: Option<Option<Vec<String>>>,
    /// Properties to leave out of every event before it is stored (such as
    /// `feedback`); none that a catalog event requires. `null`: none; kept when omitted.
    #[serde(default, deserialize_with = "omit_properties")]
    #[schema(schema_with = omit_properties_schema)]
    omit_properties: Option<Option<Vec<String>>>,
    /// What `context.ip` keeps of the browser's address, applied before an
    /// event is stored: `full`, `truncated` (the last IPv4 octet or the last
    /// 80 bits of IPv6 zeroed) or `none`. The service's `ingest.ip_policy`
    /// applies when stricter. `full` the first time; kept when omitted.
    #[serde(default, deserialize_with = "ip")]
    ip: Option<IpPolicy>,
}

// `null` is taken as omitted, except for the lists, where it says "all" or "none".
fn region<'de, D: Deserializer<'de>>(field: D) -> Result<Option<Region>, D::Error> {
    fitting(field, "region must be \"us\" or \"eu\"")
}

fn enabled<'de, D: Deserializer<'de>>(field: D) -> Result<Option<bool>, D::Error> {
    fitting(field, "enabled must be true or false")
}

fn ip<'de, D: Deserializer<'de>>(field: D) -> Result<Option<IpPolicy>, D::Error> {
    let names = IpPolicy::ALL.map(|p| format!("\"{}\"", p.as_str())).join(", ");
    fitting(field, format!("ip must be one of {names}"))
}

fn events<'de, D: Deserializer<'de>>(field: D) -> Result<Option<Option<Vec<String>>>, D::Error> {
    fitting(field, "events must be a list of catalog event names, or null").map(Some)
}

fn omit_properties<'de, D: Deserializer<'de>>(field: D) -> Result<Option<Option<Vec<String>>>, D::Error> {
    fitting(field, "omit_properties must be a list of property names, or null").map(Some)
}

impl<'de> Deserialize<'de> for WriteKey {
    fn deserialize<D: Deserializer<'de>>(field: D) -> Result<WriteKey, D::Error> {
        let key: String = fitting(field, "write_key must be a string")?;
        if !WRITE_KEY.is_match(&key) {
            return Err(de::Error::custom(
                "write_key must be the Segment source's write key: 1 to 256 visible ASCII characters",
            ));
        }
        Ok(WriteKey::new(key.trim_matches(BLANKS)))
    }
}

fn events_schema() -> ArrayBuilder {
    let name = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(catalog::EVENTS.iter().map(|e| e.name)));
    nullable_array(ArrayBuilder::new().items(name).unique_items(true))
}

fn omit_properties_schema() -> ArrayBuilder {
    // A property some event requires cannot be left out (`not`; utoipa has no
    // builder for it, and extensions are written into the schema as they are).
    let required =
        Extensions::from_iter([("not", json!({"enum": selection::required_properties().collect::<Vec<_>>()}))]);
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(selection::MAX_PROPERTY_NAME_CHARS))
        .extensions(Some(required));
    nullable_array(ArrayBuilder::new().items(name).unique_items(true).max_items(Some(selection::MAX_OMITTED)))
}

fn write_key_schema() -> ObjectBuilder {
    nullable(ObjectBuilder::new().schema_type(Type::String).pattern(Some(WRITE_KEY.source())))
}

/// Sets the write key, region, enabled flag and what is forwarded. Omitted
/// fields keep their current values (the key is required the first time);
/// delivery of queued events resumes at once with the new settings. A new
/// selection applies to events received from then on (on other instances
/// within `ingest.key_cache_ttl_ms`); what is queued is delivered as stored.
#[utoipa::path(
    put, path = "/admin/v1/workspaces/{id}/integrations/segment", tag = "admin", params(WorkspaceId),
    operation_id = "putSegmentIntegration", request_body = IntegrationRequest,
    responses(
        (status = 200, body = IntegrationView),
        (status = 409, description = "`write_key_required`: the integration is new and the body has no write key", body = ErrorBody),
    ),
)]
pub async fn put(
    State(app): State<AdminState>,
    id: WorkspaceId,
    AdminJson(body): AdminJson<IntegrationRequest>,
) -> Result<Json<IntegrationView>, ApiError> {
    app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    let existing = app.store.integration(&id).await?.map(|integration| integration.config);
    let (sealed_write_key, write_key_hint) = match (&body.write_key, &existing) {
        (Some(key), _) => (app.secrets.sealer.seal(&id, key), key.hint()),
        (None, Some(existing)) => (existing.sealed_write_key.clone(), existing.write_key_hint.clone()),
        (None, None) => return Err(ApiError::WriteKeyRequired),
    };
    let current = existing.as_ref().map(|e| e.selection.clone()).unwrap_or_default();
    let selection = EventSelection::new(
        body.events.unwrap_or(current.events),
        body.omit_properties.unwrap_or(current.omit_properties),
    )
    .map_err(|e| ApiError::invalid(Some(e.field()), e.to_string()))?;
    let config = IntegrationConfig {
        sealed_write_key,
        write_key_hint,
        region: body.region.or(existing.as_ref().map(|e| e.region)).unwrap_or_default(),
        enabled: body.enabled.or(existing.as_ref().map(|e| e.enabled)).unwrap_or(true),
        selection,
        ip: body.ip.or(existing.as_ref().map(|e| e.ip)).unwrap_or_default(),
    };
    let integration = app.store.put_integration(&id, &config, now_millis()).await?;
    app.ingest_keys.invalidate();
    // Events may be waiting for this integration (disabled before, or failing).
    app.queue.wake(&id);
    view(&app, integration).await.map(Json)
}

/// The integration (the write key only as a hint) and the state of delivery.
#[utoipa::path(
    get, path = "/admin/v1/workspaces/{id}/integrations/segment", tag = "admin", params(WorkspaceId),
    operation_id = "getSegmentIntegration",
    responses((status = 200, description = "With `configured: false` when the workspace has none", body = IntegrationView)),
)]
pub async fn get(State(app): State<AdminState>, id: WorkspaceId) -> Result<Json<IntegrationView>, ApiError> {
    app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    let Some(integration) = app.store.integration(&id).await? else {
        return Ok(Json(IntegrationView::not_configured()));
    };
    view(&app, integration).await.map(Json)
}

/// The integration with its queue counts and its Segment region's health.
async fn view(app: &AdminState, integration: Integration) -> Result<IntegrationView, ApiError> {
    let counts = app.store.queue_counts(&integration.workspace_id).await?;
    let regions = app.store.region_health().await?;
    let down_since = regions.into_iter().find(|r| r.region == integration.config.region).and_then(|r| r.down_since);
    Ok(IntegrationView::new(integration, counts, down_since))
}

/// Removes the integration and drops the workspace's queued and dead events.
#[utoipa::path(
    delete, path = "/admin/v1/workspaces/{id}/integrations/segment", tag = "admin", params(WorkspaceId),
    operation_id = "deleteSegmentIntegration",
    responses((status = 204, description = "Removed")),
)]
pub async fn delete(State(app): State<AdminState>, id: WorkspaceId) -> Result<StatusCode, ApiError> {
    if !app.queue.delete_integration(&id).await? {
        return Err(ApiError::NotFound("the workspace has no Segment integration".into()));
    }
    app.ingest_keys.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestView {
    outcome: &'static str,
    status: Option<u16>,
    message: String,
    message_id: String,
    note: &'static str,
}

/// Sends one `produktly_test_event` with the stored key and answers with what
/// Segment answered. Segment accepts any write key, so success here means the
/// call went through; the event shows in the source's Debugger if the key is right.
#[utoipa::path(
    post, path = "/admin/v1/workspaces/{id}/integrations/segment/test", tag = "admin", params(WorkspaceId),
    operation_id = "testSegmentIntegration",
    responses(
        (status = 200, description = "What Segment answered", body = TestView),
        (status = 500, description = "`internal`: the stored write key cannot be opened (the sealing key changed)", body = ErrorBody),
    ),
)]
pub async fn test(State(app): State<AdminState>, id: WorkspaceId) -> Result<Json<TestView>, ApiError> {
    let integration = app
        .store
        .integration(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("the workspace has no Segment integration".into()))?;
    let write_key = app
        .secrets
        .sealer
        .unseal(&id, &integration.config.sealed_write_key)
        .map_err(|e| ApiError::Internal(format!("cannot unseal the write key: {e}")))?;
    let message_id = uuid::Uuid::new_v4().to_string();
    let now = iso8601(chrono::Utc::now());
    let properties = Map::from_iter([("workspace_id".to_owned(), json!(id))]);
    let context = Context::new(Map::new());
    let message =
        TrackMessage::new(TEST_EVENT, &message_id, Some("produktly-test"), &now, &properties, &context).to_json();
    let limits = BatchLimits { max_messages: 1, max_bytes: segment::MAX_MESSAGE_BYTES * 2 };
    let batch = segment::pack([(0, message)], limits).batches.remove(0);
    let outcome = app.segment.send(integration.config.region, &write_key, batch.body(&now)).await;
    let (outcome, status, message) = match outcome {
        Outcome::Delivered { status } => ("delivered", Some(status), "Segment accepted the test event".to_owned()),
        Outcome::Rejected { status, body } => ("rejected", Some(status), body),
        Outcome::RateLimited { status, retry_after } => {
            ("rate_limited", Some(status), format!("Segment asked to retry after {} s", retry_after.as_secs()))
        }
        Outcome::Failed { status, message } => ("failed", status, message),
    };
    Ok(Json(TestView {
        outcome,
        status,
        message,
        message_id,
        note: "Segment accepts any write key at this stage; look for produktly_test_event in the source's Debugger.",
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// How many, oldest first.
    #[param(schema_with = limit_schema)]
    limit: Option<usize>,
}

fn limit_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_LIMIT))
        .default(Some(DEFAULT_LIMIT.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    message_id: String,
    reason: DeadLetterReason,
    status: Option<u16>,
    detail: String,
    received_at: String,
    failed_at: String,
    /// The Segment message as it would be sent.
    #[schema(value_type = Object)]
    message: Box<RawValue>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersView {
    dead_letters: Vec<DeadLetterView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayView {
    /// Dead letters put back in the queue.
    replayed: u64,
}

impl DeadLetterView {
    fn new(dead: DeadLetter) -> Result<DeadLetterView, ApiError> {
        let message = segment::with_user_id(dead.payload, dead.user_id.as_deref());
        let message = RawValue::from_string(message)
            .map_err(|e| ApiError::Internal(format!("stored message is not JSON: {e}")))?;
        Ok(DeadLetterView {
            message_id: dead.message_id,
            reason: dead.reason,
            status: dead.status,
            detail: dead.detail,
            received_at: millis_to_iso8601(dead.received_at),
            failed_at: millis_to_iso8601(dead.failed_at),
            message,
        })
    }
}

/// The oldest dead letters: events Segment refused or that outlived the maximum age.
#[utoipa::path(
    get, path = "/admin/v1/workspaces/{id}/dead-letters", tag = "admin", params(WorkspaceId, ListQuery),
    operation_id = "listDeadLetters",
    responses(
        (status = 200, body = DeadLettersView),
        (status = 500, description = "`internal`: a stored message is damaged", body = ErrorBody),
    ),
)]
pub async fn dead_letters(
    State(app): State<AdminState>,
    id: WorkspaceId,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeadLettersView>, ApiError> {
    let (_, limit) = listing(query, |q| q.limit)?;
    app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    let letters: Vec<DeadLetterView> =
        app.store.dead_letters(&id, limit).await?.into_iter().map(DeadLetterView::new).collect::<Result<_, _>>()?;
    Ok(Json(DeadLettersView { dead_letters: letters }))
}

/// Puts every dead letter of the workspace back in the queue, with a fresh age.
#[utoipa::path(
    post, path = "/admin/v1/workspaces/{id}/dead-letters/replay", tag = "admin", params(WorkspaceId),
    operation_id = "replayDeadLetters",
    responses((status = 200, body = ReplayView)),
)]
pub async fn replay(State(app): State<AdminState>, id: WorkspaceId) -> Result<Json<ReplayView>, ApiError> {
    app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    let replayed = app.queue.replay(&id, now_millis()).await?;
    Ok(Json(ReplayView { replayed }))
}
