//! `bench --slow-clients N`: the service under a low open-file limit
//! (`--file-limit`) against `--idle-clients` keep-alive connections that made
//! one request and sit idle, then N connections that send a request head a
//! byte at a time (slowloris), while a real client sends one event every
//! 100 ms, each on a new connection. Measured: when the service closed the
//! slow and idle connections, how the real requests sent after the first
//! header timeout were answered, and the service's memory.

use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::load::new_histogram;
use super::mock::MockSegment;
use super::service::Service;
use super::{BenchArgs, BenchError, body, scratch_database, thousands};
use produktly_segment::Settings;

/// How long the attack and the real requests go on.
const SCENARIO: Duration = Duration::from_secs(60);
/// The share of the slow connections to be closed by this time.
const CLOSED_BY: Duration = Duration::from_secs(45);
/// A slow client sends one more header byte this often.
const TRICKLE: Duration = Duration::from_secs(5);
/// The real client sends this often.
const REAL_EVERY: Duration = Duration::from_millis(100);

pub async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    // The load needs a descriptor per connection, beyond the service's limit.
    produktly_segment::http::server::raise_file_limit();
    let header_timeout =
        Settings::extract(Settings::defaults()).map_err(|e| BenchError(e.to_string()))?.http.header_timeout();
    let mock = MockSegment::start(Instant::now()).await?;
    let database = scratch_database(args).await?;
    let service =
        Service::start_with_file_limit(&database.url, database.dir.path(), &mock.url(), args.file_limit).await?;
    let key = service.workspace("slow-clients").await?;
    let resting_rss = service.current_rss().unwrap_or(0);
    let addr = service.addr;

    let start = Instant::now();
    let idle = spawn_all(args.idle_clients, || idle_client(addr, start));
    // The idle ones have made their request before the attack begins.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let slow = spawn_all(args.slow_clients, || slow_client(addr, start));
    let real = tokio::spawn(real_client(addr, key, start));

    let idle = closing_times(idle).await?;
    let slow = closing_times(slow).await?;
    let real = real.await.map_err(|e| BenchError(e.to_string()))?;
    let peak_rss = service.peak_rss().unwrap_or(0);
    let closed_by_reason = service.metrics_matching("produktly_http_connections_closed_total").await;

    let after = header_timeout + Duration::from_secs(1);
    let (late, early): (Vec<_>, Vec<_>) = real.iter().partition(|request| request.sent >= after);
    println!(
        "\nslow clients ({:?} backend): open-file limit {}, header timeout {} s; {} idle and {} slow connections, \
         a real request every {} ms for {} s\n",
        args.backend,
        args.file_limit,
        header_timeout.as_secs(),
        args.idle_clients,
        args.slow_clients,
        REAL_EVERY.as_millis(),
        SCENARIO.as_secs()
    );
    println!("| figure | result |");
    println!("|--------|--------|");
    println!("| slow connections closed by the service | {} |", closing_summary(&slow, args.slow_clients));
    println!(
        "| slow connections closed within {} s | {:.1} % |",
        CLOSED_BY.as_secs(),
        100.0 * slow.iter().filter(|at| **at <= CLOSED_BY).count() as f64 / args.slow_clients.max(1) as f64
    );
    println!("| idle connections closed by the service | {} |", closing_summary(&idle, args.idle_clients));
    println!("| real requests sent after {} s | {} |", after.as_secs(), answers_summary(&late));
    println!("| real requests sent before | {} |", answers_summary(&early));
    println!("| service memory | {} MB at rest, peak {} MB |", resting_rss / 1_000_000, peak_rss / 1_000_000);
    println!("| connections closed, by reason | {} |", closed_by_reason.join(", "));
    service.stop()?;
    drop(database);
    Ok(())
}

fn spawn_all<F, Fut>(count: usize, client: F) -> Vec<JoinHandle<Option<Duration>>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<Duration>> + Send + 'static,
{
    (0..count).map(|_| tokio::spawn(client())).collect()
}

/// When each connection was closed by the service, for those it closed.
async fn closing_times(tasks: Vec<JoinHandle<Option<Duration>>>) -> Result<Vec<Duration>, BenchError> {
    let mut closed = Vec::new();
    for task in tasks {
        closed.extend(task.await.map_err(|e| BenchError(e.to_string()))?);
    }
    closed.sort();
    Ok(closed)
}

/// Sends part of a request head, then a byte every `TRICKLE`, until the
/// service answers or closes (returns when, from `start`) or the scenario ends.
async fn slow_client(addr: SocketAddr, start: Instant) -> Option<Duration> {
    let end = start + SCENARIO;
    let mut stream = tokio::time::timeout_at(end, TcpStream::connect(addr)).await.ok()?.ok()?;
    stream.write_all(b"POST /v1/track HTTP/1.1\r\nHost: bench\r\nX-Trickle: ").await.ok()?;
    let mut ticks = tokio::time::interval(TRICKLE);
    ticks.tick().await;
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            _ = stream.read(&mut buf) => return Some(start.elapsed()),
            _ = ticks.tick() => if stream.write_all(b"a").await.is_err() {
                return Some(start.elapsed());
            },
            () = tokio::time::sleep_until(end) => return None,
        }
    }
}

/// Makes one request on a keep-alive connection, then sits idle until the
/// service closes it (returns when, from `start`) or the scenario ends.
async fn idle_client(addr: SocketAddr, start: Instant) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n").await.ok()?;
    let mut buf = [0u8; 1024];
    let answered = stream.read(&mut buf).await.ok()?;
    if answered == 0 {
        return None;
    }
    // Any end of the wait but the scenario's (an answer, EOF, a reset) is the service closing it.
    let _closed = tokio::time::timeout_at(start + SCENARIO, stream.read(&mut buf)).await.ok()?;
    Some(start.elapsed())
}

/// One real request.
struct Sent {
    sent: Duration,
    took: Duration,
    accepted: bool,
}

/// One event every `REAL_EVERY`, each on a new connection, each awaited on
/// its own (a request held up does not hold up the next).
async fn real_client(addr: SocketAddr, key: String, start: Instant) -> Vec<Sent> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(SCENARIO).build().expect("a client");
    let mut ticks = tokio::time::interval(REAL_EVERY);
    let mut requests = Vec::new();
    while start.elapsed() < SCENARIO {
        ticks.tick().await;
        let request = http
            .post(format!("http://{addr}/v1/track"))
            .header("x-produktly-key", &key)
            .header("content-type", "application/json")
            .body(body(1));
        requests.push(tokio::spawn(async move {
            let sent = start.elapsed();
            let answer = request.send().await;
            Sent { sent, took: start.elapsed() - sent, accepted: answer.is_ok_and(|a| a.status() == 202) }
        }));
    }
    let mut sent = Vec::new();
    for request in requests {
        sent.extend(request.await.ok());
    }
    sent
}

fn closing_summary(closed: &[Duration], of: usize) -> String {
    let at = |q: f64| closed.get(((closed.len() as f64 * q) as usize).min(closed.len().saturating_sub(1)));
    let secs = |d: Option<&Duration>| d.map_or(f64::NAN, Duration::as_secs_f64);
    format!(
        "{} of {}; after {:.1} s (median), {:.1} s (p95), {:.1} s (last)",
        thousands(closed.len() as f64),
        thousands(of as f64),
        secs(at(0.5)),
        secs(at(0.95)),
        secs(closed.last())
    )
}

fn answers_summary(requests: &[&Sent]) -> String {
    let mut latency: Histogram<u64> = new_histogram();
    for request in requests {
        let _ = latency.record(request.took.as_micros().max(1) as u64);
    }
    let accepted = requests.iter().filter(|r| r.accepted).count();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "{accepted} of {} answered 202; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        requests.len(),
        ms(0.5),
        ms(0.99),
        latency.max() as f64 / 1000.0
    )
}
