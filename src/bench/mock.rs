//! A lean stand-in for Segment's `POST /v1/batch` for the benchmark: counts
//! messages, times the end-to-end latency of marked events, and can answer
//! `429` to hold a backlog in the queue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Router, serve};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::load::new_histogram;

/// The property marking an event with the time it was sent, in microseconds
/// since the benchmark's epoch.
pub const SENT_PROPERTY: &str = "bench_sent_us";

pub struct MockSegment {
    pub addr: SocketAddr,
    state: Arc<MockState>,
}

struct MockState {
    epoch: Instant,
    rate_limiting: AtomicBool,
    accepted: AtomicU64,
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
            accepted: AtomicU64::new(0),
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

    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
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

async fn batch(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    if state.rate_limiting.load(Ordering::SeqCst) {
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response();
    }
    let now = state.epoch.elapsed().as_micros() as u64;
    // Counting is cheap; only batches holding marked events are parsed, so
    // that the mock takes little of the machine from the service.
    let messages = memchr::memmem::find_iter(&body, b"\"messageId\":").count() as u64;
    if memchr::memmem::find(&body, SENT_PROPERTY.as_bytes()).is_some() {
        let Ok(body) = serde_json::from_slice::<Body>(&body) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let mut latency = state.latency.lock().expect("latency lock");
        for sent in body.batch.iter().filter_map(|m| m.properties.bench_sent_us) {
            let _ = latency.record(now.saturating_sub(sent).max(1));
        }
    }
    state.accepted.fetch_add(messages, Ordering::SeqCst);
    state.first_at.fetch_min(now, Ordering::SeqCst);
    state.last_at.fetch_max(now, Ordering::SeqCst);
    (StatusCode::OK, "{\"success\":true}").into_response()
}
