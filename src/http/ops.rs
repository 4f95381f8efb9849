//! What ops watch: liveness, readiness, Prometheus metrics, and the OpenAPI
//! document of the whole API.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::{Arc, OnceLock};

use crate::http::error::{ApiError, ErrorBody};
use crate::metrics::Metrics;
use crate::store::Store;

/// What the ops endpoints read.
#[derive(Clone)]
pub struct OpsState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// The OpenAPI document (JSON), set once every route is built.
    pub openapi: Arc<OnceLock<String>>,
}

/// A readiness probe answers within this time, even with the database hanging.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The ops routes and their part of the OpenAPI document.
pub fn router() -> (Router<OpsState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
        .split_for_parts()
}

#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok`, or `ready`.
    status: &'static str,
}

/// `200` while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `200` when the store answers and its schema is current, else `503`.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, description = "`not_ready`", body = ErrorBody)),
)]
async fn readyz(State(app): State<OpsState>) -> Result<Json<Health>, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, app.store.check_ready()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            Err(ApiError::NotReady)
        }
        Err(_) => {
            tracing::warn!("not ready: the store did not answer in time");
            Err(ApiError::NotReady)
        }
    }
}

/// Prometheus (OpenMetrics) text.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((
        status = 200,
        description = "OpenMetrics text when the request accepts `application/openmetrics-text` (as Prometheus \
                       does), else the classic Prometheus text format 0.0.4",
        content((String = "application/openmetrics-text"), (String = "text/plain")),
    )),
)]
async fn metrics(State(app): State<OpsState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accepted| accepted.contains("application/openmetrics-text"));
    if openmetrics {
        ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.encode())
    } else {
        ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.encode_classic())
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi(State(app): State<OpsState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], app.openapi.get().cloned().unwrap_or_default())
}
