//! The delivery debugger's page at `GET /debugger/`: static files built into
//! the binary (`clients/debugger`), under a strict Content-Security-Policy:
//! its own script and style only, requests to this service only, embeddable
//! only by the origins in `activity.debugger_frame_ancestors`. The page calls
//! the admin API with the token the user types in.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const PAGE: &str = include_str!("../../clients/debugger/index.html");
const SCRIPT: &str = include_str!("../../clients/debugger/debugger.js");
const STYLE: &str = include_str!("../../clients/debugger/debugger.css");

/// The page's routes; `frame_ancestors` are the origins that may embed it
/// (space-separated; empty: none).
pub fn router(frame_ancestors: &str) -> Router {
    let ancestors = if frame_ancestors.trim().is_empty() { "'none'" } else { frame_ancestors.trim() };
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    );
    let policy = HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"));
    let file = move |body: &'static str, kind: &'static str| {
        let policy = policy.clone();
        move || async move { served(body, kind, policy) }
    };
    Router::new()
        .route("/debugger", get(|| async { Redirect::permanent("/debugger/") }))
        .route("/debugger/", get(file(PAGE, "text/html; charset=utf-8")))
        .route("/debugger/debugger.js", get(file(SCRIPT, "text/javascript; charset=utf-8")))
        .route("/debugger/debugger.css", get(file(STYLE, "text/css; charset=utf-8")))
}

fn served(body: &'static str, kind: &'static str, policy: HeaderValue) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (CONTENT_TYPE, HeaderValue::from_static(kind)),
        (CONTENT_SECURITY_POLICY, policy),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}
