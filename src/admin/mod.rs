//! The admin API the Produktly admin app calls (bearer token): workspaces,
//! their Segment integration, and erasure of their data.

mod auth;
mod erasure;
mod extract;
mod integration;
mod reseal;
mod workspaces;

use axum::Router;
use axum::middleware;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
pub use reseal::{Resealed, reseal_write_keys};

/// The admin routes and their part of the OpenAPI document.
pub fn router(state: AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::new()
        .routes(routes!(workspaces::create, workspaces::list))
        .routes(routes!(workspaces::upsert, workspaces::get, erasure::delete_workspace))
        .routes(routes!(erasure::erase))
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
