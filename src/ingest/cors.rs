//! CORS for the browsers on customers' sites. A preflight is answered for the
//! workspace when its key is in the query string; with the key in a header
//! (which a preflight does not carry) it is answered for any origin, and the
//! request itself is refused (`403`) if the workspace does not allow it.

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
    ORIGIN, VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{KEY_HEADER, query_key};
use crate::error::ApiError;
use crate::state::AppState;

/// How long browsers may reuse a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: u32 = 3600;

pub async fn cors(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(ORIGIN).cloned();
    if request.method() == Method::OPTIONS {
        let key = query_key(request.uri());
        return match preflight(&app, key, origin.as_ref()).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        };
    }
    let mut response = next.run(request).await;
    let refused = response.status() == StatusCode::FORBIDDEN;
    if let (Some(origin), false) = (origin, refused) {
        response.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        response.headers_mut().insert(VARY, HeaderValue::from_static("Origin"));
    }
    response
}

async fn preflight(app: &AppState, key: Option<String>, origin: Option<&HeaderValue>) -> Result<Response, ApiError> {
    let origin_text = origin.and_then(|o| o.to_str().ok());
    if let (Some(key), Some(origin)) = (key, origin_text)
        && let Some(target) = app.ingest_keys.resolve(&key).await?
        && !target.allows(origin)
    {
        return Err(ApiError::OriginNotAllowed);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    if let Some(origin) = origin {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_str(&format!("content-type, content-encoding, {KEY_HEADER}")).expect("a valid header"),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(PREFLIGHT_MAX_AGE));
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    Ok(response)
}
