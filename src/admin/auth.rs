//! Bearer-token authentication of the admin API, and its rate limit.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::AdminState;
use crate::http::error::ApiError;

/// Lets the request through only with `Authorization: Bearer <admin token>`.
pub async fn require_admin(State(app): State<AdminState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(token) if app.secrets.admin_tokens.verify(token) => Ok(next.run(request).await),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Lets the request through unless its client is over the admin rate limit.
pub async fn limit_rate(State(app): State<AdminState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    if let Some(client) = app.client_ips.of(&parts) {
        app.per_client.check(&client)?;
    }
    Ok(next.run(Request::from_parts(parts, body)).await)
}
