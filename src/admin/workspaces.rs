//! Workspaces: create, list, upsert by id, read, rotate the ingest key.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::extract::{AdminJson, listing, workspace_id_schema};
use crate::domain::pattern::{BLANKS, VISIBLE};
use crate::domain::time::{millis_to_iso8601, now_millis};
use crate::domain::{AllowedOrigins, MAX_ORIGINS, ORIGIN, WorkspaceId};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::openapi::{self, nullable};
use crate::store::Workspace;

/// Longest workspace name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// A new workspace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"id": "acme", "name": "Acme"})))]
pub struct WorkspaceBody {
    /// The admin app's own id; generated when absent.
    #[schema(schema_with = optional_id)]
    id: Option<String>,
    #[schema(schema_with = name_schema)]
    name: String,
    #[schema(schema_with = origins_schema)]
    allowed_origins: Option<Vec<String>>,
}

/// A workspace's name and origins; its id is the path's.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"name": "Acme", "allowed_origins": ["https://app.acme.com"]})))]
pub struct WorkspaceUpdate {
    // Tolerated when it is the path's id, as the admin app may send the
    // workspace it read; any other id is refused. Not in the document, which
    // cannot say "equal to the path's".
    #[schema(ignore)]
    id: Option<String>,
    #[schema(schema_with = name_schema)]
    name: String,
    #[schema(schema_with = origins_schema)]
    allowed_origins: Option<Vec<String>>,
}

fn optional_id() -> ObjectBuilder {
    nullable(workspace_id_schema())
}

fn name_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_CHARS))
        .pattern(Some(VISIBLE.source()))
        .description(Some("Shown in the admin app; surrounding spaces and line breaks are removed."))
        .examples(["Acme"])
}

fn origins_schema() -> ArrayBuilder {
    let origin = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(ORIGIN.source()))
        .examples(["https://app.example.com"]);
    let origins = ArrayBuilder::new().items(origin).max_items(Some(MAX_ORIGINS));
    openapi::nullable_array(origins).description(Some(
        "Browser origins allowed to send events (`https://app.example.com`, a port when not the default); \
         absent or null: any.",
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceView {
    #[schema(value_type = String)]
    id: WorkspaceId,
    name: String,
    ingest_key: String,
    allowed_origins: Option<Vec<String>>,
    created_at: String,
}

impl From<Workspace> for WorkspaceView {
    fn from(w: Workspace) -> WorkspaceView {
        WorkspaceView {
            id: w.id,
            name: w.name,
            ingest_key: w.ingest_key,
            allowed_origins: w.allowed_origins.map(|origins| origins.as_slice().to_vec()),
            created_at: millis_to_iso8601(w.created_at),
        }
    }
}

/// Creates a workspace (with the given id, or a generated one).
#[utoipa::path(
    post, path = "/admin/v1/workspaces", tag = "admin", operation_id = "createWorkspace", request_body = WorkspaceBody,
    responses((status = 201, body = WorkspaceView), (status = 409, description = "The id is taken", body = ErrorBody)),
)]
pub async fn create(
    State(app): State<AdminState>,
    AdminJson(body): AdminJson<WorkspaceBody>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    let id = match body.id {
        Some(id) => WorkspaceId::parse(id)?,
        None => WorkspaceId::generate(),
    };
    let workspace = new_workspace(id, body.name, body.allowed_origins)?;
    if !app.store.insert_workspace(&workspace).await? {
        return Err(ApiError::WorkspaceExists(workspace.id));
    }
    Ok((StatusCode::CREATED, Json(workspace.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many, in id order.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// The cursor: the `next` of the previous page (workspaces with a greater id).
    after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspacePage {
    workspaces: Vec<WorkspaceView>,
    /// The `after` of the next page; `null` on the last.
    #[schema(value_type = Option<String>)]
    next: Option<WorkspaceId>,
}

/// The workspaces in id order, a page at a time.
#[utoipa::path(
    get, path = "/admin/v1/workspaces", tag = "admin", operation_id = "listWorkspaces", params(PageQuery),
    responses((status = 200, body = WorkspacePage)),
)]
pub async fn list(
    State(app): State<AdminState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WorkspacePage>, ApiError> {
    let (query, limit) = listing(query, |q| q.limit)?;
    // One more than the page tells whether another page follows.
    let mut workspaces = app.store.workspaces(query.after.as_deref().unwrap_or_default(), limit + 1).await?;
    let more = workspaces.len() > limit;
    workspaces.truncate(limit);
    let next = more.then(|| workspaces.last().map(|w| w.id.clone())).flatten();
    Ok(Json(WorkspacePage { workspaces: workspaces.into_iter().map(WorkspaceView::from).collect(), next }))
}

/// Creates the workspace with this id, or updates its name and allowed
/// origins (its ingest key stays).
#[utoipa::path(
    put, path = "/admin/v1/workspaces/{id}", tag = "admin", operation_id = "putWorkspace", params(WorkspaceId),
    request_body = WorkspaceUpdate,
    responses((status = 200, description = "Updated", body = WorkspaceView), (status = 201, description = "Created", body = WorkspaceView)),
)]
pub async fn upsert(
    State(app): State<AdminState>,
    id: WorkspaceId,
    AdminJson(body): AdminJson<WorkspaceUpdate>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    if body.id.as_ref().is_some_and(|body_id| *body_id != *id) {
        return Err(ApiError::invalid(Some("id"), "the id in the body differs from the path"));
    }
    let (workspace, created) = app.store.upsert_workspace(&new_workspace(id, body.name, body.allowed_origins)?).await?;
    app.ingest_keys.invalidate();
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(workspace.into())))
}

#[utoipa::path(
    get, path = "/admin/v1/workspaces/{id}", tag = "admin", operation_id = "getWorkspace", params(WorkspaceId),
    responses((status = 200, body = WorkspaceView)),
)]
pub async fn get(State(app): State<AdminState>, id: WorkspaceId) -> Result<Json<WorkspaceView>, ApiError> {
    let workspace = app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    Ok(Json(workspace.into()))
}

/// A new ingest key; the old one stops working at once on this instance and
/// within the key cache's lifetime on others.
#[utoipa::path(
    post, path = "/admin/v1/workspaces/{id}/ingest-key/rotate", tag = "admin", operation_id = "rotateIngestKey",
    params(WorkspaceId),
    responses((status = 200, description = "The workspace with its new ingest key", body = WorkspaceView)),
)]
pub async fn rotate_ingest_key(
    State(app): State<AdminState>,
    id: WorkspaceId,
) -> Result<Json<WorkspaceView>, ApiError> {
    let workspace = app.store.rotate_ingest_key(&id, &new_ingest_key()).await?.ok_or_else(no_such_workspace)?;
    app.ingest_keys.invalidate();
    Ok(Json(workspace.into()))
}

pub fn no_such_workspace() -> ApiError {
    ApiError::NotFound("no such workspace".into())
}

fn new_workspace(id: WorkspaceId, name: String, allowed_origins: Option<Vec<String>>) -> Result<Workspace, ApiError> {
    if !VISIBLE.is_match(&name) || name.chars().count() > MAX_NAME_CHARS {
        let message = format!("name must be 1 to {MAX_NAME_CHARS} characters, not all spaces");
        return Err(ApiError::invalid(Some("name"), message));
    }
    let name = name.trim_matches(BLANKS).to_owned();
    let allowed_origins = allowed_origins.map(AllowedOrigins::parse).transpose()?;
    Ok(Workspace { id, name, ingest_key: new_ingest_key(), created_at: now_millis(), allowed_origins })
}

/// A public ingest key: `pk_` and 128 random bits.
fn new_ingest_key() -> String {
    format!("pk_{}", uuid::Uuid::new_v4().simple())
}
