//! The user's rules and things to remember: `GET/POST/PUT/DELETE /api/rules`. Stored now and
//! readable by the assistant (`list_memory_rules`); the engine that fires rules on events
//! reads the same table.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::intake::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

const MAX_RULE_CHARS: usize = 2_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/rules", get(list_rules).post(create_rule))
        .route(
            "/api/rules/{id}",
            get(get_rule).put(update_rule).delete(delete_rule),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub id: Uuid,
    pub text: String,
    /// `memory` for now.
    pub kind: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<db::rules::Rule> for RuleView {
    fn from(r: db::rules::Rule) -> Self {
        Self {
            id: r.id,
            text: r.text,
            kind: r.kind,
            active: r.active,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rules {
    pub rules: Vec<RuleView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    pub text: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleChange {
    pub text: Option<String>,
    pub active: Option<bool>,
}

fn checked(text: &str) -> Result<String, ApiError> {
    let mut text = text.to_owned();
    common::intake::clean_text(&mut text);
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(ApiError::Invalid(FieldError::new(
            "text",
            "must not be empty",
        )));
    }
    if text.chars().count() > MAX_RULE_CHARS {
        return Err(ApiError::Invalid(FieldError::new(
            "text",
            "longer than 2000 characters",
        )));
    }
    Ok(text)
}

#[utoipa::path(get, path = "/api/rules", tag = "rules", security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Rules)))]
pub async fn list_rules(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<Rules>, ApiError> {
    let rules = db::rules::list(&state.db, user)
        .await?
        .into_iter()
        .map(RuleView::from)
        .collect();
    Ok(Json(Rules { rules }))
}

#[utoipa::path(post, path = "/api/rules", tag = "rules", request_body = NewRule,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, body = RuleView),
        (status = 422, description = "`text` empty or too long", body = ErrorBody),
    ))]
pub async fn create_rule(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<RuleView>), ApiError> {
    let request: NewRule = parse_json(&body)?;
    let text = checked(&request.text)?;
    let rule = db::rules::create(&state.db, user, Uuid::new_v4(), &text, "memory").await?;
    Ok((StatusCode::CREATED, Json(rule.into())))
}

#[utoipa::path(get, path = "/api/rules/{id}", tag = "rules", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = RuleView), (status = 404, body = ErrorBody)))]
pub async fn get_rule(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<RuleView>, ApiError> {
    db::rules::get(&state.db, user, id)
        .await?
        .map(|r| Json(r.into()))
        .ok_or_else(|| ApiError::NotFound("no such rule".into()))
}

#[utoipa::path(put, path = "/api/rules/{id}", tag = "rules", params(("id" = Uuid, Path)),
    request_body = RuleChange, security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = RuleView),
        (status = 404, body = ErrorBody),
        (status = 422, description = "`text` empty or too long", body = ErrorBody),
    ))]
pub async fn update_rule(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Json<RuleView>, ApiError> {
    let change: RuleChange = parse_json(&body)?;
    let text = change.text.as_deref().map(checked).transpose()?;
    db::rules::update(&state.db, user, id, text.as_deref(), change.active)
        .await?
        .map(|r| Json(r.into()))
        .ok_or_else(|| ApiError::NotFound("no such rule".into()))
}

#[utoipa::path(delete, path = "/api/rules/{id}", tag = "rules", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if db::rules::delete(&state.db, user, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no such rule".into()))
    }
}
