//! Extractors of the admin API that answer malformed input with the API's
//! JSON errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Longest workspace id, in characters.
const MAX_ID_LEN: usize = 64;

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

/// A workspace id: 1 to 64 letters, digits, `-`, `_` or `.`; the admin app may
/// use its own ids.
#[derive(Clone, Debug, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct WorkspaceId(
    /// The workspace's id.
    pub String,
);

impl WorkspaceId {
    pub fn parse(id: String) -> Result<WorkspaceId, ApiError> {
        let valid = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if valid {
            Ok(WorkspaceId(id))
        } else {
            Err(ApiError::InvalidRequest {
                field: Some("id"),
                message: format!("a workspace id is 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.'"),
            })
        }
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
        assert!(WorkspaceId::parse("x".repeat(65)).is_err());
    }
}
