//! The admin API the Produktly admin app calls (bearer token): workspaces,
//! their Segment integration, and erasure of their data.

mod activity;
mod auth;
mod erasure;
mod extract;
mod integration;
mod reseal;
mod workspaces;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity::Activity;
use crate::delivery::segment::SegmentClient;
use crate::http::client_ip::ClientIps;
use crate::http::rate_limit::RateLimit;
use crate::ingest::keys::IngestKeys;
use crate::queue::Queue;
use crate::secrets::Secrets;
use crate::store::Store;
pub use reseal::{Resealed, reseal_write_keys};

/// What the admin handlers share; one `Arc`, cloned per request.
#[derive(Clone)]
pub struct AdminState(Arc<Admin>);

pub struct Admin {
    pub store: Arc<Store>,
    /// Events in and out of the queue (replay, erasure, deletion).
    pub queue: Queue,
    pub secrets: Secrets,
    /// Cleared when a key, an integration or a workspace changes.
    pub ingest_keys: IngestKeys,
    /// For the integration's test call.
    pub segment: SegmentClient,
    pub client_ips: Arc<ClientIps>,
    pub per_client: RateLimit<IpAddr>,
    /// What the delivery debugger reads (and erasures add to).
    pub activity: Arc<Activity>,
}

impl AdminState {
    pub fn new(admin: Admin) -> AdminState {
        AdminState(Arc::new(admin))
    }
}

impl std::ops::Deref for AdminState {
    type Target = Admin;
    fn deref(&self) -> &Admin {
        &self.0
    }
}

/// The admin routes and their part of the OpenAPI document.
pub fn router(state: AdminState) -> (Router<AdminState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::new()
        .routes(routes!(workspaces::create, workspaces::list))
        .routes(routes!(workspaces::upsert, workspaces::get, erasure::delete_workspace))
        .routes(routes!(erasure::erase))
        .routes(routes!(workspaces::rotate_ingest_key))
        .routes(routes!(integration::put, integration::get, integration::delete))
        .routes(routes!(integration::test))
        .routes(routes!(integration::dead_letters))
        .routes(routes!(integration::replay))
        .routes(routes!(activity::activity))
        .routes(routes!(activity::deliveries))
        .routes(routes!(activity::stream))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin))
        // Outside authentication, so that guessing tokens is slowed down too.
        .route_layer(middleware::from_fn_with_state(state, auth::limit_rate))
        .split_for_parts()
}
