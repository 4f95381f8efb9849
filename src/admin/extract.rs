//! Extractors of the admin API that answer malformed input with the API's
//! JSON errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};

use crate::domain::{WORKSPACE_ID, WorkspaceId};
use crate::http::error::ApiError;

/// A JSON request body.
pub struct AdminJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AdminJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|_| ApiError::InvalidRequest {
            field: None,
            message: "the request body could not be read".into(),
        })?;
        serde_json::from_slice(&bytes)
            .map(AdminJson)
            .map_err(|e| ApiError::InvalidRequest { field: None, message: format!("invalid JSON body: {e}") })
    }
}

/// The rule of workspace ids as a schema, for the path parameter and request bodies.
pub fn workspace_id_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(WORKSPACE_ID.source()))
        .description(Some(WorkspaceId::RULE))
        .examples(["acme"])
}

impl utoipa::IntoParams for WorkspaceId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The workspace's id."))
                .schema(Some(workspace_id_schema()))
                .build(),
        ]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WorkspaceId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no such workspace".into()))?;
        Ok(WorkspaceId::parse(id)?)
    }
}
