//! The admin API the Produktly admin app calls (bearer token): workspaces and
//! their Segment integration.

mod auth;
mod extract;
mod integration;
mod reseal;
mod workspaces;

use axum::Router;
use axum::middleware;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::state::AppState;
pub use reseal::{Resealed, reseal_write_keys};

/// The admin routes and their part of the OpenAPI document.
pub fn router(state: AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::new()
        .routes(routes!(workspaces::create))
        .routes(routes!(workspaces::upsert, workspaces::get))
        .routes(routes!(workspaces::rotate_ingest_key))
        .routes(routes!(integration::put, integration::get, integration::delete))
        .routes(routes!(integration::test))
        .routes(routes!(integration::dead_letters))
        .routes(routes!(integration::replay))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin))
        // Outside authentication, so that guessing tokens is slowed down too.
        .route_layer(middleware::from_fn_with_state(state, auth::limit_rate))
        .split_for_parts()
}

/// The errors every admin endpoint may answer with.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers for the API document; never built
enum AdminErrors {
    /// The request body or a parameter is invalid (`invalid_request`, with `field`).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No valid admin token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such workspace (or integration).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Rate limited; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The store is unavailable; see `Retry-After`.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}
