//! One client connection, served with HTTP/1.1 under the server's deadlines:
//! its request head must be complete within the header timeout of its first
//! byte (or of the connection's start), else it gets `408` and is closed; it
//! may sit idle between requests for the idle timeout, or until the server is
//! crowded, then it is closed. While a request is served (its body read, the
//! router answering) no deadline of this module applies: the body has its
//! own (`ingest.body_timeout_ms`).
//!
//! Where the connection is, the socket and the router tell (`Activity`): a
//! read after the last answer starts a head, the router's call ends it, the
//! router's answer starts an idle time. The timer is lazy: it wakes at the
//! earliest time a deadline could pass, at most a check period ahead, and
//! looks where the connection is; so a request costs no timer change.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tower::Service;

use super::Shared;
use crate::http::error::ApiError;
use crate::metrics::Reason;

/// Longest wait between two looks at an idle or busy connection: how soon an
/// idle one notices the server is crowded.
const CHECK_PERIOD: Duration = Duration::from_secs(1);
/// hyper's read and write buffer per connection: the largest request head
/// (`431` beyond) and what a slow client can make the service hold.
const MAX_BUFFER: usize = 64 * 1024;

/// Why a connection ended, as counted in `produktly_http_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    /// The request head did not arrive within the header timeout.
    HeaderTimeout,
    /// Idle for longer than the idle timeout.
    IdleTimeout,
    /// Idle while a new connection waited for room under the bound.
    Crowded,
    /// The service is stopping.
    Shutdown,
    /// The client closed it (or asked to, with `Connection: close`), or its socket failed.
    Client,
    /// The client sent something that is not HTTP/1.1 (hyper answered `400` or `431`).
    Malformed,
}

impl Closed {
    fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Crowded => "crowded",
            Closed::Shutdown => "shutdown",
            Closed::Client => "client",
            Closed::Malformed => "malformed",
        }
    }
}

/// Serves one accepted connection until it closes, holding its place under
/// the server's bound (`_room`) until then.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    shared: Arc<Shared>,
    _room: OwnedSemaphorePermit,
) {
    let metrics = &shared.metrics;
    metrics.http_connections_open.inc();
    // Small answers go out at once rather than wait for an acknowledgement.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { stream, activity: activity.clone() });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |mut request: hyper::Request<Incoming>| {
            activity.request_started();
            request.extensions_mut().insert(ConnectInfo(peer));
            Answering { response: router.clone().call(request), activity: activity.clone() }
        }
    });
    let mut connection =
        http1::Builder::new().max_buf_size(MAX_BUFFER).header_read_timeout(None).serve_connection(io, service);
    let closed = match drive(&mut connection, &activity, &shared).await {
        Ending::Finished(closed) => closed,
        Ending::HeadTooSlow(began) => {
            let stream = connection.into_parts().io.into_inner().stream;
            if began {
                // One try, no wait: a client that does not read gets no answer.
                let _ = stream.try_write(&request_timeout_answer());
            }
            Closed::HeaderTimeout
        }
        Ending::Drop(closed) => closed,
    };
    metrics.http_connections_closed.get_or_create(&Reason { reason: closed.as_str() }).inc();
    metrics.http_connections_open.dec();
}

type Connection<S> = http1::Connection<TokioIo<Watched>, S>;

/// How driving a connection ended.
enum Ending {
    /// hyper finished with it.
    Finished(Closed),
    /// Its head did not arrive in time (`true`: some of it did).
    HeadTooSlow(bool),
    /// It is to be dropped without more ado.
    Drop(Closed),
}

/// Polls the connection, and on each wake of the lazy timer holds it to its
/// deadlines; answers stop and crowding.
async fn drive<S>(connection: &mut Connection<S>, activity: &Activity, shared: &Shared) -> Ending
where
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body, Error = std::convert::Infallible>,
{
    let limits = &shared.limits;
    let check_period = CHECK_PERIOD.min(limits.header_timeout);
    let mut timer = Box::pin(tokio::time::sleep(check_period));
    let mut stopping = Box::pin(shared.stop.clone().cancelled_owned());
    // Why the service asked the connection to close, once it has.
    let mut closing: Option<Closed> = None;
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = Pin::new(&mut *connection).poll(cx) {
                return Poll::Ready(Ending::Finished(closing.unwrap_or_else(|| closed_by(&result))));
            }
            if closing.is_none() && stopping.as_mut().poll(cx).is_ready() {
                if !activity.is_busy() {
                    return Poll::Ready(Ending::Drop(Closed::Shutdown));
                }
                // The answer in flight goes out; then hyper closes.
                closing = Some(Closed::Shutdown);
                Pin::new(&mut *connection).graceful_shutdown();
                continue;
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            match activity.due(now, limits.header_timeout, limits.idle_timeout, check_period) {
                Due::At(deadline) => timer.as_mut().reset(deadline),
                Due::HeadTooSlow { began } => return Poll::Ready(Ending::HeadTooSlow(began)),
                Due::Idle { expired } => {
                    if let Some(closed) = closing {
                        // Asked to close a check period ago and still open:
                        // stuck writing to a client that does not read.
                        return Poll::Ready(Ending::Drop(closed));
                    }
                    if expired || shared.crowded.load(Ordering::Relaxed) {
                        closing = Some(if expired { Closed::IdleTimeout } else { Closed::Crowded });
                        // Closes at once when idle, else after the request under way.
                        Pin::new(&mut *connection).graceful_shutdown();
                    }
                    timer.as_mut().reset(now + check_period);
                }
            }
        }
    })
    .await
}

/// Why hyper ended a connection the service did not ask to close.
fn closed_by(result: &Result<(), hyper::Error>) -> Closed {
    match result {
        Err(error) if error.is_parse() || error.is_parse_too_large() => Closed::Malformed,
        _ => Closed::Client,
    }
}

/// The `408` written to a connection whose head did not arrive in time.
fn request_timeout_answer() -> Vec<u8> {
    let error = ApiError::HeaderTimeout;
    let body = serde_json::to_string(&error.body()).expect("an error body serializes");
    let status = error.status();
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    )
    .into_bytes()
}

/// Where a connection is in its cycle of requests, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head (from its first byte, or from the start).
    Head,
    /// A request is being served.
    Busy,
    /// Between an answer and the next request's first byte.
    Idle,
}

/// What the timer should do next.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// Wake again then.
    At(Instant),
    /// The head's deadline passed (`began`: some of it had arrived).
    HeadTooSlow { began: bool },
    /// The connection is idle; `expired` once for longer than the idle timeout.
    Idle { expired: bool },
}

/// The phase of a connection and when it began, as the socket (reads) and
/// the router (calls and answers) report it. One word, so that the socket,
/// the router's future and the driver, all polled by the connection's task,
/// share it without a lock.
struct Activity {
    opened: Instant,
    /// Phase in the top two bits, its start in milliseconds since `opened` in the rest.
    state: AtomicU64,
}

const PHASE_SHIFT: u32 = 62;
const SINCE_MASK: u64 = (1 << PHASE_SHIFT) - 1;
/// A head is waited for from the start, but no byte of it has come yet.
const NOTHING_YET: u64 = 3;

impl Activity {
    fn new() -> Activity {
        Activity { opened: Instant::now(), state: AtomicU64::new(NOTHING_YET << PHASE_SHIFT) }
    }

    fn set(&self, phase: Phase, at: Instant) {
        let since = u64::try_from(at.duration_since(self.opened).as_millis()).unwrap_or(SINCE_MASK) & SINCE_MASK;
        let code = match phase {
            Phase::Head => 0,
            Phase::Busy => 1,
            Phase::Idle => 2,
        };
        self.state.store(code << PHASE_SHIFT | since, Ordering::Relaxed);
    }

    /// The phase, its start, and whether a byte of the current head has come.
    fn get(&self) -> (Phase, Instant, bool) {
        let state = self.state.load(Ordering::Relaxed);
        let since = self.opened + Duration::from_millis(state & SINCE_MASK);
        match state >> PHASE_SHIFT {
            0 => (Phase::Head, since, true),
            1 => (Phase::Busy, since, true),
            2 => (Phase::Idle, since, true),
            _ => (Phase::Head, since, false),
        }
    }

    /// Bytes came in: after an answer, the next request's head has begun.
    fn bytes_read(&self) {
        let state = self.state.load(Ordering::Relaxed);
        match state >> PHASE_SHIFT {
            2 => self.set(Phase::Head, Instant::now()),
            NOTHING_YET => self.state.store(state & SINCE_MASK, Ordering::Relaxed),
            _ => {}
        }
    }

    fn request_started(&self) {
        self.set(Phase::Busy, self.opened);
    }

    fn request_answered(&self) {
        self.set(Phase::Idle, Instant::now());
    }

    fn is_busy(&self) -> bool {
        self.get().0 == Phase::Busy
    }

    /// What the timer, woken at `now`, does next. It never sleeps past a
    /// check period ahead, so that a head that begins later has its deadline
    /// after the timer's next wake, and an idle connection sees soon that the
    /// server is crowded.
    fn due(&self, now: Instant, header_timeout: Duration, idle_timeout: Duration, check_period: Duration) -> Due {
        let (phase, since, began) = self.get();
        match phase {
            Phase::Head if now >= since + header_timeout => Due::HeadTooSlow { began },
            Phase::Head => Due::At((since + header_timeout).min(now + check_period)),
            Phase::Busy => Due::At(now + check_period),
            Phase::Idle => Due::Idle { expired: now >= since + idle_timeout },
        }
    }
}

/// The socket, reporting reads to the connection's `Activity`.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// The router's answer to one request; once it is ready the connection is idle.
    struct Answering {
        #[pin]
        response: axum::routing::future::RouteFuture<std::convert::Infallible>,
        activity: Arc<Activity>,
    }
}

impl Future for Answering {
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.response.poll(cx));
        this.activity.request_answered();
        Poll::Ready(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);
    const CHECK: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_head_is_due_from_the_start_then_from_its_first_byte() {
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(activity.due(start, HEADER, IDLE, CHECK), Due::At(start + CHECK));
        assert_eq!(activity.due(start + HEADER - CHECK / 2, HEADER, IDLE, CHECK), Due::At(start + HEADER));
        assert_eq!(activity.due(start + HEADER, HEADER, IDLE, CHECK), Due::HeadTooSlow { began: false });
        activity.bytes_read();
        // Bytes of the first head do not move its deadline.
        assert_eq!(activity.due(start + HEADER, HEADER, IDLE, CHECK), Due::HeadTooSlow { began: true });

        activity.request_started();
        tokio::time::advance(Duration::from_secs(30)).await;
        let now = Instant::now();
        assert_eq!(activity.due(now, HEADER, IDLE, CHECK), Due::At(now + CHECK));
        activity.request_answered();
        assert_eq!(activity.due(now, HEADER, IDLE, CHECK), Due::Idle { expired: false });
        assert_eq!(activity.due(now + IDLE, HEADER, IDLE, CHECK), Due::Idle { expired: true });

        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        let first_byte = Instant::now();
        assert_eq!(activity.due(first_byte, HEADER, IDLE, CHECK), Due::At(first_byte + CHECK));
        tokio::time::advance(Duration::from_secs(3)).await;
        activity.bytes_read();
        assert_eq!(activity.due(first_byte + HEADER, HEADER, IDLE, CHECK), Due::HeadTooSlow { began: true });
    }

    #[test]
    fn the_timeout_answer_is_a_complete_http_response() {
        let answer = String::from_utf8(request_timeout_answer()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "header_timeout");
    }
}
