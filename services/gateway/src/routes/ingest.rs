//! `POST /api/ingest/documents`: validate a batch, publish each document to JetStream, and
//! answer 202 only when every one is stored there.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::events::{DocumentInput, Lane};
use common::ids::Source;
use common::intake::{self, FieldError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/ingest/documents", post(ingest_documents))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct IngestRequest {
    /// One to `MAX_BATCH_DOCUMENTS` documents.
    pub documents: Vec<DocumentRequest>,
    /// An import or backfill: index these in the bulk lane, after interactive work. Without
    /// it, documents beyond the user's interactive share (`INTERACTIVE_SHARE_PER_USER` waiting
    /// to be indexed) go to the bulk lane anyway.
    #[serde(default)]
    pub bulk: bool,
}

/// A document to store and index. The same `source` + `external_id` names the same document:
/// sending it again with changed content updates it; unchanged content is a no-op.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DocumentRequest {
    /// Where it comes from: 1-40 characters of a-z, 0-9, `-`, `_` (`gmail`, `hubspot`, `notes`).
    #[schema(example = "gmail")]
    pub source: String,
    /// What it is, same alphabet (`email`, `contact`, `note`, `event`).
    #[schema(example = "email")]
    pub kind: String,
    /// The id the source uses for it (at most 512 bytes).
    #[schema(example = "18c2f6a9d3e4b5a1")]
    pub external_id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: String,
    /// Any JSON object (at most 64 KiB).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub occurred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    pub accepted: Vec<AcceptedDocument>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedDocument {
    /// Stable document id, the same for every version of this document.
    pub id: Uuid,
    pub external_id: String,
    /// This exact content was already accepted (a retried request).
    pub duplicate: bool,
    /// `interactive` or `bulk`: the lane it is indexed in.
    #[schema(value_type = String, example = "interactive")]
    pub lane: Lane,
}

impl From<Vec<intake::Accepted>> for IngestResponse {
    fn from(accepted: Vec<intake::Accepted>) -> Self {
        let accepted = accepted
            .into_iter()
            .map(|a| AcceptedDocument {
                id: a.id.0,
                external_id: a.external_id,
                duplicate: a.duplicate,
                lane: a.lane,
            })
            .collect();
        Self { accepted }
    }
}

impl DocumentRequest {
    fn into_input(self, at: &str) -> Result<DocumentInput, FieldError> {
        let source =
            Source::parse(&self.source).map_err(|r| FieldError::new(format!("{at}.source"), r))?;
        let kind =
            Source::parse(&self.kind).map_err(|r| FieldError::new(format!("{at}.kind"), r))?;
        Ok(DocumentInput {
            source,
            kind,
            external_id: self.external_id,
            title: self.title,
            body: self.body,
            metadata: self.metadata,
            occurred_at: self.occurred_at,
        })
    }
}

/// The lane of each of `count` documents of `user` (see [`intake::lanes`]).
pub async fn lanes_for(
    state: &AppState,
    user: common::UserId,
    count: usize,
    bulk: bool,
) -> Result<Vec<Lane>, ApiError> {
    let share = state.config.interactive_share_per_user;
    // What already waits in the interactive lane (see [`crate::lanes`]).
    let waiting = if bulk {
        0
    } else {
        state
            .lanes
            .claim(&state.db, user, count as u64, share)
            .await?
    };
    Ok(intake::lanes(count, bulk, share, waiting))
}

#[utoipa::path(
    post,
    path = "/api/ingest/documents",
    tag = "ingest",
    request_body = IngestRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Every document is durably in JetStream", body = IngestResponse),
        (status = 400, description = "Not JSON, or not the expected shape", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 413, description = "Request body too large"),
        (status = 422, description = "A field is invalid; `field` names it. Nothing was published", body = ErrorBody),
        (status = 503, description = "JetStream unavailable; retry later", body = ErrorBody),
    )
)]
pub async fn ingest_documents(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let request: IngestRequest = parse_json(&body)?;
    let bulk = request.bulk;
    let docs = request
        .documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.into_input(&format!("documents[{i}]")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::Invalid)?;
    let docs = intake::admit_batch(docs, &state.limits()).map_err(ApiError::Invalid)?;
    let lanes = lanes_for(&state, user, docs.len(), bulk).await?;
    let accepted = intake::submit(&state.bus, user, docs, &lanes)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok((StatusCode::ACCEPTED, Json(accepted.into())))
}
