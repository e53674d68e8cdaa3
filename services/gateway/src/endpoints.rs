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

#[derive(Clone, Default)]
pub struct EndpointCache {
    entries: Arc<RwLock<HashMap<Uuid, (Instant, Endpoint)>>>,
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
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= CAPACITY {
                entries.retain(|_, (at, _)| at.elapsed() < TTL);
                if entries.len() >= CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(id, (Instant::now(), endpoint.clone()));
        }
        Ok(Some(endpoint))
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
