//! Wiring: `App::build(settings)` opens the store, binds the listener and
//! prepares the workers; `App::run` serves until told to stop, then drains.
//! Tests run exactly this, on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::activity::Activity;
use crate::admin::{self, Admin, AdminState};
use crate::config::Settings;
use crate::delivery::segment::{BatchLimits, SegmentClient};
use crate::delivery::{Delivery, DeliveryParts, Janitor};
use crate::http::client_ip::ClientIps;
use crate::http::ops::{self, OpsState};
use crate::http::rate_limit::RateLimit;
use crate::http::server::{self, ConnectionLimits};
use crate::http::{debugger, error, openapi, sdk};
use crate::ingest::committer::Committer;
use crate::ingest::keys::IngestKeys;
use crate::ingest::{self, Ingest, IngestState};
use crate::metrics::Metrics;
use crate::queue::depth::QueueDepth;
use crate::queue::{Gathering, Queue};
use crate::secrets::{Secrets, SecretsError};
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

pub struct App {
    listener: TcpListener,
    router: Router,
    connection_limits: ConnectionLimits,
    settings: Settings,
    queue: Queue,
    metrics: Arc<Metrics>,
    /// Kept to forget idle clients of their rate limits.
    ingest: IngestState,
    admin: AdminState,
    admin_token_file: Option<PathBuf>,
    delivery: Arc<Delivery>,
    janitor: Janitor,
    /// Its live tails end when the service stops.
    activity: Arc<Activity>,
    committer: JoinHandle<()>,
}

impl App {
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        let secrets = Secrets::resolve(&settings)?;
        let store = store::connect(&settings).await?;
        let depth = QueueDepth::default();
        let metrics = Arc::new(Metrics::new([depth.collector(), store.connection_counts().collector()]));
        let limits = BatchLimits {
            max_messages: settings.segment.max_batch_messages,
            max_bytes: settings.segment.max_batch_bytes,
        };
        let gathering = Gathering { linger: settings.delivery.linger(), fill: limits.usual_fill() };
        let queue = Queue::new(store.clone(), metrics.clone(), depth, gathering);
        let activity = Arc::new(Activity::new(settings.activity.clone()));
        let (committer, committer_task) = Committer::spawn(queue.clone(), &settings.ingest);
        let segment = SegmentClient::new(&settings.segment)?;
        let listener =
            server::bind(settings.listen).map_err(|source| StartError::Bind { address: settings.listen, source })?;
        let connection_limits = ConnectionLimits::new(&settings.http, server::raise_file_limit());
        tracing::info!(
            max_connections = connection_limits.max_connections,
            header_timeout_ms = settings.http.header_timeout_ms,
            idle_timeout_ms = settings.http.idle_timeout_ms,
            "client connections"
        );
        let parts = DeliveryParts {
            store: store.clone(),
            queue: queue.clone(),
            client: segment.clone(),
            sealer: secrets.sealer.clone(),
            metrics: metrics.clone(),
            activity: activity.clone(),
        };
        let delivery = Arc::new(Delivery::new(parts, settings.delivery.clone(), limits));
        let janitor = Janitor {
            store: store.clone(),
            queue: queue.clone(),
            metrics: metrics.clone(),
            interval: settings.delivery.janitor_interval(),
            max_age: settings.delivery.max_age(),
            dead_letter_retention: settings.delivery.dead_letter_retention(),
            identity_retention: settings.delivery.identity_retention(),
        };
        let ingest_keys = IngestKeys::new(store.clone(), settings.ingest.key_cache_ttl());
        let client_ips = Arc::new(ClientIps::new(
            settings.ingest.trusted_proxies.clone(),
            settings.ingest.ip_policy,
            metrics.forwarded_for_ignored.clone(),
        ));
        let ingest = IngestState::new(Ingest {
            settings: settings.ingest.clone(),
            keys: ingest_keys.clone(),
            committer,
            queue: queue.clone(),
            client_ips: client_ips.clone(),
            per_client: RateLimit::per_sec(settings.ingest.ip_requests_per_sec),
            per_workspace: RateLimit::per_sec(settings.ingest.key_requests_per_sec),
            metrics: metrics.clone(),
            activity: activity.clone(),
        });
        let admin_token_file = secrets.admin_token_file.clone();
        let admin = AdminState::new(Admin {
            store: store.clone(),
            queue: queue.clone(),
            secrets,
            ingest_keys,
            segment,
            client_ips,
            per_client: RateLimit::per_sec(settings.admin_requests_per_sec),
            activity: activity.clone(),
        });
        let ops = OpsState { store: store.clone(), metrics: metrics.clone(), openapi: Arc::default() };
        let router = routes(&ingest, &admin, &ops, &settings);
        Ok(App {
            listener,
            router,
            connection_limits,
            settings,
            queue,
            metrics,
            ingest,
            admin,
            admin_token_file,
            delivery,
            janitor,
            activity,
            committer: committer_task,
        })
    }

    /// The address the server listens on (the real port when configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where the generated admin token is, when it was generated.
    pub fn admin_token_file(&self) -> Option<&PathBuf> {
        self.admin_token_file.as_ref()
    }

    /// Serves and delivers until `stop` is cancelled. Then stops taking
    /// requests, answers those in flight (committing what they handed over)
    /// and lets deliveries in flight finish; whatever still runs after the
    /// shutdown timeout is cut off, its events left in or given back to the queue.
    pub async fn run(self, stop: CancellationToken) {
        let App {
            listener,
            router,
            connection_limits,
            settings,
            queue,
            metrics,
            ingest,
            admin,
            admin_token_file: _,
            delivery,
            janitor,
            activity,
            committer,
        } = self;
        let timeout = settings.shutdown_timeout();
        let delivery = tokio::spawn(delivery.run(stop.clone(), timeout));
        let janitor = tokio::spawn(janitor.run(stop.clone()));
        let listener_task = {
            let stop = stop.clone();
            tokio::spawn(async move { queue.listen_for_announcements(stop).await })
        };
        // The last handle here: the commit task ends once every handle is gone.
        let forgetting = tokio::spawn(forget_idle_rate_limits(ingest, admin, stop.clone()));
        let closing = {
            let stop = stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                activity.close();
            })
        };
        tokio::select! {
            () = server::serve(listener, router, connection_limits, metrics, stop.clone()) => {}
            () = after_stop(&stop, timeout) => {
                tracing::warn!("requests still in flight at the shutdown deadline; closing them");
            }
        };
        // The server and its router are gone, and with them the last committer
        // handle: the commit task finishes what it holds and ends.
        let _ = committer.await;
        let _ = delivery.await;
        let _ = janitor.await;
        let _ = listener_task.await;
        let _ = forgetting.await;
        let _ = closing.await;
    }
}

/// Runs the service until SIGTERM or Ctrl-C, then drains (what
/// `produktly-segment serve` does).
pub async fn serve_until_signalled(settings: Settings) -> Result<(), StartError> {
    let app = App::build(settings).await?;
    tracing::info!(address = %app.local_addr(), "listening");
    if let Some(path) = app.admin_token_file() {
        tracing::info!(path = %path.display(), "the admin API token is in this file");
    }
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    app.run(stop).await;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels on SIGTERM or Ctrl-C.
async fn cancel_on_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("stopping: finishing requests and deliveries in flight");
    stop.cancel();
}

/// Keeps the rate limiters' memory to the clients seen lately.
async fn forget_idle_rate_limits(ingest: IngestState, admin: AdminState, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {
                ingest.forget_idle();
                admin.per_client.forget_idle();
            }
        }
    }
}

/// Completes `timeout` after `stop` is cancelled.
async fn after_stop(stop: &CancellationToken, timeout: Duration) {
    stop.cancelled().await;
    tokio::time::sleep(timeout).await;
}

/// Every route, each area with its state; the OpenAPI document of them all
/// goes to the ops state.
fn routes(ingest: &IngestState, admin: &AdminState, ops: &OpsState, settings: &Settings) -> Router {
    let (ingest_routes, ingest_api) = ingest::router(ingest.clone());
    let (admin_routes, admin_api) = admin::router(admin.clone());
    let (ops_routes, ops_api) = ops::router();
    let (sdk_routes, sdk_api) = sdk::router();
    let document = openapi::document([ingest_api, admin_api, ops_api, sdk_api], settings.ingest.max_batch_events);
    let _ = ops.openapi.set(document.to_json().expect("the OpenAPI document serializes"));
    ingest_routes
        .with_state(ingest.clone())
        .merge(admin_routes.with_state(admin.clone()))
        .merge(ops_routes.with_state(ops.clone()))
        .merge(sdk_routes)
        .merge(debugger::router(&settings.activity.debugger_frame_ancestors))
        .fallback(error::no_such_endpoint)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(ingest.clone(), ingest::read_first))
        // Outside the body reader, so that its answers (408, 413) carry CORS too.
        .layer(axum::middleware::from_fn_with_state(ingest.clone(), ingest::cors))
        .layer(TraceLayer::new_for_http())
}
