//! Stored conversations (every turn and message, tool calls and results included) and the
//! user's model usage.

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use common::intake::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/conversations", get(list_conversations))
        .route(
            "/api/conversations/{id}",
            get(get_conversation).delete(delete_conversation),
        )
        .route("/api/usage", get(usage))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// How many, most recently active first (1-200, default 50).
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationSummary {
    pub id: Uuid,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Conversations {
    pub conversations: Vec<ConversationSummary>,
}

impl From<db::chat::Conversation> for ConversationSummary {
    fn from(c: db::chat::Conversation) -> Self {
        Self {
            id: c.id,
            title: c.title,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/conversations",
    tag = "chat",
    params(ListParams),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = Conversations),
        (status = 422, description = "`limit` out of range", body = ErrorBody),
    )
)]
pub async fn list_conversations(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(params): Query<ListParams>,
) -> Result<Json<Conversations>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Invalid(FieldError::new(
            "limit",
            "must be between 1 and 200",
        )));
    }
    let conversations = db::chat::conversations(&state.db, user, limit)
        .await?
        .into_iter()
        .map(ConversationSummary::from)
        .collect();
    Ok(Json(Conversations { conversations }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TurnView {
    pub id: Uuid,
    pub message: String,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub status: String,
    pub final_text: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub citations: serde_json::Value,
    #[schema(value_type = Object)]
    pub usage: serde_json::Value,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub turn_id: Uuid,
    /// `user`, `assistant` (text and/or `tool_calls`) or `tool` (a result).
    pub role: String,
    pub content: String,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<serde_json::Value>,
    pub tool_call_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationDetail {
    pub id: Uuid,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub turns: Vec<TurnView>,
    pub messages: Vec<MessageView>,
}

#[utoipa::path(
    get,
    path = "/api/conversations/{id}",
    tag = "chat",
    params(("id" = Uuid, Path, description = "The conversation")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The conversation with its turns and every message, tool calls and results included", body = ConversationDetail),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
pub async fn get_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<ConversationDetail>, ApiError> {
    let (c, turns, messages) = db::chat::conversation(&state.db, user, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such conversation".into()))?;
    Ok(Json(ConversationDetail {
        id: c.id,
        title: c.title,
        created_at: c.created_at,
        updated_at: c.updated_at,
        turns: turns
            .into_iter()
            .map(|t| TurnView {
                id: t.id,
                message: t.message,
                status: t.status,
                final_text: t.final_text,
                citations: t.citations,
                usage: t.usage,
                error_code: t.error_code,
                error_message: t.error_message,
                created_at: t.created_at,
                finished_at: t.finished_at,
            })
            .collect(),
        messages: messages
            .into_iter()
            .map(|m| MessageView {
                turn_id: m.turn_id,
                role: m.role,
                content: m.content,
                tool_calls: m.tool_calls,
                tool_call_id: m.tool_call_id,
                created_at: m.created_at,
            })
            .collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/conversations/{id}",
    tag = "chat",
    params(("id" = Uuid, Path, description = "The conversation")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Deleted with its turns and messages"),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
pub async fn delete_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if db::chat::delete_conversation(&state.db, user, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no such conversation".into()))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageParams {
    /// From this time (RFC 3339; default 30 days ago).
    pub from: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339; default now).
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRow {
    pub day: chrono::NaiveDate,
    pub provider: String,
    pub model: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Summed time in model calls.
    pub latency_ms: i64,
    /// What those tokens cost in US dollars at `MODEL_PRICES`; absent for a model not listed.
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub days: Vec<UsageRow>,
}

#[utoipa::path(
    get,
    path = "/api/usage",
    tag = "chat",
    params(UsageParams),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The user's model calls and tokens by day and model, newest first", body = UsageReport),
        (status = 422, description = "`from` is not before `to`", body = ErrorBody),
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(params): Query<UsageParams>,
) -> Result<Json<UsageReport>, ApiError> {
    let to = params.to.unwrap_or_else(Utc::now);
    let from = params.from.unwrap_or(to - chrono::Duration::days(30));
    if from >= to {
        return Err(ApiError::Invalid(FieldError::new(
            "from",
            "must be before `to`",
        )));
    }
    let days = db::chat::usage(&state.db, user, from, to)
        .await?
        .into_iter()
        .map(|u| UsageRow {
            cost_usd: state.config.model_price(&u.model).map(|(input, output)| {
                (u.input_tokens as f64 * input + u.output_tokens as f64 * output) / 1e6
            }),
            day: u.day,
            provider: u.provider,
            model: u.model,
            calls: u.calls,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            latency_ms: u.latency_ms,
        })
        .collect();
    Ok(Json(UsageReport { from, to, days }))
}
