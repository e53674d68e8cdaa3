//! `GET|POST /api/embeddings/search`: hybrid (vector + full-text) search over the caller's own
//! documents, through [`actions::search`] (the same search the assistant's tools run).

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use db::search::SearchHit;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

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
    /// The time zone (IANA, `America/New_York`) that times in `q` ("yesterday", "in
    /// October") are read in. Default: the user's, as their Google Calendar states it; UTC
    /// when unknown.
    pub time_zone: Option<String>,
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
    /// The time zone (IANA, `America/New_York`) that times in `q` ("yesterday", "in
    /// October") are read in. Default: the user's, as their Google Calendar states it; UTC
    /// when unknown.
    pub time_zone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub query: String,
    /// `hybrid`, or `fulltext` when the query could not be embedded right now.
    pub mode: &'static str,
    /// What the search read from the question besides its words, and how it used it.
    pub understood: Understood,
    pub hits: Vec<Hit>,
}

/// What the question named besides its words. Documents from the named time, involving the
/// named people, or of the named kinds rank higher; they are not filtered out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Understood {
    /// The time the question named ("last week", "in October"), if any; not read when the
    /// request sets `from`/`to` (which filter).
    pub time: Option<TimeRange>,
    /// People the question names: matched to a CRM contact (with email) or as written.
    pub people: Vec<Person>,
    /// Document kinds the question asks for ("emails" → `email`).
    pub kinds: Vec<String>,
    /// The question asks for the most recent: newer documents rank higher.
    pub latest: bool,
    /// What the trade also calls the question's phrases, searched for as well ("nursing care"
    /// also searches `ltc` and `long-term care`).
    pub also_searched: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimeRange {
    /// The words that named it.
    pub words: String,
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    /// The time zone the words were read in (where the days start).
    pub time_zone: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Person {
    pub name: String,
    pub email: Option<String>,
}

impl From<actions::search::Understood> for Understood {
    fn from(u: actions::search::Understood) -> Self {
        Self {
            time: match (u.when, u.from, u.to) {
                (Some(words), Some(from), Some(to)) => Some(TimeRange {
                    words,
                    from,
                    to,
                    time_zone: u.time_zone.unwrap_or(actions::search::Tz::UTC).to_string(),
                }),
                _ => None,
            },
            people: u
                .people
                .into_iter()
                .map(|p| Person {
                    name: p.name,
                    email: p.email,
                })
                .collect(),
            kinds: u.kinds,
            latest: u.latest,
            also_searched: u.also_searched,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Hit {
    pub document_id: Uuid,
    pub title: String,
    /// The best-matching passage, query terms marked `**like this**`.
    pub snippet: String,
    /// Fused score (the vector and full-text scores, each normalized to 0..1 within this
    /// search and added with equal weight, plus the question's boosts): higher is better;
    /// comparable within one response only.
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
        time_zone: p.time_zone,
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
    let searched = state
        .searcher
        .search(
            user,
            actions::search::SearchRequest {
                q: request.q,
                top_k: request.top_k,
                sources: request.sources,
                kinds: request.kinds,
                from: request.from,
                to: request.to,
                time_zone: request
                    .time_zone
                    .as_deref()
                    .map(actions::search::time_zone)
                    .transpose()?,
                ..Default::default()
            },
        )
        .await?;
    Ok(SearchResponse {
        query: searched.query,
        mode: searched.mode,
        understood: searched.understood.into(),
        hits: searched.hits.into_iter().map(Hit::from).collect(),
    })
}
