//! What the ingest handlers share.

use std::net::IpAddr;
use std::sync::Arc;

use super::committer::Committer;
use super::keys::IngestKeys;
use super::strict_json::JsonLimits;
use crate::activity::Activity;
use crate::config::IngestSettings;
use crate::domain::WorkspaceId;
use crate::http::client_ip::ClientIps;
use crate::http::rate_limit::RateLimit;
use crate::metrics::Metrics;
use crate::queue::Queue;

/// One `Arc`: handlers get a clone per request.
#[derive(Clone)]
pub struct IngestState(Arc<Ingest>);

pub struct Ingest {
    pub settings: IngestSettings,
    pub keys: IngestKeys,
    pub committer: Committer,
    /// Read for its depth, which gates ingest.
    pub queue: Queue,
    pub client_ips: Arc<ClientIps>,
    pub per_client: RateLimit<IpAddr>,
    pub per_workspace: RateLimit<WorkspaceId>,
    pub metrics: Arc<Metrics>,
    /// What the delivery debugger shows of each workspace's requests.
    pub activity: Arc<Activity>,
}

impl IngestState {
    pub fn new(ingest: Ingest) -> IngestState {
        IngestState(Arc::new(ingest))
    }

    pub fn json_limits(&self) -> JsonLimits {
        JsonLimits {
            max_depth: self.settings.max_json_depth,
            max_string_bytes: self.settings.max_string_bytes,
            max_object_keys: self.settings.max_object_keys,
        }
    }

    pub fn forget_idle(&self) {
        self.per_client.forget_idle();
        self.per_workspace.forget_idle();
    }
}

impl std::ops::Deref for IngestState {
    type Target = Ingest;
    fn deref(&self) -> &Ingest {
        &self.0
    }
}
