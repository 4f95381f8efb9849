//! The HTTP server every route (ingest, admin, ops) is served by: it accepts
//! connections up to a bound below the process's open-file limit, serves each
//! with HTTP/1.1 under deadlines for the request head and for idle keep-alive
//! (`connection`), and on stop closes what is idle and lets requests in
//! flight finish.
//!
//! Why not `axum::serve`: it bounds neither the time a client may take to
//! send a request head nor the connections held, so a few thousand slow
//! clients (slowloris) use up the file descriptors and the listener can
//! accept no one else.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::HttpSettings;
use crate::metrics::Metrics;

/// File descriptors kept for everything but client connections: the
/// database pool, SQLite's files, connections to Segment, logs, the runtime.
const RESERVED_FILES: u64 = 256;
/// How long accepting pauses after a failed accept (out of descriptors, memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Failed accepts are logged at most once in this time (they are all counted).
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Connections the kernel may hold for the listener before it accepts them
/// (capped by `net.core.somaxconn`): where new connections wait at the bound.
const BACKLOG: u32 = 4096;

/// Listens on `address`, with room in the kernel's backlog for the
/// connections that wait while the server is at its bound.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// What every connection is held to.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From a request head's first byte (or the connection's start) to its end.
    pub header_timeout: Duration,
    /// Between two requests on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Connections open at once; beyond, new ones wait in the kernel's backlog.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The limits the settings ask for, the bound kept below `file_limit`
    /// (the process's open-file limit) less what the rest of the service needs.
    pub fn new(settings: &HttpSettings, file_limit: u64) -> ConnectionLimits {
        let room = file_limit.saturating_sub(RESERVED_FILES.min(file_limit / 2));
        let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
        let max_connections = match settings.max_connections {
            0 => room,
            asked if asked > room => {
                tracing::warn!(
                    asked,
                    allowed = room,
                    file_limit,
                    "http.max_connections lowered to fit the open-file limit"
                );
                room
            }
            asked => asked,
        };
        ConnectionLimits {
            header_timeout: settings.header_timeout(),
            idle_timeout: settings.idle_timeout(),
            max_connections,
        }
    }
}

/// Raises the soft limit of open files to the hard limit, as Go's runtime
/// does (the soft default, often 1,024, is far below what a server needs),
/// and returns the limit in force.
pub fn raise_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open-file limit");
            limit
        }
        Err(error) => {
            let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
            tracing::warn!(%error, limit = soft, "could not raise the open-file limit");
            soft
        }
    }
}

/// What the accept loop and the connections share.
struct Shared {
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    /// Set while a connection waits for room: idle connections then close.
    crowded: AtomicBool,
    stop: CancellationToken,
}

/// Serves `router` on `listener` until `stop` is cancelled; then stops
/// accepting, closes idle connections, and returns once the requests in
/// flight have been answered. Dropped before that (at the shutdown
/// deadline), it aborts the connections still open.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    metrics.http_connections_limit.set(i64::try_from(limits.max_connections).unwrap_or(i64::MAX));
    let shared = Arc::new(Shared { limits, metrics, crowded: AtomicBool::new(false), stop });
    let room = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    // Not cancelled between connections: it may hold one that waits for room.
    let mut next = Box::pin(accept(&listener, &room, &shared));
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (stream, peer, permit) = &mut next => {
                connections.spawn(connection::serve(stream, peer, router.clone(), shared.clone(), permit));
                next.set(accept(&listener, &room, &shared));
            }
        }
    }
    drop(next);
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Waits for a connection, then for room for it under the bound. While a
/// connection waits for room (holding one descriptor of the reserve) the
/// server is crowded, and idle keep-alive connections give theirs up; the
/// connections behind it wait in the kernel's backlog. Failed accepts (out of
/// descriptors or memory) are counted and retried after a pause.
async fn accept(
    listener: &TcpListener,
    room: &Arc<Semaphore>,
    shared: &Shared,
) -> (tokio::net::TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let mut last_logged: Option<Instant> = None;
    let (stream, peer) = loop {
        match listener.accept().await {
            Ok(accepted) => break accepted,
            Err(error) if is_per_connection(&error) => {}
            Err(error) => {
                shared.metrics.http_accept_errors.inc();
                if last_logged.is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    tracing::warn!(%error, "accepting connections fails; retrying (see produktly_http_accept_errors_total)");
                    last_logged = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    };
    let permit = match room.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            shared.crowded.store(true, Ordering::Relaxed);
            let permit = room.clone().acquire_owned().await.expect("the semaphore is never closed");
            shared.crowded.store(false, Ordering::Relaxed);
            permit
        }
    };
    (stream, peer, permit)
}

/// Errors of one connection that was gone before it was accepted: nothing
/// is wrong with the listener.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;
    use figment::providers::Serialized;

    fn limits(max_connections: usize, file_limit: u64) -> ConnectionLimits {
        let figment = Settings::defaults().merge(Serialized::default("http.max_connections", max_connections));
        ConnectionLimits::new(&Settings::extract(figment).unwrap().http, file_limit)
    }

    #[test]
    fn the_bound_stays_below_the_file_limit() {
        assert_eq!(limits(0, 4096).max_connections, 3840);
        assert_eq!(limits(0, 512).max_connections, 256);
        assert_eq!(limits(0, 100).max_connections, 50);
        assert_eq!(limits(1000, 4096).max_connections, 1000);
        assert_eq!(limits(10_000, 4096).max_connections, 3840);
    }
}
