//! Erasing one person's data within a workspace (a GDPR request), and
//! deleting a workspace with all of its data when its customer leaves.

use std::borrow::Cow;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::{ArrayBuilder, ObjectBuilder, RefOr, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::AdminState;
use super::extract::AdminJson;
use super::workspaces::no_such_workspace;
use crate::activity::{EventEntry, Outcome};
use crate::domain::pattern::VISIBLE;
use crate::domain::time::now_millis;
use crate::domain::{MAX_ID_CHARS, WorkspaceId};
use crate::http::error::ApiError;
use crate::http::openapi::{nullable, nullable_array};
use crate::store::{Erased, ErasureSubject};

/// Most anonymous ids one erasure names.
const MAX_ANONYMOUS_IDS: usize = 1000;

/// Whose data to erase: a user id, anonymous ids, or both (not neither).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    user_id: Option<String>,
    anonymous_ids: Option<Vec<String>>,
}

impl ToSchema for ErasureRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErasureRequest")
    }
}

impl PartialSchema for ErasureRequest {
    fn schema() -> RefOr<Schema> {
        let id = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_ID_CHARS))
                .pattern(Some(VISIBLE.source()))
        };
        // Either may be left out, not both (`anyOf`; utoipa has no builder for
        // it on an object, and extensions are written into the schema as they are).
        let either = Extensions::from_iter([(
            "anyOf",
            json!([
                {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
                {"required": ["anonymous_ids"], "properties": {"anonymous_ids": {"type": "array", "minItems": 1}}},
            ]),
        )]);
        let anonymous_ids = ArrayBuilder::new().items(id()).max_items(Some(MAX_ANONYMOUS_IDS));
        let request = ObjectBuilder::new()
            .property(
                "user_id",
                nullable(id())
                    .description(Some("The user's id as the events carried it; their linked anonymous ids go too.")),
            )
            .property(
                "anonymous_ids",
                nullable_array(anonymous_ids)
                    .description(Some("Anonymous ids of the person (browsers they used before signing in, or never).")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .extensions(Some(either))
            .examples([json!({"user_id": "user-42", "anonymous_ids": ["3f1c2b7e-anon"]})]);
        RefOr::T(Schema::Object(request.build()))
    }
}

/// Rows removed, by kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureView {
    /// Queued events (not yet delivered to Segment).
    events: u64,
    dead_letters: u64,
    /// anonymousId → userId links.
    identities: u64,
}

impl From<Erased> for ErasureView {
    fn from(erased: Erased) -> ErasureView {
        ErasureView { events: erased.events, dead_letters: erased.dead_letters, identities: erased.identities }
    }
}

/// Removes, within the workspace, the queued events and dead letters that carry
/// the user id, one of the anonymous ids or an anonymous id linked to the user,
/// and those links, in one transaction. Events already sent to Segment are
/// Segment's to delete (its user deletion API); an event being sent at this
/// moment may still arrive there.
#[utoipa::path(
    post, path = "/admin/v1/workspaces/{id}/erasures", tag = "admin", operation_id = "eraseUser", params(WorkspaceId),
    request_body = ErasureRequest,
    responses((status = 200, description = "What was removed", body = ErasureView)),
)]
pub async fn erase(
    State(app): State<AdminState>,
    id: WorkspaceId,
    AdminJson(body): AdminJson<ErasureRequest>,
) -> Result<Json<ErasureView>, ApiError> {
    let subject = subject(body)?;
    app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    let erased = app.queue.erase(&id, &subject).await?;
    // This instance's debugger forgets the person too.
    app.activity.forget(&id, subject.user_id.as_deref(), &subject.anonymous_ids);
    let outcome = Outcome::Erased { events: erased.events };
    app.activity.record(&id, [EventEntry::about_request(now_millis(), outcome)]);
    // An audit line, without the ids themselves.
    tracing::info!(
        workspace = %id,
        by_user_id = subject.user_id.is_some(),
        anonymous_ids = subject.anonymous_ids.len(),
        events = erased.events,
        dead_letters = erased.dead_letters,
        identities = erased.identities,
        "erased a person's data"
    );
    Ok(Json(erased.into()))
}

fn subject(body: ErasureRequest) -> Result<ErasureSubject, ApiError> {
    let rule = format!("1 to {MAX_ID_CHARS} characters, not all blank");
    let valid = |id: &str| VISIBLE.is_match(id) && id.chars().count() <= MAX_ID_CHARS;
    if let Some(user_id) = &body.user_id
        && !valid(user_id)
    {
        return Err(ApiError::invalid(Some("user_id"), format!("user_id must be {rule}")));
    }
    let anonymous_ids = body.anonymous_ids.unwrap_or_default();
    if anonymous_ids.len() > MAX_ANONYMOUS_IDS {
        return Err(ApiError::invalid(
            Some("anonymous_ids"),
            format!("at most {MAX_ANONYMOUS_IDS} anonymous ids at once"),
        ));
    }
    if !anonymous_ids.iter().all(|id| valid(id)) {
        return Err(ApiError::invalid(Some("anonymous_ids"), format!("each anonymous id must be {rule}")));
    }
    if body.user_id.is_none() && anonymous_ids.is_empty() {
        return Err(ApiError::invalid(None, "give user_id, anonymous_ids or both"));
    }
    Ok(ErasureSubject { user_id: body.user_id, anonymous_ids })
}

/// Deletes the workspace and everything of it (integration and sealed write
/// key, queued events, dead letters, identity links, delivery state) in one
/// transaction. Its ingest key is refused at once here and within
/// `ingest.key_cache_ttl_ms` on other instances; events being sent to Segment at
/// this moment may still arrive there. Deleting it again changes nothing.
#[utoipa::path(
    delete, path = "/admin/v1/workspaces/{id}", tag = "admin", operation_id = "deleteWorkspace", params(WorkspaceId),
    responses((status = 204, description = "Deleted, or there was no such workspace")),
)]
pub async fn delete_workspace(State(app): State<AdminState>, id: WorkspaceId) -> Result<StatusCode, ApiError> {
    if let Some(erased) = app.queue.delete_workspace(&id, now_millis()).await? {
        app.ingest_keys.invalidate();
        app.activity.remove(&id);
        tracing::info!(
            workspace = %id,
            events = erased.events,
            dead_letters = erased.dead_letters,
            identities = erased.identities,
            "deleted a workspace with all its data"
        );
    }
    Ok(StatusCode::NO_CONTENT)
}
