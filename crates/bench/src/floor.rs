//! The HTTP floor: a bare axum endpoint that does only what every ingest
//! request must (read the key header, parse the JSON body) and answers `202`.
//! The bench runs it as a process of its own (`bench --serve-http-floor`),
//! on the same runtime as the service, and loads it as it loads the service:
//! what it costs per request is the least an HTTP request can cost here.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::BenchError;

pub async fn serve(address: SocketAddr) -> Result<(), BenchError> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, Router::new().route("/v1/track", post(track))).await?;
    Ok(())
}

async fn track(headers: HeaderMap, body: Bytes) -> Response {
    let keyed = headers.get("x-produktly-key").is_some();
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) if keyed => (StatusCode::ACCEPTED, Json(json!({"accepted": 1}))).into_response(),
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}
