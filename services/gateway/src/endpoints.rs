//! A short-lived, bounded cache of generic webhook endpoints by id, so verifying a delivery
//! does not cost a Postgres query and a decryption. Unknown ids are never cached (each costs
//! one primary-key lookup, bounded by the address rate limit); a deleted endpoint keeps
//! working for at most [`TTL`]; at most [`CAPACITY`] endpoints are held.

use common::UserId;
use common::ids::Source;
use common::secrets::KeyRing;
use db::DatabaseConnection;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const TTL: Duration = Duration::from_secs(30);
pub const CAPACITY: usize = 10_000;

/// What a delivery needs to know about its endpoint.
#[derive(Clone)]
pub struct Endpoint {
    pub user: UserId,
    pub source: Source,
    pub secret: Arc<str>,
}

#[derive(Clone)]
pub struct EndpointCache {
    entries: Arc<RwLock<HashMap<Uuid, (Instant, Endpoint)>>>,
    capacity: usize,
}

impl Default for EndpointCache {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("the endpoint's secret cannot be read: {0}")]
    Secret(#[from] common::secrets::SecretError),
}

impl EndpointCache {
    /// The endpoint `id`, from the cache while fresh; `None` when there is no such endpoint.
    pub async fn get(
        &self,
        db: &DatabaseConnection,
        ring: Option<&KeyRing>,
        id: Uuid,
    ) -> Result<Option<Endpoint>, EndpointError> {
        if let Some((at, endpoint)) = self.entries.read().ok().and_then(|e| e.get(&id).cloned())
            && at.elapsed() < TTL
        {
            return Ok(Some(endpoint));
        }
        let Some(row) = db::webhooks::find(db, id).await? else {
            return Ok(None);
        };
        let source =
            Source::parse(&row.source).map_err(|_| common::secrets::SecretError::Malformed)?;
        let endpoint = Endpoint {
            user: UserId(row.user_id),
            source,
            secret: db::webhooks::secret(ring, &row)?.into(),
        };
        self.remember(id, endpoint.clone());
        Ok(Some(endpoint))
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// Keeps an endpoint that exists; when full, expired entries go first, then all of them.
    fn remember(&self, id: Uuid, endpoint: Endpoint) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= self.capacity && !entries.contains_key(&id) {
                entries.retain(|_, (at, _)| at.elapsed() < TTL);
                if entries.len() >= self.capacity {
                    entries.clear();
                }
            }
            entries.insert(id, (Instant::now(), endpoint));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let cache = EndpointCache::with_capacity(3);
        let endpoint = Endpoint {
            user: UserId(Uuid::new_v4()),
            source: Source::parse("feedback").unwrap(),
            secret: "whsec_x".into(),
        };
        for _ in 0..50 {
            cache.remember(Uuid::new_v4(), endpoint.clone());
            assert!(cache.len() <= 3, "{}", cache.len());
        }
        let kept = Uuid::new_v4();
        cache.remember(kept, endpoint.clone());
        cache.remember(kept, endpoint);
        assert!(cache.len() <= 3 && cache.entries.read().unwrap().contains_key(&kept));
    }
}
