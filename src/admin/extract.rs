//! Extractors of the admin API that answer malformed input with the API's
//! JSON errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};

use crate::error::ApiError;
use crate::pattern::Pattern;

/// Letters, digits, `-`, `_` and `.`, starting with a letter or digit (so that
/// no id is a dot segment, `.` or `..`, which clients remove from URL paths).
static WORKSPACE_ID: Pattern = Pattern::new("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$");

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

/// A workspace id: 1 to 64 letters, digits, `-`, `_` or `.`, starting with a
/// letter or digit; the admin app may use its own ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceId(pub String);

impl WorkspaceId {
    pub fn parse(id: String) -> Result<WorkspaceId, ApiError> {
        if WORKSPACE_ID.is_match(&id) {
            Ok(WorkspaceId(id))
        } else {
            Err(ApiError::InvalidRequest { field: Some("id"), message: Self::RULE.into() })
        }
    }

    const RULE: &str = "a workspace id is 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit";

    /// The rule as a schema, for the path parameter and request bodies.
    pub fn schema() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(WORKSPACE_ID.source()))
            .description(Some(Self::RULE))
            .examples(["acme"])
    }
}

impl utoipa::IntoParams for WorkspaceId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The workspace's id."))
                .schema(Some(Self::schema()))
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
        WorkspaceId::parse(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids() {
        assert!(WorkspaceId::parse("ws_1.a-b".into()).is_ok());
        assert!(WorkspaceId::parse(String::new()).is_err());
        assert!(WorkspaceId::parse("a/b".into()).is_err());
        assert!(WorkspaceId::parse("x".repeat(64)).is_ok());
        assert!(WorkspaceId::parse("x".repeat(65)).is_err());
        assert!(WorkspaceId::parse(".".into()).is_err());
        assert!(WorkspaceId::parse("ws\n".into()).is_err());
    }
}
