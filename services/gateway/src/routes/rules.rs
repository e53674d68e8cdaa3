//! The user's rules: `GET/POST /api/rules`, `GET/PUT/DELETE /api/rules/{id}`, a rule's
//! firings and its backtest. A text starting with `when` is a structured rule (refused with
//! 422 and the line and column when it does not parse); any other text is a plain-language
//! instruction the model compiles into a trigger (refused when no model is configured), or,
//! with `"memory": true`, something to remember.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, parse_json};
use actions::rules::RuleInput;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::UserId;
use common::intake::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

const MAX_RULE_CHARS: usize = 2_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/rules", get(list_rules).post(create_rule))
        .route(
            "/api/rules/{id}",
            get(get_rule).put(update_rule).delete(delete_rule),
        )
        .route("/api/rules/{id}/firings", get(firings))
        .route("/api/rules/{id}/backtest", post(backtest))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub id: Uuid,
    /// As the user wrote it.
    pub text: String,
    /// `structured`, `instruction` (plain language, compiled to a trigger) or `memory`.
    pub kind: String,
    /// Structured: `{rule, canonical}` (the parsed rule and its canonical text). Instruction:
    /// `{rule, trigger, compiled_by}` (the trigger the model wrote, `when <event> [if
    /// <condition>]`, for the user to check). Memory: null.
    #[schema(value_type = Option<Object>)]
    pub compiled: Option<serde_json::Value>,
    pub active: bool,
    /// Writes inside the user's own systems (notes, contacts, tasks) run without asking.
    /// Emails and invitations always wait for approval.
    pub act_without_approval: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<db::rules::Rule> for RuleView {
    fn from(r: db::rules::Rule) -> Self {
        Self {
            id: r.id,
            text: r.text,
            kind: r.kind,
            compiled: r.compiled,
            active: r.active,
            act_without_approval: r.act_without_approval,
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
    /// `when <event> [if <condition>] then <action> [param=value ...] [; <step> ...]`, or plain
    /// language.
    pub text: String,
    #[serde(default)]
    pub act_without_approval: bool,
    /// Keep the text as something to remember (no trigger).
    #[serde(default)]
    pub memory: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleChange {
    pub text: Option<String>,
    pub active: Option<bool>,
    pub act_without_approval: Option<bool>,
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

async fn own_rule(state: &AppState, user: UserId, id: Uuid) -> Result<db::rules::Rule, ApiError> {
    db::rules::get(&state.db, user, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such rule".into()))
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
        (status = 201, description = "Stored, with its compiled form", body = RuleView),
        (status = 422, description = "`text` empty, too long, a structured rule that does not parse (`position` says the line, the column and what was expected), or plain language with no model configured", body = ErrorBody),
        (status = 429, description = "A per-user bound: active rules (`rules.active`), or the model's daily tokens for compiling (`model.tokens_per_day`); `limit` and `resets_at` say which and when", body = ErrorBody),
        (status = 503, description = "The model that compiles plain-language rules is unreachable; nothing was stored", body = ErrorBody),
    ))]
pub async fn create_rule(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<RuleView>), ApiError> {
    let request: NewRule = parse_json(&body)?;
    let input = RuleInput {
        text: checked(&request.text)?,
        act_without_approval: request.act_without_approval,
        memory: request.memory,
    };
    if !input.memory {
        db::quota::active_rules(&state.db, user, state.config.rules_max_active_per_user)
            .await?
            .map_err(ApiError::Quota)?;
    }
    let new = actions::rules::prepare(
        &state.db,
        &state.bus,
        &state.config,
        user,
        Uuid::new_v4(),
        &input,
    )
    .await?;
    let rule = db::rules::create(&state.db, user, &new).await?;
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
    Ok(Json(own_rule(&state, user, id).await?.into()))
}

#[utoipa::path(put, path = "/api/rules/{id}", tag = "rules", params(("id" = Uuid, Path)),
    request_body = RuleChange, security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = RuleView),
        (status = 404, body = ErrorBody),
        (status = 422, description = "As for POST", body = ErrorBody),
        (status = 429, description = "As for POST: activating a rule past `rules.active`, or compiling past the day's tokens", body = ErrorBody),
    ))]
pub async fn update_rule(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Json<RuleView>, ApiError> {
    let change: RuleChange = parse_json(&body)?;
    let current = own_rule(&state, user, id).await?;
    let replaced = match change.text.as_deref() {
        Some(text) => {
            let input = RuleInput {
                text: checked(text)?,
                act_without_approval: change
                    .act_without_approval
                    .unwrap_or(current.act_without_approval),
                memory: current.kind == "memory" && !actions::rules::is_structured(text),
            };
            Some(
                actions::rules::prepare(&state.db, &state.bus, &state.config, user, id, &input)
                    .await?,
            )
        }
        None => None,
    };
    if change.active == Some(true) && !current.active && current.kind != "memory" {
        db::quota::active_rules(&state.db, user, state.config.rules_max_active_per_user)
            .await?
            .map_err(ApiError::Quota)?;
    }
    let change = db::rules::RuleChange {
        replaced,
        active: change.active,
        act_without_approval: change.act_without_approval,
    };
    db::rules::update(&state.db, user, id, &change)
        .await?
        .map(|r| Json(r.into()))
        .ok_or_else(|| ApiError::NotFound("no such rule".into()))
}

#[utoipa::path(delete, path = "/api/rules/{id}", tag = "rules", params(("id" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 204, description = "Deleted (its firings stay in the audit)"), (status = 404, body = ErrorBody)))]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct FiringView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    /// The event as the rule saw it.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    /// 1: the conditions decided and the rule acted; 2: the model decided.
    pub tier: i16,
    /// `fired`, `chain_stopped` (the chain of rules reached its bound), or after the model
    /// decided: `acted`, `no_action`.
    pub status: String,
    /// Lookups and their answers; for tier 2 the model's decision (turn, answer, tokens, writes).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub depth: i32,
    /// The task carrying out the rule's steps (`GET /api/tasks/{id}`).
    pub task_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Firings {
    pub firings: Vec<FiringView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FiringParams {
    /// 1-500, default 100.
    pub limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/rules/{id}/firings", tag = "rules", params(("id" = Uuid, Path), FiringParams),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Why and when the rule fired, newest first", body = Firings), (status = 404, body = ErrorBody)))]
pub async fn firings(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    Query(params): Query<FiringParams>,
) -> Result<Json<Firings>, ApiError> {
    let limit = super::list_limit(params.limit)?;
    let firings = db::firings::of_rule(&state.db, user, id, limit).await?;
    if firings.is_empty() {
        // An unknown rule is a 404; a deleted rule's firings stay readable.
        own_rule(&state, user, id).await?;
    }
    let firings = firings
        .into_iter()
        .map(|f| FiringView {
            id: f.id,
            event_id: f.event_id,
            event_type: f.event_type,
            event: f.event,
            tier: f.tier,
            status: f.status,
            detail: f.detail,
            depth: f.depth,
            task_id: f.task_id,
            created_at: f.created_at,
        })
        .collect();
    Ok(Json(Firings { firings }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Events to read at most, 1-50000, default 10000.
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BacktestView {
    pub events_read: usize,
    pub matched: usize,
    /// What would have fired and why (the lookups' answers, the steps filled in); nothing
    /// was executed or recorded.
    #[schema(value_type = Vec<Object>)]
    pub would_fire: Vec<serde_json::Value>,
    pub truncated: bool,
}

#[utoipa::path(post, path = "/api/rules/{id}/backtest", tag = "rules", params(("id" = Uuid, Path)),
    request_body = BacktestRequest, security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The rule run over your past events (the EVENTS stream keeps 14 days) in dry run", body = BacktestView),
        (status = 404, body = ErrorBody),
        (status = 422, description = "`from` after `to` or more than BACKTEST_MAX_DAYS before it, `limit` out of range, or a memory (it never fires)", body = ErrorBody),
        (status = 429, description = "The user's backtests this minute are used up (`limit`, `resets_at`)", body = ErrorBody),
    ))]
pub async fn backtest(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Json<BacktestView>, ApiError> {
    let request: BacktestRequest = if body.is_empty() {
        BacktestRequest::default()
    } else {
        parse_json(&body)?
    };
    let limit = request.limit.unwrap_or(10_000);
    if !(1..=50_000).contains(&limit) {
        return Err(ApiError::Invalid(FieldError::new(
            "limit",
            "must be between 1 and 50000",
        )));
    }
    // The window one may read: at most BACKTEST_MAX_DAYS, ending at `to` (or now).
    let max_days = state.config.backtest_max_days.max(1);
    let until = request.to.unwrap_or_else(Utc::now);
    let from = match request.from {
        Some(from) if until - from > chrono::Duration::days(max_days) => {
            return Err(ApiError::Invalid(FieldError::new(
                "from",
                format!(
                    "a backtest reads at most {max_days} days (BACKTEST_MAX_DAYS): `from` must be within {max_days} days of `to`"
                ),
            )));
        }
        Some(from) => from,
        None => until - chrono::Duration::days(max_days),
    };
    let rule = own_rule(&state, user, id).await?;
    let Some(compiled) = actions::rules::stored(&rule) else {
        return Err(ApiError::Invalid(FieldError::new(
            "id",
            "this rule is a memory: it never fires on events",
        )));
    };
    db::quota::take(
        &state.db,
        user,
        "rules.backtests_per_minute",
        60,
        state.config.backtests_per_user_per_minute,
        "backtests",
    )
    .await?
    .map_err(ApiError::Quota)?;
    let result = actions::rules::backtest(
        &state.db,
        &state.bus,
        user,
        &compiled,
        Some(from),
        request.to,
        limit,
    )
    .await?;
    Ok(Json(BacktestView {
        events_read: result.events_read,
        matched: result.matched,
        would_fire: result
            .would_fire
            .iter()
            .map(|w| serde_json::to_value(w).unwrap_or_default())
            .collect(),
        truncated: result.truncated,
    }))
}
