//! The admin API the Produktly admin app calls (bearer token): workspaces and
//! their Segment integration.

mod auth;
mod extract;
mod integration;
mod reseal;
mod workspaces;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post, put};

use crate::app::AppState;
pub use reseal::{Resealed, reseal_write_keys};

pub fn router(state: AppState) -> Router<AppState> {
    let workspace = "/admin/v1/workspaces/{id}";
    let segment = "/admin/v1/workspaces/{id}/integrations/segment";
    Router::new()
        .route("/admin/v1/workspaces", post(workspaces::create))
        .route(workspace, put(workspaces::upsert).get(workspaces::get))
        .route(&format!("{workspace}/ingest-key/rotate"), post(workspaces::rotate_ingest_key))
        .route(segment, put(integration::put).get(integration::get).delete(integration::delete))
        .route(&format!("{segment}/test"), post(integration::test))
        .route(&format!("{workspace}/dead-letters"), get(integration::dead_letters))
        .route(&format!("{workspace}/dead-letters/replay"), post(integration::replay))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin))
        // Outside authentication, so that guessing tokens is slowed down too.
        .route_layer(middleware::from_fn_with_state(state, auth::limit_rate))
}
