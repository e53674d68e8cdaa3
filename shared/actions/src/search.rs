//! Hybrid search over one user's documents, with the query embedded by the embedding service
//! over NATS request/reply. If the embedder does not answer in time (or is already saturated)
//! the search runs on full text alone and says so in `mode`.

use crate::{ActionError, Result};
use chrono::{DateTime, Utc};
use common::UserId;
use common::bus::Bus;
use common::events::{EMBED_QUERY_SUBJECT, EmbedQuery, EmbedQueryReply};
use common::ids::Source;
use common::intake;
use db::DatabaseConnection;
use db::search::{SearchHit, SearchQuery};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub const MAX_QUERY_CHARS: usize = 1_000;
const EMBED_TIMEOUT: Duration = Duration::from_secs(3);

/// A search as asked: plain words plus optional filters.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub q: String,
    /// 1-100, default 10.
    pub top_k: Option<u32>,
    /// Source names (`gmail`, `hubspot`, ...); empty means all.
    pub sources: Vec<String>,
    /// Kind names (`email`, `note`, ...); empty means all.
    pub kinds: Vec<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Searched {
    /// The query as searched (cleaned and trimmed).
    pub query: String,
    /// `hybrid`, or `fulltext` when the query could not be embedded right now.
    pub mode: &'static str,
    pub hits: Vec<SearchHit>,
}

/// Runs searches within the deployment's bounds: at most `SEARCH_MAX_CONCURRENT` at once, at
/// most `QUERY_EMBED_MAX_IN_FLIGHT` query embeddings awaited.
#[derive(Clone)]
pub struct Searcher {
    db: DatabaseConnection,
    bus: Bus,
    dimensions: usize,
    search_slots: Arc<Semaphore>,
    embed_slots: Arc<Semaphore>,
}

impl Searcher {
    pub fn new(db: DatabaseConnection, bus: Bus, config: &common::Config) -> Self {
        Self {
            db,
            bus,
            dimensions: config.embedding_dimensions,
            search_slots: Arc::new(Semaphore::new(config.search_max_concurrent)),
            embed_slots: Arc::new(Semaphore::new(config.query_embed_max_in_flight)),
        }
    }

    /// Searches `user`'s own documents, and nobody else's.
    pub async fn search(&self, user: UserId, request: SearchRequest) -> Result<Searched> {
        let mut q = request.q;
        intake::clean_text(&mut q);
        let q = q.trim().to_owned();
        for (field, at) in [("from", request.from), ("to", request.to)] {
            if let Some(at) = at {
                intake::check_date(field, at).map_err(ActionError::Invalid)?;
            }
        }
        if q.is_empty() {
            return Err(ActionError::invalid("q", "must not be empty"));
        }
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(ActionError::invalid("q", "longer than 1000 characters"));
        }
        let top_k = request.top_k.unwrap_or(10);
        if !(1..=100).contains(&top_k) {
            return Err(ActionError::invalid("top_k", "must be between 1 and 100"));
        }
        if let (Some(from), Some(to)) = (request.from, request.to)
            && from >= to
        {
            return Err(ActionError::invalid("from", "must be before `to`"));
        }
        let sources = names("sources", request.sources)?;
        let kinds = names("kinds", request.kinds)?;
        // Limits first, then work: a search holds a slot while it runs.
        let _slot = self
            .search_slots
            .try_acquire()
            .map_err(|_| ActionError::Busy)?;
        let embedding = self.embed_query(&q).await;
        let mode = if embedding.is_some() {
            "hybrid"
        } else {
            "fulltext"
        };
        let query = SearchQuery {
            user: Some(user),
            text: q.clone(),
            embedding,
            sources,
            kinds,
            from: request.from,
            to: request.to,
            top_k,
        };
        let hits = db::search::hybrid(&self.db, &query).await?;
        Ok(Searched {
            query: q,
            mode,
            hits,
        })
    }

    async fn embed_query(&self, text: &str) -> Option<Vec<f32>> {
        // With the embedder already this far behind, full text now beats a vector later.
        let Ok(_slot) = self.embed_slots.try_acquire() else {
            tracing::debug!("query embeddings saturated; searching full text only");
            return None;
        };
        let subject = self.bus.ns.subject(EMBED_QUERY_SUBJECT);
        let payload = serde_json::to_vec(&EmbedQuery {
            text: text.to_owned(),
        })
        .ok()?;
        let reply = tokio::time::timeout(
            EMBED_TIMEOUT,
            self.bus.client.request(subject, payload.into()),
        )
        .await;
        let reply: Option<EmbedQueryReply> = match reply {
            Ok(Ok(msg)) => serde_json::from_slice(&msg.payload).ok(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "query embedding failed; searching full text only");
                None
            }
            Err(_) => {
                tracing::warn!("query embedding timed out; searching full text only");
                None
            }
        };
        match reply {
            Some(EmbedQueryReply {
                vector: Some(v), ..
            }) if v.len() == self.dimensions => Some(v),
            Some(EmbedQueryReply { error, .. }) => {
                tracing::warn!(error = ?error, "embedding service could not embed the query");
                None
            }
            None => None,
        }
    }
}

/// Source or kind names, checked; blanks dropped.
fn names(field: &str, values: Vec<String>) -> Result<Vec<String>> {
    values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(|v| {
            Source::parse(&v)
                .map(String::from)
                .map_err(|r| ActionError::invalid(field, &r))
        })
        .collect()
}
