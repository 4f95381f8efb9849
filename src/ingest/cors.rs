//! CORS for the browsers on customers' sites, around every ingest answer
//! (`/v1/…`), errors included, and those of the body reader (`408`, `413`)
//! too: a page can read why it was refused (`403 origin_not_allowed`, `401`,
//! `429` with `Retry-After`, …) instead of seeing a network error it would
//! retry for ever. A preflight is answered for the workspace when its key is
//! in the query string; with the key in a header (which a preflight does not
//! carry) it is answered for any origin, and the request itself is refused
//! (`403`) if the workspace does not allow it. (The SDK sends simple
//! requests, `text/plain` with the key in the query, which need no preflight.)

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::IngestState;
use super::{KEY_HEADER, query_key};
use crate::http::error::ApiError;

/// How long browsers may reuse a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: u32 = 3600;
/// The paths CORS applies to: the ingest API.
const INGEST_PATHS: &str = "/v1/";

pub async fn cors(State(app): State<IngestState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with(INGEST_PATHS) {
        return next.run(request).await;
    }
    let origin = request.headers().get(ORIGIN).cloned();
    let mut response = if request.method() == Method::OPTIONS {
        let key = query_key(request.uri());
        preflight(&app, key, origin.as_ref()).await.unwrap_or_else(IntoResponse::into_response)
    } else {
        next.run(request).await
    };
    allow(response.headers_mut(), origin);
    response
}

/// What lets the page read the answer (and its `Retry-After`).
fn allow(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Retry-After"));
    }
}

async fn preflight(app: &IngestState, key: Option<String>, origin: Option<&HeaderValue>) -> Result<Response, ApiError> {
    let origin_text = origin.and_then(|o| o.to_str().ok());
    if let (Some(key), Some(origin)) = (key, origin_text)
        && let Some(target) = app.keys.resolve(&key).await?
        && !target.allows(origin)
    {
        return Err(ApiError::OriginNotAllowed);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_str(&format!("content-type, content-encoding, {KEY_HEADER}")).expect("a valid header"),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(PREFLIGHT_MAX_AGE));
    Ok(response)
}
