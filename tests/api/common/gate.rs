//! What stands between a browser and the service in the browser tests: it
//! forwards every request and logs it, and on command puts the service out of
//! reach (connections refused, through a `TcpProxy`) or answers its requests
//! `503` with a `Retry-After`, as an overloaded service does. A control
//! listener takes the commands, so the script driving the browser gives them
//! at the moment it needs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::proxy::TcpProxy;

/// One request that reached the gate.
#[derive(Clone, Debug, Serialize)]
pub struct Logged {
    /// Milliseconds since the gate started.
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Default)]
struct Gate {
    /// While set, requests other than preflights get `503` with this `Retry-After`.
    unavailable: Option<u64>,
    log: Vec<Logged>,
}

#[derive(Clone)]
struct Shared {
    gate: Arc<Mutex<Gate>>,
    started: Instant,
    service: String,
    http: reqwest::Client,
    proxy: Arc<TcpProxy>,
}

/// The gate: browsers post to `url`; a driver gives commands at `control`.
pub struct TestGate {
    pub url: String,
    pub control: String,
    shared: Shared,
}

impl TestGate {
    pub async fn start(service: &str) -> TestGate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let forwarder = listener.local_addr().unwrap();
        let proxy = TcpProxy::start(forwarder).await;
        let shared = Shared {
            gate: Arc::default(),
            started: Instant::now(),
            service: service.to_owned(),
            http: reqwest::Client::new(),
            proxy: proxy.clone(),
        };
        let forwarding = Router::new().fallback(forward).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, forwarding).await });
        let control = Router::new()
            .route("/down", post(down))
            .route("/up", post(up))
            .route("/unavailable", post(unavailable))
            .route("/available", post(available))
            .route("/log", get(log))
            .with_state(shared.clone());
        let control_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control_addr: SocketAddr = control_listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(control_listener, control).await });
        TestGate { url: format!("http://{}", proxy.addr), control: format!("http://{control_addr}"), shared }
    }

    /// Every request that reached the gate, in order.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.gate.lock().unwrap().log.clone()
    }
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/".to_owned(), |p| p.to_string());
    let unavailable = shared.gate.lock().unwrap().unavailable;
    let response = match unavailable {
        Some(retry_after) if parts.method != Method::OPTIONS => overloaded(&parts.headers, retry_after),
        _ => {
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            pass(&shared, parts.method.clone(), &path, &parts.headers, body).await
        }
    };
    let logged = Logged {
        at_ms: shared.started.elapsed().as_millis() as u64,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        status: response.status().as_u16(),
    };
    shared.gate.lock().unwrap().log.push(logged);
    response
}

async fn pass(shared: &Shared, method: Method, path: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let mut request = shared.http.request(method, format!("{}{path}", shared.service)).body(body);
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let Ok(answer) = request.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(answer.bytes().await.unwrap_or_default())).unwrap()
}

/// The service's own `503` when it is overloaded, as a page sees it.
fn overloaded(headers: &HeaderMap, retry_after: u64) -> Response {
    let body = r#"{"error":{"code":"queue_full","message":"too many events are waiting to be stored; retry shortly"}}"#;
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, [("content-type", "application/json")], body).into_response();
    let set = response.headers_mut();
    set.insert("retry-after", HeaderValue::from(retry_after));
    if let Some(origin) = headers.get("origin") {
        set.insert("access-control-allow-origin", origin.clone());
        set.insert("access-control-expose-headers", HeaderValue::from_static("Retry-After"));
    }
    response
}

async fn down(State(shared): State<Shared>) -> StatusCode {
    shared.proxy.cut();
    StatusCode::NO_CONTENT
}

async fn up(State(shared): State<Shared>) -> StatusCode {
    shared.proxy.restore().await;
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct RetryAfter {
    retry_after: u64,
}

async fn unavailable(State(shared): State<Shared>, Query(query): Query<RetryAfter>) -> StatusCode {
    shared.gate.lock().unwrap().unavailable = Some(query.retry_after);
    StatusCode::NO_CONTENT
}

async fn available(State(shared): State<Shared>) -> StatusCode {
    shared.gate.lock().unwrap().unavailable = None;
    StatusCode::NO_CONTENT
}

async fn log(State(shared): State<Shared>) -> axum::Json<Vec<Logged>> {
    axum::Json(shared.gate.lock().unwrap().log.clone())
}
