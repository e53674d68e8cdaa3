//! Changes to product intelligence previewed before they apply: a team tries candidate
//! settings (tier 1's bar, sources, product areas, the tier 2 model, the grouping thresholds)
//! on a window of its stored messages, reads what would change, and applies it or not.
//! The reading runs in the embedding service (which holds the model) into shadow tables; the
//! live themes and items are untouched until applied.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use db::previews::{Preview, PreviewError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/insights/previews",
            get(list_previews).post(create_preview),
        )
        .route(
            "/api/insights/previews/{id}",
            get(get_preview).delete(discard_preview),
        )
        .route("/api/insights/previews/{id}/apply", post(apply_preview))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// Messages said at or after this time.
    pub from: DateTime<Utc>,
    /// Messages said before this time; at most 731 days after `from`.
    pub to: DateTime<Utc>,
    /// The settings to try, in place of yours (`GET /api/insights/settings` names them):
    /// `min_score`, `sources`, `channels`, `product_areas`, `theme_join`, `theme_regroup`,
    /// `model` (`local` or a model of this deployment's endpoint)... Absent ones stay yours.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewView {
    pub id: Uuid,
    pub requested_by: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The candidate settings in full; applying makes them yours.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// `queued`, `running`, `ready`, `failed`, `applied` or `discarded`.
    pub status: String,
    /// Messages of the window the candidate covers, and how many it has read.
    pub messages: i32,
    pub read: i32,
    /// Once ready: `messages` (read, extracted, below, skipped; live_read, live_extracted),
    /// `items` (preview, live, added, removed, kept, changed_kind, like_dismissed, with
    /// examples), `themes` (preview, live, formed, merged, split, gone), `agreement` (adjusted
    /// Rand index against the live grouping over the `compared` items both hold), and
    /// `curations` (considered; kept_by_constraint: those the candidate's grouping would
    /// have undone, kept as constraints; lost: pinned items it no longer finds).
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub applied_at: Option<DateTime<Utc>>,
}

impl From<Preview> for PreviewView {
    fn from(p: Preview) -> Self {
        Self {
            id: p.id,
            requested_by: p.requested_by,
            from: p.from,
            to: p.to,
            settings: serde_json::to_value(&p.settings).unwrap_or_default(),
            status: p.status,
            messages: p.messages,
            read: p.read,
            report: p
                .report
                .map(|r| serde_json::to_value(r).unwrap_or_default()),
            error: p.error,
            created_at: p.created_at,
            finished_at: p.finished_at,
            applied_at: p.applied_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Previews {
    pub previews: Vec<PreviewView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppliedView {
    pub preview: PreviewView,
    /// Live items of the window replaced, the preview's stored in their place, themes
    /// started and removed, and message outcomes recorded.
    pub removed: usize,
    pub stored: usize,
    pub themes_created: usize,
    pub themes_removed: usize,
    pub messages: usize,
}

impl From<PreviewError> for ApiError {
    fn from(e: PreviewError) -> Self {
        match e {
            PreviewError::NotFound => ApiError::NotFound("no such preview of yours".into()),
            e @ (PreviewError::NotReady(_) | PreviewError::Stale | PreviewError::Busy(_)) => {
                ApiError::Conflict(e.to_string())
            }
            PreviewError::Db(e) => e.into(),
        }
    }
}

#[utoipa::path(post, path = "/api/insights/previews", tag = "insights", request_body = PreviewRequest,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 202, description = "Stored and queued: the window is read on the bulk lane, into shadow tables; poll the preview for its report", body = PreviewView),
        (status = 400, description = "Not JSON, or not the expected shape", body = ErrorBody),
        (status = 409, description = "Another preview of yours is still being read (one at a time)", body = ErrorBody),
        (status = 422, description = "`from`, `to` or a setting (`settings.<name>`) is invalid", body = ErrorBody),
        (status = 503, description = "The event bus did not take the request; nothing was stored", body = ErrorBody),
    ))]
pub async fn create_preview(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<PreviewView>), ApiError> {
    let request: PreviewRequest = parse_json(&body)?;
    let live = db::insights::settings(&state.db, user).await?;
    let settings = db::previews::candidate(&live, request.from, request.to, &request.settings)
        .map_err(ApiError::Invalid)?;
    settings
        .model_reachable(&state.config, "settings.model")
        .map_err(ApiError::Invalid)?;
    let who = crate::routes::curation::actor(&state, user).await?;
    let preview =
        db::previews::create(&state.db, user, &who, request.from, request.to, &settings).await?;
    if let Err(e) = state
        .bus
        .publish(&common::events::insights_preview(
            user,
            preview.id,
            Uuid::nil(),
        ))
        .await
    {
        // Not queued: the preview would never be read, so it is not kept either.
        db::previews::discard(&state.db, user, preview.id).await?;
        return Err(ApiError::Unavailable(e));
    }
    Ok((StatusCode::ACCEPTED, Json(preview.into())))
}

#[utoipa::path(get, path = "/api/insights/previews", tag = "insights",
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Your previews, newest first (the last 50)", body = Previews)))]
pub async fn list_previews(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<Previews>, ApiError> {
    let previews = db::previews::list(&state.db, user, 50).await?;
    Ok(Json(Previews {
        previews: previews.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/api/insights/previews/{id}", tag = "insights", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "The preview: its progress and, once ready, its report", body = PreviewView),
        (status = 404, description = "No such preview of yours", body = ErrorBody)))]
pub async fn get_preview(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<PreviewView>, ApiError> {
    let preview = db::previews::get(&state.db, user, id)
        .await?
        .ok_or(PreviewError::NotFound)?;
    Ok(Json(preview.into()))
}

#[utoipa::path(post, path = "/api/insights/previews/{id}/apply", tag = "insights", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Applied: its settings are yours, and the window's items, themes and message outcomes are the preview's", body = AppliedView),
        (status = 404, description = "No such preview of yours", body = ErrorBody),
        (status = 409, description = "Not ready (still reading, failed, discarded or applied), or the window's live items changed since it was made: preview again", body = ErrorBody)))]
pub async fn apply_preview(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<AppliedView>, ApiError> {
    let applied = db::previews::apply(&state.db, user, id).await?;
    let preview = db::previews::get(&state.db, user, id)
        .await?
        .ok_or(PreviewError::NotFound)?;
    Ok(Json(AppliedView {
        preview: preview.into(),
        removed: applied.removed,
        stored: applied.stored,
        themes_created: applied.themes_created,
        themes_removed: applied.themes_removed,
        messages: applied.messages,
    }))
}

#[utoipa::path(delete, path = "/api/insights/previews/{id}", tag = "insights", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 204, description = "Discarded with its shadow rows (a preview still reading stops at its next page)"),
        (status = 404, description = "No such preview of yours, or it was applied", body = ErrorBody)))]
pub async fn discard_preview(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if db::previews::discard(&state.db, user, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(PreviewError::NotFound.into())
    }
}
