//! Ingest keys → workspaces, cached. A rotated key or a changed integration
//! takes effect on this instance at once (the admin API clears the cache) and
//! on other instances when their cached entry expires.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::store::{IngestTarget, Store, StoreError};

/// Keys longer than this are not looked up: no generated key is.
const MAX_KEY_LEN: usize = 128;
const MAX_CACHED_KEYS: u64 = 100_000;

#[derive(Clone)]
pub struct IngestKeys {
    store: Arc<Store>,
    /// Unknown keys are cached too, so a flood of bad keys does not reach the
    /// database. Shared, so that a request takes its workspace without copying it.
    cache: Cache<String, Option<Arc<IngestTarget>>>,
}

impl IngestKeys {
    pub fn new(store: Arc<Store>, ttl: Duration) -> IngestKeys {
        let cache = Cache::builder().max_capacity(MAX_CACHED_KEYS).time_to_live(ttl).build();
        IngestKeys { store, cache }
    }

    pub async fn resolve(&self, key: &str) -> Result<Option<Arc<IngestTarget>>, StoreError> {
        if key.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        if let Some(cached) = self.cache.get(key) {
            return Ok(cached);
        }
        let target = self.store.ingest_target(key).await?.map(Arc::new);
        self.cache.insert(key.to_owned(), target.clone());
        Ok(target)
    }

    /// Forgets every cached key, after an admin change.
    pub fn invalidate(&self) {
        self.cache.invalidate_all();
    }
}
