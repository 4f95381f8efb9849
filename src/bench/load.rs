//! HTTP load against the service: closed loop (each connection sends its next
//! request when the last is answered) for throughput, open loop (requests on a
//! fixed schedule) for latency at a given rate.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::BenchError;

/// Where requests go, with the ingest key.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    pub key: String,
}

/// What a load phase measured. Latencies are in microseconds.
pub struct Report {
    pub events: u64,
    pub failures: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl Report {
    fn new() -> Report {
        Report {
            events: 0,
            failures: 0,
            elapsed: Duration::ZERO,
            latency: new_histogram(),
        }
    }

    fn merge(&mut self, other: Report) {
        self.events += other.events;
        self.failures += other.failures;
        self.latency
            .add(other.latency)
            .expect("histograms of the same bounds");
    }

    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q`, in milliseconds.
    pub fn millis_at(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// When a closed-loop phase ends.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    Elapsed(Duration),
    /// This many requests per connection.
    Requests(u64),
}

/// `connections` connections (connection `i` to `targets[i % len]`) each send
/// `body` (holding `events` events) as fast as answers come.
pub async fn closed_loop(
    targets: &[Target],
    body: Bytes,
    events: u64,
    connections: usize,
    until: Until,
) -> Result<Report, BenchError> {
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for connection in 0..connections {
        let (target, body) = (targets[connection % targets.len()].clone(), body.clone());
        workers.spawn(async move {
            let mut sender = connect(target.addr).await?;
            let mut report = Report::new();
            let mut sent_requests = 0;
            while match until {
                Until::Elapsed(duration) => started.elapsed() < duration,
                Until::Requests(requests) => sent_requests < requests,
            } {
                sent_requests += 1;
                let sent = Instant::now();
                let accepted = post(&mut sender, &target, body.clone()).await?;
                record(&mut report, accepted, events, sent);
            }
            Ok::<_, BenchError>(report)
        });
    }
    let mut report = gather(workers).await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Sends `rate` requests per second for `duration`, spread over `connections`,
/// each on its schedule. Latency counts from the scheduled time, so a stalled
/// server cannot hide its stall by delaying the requests that would see it.
pub async fn open_loop<F>(
    target: &Target,
    rate: u32,
    connections: usize,
    duration: Duration,
    body: F,
) -> Result<Report, BenchError>
where
    F: Fn() -> Bytes + Clone + Send + 'static,
{
    let started = Instant::now();
    let interval = Duration::from_secs(connections as u64) / rate;
    let total = (rate as u64 * duration.as_millis() as u64 / 1000) / connections as u64;
    let mut workers = JoinSet::new();
    for worker in 0..connections {
        let (target, body) = (target.clone(), body.clone());
        let offset = interval * worker as u32 / connections as u32;
        workers.spawn(async move {
            let mut sender = connect(target.addr).await?;
            let mut report = Report::new();
            for n in 0..total {
                let scheduled = started + offset + interval * n as u32;
                tokio::time::sleep_until(scheduled).await;
                let accepted = post(&mut sender, &target, body()).await?;
                record(&mut report, accepted, 1, scheduled);
            }
            Ok::<_, BenchError>(report)
        });
    }
    let mut report = gather(workers).await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn record(report: &mut Report, accepted: bool, events: u64, since: Instant) {
    if accepted {
        report.events += events;
    } else {
        report.failures += 1;
    }
    let micros = since.elapsed().as_micros().clamp(1, 120_000_000) as u64;
    report
        .latency
        .record(micros)
        .expect("within the histogram's bounds");
}

async fn gather(mut workers: JoinSet<Result<Report, BenchError>>) -> Result<Report, BenchError> {
    let mut total = Report::new();
    while let Some(worker) = workers.join_next().await {
        total.merge(worker.map_err(|e| BenchError(format!("a load worker failed: {e}")))??);
    }
    Ok(total)
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, BenchError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BenchError(format!("HTTP handshake: {e}")))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Posts one body; `true` when the service answered `202`.
async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    body: Bytes,
) -> Result<bool, BenchError> {
    let request = hyper::Request::post(target.path)
        .header("host", "bench")
        .header("content-type", "application/json")
        .header("x-produktly-key", &target.key)
        .body(Full::new(body))
        .map_err(|e| BenchError(e.to_string()))?;
    sender
        .ready()
        .await
        .map_err(|e| BenchError(format!("connection lost: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| BenchError(format!("request failed: {e}")))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| BenchError(format!("reading the answer: {e}")))?;
    Ok(status == hyper::StatusCode::ACCEPTED)
}
