//! `GET|POST /api/embeddings/search`: hybrid (vector + full-text) search over the caller's own
//! documents. The query is embedded by the embedding service over NATS request/reply; if it
//! does not answer in time the search runs on full text alone and says so in `mode`.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::events::{EMBED_QUERY_SUBJECT, EmbedQuery, EmbedQueryReply};
use common::ids::Source;
use common::intake::{self, FieldError};
use db::search::{SearchHit, SearchQuery};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub const MAX_QUERY_CHARS: usize = 1_000;
const EMBED_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new().route("/api/embeddings/search", get(search_get).post(search_post))
}

/// Search parameters. `source` and `kind` take comma-separated lists in the query string.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchParams {
    /// What to look for, in plain words.
    pub q: String,
    /// How many documents to return (1-100, default 10).
    pub top_k: Option<u32>,
    /// Only these sources, comma-separated (`gmail,hubspot`).
    pub source: Option<String>,
    /// Only these kinds, comma-separated (`email,note`).
    pub kind: Option<String>,
    /// Only documents that occurred at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only documents that occurred before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SearchRequest {
    /// What to look for, in plain words.
    pub q: String,
    /// How many documents to return (1-100, default 10).
    pub top_k: Option<u32>,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub query: String,
    /// `hybrid`, or `fulltext` when the query could not be embedded right now.
    pub mode: &'static str,
    pub hits: Vec<Hit>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Hit {
    pub document_id: Uuid,
    pub title: String,
    /// The best-matching passage, query terms marked `**like this**`.
    pub snippet: String,
    /// Reciprocal-rank-fusion score: higher is better.
    pub score: f64,
    pub source: String,
    pub kind: String,
    pub occurred_at: Option<DateTime<Utc>>,
}

impl From<SearchHit> for Hit {
    fn from(h: SearchHit) -> Self {
        Self {
            document_id: h.document_id,
            title: h.title,
            snippet: h.snippet,
            score: h.score,
            source: h.source,
            kind: h.kind,
            occurred_at: h.occurred_at,
        }
    }
}

fn names(field: &str, values: Vec<String>) -> Result<Vec<String>, ApiError> {
    values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(|v| {
            Source::parse(&v)
                .map(String::from)
                .map_err(|r| ApiError::Invalid(FieldError::new(field, r)))
        })
        .collect()
}

fn split(list: Option<String>) -> Vec<String> {
    list.map(|l| l.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

#[utoipa::path(
    get,
    path = "/api/embeddings/search",
    tag = "search",
    params(SearchParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SearchResponse),
        (status = 401, body = ErrorBody),
        (status = 422, description = "A parameter is invalid; `field` names it", body = ErrorBody),
        (status = 503, description = "Too many searches in flight; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn search_get(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let request = SearchRequest {
        q: p.q,
        top_k: p.top_k,
        sources: split(p.source),
        kinds: split(p.kind),
        from: p.from,
        to: p.to,
    };
    search(&state, user, request).await.map(Json)
}

#[utoipa::path(
    post,
    path = "/api/embeddings/search",
    tag = "search",
    request_body = SearchRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
        (status = 503, description = "Too many searches in flight; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn search_post(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> Result<Json<SearchResponse>, ApiError> {
    let request: SearchRequest = parse_json(&body)?;
    search(&state, user, request).await.map(Json)
}

async fn search(
    state: &AppState,
    user: common::UserId,
    request: SearchRequest,
) -> Result<SearchResponse, ApiError> {
    let mut q = request.q;
    intake::clean_text(&mut q);
    let q = q.trim().to_owned();
    let invalid = |field: &str, reason: &str| ApiError::Invalid(FieldError::new(field, reason));
    for (field, at) in [("from", request.from), ("to", request.to)] {
        if let Some(at) = at {
            intake::check_date(field, at).map_err(ApiError::Invalid)?;
        }
    }
    if q.is_empty() {
        return Err(invalid("q", "must not be empty"));
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(invalid("q", "longer than 1000 characters"));
    }
    let top_k = request.top_k.unwrap_or(10);
    if !(1..=100).contains(&top_k) {
        return Err(invalid("top_k", "must be between 1 and 100"));
    }
    if let (Some(from), Some(to)) = (request.from, request.to)
        && from >= to
    {
        return Err(invalid("from", "must be before `to`"));
    }
    // Limits first, then work: a search holds a slot while it runs.
    let _slot = state
        .search_slots
        .try_acquire()
        .map_err(|_| ApiError::Busy)?;
    let embedding = embed_query(state, &q).await;
    let mode = if embedding.is_some() {
        "hybrid"
    } else {
        "fulltext"
    };
    let query = SearchQuery {
        user: Some(user),
        text: q.clone(),
        embedding,
        sources: names("sources", request.sources)?,
        kinds: names("kinds", request.kinds)?,
        from: request.from,
        to: request.to,
        top_k,
    };
    let hits = db::search::hybrid(&state.db, &query).await?;
    Ok(SearchResponse {
        query: q,
        mode,
        hits: hits.into_iter().map(Hit::from).collect(),
    })
}

async fn embed_query(state: &AppState, text: &str) -> Option<Vec<f32>> {
    // With the embedder already this far behind, full text now beats a vector later.
    let Ok(_slot) = state.embed_slots.try_acquire() else {
        tracing::debug!("query embeddings saturated; searching full text only");
        return None;
    };
    let subject = state.bus.ns.subject(EMBED_QUERY_SUBJECT);
    let payload = serde_json::to_vec(&EmbedQuery {
        text: text.to_owned(),
    })
    .ok()?;
    let reply = tokio::time::timeout(
        EMBED_TIMEOUT,
        state.bus.client.request(subject, payload.into()),
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
        }) if v.len() == state.config.embedding_dimensions => Some(v),
        Some(EmbedQueryReply { error, .. }) => {
            tracing::warn!(error = ?error, "embedding service could not embed the query");
            None
        }
        None => None,
    }
}
