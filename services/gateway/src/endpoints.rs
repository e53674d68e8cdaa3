//! A short-lived cache of generic webhook endpoints per source, so verifying a delivery does
//! not cost a Postgres query. A delivery no cached secret verifies triggers one reload (at
//! most once a second per source), so a new endpoint works at once; a deleted one keeps
//! working for at most [`TTL`].

use common::ids::Source;
use db::DatabaseConnection;
use db::entities::webhook_endpoint;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_secs(30);
const MIN_RELOAD: Duration = Duration::from_secs(1);

type Entry = (Instant, Arc<Vec<webhook_endpoint::Model>>);

#[derive(Clone, Default)]
pub struct EndpointCache {
    entries: Arc<RwLock<HashMap<String, Entry>>>,
}

impl EndpointCache {
    /// The endpoints for `source`, from the cache while fresh.
    pub async fn get(
        &self,
        db: &DatabaseConnection,
        source: &Source,
    ) -> db::Result<Arc<Vec<webhook_endpoint::Model>>> {
        if let Some((at, endpoints)) = self.cached(source)
            && at.elapsed() < TTL
        {
            return Ok(endpoints);
        }
        self.load(db, source).await
    }

    /// Reloads after a miss, unless the entry is younger than a second.
    pub async fn reload(
        &self,
        db: &DatabaseConnection,
        source: &Source,
    ) -> db::Result<Option<Arc<Vec<webhook_endpoint::Model>>>> {
        match self.cached(source) {
            Some((at, _)) if at.elapsed() < MIN_RELOAD => Ok(None),
            _ => self.load(db, source).await.map(Some),
        }
    }

    fn cached(&self, source: &Source) -> Option<Entry> {
        self.entries.read().ok()?.get(source.as_str()).cloned()
    }

    async fn load(
        &self,
        db: &DatabaseConnection,
        source: &Source,
    ) -> db::Result<Arc<Vec<webhook_endpoint::Model>>> {
        let endpoints = Arc::new(db::webhooks::for_source(db, source).await?);
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(
                source.as_str().to_owned(),
                (Instant::now(), endpoints.clone()),
            );
        }
        Ok(endpoints)
    }
}
