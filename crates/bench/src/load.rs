//! HTTP load against the service: closed loop (each connection sends its next
//! request when the last is answered) for throughput, open loop (requests on a
//! fixed schedule) for latency at a given rate.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::BenchError;

/// Threads the load runs on (as `wrk -t2`).
const LOAD_THREADS: usize = 2;

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
        Report { events: 0, failures: 0, elapsed: Duration::ZERO, latency: new_histogram() }
    }

    fn merge(&mut self, other: Report) {
        self.events += other.events;
        self.failures += other.failures;
        self.latency.add(other.latency).expect("histograms of the same bounds");
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
    let requests: Vec<(SocketAddr, Vec<u8>)> =
        targets.iter().map(|target| (target.addr, request(target, &body))).collect();
    let mut report = on_load_threads(connections, move |connection| {
        let (addr, request) = requests[connection % requests.len()].clone();
        async move {
            let mut connection = connect(addr).await?;
            let mut report = Report::new();
            let mut sent_requests = 0;
            while match until {
                Until::Elapsed(duration) => started.elapsed() < duration,
                Until::Requests(requests) => sent_requests < requests,
            } {
                sent_requests += 1;
                let sent = Instant::now();
                let accepted = post(&mut connection, &request).await?;
                record(&mut report, accepted, events, sent);
            }
            Ok(report)
        }
    })
    .await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Sends `rate` requests per second for `duration`, spread over `connections`
/// (connection `i` to `targets[i % len]`), each on its schedule. Latency
/// counts from the scheduled time, so a stalled server cannot hide its stall
/// by delaying the requests that would see it.
pub async fn open_loop<F>(
    targets: &[Target],
    rate: u32,
    connections: usize,
    duration: Duration,
    events: u64,
    body: F,
) -> Result<Report, BenchError>
where
    F: Fn() -> Bytes + Send + Sync + 'static,
{
    let started = Instant::now();
    let body = Arc::new(body);
    let interval = Duration::from_secs(connections as u64) / rate;
    let total = (rate as u64 * duration.as_millis() as u64 / 1000) / connections as u64;
    let targets = targets.to_vec();
    let mut report = on_load_threads(connections, move |worker| {
        let offset = interval * worker as u32 / connections as u32;
        let (target, body) = (targets[worker % targets.len()].clone(), body.clone());
        async move {
            let mut connection = connect(target.addr).await?;
            let mut report = Report::new();
            for n in 0..total {
                let scheduled = started + offset + interval * n as u32;
                tokio::time::sleep_until(scheduled).await;
                let accepted = post(&mut connection, &request(&target, &body())).await?;
                record(&mut report, accepted, events, scheduled);
            }
            Ok(report)
        }
    })
    .await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Runs `worker(i)` for each connection `i`, spread over `LOAD_THREADS`
/// threads that each drive theirs on a single-threaded runtime, as `wrk`
/// does: no hand-over between threads on the load side.
async fn on_load_threads<W, F>(connections: usize, worker: W) -> Result<Report, BenchError>
where
    W: Fn(usize) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Report, BenchError>> + 'static,
{
    let worker = Arc::new(worker);
    let threads: Vec<_> = (0..LOAD_THREADS)
        .map(|thread| {
            let worker = worker.clone();
            std::thread::spawn(move || -> Result<Report, BenchError> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async {
                    let mut workers = JoinSet::new();
                    for connection in (thread..connections).step_by(LOAD_THREADS) {
                        workers.spawn_local(worker(connection));
                    }
                    gather(workers).await
                })
            })
        })
        .collect();
    let joined = tokio::task::spawn_blocking(move || threads.into_iter().map(|t| t.join()).collect::<Vec<_>>())
        .await
        .map_err(|e| BenchError(format!("the load threads failed: {e}")))?;
    let mut total = Report::new();
    for thread in joined {
        total.merge(thread.map_err(|_| BenchError("a load thread panicked".into()))??);
    }
    Ok(total)
}

fn record(report: &mut Report, accepted: bool, events: u64, since: Instant) {
    if accepted {
        report.events += events;
    } else {
        report.failures += 1;
    }
    let micros = since.elapsed().as_micros().clamp(1, 120_000_000) as u64;
    report.latency.record(micros).expect("within the histogram's bounds");
}

async fn gather(mut workers: JoinSet<Result<Report, BenchError>>) -> Result<Report, BenchError> {
    let mut total = Report::new();
    while let Some(worker) = workers.join_next().await {
        total.merge(worker.map_err(|e| BenchError(format!("a load worker failed: {e}")))??);
    }
    Ok(total)
}

/// One keep-alive HTTP/1.1 connection that writes whole pre-built requests
/// and reads just enough of each answer: the load generator should cost the
/// machine as little as `wrk` does, so that the service gets the rest.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

async fn connect(addr: SocketAddr) -> Result<Connection, BenchError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(Connection { stream, buffer: Vec::with_capacity(4096) })
}

/// The bytes of a `POST` of `body` to the target.
fn request(target: &Target, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nX-Produktly-Key: {}\r\n\
         Content-Length: {}\r\n\r\n",
        target.path,
        target.key,
        body.len()
    );
    [head.as_bytes(), body].concat()
}

/// Sends one request; `true` when the service answered `202`.
async fn post(connection: &mut Connection, request: &[u8]) -> Result<bool, BenchError> {
    connection.stream.write_all(request).await?;
    let buffer = &mut connection.buffer;
    buffer.clear();
    let head_end = loop {
        if let Some(end) = memchr::memmem::find(buffer, b"\r\n\r\n") {
            break end + 4;
        }
        read_more(&mut connection.stream, buffer).await?;
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| BenchError("a non-UTF-8 answer".into()))?;
    let accepted = head.split(' ').nth(1).ok_or_else(|| BenchError("no status line".into()))? == "202";
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| BenchError("an answer without Content-Length".into()))?;
    while buffer.len() < head_end + length {
        read_more(&mut connection.stream, buffer).await?;
    }
    Ok(accepted)
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), BenchError> {
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        return Err(BenchError("the service closed the connection".into()));
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}
