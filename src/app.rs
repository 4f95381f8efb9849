//! Wiring: `App::build(settings)` opens the store, binds the listener and
//! prepares the workers; `App::run` serves until told to stop, then drains.
//! Tests run exactly this, on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::client_ip::ClientIps;
use crate::committer::Committer;
use crate::config::Settings;
use crate::delivery::{Backlog, Delivery, DeliveryParts, Janitor};
use crate::ingest_keys::IngestKeys;
use crate::metrics::Metrics;
use crate::openapi;
use crate::queue_depth::QueueDepth;
use crate::rate_limit::RateLimits;
use crate::secrets::{Secrets, SecretsError};
use crate::segment::{BatchLimits, SegmentClient};
use crate::server::{self, ConnectionLimits};
use crate::state::{AppState, Shared};
use crate::store::{self, OnEvents, StoreError};
use crate::{admin, error, ingest, ops, sdk};

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
    state: AppState,
    router: Router,
    connection_limits: ConnectionLimits,
    delivery: Arc<Delivery>,
    janitor: Janitor,
    committer: JoinHandle<()>,
}

impl App {
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        let secrets = Secrets::resolve(&settings)?;
        let store = store::connect(&settings).await?;
        let queue_depth = QueueDepth::default();
        let metrics = Arc::new(Metrics::new(&queue_depth, &store.connection_counts()));
        let backlog = Arc::new(Backlog::default());
        let (committer, committer_task) =
            Committer::spawn(store.clone(), metrics.clone(), queue_depth.clone(), backlog.clone(), &settings.ingest);
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
            client: segment.clone(),
            sealer: secrets.sealer.clone(),
            metrics: metrics.clone(),
            queue_depth: queue_depth.clone(),
            backlog: backlog.clone(),
        };
        let limits = BatchLimits {
            max_messages: settings.segment.max_batch_messages,
            max_bytes: settings.segment.max_batch_bytes,
        };
        let delivery = Arc::new(Delivery::new(parts, settings.delivery.clone(), limits));
        let janitor = Janitor {
            store: store.clone(),
            metrics: metrics.clone(),
            queue_depth: queue_depth.clone(),
            interval: settings.delivery.janitor_interval(),
            max_age: settings.delivery.max_age(),
            dead_letter_retention: settings.delivery.dead_letter_retention(),
            identity_retention: settings.delivery.identity_retention(),
        };
        let state = AppState(Arc::new(Shared {
            ingest_keys: IngestKeys::new(store.clone(), settings.ingest.key_cache_ttl()),
            client_ips: ClientIps::new(
                settings.ingest.trusted_proxies.clone(),
                settings.ingest.ip_policy,
                metrics.forwarded_for_ignored.clone(),
            ),
            rate_limits: RateLimits::new(&settings),
            openapi: OnceLock::new(),
            settings,
            store,
            metrics,
            secrets,
            committer,
            queue_depth,
            segment,
            backlog,
        }));
        let (router, document) = routes(state.clone());
        let _ = state.openapi.set(document.to_json().expect("the OpenAPI document serializes"));
        Ok(App { listener, state, router, connection_limits, delivery, janitor, committer: committer_task })
    }

    /// The address the server listens on (the real port when configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where the generated admin token is, when it was generated.
    pub fn admin_token_file(&self) -> Option<&PathBuf> {
        self.state.secrets.admin_token_file.as_ref()
    }

    /// Serves and delivers until `stop` is cancelled. Then stops taking
    /// requests, answers those in flight (committing what they handed over)
    /// and lets deliveries in flight finish; whatever still runs after the
    /// shutdown timeout is cut off, its events left in or given back to the queue.
    pub async fn run(self, stop: CancellationToken) {
        let App { listener, state, router, connection_limits, delivery, janitor, committer } = self;
        let timeout = state.settings.shutdown_timeout();
        let delivery = tokio::spawn(delivery.run(stop.clone(), timeout));
        let janitor = tokio::spawn(janitor.run(stop.clone()));
        let listener_task = {
            let (store, backlog, stop) = (state.store.clone(), state.backlog.clone(), stop.clone());
            let on_events: OnEvents = Arc::new(move |workspaces| backlog.mark(workspaces.iter().map(String::as_str)));
            tokio::spawn(async move { store.listen_for_events(on_events, stop).await })
        };
        let metrics = state.metrics.clone();
        // The last handle here: the commit task ends once every handle is gone.
        let forgetting = tokio::spawn(forget_idle_rate_limits(state, stop.clone()));
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
    }
}

/// Keeps the rate limiters' memory to the clients seen lately.
async fn forget_idle_rate_limits(state: AppState, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => state.rate_limits.forget_idle(),
        }
    }
}

/// Completes `timeout` after `stop` is cancelled.
async fn after_stop(stop: &CancellationToken, timeout: Duration) {
    stop.cancelled().await;
    tokio::time::sleep(timeout).await;
}

/// Every route, and the OpenAPI document of them all.
fn routes(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (ingest, ingest_api) = ingest::router(state.clone());
    let (admin, admin_api) = admin::router(state.clone());
    let (ops, ops_api) = ops::router();
    let (sdk, sdk_api) = sdk::router();
    let document = openapi::document([ingest_api, admin_api, ops_api, sdk_api], state.settings.ingest.max_batch_events);
    let router = ingest
        .merge(admin)
        .merge(ops)
        .merge(sdk)
        .fallback(error::no_such_endpoint)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), ingest::read_first))
        // Outside the body reader, so that its answers (408, 413) carry CORS too.
        .layer(axum::middleware::from_fn_with_state(state.clone(), ingest::cors))
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    (router, document)
}
