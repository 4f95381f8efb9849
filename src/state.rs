//! The state every request handler shares: settings, the store, metrics and
//! the ingest, admin and delivery parts it talks to. `app` builds it.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;

use crate::client_ip::ClientIps;
use crate::committer::Committer;
use crate::config::Settings;
use crate::delivery::Backlog;
use crate::ingest_keys::IngestKeys;
use crate::metrics::Metrics;
use crate::queue_depth::QueueDepth;
use crate::rate_limit::RateLimits;
use crate::secrets::Secrets;
use crate::segment::SegmentClient;
use crate::store::Store;

/// What every request handler may use. Handlers get a clone per request, so
/// it is one `Arc`.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub secrets: Secrets,
    pub committer: Committer,
    /// Undelivered events, as far as this instance knows; gates ingest.
    pub queue_depth: QueueDepth,
    pub ingest_keys: IngestKeys,
    pub segment: SegmentClient,
    /// What is waiting for delivery; marking it wakes delivery.
    pub backlog: Arc<Backlog>,
    pub client_ips: ClientIps,
    pub rate_limits: RateLimits,
    /// The OpenAPI document (JSON), set once the routes are built.
    pub openapi: OnceLock<String>,
}

impl Shared {
    /// The client's address (behind trusted proxies, the one they report).
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
        Some(self.client_ips.client(peer, &parts.headers))
    }
}
