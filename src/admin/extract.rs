//! Extractors of the admin API that answer malformed input with the API's
//! JSON errors.

use std::fmt;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};

use crate::domain::{WORKSPACE_ID, WorkspaceId};
use crate::http::error::{self, ApiError};

/// A JSON request body. A body that is not an object, or whose fields do not
/// fit `T`, is answered with the first error, naming the field at fault.
pub struct AdminJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AdminJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| ApiError::invalid(None, "the request body could not be read"))?;
        let body: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(None, format!("invalid JSON body: {e}")))?;
        if !body.is_object() {
            return Err(ApiError::invalid(None, "the body must be a JSON object"));
        }
        // Read from a `Value`, serde's messages carry no position.
        serde_path_to_error::deserialize(body)
            .map(AdminJson)
            .map_err(|e| ApiError::invalid(error::field_at(e.path()).as_deref(), e.into_inner().to_string()))
    }
}

/// Reads a field as `T`; a value that does not fit is answered with `message`,
/// which never repeats the value (serde's own messages would).
pub fn fitting<'de, T: DeserializeOwned, D: Deserializer<'de>>(
    field: D,
    message: impl fmt::Display,
) -> Result<T, D::Error> {
    let value = Value::deserialize(field)?;
    T::deserialize(value).map_err(|_| de::Error::custom(message))
}

/// Most items an admin listing gives at once, and how many when not said.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;

/// A listing's query and its `limit` (1 to [`MAX_LIMIT`]); a query that cannot
/// be read is answered as a bad `limit`, the only field whose type can be wrong.
pub fn listing<T>(
    query: Result<Query<T>, QueryRejection>,
    limit: impl FnOnce(&T) -> Option<usize>,
) -> Result<(T, usize), ApiError> {
    let invalid = || ApiError::invalid(Some("limit"), format!("limit must be a whole number from 1 to {MAX_LIMIT}"));
    let Query(query) = query.map_err(|_| invalid())?;
    let count = limit(&query).unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&count) {
        return Err(invalid());
    }
    Ok((query, count))
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
