//! Curating themes: merge, split, rename, move an item, dismiss an item (not feedback), the
//! list of curations with who made them and when, and undo. Each is stored before it is
//! answered, and every later regrouping keeps it (`db::curation`).

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::UserId;
use common::intake::FieldError;
use db::curation::{self, Curation, CurationError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/insights/themes/{id}/merge", post(merge))
        .route("/api/insights/themes/{id}/split", post(split))
        .route("/api/insights/themes/{id}/rename", post(rename))
        .route("/api/insights/items/{id}/move", post(move_item))
        .route("/api/insights/items/{id}/dismiss", post(dismiss))
        .route("/api/insights/curations", get(list))
        .route("/api/insights/curations/{id}/undo", post(undo))
}

/// A curation as recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurationView {
    pub id: Uuid,
    /// `merge`, `split`, `rename`, `move` or `dismiss`.
    pub action: String,
    /// Who made it.
    pub actor: String,
    /// What was asked (the theme or item, and the request's fields; a split also names the
    /// theme it started, `new_theme`).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    /// Every item and theme it changed.
    pub items: Vec<Uuid>,
    pub themes: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub undone_at: Option<DateTime<Utc>>,
    pub undone_by: Option<String>,
}

impl From<Curation> for CurationView {
    fn from(c: Curation) -> Self {
        Self {
            id: c.id,
            action: c.action,
            actor: c.actor,
            request: c.request,
            items: c.items,
            themes: c.themes,
            created_at: c.created_at,
            undone_at: c.undone_at,
            undone_by: c.undone_by,
        }
    }
}

impl From<CurationError> for ApiError {
    fn from(e: CurationError) -> Self {
        match e {
            CurationError::NotFound(what) => ApiError::NotFound(what),
            CurationError::Invalid { field, message } => {
                ApiError::Invalid(FieldError::new(field, message))
            }
            CurationError::Conflict(why) => ApiError::Conflict(why),
            CurationError::Db(e) => e.into(),
        }
    }
}

/// Who is curating: their email, as the record names them.
pub(crate) async fn actor(state: &AppState, user: UserId) -> Result<String, ApiError> {
    Ok(db::users::find(&state.db, user)
        .await?
        .map(|u| u.email)
        .unwrap_or_else(|| user.to_string()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The theme that takes this one's items; this theme ends.
    pub into: Uuid,
}

#[utoipa::path(post, path = "/api/insights/themes/{id}/merge", tag = "insights", params(("id" = Uuid, Path)),
    request_body = MergeRequest, security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Merged: every item of both is pinned to `into`", body = CurationView),
        (status = 404, description = "No such theme of yours", body = ErrorBody),
        (status = 422, description = "`into` is this theme or no theme of yours", body = ErrorBody)))]
pub async fn merge(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Json<CurationView>, ApiError> {
    let request: MergeRequest = parse_json(&body)?;
    let who = actor(&state, user).await?;
    let c = curation::merge(&state.db, user, &who, id, request.into).await?;
    Ok(Json(c.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// Items of this theme that start a theme of their own.
    pub items: Vec<Uuid>,
    /// The new theme's title (default: the first item's); a title given here is kept like a
    /// rename.
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SplitView {
    pub curation: CurationView,
    /// The theme the items now form.
    pub theme: Uuid,
}

#[utoipa::path(post, path = "/api/insights/themes/{id}/split", tag = "insights", params(("id" = Uuid, Path)),
    request_body = SplitRequest, security(("bearer" = []), ("session" = [])),
    responses((status = 201, description = "Split: the named items form a new theme; they and the items that stay are pinned", body = SplitView),
        (status = 404, description = "No such theme of yours", body = ErrorBody),
        (status = 422, description = "`items` empty, not all of this theme, or all of it; `title` empty or too long", body = ErrorBody)))]
pub async fn split(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<(axum::http::StatusCode, Json<SplitView>), ApiError> {
    let request: SplitRequest = parse_json(&body)?;
    let who = actor(&state, user).await?;
    let (c, theme) = curation::split(
        &state.db,
        user,
        &who,
        id,
        &request.items,
        request.title.as_deref(),
    )
    .await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(SplitView {
            curation: c.into(),
            theme,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// 1-200 characters, one line.
    pub title: String,
}

#[utoipa::path(post, path = "/api/insights/themes/{id}/rename", tag = "insights", params(("id" = Uuid, Path)),
    request_body = RenameRequest, security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Renamed; regrouping never renames it again", body = CurationView),
        (status = 404, description = "No such theme of yours", body = ErrorBody),
        (status = 422, description = "`title` empty, too long or not one line", body = ErrorBody)))]
pub async fn rename(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Json<CurationView>, ApiError> {
    let request: RenameRequest = parse_json(&body)?;
    let who = actor(&state, user).await?;
    let c = curation::rename(&state.db, user, &who, id, &request.title).await?;
    Ok(Json(c.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The theme the item belongs to.
    pub theme: Uuid,
}

#[utoipa::path(post, path = "/api/insights/items/{id}/move", tag = "insights", params(("id" = Uuid, Path)),
    request_body = MoveRequest, security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Moved: pinned to `theme`, set apart from the theme it left", body = CurationView),
        (status = 404, description = "No such item of yours", body = ErrorBody),
        (status = 409, description = "The item was dismissed", body = ErrorBody),
        (status = 422, description = "`theme` is no theme of yours or already the item's", body = ErrorBody)))]
pub async fn move_item(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Json<CurationView>, ApiError> {
    let request: MoveRequest = parse_json(&body)?;
    let who = actor(&state, user).await?;
    let c = curation::move_item(&state.db, user, &who, id, request.theme).await?;
    Ok(Json(c.into()))
}

#[utoipa::path(post, path = "/api/insights/items/{id}/dismiss", tag = "insights", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Dismissed as not feedback: out of its theme, every list and count", body = CurationView),
        (status = 404, description = "No such item of yours", body = ErrorBody),
        (status = 409, description = "Already dismissed", body = ErrorBody)))]
pub async fn dismiss(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<CurationView>, ApiError> {
    let who = actor(&state, user).await?;
    let c = curation::dismiss(&state.db, user, &who, id).await?;
    Ok(Json(c.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CurationParams {
    /// 1-500, default 100.
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Curations {
    /// Newest first, undone ones included.
    pub curations: Vec<CurationView>,
}

#[utoipa::path(get, path = "/api/insights/curations", tag = "insights", params(CurationParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Your curations, newest first", body = Curations)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(p): Query<CurationParams>,
) -> Result<Json<Curations>, ApiError> {
    let limit = super::list_limit(p.limit)?;
    let curations = curation::list(&state.db, user, limit).await?;
    Ok(Json(Curations {
        curations: curations.into_iter().map(CurationView::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/insights/curations/{id}/undo", tag = "insights", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Undone: its items and themes as they were", body = CurationView),
        (status = 404, description = "No such curation of yours", body = ErrorBody),
        (status = 409, description = "Already undone, or a later curation changed the same items or themes (undo it first)", body = ErrorBody)))]
pub async fn undo(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<CurationView>, ApiError> {
    let who = actor(&state, user).await?;
    let c = curation::undo(&state.db, user, &who, id).await?;
    Ok(Json(c.into()))
}
