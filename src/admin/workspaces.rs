//! Workspaces: create, upsert by id, read, rotate the ingest key.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AdminErrors;
use crate::error::ErrorBody;

use super::extract::{AdminJson, WorkspaceId};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Workspace;
use crate::time::{millis_to_iso8601, now_millis};

/// Longest workspace name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// Most origins a workspace may list.
const MAX_ORIGINS: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceBody {
    /// The admin app's own id (1 to 64 letters, digits, `-`, `_`, `.`); generated when absent.
    id: Option<String>,
    name: String,
    /// Browser origins allowed to send events; absent or null: any.
    allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceView {
    id: String,
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
            allowed_origins: w.allowed_origins.map(|origins| origins.split(' ').map(str::to_owned).collect()),
            created_at: millis_to_iso8601(w.created_at),
        }
    }
}

/// Creates a workspace (with the given id, or a generated one).
#[utoipa::path(
    post, path = "/admin/v1/workspaces", tag = "admin", request_body = WorkspaceBody,
    responses((status = 201, body = WorkspaceView), (status = 409, description = "The id is taken", body = ErrorBody), AdminErrors),
)]
pub async fn create(
    State(app): State<AppState>,
    AdminJson(body): AdminJson<WorkspaceBody>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    let id = match body.id {
        Some(id) => WorkspaceId::parse(id)?,
        None => WorkspaceId(format!("ws_{}", uuid::Uuid::new_v4().simple())),
    };
    let workspace = new_workspace(id, body.name, body.allowed_origins)?;
    if !app.store.insert_workspace(&workspace).await? {
        return Err(ApiError::WorkspaceExists(workspace.id));
    }
    Ok((StatusCode::CREATED, Json(workspace.into())))
}

/// Creates the workspace with this id, or updates its name and allowed
/// origins (its ingest key stays).
#[utoipa::path(
    put, path = "/admin/v1/workspaces/{id}", tag = "admin", params(WorkspaceId), request_body = WorkspaceBody,
    responses((status = 200, description = "Updated", body = WorkspaceView), (status = 201, description = "Created", body = WorkspaceView), AdminErrors),
)]
pub async fn upsert(
    State(app): State<AppState>,
    id: WorkspaceId,
    AdminJson(body): AdminJson<WorkspaceBody>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    if body.id.as_ref().is_some_and(|body_id| *body_id != id.0) {
        return Err(ApiError::InvalidRequest {
            field: Some("id"),
            message: "the id in the body differs from the path".into(),
        });
    }
    let (workspace, created) = app.store.upsert_workspace(&new_workspace(id, body.name, body.allowed_origins)?).await?;
    app.ingest_keys.invalidate();
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(workspace.into())))
}

#[utoipa::path(
    get, path = "/admin/v1/workspaces/{id}", tag = "admin", params(WorkspaceId),
    responses((status = 200, body = WorkspaceView), AdminErrors),
)]
pub async fn get(State(app): State<AppState>, WorkspaceId(id): WorkspaceId) -> Result<Json<WorkspaceView>, ApiError> {
    let workspace = app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    Ok(Json(workspace.into()))
}

/// A new ingest key; the old one stops working at once on this instance and
/// within the key cache's lifetime on others.
#[utoipa::path(
    post, path = "/admin/v1/workspaces/{id}/ingest-key/rotate", tag = "admin", params(WorkspaceId),
    responses((status = 200, description = "The workspace with its new ingest key", body = WorkspaceView), AdminErrors),
)]
pub async fn rotate_ingest_key(
    State(app): State<AppState>,
    WorkspaceId(id): WorkspaceId,
) -> Result<Json<WorkspaceView>, ApiError> {
    let workspace = app.store.rotate_ingest_key(&id, &new_ingest_key()).await?.ok_or_else(no_such_workspace)?;
    app.ingest_keys.invalidate();
    Ok(Json(workspace.into()))
}

pub fn no_such_workspace() -> ApiError {
    ApiError::NotFound("no such workspace".into())
}

fn new_workspace(
    WorkspaceId(id): WorkspaceId,
    name: String,
    allowed_origins: Option<Vec<String>>,
) -> Result<Workspace, ApiError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::InvalidRequest {
            field: Some("name"),
            message: format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        });
    }
    let allowed_origins = allowed_origins.map(|origins| parse_origins(&origins)).transpose()?;
    Ok(Workspace { id, name, ingest_key: new_ingest_key(), created_at: now_millis(), allowed_origins })
}

/// Origins as browsers send them (`https://app.example.com`, with a port when
/// not the default), normalized and space-separated for storage.
fn parse_origins(origins: &[String]) -> Result<String, ApiError> {
    let invalid = |message: String| ApiError::InvalidRequest { field: Some("allowed_origins"), message };
    if origins.len() > MAX_ORIGINS {
        return Err(invalid(format!("at most {MAX_ORIGINS} origins may be listed")));
    }
    let mut parsed = Vec::with_capacity(origins.len());
    for origin in origins {
        let url = url::Url::parse(origin).ok().filter(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
        });
        let Some(url) = url else {
            return Err(invalid(format!(
                "{:?} is not an origin such as https://app.example.com",
                crate::ingest::shown(origin)
            )));
        };
        parsed.push(url.origin().ascii_serialization());
    }
    Ok(parsed.join(" "))
}

/// A public ingest key: `pk_` and 128 random bits.
fn new_ingest_key() -> String {
    format!("pk_{}", uuid::Uuid::new_v4().simple())
}
