//! Workspaces: create, upsert by id, read, rotate the ingest key.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::{AdminJson, WorkspaceId};
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::Workspace;
use crate::time::{millis_to_iso8601, now_millis};

/// Longest workspace name, in characters.
const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceBody {
    id: Option<String>,
    name: String,
}

#[derive(Debug, Serialize)]
pub struct WorkspaceView {
    id: String,
    name: String,
    ingest_key: String,
    created_at: String,
}

impl From<Workspace> for WorkspaceView {
    fn from(w: Workspace) -> WorkspaceView {
        WorkspaceView { id: w.id, name: w.name, ingest_key: w.ingest_key, created_at: millis_to_iso8601(w.created_at) }
    }
}

pub async fn create(
    State(app): State<AppState>,
    AdminJson(body): AdminJson<WorkspaceBody>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    let id = match body.id {
        Some(id) => WorkspaceId::parse(id)?,
        None => WorkspaceId(format!("ws_{}", uuid::Uuid::new_v4().simple())),
    };
    let workspace = new_workspace(id, body.name)?;
    if !app.store.insert_workspace(&workspace).await? {
        return Err(ApiError::WorkspaceExists(workspace.id));
    }
    Ok((StatusCode::CREATED, Json(workspace.into())))
}

/// Creates the workspace with this id, or renames it (its ingest key stays).
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
    let (workspace, created) = app.store.upsert_workspace(&new_workspace(id, body.name)?).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(workspace.into())))
}

pub async fn get(State(app): State<AppState>, WorkspaceId(id): WorkspaceId) -> Result<Json<WorkspaceView>, ApiError> {
    let workspace = app.store.workspace(&id).await?.ok_or_else(no_such_workspace)?;
    Ok(Json(workspace.into()))
}

/// A new ingest key; the old one stops working at once on this instance and
/// within the key cache's lifetime on others.
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

fn new_workspace(WorkspaceId(id): WorkspaceId, name: String) -> Result<Workspace, ApiError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::InvalidRequest {
            field: Some("name"),
            message: format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        });
    }
    Ok(Workspace { id, name, ingest_key: new_ingest_key(), created_at: now_millis() })
}

/// A public ingest key: `pk_` and 128 random bits.
fn new_ingest_key() -> String {
    format!("pk_{}", uuid::Uuid::new_v4().simple())
}
