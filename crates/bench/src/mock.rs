//! A lean stand-in for Segment's `POST /v1/batch` for the benchmark: inflates
//! gzip bodies, counts messages (and those carrying a mark), times the
//! end-to-end latency of marked events, notes when each write key was first
//! served, and can answer `429` to hold a backlog in the queue or `500` to
//! play an outage.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Router, serve};
use flate2::read::GzDecoder;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::load::new_histogram;

/// The property marking an event with the time it was sent, in microseconds
/// since the benchmark's epoch.
pub const SENT_PROPERTY: &str = "bench_sent_us";
/// What marks the events of the outage scenario's outage phase.
pub const OUTAGE_MARK: &str = "\"step_id\":\"s-outage\"";

pub struct MockSegment {
    pub addr: SocketAddr,
    state: Arc<MockState>,
}

struct MockState {
    epoch: Instant,
    rate_limiting: AtomicBool,
    failing: AtomicBool,
    /// Requests answered `500` while failing.
    failed: AtomicU64,
    accepted: AtomicU64,
    /// Batch requests accepted.
    requests: AtomicU64,
    /// Accepted messages carrying [`OUTAGE_MARK`].
    marked: AtomicU64,
    /// Per write key (the Basic credentials), microseconds since the epoch of
    /// its first accepted batch since the last `reset_first_served`.
    first_served: Mutex<HashMap<String, u64>>,
    /// Microseconds since the epoch of the first and the last accepted batch.
    first_at: AtomicU64,
    last_at: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

#[derive(Deserialize)]
struct Body {
    batch: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    properties: Properties,
}

#[derive(Default, Deserialize)]
struct Properties {
    bench_sent_us: Option<u64>,
}

impl MockSegment {
    pub async fn start(epoch: Instant) -> std::io::Result<MockSegment> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState {
            epoch,
            rate_limiting: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            failed: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            marked: AtomicU64::new(0),
            first_served: Mutex::default(),
            first_at: AtomicU64::new(u64::MAX),
            last_at: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
        });
        let router = Router::new().route("/v1/batch", post(batch)).with_state(state.clone());
        tokio::spawn(async move { serve(listener, router).await });
        Ok(MockSegment { addr, state })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// While on, every batch is answered `429` with `Retry-After: 1`.
    pub fn set_rate_limiting(&self, on: bool) {
        self.state.rate_limiting.store(on, Ordering::SeqCst);
    }

    /// While on, every batch is answered `500`, as in a Segment outage.
    pub fn set_failing(&self, on: bool) {
        self.state.failing.store(on, Ordering::SeqCst);
    }

    /// Requests answered `500` so far.
    pub fn failed(&self) -> u64 {
        self.state.failed.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Batch requests accepted so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Accepted messages carrying [`OUTAGE_MARK`].
    pub fn marked(&self) -> u64 {
        self.state.marked.load(Ordering::SeqCst)
    }

    /// Forgets when each write key was first served.
    pub fn reset_first_served(&self) {
        self.state.first_served.lock().expect("first-served lock").clear();
    }

    /// Per write key, microseconds since the epoch of its first accepted batch.
    pub fn first_served(&self) -> HashMap<String, u64> {
        self.state.first_served.lock().expect("first-served lock").clone()
    }

    /// Forgets the first-batch time, so the next accepted batch starts a new span.
    pub fn reset_span(&self) {
        self.state.first_at.store(u64::MAX, Ordering::SeqCst);
    }

    /// Microseconds from the first to the last accepted batch since `reset_span`.
    pub fn span_micros(&self) -> u64 {
        self.state.last_at.load(Ordering::SeqCst).saturating_sub(self.state.first_at.load(Ordering::SeqCst))
    }

    /// The end-to-end latencies recorded so far, taken (the record starts afresh).
    pub fn take_latency(&self) -> Histogram<u64> {
        std::mem::replace(&mut *self.state.latency.lock().expect("latency lock"), new_histogram())
    }
}

async fn batch(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    if state.rate_limiting.load(Ordering::SeqCst) {
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response();
    }
    if state.failing.load(Ordering::SeqCst) {
        state.failed.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"outage\"}").into_response();
    }
    let now = state.epoch.elapsed().as_micros() as u64;
    let gzip = headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() == b"gzip");
    let body = if gzip {
        let mut inflated = Vec::with_capacity(body.len() * 8);
        if GzDecoder::new(&body[..]).read_to_end(&mut inflated).is_err() {
            return StatusCode::BAD_REQUEST.into_response();
        }
        Bytes::from(inflated)
    } else {
        body
    };
    // Counting is cheap; only batches holding marked events are parsed, so
    // that the mock takes little of the machine from the service.
    let messages = memchr::memmem::find_iter(&body, b"\"messageId\":").count() as u64;
    let marked = memchr::memmem::find_iter(&body, OUTAGE_MARK.as_bytes()).count() as u64;
    if memchr::memmem::find(&body, SENT_PROPERTY.as_bytes()).is_some() {
        let Ok(body) = serde_json::from_slice::<Body>(&body) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let mut latency = state.latency.lock().expect("latency lock");
        for sent in body.batch.iter().filter_map(|m| m.properties.bench_sent_us) {
            let _ = latency.record(now.saturating_sub(sent).max(1));
        }
    }
    if let Some(credentials) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let mut first_served = state.first_served.lock().expect("first-served lock");
        if !first_served.contains_key(credentials) {
            first_served.insert(credentials.to_owned(), now);
        }
    }
    state.accepted.fetch_add(messages, Ordering::SeqCst);
    state.requests.fetch_add(1, Ordering::SeqCst);
    state.marked.fetch_add(marked, Ordering::SeqCst);
    state.first_at.fetch_min(now, Ordering::SeqCst);
    state.last_at.fetch_max(now, Ordering::SeqCst);
    (StatusCode::OK, "{\"success\":true}").into_response()
}
